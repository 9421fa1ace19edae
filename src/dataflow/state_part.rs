//! Between a worker's share and a part of the training state on disk: a
//! state part becomes part of a worker's [`Share`], as if its events had
//! just been read; at the end of a run, each worker writes what it owns back
//! as its part of the new state.
//!
//! Not to be confused with [`crate::state`] (the state's files: format,
//! reading, writing, publication) nor with [`super::resident`] (the model a
//! `--follow` run keeps in memory between updates).

use super::read::{ReadPlan, Share};
use super::users::UserBatch;
use super::{DirOutput, Failure, StateIn};
use crate::intern::{Interner, SortedIds};
use crate::model::PropertyEvent;
use crate::state::StatePart;

/// Joins this worker's parts of the previous state to its share: part p on
/// worker p mod workers. With as many workers as parts, part p holds the
/// users worker p owns: they stay where they are (returned).
pub fn join_previous(
    share: &mut Share,
    plan: &ReadPlan,
    state: &StateIn,
    worker: usize,
    workers: usize,
) -> Result<Option<OwnedUsers>, Failure> {
    let mut owned = None;
    for p in (worker..state.parts).step_by(workers) {
        let part = crate::state::open_part(&state.store, &state.dir, p, share.usage.len())
            .map_err(|e| Failure::Input(e.to_string()))?;
        if state.parts == workers {
            owned = Some(own_part(share, plan, part));
        } else {
            merge_part(share, plan, part);
        }
    }
    Ok(owned)
}

/// Builds this worker's part of the new state and writes it; returns its size.
pub fn write_state_part(
    out: &DirOutput,
    worker: usize,
    src: &PartSource,
    dict: &SortedIds,
    plan: &ReadPlan,
) -> Result<u64, Failure> {
    let part = build_part(src, dict, plan);
    crate::state::write_part(&out.store, &out.parts_dir, worker, &part).map_err(Failure::Output)
}

/// Adds a part of the previous state to this worker's share.
pub fn merge_part(share: &mut Share, plan: &ReadPlan, mut part: StatePart) {
    let items = merge_item_facts(share, plan, &mut part);
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
                share.push_usage(plan, k, (user, items[item as usize]), secs);
            }
            pair += len;
        }
    }
}

/// The users of a part this worker owns (it was written by the worker with
/// the same index, with as many workers): kept as they are, to join the
/// owner's merge of the grouped users first, without being read into the
/// share or sent.
pub struct OwnedUsers {
    part: StatePart,
    /// Local item id of each of the part's items.
    items: Vec<u32>,
}

/// Adds the item facts of a part this worker owns the users of to its
/// share, and keeps the users aside.
pub fn own_part(share: &mut Share, plan: &ReadPlan, mut part: StatePart) -> OwnedUsers {
    let items = merge_item_facts(share, plan, &mut part);
    OwnedUsers { part, items }
}

impl OwnedUsers {
    /// The users as a batch with global item ids.
    pub fn into_batch(self, global_item: &[u32]) -> UserBatch {
        let OwnedUsers { part, items } = self;
        let global: Vec<u32> = items.iter().map(|&l| global_item[l as usize]).collect();
        let mut history_hashes = part.history_hashes;
        history_hashes.resize(part.user_ends.len(), 0);
        UserBatch {
            names: part.user_names,
            name_ends: part.user_ends,
            primary_events: part.primary_events,
            lens: part.lens,
            items: part.pairs.iter().map(|&(i, _)| global[i as usize]).collect(),
            times: part.pairs.iter().map(|&(_, t)| t).collect(),
            history_hashes,
        }
    }
}

/// Adds the item facts of `new` (a share just read) to `held`.
pub fn add_item_facts(held: &mut Share, plan: &ReadPlan, new: &Share) {
    let items: Vec<u32> = new.items.iter().map(|s| held.items.intern(s)).collect();
    held.rank_events.extend(new.rank_events.iter().map(|&(i, n, t)| (items[i as usize], n, t)));
    if !plan.random.is_empty() {
        for (i, &(first, last)) in new.spans.iter().enumerate() {
            if first > last {
                continue;
            }
            let slot = items[i] as usize;
            if held.spans.len() <= slot {
                held.spans.resize(slot + 1, (i64::MAX, i64::MIN));
            }
            let span = &mut held.spans[slot];
            span.0 = span.0.min(first);
            span.1 = span.1.max(last);
        }
    }
    held.property_events
        .extend(new.property_events.iter().map(|e| PropertyEvent { item: items[e.item as usize], ..e.clone() }));
}

/// Interns a part's items into the share and moves its ranking events,
/// item spans, property events and document hashes there; returns the
/// local id of each of the part's items.
fn merge_item_facts(share: &mut Share, plan: &ReadPlan, part: &mut StatePart) -> Vec<u32> {
    let items: Vec<u32> = part.items.iter().map(|s| share.items.intern(s)).collect();
    let names: Vec<Option<u32>> =
        part.rank_names.iter().map(|n| plan.rank_names.iter().position(|p| p == n).map(|p| p as u32)).collect();
    for (item, name, time) in std::mem::take(&mut part.rank_events) {
        if let Some(name) = names[name as usize] {
            share.rank_events.push((items[item as usize], name, time));
        }
    }
    if !plan.random.is_empty() {
        for (item, first, last) in std::mem::take(&mut part.spans) {
            let slot = items[item as usize] as usize;
            if share.spans.len() <= slot {
                share.spans.resize(slot + 1, (i64::MAX, i64::MIN));
            }
            let span = &mut share.spans[slot];
            span.0 = span.0.min(first);
            span.1 = span.1.max(last);
        }
    }
    for mut e in std::mem::take(&mut part.property_events) {
        e.item = items[e.item as usize];
        share.property_events.push(e);
    }
    share
        .prev_docs
        .extend(std::mem::take(&mut part.doc_hashes).into_iter().map(|(item, hash)| (items[item as usize], hash)));
    items
}

/// Builds a part with its own item list from global item ids.
struct PartItems<'a> {
    dict: &'a SortedIds,
    /// Part id of each global item (`u32::MAX`: not in the part yet).
    index: Vec<u32>,
    items: Vec<String>,
}

impl PartItems<'_> {
    #[inline]
    fn id(&mut self, global: u32) -> u32 {
        let slot = &mut self.index[global as usize];
        if *slot == u32::MAX {
            *slot = self.items.len() as u32;
            self.items.push(self.dict.get(global).to_string());
        }
        *slot
    }
}

/// This worker's part of the new state: the users it owns (all their
/// pairs), the ranking events, spans and property events it holds, and the
/// hashes of the documents and histories it wrote.
pub struct PartSource<'a> {
    pub users: &'a Interner,
    /// Raw primary events per user.
    pub primary: &'a [u32],
    /// Per indicator: (user, item, latest time), sorted by user.
    pub pairs: &'a [Vec<(u32, u32, u32)>],
    pub history_hashes: &'a [u64],
    pub rank_events: &'a [(u32, u32, i64)],
    pub spans: &'a [(u32, i64, i64)],
    pub property_events: &'a [PropertyEvent],
    pub doc_hashes: &'a [(u32, u64)],
}

pub fn build_part(src: &PartSource, dict: &SortedIds, plan: &ReadPlan) -> StatePart {
    let mut items = PartItems { dict, index: vec![u32::MAX; dict.len()], items: Vec::new() };
    let mut part = StatePart { rank_names: plan.rank_names.clone(), ..StatePart::default() };
    let indicators = src.pairs.len();
    let mut cursors = vec![0usize; indicators];
    for user in 0..src.users.len() as u32 {
        part.user_names.push_str(src.users.resolve(user));
        part.user_ends.push(part.user_names.len() as u32);
        part.primary_events.push(src.primary.get(user as usize).copied().unwrap_or(0));
        part.history_hashes.push(src.history_hashes.get(user as usize).copied().unwrap_or(0));
        for (k, list) in src.pairs.iter().enumerate() {
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
    part.rank_events = src.rank_events.iter().map(|&(item, name, time)| (items.id(item), name, time)).collect();
    part.spans = src.spans.iter().map(|&(item, first, last)| (items.id(item), first, last)).collect();
    part.property_events = src
        .property_events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.item = items.id(e.item);
            e
        })
        .collect();
    part.doc_hashes = src.doc_hashes.iter().map(|&(item, hash)| (items.id(item), hash)).collect();
    part.items = items.items;
    part
}

/// The item facts a worker holds, with global item ids, for its state part:
/// ranking events, (item, first, last) spans and property events.
pub type ItemFacts = (Vec<(u32, u32, i64)>, Vec<(u32, i64, i64)>, Vec<PropertyEvent>);

pub fn item_facts(share: &Share, global_item: &[u32]) -> ItemFacts {
    let rank_events = share.rank_events.iter().map(|&(i, n, t)| (global_item[i as usize], n, t)).collect();
    let spans =
        share.spans.iter().enumerate().filter(|(_, s)| s.0 <= s.1).map(|(i, &(a, b))| (global_item[i], a, b)).collect();
    let property_events = share
        .property_events
        .iter()
        .map(|e| PropertyEvent { item: global_item[e.item as usize], ..e.clone() })
        .collect();
    (rank_events, spans, property_events)
}
