//! Users: every worker's events of a user meet at the user's owner worker
//! (by a hash of the user id), which applies `minEventsPerUser` and holds
//! the user's distinct items per indicator — the rows of the UR's matrices.
//!
//! Users travel as batches, one per destination worker, with the id string
//! once per (worker, user) and items already translated to global item ids.

mod merge;
mod ship;

use merge::{Merged, UserItems};
pub use ship::ship_users;

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
    /// Owner-local user ids and names of all users seen here (rows or not);
    /// empty once forgotten ([`Rows::forget_names`]).
    pub names: Interner,
    /// How many users were seen here (rows or not).
    pub users: usize,
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
    /// Per user: hash of the history document indexed last time (0: none;
    /// empty unless histories, a state or a resident model need it, or a
    /// state read in had some).
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

impl UserBatch {
    /// Frees the users' ids, counts and hashes (their items stay).
    pub fn forget_users(&mut self) {
        self.names = String::new();
        self.name_ends = Vec::new();
        self.primary_events = Vec::new();
        self.history_hashes = Vec::new();
    }
}

/// Sorts (user, item, time) and keeps each (user, item) once, with its latest time.
pub fn latest(pairs: &mut Vec<(u32, u32, u32)>) {
    pairs.sort_unstable_by_key(|&(u, i, t)| (u, i, std::cmp::Reverse(t)));
    pairs.dedup_by_key(|p| (p.0, p.1));
}

/// Sends each user's events to its owner and builds the owner's rows; with
/// `history_caps`, also every user's recent items per indicator. `resident`
/// holds users this worker already owns (from the state): they join
/// without being sent, and come first.
pub fn group_users(
    comm: &mut Comm,
    share: &mut Share,
    global_item: &[u32],
    min_events: u32,
    history_caps: Option<&[u32]>,
    keep_pairs: bool,
    resident: Option<UserBatch>,
) -> Rows {
    let kinds = share.usage.len();
    let times = history_caps.is_some() || keep_pairs;
    let batches = ship_users(share, global_item, comm.peers, times);
    let received = comm.shuffle("group users", batches);

    // A user may come from several workers (and the state).
    let batches: Vec<UserBatch> = resident.into_iter().chain(received.into_iter().map(|(_, b)| b)).collect();
    let Merged { names, primary, mut prev_history, lists } = Merged::of(batches, kinds, times);
    if times {
        // Histories and states are written by user.
        prev_history.resize(names.len(), 0);
    }
    let histories = history_caps.map(|caps| merge::recent_items(&lists, caps, names.len()));

    // Rows: users with enough raw primary events (at least one).
    let threshold = min_events.max(1);
    let user_of_row: Vec<u32> =
        primary.iter().enumerate().filter(|&(_, &count)| count >= threshold).map(|(user, _)| user as u32).collect();
    let all_pairs = keep_pairs.then(|| lists.iter().map(UserItems::triples).collect());
    let matrices = lists.into_iter().map(|list| list.into_rows(&user_of_row)).collect();
    let hash = user_of_row.iter().map(|&u| id_hash(names.resolve(u))).collect();
    let users = names.len();
    Rows { names, users, user_of_row, hash, matrices, histories, primary, all_pairs, prev_history }
}

impl Rows {
    /// Frees the users' names when nothing after grouping needs them (no
    /// histories, state or resident model): they are most of what a
    /// worker holds per user.
    pub fn forget_names(&mut self) {
        self.names = Interner::new();
    }
}

/// Sorts the segment `from` of `items` (and `times`, when not empty) by
/// item, keeps each item once (with its latest time) and moves the result
/// to start at `to` (at most `from.start`). Returns its length.
fn distinct_latest(
    items: &mut [u32],
    times: &mut [u32],
    from: std::ops::Range<usize>,
    to: usize,
    scratch: &mut Vec<(u32, u32)>,
) -> usize {
    if times.is_empty() {
        items[from.clone()].sort_unstable();
        let mut w = to;
        for r in from {
            let item = items[r];
            if w == to || items[w - 1] != item {
                items[w] = item;
                w += 1;
            }
        }
        return w - to;
    }
    scratch.clear();
    scratch.extend(from.map(|r| (items[r], times[r])));
    scratch.sort_unstable_by_key(|&(item, time)| (item, std::cmp::Reverse(time)));
    scratch.dedup_by_key(|p| p.0);
    for (w, &(item, time)) in (to..).zip(scratch.iter()) {
        items[w] = item;
        times[w] = time;
    }
    scratch.len()
}

/// A user's history in one indicator: its most recent distinct items from
/// (time, item), newest first (equal times: by item id), at most `cap`.
pub fn newest_first(items: &mut [(u32, u32)], cap: u32) -> impl Iterator<Item = u32> + '_ {
    items.sort_unstable_by_key(|&(t, i)| (std::cmp::Reverse(t), i));
    items.iter().take(cap as usize).map(|&(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Engine;
    use crate::dataflow::read::ReadPlan;

    fn plan(keep_times: bool) -> ReadPlan {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/handmade.json")).unwrap();
        ReadPlan::new(&Engine::from_json(&text).unwrap().engine, 0).keeping_times(keep_times)
    }

    /// A share of `events` (user, indicator, item, time), local ids in order of appearance.
    fn share(plan: &ReadPlan, events: &[(&str, usize, &str, u32)]) -> Share {
        let mut share = Share::empty(plan);
        for &(user, k, item, time) in events {
            let (u, i) = (share.users.intern(user), share.items.intern(item));
            share.push_usage(plan, k, (u, i), time);
            if k == 0 {
                share.primary_events.resize(share.users.len(), 0);
                share.primary_events[u as usize] += 1;
            }
        }
        share
    }

    /// A user as batches hold it: name, primary events, per indicator its (item, time).
    type Shipped = (String, u32, Vec<Vec<(u32, u32)>>);
    /// A user to put in a batch: name, primary events, its (item, time).
    type ToShip<'a> = (&'a str, u32, &'a [(u32, u32)]);

    /// What the batches say, by user.
    fn decode(batches: &[(usize, UserBatch)], kinds: usize) -> Vec<Shipped> {
        let mut out = Vec::new();
        for (_, b) in batches {
            let (mut start, mut at) = (0usize, 0usize);
            for (u, &end) in b.name_ends.iter().enumerate() {
                let lists = (0..kinds)
                    .map(|k| {
                        let len = b.lens[u * kinds + k] as usize;
                        let items = (at..at + len).map(|p| (b.items[p], b.times.get(p).copied().unwrap_or(0)));
                        at += len;
                        items.collect()
                    })
                    .collect();
                out.push((b.names[start..end as usize].to_string(), b.primary_events[u], lists));
                start = end as usize;
            }
            assert_eq!(at, b.items.len(), "every item belongs to a user");
        }
        out.sort();
        out
    }

    #[test]
    fn shipped_users_hold_their_distinct_items_with_the_latest_time() {
        let plan = plan(true);
        let events = [
            ("a", 0, "x", 5),
            ("b", 0, "y", 1),
            ("a", 0, "z", 2),
            ("a", 0, "x", 9),
            ("a", 1, "x", 3),
            ("a", 0, "x", 7),
        ];
        let mut share = share(&plan, &events);
        // Local items x, y, z are global 30, 10, 20.
        let batches = ship_users(&mut share, &[30, 10, 20], 3, true);
        assert_eq!(batches.len(), 3);
        let users = decode(&batches, plan.indicators);
        assert_eq!(
            users,
            vec![
                ("a".to_string(), 4, vec![vec![(20, 2), (30, 9)], vec![(30, 3)], vec![]]),
                ("b".to_string(), 1, vec![vec![(10, 1)], vec![], vec![]]),
            ]
        );
        for (owner, b) in &batches {
            let starts = std::iter::once(0).chain(b.name_ends.iter().map(|&e| e as usize));
            for (start, &end) in starts.zip(&b.name_ends) {
                assert_eq!((id_hash(&b.names[start..end as usize]) % 3) as usize, *owner, "a user goes to its owner");
            }
        }
        assert!(share.usage.is_empty() && share.users.is_empty(), "the share's events are shipped, not copied");
    }

    #[test]
    fn without_times_only_items_are_shipped() {
        let plan = plan(false);
        let mut share = share(&plan, &[("a", 0, "x", 5), ("a", 0, "x", 9), ("a", 0, "y", 1)]);
        let batches = ship_users(&mut share, &[1, 0], 1, false);
        assert!(batches[0].1.times.is_empty());
        assert_eq!(
            decode(&batches, plan.indicators),
            vec![("a".to_string(), 3, vec![vec![(0, 0), (1, 0)], vec![], vec![]])]
        );
    }

    fn batch(users: &[ToShip]) -> UserBatch {
        let mut b = UserBatch::default();
        for &(name, primary, items) in users {
            b.names.push_str(name);
            b.name_ends.push(b.names.len() as u32);
            b.primary_events.push(primary);
            b.lens.push(items.len() as u32);
            b.items.extend(items.iter().map(|p| p.0));
            b.times.extend(items.iter().map(|p| p.1));
        }
        b
    }

    #[test]
    fn owners_merge_a_users_batches_distinct_and_latest() {
        let first = batch(&[("a", 2, &[(4, 1), (7, 5)]), ("b", 1, &[(3, 2)])]);
        let second = batch(&[("c", 0, &[]), ("a", 1, &[(2, 8), (7, 6)])]);
        let merged = merge::Merged::of(vec![first, second], 1, true);
        assert_eq!(merged.names.iter().collect::<Vec<_>>(), ["a", "b", "c"], "ids in batch order");
        assert_eq!(merged.primary, [3, 1, 0]);
        assert_eq!(merged.lists[0].triples(), [(0, 2, 8), (0, 4, 1), (0, 7, 6), (1, 3, 2)]);
        let recent = merge::recent_items(&merged.lists, &[2], 3);
        assert_eq!((recent.row(0), recent.row(1), recent.row(2)), (&[2, 7][..], &[3][..], &[][..]));
        let list = merged.lists.into_iter().next().unwrap();
        let rows = list.into_rows(&[0, 2]);
        assert_eq!((rows.rows(), rows.row(0), rows.row(1)), (2, &[2, 4, 7][..], &[][..]));
    }
}
