//! Resident training (`ur-train --follow`): the model's counts stay in the
//! workers' memory between runs and each new file updates them, at a cost
//! that follows the change rather than the history.
//!
//! What each worker keeps (the [`Resident`]):
//! - for the users it owns (by a hash of the id): the raw primary count,
//!   every distinct (item, latest time) per indicator and the current
//!   downsampled rows;
//! - for the items of its row range: the co-occurrence counts of each row
//!   (item → users with both) per indicator, the smallest sample keys of
//!   the item's users (at most the cap: they decide the item's downsampling
//!   threshold), the correlators and the hash of the document last written;
//! - replicated: the item dictionary, per-item user counts before and after
//!   downsampling, thresholds, N;
//! - the item facts it read (property and ranking events).
//!
//! An update ([`tick`]) reads only the new files. New events go to their
//! users' owners; users that gained pairs or became rows send their new
//! sample keys to the items' owners, which update the thresholds and name
//! the users that fell out of an item's sample. Every user whose downsampled
//! rows changed sends old and new rows to the owners of its primary items,
//! which apply the difference to the co-occurrence counts and re-score the
//! rows whose counts changed. All counts — co-occurrences, users per item,
//! N — are exact: the same as a full training on the same files.
//!
//! LLR depends on N and on every column count, so an exact model re-scores
//! every row whenever N moves. Rows whose counts did not change keep their
//! correlators until N has drifted by more than `--drift` since every row
//! was last scored; then every row is re-scored from its counts (no
//! co-occurrence pass). `--drift 0` re-scores every row on every update and
//! gives exactly the model a full training gives.

use super::cco::{Correlators, RowRanges, Scoring};
use super::exchange::Comm;
use super::facts::RangeFacts;
use super::properties::{Properties, aggregate};
use super::read::{PropertyEvent, Share};
use super::sample::sample_row;
use super::users::{self, Rows};
use crate::hash::{id_hash, indicator_salt, sample_key};
use crate::intern::{Interner, SortedIds};
use crate::sink::part::CachedDoc;
use std::sync::Mutex;

/// The workers' resident states between updates, by worker index.
pub struct Follow {
    slots: Mutex<Vec<Option<Resident>>>,
    /// Re-score every row when N has moved by more than this fraction since
    /// the last time every row was scored.
    pub drift: f64,
}

impl Follow {
    pub fn new(workers: usize, drift: f64) -> Follow {
        Follow { slots: Mutex::new((0..workers).map(|_| None).collect()), drift }
    }

    pub fn take(&self, worker: usize) -> Option<Resident> {
        self.slots.lock().expect("follow slots").get_mut(worker).and_then(Option::take)
    }

    pub fn put(&self, worker: usize, resident: Resident) {
        if let Some(slot) = self.slots.lock().expect("follow slots").get_mut(worker) {
            *slot = Some(resident);
        }
    }

    /// True if every worker holds a resident state.
    pub fn is_warm(&self) -> bool {
        let slots = self.slots.lock().expect("follow slots");
        !slots.is_empty() && slots.iter().all(Option::is_some)
    }

    pub fn clear(&self) {
        for slot in self.slots.lock().expect("follow slots").iter_mut() {
            *slot = None;
        }
    }
}

/// One worker's resident state (see the module documentation).
pub struct Resident {
    // Replicated on every worker.
    pub dict: SortedIds,
    pub item_hash: Vec<u64>,
    /// Per indicator, per item: rows (users) with the item before downsampling.
    pub pre: Vec<Vec<u32>>,
    /// Per indicator, per item: after downsampling.
    pub post: Vec<Vec<u32>>,
    /// Per indicator, per item: the largest sample key kept (`u64::MAX`:
    /// the item is not over the cap).
    pub threshold: Vec<Vec<u64>>,
    pub n: u64,
    /// N when every row was last scored.
    pub n_scored: u64,
    pub ranges: RowRanges,
    // Users this worker owns.
    pub users: Interner,
    pub user_hash: Vec<u64>,
    pub primary: Vec<u32>,
    pub is_row: Vec<bool>,
    /// Row `user * indicators + k`: the user's (item, latest time) of
    /// indicator k, sorted by item.
    pub pairs: Vec<Vec<(u32, u32)>>,
    /// Row `user * indicators + k`: the user's downsampled items of indicator k.
    pub sampled: Vec<Vec<u32>>,
    pub history_hash: Vec<u64>,
    // Rows of this worker's range (index: item − range start).
    /// `[row][k]`: (item, users with both), sorted by item.
    pub cooc: Vec<Vec<Vec<(u32, u32)>>>,
    /// `[k][row]`: the smallest (sample key, user key) of the item's users,
    /// sorted, at most the indicator's cap.
    pub kept: Vec<Vec<Vec<(u64, u64)>>>,
    pub correlators: Correlators,
    pub doc_hash: Vec<u64>,
    /// `[row]`: the item's property events, its properties after them, and
    /// whether its last word was `$delete`.
    pub property_events: Vec<Vec<PropertyEvent>>,
    pub properties: Vec<Option<Properties>>,
    pub deleted: Vec<bool>,
    /// The documents last written, by row.
    pub docs: Vec<Option<CachedDoc>>,
    /// The item facts this worker read (local item ids).
    pub facts: Share,
}

/// A user as known everywhere: owner worker and owner-local id.
#[inline]
fn user_key(worker: usize, user: u32) -> u64 {
    ((worker as u64) << 32) | user as u64
}

/// What a finished full run leaves for the resident state.
pub struct FromRun<'a> {
    pub dict: SortedIds,
    pub rows: Rows,
    /// Per indicator: the owner's rows before and after downsampling.
    pub before: Vec<users::Csr>,
    pub after: Vec<users::Csr>,
    pub pre: Vec<Vec<u32>>,
    pub post: Vec<Vec<u32>>,
    pub n: u64,
    pub ranges: RowRanges,
    pub correlators: Option<Correlators>,
    pub doc_hashes: Vec<(u32, u64)>,
    pub history_hashes: Vec<u64>,
    pub facts: Share,
    /// The facts of the range, with the property events kept.
    pub range_facts: &'a RangeFacts,
}

impl Resident {
    /// Builds the resident state at the end of a full run; every worker
    /// calls it (it exchanges the sample keys).
    pub fn build(comm: &mut Comm, engine: &crate::config::Engine, run: FromRun) -> Resident {
        let properties = run.range_facts.properties.clone();
        let deleted = run.range_facts.deleted.clone();
        let mut property_events = run.range_facts.events.clone();
        let me = comm.index;
        let kinds = engine.indicators.len();
        let FromRun {
            dict,
            rows,
            before,
            after,
            pre,
            post,
            n,
            ranges,
            correlators,
            doc_hashes,
            history_hashes,
            facts,
            ..
        } = run;
        let item_hash: Vec<u64> = dict.iter().map(id_hash).collect();
        let range = ranges.range(me);
        let len = (range.end - range.start) as usize;

        // The smallest sample keys of every item's users, at the item's owner.
        let mut parcels: Vec<Vec<(u32, u32, u64, u64)>> = vec![Vec::new(); comm.peers];
        for (k, (indicator, matrix)) in engine.indicators.iter().zip(&before).enumerate() {
            let salt = indicator_salt(engine.seed, &indicator.name);
            for r in 0..matrix.rows() {
                let user = rows.user_of_row[r];
                for &i in matrix.row(r) {
                    let key = sample_key(salt, rows.hash[r], item_hash[i as usize]);
                    parcels[ranges.owner(i)].push((k as u32, i, key, user_key(me, user)));
                }
            }
        }
        drop(before);
        let received = comm.shuffle("follow: sample keys", parcels.into_iter().enumerate().collect());
        let mut kept: Vec<Vec<Vec<(u64, u64)>>> = vec![vec![Vec::new(); len]; kinds];
        for (_, keys) in received {
            for (k, i, key, user) in keys {
                kept[k as usize][(i - range.start) as usize].push((key, user));
            }
        }
        for (k, lists) in kept.iter_mut().enumerate() {
            let cap = engine.indicators[k].max_items_per_user as usize;
            for list in lists {
                list.sort_unstable();
                list.truncate(cap);
                list.shrink_to_fit();
            }
        }
        let threshold = thresholds_of(engine, &pre, &kept, &range, comm);

        let users_n = rows.names.len();
        let user_hash: Vec<u64> = rows.names.iter().map(id_hash).collect();
        let mut is_row = vec![false; users_n];
        let mut sampled = vec![Vec::new(); users_n * kinds];
        for (r, &user) in rows.user_of_row.iter().enumerate() {
            is_row[user as usize] = true;
            for (k, matrix) in after.iter().enumerate() {
                sampled[user as usize * kinds + k] = matrix.row(r).to_vec();
            }
        }
        let mut doc_hash = vec![0u64; len];
        for (item, hash) in doc_hashes {
            doc_hash[(item - range.start) as usize] = hash;
        }
        let correlators = match correlators {
            Some(c) => c,
            None => Correlators {
                rows: vec![vec![Vec::new(); kinds]; len],
                pair_visits: 0,
                counts: vec![vec![Vec::new(); kinds]; len],
            },
        };
        let mut correlators = correlators;
        let cooc = std::mem::take(&mut correlators.counts);
        let mut pairs = vec![Vec::new(); users_n * kinds];
        for (k, list) in rows.all_pairs.expect("pairs kept when following").into_iter().enumerate() {
            for (u, i, t) in list {
                pairs[u as usize * kinds + k].push((i, t));
            }
        }
        let mut primary = rows.primary;
        primary.resize(users_n, 0);
        let mut history_hash = history_hashes;
        history_hash.resize(users_n, 0);
        Resident {
            dict,
            item_hash,
            pre,
            post,
            threshold,
            n,
            n_scored: n,
            ranges,
            users: rows.names,
            user_hash,
            primary,
            is_row,
            pairs,
            sampled,
            history_hash,
            cooc,
            kept,
            correlators,
            doc_hash,
            docs: (0..len).map(|_| None).collect(),
            property_events: {
                property_events.resize(len, Vec::new());
                property_events
            },
            properties: {
                let mut p = properties;
                p.resize(len, None);
                p
            },
            deleted: {
                let mut d = deleted;
                d.resize(len, false);
                d
            },
            facts,
        }
    }

    /// Adds new item ids to the dictionary: every item id held is moved to
    /// its new position (the order of the old ones is kept).
    pub fn add_items(&mut self, added: &SortedIds, me: usize) {
        if added.is_empty() {
            return;
        }
        let old_n = self.dict.len();
        let (dict, remap) = merge_dictionaries(&self.dict, added);
        let new_n = dict.len();
        let old_range = self.ranges.range(me);
        // Bounds follow their items; new items join the range they fall in.
        let bounds: Vec<u32> = self
            .ranges
            .bounds
            .iter()
            .map(|&b| if (b as usize) < old_n { remap[b as usize] } else { new_n as u32 })
            .collect();
        let mut bounds = bounds;
        bounds[0] = 0;
        self.ranges = RowRanges { bounds };
        let range = self.ranges.range(me);
        let len = (range.end - range.start) as usize;
        let map = |i: u32| remap[i as usize];

        let mut item_hash = vec![0u64; new_n];
        for (new, s) in dict.iter().enumerate() {
            item_hash[new] = id_hash(s);
        }
        self.item_hash = item_hash;
        for (lists, default) in [(&mut self.pre, 0u32), (&mut self.post, 0u32)] {
            for list in lists.iter_mut() {
                *list = reindex(std::mem::take(list), &remap, new_n, default);
            }
        }
        for list in self.threshold.iter_mut() {
            *list = reindex(std::mem::take(list), &remap, new_n, u64::MAX);
        }
        for list in self.pairs.iter_mut() {
            for p in list.iter_mut() {
                p.0 = map(p.0);
            }
        }
        for row in self.sampled.iter_mut() {
            for i in row.iter_mut() {
                *i = map(*i);
            }
        }
        // Row-side vectors: old row r is item old_range.start + r.
        let row_remap: Vec<u32> = (old_range.start..old_range.end).map(|i| map(i) - range.start).collect::<Vec<u32>>();
        let move_rows = |v: Vec<Vec<Vec<(u32, u32)>>>| -> Vec<Vec<Vec<(u32, u32)>>> {
            let kinds = v.first().map(Vec::len).unwrap_or(0);
            let mut out = vec![vec![Vec::new(); kinds]; len];
            for (r, mut row) in v.into_iter().enumerate() {
                for list in row.iter_mut() {
                    for e in list.iter_mut() {
                        e.0 = map(e.0);
                    }
                }
                out[row_remap[r] as usize] = row;
            }
            out
        };
        let kinds = self.pre.len();
        let cooc = std::mem::take(&mut self.cooc);
        self.cooc = if cooc.is_empty() { vec![vec![Vec::new(); kinds]; len] } else { move_rows(cooc) };
        let mut rows = vec![vec![Vec::new(); kinds]; len];
        for (r, mut row) in std::mem::take(&mut self.correlators.rows).into_iter().enumerate() {
            for list in row.iter_mut() {
                for j in list.iter_mut() {
                    *j = map(*j);
                }
            }
            rows[row_remap[r] as usize] = row;
        }
        self.correlators.rows = rows;
        for lists in self.kept.iter_mut() {
            let mut out = vec![Vec::new(); len];
            for (r, list) in std::mem::take(lists).into_iter().enumerate() {
                out[row_remap[r] as usize] = list;
            }
            *lists = out;
        }
        let mut doc_hash = vec![0u64; len];
        for (r, h) in std::mem::take(&mut self.doc_hash).into_iter().enumerate() {
            doc_hash[row_remap[r] as usize] = h;
        }
        self.doc_hash = doc_hash;
        let mut docs: Vec<Option<CachedDoc>> = (0..len).map(|_| None).collect();
        for (r, d) in std::mem::take(&mut self.docs).into_iter().enumerate() {
            docs[row_remap[r] as usize] = d;
        }
        self.docs = docs;
        let mut events = vec![Vec::new(); len];
        for (r, mut list) in std::mem::take(&mut self.property_events).into_iter().enumerate() {
            for e in list.iter_mut() {
                e.item = map(e.item);
            }
            events[row_remap[r] as usize] = list;
        }
        self.property_events = events;
        let mut properties = vec![None; len];
        for (r, p) in std::mem::take(&mut self.properties).into_iter().enumerate() {
            properties[row_remap[r] as usize] = p;
        }
        self.properties = properties;
        self.deleted = reindex_rows(std::mem::take(&mut self.deleted), &row_remap, len, false);
        self.dict = dict;
    }

    /// New property events of the range's items: their items' properties
    /// are aggregated again.
    pub fn add_property_events(&mut self, events: impl IntoIterator<Item = PropertyEvent>, me: usize) {
        let range = self.ranges.range(me);
        let mut touched = Vec::new();
        for e in events {
            let r = (e.item - range.start) as usize;
            self.property_events[r].push(e);
            touched.push(r);
        }
        touched.sort_unstable();
        touched.dedup();
        for r in touched {
            let aggregated = aggregate(self.property_events[r].clone());
            self.properties[r] = aggregated.items.into_iter().next().map(|(_, p)| p);
            self.deleted[r] = !aggregated.deleted.is_empty();
        }
    }

    /// The history of `user` in indicator `k` (most recent first, at most `cap`).
    pub fn recent(&self, user: u32, k: usize, cap: u32) -> Vec<u32> {
        let mut items: Vec<(u32, u32)> = self.user_pairs(k, user).iter().map(|&(i, t)| (t, i)).collect();
        users::newest_first(&mut items, cap).collect()
    }

    /// The (item, time) pairs of `user` in indicator `k`.
    fn user_pairs(&self, k: usize, user: u32) -> &[(u32, u32)] {
        &self.pairs[user as usize * self.pre.len() + k]
    }

    /// Every user's pairs as (user, item, time) lists per indicator, sorted
    /// (for the state).
    pub fn pair_lists(&self) -> Vec<Vec<(u32, u32, u32)>> {
        let kinds = self.pre.len();
        let mut out = vec![Vec::new(); kinds];
        for (slot, list) in self.pairs.iter().enumerate() {
            let (u, k) = ((slot / kinds) as u32, slot % kinds);
            out[k].extend(list.iter().map(|&(i, t)| (u, i, t)));
        }
        out
    }

    /// The downsampled items of `user` in indicator `k`, from its pairs and
    /// the current thresholds (the rule of [`super::sample::downsample`]).
    fn sample_user(&self, engine: &crate::config::Engine, k: usize, user: u32, keys: &mut Vec<u64>) -> Vec<u32> {
        let indicator = &engine.indicators[k];
        let salt = indicator_salt(engine.seed, &indicator.name);
        let uh = self.user_hash[user as usize];
        let items: Vec<u32> = self.user_pairs(k, user).iter().map(|p| p.0).collect();
        let threshold = &self.threshold[k];
        let mut out = Vec::new();
        sample_row(
            &items,
            |i| sample_key(salt, uh, self.item_hash[i as usize]),
            indicator.max_items_per_user as usize,
            |i| threshold[i as usize],
            keys,
            &mut out,
        );
        out
    }
}

/// Every item's threshold from its kept keys; each worker computes its
/// range's, then they are gathered.
fn thresholds_of(
    engine: &crate::config::Engine,
    pre: &[Vec<u32>],
    kept: &[Vec<Vec<(u64, u64)>>],
    range: &std::ops::Range<u32>,
    comm: &mut Comm,
) -> Vec<Vec<u64>> {
    let mine: Vec<Vec<u64>> = kept
        .iter()
        .enumerate()
        .map(|(k, lists)| {
            let cap = engine.indicators[k].max_items_per_user as usize;
            lists
                .iter()
                .enumerate()
                .map(|(r, list)| {
                    let i = range.start as usize + r;
                    if pre[k][i] as usize > cap { list[cap - 1].0 } else { u64::MAX }
                })
                .collect()
        })
        .collect();
    let all = comm.all_gather("follow: thresholds", mine);
    (0..kept.len()).map(|k| all.iter().flat_map(|w| w[k].iter().copied()).collect()).collect()
}

/// The union of two sorted dictionaries, and where each old id went.
pub fn merge_dictionaries(old: &SortedIds, added: &SortedIds) -> (SortedIds, Vec<u32>) {
    let merged = SortedIds::merge(&[old.clone(), added.clone()]);
    let mut remap = Vec::with_capacity(old.len());
    let mut pos = 0usize;
    for s in old.iter() {
        while merged.get(pos as u32) != s {
            pos += 1;
        }
        remap.push(pos as u32);
    }
    (merged, remap)
}

fn reindex_rows<T: Copy>(old: Vec<T>, row_remap: &[u32], len: usize, default: T) -> Vec<T> {
    let mut out = vec![default; len];
    for (r, v) in old.into_iter().enumerate() {
        out[row_remap[r] as usize] = v;
    }
    out
}

fn reindex<T: Copy>(old: Vec<T>, remap: &[u32], n: usize, default: T) -> Vec<T> {
    let mut out = vec![default; n];
    for (i, v) in old.into_iter().enumerate() {
        out[remap[i] as usize] = v;
    }
    out
}

/// A user whose downsampled rows changed, on its way to row owners.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct Change {
    /// Per indicator: the rows before and after.
    before: Vec<Vec<u32>>,
    after: Vec<Vec<u32>>,
}

/// Set differences of two sorted lists: (in `b` only, in `a` only).
fn diff(a: &[u32], b: &[u32], added: &mut Vec<u32>, removed: &mut Vec<u32>) {
    let (mut x, mut y) = (0, 0);
    while x < a.len() || y < b.len() {
        if y == b.len() || (x < a.len() && a[x] < b[y]) {
            removed.push(a[x]);
            x += 1;
        } else if x == a.len() || b[y] < a[x] {
            added.push(b[y]);
            y += 1;
        } else {
            x += 1;
            y += 1;
        }
    }
}

/// What an update changed, for the manifest.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UpdateStats {
    /// This worker's rows that were re-scored (not in the manifest).
    #[serde(skip)]
    pub rescored: Vec<bool>,
    /// This worker's users with new events (not in the manifest).
    #[serde(skip)]
    pub touched: Vec<u32>,
    pub users_changed: u64,
    pub rows_rescored: u64,
    pub rows: u64,
    pub full_rescore: bool,
    pub count_changes: u64,
    /// N when every row was last scored.
    pub n_scored: u64,
}

/// The model part of an update: new events (already grouped at their
/// owners as `received`) change the users, the downsampling, the counts,
/// and the correlators of the rows whose counts changed. Every worker calls it.
pub fn update(
    comm: &mut Comm,
    engine: &crate::config::Engine,
    res: &mut Resident,
    received: Vec<(usize, users::UserBatch)>,
    drift: f64,
) -> UpdateStats {
    let me = comm.index;
    let peers = comm.peers;
    let kinds = engine.indicators.len();
    let min_events = engine.min_events_per_user.max(1);
    let range = res.ranges.range(me);

    let mut clock = std::time::Instant::now();
    let mut phases: Vec<(&str, f64)> = Vec::new();
    let mut lap = |name: &'static str| {
        phases.push((name, clock.elapsed().as_secs_f64()));
        clock = std::time::Instant::now();
    };
    // 1. New events join their users.
    let mut fresh: Vec<Vec<(u32, u32, u32)>> = vec![Vec::new(); kinds];
    let mut touched: Vec<u32> = Vec::new();
    for (_, batch) in received {
        let mut start = 0usize;
        let mut item_pos = 0usize;
        for (u, &end) in batch.name_ends.iter().enumerate() {
            let name = &batch.names[start..end as usize];
            start = end as usize;
            let user = res.users.intern(name);
            if user as usize == res.primary.len() {
                res.primary.push(0);
                res.user_hash.push(id_hash(name));
                res.is_row.push(false);
                res.history_hash.push(0);
                res.sampled.extend((0..kinds).map(|_| Vec::new()));
                res.pairs.extend((0..kinds).map(|_| Vec::new()));
            }
            res.primary[user as usize] += batch.primary_events[u];
            touched.push(user);
            for (k, list) in fresh.iter_mut().enumerate() {
                let len = batch.lens[u * kinds + k] as usize;
                let items = &batch.items[item_pos..item_pos + len];
                let times = &batch.times[item_pos..item_pos + len];
                list.extend(items.iter().zip(times).map(|(&i, &t)| (user, i, t)));
                item_pos += len;
            }
        }
    }
    touched.sort_unstable();
    touched.dedup();
    // Pairs not held before (per indicator, by user).
    let mut added: Vec<Vec<(u32, u32)>> = vec![Vec::new(); kinds];
    for (k, list) in fresh.iter_mut().enumerate() {
        users::latest(list);
        for &(u, i, t) in list.iter() {
            let held = &mut res.pairs[u as usize * kinds + k];
            match held.binary_search_by_key(&i, |p| p.0) {
                Ok(p) => held[p].1 = held[p].1.max(t),
                Err(p) => {
                    held.insert(p, (i, t));
                    added[k].push((u, i));
                }
            }
        }
    }

    lap("users");
    // 2. Rows, counts before downsampling, and the new sample keys to the
    //    items' owners.
    let mut pre_delta: Vec<(u32, u32)> = Vec::new();
    let mut key_parcels: Vec<Vec<(u32, u32, u64, u64)>> = vec![Vec::new(); peers];
    let mut new_rows = 0u64;
    let salts: Vec<u64> = engine.indicators.iter().map(|i| indicator_salt(engine.seed, &i.name)).collect();
    let mut cursors = vec![0usize; kinds];
    for &u in &touched {
        let now_row = res.primary[u as usize] >= min_events;
        let was_row = res.is_row[u as usize];
        // The user's added pairs, per indicator (the lists are sorted by user).
        for k in 0..kinds {
            let list = &added[k];
            let mut c = cursors[k];
            while c < list.len() && list[c].0 < u {
                c += 1;
            }
            let start = c;
            while c < list.len() && list[c].0 == u {
                c += 1;
            }
            cursors[k] = c;
            if !now_row {
                continue;
            }
            let uh = res.user_hash[u as usize];
            let mut send = |i: u32| {
                pre_delta.push((k as u32, i));
                let key = sample_key(salts[k], uh, res.item_hash[i as usize]);
                key_parcels[res.ranges.owner(i)].push((k as u32, i, key, user_key(me, u)));
            };
            if was_row {
                for &(_, i) in &list[start..c] {
                    send(i);
                }
            } else {
                let pairs: Vec<u32> = res.user_pairs(k, u).iter().map(|p| p.0).collect();
                for i in pairs {
                    send(i);
                }
            }
        }
        if now_row && !was_row {
            res.is_row[u as usize] = true;
            new_rows += 1;
        }
    }
    for (k, i) in comm.all_gather("follow: counts before", pre_delta).into_iter().flatten() {
        res.pre[k as usize][i as usize] += 1;
    }
    res.n += comm.sum("follow: new rows", new_rows);

    lap("keys");
    // 3. The items' owners keep the smallest keys: new thresholds, and the
    //    users that fell out of an item's sample.
    let received = comm.shuffle("follow: sample keys", key_parcels.into_iter().enumerate().collect());
    let mut arrived: Vec<(u32, u32, u64, u64)> = received.into_iter().flat_map(|(_, keys)| keys).collect();
    arrived.sort_unstable();
    let mut evicted: Vec<Vec<(u32, u32, u32)>> = vec![Vec::new(); peers];
    let mut thresholds: Vec<(u32, u32, u64)> = Vec::new();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for group in arrived.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let (k, i) = (group[0].0, group[0].1);
        let cap = engine.indicators[k as usize].max_items_per_user as usize;
        let list = &mut res.kept[k as usize][(i - range.start) as usize];
        // Keys beyond a full list's last are not kept (their users are
        // recomputed anyway); the rest are merged in, and those pushed past
        // the cap leave the sample.
        let full_last = (list.len() >= cap).then(|| list[cap - 1].0);
        let new =
            group.iter().map(|&(_, _, key, user)| (key, user)).filter(|&(key, _)| full_last.is_none_or(|l| key < l));
        merged.clear();
        let mut old = list.iter().copied().peekable();
        for n in new {
            while let Some(&o) = old.peek() {
                if o < n {
                    merged.push(o);
                    old.next();
                } else {
                    break;
                }
            }
            merged.push(n);
        }
        merged.extend(old);
        if merged.len() > cap {
            for &(_, user) in &merged[cap..] {
                evicted[(user >> 32) as usize].push((k, i, user as u32));
            }
            merged.truncate(cap);
        }
        list.clear();
        list.extend_from_slice(&merged);
        let threshold = if res.pre[k as usize][i as usize] as usize > cap { list[cap - 1].0 } else { u64::MAX };
        if threshold != res.threshold[k as usize][i as usize] {
            thresholds.push((k, i, threshold));
        }
    }
    for (k, i, t) in comm.all_gather("follow: thresholds", thresholds).into_iter().flatten() {
        res.threshold[k as usize][i as usize] = t;
    }
    let received = comm.shuffle("follow: evicted", evicted.into_iter().enumerate().collect());

    lap("thresholds");
    // 4. Users whose downsampled rows changed: their rows before and after.
    //    A user with new pairs is sampled again; a user that only fell out
    //    of items' samples loses those items (its own cap is unchanged).
    let mut evictions: Vec<(u32, u32, u32)> = received.into_iter().flat_map(|(_, list)| list).collect();
    evictions.sort_unstable_by_key(|&(k, i, u)| (u, k, i));
    let mut candidates: Vec<u32> = touched.clone();
    candidates.extend(evictions.iter().map(|&(_, _, u)| u));
    candidates.sort_unstable();
    candidates.dedup();
    let mut changes: Vec<Change> = Vec::new();
    let mut keys = Vec::new();
    let mut post_delta: Vec<(u32, u32, i32)> = Vec::new();
    let (mut plus, mut minus) = (Vec::new(), Vec::new());
    let mut lost: &[(u32, u32, u32)] = &evictions;
    for u in candidates {
        let start = lost.partition_point(|e| e.2 < u);
        let end = start + lost[start..].partition_point(|e| e.2 == u);
        let gone = &lost[start..end];
        lost = &lost[end..];
        if !res.is_row[u as usize] {
            continue;
        }
        let slot = u as usize * kinds;
        let after: Vec<Vec<u32>> = if touched.binary_search(&u).is_ok() {
            (0..kinds).map(|k| res.sample_user(engine, k, u, &mut keys)).collect()
        } else {
            let uh = res.user_hash[u as usize];
            (0..kinds)
                .map(|k| {
                    let row = &res.sampled[slot + k];
                    let out = |i: u32| {
                        gone.iter().any(|e| e.0 == k as u32 && e.1 == i)
                            && sample_key(salts[k], uh, res.item_hash[i as usize]) > res.threshold[k][i as usize]
                    };
                    row.iter().copied().filter(|&i| !out(i)).collect()
                })
                .collect()
        };
        if (0..kinds).all(|k| res.sampled[slot + k] == after[k]) {
            continue;
        }
        let before: Vec<Vec<u32>> =
            (0..kinds).map(|k| std::mem::replace(&mut res.sampled[slot + k], after[k].clone())).collect();
        for k in 0..kinds {
            plus.clear();
            minus.clear();
            diff(&before[k], &after[k], &mut plus, &mut minus);
            post_delta.extend(plus.iter().map(|&i| (k as u32, i, 1)));
            post_delta.extend(minus.iter().map(|&i| (k as u32, i, -1)));
        }
        changes.push(Change { before, after });
    }
    let users_changed = comm.sum("follow: users changed", changes.len() as u64);
    let mut row_count_changed: Vec<u32> = Vec::new();
    for (k, i, d) in comm.all_gather("follow: counts after", post_delta).into_iter().flatten() {
        let c = &mut res.post[k as usize][i as usize];
        *c = (*c as i64 + d as i64) as u32;
        if k == 0 && range.contains(&i) {
            row_count_changed.push(i - range.start);
        }
    }

    lap("sampling");
    // 5. Changed users to the owners of their primary items, before or after.
    let mut parcels: Vec<(usize, Change)> = Vec::new();
    let mut owners: Vec<usize> = Vec::new();
    for change in changes {
        owners.clear();
        owners.extend(change.before[0].iter().chain(&change.after[0]).map(|&i| res.ranges.owner(i)));
        owners.sort_unstable();
        owners.dedup();
        for &w in &owners {
            parcels.push((w, change.clone()));
        }
    }
    let received = comm.shuffle("follow: changed users", parcels);

    lap("ship");
    // 6. The owners apply the differences to the co-occurrence counts.
    let len = (range.end - range.start) as usize;
    let mut deltas: Vec<Vec<(u32, u32, i32)>> = vec![Vec::new(); len];
    let mut count_changes = 0u64;
    for (_, change) in received {
        let (a, b) = (&change.before[0], &change.after[0]);
        let mut both = |i: u32, before: bool, after: bool| {
            let r = (i - range.start) as usize;
            for k in 0..kinds {
                let (old, new) = (&change.before[k], &change.after[k]);
                match (before, after) {
                    (true, true) => {
                        plus.clear();
                        minus.clear();
                        diff(old, new, &mut plus, &mut minus);
                        deltas[r].extend(plus.iter().map(|&j| (k as u32, j, 1)));
                        deltas[r].extend(minus.iter().map(|&j| (k as u32, j, -1)));
                    }
                    (false, true) => deltas[r].extend(new.iter().map(|&j| (k as u32, j, 1))),
                    (true, false) => deltas[r].extend(old.iter().map(|&j| (k as u32, j, -1))),
                    (false, false) => {}
                }
            }
        };
        let (mut x, mut y) = (0, 0);
        while x < a.len() || y < b.len() {
            let (i, before, after) = if y == b.len() || (x < a.len() && a[x] < b[y]) {
                x += 1;
                (a[x - 1], true, false)
            } else if x == a.len() || b[y] < a[x] {
                y += 1;
                (b[y - 1], false, true)
            } else {
                x += 1;
                y += 1;
                (a[x - 1], true, true)
            };
            if range.contains(&i) {
                both(i, before, after);
            }
        }
    }
    let mut rescore = vec![false; len];
    for r in row_count_changed {
        rescore[r as usize] = true;
    }
    for (r, mut list) in deltas.into_iter().enumerate() {
        if list.is_empty() {
            continue;
        }
        list.sort_unstable_by_key(|&(k, j, _)| (k, j));
        let mut changed = false;
        for group in list.chunk_by(|a, b| a.0 == b.0) {
            let k = group[0].0 as usize;
            let mut net: Vec<(u32, i64)> = Vec::new();
            for same in group.chunk_by(|a, b| a.1 == b.1) {
                let d: i64 = same.iter().map(|e| e.2 as i64).sum();
                if d != 0 {
                    net.push((same[0].1, d));
                }
            }
            if net.is_empty() {
                continue;
            }
            count_changes += net.len() as u64;
            changed = true;
            let old = std::mem::take(&mut res.cooc[r][k]);
            res.cooc[r][k] = apply_counts(old, &net);
        }
        rescore[r] |= changed;
    }

    lap("counts");
    // 7. Re-score the rows whose counts changed, or every row once N drifted.
    let full =
        drift == 0.0 || res.n_scored == 0 || (res.n as f64 - res.n_scored as f64).abs() > drift * res.n_scored as f64;
    let scoring = Scoring::new(&engine.indicators, &res.post, res.n);
    let mut rows = std::mem::take(&mut res.correlators.rows);
    let mut candidates_buf = Vec::new();
    let mut rescored = 0u64;
    let mut pair_visits = 0u64;
    for r in 0..len {
        rescore[r] |= full;
        if !rescore[r] {
            continue;
        }
        rescored += 1;
        let i = range.start + r as u32;
        let row_count = res.post[0][i as usize] as u64;
        for (k, (slot, counts)) in rows[r].iter_mut().zip(&res.cooc[r]).enumerate() {
            pair_visits += counts.len() as u64;
            *slot = if row_count == 0 {
                Vec::new()
            } else {
                scoring.score(i, k, row_count, counts.iter().map(|&(j, c)| (j, c as u64)), &mut candidates_buf)
            };
        }
    }
    res.correlators.rows = rows;
    res.correlators.pair_visits = pair_visits;
    lap("scores");
    tracing::debug!(worker = me, ?phases, "update phases");
    if full {
        res.n_scored = res.n;
    }
    UpdateStats {
        rescored: rescore,
        touched,
        users_changed,
        rows_rescored: comm.sum("follow: rows re-scored", rescored),
        rows: res.dict.len() as u64,
        full_rescore: full,
        count_changes: comm.sum("follow: count changes", count_changes),
        n_scored: res.n_scored,
    }
}

/// Adds net changes (sorted by item) to a sorted count list; counts that
/// reach zero are removed.
fn apply_counts(old: Vec<(u32, u32)>, net: &[(u32, i64)]) -> Vec<(u32, u32)> {
    let mut out = Vec::with_capacity(old.len() + net.len());
    let mut d = net.iter().peekable();
    for (j, c) in old {
        while let Some(&&(dj, dc)) = d.peek() {
            if dj >= j {
                break;
            }
            debug_assert!(dc > 0, "a count below zero for a new pair");
            out.push((dj, dc as u32));
            d.next();
        }
        match d.peek() {
            Some(&&(dj, dc)) if dj == j => {
                d.next();
                let v = c as i64 + dc;
                debug_assert!(v >= 0, "a co-occurrence count below zero");
                if v > 0 {
                    out.push((j, v as u32));
                }
            }
            _ => out.push((j, c)),
        }
    }
    for &(dj, dc) in d {
        debug_assert!(dc > 0, "a count below zero for a new pair");
        out.push((dj, dc as u32));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_apply_and_vanish() {
        let old = vec![(1, 2), (4, 1), (9, 3)];
        let net = vec![(0, 1), (4, -1), (5, 2), (9, 1), (12, 1)];
        assert_eq!(apply_counts(old, &net), vec![(0, 1), (1, 2), (5, 2), (9, 4), (12, 1)]);
    }

    #[test]
    fn set_differences() {
        let (mut plus, mut minus) = (Vec::new(), Vec::new());
        diff(&[1, 3, 5, 7], &[2, 3, 7, 8], &mut plus, &mut minus);
        assert_eq!(plus, vec![2, 8]);
        assert_eq!(minus, vec![1, 5]);
    }

    #[test]
    fn dictionaries_merge_with_remap() {
        let old = SortedIds::from_unsorted(["b", "d", "f"]);
        let added = SortedIds::from_unsorted(["a", "e", "g"]);
        let (merged, remap) = merge_dictionaries(&old, &added);
        assert_eq!(merged.iter().collect::<Vec<_>>(), vec!["a", "b", "d", "e", "f", "g"]);
        assert_eq!(remap, vec![1, 2, 4]);
    }
}
