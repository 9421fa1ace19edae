//! Users: every worker's events of a user meet at the user's owner worker
//! (by a hash of the user id), which applies `minEventsPerUser` and holds
//! the user's distinct items per indicator — the rows of the UR's matrices.
//!
//! Users travel as batches, one per destination worker, with the id string
//! once per (worker, user) and items already translated to global item ids.

use super::exchange::Comm;
use super::read::Share;
use crate::hash::id_hash;
use crate::intern::Interner;

/// Rows of one indicator: a compressed sparse row matrix, users × items,
/// items sorted and distinct within a row.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Csr {
    pub offsets: Vec<usize>,
    pub items: Vec<u32>,
}

impl Csr {
    pub fn with_rows(rows: usize) -> Csr {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Csr { offsets, items: Vec::new() }
    }

    #[inline]
    pub fn row(&self, r: usize) -> &[u32] {
        &self.items[self.offsets[r]..self.offsets[r + 1]]
    }

    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn push_row(&mut self, items: impl IntoIterator<Item = u32>) {
        self.items.extend(items);
        self.offsets.push(self.items.len());
    }

    pub fn nnz(&self) -> usize {
        self.items.len()
    }
}

/// Users owned by this worker that pass `minEventsPerUser`.
pub struct Rows {
    /// Owner-local user ids and names of all users seen here (rows or not).
    pub names: Interner,
    /// The owner-local user id of each row.
    pub user_of_row: Vec<u32>,
    /// `id_hash` of each row's user id.
    pub hash: Vec<u64>,
    /// Per indicator: the row's distinct items.
    pub matrices: Vec<Csr>,
    /// Every user's most recent distinct items per indicator (row
    /// `user * indicators + k`, newest first), when asked for.
    pub histories: Option<Csr>,
    /// Raw primary events per user (all users seen here).
    pub primary: Vec<u32>,
    /// Per indicator: every user's distinct (user, item, latest time), for
    /// the state, when asked for.
    pub all_pairs: Option<Vec<Vec<(u32, u32, u32)>>>,
    /// Per user: hash of the history document indexed last time (0: none).
    pub prev_history: Vec<u64>,
}

/// Users on their way to their owner (or, from the state, already there):
/// per user its id, raw primary count, history hash and items per indicator.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct UserBatch {
    pub names: String,
    pub name_ends: Vec<u32>,
    pub primary_events: Vec<u32>,
    /// For each user, the number of items of each indicator.
    pub lens: Vec<u32>,
    /// Global item ids, sorted within a user's indicator.
    pub items: Vec<u32>,
    /// Latest event time (seconds) of each item.
    pub times: Vec<u32>,
    /// Per user: hash of the history document indexed last time (0: none).
    pub history_hashes: Vec<u64>,
}

/// Merges two lists sorted by (user, item) with one entry per pair, keeping
/// the latest time of a pair in both.
pub fn merge_latest(base: Vec<(u32, u32, u32)>, fresh: Vec<(u32, u32, u32)>) -> Vec<(u32, u32, u32)> {
    if fresh.is_empty() {
        return base;
    }
    let mut out = Vec::with_capacity(base.len() + fresh.len());
    let (mut a, mut b) = (base.into_iter().peekable(), fresh.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match (x.0, x.1).cmp(&(y.0, y.1)) {
                std::cmp::Ordering::Less => out.extend(a.next()),
                std::cmp::Ordering::Greater => out.extend(b.next()),
                std::cmp::Ordering::Equal => {
                    let (x, y) = (a.next().expect("peeked"), b.next().expect("peeked"));
                    out.push(if x.2 >= y.2 { x } else { y });
                }
            },
            (Some(_), None) => out.extend(a.by_ref()),
            (None, Some(_)) => out.extend(b.by_ref()),
            (None, None) => return out,
        }
    }
}

/// Sorts (user, item, time) and keeps each (user, item) once, with its latest time.
pub fn latest(pairs: &mut Vec<(u32, u32, u32)>) {
    pairs.sort_unstable_by_key(|&(u, i, t)| (u, i, std::cmp::Reverse(t)));
    pairs.dedup_by_key(|p| (p.0, p.1));
}

/// This worker's users as one batch per owner worker (by a hash of the id),
/// items translated to global ids; with `times`, each item's latest time.
/// Each batch is allocated once, at its final size.
pub fn ship_users(share: &mut Share, global_item: &[u32], peers: usize, times: bool) -> Vec<(usize, UserBatch)> {
    // Per indicator: (local user, global item, latest time), sorted and distinct.
    let usage: Vec<Vec<(u32, u32, u32)>> = std::mem::take(&mut share.usage)
        .into_iter()
        .map(|pairs| {
            let mut pairs: Vec<(u32, u32, u32)> =
                pairs.into_vec().into_iter().map(|(u, i, t)| (u, global_item[i as usize], t)).collect();
            latest(&mut pairs);
            pairs
        })
        .collect();
    let owner = |name: &str| (id_hash(name) % peers as u64) as usize;
    let hashes = !share.prev_history.is_empty();
    let mut batches: Vec<UserBatch> = batch_sizes(&share.users, &usage, peers, owner)
        .into_iter()
        .map(|size| size.allocate(usage.len(), times, hashes))
        .collect();
    let mut cursors = vec![0usize; usage.len()];
    for user in 0..share.users.len() as u32 {
        let name = share.users.resolve(user);
        let batch = &mut batches[owner(name)];
        batch.names.push_str(name);
        batch.name_ends.push(batch.names.len() as u32);
        batch.primary_events.push(share.primary_events.get(user as usize).copied().unwrap_or(0));
        if hashes {
            batch.history_hashes.push(share.prev_history.get(user as usize).copied().unwrap_or(0));
        }
        for (pairs, cursor) in usage.iter().zip(cursors.iter_mut()) {
            let run = &pairs[*cursor..run_end(pairs, *cursor, user)];
            *cursor += run.len();
            batch.lens.push(run.len() as u32);
            batch.items.extend(run.iter().map(|&(_, i, _)| i));
            if times {
                batch.times.extend(run.iter().map(|&(_, _, t)| t));
            }
        }
    }
    drop(usage);
    share.users = Interner::new();
    share.primary_events = Vec::new();

    batches.into_iter().enumerate().collect()
}

/// The end of `user`'s run in pairs sorted by user, from its start.
fn run_end(pairs: &[(u32, u32, u32)], start: usize, user: u32) -> usize {
    start + pairs[start..].iter().take_while(|p| p.0 == user).count()
}

/// What one owner's batch holds.
#[derive(Default, Clone, Copy)]
struct BatchSize {
    users: usize,
    name_bytes: usize,
    pairs: usize,
}

impl BatchSize {
    /// An empty batch with room for exactly this much.
    fn allocate(self, indicators: usize, times: bool, hashes: bool) -> UserBatch {
        UserBatch {
            names: String::with_capacity(self.name_bytes),
            name_ends: Vec::with_capacity(self.users),
            primary_events: Vec::with_capacity(self.users),
            lens: Vec::with_capacity(self.users * indicators),
            items: Vec::with_capacity(self.pairs),
            times: Vec::with_capacity(if times { self.pairs } else { 0 }),
            history_hashes: Vec::with_capacity(if hashes { self.users } else { 0 }),
        }
    }
}

/// The size of each owner's batch.
fn batch_sizes(
    users: &Interner,
    usage: &[Vec<(u32, u32, u32)>],
    peers: usize,
    owner: impl Fn(&str) -> usize,
) -> Vec<BatchSize> {
    let mut sizes = vec![BatchSize::default(); peers];
    let mut cursors = vec![0usize; usage.len()];
    for user in 0..users.len() as u32 {
        let name = users.resolve(user);
        let size = &mut sizes[owner(name)];
        size.users += 1;
        size.name_bytes += name.len();
        for (pairs, cursor) in usage.iter().zip(cursors.iter_mut()) {
            let end = run_end(pairs, *cursor, user);
            size.pairs += end - *cursor;
            *cursor = end;
        }
    }
    sizes
}

/// Sends each user's events to its owner and builds the owner's rows; with
/// `history_caps`, also every user's recent items per indicator. `resident`
/// holds users this worker already owns (from the state), with their items
/// sorted: they join without being sent or sorted again.
pub fn group_users(
    comm: &mut Comm,
    share: &mut Share,
    global_item: &[u32],
    min_events: u32,
    history_caps: Option<&[u32]>,
    keep_pairs: bool,
    resident: Option<UserBatch>,
) -> Rows {
    let indicators = share.usage.len();
    let batches = ship_users(share, global_item, comm.peers, history_caps.is_some() || keep_pairs);
    let received = comm.shuffle("group users", batches);

    // Merge the batches: a user may come from several workers. Resident
    // users come first, so their pairs are already in (user, item) order.
    let mut merged = Merged { names: Interner::new(), primary: Vec::new(), prev_history: Vec::new(), indicators };
    let base = resident.map(|batch| merged.add(vec![batch]));
    let mut pairs = merged.add(received.into_iter().map(|(_, b)| b).collect());
    for list in &mut pairs {
        latest(list);
    }
    if let Some(base) = base {
        pairs = base
            .into_iter()
            .zip(pairs)
            .map(|(mut base, fresh)| {
                if !base.is_sorted_by_key(|&(u, i, _)| (u, i)) {
                    latest(&mut base);
                }
                merge_latest(base, fresh)
            })
            .collect();
    }
    let Merged { names, primary, prev_history, .. } = merged;
    let histories = history_caps.map(|caps| recent_items(&pairs, caps, names.len()));

    // Rows: users with enough raw primary events (at least one).
    let threshold = min_events.max(1);
    let mut row_of = vec![u32::MAX; names.len()];
    let mut user_of_row = Vec::new();
    for (user, &count) in primary.iter().enumerate() {
        if count >= threshold {
            row_of[user] = user_of_row.len() as u32;
            user_of_row.push(user as u32);
        }
    }
    let matrices = pairs.iter().map(|list| rows_of(list, &row_of, &user_of_row)).collect();
    drop(row_of);
    let all_pairs = keep_pairs.then_some(pairs);
    let hash = user_of_row.iter().map(|&u| id_hash(names.resolve(u))).collect();
    Rows { names, user_of_row, hash, matrices, histories, primary, all_pairs, prev_history }
}

/// The users met at their owner so far: owner-local ids, raw primary
/// counts and history hashes.
struct Merged {
    names: Interner,
    primary: Vec<u32>,
    prev_history: Vec<u64>,
    indicators: usize,
}

impl Merged {
    /// Interns the users of `batches` (in order); returns their (user, item,
    /// time) per indicator, in the batches' order. Each batch is dropped as
    /// soon as it is read.
    fn add(&mut self, batches: Vec<UserBatch>) -> Vec<Vec<(u32, u32, u32)>> {
        let indicators = self.indicators;
        let mut totals = vec![0usize; indicators];
        for batch in &batches {
            for lens in batch.lens.chunks_exact(indicators.max(1)) {
                for (total, &len) in totals.iter_mut().zip(lens) {
                    *total += len as usize;
                }
            }
        }
        let mut pairs: Vec<Vec<(u32, u32, u32)>> = totals.into_iter().map(Vec::with_capacity).collect();
        for batch in batches {
            let starts = std::iter::once(0).chain(batch.name_ends.iter().map(|&e| e as usize));
            let names = starts.zip(&batch.name_ends).map(|(start, &end)| &batch.names[start..end as usize]);
            let users = self.names.intern_each(names);
            let mut item_pos = 0usize;
            for (u, &user) in users.iter().enumerate() {
                if self.primary.len() <= user as usize {
                    self.primary.resize(user as usize + 1, 0);
                    self.prev_history.resize(user as usize + 1, 0);
                }
                self.primary[user as usize] += batch.primary_events[u];
                let hash = batch.history_hashes.get(u).copied().unwrap_or(0);
                self.prev_history[user as usize] = self.prev_history[user as usize].max(hash);
                for (k, list) in pairs.iter_mut().enumerate() {
                    let len = batch.lens[u * indicators + k] as usize;
                    let items = &batch.items[item_pos..item_pos + len];
                    match batch.times.get(item_pos..item_pos + len) {
                        Some(times) => list.extend(items.iter().zip(times).map(|(&i, &t)| (user, i, t))),
                        None => list.extend(items.iter().map(|&i| (user, i, 0))),
                    }
                    item_pos += len;
                }
            }
        }
        pairs
    }
}

/// The rows of one indicator from its (user, item, time) sorted by user:
/// the items of each row's user (`user_of_row` ascending, `row_of` its
/// inverse, `u32::MAX` for users without a row).
fn rows_of(list: &[(u32, u32, u32)], row_of: &[u32], user_of_row: &[u32]) -> Csr {
    let kept = list.iter().filter(|&&(u, _, _)| row_of[u as usize] != u32::MAX).count();
    let mut csr = Csr { offsets: Vec::with_capacity(user_of_row.len() + 1), items: Vec::with_capacity(kept) };
    csr.offsets.push(0);
    let mut pos = 0;
    for &user in user_of_row {
        while pos < list.len() && list[pos].0 < user {
            pos += 1;
        }
        let start = pos;
        while pos < list.len() && list[pos].0 == user {
            pos += 1;
        }
        csr.push_row(list[start..pos].iter().map(|&(_, i, _)| i));
    }
    csr
}

/// Each user's most recent distinct items per indicator, newest first
/// (equal times: by item id), at most `caps[k]`.
fn recent_items(pairs: &[Vec<(u32, u32, u32)>], caps: &[u32], users: usize) -> Csr {
    let indicators = pairs.len();
    let mut per: Vec<Vec<Vec<(u32, u32)>>> = vec![vec![Vec::new(); indicators]; users];
    for (k, list) in pairs.iter().enumerate() {
        for &(u, i, t) in list {
            per[u as usize][k].push((t, i));
        }
    }
    let mut out = Csr::with_rows(users * indicators);
    for user in per {
        for (k, mut items) in user.into_iter().enumerate() {
            out.push_row(newest_first(&mut items, caps[k]));
        }
    }
    out
}

/// A user's history in one indicator: its most recent distinct items from
/// (time, item), newest first (equal times: by item id), at most `cap`.
pub fn newest_first(items: &mut [(u32, u32)], cap: u32) -> impl Iterator<Item = u32> + '_ {
    items.sort_unstable_by_key(|&(t, i)| (std::cmp::Reverse(t), i));
    items.iter().take(cap as usize).map(|&(_, i)| i)
}
