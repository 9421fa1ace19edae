//! New item ids joining a resident model's dictionary.

use super::super::cco::RowRanges;
use super::Resident;
use crate::hash::id_hash;
use crate::intern::SortedIds;
use crate::sink::part::CachedDoc;

impl Resident {
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
        let mut bounds: Vec<u32> = self
            .ranges
            .bounds
            .iter()
            .map(|&b| if (b as usize) < old_n { remap[b as usize] } else { new_n as u32 })
            .collect();
        bounds[0] = 0;
        self.ranges = RowRanges { bounds };
        let range = self.ranges.range(me);
        self.move_replicated(&dict, &remap);
        // Row-side vectors: old row r is item old_range.start + r.
        let row_remap: Vec<u32> = (old_range.start..old_range.end).map(|i| remap[i as usize] - range.start).collect();
        self.move_rows(&remap, &row_remap, (range.end - range.start) as usize);
        self.dict = dict;
    }

    /// Moves the item ids of the replicated vectors and of the users' pairs
    /// and rows to their places in `dict`.
    fn move_replicated(&mut self, dict: &SortedIds, remap: &[u32]) {
        let new_n = dict.len();
        let map = |i: u32| remap[i as usize];
        let mut item_hash = vec![0u64; new_n];
        for (new, s) in dict.iter().enumerate() {
            item_hash[new] = id_hash(s);
        }
        self.item_hash = item_hash;
        for (lists, default) in [(&mut self.pre, 0u32), (&mut self.post, 0u32)] {
            for list in lists.iter_mut() {
                *list = reindex(std::mem::take(list), remap, new_n, default);
            }
        }
        for list in self.threshold.iter_mut() {
            *list = reindex(std::mem::take(list), remap, new_n, u64::MAX);
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
    }

    /// Moves this worker's rows (`row_remap`: old row → new row, `len`
    /// rows now) and the item ids they hold.
    fn move_rows(&mut self, remap: &[u32], row_remap: &[u32], len: usize) {
        let map = |i: u32| remap[i as usize];
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
        self.deleted = reindex_rows(std::mem::take(&mut self.deleted), row_remap, len, false);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionaries_merge_with_remap() {
        let old = SortedIds::from_unsorted(["b", "d", "f"]);
        let added = SortedIds::from_unsorted(["a", "e", "g"]);
        let (merged, remap) = merge_dictionaries(&old, &added);
        assert_eq!(merged.iter().collect::<Vec<_>>(), vec!["a", "b", "d", "e", "f", "g"]);
        assert_eq!(remap, vec![1, 2, 4]);
    }
}
