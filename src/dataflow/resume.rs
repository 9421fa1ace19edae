//! From and to the training state: a state part becomes part of a worker's
//! [`Share`], as if its events had just been read; after grouping, each
//! worker writes what it owns back as its part of the new state.

use super::read::{PropertyEvent, ReadPlan, Share};
use super::users::Rows;
use crate::intern::SortedIds;
use crate::state::StatePart;
use std::collections::HashMap;

/// Adds a part of the previous state to this worker's share.
pub fn merge_part(share: &mut Share, plan: &ReadPlan, part: StatePart) {
    let items: Vec<u32> = part.items.iter().map(|s| share.items.intern(s)).collect();
    let indicators = share.usage.len();
    let mut start = 0usize;
    let mut pair = 0usize;
    for (u, &end) in part.user_ends.iter().enumerate() {
        let user = share.users.intern(&part.user_names[start..end as usize]);
        start = end as usize;
        let slot = user as usize;
        if share.primary_events.len() <= slot {
            share.primary_events.resize(slot + 1, 0);
        }
        share.primary_events[slot] += part.primary_events[u];
        if share.prev_history.len() <= slot {
            share.prev_history.resize(slot + 1, 0);
        }
        share.prev_history[slot] = share.prev_history[slot].max(part.history_hashes.get(u).copied().unwrap_or(0));
        for k in 0..indicators {
            let len = part.lens[u * indicators + k] as usize;
            for &(item, secs) in &part.pairs[pair..pair + len] {
                share.usage[k].push((user, items[item as usize], secs));
            }
            pair += len;
        }
    }
    let names: Vec<Option<u32>> =
        part.rank_names.iter().map(|n| plan.rank_names.iter().position(|p| p == n).map(|p| p as u32)).collect();
    for (item, name, time) in part.rank_events {
        if let Some(name) = names[name as usize] {
            share.rank_events.push((items[item as usize], name, time));
        }
    }
    if !plan.random.is_empty() {
        for (item, first, last) in part.spans {
            let slot = items[item as usize] as usize;
            if share.spans.len() <= slot {
                share.spans.resize(slot + 1, (i64::MAX, i64::MIN));
            }
            let span = &mut share.spans[slot];
            span.0 = span.0.min(first);
            span.1 = span.1.max(last);
        }
    }
    for mut e in part.property_events {
        e.item = items[e.item as usize];
        share.property_events.push(e);
    }
    share.prev_docs.extend(part.doc_hashes.into_iter().map(|(item, hash)| (items[item as usize], hash)));
}

/// Builds a part with its own item list from global item ids.
struct PartItems<'a> {
    dict: &'a SortedIds,
    index: HashMap<u32, u32>,
    items: Vec<String>,
}

impl PartItems<'_> {
    fn id(&mut self, global: u32) -> u32 {
        let next = self.items.len() as u32;
        *self.index.entry(global).or_insert_with(|| {
            self.items.push(self.dict.get(global).to_string());
            next
        })
    }
}

/// This worker's part of the new state: the users it owns (all their
/// pairs), the ranking events, spans and property events it holds, and the
/// hashes of the documents and histories it wrote.
#[allow(clippy::too_many_arguments)]
pub fn build_part(
    rows: &Rows,
    dict: &SortedIds,
    plan: &ReadPlan,
    rank_events: &[(u32, u32, i64)],
    spans: &[(u32, i64, i64)],
    property_events: &[PropertyEvent],
    doc_hashes: &[(u32, u64)],
    history_hashes: &[u64],
) -> StatePart {
    let mut items = PartItems { dict, index: HashMap::new(), items: Vec::new() };
    let mut part = StatePart { rank_names: plan.rank_names.clone(), ..StatePart::default() };
    let all = rows.all_pairs.as_ref().expect("pairs kept for the state");
    let indicators = all.len();
    let mut cursors = vec![0usize; indicators];
    for user in 0..rows.names.len() as u32 {
        part.user_names.push_str(rows.names.resolve(user));
        part.user_ends.push(part.user_names.len() as u32);
        part.primary_events.push(rows.primary.get(user as usize).copied().unwrap_or(0));
        part.history_hashes.push(history_hashes.get(user as usize).copied().unwrap_or(0));
        for (k, list) in all.iter().enumerate() {
            let start = cursors[k];
            let mut end = start;
            while end < list.len() && list[end].0 == user {
                end += 1;
            }
            part.lens.push((end - start) as u32);
            for &(_, item, secs) in &list[start..end] {
                let id = items.id(item);
                part.pairs.push((id, secs));
            }
            cursors[k] = end;
        }
    }
    part.rank_events = rank_events.iter().map(|&(item, name, time)| (items.id(item), name, time)).collect();
    part.spans = spans.iter().map(|&(item, first, last)| (items.id(item), first, last)).collect();
    part.property_events = property_events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.item = items.id(e.item);
            e
        })
        .collect();
    part.doc_hashes = doc_hashes.iter().map(|&(item, hash)| (items.id(item), hash)).collect();
    part.items = items.items;
    part
}
