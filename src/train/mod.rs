//! A training run: source → dataflow → sink, as one library call.
//!
//! Selects the input (the files a state has not consumed yet), connects to
//! the other processes (if any), prepares the sinks, runs the workers
//! ([`crate::dataflow::run_worker`]) on timely, and publishes the model with
//! its manifest only if every worker succeeded.

mod abandon;
mod follow;
mod inputs;
mod manifest;
mod processes;
mod publish;

pub use abandon::{Publishing, abandon_run, stop_by_signal};
pub use follow::{Follower, check_drift};
pub use inputs::state_fingerprint;

use crate::cluster::Hosts;
use crate::config::Engine;
use crate::dataflow::{DirOutput, Failure, Summary, WorkerContext, read::ReadPlan};
use crate::sink::elasticsearch::EsOptions;
use crate::source::assign_units;
use crate::source::plan_units;
use crate::stats::RejectLimit;
use crate::time::Millis;
use inputs::Selection;
use processes::Processes;
use publish::Sinks;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The processes of a multi-host run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub hosts: Hosts,
    /// This process's line of the hosts file (0-based).
    pub process: usize,
    pub connect_timeout: Duration,
    /// A peer not heard from for this long ends the run.
    pub peer_timeout: Duration,
    /// What every process proves to the others before anything else.
    pub secret: crate::cluster::auth::Secret,
}

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub engine: Engine,
    /// Engine warnings, repeated in the manifest.
    pub engine_warnings: Vec<String>,
    pub input: String,
    /// The model directory, if one is written.
    pub output: Option<String>,
    /// The Elasticsearch cluster the model is indexed into, if any.
    pub es: Option<EsOptions>,
    /// The clock for ranking windows; `None`: now (process 0's, in a cluster).
    pub now: Option<Millis>,
    /// Worker threads per process.
    pub workers: usize,
    pub max_rejected: RejectLimit,
    pub show_rejected: usize,
    /// Uncompressed files larger than this are read in ranges by several workers.
    pub split_bytes: u64,
    /// Lines longer than this are rejected ("line longer than N bytes").
    pub max_line_bytes: usize,
    pub cluster: Option<ClusterOptions>,
    pub progress: bool,
    /// Training state directory: train from it plus the files not consumed yet.
    pub state: Option<String>,
    /// Ignore the state's consumed files: train from all input (and rewrite the state).
    pub full: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The run could not start: bad input location, output directory or cluster.
    #[error("{0}")]
    Setup(String),
    /// The run failed; no model was published.
    #[error("{0}")]
    Failed(Failure),
}

/// The published model's summary.
pub struct Trained {
    pub summary: Summary,
    pub manifest: serde_json::Value,
    /// This process's index and whether it published the model.
    pub process: usize,
    pub published: bool,
    /// The live index, when indexed into Elasticsearch by this process.
    pub es_index: Option<String>,
}

/// Trains and publishes the model.
pub fn train(opts: &TrainOptions) -> Result<Trained, TrainError> {
    run(opts, Mode::Once).map(|t| t.expect("a run without --follow always trains"))
}

/// What a run is: a training of its own, or a follower's tick.
enum Mode<'a> {
    /// One training (from the state, if any, and the files it has not consumed).
    Once,
    /// A tick of a follower; `checkpoint`: write the state as well.
    Tick { follower: &'a mut Follower, checkpoint: bool },
}

impl Mode<'_> {
    fn follower(&self) -> Option<&Follower> {
        match self {
            Mode::Once => None,
            Mode::Tick { follower, .. } => Some(follower),
        }
    }

    /// A follower that has trained: this run updates the model it holds.
    fn warm(&self) -> bool {
        self.follower().is_some_and(Follower::is_warm)
    }

    /// Whether the run writes the state (when there is one).
    fn checkpoint(&self) -> bool {
        match self {
            Mode::Once => true,
            Mode::Tick { checkpoint, .. } => *checkpoint,
        }
    }
}

/// One run; `None`: a follower's tick found nothing new to do.
fn run(opts: &TrainOptions, mut mode: Mode) -> Result<Option<Trained>, TrainError> {
    let Some(selection) = inputs::select(opts, &mode)? else {
        return Ok(None);
    };
    let (procs, sockets) = processes::connect(opts, &mode)?;
    let sinks = Sinks::prepare(opts, &mode, selection.state.as_ref(), &procs)?;
    let ctx = Arc::new(worker_context(opts, &mode, &selection, &procs, &sinks));
    let mut summary = processes::execute(&ctx, &procs, sockets, opts.progress).map_err(|e| sinks.abort(e))?;
    summary.warnings.splice(0..0, opts.engine_warnings.iter().cloned());
    let manifest = manifest::manifest(opts, &mode, &summary, &procs, &selection, sinks.es.as_deref());
    let es_run = sinks.es.as_ref().map(|e| e.run());
    let published = sinks.publish(opts, &procs, &summary, &manifest, &selection.consumed_after)?;
    if let Mode::Tick { follower, .. } = &mut mode {
        follower.ticked(selection.consumed_after, es_run);
    }
    Ok(Some(Trained {
        summary,
        manifest,
        process: procs.process,
        published: published.directory,
        es_index: published.es_index,
    }))
}

/// What every worker of the run reads: the input, the plan, the sinks.
fn worker_context(
    opts: &TrainOptions,
    mode: &Mode,
    selection: &Selection,
    procs: &Processes,
    sinks: &Sinks,
) -> WorkerContext {
    let inputs = selection.inputs.clone();
    let units = plan_units(&inputs, opts.split_bytes);
    WorkerContext {
        shares: assign_units(&units, &inputs, procs.peers()),
        listing: inputs::listing_hash(&inputs),
        units,
        plan: ReadPlan::new(&opts.engine, procs.now)
            .with_max_line_bytes(opts.max_line_bytes)
            .keeping_rank_events(sinks.state_dir.is_some() || mode.follower().is_some())
            .keeping_times(opts.es.is_some() || sinks.state_dir.is_some() || mode.follower().is_some()),
        engine: opts.engine.clone(),
        store: selection.store.clone(),
        inputs,
        now: procs.now,
        max_rejected: opts.max_rejected,
        show_rejected: opts.show_rejected,
        output: sinks
            .model_dir
            .as_ref()
            .map(|d| DirOutput { store: d.store().clone(), parts_dir: d.tmp_path().to_string() }),
        es: sinks.es.clone(),
        process: procs.process,
        processes: procs.processes,
        bytes_read: Arc::new(AtomicU64::new(0)),
        histories: opts.es.is_some(),
        state_in: if mode.warm() { None } else { selection.state.as_ref().and_then(|s| s.resume()) },
        state_out: sinks
            .state_dir
            .as_ref()
            .map(|d| DirOutput { store: d.store().clone(), parts_dir: d.tmp_path().to_string() }),
        follow: mode.follower().map(|f| f.shared.clone()),
    }
}
