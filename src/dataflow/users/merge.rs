//! The owner's side of grouping: the batches of a user's events from every
//! worker (and the state's) meet here. Users get owner-local ids in batch
//! order; each indicator's items are scattered into one list per user
//! (a counting pass sizes the lists, each batch is freed once scattered),
//! then each small list is sorted and made distinct in place, keeping an
//! item's latest time — no global sort, and (user, item, time) triples only
//! for a state or a resident model ([`UserItems::triples`]).

use super::{Csr, UserBatch, distinct_latest, newest_first};
use crate::intern::Interner;

/// The users met at their owner: owner-local ids, raw primary counts,
/// history hashes (empty when no batch has any) and, per indicator, each user's distinct items.
pub struct Merged {
    pub names: Interner,
    pub primary: Vec<u32>,
    pub prev_history: Vec<u64>,
    pub lists: Vec<UserItems>,
}

/// One indicator's items by owner-local user: `items[offsets[u]..offsets[u + 1]]`
/// sorted and distinct, with each one's latest time in `times` (empty when
/// times are not kept).
pub struct UserItems {
    pub offsets: Vec<u32>,
    pub items: Vec<u32>,
    pub times: Vec<u32>,
}

impl Merged {
    /// Merges `batches` (in order: the owner's ids follow it); with
    /// `times`, items keep their latest time (0 where a batch has none).
    pub fn of(mut batches: Vec<UserBatch>, kinds: usize, times: bool) -> Merged {
        // At most this many users (a user sent by several workers counts
        // once per worker). The table is sized for it up to twice the
        // largest batch, then grows: a table is written all over, so an
        // oversized one costs all its memory.
        let most: usize = batches.iter().map(|b| b.name_ends.len()).sum();
        let largest = batches.iter().map(|b| b.name_ends.len()).max().unwrap_or(0);
        let bytes = batches.iter().map(|b| b.names.len()).sum();
        let mut names = Interner::with_capacity(most.min(2 * largest), bytes);
        let mut primary = Vec::with_capacity(most);
        // History hashes come from a state only: none, none kept.
        let hashes = batches.iter().any(|b| !b.history_hashes.is_empty());
        let mut prev_history = Vec::with_capacity(if hashes { most } else { 0 });
        let ids: Vec<Vec<u32>> = batches
            .iter_mut()
            .map(|batch| {
                let ids = intern_users(&mut names, batch);
                for (u, &user) in ids.iter().enumerate() {
                    if primary.len() <= user as usize {
                        primary.resize(user as usize + 1, 0);
                    }
                    primary[user as usize] += batch.primary_events[u];
                    if hashes {
                        prev_history.resize(primary.len(), 0);
                        let hash = batch.history_hashes.get(u).copied().unwrap_or(0);
                        prev_history[user as usize] = prev_history[user as usize].max(hash);
                    }
                }
                // Only the items are left to read.
                batch.forget_users();
                ids
            })
            .collect();
        crate::memory::release_freed();
        let lists = scatter(batches, &ids, names.len(), kinds, times);
        Merged { names, primary, prev_history, lists }
    }
}

/// The batch's users' owner-local ids (interned in batch order).
fn intern_users(names: &mut Interner, batch: &UserBatch) -> Vec<u32> {
    let starts = std::iter::once(0).chain(batch.name_ends.iter().map(|&e| e as usize));
    names.intern_each(starts.zip(&batch.name_ends).map(|(start, &end)| &batch.names[start..end as usize]))
}

/// Each indicator's items by user from the batches (`ids`: each batch's
/// users' owner-local ids), sorted and distinct.
fn scatter(batches: Vec<UserBatch>, ids: &[Vec<u32>], users: usize, kinds: usize, times: bool) -> Vec<UserItems> {
    let events: usize = batches.iter().map(|b| b.items.len()).sum();
    assert!(events <= u32::MAX as usize, "{events} items for one owner: more than 2^32");
    // Per indicator: each user's start, advanced as its items are placed.
    let mut offsets = vec![vec![0u32; users + 1]; kinds];
    for (batch, ids) in batches.iter().zip(ids) {
        for (lens, &user) in batch.lens.chunks_exact(kinds.max(1)).zip(ids) {
            for (k, &len) in lens.iter().enumerate() {
                offsets[k][user as usize + 1] += len;
            }
        }
    }
    let mut lists: Vec<UserItems> = offsets
        .into_iter()
        .map(|mut offsets| {
            for u in 1..offsets.len() {
                offsets[u] += offsets[u - 1];
            }
            let total = *offsets.last().expect("users + 1 offsets") as usize;
            UserItems { offsets, items: vec![0; total], times: if times { vec![0; total] } else { Vec::new() } }
        })
        .collect();
    for (batch, ids) in batches.into_iter().zip(ids) {
        let mut at = 0usize;
        for (lens, &user) in batch.lens.chunks_exact(kinds.max(1)).zip(ids) {
            for (list, &len) in lists.iter_mut().zip(lens) {
                let (len, start) = (len as usize, &mut list.offsets[user as usize]);
                let to = *start as usize..*start as usize + len;
                list.items[to.clone()].copy_from_slice(&batch.items[at..at + len]);
                if times {
                    match batch.times.get(at..at + len) {
                        Some(t) => list.times[to].copy_from_slice(t),
                        None => list.times[to].fill(0),
                    }
                }
                *start += len as u32;
                at += len;
            }
        }
    }
    crate::memory::release_freed();
    let mut scratch = Vec::new();
    for list in &mut lists {
        list.make_distinct(&mut scratch);
    }
    lists
}

impl UserItems {
    /// After the scatter (each user's offset at its end): each user's items
    /// sorted and distinct (latest time kept), moved down to follow the
    /// previous user's, and the offsets back at the starts.
    fn make_distinct(&mut self, scratch: &mut Vec<(u32, u32)>) {
        let users = self.offsets.len() - 1;
        let (mut read, mut write) = (0usize, 0usize);
        for u in 0..users {
            let end = self.offsets[u] as usize;
            self.offsets[u] = write as u32;
            write += distinct_latest(&mut self.items, &mut self.times, read..end, write, scratch);
            read = end;
        }
        self.offsets[users] = write as u32;
        self.items.truncate(write);
        self.times.truncate(write.min(self.times.len()));
    }

    fn row(&self, user: usize) -> std::ops::Range<usize> {
        self.offsets[user] as usize..self.offsets[user + 1] as usize
    }

    /// The matrix rows of `user_of_row` (ascending), in place.
    pub fn into_rows(self, user_of_row: &[u32]) -> Csr {
        let UserItems { offsets, mut items, .. } = self;
        let mut csr = Csr { offsets: Vec::with_capacity(user_of_row.len() + 1), items: Vec::new() };
        csr.offsets.push(0);
        let mut write = 0;
        for &user in user_of_row {
            let (start, end) = (offsets[user as usize] as usize, offsets[user as usize + 1] as usize);
            items.copy_within(start..end, write);
            write += end - start;
            csr.offsets.push(write);
        }
        items.truncate(write);
        items.shrink_to_fit();
        csr.items = items;
        csr
    }

    /// Every (user, item, latest time), sorted by user and item.
    pub fn triples(&self) -> Vec<(u32, u32, u32)> {
        let mut out = Vec::with_capacity(self.items.len());
        for user in 0..self.offsets.len() - 1 {
            let row = self.row(user);
            let times = self.times.get(row.clone());
            out.extend(self.items[row].iter().enumerate().map(|(j, &i)| (user as u32, i, times.map_or(0, |t| t[j]))));
        }
        out
    }
}

/// Each user's most recent distinct items per indicator, newest first
/// (equal times: by item id), at most `caps[k]`: row `user * kinds + k`.
pub fn recent_items(lists: &[UserItems], caps: &[u32], users: usize) -> Csr {
    let mut out = Csr::with_rows(users * lists.len());
    let mut scratch = Vec::new();
    for user in 0..users {
        for (list, &cap) in lists.iter().zip(caps) {
            let row = list.row(user);
            scratch.clear();
            scratch.extend(list.times[row.clone()].iter().zip(&list.items[row]).map(|(&t, &i)| (t, i)));
            out.push_row(newest_first(&mut scratch, cap));
        }
    }
    out
}
