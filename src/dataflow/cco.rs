//! Correlated cross-occurrence: for each primary item i and indicator k,
//! the items j most correlated with i by LLR over the users who did both.
//!
//! Rows are split into contiguous ranges of item ids, one per worker,
//! balanced by the work they need. Each user is sent, with its items of
//! every indicator, to the workers owning one of its primary items (a user
//! with few items reaches few workers). The owner then runs Gustavson's
//! row-by-row sparse product: for row i, walk the users of i and add each
//! user's items into a dense accumulator, then score every touched j with
//! LLR and keep the top K. No (i, j) pair ever crosses the network and
//! no per-pair hash table is built: the cost is the pair-visits Σ|A_u|·|B_u|
//! at a few nanoseconds each.

use super::exchange::Comm;
use super::llr::XLogXTable;
use super::users::Csr;
use crate::config::Indicator;
use std::ops::Range;

/// Contiguous item ranges, one per worker: worker w owns
/// `bounds[w] .. bounds[w + 1]`. Documents are written in this order, so
/// concatenating the workers' parts gives items sorted by id.
#[derive(Debug, Clone, PartialEq)]
pub struct RowRanges {
    pub bounds: Vec<u32>,
}

impl RowRanges {
    /// Splits `0..cost.len()` into `peers` ranges of about equal total cost
    /// (each item costs one more than given, for writing its document).
    pub fn split(cost: &[u64], peers: usize) -> RowRanges {
        let total: u64 = cost.iter().map(|c| c + 1).sum();
        let mut bounds = vec![0u32];
        let mut acc = 0u64;
        let mut w = 1;
        for (i, c) in cost.iter().enumerate() {
            while w < peers && acc >= total * w as u64 / peers as u64 {
                bounds.push(i as u32);
                w += 1;
            }
            acc += c + 1;
        }
        while bounds.len() < peers + 1 {
            bounds.push(cost.len() as u32);
        }
        RowRanges { bounds }
    }

    #[inline]
    pub fn owner(&self, item: u32) -> usize {
        self.bounds.partition_point(|&b| b <= item) - 1
    }

    pub fn range(&self, worker: usize) -> Range<u32> {
        self.bounds[worker]..self.bounds[worker + 1]
    }
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct UserRows {
    /// Per user: which of its primary items (by position) are in the
    /// receiver's range.
    in_range: Vec<(u32, u32)>,
    /// Per user and indicator: number of items.
    lens: Vec<u32>,
    items: Vec<u32>,
}

/// The users a row owner received: their items per indicator, and for
/// each owned row the users who have it.
pub struct RowBlock {
    pub range: Range<u32>,
    pub indicators: usize,
    /// Users' items: row `u * indicators + k` holds user u's items of
    /// indicator k, so one user's items of every indicator are adjacent in
    /// memory (one cache miss per user visit, not one per indicator).
    pub b: Csr,
    /// Owned rows × users (the transpose of the primary matrix, restricted).
    pub at: Csr,
}

impl RowBlock {
    /// Items of user `u` in indicator `k`.
    #[inline]
    pub fn items(&self, u: u32, k: usize) -> &[u32] {
        self.b.row(u as usize * self.indicators + k)
    }

    pub fn users(&self) -> usize {
        self.b.rows() / self.indicators.max(1)
    }
}

/// Sends sampled user rows to the owners of their primary items.
pub fn distribute_rows(comm: &mut Comm, matrices: &[Csr], ranges: &RowRanges) -> RowBlock {
    let peers = comm.peers;
    let indicators = matrices.len();
    let mut batches: Vec<UserRows> = (0..peers).map(|_| UserRows::default()).collect();
    for u in 0..matrices[0].rows() {
        let primary = matrices[0].row(u);
        let mut pos = 0;
        while pos < primary.len() {
            let owner = ranges.owner(primary[pos]);
            let end = pos + primary[pos..].partition_point(|&i| i < ranges.bounds[owner + 1]);
            let batch = &mut batches[owner];
            batch.in_range.push((pos as u32, end as u32));
            for m in matrices {
                let row = m.row(u);
                batch.lens.push(row.len() as u32);
                batch.items.extend_from_slice(row);
            }
            pos = end;
        }
    }
    let received = comm.shuffle("cco: distribute user rows", batches.into_iter().enumerate().collect());

    let range = ranges.range(comm.index);
    let mut b = Csr::with_rows(0);
    let mut owned: Vec<(u32, u32)> = Vec::new(); // (row - range.start, local user)
    let mut user = 0u32;
    for (_, batch) in received {
        let mut item_pos = 0;
        for (n, &(lo, hi)) in batch.in_range.iter().enumerate() {
            for k in 0..indicators {
                let len = batch.lens[n * indicators + k] as usize;
                b.push_row(batch.items[item_pos..item_pos + len].iter().copied());
                item_pos += len;
            }
            let primary = b.row(user as usize * indicators);
            owned.extend(primary[lo as usize..hi as usize].iter().map(|&i| (i - range.start, user)));
            user += 1;
        }
    }
    // Counting sort of (row, user) into rows × users.
    let rows = (range.end - range.start) as usize;
    let mut offsets = vec![0usize; rows + 1];
    for &(r, _) in &owned {
        offsets[r as usize + 1] += 1;
    }
    for r in 0..rows {
        offsets[r + 1] += offsets[r];
    }
    let mut fill = offsets.clone();
    let mut users = vec![0u32; owned.len()];
    for (r, u) in owned {
        users[fill[r as usize]] = u;
        fill[r as usize] += 1;
    }
    RowBlock { range, indicators, b, at: Csr { offsets, items: users } }
}

/// The correlators of every owned row: `[row][indicator]` → items, best first.
pub struct Correlators {
    pub rows: Vec<Vec<Vec<u32>>>,
    pub pair_visits: u64,
    /// With `record`: every owned row's co-occurrence counts,
    /// `[row][indicator]` → (item, users with both), sorted by item.
    pub counts: Vec<Vec<Vec<(u32, u32)>>>,
}

/// What scoring a row needs besides its counts.
pub struct Scoring<'a> {
    pub table: XLogXTable,
    /// `[k][j]`: the column entropy of item j in indicator k.
    column_entropy: Vec<Vec<f64>>,
    /// Per indicator: users per item after downsampling.
    pub column_counts: &'a [Vec<u32>],
    pub n: u64,
    pub indicators: &'a [Indicator],
}

impl<'a> Scoring<'a> {
    pub fn new(indicators: &'a [Indicator], column_counts: &'a [Vec<u32>], n: u64) -> Scoring<'a> {
        let small = indicators.iter().map(|i| i.max_items_per_user).max().unwrap_or(1) as u64;
        let table = XLogXTable::new(small, n);
        let column_entropy = column_counts
            .iter()
            .map(|counts| counts.iter().map(|&c| table.marginal_entropy((c as u64).min(n), n)).collect())
            .collect();
        Scoring { table, column_entropy, column_counts, n, indicators }
    }

    /// The correlators of row `i` in indicator `k` from its co-occurrence
    /// counts (any order); `row_count` is the users of `i`.
    pub fn score(
        &self,
        i: u32,
        k: usize,
        row_count: u64,
        counts: impl Iterator<Item = (u32, u64)>,
        candidates: &mut Vec<(f64, u32)>,
    ) -> Vec<u32> {
        let n = self.n;
        let row_entropy = self.table.marginal_entropy(row_count, n);
        let indicator = &self.indicators[k];
        let column_counts = &self.column_counts[k];
        let column_entropies = &self.column_entropy[k];
        let min_llr = indicator.min_llr.unwrap_or(f64::NEG_INFINITY);
        candidates.clear();
        for (j, k11) in counts {
            if (k == 0 && j == i) || k11 == 0 {
                continue;
            }
            let column_count = column_counts[j as usize] as u64;
            let column_entropy = column_entropies[j as usize];
            let llr = self.table.llr_from_marginals(row_entropy, column_entropy, k11, row_count, column_count, n);
            if llr > 0.0 && llr >= min_llr {
                candidates.push((llr, j));
            }
        }
        top_k(candidates, indicator.max_correlators_per_item as usize)
    }
}

/// Gustavson's pass over the owned rows. `counts[k][j]` is the number of
/// users with item j in indicator k after downsampling, `n` the number of
/// users (rows of the matrices). With `record`, the co-occurrence counts
/// are kept too.
pub fn correlate(
    block: &RowBlock,
    counts: &[Vec<u32>],
    n: u64,
    indicators: &[Indicator],
    n_items: usize,
    record: bool,
) -> Correlators {
    let kinds = indicators.len();
    let scoring = Scoring::new(indicators, counts, n);
    // One accumulator and touched list per indicator: a user is visited once
    // per row and all its indicators are accumulated together.
    let mut acc = vec![vec![0u32; n_items]; kinds];
    let mut touched: Vec<Vec<u32>> = vec![Vec::new(); kinds];
    let mut candidates: Vec<(f64, u32)> = Vec::new();
    let mut pair_visits = 0u64;
    let mut rows = Vec::with_capacity(block.at.rows());
    let mut recorded = Vec::new();
    for r in 0..block.at.rows() {
        let i = block.range.start + r as u32;
        let users = block.at.row(r);
        if users.is_empty() {
            rows.push(vec![Vec::new(); kinds]);
            if record {
                recorded.push(vec![Vec::new(); kinds]);
            }
            continue;
        }
        for (x, &u) in users.iter().enumerate() {
            prefetch_user(block, users, x);
            for (k, (acc, touched)) in acc.iter_mut().zip(touched.iter_mut()).enumerate() {
                let items = block.items(u, k);
                pair_visits += items.len() as u64;
                for &j in items {
                    let slot = &mut acc[j as usize];
                    if *slot == 0 {
                        touched.push(j);
                    }
                    *slot += 1;
                }
            }
        }
        let row_count = users.len() as u64;
        let mut per_indicator = Vec::with_capacity(kinds);
        let mut row_counts = Vec::new();
        for k in 0..kinds {
            let acc = &mut acc[k];
            let touched = &mut touched[k];
            if record {
                let mut list: Vec<(u32, u32)> = touched.iter().map(|&j| (j, acc[j as usize])).collect();
                list.sort_unstable();
                row_counts.push(list);
            }
            let pairs = touched.iter().map(|&j| (j, std::mem::take(&mut acc[j as usize]) as u64));
            per_indicator.push(scoring.score(i, k, row_count, pairs, &mut candidates));
            touched.clear();
        }
        rows.push(per_indicator);
        if record {
            recorded.push(row_counts);
        }
    }
    Correlators { rows, pair_visits, counts: recorded }
}

/// Users of a row are scattered in memory: fetch the offsets of the user
/// eight ahead and the items of the user four ahead while this one is added.
#[inline(always)]
fn prefetch_user(block: &RowBlock, users: &[u32], x: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let k = block.indicators;
        if let Some(&ahead) = users.get(x + 8) {
            let p = block.b.offsets.as_ptr().wrapping_add(ahead as usize * k);
            // SAFETY: prefetching is a hint; it never faults, even out of bounds.
            unsafe { _mm_prefetch(p as *const i8, _MM_HINT_T0) };
        }
        if let Some(&ahead) = users.get(x + 4) {
            let start = block.b.offsets[ahead as usize * k];
            let p = block.b.items.as_ptr().wrapping_add(start);
            // SAFETY: as above.
            unsafe { _mm_prefetch(p as *const i8, _MM_HINT_T0) };
        }
    }
}

/// The best `k` by LLR, highest first; equal LLRs by item id (= id string
/// order), so ties are broken the same way on every run.
pub fn top_k(candidates: &mut [(f64, u32)], k: usize) -> Vec<u32> {
    let order = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let len = candidates.len();
    if len > k && k > 0 {
        candidates.select_nth_unstable_by(k - 1, order);
    }
    let keep = &mut candidates[..k.min(len)];
    keep.sort_unstable_by(order);
    keep.iter().map(|&(_, j)| j).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_and_balance() {
        let cost = vec![0, 100, 0, 0, 100, 0, 0, 0];
        let r = RowRanges::split(&cost, 2);
        assert_eq!(r.bounds.first(), Some(&0));
        assert_eq!(r.bounds.last(), Some(&8));
        assert_eq!(r.bounds.len(), 3);
        for i in 0..8 {
            assert!(r.range(r.owner(i)).contains(&i));
        }
        let r = RowRanges::split(&[5, 5, 5], 5);
        assert_eq!(r.bounds.len(), 6);
        assert_eq!(*r.bounds.last().unwrap(), 3);
        let r = RowRanges::split(&[], 3);
        assert_eq!(r.bounds, vec![0, 0, 0, 0]);
    }

    #[test]
    fn top_k_orders_by_score_then_id() {
        let mut c = vec![(1.0, 5), (3.0, 2), (1.0, 1), (2.0, 9), (1.0, 0)];
        assert_eq!(top_k(&mut c.clone(), 10), vec![2, 9, 0, 1, 5]);
        assert_eq!(top_k(&mut c, 3), vec![2, 9, 0]);
    }
}
