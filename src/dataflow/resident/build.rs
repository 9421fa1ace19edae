//! The resident model built at the end of a full run.

use super::super::cco::{Correlators, RowRanges};
use super::super::exchange::Comm;
use super::super::facts::RangeFacts;
use super::super::read::Share;
use super::super::users::{self, Rows};
use super::{Resident, user_key};
use crate::hash::{id_hash, indicator_salt, sample_key};
use crate::intern::SortedIds;

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
        let property_events = run.range_facts.events.clone();
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

        let kept = kept_keys(comm, engine, &rows, before, &item_hash, &ranges);
        let threshold = thresholds_of(engine, &pre, &kept, &range, comm);

        let users_n = rows.names.len();
        let user_hash: Vec<u64> = rows.names.iter().map(id_hash).collect();
        let (is_row, sampled) = user_rows(&rows, &after, kinds);
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
        let pairs = pairs_by_user(rows.all_pairs.expect("pairs kept when following"), users_n, kinds);
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
            property_events: resized(property_events, len),
            properties: resized(properties, len),
            deleted: resized(deleted, len),
            facts,
        }
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

/// The smallest sample keys of every item's users, at the item's owner:
/// `[k][row]` → (sample key, user key), sorted, at most the indicator's cap.
fn kept_keys(
    comm: &mut Comm,
    engine: &crate::config::Engine,
    rows: &Rows,
    before: Vec<users::Csr>,
    item_hash: &[u64],
    ranges: &RowRanges,
) -> Vec<Vec<Vec<(u64, u64)>>> {
    let me = comm.index;
    let kinds = engine.indicators.len();
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
    kept
}

/// Which users are rows, and their downsampled items (`[user * kinds + k]`).
fn user_rows(rows: &Rows, after: &[users::Csr], kinds: usize) -> (Vec<bool>, Vec<Vec<u32>>) {
    let users_n = rows.names.len();
    let mut is_row = vec![false; users_n];
    let mut sampled = vec![Vec::new(); users_n * kinds];
    for (r, &user) in rows.user_of_row.iter().enumerate() {
        is_row[user as usize] = true;
        for (k, matrix) in after.iter().enumerate() {
            sampled[user as usize * kinds + k] = matrix.row(r).to_vec();
        }
    }
    (is_row, sampled)
}

/// Per-indicator (user, item, time) lists as each user's (item, time)
/// pairs, `[user * kinds + k]`.
fn pairs_by_user(all_pairs: Vec<Vec<(u32, u32, u32)>>, users_n: usize, kinds: usize) -> Vec<Vec<(u32, u32)>> {
    let mut pairs = vec![Vec::new(); users_n * kinds];
    for (k, list) in all_pairs.into_iter().enumerate() {
        for (u, i, t) in list {
            pairs[u as usize * kinds + k].push((i, t));
        }
    }
    pairs
}

/// `v` extended (or cut) to `len` rows.
fn resized<T: Clone + Default>(mut v: Vec<T>, len: usize) -> Vec<T> {
    v.resize(len, T::default());
    v
}
