//! The shared end of a run, full or update: every worker's counts and write
//! errors are gathered (an error anywhere fails every worker), summed, and
//! turned into the model statistics of the run's [`Summary`].

use super::exchange::Comm;
use super::{Changes, Failure, Summary};
use crate::config::Engine;
use crate::sink::part::PartStats;
use crate::stats::{Interactions, ModelStats, ReadStats, Timings};
use std::collections::BTreeMap;
use std::time::Instant;
use timely::ExchangeData;

/// Times the stages of a run.
pub struct Stopwatch {
    started: Instant,
    clock: Instant,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        let now = Instant::now();
        Stopwatch { started: now, clock: now }
    }

    /// Seconds since the last lap (or the start).
    pub fn lap(&mut self) -> f64 {
        let secs = self.clock.elapsed().as_secs_f64();
        self.clock = Instant::now();
        secs
    }

    /// Seconds since the start.
    pub fn total(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// One worker's counts at the end of a run (summed over the workers).
#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkerCounts {
    /// The documents of the worker's part.
    pub part: PartStats,
    /// Users the worker owns.
    pub users: u64,
    /// User histories sent to Elasticsearch.
    pub users_sent: u64,
    /// Bytes of the state part written.
    pub state_bytes: u64,
}

impl WorkerCounts {
    fn add(&mut self, other: WorkerCounts) {
        self.part.add(other.part);
        self.users += other.users;
        self.users_sent += other.users_sent;
        self.state_bytes += other.state_bytes;
    }

    /// What was sent to Elasticsearch.
    fn changes(&self) -> Changes {
        Changes { documents: self.part.documents_sent, deleted: self.part.deleted, users: self.users_sent }
    }

    /// The model statistics of the run: its shape, and what the written
    /// documents give.
    pub fn model_stats(&self, engine: &Engine, shape: ModelShape) -> ModelStats {
        let part = &self.part;
        ModelStats {
            users: shape.users,
            n: shape.n,
            items: shape.items,
            primary_items: shape.primary_users.iter().filter(|&&c| c > 0).count() as u64,
            interactions: shape.interactions,
            pair_visits: shape.pair_visits,
            correlators: engine.indicators.iter().zip(&part.correlators).map(|(i, &c)| (i.name.clone(), c)).collect(),
            items_with_properties: part.items_with_properties,
            ranked_items: engine.rankings.iter().zip(&part.ranked).map(|(r, &c)| (r.name.clone(), c)).collect(),
            documents: part.documents,
        }
    }

    /// The summary of a run with these counts; warnings, network bytes,
    /// shared output and update statistics are left for the caller.
    pub fn summary(&self, read: ReadStats, model: ModelStats, timings: Timings) -> Summary {
        Summary {
            read,
            model,
            timings,
            warnings: self.part.clash_warnings().collect(),
            network_bytes: BTreeMap::new(),
            shared_output: false,
            users_indexed: self.users,
            changed: self.changes(),
            state_bytes: self.state_bytes,
            update: None,
        }
    }
}

/// What the model is, apart from its documents.
pub struct ModelShape<'a> {
    /// Users seen.
    pub users: u64,
    /// Rows (users with enough primary events).
    pub n: u64,
    pub items: u64,
    /// Per item: users with it in the primary indicator before downsampling.
    pub primary_users: &'a [u32],
    pub interactions: BTreeMap<String, Interactions>,
    pub pair_visits: u64,
}

/// Every worker's counts, summed, with what else each sent (`extra`, in
/// worker order); the first write error of any worker fails them all.
pub fn gather_outcome<E: ExchangeData + Clone>(
    comm: &mut Comm,
    counts: WorkerCounts,
    error: Option<Failure>,
    extra: E,
) -> Result<(WorkerCounts, Vec<E>), Failure> {
    let gathered = comm.all_gather("documents: outcome", (counts, error.map(|e| e.to_string()), extra));
    let mut total = WorkerCounts::default();
    let mut extras = Vec::with_capacity(gathered.len());
    for (counts, error, extra) in gathered {
        if let Some(e) = error {
            return Err(Failure::Output(e));
        }
        total.add(counts);
        extras.push(extra);
    }
    Ok((total, extras))
}
