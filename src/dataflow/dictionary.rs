//! The item dictionary: every item id of the input, sorted, item i being
//! the i-th — so comparing dense ids compares id strings, on every worker.
//!
//! Built like a sample sort, so no worker receives every other worker's
//! list: each worker sorts its own ids and sends a few samples to all;
//! everyone derives the same splitters; each worker sends each range of
//! its ids to that range's worker, which merges them; the merged ranges are
//! then gathered by all. A worker receives the dictionary once (plus its
//! range from the others), not once per worker.

use super::exchange::Comm;
use crate::intern::SortedIds;

/// Samples each worker contributes to choose the splitters.
const SAMPLES_PER_WORKER: usize = 64;

/// The global dictionary from this worker's ids.
pub fn build_dictionary(comm: &mut Comm, mine: SortedIds) -> SortedIds {
    let peers = comm.peers;
    if peers == 1 {
        return mine;
    }
    // Splitters: quantiles of everyone's evenly spaced samples.
    let samples: Vec<String> = (0..SAMPLES_PER_WORKER.min(mine.len()))
        .map(|k| mine.get((k * mine.len() / SAMPLES_PER_WORKER.min(mine.len())) as u32).to_string())
        .collect();
    let mut all: Vec<String> = comm.all_gather("dictionary: samples", samples).concat();
    all.sort_unstable();
    all.dedup();
    let splitters: Vec<String> =
        (1..peers).map(|r| all.get(r * all.len() / peers).cloned().unwrap_or_default()).collect();

    // Range r = [splitters[r-1], splitters[r]): send each range to its worker.
    let mut parcels = Vec::with_capacity(peers);
    let mut start = 0usize;
    for r in 0..peers {
        let end = match splitters.get(r) {
            Some(s) if !s.is_empty() => start + mine.partition_point_from(start, s),
            Some(_) => start,
            None => mine.len(),
        };
        parcels.push((r, mine.slice(start, end)));
        start = end;
    }
    drop(mine);
    let received: Vec<SortedIds> = comm.shuffle("dictionary: ranges", parcels).into_iter().map(|(_, s)| s).collect();
    let range = SortedIds::merge(&received);
    drop(received);
    let ranges = comm.all_gather("dictionary: merged ranges", range);
    SortedIds::concat(&ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_agree_on_the_sorted_union() {
        let results = timely::execute(timely::Config::process(3), |worker| {
            let mut comm = Comm::new(worker, 1);
            let me = comm.index;
            // Overlapping, uneven sets; one worker has nothing.
            let ids: Vec<String> = match me {
                0 => (0..500).map(|i| format!("item-{i:04}")).collect(),
                1 => (250..900).step_by(3).map(|i| format!("item-{i:04}")).chain(["a".into(), "zz".into()]).collect(),
                _ => Vec::new(),
            };
            let dict = build_dictionary(&mut comm, SortedIds::from_unsorted(ids.iter().map(String::as_str)));
            dict.iter().map(str::to_string).collect::<Vec<_>>()
        })
        .unwrap()
        .join();
        let mut expected: Vec<String> = (0..500)
            .chain((250..900).step_by(3))
            .map(|i| format!("item-{i:04}"))
            .chain(["a".into(), "zz".into()])
            .collect();
        expected.sort();
        expected.dedup();
        for r in results {
            assert_eq!(r.unwrap(), expected);
        }
    }
}
