//! The processes and workers of a run: connecting to the other processes
//! (adopting process 0's clock and run id), and running this process's
//! workers on timely to their summary, with a watchdog on the other
//! processes that ends the run when one falls silent.

use super::{Mode, TrainError, TrainOptions};
use crate::cluster::connect::{Hello, connect_all};
use crate::cluster::watchdog::{Silence, Watchdog};
use crate::dataflow::{Failure, Summary, WorkerContext, run_worker};
use crate::time::{Millis, format_iso8601};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use timely::WorkerConfig;
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::{Hooks, WorkerGuards};

/// The connections to the other processes, by process (`None`: this one):
/// timely's, and the watchdog's.
pub(super) struct Sockets {
    data: Vec<Option<TcpStream>>,
    heartbeats: Vec<Option<TcpStream>>,
    addresses: Vec<String>,
    peer_timeout: std::time::Duration,
}

/// The processes of a run, as agreed.
pub(super) struct Processes {
    /// This process.
    pub process: usize,
    pub processes: usize,
    /// Worker threads per process.
    pub workers: usize,
    /// The clock for ranking windows.
    pub now: Millis,
    /// The run's id, naming its temporary directories.
    pub run: String,
    /// When the run started (process 0's clock).
    pub started: Millis,
}

impl Processes {
    /// Workers in all processes.
    pub fn peers(&self) -> usize {
        self.workers * self.processes
    }
}

/// The wall clock, in milliseconds since the epoch.
pub(super) fn clock() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Connects the processes (one process: nothing to connect).
pub(super) fn connect(opts: &TrainOptions, mode: &Mode) -> Result<(Processes, Option<Sockets>), TrainError> {
    let workers = opts.workers.max(1);
    let Some(c) = &opts.cluster else {
        let run = match mode.follower() {
            Some(f) => format!("{}-{}", std::process::id(), f.ticks),
            None => std::process::id().to_string(),
        };
        let now = opts.now.unwrap_or_else(clock);
        return Ok((Processes { process: 0, processes: 1, workers, now, run, started: clock() }, None));
    };
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
    let connected = connect_all(&c.hosts.addresses, hello, &c.secret, c.connect_timeout, c.peer_timeout)
        .map_err(TrainError::Setup)?;
    let agreed = connected.agreement;
    let procs = Processes {
        process: c.process,
        processes: c.hosts.addresses.len(),
        workers,
        now: agreed.now,
        run: format!("c{:016x}", agreed.run_id),
        started: agreed.started,
    };
    let sockets = Sockets {
        data: connected.data,
        heartbeats: connected.heartbeats,
        addresses: c.hosts.addresses.clone(),
        peer_timeout: c.peer_timeout,
    };
    Ok((procs, Some(sockets)))
}

/// Runs this process's workers to the run's summary (with a progress bar
/// if asked).
pub(super) fn execute(
    ctx: &Arc<WorkerContext>,
    procs: &Processes,
    sockets: Option<Sockets>,
    progress: bool,
) -> Result<Summary, TrainError> {
    let (workers, processes) = (procs.workers, procs.processes);
    let total_bytes: u64 = ctx.inputs.iter().map(|f| f.len).sum();
    tracing::info!(files = ctx.inputs.len(), bytes = total_bytes, workers, processes, now = %format_iso8601(procs.now), "training");

    let done = Arc::new(AtomicBool::new(false));
    let progress = progress.then(|| {
        // This process reads about its share of the bytes.
        spawn_progress(ctx.bytes_read.clone(), total_bytes / processes as u64, done.clone())
    });
    let worker_ctx = ctx.clone();
    let run_workers = move |worker: &mut timely::worker::Worker| run_worker(worker, &worker_ctx);
    let (guards, watchdog) = match sockets {
        None => (timely::execute(timely::Config::process(workers), run_workers), None),
        Some(s) => {
            let watchdog = Watchdog::start(s.heartbeats, &s.addresses, s.peer_timeout, lost_peer)
                .map_err(|e| TrainError::Setup(format!("cannot start the watchdog: {e}")))?;
            (execute_cluster(s.data, procs.process, workers, run_workers), Some(watchdog))
        }
    };
    let guards = guards.map_err(|e| TrainError::Setup(format!("cannot start the workers: {e}")))?;
    let results = guards.join();
    if let Some(w) = watchdog {
        w.stop();
    }
    done.store(true, Ordering::Relaxed);
    if let Some(handle) = progress {
        let _ = handle.join();
    }

    let mut summary = None;
    for (w, result) in results.into_iter().enumerate() {
        match result {
            Err(panic) => return Err(TrainError::Failed(Failure::Output(format!("worker {w} failed: {panic}")))),
            Ok(Err(failure)) => return Err(TrainError::Failed(failure)),
            Ok(Ok(s)) => summary = summary.or(Some(s)),
        }
    }
    summary.ok_or_else(|| TrainError::Failed(Failure::Output("no worker ran".into())))
}

/// A peer fell silent or went away mid-run: the run cannot finish.
fn lost_peer(silence: Silence) {
    // 1: the run failed (`ur-train`'s exit status for a failed run).
    super::abandon_run(1, &format!("{silence}; no model written"));
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
