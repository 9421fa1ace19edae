//! The co-occurrence pass, measured alone: Gustavson's dense-accumulator
//! rows with LLR and top-K (what ur-train does) against a generic
//! join + count (a hash map keyed by item pair, then LLR and top-K), on the
//! same downsampled matrices. Reports nanoseconds per pair-visit.
//!
//! ```text
//! cargo bench --bench cco            # or: cargo bench --bench cco -- 2000000
//! ```

use std::collections::HashMap;
use std::time::Instant;
use ur::config::Indicator;
use ur::dataflow::cco::{RowBlock, correlate, top_k};
use ur::dataflow::llr::XLogXTable;
use ur::dataflow::users::Csr;

fn main() {
    let interactions: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3_000_000);
    let (block, counts, n, n_items) = synthetic(interactions, 1);
    let indicators: Vec<Indicator> = ["purchase", "view"]
        .iter()
        .map(|name| Indicator {
            name: name.to_string(),
            event_names: vec![name.to_string()],
            max_items_per_user: 500,
            max_correlators_per_item: 50,
            min_llr: None,
            history_cap: 500,
        })
        .collect();
    println!("{} users, {} items, N = {n}", block.users(), n_items);

    let mut best = f64::MAX;
    let mut visits = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let c = correlate(&block, &counts, n, &indicators, n_items, false);
        best = best.min(t.elapsed().as_secs_f64());
        visits = c.pair_visits;
    }
    println!("gustavson:    {:>6.1} ns/pair-visit ({visits} pair-visits, {:.3} s)", best * 1e9 / visits as f64, best);

    let t = Instant::now();
    let rows = hash_join_count(&block, &counts, n, &indicators);
    let secs = t.elapsed().as_secs_f64();
    println!("hash join:    {:>6.1} ns/pair-visit ({:.3} s, {} rows)", secs * 1e9 / visits as f64, secs, rows);
    println!("ratio:        {:>6.1}x", secs / best);
}

/// The generic plan: emit every (i, j) of every user, count in a hash map,
/// then score and keep the top K per row.
fn hash_join_count(block: &RowBlock, counts: &[Vec<u32>], n: u64, indicators: &[Indicator]) -> usize {
    let table = XLogXTable::new(500, n);
    let mut rows = 0;
    for (k, ind) in indicators.iter().enumerate() {
        let mut pairs: HashMap<(u32, u32), u32> = HashMap::new();
        for u in 0..block.users() as u32 {
            for &i in block.items(u, 0) {
                for &j in block.items(u, k) {
                    *pairs.entry((i, j)).or_default() += 1;
                }
            }
        }
        let mut by_row: HashMap<u32, Vec<(f64, u32)>> = HashMap::new();
        for ((i, j), k11) in pairs {
            if k == 0 && i == j {
                continue;
            }
            let llr = table.llr(k11 as u64, counts[0][i as usize] as u64, counts[k][j as usize] as u64, n);
            if llr > 0.0 {
                by_row.entry(i).or_default().push((llr, j));
            }
        }
        for (_, mut c) in by_row {
            rows += top_k(&mut c, ind.max_correlators_per_item as usize).len().min(1);
        }
    }
    rows
}

/// Users with log-normal activity over Zipf items in taste clusters, capped
/// at 500 users per item; one worker owns every row.
fn synthetic(interactions: usize, seed: u64) -> (RowBlock, Vec<Vec<u32>>, u64, usize) {
    let mut state = seed;
    let mut rand = || {
        state = ur::hash::mix(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let users = interactions / 20;
    let n_items = (users / 5).max(100);
    let clusters = (n_items / 250).max(4);
    let per_cluster = n_items / clusters;
    let zipf = |u: f64, n: usize| ((n as f64).powf(u) - 1.0).max(0.0) as usize % n;
    let mut b = Csr::with_rows(2 * users);
    // Item-side cap of 500 users, as downsampling leaves it.
    let mut counts = vec![vec![0u32; n_items]; 2];
    for _ in 0..users {
        let cluster = (rand() * clusters as f64) as usize;
        let views = ((rand() * 2.0 - 1.0) * 1.2 + 2.8).exp().round().clamp(1.0, 500.0) as usize;
        let mut row: Vec<u32> = (0..views)
            .map(|_| {
                if rand() < 0.7 {
                    (cluster * per_cluster + zipf(rand(), per_cluster)) as u32
                } else {
                    zipf(rand(), n_items) as u32
                }
            })
            .collect();
        row.sort_unstable();
        row.dedup();
        let mut bought: Vec<u32> = row.iter().copied().filter(|_| rand() < 0.12).collect();
        for (k, items) in [&mut bought, &mut row].into_iter().enumerate() {
            items.retain(|&i| counts[k][i as usize] < 500);
            for &i in items.iter() {
                counts[k][i as usize] += 1;
            }
        }
        b.push_row(bought);
        b.push_row(row);
    }
    // Rows × users for every primary item (users capped at 500 per item).
    let mut owned: Vec<(u32, u32)> = Vec::new();
    for u in 0..users {
        for &i in b.row(2 * u) {
            owned.push((i, u as u32));
        }
    }
    owned.sort_unstable();
    let mut at = Csr::with_rows(n_items);
    let mut pos = 0;
    for i in 0..n_items as u32 {
        let start = pos;
        while pos < owned.len() && owned[pos].0 == i {
            pos += 1;
        }
        at.push_row(owned[start..pos].iter().map(|&(_, u)| u));
    }
    let n = users as u64;
    (RowBlock { range: 0..n_items as u32, indicators: 2, b, at }, counts, n, n_items)
}
