//! A compact string interner: ids are looked up once and replaced by dense
//! `u32`s for the rest of training (users' [`UserId`](crate::model::UserId)s;
//! items' ids while a worker reads, until the item dictionary is agreed), and
//! that dictionary, [`SortedIds`], whose positions are the [`ItemId`]s.
//!
//! All strings live in one arena, each after a small header holding its id
//! and length. The table is open addressing with linear probing over `u64`
//! slots that hold 32 bits of the string's hash and its arena offset, so a
//! lookup touches two cache lines (the slot, the entry) instead of the four
//! of a Swiss table over ids (control bytes, bucket, end offsets, arena).
//! Readers intern a batch of strings at a time ([`Interner::intern_all`]):
//! the slots and entries of the strings a few places ahead are prefetched,
//! so the memory latency of many lookups overlaps. An id costs its bytes
//! plus about 20 bytes — the UR's JVM dictionaries need several times the
//! string size.

use crate::model::ItemId;
use std::hash::BuildHasher;

/// The hash of an id string for the interner.
#[inline]
fn hash(s: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x5eed).hash_one(s)
}

/// Strings to intern together, with their hashes.
#[derive(Default)]
pub struct Batch {
    bytes: String,
    ends: Vec<u32>,
    hashes: Vec<u64>,
}

impl Batch {
    pub fn push(&mut self, s: &str) {
        self.bytes.push_str(s);
        self.ends.push(self.bytes.len() as u32);
        self.hashes.push(hash(s));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.hashes.clear();
    }

    fn get(&self, i: usize) -> &str {
        slice(&self.bytes, &self.ends, i as u32)
    }
}

/// How many strings ahead [`Interner::intern_all`] prefetches (twice this
/// for the slots, once for the entries).
const AHEAD: usize = 8;
/// A length byte of this value means a `u32` length follows.
const LONG: u8 = u8::MAX;

#[derive(Default)]
pub struct Interner {
    /// Entries back to back: `[id: u32 LE][len: u8][bytes]`, or for 255
    /// bytes and more `[id][255][len: u32 LE][bytes]`.
    arena: Vec<u8>,
    /// Each id's entry offset.
    starts: Vec<u32>,
    /// 0: empty; else the hash's high 32 bits, then the entry offset + 1.
    /// A power of two long, at most seven eighths full.
    slots: Vec<u64>,
}

impl Interner {
    pub fn new() -> Interner {
        Interner::default()
    }

    /// An interner with room for `names` distinct names of `bytes` bytes
    /// in all: no growing (and no copies left behind) up to that.
    pub fn with_capacity(names: usize, bytes: usize) -> Interner {
        let slots = (names * 8 / 7 + 1).next_power_of_two().max(16);
        Interner {
            arena: Vec::with_capacity(bytes + names * 5),
            starts: Vec::with_capacity(names),
            slots: vec![0; slots],
        }
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The id of `s`, adding it if new.
    #[inline]
    pub fn intern(&mut self, s: &str) -> u32 {
        self.intern_hashed(s, hash(s))
    }

    /// The ids of a batch's strings, in order, into `out` (the same ids as
    /// interning them one by one).
    pub fn intern_all(&mut self, batch: &Batch, out: &mut Vec<u32>) {
        out.reserve(batch.len());
        for i in 0..batch.len() {
            if let Some(&h) = batch.hashes.get(i + 2 * AHEAD) {
                self.prefetch_slot(h);
            }
            if let Some(&h) = batch.hashes.get(i + AHEAD) {
                self.prefetch_entry(h);
            }
            out.push(self.intern_hashed(batch.get(i), batch.hashes[i]));
        }
    }

    /// The ids of `names`, in order, interned a batch at a time.
    pub fn intern_each<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
        let (mut batch, mut out) = (Batch::default(), Vec::new());
        for name in names {
            batch.push(name);
            if batch.len() == 1024 {
                self.intern_all(&batch, &mut out);
                batch.clear();
            }
        }
        self.intern_all(&batch, &mut out);
        out
    }

    /// The id of `s` if it was interned.
    pub fn get(&self, s: &str) -> Option<u32> {
        self.find(s, hash(s)).ok()
    }

    #[inline]
    pub fn resolve(&self, id: u32) -> &str {
        self.entry(self.starts[id as usize] as usize).1
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len() as u32).map(|id| self.resolve(id))
    }

    /// Bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.starts.capacity() * 4 + self.slots.capacity() * 8
    }

    #[inline]
    fn intern_hashed(&mut self, s: &str, h: u64) -> u32 {
        match self.find(s, h) {
            Ok(id) => id,
            Err(slot) => self.insert(s, h, slot),
        }
    }

    /// The id of `s`, or the empty slot where it belongs.
    #[inline]
    fn find(&self, s: &str, h: u64) -> Result<u32, usize> {
        if self.slots.is_empty() {
            return Err(usize::MAX);
        }
        let mask = self.slots.len() - 1;
        let tag = h >> 32;
        let mut i = h as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return Err(i);
            }
            if slot >> 32 == tag {
                let (id, found) = self.entry((slot as u32 - 1) as usize);
                if same(found.as_bytes(), s.as_bytes()) {
                    return Ok(id);
                }
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, s: &str, h: u64, mut slot: usize) -> u32 {
        let id = self.starts.len() as u32;
        let offset = self.arena.len();
        self.arena.extend_from_slice(&id.to_le_bytes());
        if s.len() < LONG as usize {
            self.arena.push(s.len() as u8);
        } else {
            self.arena.push(LONG);
            self.arena.extend_from_slice(&(s.len() as u32).to_le_bytes());
        }
        self.arena.extend_from_slice(s.as_bytes());
        assert!(self.arena.len() < u32::MAX as usize, "more than 4 GiB of distinct ids in one worker");
        self.starts.push(offset as u32);
        if self.starts.len() * 8 > self.slots.len() * 7 {
            self.grow();
            slot = self.free_slot(h);
        }
        self.slots[slot] = (h >> 32) << 32 | (offset as u64 + 1);
        id
    }

    /// Doubles the table (16 slots at first) and places every entry again.
    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(16);
        self.slots = vec![0; len];
        for id in 0..self.starts.len() - 1 {
            let offset = self.starts[id] as usize;
            let h = hash(self.entry(offset).1);
            let slot = self.free_slot(h);
            self.slots[slot] = (h >> 32) << 32 | (offset as u64 + 1);
        }
    }

    fn free_slot(&self, h: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        i
    }

    /// The id and string of the entry at `offset`.
    #[inline]
    fn entry(&self, offset: usize) -> (u32, &str) {
        entry(&self.arena, offset)
    }

    /// The names alone, without the table that finds them (an eighth of
    /// the memory or more): for when no more names are looked up.
    pub fn into_names(self) -> Names {
        Names { arena: self.arena, starts: self.starts }
    }

    #[inline]
    fn prefetch_slot(&self, h: u64) {
        if !self.slots.is_empty() {
            prefetch(&self.slots[h as usize & (self.slots.len() - 1)]);
        }
    }

    /// Prefetches the entry of the first slot from `h`'s place whose tag
    /// matches (most often the one looked for), if the slot is cached by now.
    #[inline]
    fn prefetch_entry(&self, h: u64) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        let tag = h >> 32;
        let mut i = h as usize & mask;
        for _ in 0..8 {
            let slot = self.slots[i];
            if slot == 0 {
                return;
            }
            if slot >> 32 == tag {
                if let Some(byte) = self.arena.get((slot as u32 - 1) as usize) {
                    prefetch(byte);
                }
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

/// `a == b`, without a call to `memcmp` for the usual id lengths.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

/// A hint to load `at`'s cache line.
#[inline(always)]
fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing the program sees.
    unsafe {
        std::arch::x86_64::_mm_prefetch((at as *const T).cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
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

/// The id and string of the arena entry at `offset`.
#[inline]
fn entry(a: &[u8], offset: usize) -> (u32, &str) {
    let id = u32::from_le_bytes([a[offset], a[offset + 1], a[offset + 2], a[offset + 3]]);
    let (start, len) = match a[offset + 4] {
        LONG => {
            let l = &a[offset + 5..offset + 9];
            (offset + 9, u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
        }
        len => (offset + 5, len as usize),
    };
    // SAFETY: `insert` copies whole `&str`s into the arena, and entries
    // are read back at the offsets and lengths it wrote.
    (id, unsafe { std::str::from_utf8_unchecked(&a[start..start + len]) })
}

/// Interned names by id, without the lookup table ([`Interner::into_names`]).
#[derive(Debug, Default)]
pub struct Names {
    arena: Vec<u8>,
    starts: Vec<u32>,
}

impl Names {
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    #[inline]
    pub fn resolve(&self, id: u32) -> &str {
        entry(&self.arena, self.starts[id as usize] as usize).1
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len() as u32).map(|id| self.resolve(id))
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
        let long = "x".repeat(70_000);
        let id = i.intern(&long);
        assert_eq!((i.intern(&long), i.get(&long)), (id, Some(id)));
        assert_eq!(i.resolve(id), long);
        assert_eq!(i.resolve(10_002), "");
    }

    #[test]
    fn compares_ids_of_every_length() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n as u8).collect();
            assert!(same(&a, &a.clone()));
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 1;
                assert!(!same(&a, &b), "length {n}, byte {at}");
            }
            assert!(!same(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }

    #[test]
    fn batches_get_the_ids_one_by_one_would() {
        let names: Vec<String> =
            (0..50_000u64).map(|n| format!("u{}", (n * 7919) % 13_001)).chain(["é".repeat(300)]).collect();
        let mut one = Interner::new();
        let expected: Vec<u32> = names.iter().map(|n| one.intern(n)).collect();
        let mut all = Interner::new();
        let (mut batch, mut got) = (Batch::default(), Vec::new());
        for chunk in names.chunks(1000) {
            batch.clear();
            chunk.iter().for_each(|n| batch.push(n));
            all.intern_all(&batch, &mut got);
        }
        assert_eq!(got, expected);
        assert_eq!(all.iter().collect::<Vec<_>>(), one.iter().collect::<Vec<_>>());
        assert_eq!(all.len(), 13_002);
        let mut each = Interner::new();
        assert_eq!(each.intern_each(names.iter().map(String::as_str)), expected);
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
