//! An update of a resident model with new events, step by step (see the
//! module documentation of [`super`]).

use super::super::cco::Scoring;
use super::super::exchange::Comm;
use super::super::users;
use super::{Resident, user_key};
use crate::config::Engine;
use crate::hash::{id_hash, indicator_salt, sample_key};
use std::ops::Range;

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
    engine: &Engine,
    res: &mut Resident,
    received: Vec<(usize, users::UserBatch)>,
    drift: f64,
) -> UpdateStats {
    let range = res.ranges.range(comm.index);
    let mut clock = std::time::Instant::now();
    let mut phases: Vec<(&str, f64)> = Vec::new();
    let mut lap = |name: &'static str| {
        phases.push((name, clock.elapsed().as_secs_f64()));
        clock = std::time::Instant::now();
    };
    let (touched, added) = join_events(engine, res, received);
    lap("users");
    let key_parcels = count_rows(comm, engine, res, &touched, &added);
    lap("keys");
    let evicted = keep_smallest_keys(comm, engine, res, key_parcels, &range);
    lap("thresholds");
    let resampled = resample(comm, engine, res, &touched, evicted, &range);
    lap("sampling");
    let received = ship_changes(comm, res, resampled.changes);
    lap("ship");
    let deltas = count_deltas(received, &range, engine.indicators.len());
    let (mut rescore, count_changes) = apply_deltas(res, deltas, resampled.row_count_changed);
    lap("counts");
    let scored = rescore_rows(engine, res, &range, &mut rescore, drift);
    lap("scores");
    tracing::debug!(worker = comm.index, ?phases, "update phases");
    if scored.full {
        res.n_scored = res.n;
    }
    UpdateStats {
        rescored: rescore,
        touched,
        users_changed: resampled.users_changed,
        rows_rescored: comm.sum("follow: rows re-scored", scored.rows),
        rows: res.dict.len() as u64,
        full_rescore: scored.full,
        count_changes: comm.sum("follow: count changes", count_changes),
        n_scored: res.n_scored,
    }
}

/// Step 1: New events join their users. Returns the users with new events
/// (sorted) and, per indicator, the (user, item) pairs not held before.
fn join_events(
    engine: &Engine,
    res: &mut Resident,
    received: Vec<(usize, users::UserBatch)>,
) -> (Vec<u32>, Vec<Vec<(u32, u32)>>) {
    let kinds = engine.indicators.len();
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
    (touched, added)
}

/// Step 2: Rows, counts before downsampling, and the new sample keys to the
/// items' owners (returned, by worker).
fn count_rows(
    comm: &mut Comm,
    engine: &Engine,
    res: &mut Resident,
    touched: &[u32],
    added: &[Vec<(u32, u32)>],
) -> Vec<Vec<(u32, u32, u64, u64)>> {
    let me = comm.index;
    let kinds = engine.indicators.len();
    let min_events = engine.min_events_per_user.max(1);
    let mut pre_delta: Vec<(u32, u32)> = Vec::new();
    let mut key_parcels: Vec<Vec<(u32, u32, u64, u64)>> = vec![Vec::new(); comm.peers];
    let mut new_rows = 0u64;
    let salts = salts(engine);
    let mut cursors = vec![0usize; kinds];
    for &u in touched {
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
    key_parcels
}

/// Step 3: The items' owners keep the smallest keys: new thresholds, and the
/// users that fell out of an item's sample (returned at their owners:
/// (indicator, item, user)).
fn keep_smallest_keys(
    comm: &mut Comm,
    engine: &Engine,
    res: &mut Resident,
    key_parcels: Vec<Vec<(u32, u32, u64, u64)>>,
    range: &Range<u32>,
) -> Vec<(usize, Vec<Eviction>)> {
    let received = comm.shuffle("follow: sample keys", key_parcels.into_iter().enumerate().collect());
    let mut arrived: Vec<(u32, u32, u64, u64)> = received.into_iter().flat_map(|(_, keys)| keys).collect();
    arrived.sort_unstable();
    let mut evicted: Vec<Vec<(u32, u32, u32)>> = vec![Vec::new(); comm.peers];
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
    comm.shuffle("follow: evicted", evicted.into_iter().enumerate().collect())
}

/// Users whose downsampled rows changed, and what that did to the counts.
struct Resampled {
    changes: Vec<Change>,
    /// Rows of this worker whose primary count after downsampling changed.
    row_count_changed: Vec<u32>,
    /// Users changed, over all workers.
    users_changed: u64,
}

/// Step 4: Users whose downsampled rows changed: their rows before and after.
/// A user with new pairs is sampled again; a user that only fell out
/// of items' samples loses those items (its own cap is unchanged).
fn resample(
    comm: &mut Comm,
    engine: &Engine,
    res: &mut Resident,
    touched: &[u32],
    received: Vec<(usize, Vec<Eviction>)>,
    range: &Range<u32>,
) -> Resampled {
    let kinds = engine.indicators.len();
    let salts = salts(engine);
    //    of items' samples loses those items (its own cap is unchanged).
    let mut evictions: Vec<(u32, u32, u32)> = received.into_iter().flat_map(|(_, list)| list).collect();
    evictions.sort_unstable_by_key(|&(k, i, u)| (u, k, i));
    let mut candidates: Vec<u32> = touched.to_vec();
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
    Resampled { changes, row_count_changed, users_changed }
}

/// Step 5: Changed users to the owners of their primary items, before or after.
fn ship_changes(comm: &mut Comm, res: &Resident, changes: Vec<Change>) -> Vec<(usize, Change)> {
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
    comm.shuffle("follow: changed users", parcels)
}

/// Step 6: The differences the changed users make to the co-occurrence counts of
/// this worker's rows: per row, (indicator, item, ±1).
fn count_deltas(received: Vec<(usize, Change)>, range: &Range<u32>, kinds: usize) -> Vec<Vec<(u32, u32, i32)>> {
    let (mut plus, mut minus) = (Vec::new(), Vec::new());
    let len = (range.end - range.start) as usize;
    let mut deltas: Vec<Vec<(u32, u32, i32)>> = vec![Vec::new(); len];
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
    deltas
}

/// Step 6: The owners apply the differences to the co-occurrence counts; returns
/// the rows to re-score and the number of counts changed.
fn apply_deltas(
    res: &mut Resident,
    deltas: Vec<Vec<(u32, u32, i32)>>,
    row_count_changed: Vec<u32>,
) -> (Vec<bool>, u64) {
    let len = deltas.len();
    let mut count_changes = 0u64;
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

    (rescore, count_changes)
}

/// A user that left an item's sample, on its way to the user's owner:
/// (indicator, item, owner-local user).
type Eviction = (u32, u32, u32);

/// Every indicator's sampling salt.
fn salts(engine: &Engine) -> Vec<u64> {
    engine.indicators.iter().map(|i| indicator_salt(engine.seed, &i.name)).collect()
}

/// What re-scoring did.
struct Scored {
    /// Every row was re-scored (N drifted).
    full: bool,
    /// Rows re-scored on this worker.
    rows: u64,
}

/// Step 7: Re-score the rows whose counts changed, or every row once N drifted.
fn rescore_rows(engine: &Engine, res: &mut Resident, range: &Range<u32>, rescore: &mut [bool], drift: f64) -> Scored {
    let len = rescore.len();
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
    Scored { full, rows: rescored }
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
}
