//! A training run: source → dataflow → sink, as one library call.
//!
//! Lists the input, connects to the other processes (if any), prepares the
//! model directory, runs the workers ([`crate::dataflow::run_worker`]) on
//! timely, and publishes the model with its manifest only if every worker
//! succeeded.

use crate::cluster::Hosts;
use crate::cluster::connect::{Hello, connect_all};
use crate::config::Engine;
use crate::dataflow::resident::Follow;
use crate::dataflow::{DirOutput, Failure, StateIn, Summary, WorkerContext, read::ReadPlan, run_worker};
use crate::report::{RejectLimit, peak_rss_bytes};
use crate::sink::directory::{ModelDir, Parts};
use crate::sink::elasticsearch::{EsOptions, EsTarget};
use crate::source::InputFile;
use crate::source::{assign_units, list_inputs, plan_units};
use crate::time::{Millis, format_iso8601};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use timely::WorkerConfig;
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::{Hooks, WorkerGuards};

/// The processes of a multi-host run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub hosts: Hosts,
    /// This process's line of the hosts file (0-based).
    pub process: usize,
    pub connect_timeout: Duration,
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
    pub cluster: Option<ClusterOptions>,
    pub progress: bool,
    /// Training state directory: train from it plus the files not consumed yet.
    pub state: Option<String>,
    /// Ignore the state's consumed files: train from all input (and rewrite the state).
    pub full: bool,
}

#[derive(Debug)]
pub enum TrainError {
    /// The run could not start: bad input location, output directory or cluster.
    Setup(String),
    /// The run failed; no model was published.
    Failed(Failure),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Setup(e) => f.write_str(e),
            TrainError::Failed(e) => e.fmt(f),
        }
    }
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
    run(opts, None).map(|t| t.expect("a run without --follow always trains"))
}

/// A resident trainer (`--follow`): the first tick trains (from the state
/// or all input), later ticks update the model kept in memory with the
/// files not consumed yet (see `dataflow::resident`).
pub struct Follower {
    shared: Arc<Follow>,
    /// The files in the resident model.
    consumed: Vec<crate::state::Consumed>,
    /// Ticks that trained or updated.
    pub ticks: u64,
    /// The run whose Elasticsearch indices the updates write in place.
    es_run: Option<i64>,
    _lock: Option<crate::state::lock::StateLock>,
}

impl Follower {
    pub fn new(opts: &TrainOptions, drift: f64) -> Result<Follower, TrainError> {
        if opts.cluster.is_some() {
            return Err(TrainError::Setup(
                "--follow runs in one process (its workers keep the model in memory); on a cluster, run incremental \
                 trainings with --state from cron"
                    .into(),
            ));
        }
        if !(drift >= 0.0 && drift.is_finite()) {
            return Err(TrainError::Setup(format!("--drift {drift}: must be a fraction ≥ 0")));
        }
        // The state is this process's for as long as it follows.
        let lock = match &opts.state {
            Some(dir) => {
                let (store, dir) =
                    crate::storage::Store::resolve(dir).map_err(|e| TrainError::Setup(format!("--state {e}")))?;
                Some(crate::state::lock::StateLock::acquire(&store, &dir).map_err(TrainError::Setup)?)
            }
            None => None,
        };
        Ok(Follower {
            shared: Arc::new(Follow::new(opts.workers.max(1), drift)),
            consumed: Vec::new(),
            ticks: 0,
            es_run: None,
            _lock: lock,
        })
    }

    /// Trains or updates with the files not consumed yet and publishes the
    /// model; with `checkpoint`, also writes the state. `None`: there was
    /// nothing new and no checkpoint was asked for.
    pub fn tick(&mut self, opts: &TrainOptions, checkpoint: bool) -> Result<Option<Trained>, TrainError> {
        if !self.shared.is_warm() {
            self.shared.clear();
        }
        let result = run(opts, Some((self, checkpoint)));
        if result.is_err() && !self.shared.is_warm() {
            // A failed update may have changed part of the resident state:
            // the next tick starts again from the state on disk.
            self.shared.clear();
        }
        result
    }

    /// True once a tick trained: later ticks are updates.
    pub fn is_warm(&self) -> bool {
        self.shared.is_warm()
    }
}

fn run(opts: &TrainOptions, mut follow: Option<(&mut Follower, bool)>) -> Result<Option<Trained>, TrainError> {
    let (store, all_inputs) = list_inputs(&opts.input).map_err(TrainError::Setup)?;
    let workers = opts.workers.max(1);
    let is_first = opts.cluster.as_ref().is_none_or(|c| c.process == 0);

    // The state: which files are new, and what the previous runs left.
    let warm = follow.as_ref().is_some_and(|(f, _)| f.is_warm());
    let checkpoint = follow.as_ref().is_none_or(|&(_, c)| c);
    let state = match &opts.state {
        None => None,
        Some(dir) => Some(
            PreviousState::open(dir, &opts.engine, opts.full && !warm, is_first && follow.is_none())
                .map_err(TrainError::Setup)?,
        ),
    };
    let new: Vec<usize> = match (&follow, &state) {
        (Some((f, _)), _) if warm => crate::state::new_files(&all_inputs, &f.consumed).map_err(TrainError::Setup)?,
        (_, Some(s)) => crate::state::new_files(&all_inputs, &s.consumed()).map_err(TrainError::Setup)?,
        _ => (0..all_inputs.len()).collect(),
    };
    let inputs: Vec<InputFile> = new.iter().map(|&f| all_inputs[f].clone()).collect();
    if warm && inputs.is_empty() && !checkpoint {
        return Ok(None);
    }
    // Files in the model after this run.
    let mut consumed_after = match (&follow, &state) {
        (Some((f, _)), _) if warm => f.consumed.clone(),
        (_, Some(s)) => s.consumed(),
        _ => Vec::new(),
    };
    consumed_after.extend(inputs.iter().map(|f| crate::state::Consumed {
        path: f.path.clone(),
        len: f.len,
        mtime: f.mtime,
    }));
    consumed_after.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(s) = &state {
        tracing::info!(
            new_files = inputs.len(),
            consumed = s.consumed().len(),
            resumed = s.manifest.is_some(),
            "state {}",
            s.dir
        );
    }
    let clock = || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    };

    // Connect the processes; adopt process 0's clock and run id.
    let (process, processes, now, run, started, sockets) = match &opts.cluster {
        None => {
            let run = match &follow {
                Some((f, _)) => format!("{}-{}", std::process::id(), f.ticks),
                None => std::process::id().to_string(),
            };
            (0, 1, opts.now.unwrap_or_else(clock), run, clock(), None)
        }
        Some(c) => {
            let hello = Hello {
                process: c.process as u64,
                processes: c.hosts.addresses.len() as u64,
                workers: workers as u64,
                fingerprint: fingerprint(opts),
                now: opts.now.unwrap_or_else(clock),
                run_id: crate::hash::mix(clock() as u64 ^ ((std::process::id() as u64) << 32)),
                started: clock(),
            };
            tracing::info!(process = c.process, processes = hello.processes, "connecting to the other processes");
            let (sockets, agreed) =
                connect_all(&c.hosts.addresses, hello, c.connect_timeout).map_err(TrainError::Setup)?;
            (
                c.process,
                c.hosts.addresses.len(),
                agreed.now,
                format!("c{:016x}", agreed.run_id),
                agreed.started,
                Some(sockets),
            )
        }
    };

    let model_dir = match &opts.output {
        Some(output) => Some(ModelDir::create(output, &run).map_err(TrainError::Setup)?),
        None => None,
    };
    let state_dir = match &state {
        Some(s) if !warm || checkpoint => Some(
            ModelDir::create_marked(&s.dir, &run, crate::state::STATE_FILE, "--state").map_err(TrainError::Setup)?,
        ),
        _ => None,
    };
    let es = match &opts.es {
        Some(es) => {
            // Update the live indices in place when they hold the state's model.
            let live = match &follow {
                Some((f, _)) if warm => f.es_run,
                _ => state.as_ref().and_then(|s| s.es_run()),
            };
            Some(Arc::new(
                EsTarget::prepare(es, &opts.engine, started, process == 0, workers, live).map_err(TrainError::Setup)?,
            ))
        }
        None => None,
    };
    // A failed run leaves no new index behind.
    let abort = |e: TrainError| {
        if let (Some(es), 0) = (&es, process) {
            es.abort();
        }
        e
    };
    let peers = workers * processes;
    let units = plan_units(&inputs, opts.split_bytes);
    let total_bytes: u64 = inputs.iter().map(|f| f.len).sum();
    let ctx = Arc::new(WorkerContext {
        shares: assign_units(&units, &inputs, peers),
        listing: listing_hash(&inputs),
        units,
        plan: ReadPlan::new(&opts.engine, now),
        engine: opts.engine.clone(),
        store,
        inputs,
        now,
        max_rejected: opts.max_rejected,
        show_rejected: opts.show_rejected,
        output: model_dir.as_ref().map(|d| DirOutput { store: d.store().clone(), parts_dir: d.tmp_path().to_string() }),
        es: es.clone(),
        process,
        processes,
        bytes_read: Arc::new(AtomicU64::new(0)),
        histories: opts.es.is_some(),
        state_in: if warm { None } else { state.as_ref().and_then(|s| s.resume()) },
        state_out: state_dir
            .as_ref()
            .map(|d| DirOutput { store: d.store().clone(), parts_dir: d.tmp_path().to_string() }),
        follow: follow.as_ref().map(|(f, _)| f.shared.clone()),
    });
    tracing::info!(files = ctx.inputs.len(), bytes = total_bytes, workers, processes, now = %format_iso8601(now), "training");

    let done = Arc::new(AtomicBool::new(false));
    let progress = opts.progress.then(|| {
        // This process reads about its share of the bytes.
        spawn_progress(ctx.bytes_read.clone(), total_bytes / processes as u64, done.clone())
    });
    let worker_ctx = ctx.clone();
    let run_workers = move |worker: &mut timely::worker::Worker| run_worker(worker, &worker_ctx);
    let guards = match sockets {
        None => timely::execute(timely::Config::process(workers), run_workers),
        Some(sockets) => execute_cluster(sockets, process, workers, run_workers),
    }
    .map_err(|e| abort(TrainError::Setup(format!("cannot start the workers: {e}"))))?;
    let results = guards.join();
    done.store(true, Ordering::Relaxed);
    if let Some(handle) = progress {
        let _ = handle.join();
    }

    let mut summary = None;
    for (w, result) in results.into_iter().enumerate() {
        match result {
            Err(panic) => {
                return Err(abort(TrainError::Failed(Failure::Output(format!("worker {w} failed: {panic}")))));
            }
            Ok(Err(failure)) => return Err(abort(TrainError::Failed(failure))),
            Ok(Ok(s)) => summary = summary.or(Some(s)),
        }
    }
    let mut summary = summary.ok_or_else(|| abort(TrainError::Failed(Failure::Output("no worker ran".into()))))?;
    summary.warnings.splice(0..0, opts.engine_warnings.iter().cloned());
    let mut manifest = manifest(opts, &summary, workers, processes, now);
    if let Some(s) = &state {
        manifest["state"] = serde_json::json!({
            "location": s.dir,
            "resumed": s.manifest.is_some(),
            "filesConsumedBefore": s.consumed().len(),
            "newFiles": ctx.inputs.len(),
            "bytes": summary.state_bytes,
        });
    }
    if let Some((f, _)) = &follow {
        manifest["follow"] = serde_json::json!({
            "tick": f.ticks,
            "drift": f.shared.drift,
            "update": summary.update,
        });
    }
    if opts.es.is_some() {
        manifest["elasticsearch"] = serde_json::json!({
            "inPlace": es.as_ref().is_some_and(|e| e.in_place),
            "documentsSent": summary.changed.documents,
            "documentsDeleted": summary.changed.deleted,
            "usersSent": summary.changed.users,
        });
    }
    // One process: one items.jsonl. Several sharing a directory: process 0
    // publishes every part. Several with their own disks: each publishes its own.
    let parts = if processes == 1 { Parts::Concatenate(workers) } else { Parts::Keep };
    let publishes = processes == 1 || process == 0 || !summary.shared_output;
    // Elasticsearch first, the directory last: when the directory's
    // manifest appears, the whole model is published.
    let mut es_index = None;
    if let (Some(es), 0) = (&es, process) {
        es.publish(summary.model.documents, summary.users_indexed, &manifest)
            .map_err(|e| abort(TrainError::Failed(Failure::Output(e))))?;
        es_index = Some(es.model_index.clone());
    }
    if let Some(dir) = model_dir {
        if publishes {
            let started = std::time::Instant::now();
            dir.publish(parts, &manifest).map_err(|e| TrainError::Failed(Failure::Output(e)))?;
            tracing::debug!(secs = started.elapsed().as_secs_f64(), "model directory published");
        } else {
            dir.detach();
        }
    }
    // The state last: a crash before this leaves the previous state, and the
    // next run consumes the same files again.
    if let (Some(dir), true) = (state_dir, state.is_some()) {
        if process == 0 {
            // Every worker's part must be in the directory being published.
            let names: Vec<String> = dir
                .store()
                .list_dir(dir.tmp_path())
                .map_err(|e| TrainError::Failed(Failure::Output(e)))?
                .iter()
                .map(|e| crate::storage::file_name(&e.path).to_string())
                .collect();
            if let Some(missing) = (0..peers).map(crate::state::part_name).find(|p| !names.contains(p)) {
                return Err(TrainError::Failed(Failure::Output(format!(
                    "state part {missing} is not in {}: with several hosts, --state must be a directory every host shares (HDFS)",
                    dir.tmp_path()
                ))));
            }
            let consumed = consumed_after.clone();
            let written = crate::state::StateManifest {
                format: crate::state::FORMAT,
                fingerprint: state_fingerprint(&opts.engine).0,
                recorded: state_fingerprint(&opts.engine).1,
                consumed,
                parts: peers,
                run: run.clone(),
                written: format_iso8601(clock()),
                es_index: es_index.clone(),
            };
            let value = serde_json::to_value(&written).expect("JSON");
            dir.publish(Parts::Keep, &value).map_err(|e| TrainError::Failed(Failure::Output(e)))?;
        } else {
            dir.detach();
        }
    }
    if let Some((f, _)) = follow.as_mut() {
        f.consumed = consumed_after;
        f.ticks += 1;
        f.es_run = es.as_ref().map(|e| e.run());
    }
    Ok(Some(Trained { summary, manifest, process, published: publishes, es_index }))
}

/// What events a state records: an engine with the same can continue from it.
pub fn state_fingerprint(engine: &Engine) -> (u64, serde_json::Value) {
    let plan = ReadPlan::new(engine, 0);
    let recorded = serde_json::json!({
        "indicators": engine.indicators.iter().map(|i| (i.name.clone(), i.event_names.clone())).collect::<Vec<_>>(),
        "rankingEvents": plan.rank_names,
        "random": !plan.random.is_empty(),
    });
    (xxhash_rust::xxh3::xxh3_64(recorded.to_string().as_bytes()), recorded)
}

/// The state directory of a run, as found.
struct PreviousState {
    dir: String,
    store: crate::storage::Store,
    manifest: Option<crate::state::StateManifest>,
    _lock: Option<crate::state::lock::StateLock>,
}

impl PreviousState {
    fn open(dir: &str, engine: &Engine, full: bool, lock: bool) -> Result<PreviousState, String> {
        if engine.event_window_secs.is_some() {
            return Err("--state cannot be used with datasource.params.eventWindow: a state keeps every event".into());
        }
        let (store, dir) = crate::storage::Store::resolve(dir).map_err(|e| format!("--state {e}"))?;
        let lock = if lock { Some(crate::state::lock::StateLock::acquire(&store, &dir)?) } else { None };
        let manifest = crate::state::read_manifest(&store, &dir)?;
        let manifest = match manifest {
            Some(m) if !full => {
                let (fingerprint, recorded) = state_fingerprint(engine);
                if m.fingerprint != fingerprint {
                    return Err(format!(
                        "the state in {dir} was written for another engine configuration (it records {}, this engine needs {}): \
                         rebuild it with --full",
                        m.recorded, recorded
                    ));
                }
                Some(m)
            }
            _ => None,
        };
        Ok(PreviousState { dir, store, manifest, _lock: lock })
    }

    fn consumed(&self) -> Vec<crate::state::Consumed> {
        self.manifest.as_ref().map(|m| m.consumed.clone()).unwrap_or_default()
    }

    fn resume(&self) -> Option<StateIn> {
        self.manifest.as_ref().map(|m| StateIn { store: self.store.clone(), dir: self.dir.clone(), parts: m.parts })
    }

    /// The run whose Elasticsearch indices hold this state's model.
    fn es_run(&self) -> Option<i64> {
        let index = self.manifest.as_ref()?.es_index.as_ref()?;
        index.rsplit('_').next()?.parse().ok()
    }
}

/// Runs the workers of this process over connected sockets.
fn execute_cluster<T, F>(
    sockets: Vec<Option<TcpStream>>,
    process: usize,
    workers: usize,
    func: F,
) -> Result<WorkerGuards<T>, String>
where
    T: Send + 'static,
    F: Fn(&mut timely::worker::Worker) -> T + Send + Sync + 'static,
{
    let hooks = Hooks::default();
    let local = ProcessBuilder::new_typed_vector(workers, hooks.refill.clone(), None);
    let (builders, guard) = initialize_networking_from_sockets(local, sockets, process, workers, hooks)
        .map_err(|e| format!("cannot start networking: {e}"))?;
    let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
    timely::execute::execute_from(builders, Box::new(guard), WorkerConfig::default(), func)
}

/// What must be equal on every process for a consistent model.
fn fingerprint(opts: &TrainOptions) -> u64 {
    let text = format!(
        "{:?}|{}|{:?}|{:?}|{}|{}|{}|{:?}",
        opts.engine,
        opts.input,
        opts.output,
        opts.now,
        opts.max_rejected,
        opts.show_rejected,
        opts.split_bytes,
        opts.es.as_ref().map(|e| (&e.config.urls, e.shards, e.replicas, e.keep))
    );
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

fn listing_hash(inputs: &[crate::source::InputFile]) -> u64 {
    let mut h = 0u64;
    for f in inputs {
        h = crate::hash::mix(h ^ xxhash_rust::xxh3::xxh3_64(f.path.as_bytes()) ^ f.len.rotate_left(17));
    }
    h
}

fn manifest(opts: &TrainOptions, s: &Summary, workers: usize, processes: usize, now: Millis) -> serde_json::Value {
    let events = s.read.lines.max(1) as f64;
    let network: u64 = s.network_bytes.values().sum();
    serde_json::json!({
        "format": "ur-train model 1",
        "version": env!("CARGO_PKG_VERSION"),
        "now": format_iso8601(now),
        "engine": opts.engine,
        "input": {
            "location": opts.input,
            "files": s.read.files,
            "bytes": s.read.bytes,
            "lines": s.read.lines,
            "blankLines": s.read.blank_lines,
            "rejected": s.read.rejected_total(),
            "rejectedByReason": s.read.rejected,
            "ignoredByReason": s.read.ignored,
            "events": s.read.events,
        },
        "model": s.model,
        "workers": workers,
        "processes": processes,
        "network": {
            "bytesToOtherProcesses": network,
            "bytesPerLine": network as f64 / events,
            "byExchange": s.network_bytes,
        },
        "timings": s.timings,
        "peakRssBytes": peak_rss_bytes(),
        "warnings": s.warnings,
    })
}

fn spawn_progress(read: Arc<AtomicU64>, total: u64, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("reading {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        while !done.load(Ordering::Relaxed) {
            let n = read.load(Ordering::Relaxed);
            bar.set_position(n.min(total));
            if n >= total {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bar.finish_and_clear();
    })
}
