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
use crate::state::{PartBody, StatePart, encode_into, encoded_len};
use std::io::Write;

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

/// Writes this worker's part of the new state, streamed from its sources
/// ([`PartStream`]); returns its size.
pub fn write_state_part(
    out: &DirOutput,
    worker: usize,
    src: &PartSource,
    dict: &SortedIds,
    plan: &ReadPlan,
) -> Result<u64, Failure> {
    let part = PartStream::new(src, dict, &plan.rank_names);
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

impl PartSource<'_> {
    /// Calls `f` with each user's pairs of each indicator: users in id
    /// order, indicators in engine order (the part's order).
    fn for_each_user_pairs(&self, mut f: impl FnMut(&[(u32, u32, u32)])) {
        let mut cursors = vec![0usize; self.pairs.len()];
        for user in 0..self.users.len() as u32 {
            for (list, cursor) in self.pairs.iter().zip(&mut cursors) {
                let start = *cursor;
                while *cursor < list.len() && list[*cursor].0 == user {
                    *cursor += 1;
                }
                f(&list[start..*cursor]);
            }
        }
    }
}

/// The part [`PartStream`] writes, built in memory: what the stream's
/// bytes are checked against.
#[cfg(test)]
fn build_part(src: &PartSource, dict: &SortedIds, rank_names: &[String]) -> StatePart {
    let mut items = PartItems { dict, index: vec![u32::MAX; dict.len()], items: Vec::new() };
    let mut part = StatePart { rank_names: rank_names.to_vec(), ..StatePart::default() };
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

/// A worker's part of the new state written field by field, in
/// [`StatePart`]'s order and bytes, straight from its sources: the part is
/// never built beside them (on the large benchmark shape it was a third of
/// the `--state` peak). Only its item numbering (first use in the order
/// [`build_part`] meets them) and the per user and indicator pair counts are
/// made first.
struct PartStream<'a> {
    src: &'a PartSource<'a>,
    rank_names: &'a [String],
    /// The part's item numbering: its items' names by part id, and the
    /// part id of each global item.
    items: PartItems<'a>,
    /// Per user and indicator: its number of pairs.
    lens: Vec<u32>,
    /// The users' names, in bytes.
    names_len: u64,
}

impl<'a> PartStream<'a> {
    fn new(src: &'a PartSource<'a>, dict: &'a SortedIds, rank_names: &'a [String]) -> PartStream<'a> {
        let mut items = PartItems { dict, index: vec![u32::MAX; dict.len()], items: Vec::new() };
        let mut lens = Vec::with_capacity(src.users.len() * src.pairs.len());
        let names_len = (0..src.users.len() as u32).map(|u| src.users.resolve(u).len() as u64).sum();
        src.for_each_user_pairs(|pairs| {
            lens.push(pairs.len() as u32);
            pairs.iter().for_each(|&(_, item, _)| {
                items.id(item);
            });
        });
        src.rank_events.iter().for_each(|e| _ = items.id(e.0));
        src.spans.iter().for_each(|e| _ = items.id(e.0));
        src.property_events.iter().for_each(|e| _ = items.id(e.item));
        src.doc_hashes.iter().for_each(|e| _ = items.id(e.0));
        PartStream { src, rank_names, items, lens, names_len }
    }

    fn id(&self, global: u32) -> u32 {
        self.items.index[global as usize]
    }
}

/// Bincode's length prefix of a sequence (fixed-size integers, as
/// [`crate::state::encode_into`] writes them).
fn seq_len<W: Write>(w: &mut W, len: usize) -> std::io::Result<()> {
    w.write_all(&(len as u64).to_le_bytes())
}

impl PartBody for PartStream<'_> {
    fn body_len(&self) -> Result<u64, String> {
        let src = self.src;
        let (users, pairs) = (src.users.len() as u64, self.lens.iter().map(|&n| n as u64).sum::<u64>());
        let items: u64 = self.items.items.iter().map(|i| 8 + i.len() as u64).sum();
        let properties: u64 = src.property_events.iter().map(encoded_len).sum();
        // The length prefix of each field but `rank_names` (encoded whole).
        Ok(8 * 11
            + items
            + self.names_len
            + 4 * users // user_ends
            + 4 * users // primary_events
            + 4 * self.lens.len() as u64
            + 8 * pairs
            + 8 * users // history_hashes
            + encoded_len(self.rank_names)
            + 16 * src.rank_events.len() as u64
            + 20 * src.spans.len() as u64
            + properties
            + 12 * src.doc_hashes.len() as u64)
    }

    fn write_body<W: Write>(&self, w: &mut W) -> std::io::Result<()> {
        let (src, users) = (self.src, self.src.users.len() as u32);
        encode_into(w, &self.items.items)?;
        seq_len(w, self.names_len as usize)?;
        (0..users).try_for_each(|u| w.write_all(src.users.resolve(u).as_bytes()))?;
        seq_len(w, users as usize)?;
        let mut end = 0u32;
        for u in 0..users {
            end += src.users.resolve(u).len() as u32;
            w.write_all(&end.to_le_bytes())?;
        }
        seq_len(w, users as usize)?;
        (0..users).try_for_each(|u| w.write_all(&src.primary.get(u as usize).copied().unwrap_or(0).to_le_bytes()))?;
        seq_len(w, self.lens.len())?;
        self.lens.iter().try_for_each(|n| w.write_all(&n.to_le_bytes()))?;
        seq_len(w, self.lens.iter().map(|&n| n as usize).sum())?;
        let mut written = Ok(());
        src.for_each_user_pairs(|pairs| {
            for &(_, item, secs) in pairs {
                if written.is_ok() {
                    written = w.write_all(&self.id(item).to_le_bytes()).and_then(|_| w.write_all(&secs.to_le_bytes()));
                }
            }
        });
        written?;
        seq_len(w, users as usize)?;
        (0..users as usize)
            .try_for_each(|u| w.write_all(&src.history_hashes.get(u).copied().unwrap_or(0).to_le_bytes()))?;
        encode_into(w, self.rank_names)?;
        seq_len(w, src.rank_events.len())?;
        for &(item, name, time) in src.rank_events {
            w.write_all(&self.id(item).to_le_bytes())?;
            w.write_all(&name.to_le_bytes())?;
            w.write_all(&time.to_le_bytes())?;
        }
        seq_len(w, src.spans.len())?;
        for &(item, first, last) in src.spans {
            w.write_all(&self.id(item).to_le_bytes())?;
            w.write_all(&first.to_le_bytes())?;
            w.write_all(&last.to_le_bytes())?;
        }
        seq_len(w, src.property_events.len())?;
        for e in src.property_events {
            encode_into(w, &PropertyEvent { item: self.id(e.item), ..e.clone() })?;
        }
        seq_len(w, src.doc_hashes.len())?;
        for &(item, hash) in src.doc_hashes {
            w.write_all(&self.id(item).to_le_bytes())?;
            w.write_all(&hash.to_le_bytes())?;
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PropertyOp;
    use proptest::prelude::*;

    /// Per user: per indicator, (item, secs) pairs.
    type Users = Vec<Vec<Vec<(u32, u32)>>>;

    /// Interns the users' names; their pairs per indicator, sorted by user.
    fn source(users: &Users, interner: &mut Interner) -> Vec<Vec<(u32, u32, u32)>> {
        let indicators = users.first().map_or(0, Vec::len);
        let mut pairs = vec![Vec::new(); indicators];
        for (u, lists) in users.iter().enumerate() {
            interner.intern(&format!("user-{u}-{}", "x".repeat(u % 7)));
            for (k, list) in lists.iter().enumerate() {
                pairs[k].extend(list.iter().map(|&(i, t)| (u as u32, i, t)));
            }
        }
        pairs
    }

    proptest! {
        /// The streamed part is byte for byte the part built in memory,
        /// and its announced length is the length written.
        #[test]
        fn the_stream_writes_the_part_built_in_memory(
            users in prop::collection::vec(prop::collection::vec(prop::collection::vec((0u32..40, any::<u32>()), 0..5), 2..=2), 0..30),
            hashes in 0usize..40,
            facts in prop::collection::vec((0u32..40, any::<i64>()), 0..20),
        ) {
            let dict = SortedIds::from_unsorted((0..40).map(|i| format!("item-{i:03}")).collect::<Vec<_>>().iter().map(String::as_str));
            let mut interner = Interner::new();
            let pairs = source(&users, &mut interner);
            let primary: Vec<u32> = (0..users.len() as u32).map(|u| u * 3).collect();
            let history_hashes: Vec<u64> = (0..hashes.min(users.len()) as u64).map(|h| h * 31 + 1).collect();
            let rank_events: Vec<(u32, u32, i64)> = facts.iter().map(|&(i, t)| (i, (t & 1) as u32, t)).collect();
            let spans: Vec<(u32, i64, i64)> = facts.iter().map(|&(i, t)| (i, t / 2, t)).collect();
            let property_events: Vec<PropertyEvent> = facts
                .iter()
                .map(|&(i, t)| PropertyEvent { item: i, time: t, op: PropertyOp::Set, properties: format!("{{\"t\":{t}}}") })
                .collect();
            let doc_hashes: Vec<(u32, u64)> = facts.iter().map(|&(i, t)| (39 - i, t as u64)).collect();
            let src = PartSource {
                users: &interner,
                primary: &primary,
                pairs: &pairs,
                history_hashes: &history_hashes,
                rank_events: &rank_events,
                spans: &spans,
                property_events: &property_events,
                doc_hashes: &doc_hashes,
            };
            let names = vec!["popRank".to_string(), "trendRank".to_string()];
            let mut built = Vec::new();
            encode_into(&mut built, &build_part(&src, &dict, &names)).unwrap();
            let stream = PartStream::new(&src, &dict, &names);
            let mut streamed = Vec::new();
            stream.write_body(&mut streamed).unwrap();
            prop_assert!(streamed == built, "{} streamed bytes vs {} built", streamed.len(), built.len());
            prop_assert_eq!(stream.body_len().unwrap(), built.len() as u64);
        }
    }
}
