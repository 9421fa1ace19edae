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
//! An update ([`update`], one function per step) reads only the new files. New events go to their
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
//!
//! Not to be confused with [`crate::state`] (the training state on disk,
//! which a run resumes from) nor with [`super::state_part`] (a worker's
//! share ↔ its part of that state): the resident model lives only in memory
//! while `--follow` runs. It is built at the end of the first run
//! ([`build`]); new item ids move what it holds ([`items`]).

mod build;
mod items;
mod update;

pub use build::FromRun;
pub use items::merge_dictionaries;
pub use update::{UpdateStats, update};

use super::cco::{Correlators, RowRanges};
use super::properties::aggregate;
use super::read::Share;
use super::sample::sample_row;
use super::users;
use crate::hash::{indicator_salt, sample_key};
use crate::intern::{Interner, SortedIds};
use crate::model::{Properties, PropertyEvent};
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

impl Resident {
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
