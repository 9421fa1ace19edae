//! Downsampling: at most `maxItemsPerUser` items per user and as many users
//! per item, per indicator, chosen by a seeded hash of the id strings.
//!
//! Every interaction (u, i) of an indicator gets a key
//! `sample_key(seed, indicator, u, i)`. A user with more than `cap` items
//! keeps the `cap` items with the smallest keys; an item with more than
//! `cap` users keeps the `cap` users with the smallest keys; an interaction
//! survives if it is kept on both sides. Both caps are hard limits, the
//! choice is a pure function of the id strings and the seed (not of file
//! order, partitioning or worker count), and, because one key decides both
//! sides, an interaction survives with probability close to Mahout's
//! `min(cap/n_u, cap/n_i)`. Mahout's own sampling truncates `cap/n_u` to 0
//! by integer division and so drops heavy users entirely; we sample them
//! down instead (docs/semantics.md).

use super::exchange::Comm;
use super::users::Csr;
use crate::hash::sample_key;

/// Samples `matrix` in place (one indicator). `row_hash[r]` is the id hash
/// of row r's user, `counts[i]` the number of rows (over all workers) with
/// item `i`, `item_hash[i]` its id hash.
pub fn downsample(
    comm: &mut Comm,
    row_hash: &[u64],
    matrix: &mut Csr,
    counts: &[u32],
    item_hash: &[u64],
    salt: u64,
    cap: u32,
) {
    let cap = cap as usize;
    let key = |r: usize, i: u32| sample_key(salt, row_hash[r], item_hash[i as usize]);
    let heavy_item = |i: u32| counts[i as usize] as usize > cap;

    // Item side: the cap-th smallest key of each heavy item, computed by the
    // item's owner (item id modulo workers) from every worker's keys. The
    // counts are global, so every worker takes the same branch.
    let any_heavy = counts.iter().any(|&c| c as usize > cap);
    let mut item_threshold: Vec<(u32, u64)> = Vec::new();
    if any_heavy {
        let peers = comm.peers;
        let mut parcels: Vec<Vec<(u32, u64)>> = vec![Vec::new(); peers];
        for r in 0..matrix.rows() {
            for &i in matrix.row(r) {
                if heavy_item(i) {
                    parcels[i as usize % peers].push((i, key(r, i)));
                }
            }
        }
        let received = comm.shuffle("downsample: item keys", parcels.into_iter().enumerate().collect());
        let mut keys: Vec<(u32, u64)> = received.into_iter().flat_map(|(_, v)| v).collect();
        keys.sort_unstable();
        let mine: Vec<(u32, u64)> =
            keys.chunk_by(|a, b| a.0 == b.0).map(|group| (group[0].0, group[cap.min(group.len()) - 1].1)).collect();
        item_threshold = comm.all_gather("downsample: item thresholds", mine).concat();
        item_threshold.sort_unstable();
    }
    let threshold_of = |i: u32| -> u64 {
        if !heavy_item(i) {
            return u64::MAX;
        }
        match item_threshold.binary_search_by_key(&i, |&(item, _)| item) {
            Ok(p) => item_threshold[p].1,
            Err(_) => u64::MAX,
        }
    };

    // User side and filtering, row by row, in place: what a row keeps
    // moves down to follow what the previous rows kept.
    let mut scratch: Vec<u64> = Vec::new();
    let mut kept: Vec<u32> = Vec::new();
    let (mut start, mut write) = (0usize, 0usize);
    for r in 0..matrix.rows() {
        let end = matrix.offsets[r + 1];
        kept.clear();
        sample_row(&matrix.items[start..end], |i| key(r, i), cap, threshold_of, &mut scratch, &mut kept);
        matrix.items[write..write + kept.len()].copy_from_slice(&kept);
        write += kept.len();
        matrix.offsets[r + 1] = write;
        start = end;
    }
    matrix.items.truncate(write);
    matrix.items.shrink_to_fit();
}

/// The items of one user's row that survive downsampling: a row with more
/// than `cap` items keeps those whose key is among its `cap` smallest, and
/// an item keeps the row if the key is at most the item's threshold.
pub fn sample_row(
    items: &[u32],
    key: impl Fn(u32) -> u64,
    cap: usize,
    item_threshold: impl Fn(u32) -> u64,
    scratch: &mut Vec<u64>,
    out: &mut Vec<u32>,
) {
    let user_threshold = if items.len() > cap {
        scratch.clear();
        scratch.extend(items.iter().map(|&i| key(i)));
        let (_, kth, _) = scratch.select_nth_unstable(cap - 1);
        *kth
    } else {
        u64::MAX
    };
    out.extend(items.iter().copied().filter(|&i| {
        let k = key(i);
        k <= user_threshold && k <= item_threshold(i)
    }));
}
