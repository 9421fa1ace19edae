//! The worker program: what every worker does, stage by stage. This is the
//! only module tree that knows about timely; [`run_worker`] is the program
//! and picks one of two modes.
//!
//! Full training ([`full`]) reads this worker's share of the input (with its
//! part of the previous state, if one is resumed) and runs every stage:
//!
//! ```text
//! read ─▶ dictionary ─▶ group users ─▶ downsample ─▶ CCO rows ─▶ correlate ─┐
//!   │      (all-gather     (shuffle by     (shuffle      (shuffle to          ├─▶ documents, histories,
//!   │       item ids)       user)           heavy items)  row owners)         │   state part (per worker)
//!   └──────────────── property events, ranking counts ─(shuffle to owners)───┘
//! ```
//!
//! Each arrow that crosses workers is a timely exchange ([`exchange`]); the
//! stages in between are plain functions over this worker's partition, so
//! every worker runs the same program on its share and the result does not
//! depend on how many workers (or processes) there are.
//!
//! Following (`--follow`), a full run leaves each worker's model in memory
//! ([`resident`]); every later run is an update ([`update`]): only the new
//! files are read, new item ids join the dictionary, new events go to their
//! users' owners and [`resident::update`] changes the counts and re-scores
//! the rows they touch; then the documents, histories and state part are
//! written as in a full run. Both modes end alike ([`outcome`]): every
//! worker's counts and errors are gathered into the run's [`Summary`].

pub mod cco;
pub mod dictionary;
mod documents;
pub mod exchange;
pub mod facts;
mod full;
mod intake;
pub mod llr;
mod outcome;
pub mod properties;
pub mod ranks;
pub mod read;
pub mod resident;
pub mod sample;
pub mod state_part;
mod update;
pub mod users;

use crate::config::Engine;
use crate::sink::elasticsearch::EsTarget;
use crate::sink::part::SinkError;
use crate::source::{InputFile, WorkUnit};
use crate::stats::{ModelStats, ReadStats, RejectLimit, Timings};
use crate::storage::Store;
use read::ReadPlan;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use timely::worker::Worker;

/// What all workers of a process share, read-only.
pub struct WorkerContext {
    pub engine: Engine,
    pub store: Store,
    pub inputs: Vec<InputFile>,
    pub units: Vec<WorkUnit>,
    /// `shares[w]`: indices of the units worker w reads (w over all processes).
    pub shares: Vec<Vec<usize>>,
    /// Hash of the input listing, compared across processes.
    pub listing: u64,
    pub plan: ReadPlan,
    pub now: i64,
    pub max_rejected: RejectLimit,
    pub show_rejected: usize,
    /// Where worker w writes `items-0000w.jsonl`, if a directory is written.
    pub output: Option<DirOutput>,
    /// The Elasticsearch indices being written, if any.
    pub es: Option<Arc<EsTarget>>,
    pub process: usize,
    pub processes: usize,
    pub bytes_read: Arc<AtomicU64>,
    /// Keep each user's recent items (for the query-time user history).
    pub histories: bool,
    /// The previous state, to train from together with the new files.
    pub state_in: Option<StateIn>,
    /// Where this run writes its state parts.
    pub state_out: Option<DirOutput>,
    /// `--follow`: the resident states kept between updates.
    pub follow: Option<Arc<resident::Follow>>,
}

/// A state to resume from.
pub struct StateIn {
    pub store: Store,
    pub dir: String,
    pub parts: usize,
}

/// A model directory being written: its store and temporary directory.
pub struct DirOutput {
    pub store: Store,
    pub parts_dir: String,
}

/// The result of a run, produced by worker 0 and given to every worker.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub read: ReadStats,
    pub model: ModelStats,
    pub timings: Timings,
    pub warnings: Vec<String>,
    /// Bytes of exchanged data sent to workers of other processes, by exchange.
    pub network_bytes: BTreeMap<String, u64>,
    /// True if every process wrote its parts into one shared directory.
    pub shared_output: bool,
    /// Users with a history document (all users seen).
    pub users_indexed: u64,
    /// What was sent to Elasticsearch.
    pub changed: Changes,
    /// Size of the state written.
    pub state_bytes: u64,
    /// What a resident update changed (`--follow`, after the first run).
    pub update: Option<resident::UpdateStats>,
}

/// Documents sent to Elasticsearch (in place: only what changed).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Changes {
    pub documents: u64,
    pub deleted: u64,
    pub users: u64,
}

/// A failure that every worker agrees on.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Reading failed (I/O, corrupt file).
    Input(String),
    /// Too many lines rejected; the read statistics say which.
    TooManyRejected(Box<ReadStats>),
    /// Nothing to train on.
    NoData(String),
    /// Writing the documents failed.
    Output(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Input(e) | Failure::NoData(e) | Failure::Output(e) => f.write_str(e),
            Failure::TooManyRejected(stats) => write!(
                f,
                "{} of {} lines rejected, more than --max-rejected allows",
                stats.rejected_total(),
                stats.lines
            ),
        }
    }
}

impl From<SinkError> for Failure {
    fn from(e: SinkError) -> Failure {
        Failure::Output(e.to_string())
    }
}

/// One worker's program: the update of its resident model when following
/// after the first run, a full training otherwise.
pub fn run_worker(worker: &mut Worker, ctx: &WorkerContext) -> Result<Summary, Failure> {
    if let Some(follow) = &ctx.follow
        && let Some(mut resident) = follow.take(worker.index())
    {
        let out = update::update(worker, ctx, &mut resident, follow.drift);
        // Reading fails before anything held changes: keep it.
        if matches!(out, Ok(_) | Err(Failure::Input(_) | Failure::TooManyRejected(_))) {
            follow.put(worker.index(), resident);
        }
        return out;
    }
    full::train(worker, ctx)
}
