//! A compact string interner: ids are looked up once and replaced by dense
//! `u32`s for the rest of training (users' [`UserId`](crate::model::UserId)s;
//! items' ids while a worker reads, until the item dictionary is agreed), and
//! that dictionary, [`SortedIds`], whose positions are the [`ItemId`]s.
//!
//! All strings live in one arena with an end offset per id, and the hash
//! table stores only the `u32` id, so an id costs its bytes plus about nine
//! bytes — the UR's JVM dictionaries need several times the string size.

use crate::model::ItemId;
use hashbrown::HashTable;
use std::hash::BuildHasher;

#[derive(Default)]
pub struct Interner {
    arena: String,
    ends: Vec<u32>,
    table: HashTable<u32>,
    hasher: foldhash::fast::FixedState,
}

impl Interner {
    pub fn new() -> Interner {
        Interner::default()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The id of `s`, adding it if new.
    #[inline]
    pub fn intern(&mut self, s: &str) -> u32 {
        let hash = self.hasher.hash_one(s);
        let Interner { arena, ends, table, hasher } = self;
        let found = table.find(hash, |&id| slice(arena, ends, id) == s);
        if let Some(&id) = found {
            return id;
        }
        let id = ends.len() as u32;
        arena.push_str(s);
        assert!(arena.len() <= u32::MAX as usize, "more than 4 GiB of distinct ids in one worker");
        ends.push(arena.len() as u32);
        table.insert_unique(hash, id, |&id| hasher.hash_one(slice(arena, ends, id)));
        id
    }

    /// The id of `s` if it was interned.
    pub fn get(&self, s: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(s);
        self.table.find(hash, |&id| self.resolve(id) == s).copied()
    }

    #[inline]
    pub fn resolve(&self, id: u32) -> &str {
        slice(&self.arena, &self.ends, id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.ends.len() as u32).map(|id| self.resolve(id))
    }

    /// Bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.ends.capacity() * 4 + self.table.capacity() * 5
    }
}

#[inline]
fn slice<'a>(arena: &'a str, ends: &[u32], id: u32) -> &'a str {
    let end = ends[id as usize] as usize;
    let start = if id == 0 { 0 } else { ends[id as usize - 1] as usize };
    &arena[start..end]
}

/// Strings in sorted order, stored compactly: the global item dictionary.
/// Item `i` is the i-th id in byte order, so comparing dense ids compares
/// the id strings (used for deterministic tie-breaking).
#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct SortedIds {
    arena: String,
    ends: Vec<u32>,
}

impl SortedIds {
    /// Merges sorted, deduplicated lists into one sorted, deduplicated list.
    pub fn merge(lists: &[SortedIds]) -> SortedIds {
        let mut out = SortedIds::default();
        let mut cursors = vec![0usize; lists.len()];
        loop {
            let mut best: Option<&str> = None;
            for (list, &c) in lists.iter().zip(&cursors) {
                if c < list.len() {
                    let s = list.get(c as u32);
                    if best.is_none_or(|b| s < b) {
                        best = Some(s);
                    }
                }
            }
            let Some(best) = best else { break };
            out.push(best);
            for (list, c) in lists.iter().zip(cursors.iter_mut()) {
                if *c < list.len() && list.get(*c as u32) == best {
                    *c += 1;
                }
            }
        }
        out
    }

    /// From any strings: sorted and deduplicated.
    pub fn from_unsorted<'a>(ids: impl IntoIterator<Item = &'a str>) -> SortedIds {
        let mut v: Vec<&str> = ids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        let mut out = SortedIds::default();
        for s in v {
            out.push(s);
        }
        out
    }

    fn push(&mut self, s: &str) {
        debug_assert!(self.ends.is_empty() || self.get(self.ends.len() as u32 - 1) < s);
        self.arena.push_str(s);
        assert!(self.arena.len() <= u32::MAX as usize, "more than 4 GiB of distinct item ids");
        self.ends.push(self.arena.len() as u32);
    }

    /// Concatenates lists whose ranges follow each other.
    pub fn concat(parts: &[SortedIds]) -> SortedIds {
        let mut out = SortedIds::default();
        for part in parts {
            for s in part.iter() {
                out.push(s);
            }
        }
        out
    }

    /// Entries `start..end` as a list of their own.
    pub fn slice(&self, start: usize, end: usize) -> SortedIds {
        let mut out = SortedIds::default();
        for i in start..end {
            out.push(self.get(i as u32));
        }
        out
    }

    /// How many entries from `start` on are less than `s`.
    pub fn partition_point_from(&self, start: usize, s: &str) -> usize {
        let (mut lo, mut hi) = (start, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid as u32) < s {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo - start
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The id string of item `id`.
    #[inline]
    pub fn get(&self, id: ItemId) -> &str {
        slice(&self.arena, &self.ends, id)
    }

    /// Position of `s`, by binary search.
    pub fn position(&self, s: &str) -> Option<ItemId> {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.get(mid as u32).cmp(s) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.ends.len() as u32).map(|id| self.get(id))
    }

    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.ends.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_and_resolves() {
        let mut i = Interner::new();
        let a = i.intern("alpha");
        let b = i.intern("beta");
        assert_eq!(i.intern("alpha"), a);
        assert_ne!(a, b);
        assert_eq!(i.resolve(b), "beta");
        assert_eq!(i.get("beta"), Some(b));
        assert_eq!(i.get("gamma"), None);
        for n in 0..10_000 {
            i.intern(&format!("id-{n}"));
        }
        assert_eq!(i.len(), 10_002);
        assert_eq!(i.get("id-9999").map(|id| i.resolve(id)), Some("id-9999"));
        assert_eq!(i.intern(""), 10_002);
        assert_eq!(i.resolve(10_002), "");
    }

    #[test]
    fn merges_sorted_lists() {
        let a = SortedIds::from_unsorted(["b", "a", "d"]);
        let b = SortedIds::from_unsorted(["c", "a", "e", "e"]);
        let m = SortedIds::merge(&[a, b, SortedIds::default()]);
        assert_eq!(m.iter().collect::<Vec<_>>(), ["a", "b", "c", "d", "e"]);
        assert_eq!(m.position("c"), Some(2));
        assert_eq!(m.position("z"), None);
    }
}
