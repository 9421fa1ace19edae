//! Exchanges between workers, each one a small timely dataflow.
//!
//! Training is a sequence of stages separated by shuffles: by user, by item,
//! to the owner of a range of rows. Each shuffle feeds this worker's parcels
//! into a dataflow, routes each parcel to its destination worker with
//! timely's `Exchange` pact (in-process: moved, across processes: bincode
//! over timely's network), and steps the worker until the input frontier is
//! empty — that is, until every worker's parcels for this worker arrived.
//! Parcels are batches (one per destination, or a few), not single records.
//!
//! Received parcels are ordered by sender so results never depend on
//! arrival order.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use timely::ExchangeData;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Exchange as _;
use timely::dataflow::operators::core::ToStream;
use timely::dataflow::operators::generic::operator::Operator;
use timely::worker::Worker;

/// A parcel in flight: (destination, sender, sequence number, payload).
type Tagged<T> = (usize, usize, usize, T);

/// This worker's handle on the others.
pub struct Comm<'w> {
    worker: &'w mut Worker,
    pub index: usize,
    pub peers: usize,
    /// Workers per process (workers are numbered process by process).
    per_process: usize,
    /// Bytes sent to workers of other processes (bincode size of the
    /// parcels), by exchange.
    pub sent_remote: BTreeMap<String, u64>,
}

impl<'w> Comm<'w> {
    pub fn new(worker: &'w mut Worker, processes: usize) -> Comm<'w> {
        let (index, peers) = (worker.index(), worker.peers());
        Comm { worker, index, peers, per_process: peers / processes.max(1), sent_remote: BTreeMap::new() }
    }

    /// Sends each `(destination, payload)`; returns `(sender, payload)` for
    /// everything sent to this worker, ordered by sender (and by send order
    /// for one sender).
    pub fn shuffle<T: ExchangeData>(&mut self, name: &str, parcels: Vec<(usize, T)>) -> Vec<(usize, T)> {
        let me = self.index;
        if self.per_process < self.peers {
            let my_process = me / self.per_process;
            let mut bytes = 0;
            for (to, payload) in &parcels {
                if to / self.per_process != my_process {
                    bytes += bincode::serialized_size(payload).unwrap_or(0);
                }
            }
            *self.sent_remote.entry(name.split(':').next().unwrap_or(name).to_string()).or_default() += bytes;
        }
        let received: Rc<RefCell<Vec<Tagged<T>>>> = Rc::new(RefCell::new(Vec::new()));
        let done = Rc::new(Cell::new(false));
        let tagged: Vec<Tagged<T>> = parcels
            .into_iter()
            .enumerate()
            .map(|(seq, (to, payload))| {
                debug_assert!(to < self.peers, "parcel for worker {to} of {}", self.peers);
                (to, me, seq, payload)
            })
            .collect();
        {
            let received = received.clone();
            let done = done.clone();
            let name = name.to_string();
            self.worker.dataflow::<u64, _, _>(move |scope| {
                tagged.to_stream(scope).container::<Vec<_>>().exchange(|(to, _, _, _)| *to as u64).sink(
                    Pipeline,
                    &name,
                    move |(input, frontier)| {
                        input.for_each(|_cap, data| received.borrow_mut().append(data));
                        if frontier.is_empty() {
                            done.set(true);
                        }
                    },
                );
            });
        }
        // Park between steps rather than spin: a worker waiting for a slower
        // peer leaves its core to others (timely wakes it when data arrives;
        // the timeout bounds a missed wake-up).
        self.worker.step_or_park_while(Some(std::time::Duration::from_millis(5)), || !done.get());
        let mut out = std::mem::take(&mut *received.borrow_mut());
        out.sort_by_key(|(_, from, seq, _)| (*from, *seq));
        out.into_iter().map(|(_, from, _, payload)| (from, payload)).collect()
    }

    /// Every worker's value, indexed by worker.
    pub fn all_gather<T: ExchangeData + Clone>(&mut self, name: &str, value: T) -> Vec<T> {
        let parcels = (0..self.peers).map(|to| (to, value.clone())).collect();
        let got = self.shuffle(name, parcels);
        debug_assert_eq!(got.len(), self.peers);
        got.into_iter().map(|(_, v)| v).collect()
    }

    /// Element-wise sum over all workers of equally long vectors: each
    /// worker sums one slice (reduce-scatter), then the sums are gathered.
    pub fn all_reduce_sum<T>(&mut self, name: &str, values: Vec<T>) -> Vec<T>
    where
        T: ExchangeData + Copy + Default + std::ops::AddAssign,
    {
        let len = values.len();
        let peers = self.peers;
        let bounds = |w: usize| (len * w / peers, len * (w + 1) / peers);
        let parcels = (0..peers)
            .map(|w| {
                let (a, b) = bounds(w);
                (w, (len as u64, values[a..b].to_vec()))
            })
            .collect();
        drop(values);
        let slices = self.shuffle(&format!("{name}: reduce"), parcels);
        let (a, b) = bounds(self.index);
        let mut sum = vec![T::default(); b - a];
        for (from, (their_len, slice)) in slices {
            assert_eq!(their_len as usize, len, "worker {from} reduced a vector of another length");
            for (s, v) in sum.iter_mut().zip(slice) {
                *s += v;
            }
        }
        self.all_gather(&format!("{name}: gather"), sum).concat()
    }

    /// The sum over all workers.
    pub fn sum(&mut self, name: &str, value: u64) -> u64 {
        self.all_gather(name, value).into_iter().sum()
    }

    /// True on every worker if any worker says so.
    pub fn any(&mut self, name: &str, value: bool) -> bool {
        self.all_gather(name, value).into_iter().any(|v| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_gather_reduce_on_three_workers() {
        let results = timely::execute(timely::Config::process(3), |worker| {
            let mut comm = Comm::new(worker, 1);
            let me = comm.index;
            // Each worker sends one parcel to every worker, and two to worker 0.
            let mut parcels: Vec<(usize, String)> = (0..3).map(|to| (to, format!("{me}->{to}"))).collect();
            parcels.push((0, format!("{me}->0 again")));
            let got = comm.shuffle("test", parcels);
            let gathered = comm.all_gather("gather", me as u64 * 10);
            let reduced = comm.all_reduce_sum("reduce", vec![me as u32 + 1; 7]);
            (got, gathered, reduced)
        })
        .unwrap()
        .join();
        for (w, r) in results.into_iter().enumerate() {
            let (got, gathered, reduced) = r.unwrap();
            let expected: Vec<(usize, String)> = (0..3)
                .flat_map(|from| {
                    let mut v = vec![(from, format!("{from}->{w}"))];
                    if w == 0 {
                        v.push((from, format!("{from}->0 again")));
                    }
                    v
                })
                .collect();
            assert_eq!(got, expected);
            assert_eq!(gathered, vec![0, 10, 20]);
            assert_eq!(reduced, vec![6; 7]);
        }
    }
}
