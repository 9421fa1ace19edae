//! Log-likelihood ratio (Dunning's G²), exactly as Mahout's
//! `LogLikelihood.logLikelihoodRatio` computes it: natural logarithm,
//! `2·(rowEntropy + columnEntropy − matrixEntropy)`, 0 when round-off makes
//! that negative. The UR's correlator scores are these numbers, so the
//! operations are done in the same order as Mahout to get the same bits.
//!
//! In the co-occurrence pass every `x·ln x` comes from [`XLogXTable`]: all
//! arguments are either small (counts after downsampling are capped) or close
//! to N, so two short tables cover almost every call and the LLR of a pair
//! costs a handful of loads instead of nine logarithms.

/// `x·ln x` with `0·ln 0 = 0`, as Mahout's `xLogX`.
#[inline]
pub fn x_log_x(x: u64) -> f64 {
    if x == 0 {
        0.0
    } else {
        let x = x as f64;
        x * x.ln()
    }
}

#[inline]
fn entropy2(a: f64, b: f64, ab: f64) -> f64 {
    ab - a - b
}

/// Mahout's `LogLikelihood.logLikelihoodRatio(k11, k12, k21, k22)`.
pub fn log_likelihood_ratio(k11: u64, k12: u64, k21: u64, k22: u64) -> f64 {
    llr_with(&x_log_x, k11, k12, k21, k22)
}

#[inline(always)]
fn llr_with(xlx: &impl Fn(u64) -> f64, k11: u64, k12: u64, k21: u64, k22: u64) -> f64 {
    let row_entropy = entropy2(xlx(k11 + k12), xlx(k21 + k22), xlx(k11 + k12 + k21 + k22));
    let column_entropy = entropy2(xlx(k11 + k21), xlx(k12 + k22), xlx(k11 + k12 + k21 + k22));
    let matrix_entropy = xlx(k11 + k12 + k21 + k22) - xlx(k11) - xlx(k12) - xlx(k21) - xlx(k22);
    if row_entropy + column_entropy < matrix_entropy {
        return 0.0; // round-off
    }
    2.0 * (row_entropy + column_entropy - matrix_entropy)
}

/// Precomputed `x·ln x` for `0..=small` and for `n − 2·small ..= n`, the two
/// ranges the LLR of a downsampled co-occurrence touches. Values outside
/// both ranges are computed directly, so the table never changes a result.
pub struct XLogXTable {
    low: Vec<f64>,
    high_start: u64,
    high: Vec<f64>,
}

impl XLogXTable {
    /// `small` bounds item counts (the largest per-item cap), `n` is the
    /// number of users (rows).
    pub fn new(small: u64, n: u64) -> XLogXTable {
        let small = small.min(n);
        let low = (0..=small).map(x_log_x).collect();
        let high_start = n.saturating_sub(2 * small).max(small + 1);
        let high = (high_start..=n).map(x_log_x).collect();
        XLogXTable { low, high_start, high }
    }

    #[inline(always)]
    pub fn get(&self, x: u64) -> f64 {
        if let Some(v) = self.low.get(x as usize) {
            return *v;
        }
        if x >= self.high_start
            && let Some(v) = self.high.get((x - self.high_start) as usize)
        {
            return *v;
        }
        x_log_x(x)
    }

    /// LLR of an item pair seen together by `k11` of `n` users, where the row
    /// item has `row_count` users and the column item `column_count`.
    #[inline(always)]
    pub fn llr(&self, k11: u64, row_count: u64, column_count: u64, n: u64) -> f64 {
        let k12 = row_count - k11;
        let k21 = column_count - k11;
        let k22 = n + k11 - row_count - column_count;
        llr_with(&|x| self.get(x), k11, k12, k21, k22)
    }

    /// Mahout's row (or column) entropy of an item with `count` of `n`
    /// users: `entropy(count, n − count)`. Constant along a row (column), so
    /// the co-occurrence pass computes it once per item.
    #[inline(always)]
    pub fn marginal_entropy(&self, count: u64, n: u64) -> f64 {
        entropy2(self.get(count), self.get(n - count), self.get(n))
    }

    /// The same LLR as [`XLogXTable::llr`], from precomputed marginal
    /// entropies: identical operations in identical order, so identical bits.
    #[inline(always)]
    pub fn llr_from_marginals(
        &self,
        row_entropy: f64,
        column_entropy: f64,
        k11: u64,
        row_count: u64,
        column_count: u64,
        n: u64,
    ) -> f64 {
        let k12 = row_count - k11;
        let k21 = column_count - k11;
        let k22 = n + k11 - row_count - column_count;
        let matrix_entropy = self.get(n) - self.get(k11) - self.get(k12) - self.get(k21) - self.get(k22);
        if row_entropy + column_entropy < matrix_entropy {
            return 0.0;
        }
        2.0 * (row_entropy + column_entropy - matrix_entropy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mahout_test_vector() {
        // Mahout's SimilarityAnalysisSuite "LLR calc": value from Hadoop itemsimilarity.
        assert_eq!(log_likelihood_ratio(1, 0, 1, 4), 2.6341457841558764);
    }

    #[test]
    fn mahout_matrix_a() {
        // A (users × items); only co-occurring pairs (k11 > 0) are scored.
        let a = [[1u64, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1], [1, 0, 0, 1, 0]];
        let n = a.len() as u64;
        let count = |j: usize| a.iter().map(|r| r[j]).sum::<u64>();
        let mut nonzero = Vec::new();
        for i in 0..5 {
            for j in 0..5 {
                let k11: u64 = a.iter().map(|r| r[i] * r[j]).sum();
                if i == j || k11 == 0 {
                    continue;
                }
                let (ci, cj) = (count(i), count(j));
                let llr = log_likelihood_ratio(k11, ci - k11, cj - k11, n + k11 - ci - cj);
                if llr > 0.0 {
                    nonzero.push((i, j, llr));
                }
            }
        }
        let expected: Vec<_> =
            [(0, 1), (1, 0), (2, 3), (3, 2)].into_iter().map(|(i, j)| (i, j, 1.7260924347106847)).collect();
        assert_eq!(nonzero, expected);
    }

    #[test]
    fn independent_events_score_zero() {
        assert_eq!(log_likelihood_ratio(1, 0, 2, 0), 0.0);
        assert_eq!(log_likelihood_ratio(3, 0, 0, 0), 0.0);
        assert_eq!(log_likelihood_ratio(0, 0, 0, 0), 0.0);
    }

    #[test]
    fn handmade_values() {
        assert_eq!(log_likelihood_ratio(1, 0, 0, 2), 3.819085009768877);
        assert_eq!(log_likelihood_ratio(1, 0, 1, 1), 1.046496287529096);
    }

    #[test]
    fn table_matches_direct_computation() {
        for &(small, n) in &[(3u64, 5u64), (10, 1000), (500, 4372), (50, 60), (0, 0), (7, 7)] {
            let table = XLogXTable::new(small, n);
            for x in 0..=n.min(3000) {
                assert_eq!(table.get(x).to_bits(), x_log_x(x).to_bits(), "x={x} n={n}");
            }
            for row in 1..=small.min(n) {
                for col in 1..=small.min(n) {
                    for k11 in 1..=row.min(col) {
                        if n + k11 < row + col {
                            continue;
                        }
                        let direct = log_likelihood_ratio(k11, row - k11, col - k11, n + k11 - row - col);
                        assert_eq!(table.llr(k11, row, col, n).to_bits(), direct.to_bits());
                    }
                }
            }
        }
    }
}
