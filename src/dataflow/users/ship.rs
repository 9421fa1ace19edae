//! The reader's side of grouping: this worker's usage events sorted into
//! one [`UserBatch`] per owner worker — per user its id, raw primary count,
//! history hash and, per indicator, its distinct items (global ids, sorted;
//! with times, each item's latest time).
//!
//! No global sort and no second copy of the events: a counting pass sizes
//! each (user, indicator) segment of its owner's batch, every event is
//! scattered to its segment (the read's chunks freed as they are done), and
//! each small segment is then sorted and made distinct in place.

use super::{UserBatch, distinct_latest};
use crate::dataflow::read::Share;
use crate::hash::id_hash;
use crate::intern::Names;

/// This worker's users as one batch per owner worker (by a hash of the id),
/// items translated to global ids; with `times`, each item's latest time.
/// Each batch is allocated once.
pub fn ship_users(share: &mut Share, global_item: &[u32], peers: usize, times: bool) -> Vec<(usize, UserBatch)> {
    let kinds = share.usage.len();
    assert!(
        !times || share.usage.iter().zip(&share.usage_times).all(|(u, t)| u.len() == t.len()),
        "times shipped are times read (ReadPlan::keep_times)"
    );
    // No more lookups: the names alone (the table is freed).
    let users = std::mem::take(&mut share.users).into_names();
    crate::memory::release_freed();
    let owner_of: Vec<u32> = users.iter().map(|name| (id_hash(name) % peers as u64) as u32).collect();
    // Per (user, indicator): its number of events, then its segment's start
    // in its owner's batch, then (after the scatter) the segment's end (a
    // batch holds fewer than 2^32 events: 32 GB of them read by one worker).
    let mut segment = vec![0u32; owner_of.len() * kinds];
    for (k, usage) in share.usage.iter().enumerate() {
        for &(user, _) in usage.iter() {
            segment[user as usize * kinds + k] += 1;
        }
    }
    let hashes = !share.prev_history.is_empty();
    let mut batches: Vec<UserBatch> = batch_sizes(&users, &owner_of, &segment, kinds, peers)
        .into_iter()
        .map(|size| size.allocate(kinds, times, hashes))
        .collect();
    let mut cursor = vec![0u32; peers];
    for (user, &owner) in owner_of.iter().enumerate() {
        for count in &mut segment[user * kinds..(user + 1) * kinds] {
            let start = cursor[owner as usize];
            cursor[owner as usize] += *count;
            *count = start;
        }
    }
    let usage = std::mem::take(&mut share.usage).into_iter().zip(std::mem::take(&mut share.usage_times));
    for (k, (usage, usage_times)) in usage.enumerate() {
        let mut time_chunks = usage_times.into_chunks();
        for chunk in usage.into_chunks() {
            let chunk_times = time_chunks.next().unwrap_or_default();
            for (e, (user, item)) in chunk.into_iter().enumerate() {
                let at = &mut segment[user as usize * kinds + k];
                let batch = &mut batches[owner_of[user as usize] as usize];
                batch.items[*at as usize] = global_item[item as usize];
                if times {
                    batch.times[*at as usize] = chunk_times.get(e).copied().unwrap_or(0);
                }
                *at += 1;
            }
        }
    }
    crate::memory::release_freed();
    fill_users(share, &users, &owner_of, &segment, &mut batches);
    share.primary_events = Vec::new();
    drop((users, owner_of, segment));
    crate::memory::release_freed();
    batches.into_iter().enumerate().collect()
}

/// Appends each user's id, counts and lengths to its owner's batch, and
/// makes each of its segments (ending at `ends`) sorted and distinct,
/// moved down to follow the previous one.
fn fill_users(share: &Share, users: &Names, owner_of: &[u32], ends: &[u32], batches: &mut [UserBatch]) {
    let kinds = if owner_of.is_empty() { 0 } else { ends.len() / owner_of.len() };
    let mut read = vec![0usize; batches.len()];
    let mut write = vec![0usize; batches.len()];
    let mut scratch = Vec::new();
    let hashes = !share.prev_history.is_empty();
    for (user, &owner) in owner_of.iter().enumerate() {
        let o = owner as usize;
        let batch = &mut batches[o];
        batch.names.push_str(users.resolve(user as u32));
        batch.name_ends.push(batch.names.len() as u32);
        batch.primary_events.push(share.primary_events.get(user).copied().unwrap_or(0));
        if hashes {
            batch.history_hashes.push(share.prev_history.get(user).copied().unwrap_or(0));
        }
        for &end in &ends[user * kinds..(user + 1) * kinds] {
            let len =
                distinct_latest(&mut batch.items, &mut batch.times, read[o]..end as usize, write[o], &mut scratch);
            batch.lens.push(len as u32);
            read[o] = end as usize;
            write[o] += len;
        }
    }
    for (batch, len) in batches.iter_mut().zip(write) {
        batch.items.truncate(len);
        batch.items.shrink_to_fit();
        if !batch.times.is_empty() {
            batch.times.truncate(len);
            batch.times.shrink_to_fit();
        }
    }
}

/// What one owner's batch holds.
#[derive(Default, Clone, Copy)]
struct BatchSize {
    users: usize,
    name_bytes: usize,
    /// Events, duplicates included.
    events: usize,
}

impl BatchSize {
    /// An empty batch with room for exactly this much; items (and times)
    /// have one slot per event, to be scattered into.
    fn allocate(self, indicators: usize, times: bool, hashes: bool) -> UserBatch {
        UserBatch {
            names: String::with_capacity(self.name_bytes),
            name_ends: Vec::with_capacity(self.users),
            primary_events: Vec::with_capacity(self.users),
            lens: Vec::with_capacity(self.users * indicators),
            items: vec![0; self.events],
            times: if times { vec![0; self.events] } else { Vec::new() },
            history_hashes: Vec::with_capacity(if hashes { self.users } else { 0 }),
        }
    }
}

/// The size of each owner's batch, from each (user, indicator)'s events.
fn batch_sizes(users: &Names, owner_of: &[u32], counts: &[u32], kinds: usize, peers: usize) -> Vec<BatchSize> {
    let mut sizes = vec![BatchSize::default(); peers];
    for (user, &owner) in owner_of.iter().enumerate() {
        let size = &mut sizes[owner as usize];
        size.users += 1;
        size.name_bytes += users.resolve(user as u32).len();
        size.events += counts[user * kinds..(user + 1) * kinds].iter().map(|&c| c as usize).sum::<usize>();
    }
    let most = sizes.iter().map(|s| s.events).max().unwrap_or(0);
    assert!(most <= u32::MAX as usize, "{most} events for one owner in one worker: more than 2^32");
    sizes
}
