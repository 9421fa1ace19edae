//! The `ur-train` command line: flags → validated [`Options`] → a run (or,
//! with `--follow`, a run kept current) → a report and an exit status. Raw
//! flags stop here; the library sees validated options only.

use super::{CommandError, Exit, init_logging};
use crate::cluster::Hosts;
use crate::cluster::auth::Secret;
use crate::config::Engine;
use crate::dataflow::Failure;
use crate::es::EsArgs;
use crate::sink::elasticsearch::EsOptions;
use crate::stats::{ReadStats, RejectLimit};
use crate::time::{format_iso8601, parse_iso8601};
use crate::train::{ClusterOptions, Follower, TrainError, TrainOptions, Trained, train};
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Train the Universal Recommender model from PIO event files.
///
/// Reads line-delimited PredictionIO event JSON (a file, or a directory of
/// partitions, `.gz` decompressed), computes the UR's correlated
/// cross-occurrence indicators (co-occurrence + LLR, top-K per item),
/// popularity rankings and item properties as configured by the UR's own
/// engine.json, and writes one Elasticsearch document per item to
/// OUTPUT/items.jsonl, with OUTPUT/manifest.json describing the run. The
/// model directory is replaced atomically: a failed run leaves the previous
/// model in place.
///
/// Exit status: 0 model written; 1 training failed, no model written (a
/// peer process lost or silent for --peer-timeout included); 2 bad command
/// line, engine.json or input location; 130/143 stopped by SIGINT/SIGTERM
/// (without --follow): no model written, temporary files removed, the
/// state's lock released. A signal once the publication has begun waits
/// for it: the run then ends as published.
#[derive(Parser, Debug)]
#[command(name = "ur-train", version, max_term_width = 100)]
pub struct Args {
    /// The UR's engine.json, used as-is: `indicators` or `eventNames`,
    /// `minEventsPerUser`, `rankings`, `seed`, downsampling caps. PIO-only keys
    /// are accepted; unknown keys are reported.
    #[arg(short, long, value_name = "FILE", default_value = "engine.json")]
    pub engine: PathBuf,

    /// Events to train on: a file, or a directory read recursively
    /// (e.g. `events/month=2011-01/part-00000.jsonl.gz`). `.gz` files are
    /// decompressed; names starting with `.` or `_`, and `*.md` files, are
    /// skipped.
    #[arg(short, long, value_name = "PATH")]
    pub input: String,

    /// Model directory to write, a local path or `hdfs://...`: items.jsonl
    /// (one document per item, sorted by id; one part per worker,
    /// items-NNNNN.jsonl, when several processes write) and manifest.json
    /// (engine, input statistics, timings) [default: `model`, unless
    /// --es-url is given].
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<String>,

    /// Index the model into Elasticsearch (7.17, 8, 9) or OpenSearch (2):
    /// a new index `<indexName>_<millis>` and the users' recent items in
    /// `<indexName>_users_<millis>` replace the aliases `<indexName>` and
    /// `<indexName>_users` atomically when complete; a failed run deletes
    /// them and leaves the aliases alone. See --es-url.
    #[command(flatten)]
    pub es: EsArgs,

    /// Primary shards of the new indices [default: the number of data nodes].
    #[arg(long, value_name = "N", help_heading = "Elasticsearch")]
    pub es_shards: Option<u32>,

    /// Replicas of the new indices [default: 1 with several data nodes, 0 with one].
    #[arg(long, value_name = "N", help_heading = "Elasticsearch")]
    pub es_replicas: Option<u32>,

    /// Published models kept for `ur rollback`, the live one included; older
    /// indices are deleted.
    #[arg(long, value_name = "N", default_value_t = 2, help_heading = "Elasticsearch")]
    pub es_keep: usize,

    /// Indices of runs never published (a crashed run's leftovers, or an
    /// overlapping run still writing) are deleted only once older than this;
    /// it must exceed the longest run, whose indices exist from its start.
    #[arg(long, value_name = "DURATION", default_value = "24h", help_heading = "Elasticsearch")]
    pub es_grace: String,

    /// Bulk requests in flight per process [default: engine.json
    /// `numESWriteConnections`, else the number of workers].
    #[arg(long, value_name = "N", help_heading = "Elasticsearch")]
    pub es_connections: Option<usize>,

    /// Bytes per bulk request.
    #[arg(long, value_name = "BYTES", default_value_t = 5 << 20, help_heading = "Elasticsearch")]
    pub es_batch_bytes: usize,

    /// Tries per bulk request before the run fails (429, 5xx and lost
    /// connections are retried with exponential backoff and jitter).
    #[arg(long, value_name = "N", default_value_t = 8, help_heading = "Elasticsearch")]
    pub es_retries: u32,

    /// Train incrementally: keep the training state in this directory (local
    /// or `hdfs://`). The first run trains from all input and writes it;
    /// later runs read only the files not consumed yet and give the model a
    /// full training on all files would give. One run at a time per state.
    #[arg(long, value_name = "DIR")]
    pub state: Option<String>,

    /// With --state: ignore what the state consumed and train from all input
    /// (nightly), rewriting the state.
    #[arg(long, requires = "state")]
    pub full: bool,

    /// Stay running and keep the model current: after training, look for new
    /// input files every INTERVAL (e.g. `30s`, `15m`) and update the model
    /// held in memory with them, at a cost that follows the new events, not
    /// the history; each update publishes the model directory. Stops on
    /// SIGINT/SIGTERM, writing the state (--state) first. With --es-url, each
    /// update writes the changed documents and user histories into the live
    /// indices. One process (on a cluster, use --state from cron).
    #[arg(long, value_name = "INTERVAL", help_heading = "Following")]
    pub follow: Option<String>,

    /// With --follow: rows whose counts an update did not change keep their
    /// correlators until N (the users trained on) has moved by more than this
    /// fraction since every row was last scored; then every row is
    /// re-scored. 0: every row on every update, the exact full-training model.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.01, requires = "follow", help_heading = "Following")]
    pub drift: f64,

    /// With --follow and --state: write the state this often (and when
    /// stopping). A crash loses nothing: the next start reads the last state
    /// and consumes the files added since again.
    #[arg(long, value_name = "INTERVAL", default_value = "1h", requires = "follow", help_heading = "Following")]
    pub checkpoint: String,

    /// With --follow: stop after this many trainings and updates (the first
    /// training counts), writing the state [default: run until stopped].
    #[arg(long, value_name = "N", requires = "follow", help_heading = "Following")]
    pub max_updates: Option<u64>,

    /// Worker threads per process [default: the number of CPUs]. The model
    /// does not depend on it.
    #[arg(short, long, value_name = "N")]
    pub workers: Option<usize>,

    /// Run on several hosts: a file with one `host:port` per process, in
    /// process order (timely's hostfile). Start the same command on every
    /// host (cluster/launch.sh does it over ssh).
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,

    /// This process's line of the hosts file, from 0 [default: the line
    /// whose host is this machine].
    #[arg(long, value_name = "N", requires = "hosts")]
    pub process: Option<usize>,

    /// A file holding the secret every process of the cluster shares (at
    /// least 16 bytes; a trailing newline is ignored), proved on every
    /// connection between processes [default: the UR_CLUSTER_SECRET
    /// environment variable]. Never pass the secret itself on the command
    /// line.
    #[arg(long, value_name = "FILE", requires = "hosts")]
    pub cluster_secret_file: Option<PathBuf>,

    /// Give up when another process has not connected after this many
    /// seconds, naming it.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub connect_timeout: u64,

    /// End the run (exit 1, no model) when another process has not been
    /// heard from for this many seconds (stopped, hung or cut off), naming
    /// it. Processes exchange a heartbeat every second.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub peer_timeout: u64,

    /// Read uncompressed files larger than this in ranges of this many bytes,
    /// on several workers (`.gz` files are read whole).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub split_size: u64,

    /// Reject lines longer than this many bytes (reason "line longer than N
    /// bytes") without holding them in memory; reading goes on at the next line.
    #[arg(long, value_name = "BYTES", default_value_t = crate::source::lines::DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,

    /// The clock for ranking windows (ISO-8601, e.g. 2026-01-15T12:00:00Z)
    /// [default: the current time]. Fix it to reproduce a run.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,

    /// Fail (exit 1, no model) when more lines than this are rejected as
    /// malformed: a count (`0`: any bad line fails the run) or a percentage
    /// of the lines read (`1%`).
    #[arg(long, value_name = "N|P%", default_value = "1%")]
    pub max_rejected: String,

    /// How many rejected lines to show as `file:line: reason`.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub show_rejected: usize,

    /// Print only warnings and errors.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more (repeat for more detail); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// No progress bar (it is shown only when stderr is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// `ur-train`'s command line, validated.
#[derive(Debug, Clone)]
pub struct Options {
    pub train: TrainOptions,
    /// `--follow`: keep the model current after training.
    pub follow: Option<FollowOptions>,
    /// `--quiet`: no report of the run on stderr.
    pub quiet: bool,
}

/// `--follow` and the flags that go with it.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// How often to look for new input files.
    pub interval: Duration,
    /// `--drift`: a fraction ≥ 0.
    pub drift: f64,
    /// How often to write the state (with `--state`).
    pub checkpoint: Duration,
    /// Stop after this many trainings and updates.
    pub max_updates: Option<u64>,
}

/// Runs `ur-train` (with its panic hook) on the process arguments and exits.
pub fn main() -> ! {
    super::install_panic_hook();
    super::main(main_with)
}

/// Runs `ur-train` and returns how it ended.
pub fn main_with(args: Args) -> Exit {
    init_logging(args.quiet, args.verbose);
    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::from(&e);
        }
    };
    for w in &opts.train.engine_warnings {
        tracing::warn!("engine.json: {w}");
    }
    match &opts.follow {
        Some(follow_opts) => follow(&opts, follow_opts),
        None => {
            abandon_on_signals();
            finish(&opts, train(&opts.train))
        }
    }
}

/// The write end of the pipe SIGINT/SIGTERM are written to in a one-shot run.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn forward_signal(signal: libc::c_int) {
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe; the fd is the pipe's write end.
    unsafe { libc::write(SIGNAL_PIPE.load(Ordering::SeqCst), &byte as *const u8 as *const libc::c_void, 1) };
}

/// A one-shot run stopped by SIGINT or SIGTERM ends at once, as a failed
/// run would: temporary directories removed, the state's lock released,
/// exit 128 + the signal (130, 143) — unless its publication has begun:
/// then it ends as published (`train::Publishing`). A thread does it; the
/// handler only writes the signal to a pipe.
fn abandon_on_signals() {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: a valid array of two fds.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        tracing::warn!("cannot watch for SIGINT/SIGTERM: {}", std::io::Error::last_os_error());
        return;
    }
    SIGNAL_PIPE.store(fds[1], Ordering::SeqCst);
    let spawned = std::thread::Builder::new().name("ur:signals".into()).spawn(move || {
        let mut byte = 0u8;
        // SAFETY: reading one byte into a valid buffer from the pipe's read end.
        while unsafe { libc::read(fds[0], &mut byte as *mut u8 as *mut libc::c_void, 1) } != 1 {}
        let name = if byte as libc::c_int == libc::SIGINT { "SIGINT" } else { "SIGTERM" };
        crate::train::stop_by_signal(byte as i32, name);
    });
    if spawned.is_ok() {
        // SAFETY: the handler only writes to a pipe.
        unsafe {
            libc::signal(libc::SIGINT, forward_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, forward_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Set by SIGINT/SIGTERM while following.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// `--follow`: train, then update with new files until stopped.
fn follow(opts: &Options, follow_opts: &FollowOptions) -> Exit {
    let train_opts = &opts.train;
    let mut follower = match Follower::new(train_opts, follow_opts.drift) {
        Ok(f) => f,
        Err(e) => return finish(opts, Err(e)),
    };
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, request_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, request_stop as *const () as libc::sighandler_t);
    }
    let interval = follow_opts.interval;
    let mut last_checkpoint = Instant::now();
    loop {
        let stopping = STOP.load(Ordering::SeqCst);
        let last = follow_opts.max_updates.is_some_and(|m| follower.ticks + 1 >= m);
        let checkpoint =
            train_opts.state.is_some() && (stopping || last || last_checkpoint.elapsed() >= follow_opts.checkpoint);
        let warm = follower.is_warm();
        let started = Instant::now();
        match follower.tick(train_opts, checkpoint) {
            Ok(Some(trained)) => {
                if checkpoint {
                    last_checkpoint = Instant::now();
                }
                if !opts.quiet {
                    eprintln!(
                        "{} {}: {:.3}s{}",
                        if warm { "update" } else { "training" },
                        follower.ticks - 1,
                        started.elapsed().as_secs_f64(),
                        if checkpoint { ", state written" } else { "" }
                    );
                }
                let exit = finish(opts, Ok(trained));
                if exit != Exit::Ok {
                    return exit;
                }
            }
            Ok(None) => {}
            // A bad first training ends the run; a bad update leaves the
            // model published last in place and is tried again.
            Err(e) if !warm => return finish(opts, Err(e)),
            Err(e) => {
                finish(opts, Err(e));
            }
        }
        if stopping || follow_opts.max_updates.is_some_and(|m| follower.ticks >= m) {
            return Exit::Ok;
        }
        let slept = Instant::now();
        while slept.elapsed() < interval && !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100).min(interval));
        }
    }
}

/// Reports a run and returns how it ended.
fn finish(opts: &Options, result: Result<Trained, TrainError>) -> Exit {
    let exit = result.as_ref().map_or_else(Exit::from, |_| Exit::Ok);
    match result {
        Ok(trained) => report_trained(opts, &trained),
        Err(TrainError::Setup(e)) => eprintln!("error: {e}"),
        Err(TrainError::Failed(Failure::TooManyRejected(stats))) => {
            report_rejections(&stats, true);
            eprintln!(
                "error: {} of {} lines rejected, more than --max-rejected {} allows; no model written",
                stats.rejected_total(),
                stats.lines,
                opts.train.max_rejected
            );
        }
        Err(TrainError::Failed(failure)) => eprintln!("error: {failure}; no model written"),
    }
    exit
}

/// Reports a published model: rejections, warnings, and (unless quiet, on
/// process 0) what was written.
fn report_trained(opts: &Options, trained: &Trained) {
    let s = &trained.summary;
    report_rejections(&s.read, false);
    for w in s.warnings.iter().skip(opts.train.engine_warnings.len()) {
        tracing::warn!("{w}");
    }
    if opts.quiet || trained.process != 0 {
        return;
    }
    let mut places: Vec<String> = opts.train.output.iter().cloned().collect();
    if let Some(index) = &trained.es_index {
        places.push(format!("Elasticsearch index {index}"));
    }
    if let Some(u) = &s.update {
        eprintln!(
            "update: {} users changed, {} count changes, {} of {} rows re-scored{}",
            u.users_changed,
            u.count_changes,
            u.rows_rescored,
            u.rows,
            if u.full_rescore { " (N drifted: every row)" } else { "" }
        );
    }
    eprintln!(
        "model written to {}: {} documents ({} primary items), {} users ({} trained), {} events kept of {} lines, {:.2}s",
        places.join(" and "),
        s.model.documents,
        s.model.primary_items,
        s.model.users,
        s.model.n,
        s.read.kept_total(),
        s.read.lines,
        s.timings.total
    );
}

/// Validates the command line: every flag, `--follow`'s included.
fn options(args: &Args) -> Result<Options, CommandError> {
    let usage = CommandError::Usage;
    let loaded = Engine::load(&args.engine).map_err(usage)?;
    let now = match &args.now {
        Some(s) => Some(parse_iso8601(s).ok_or_else(|| usage(format!("--now `{s}` is not an ISO-8601 date-time")))?),
        None => None,
    };
    let workers = match args.workers {
        Some(0) => return Err(usage("--workers must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    let max_rejected = RejectLimit::parse(&args.max_rejected).map_err(|e| usage(format!("--max-rejected {e}")))?;
    let cluster = cluster_options(args)?;
    if args.split_size == 0 {
        return Err(usage("--split-size must be at least 1".into()));
    }
    if args.max_line_bytes == 0 {
        return Err(usage("--max-line-bytes must be at least 1".into()));
    }
    let es = es_options(args)?;
    let output = match (&args.output, &es) {
        (Some(o), _) => Some(o.clone()),
        (None, None) => Some("model".to_string()),
        (None, Some(_)) => None,
    };
    let follow = follow_options(args)?;
    tracing::debug!(now = ?now.map(format_iso8601), workers, "options");
    let train = TrainOptions {
        engine: loaded.engine,
        engine_warnings: loaded.warnings,
        input: args.input.clone(),
        output,
        es,
        now,
        workers,
        max_rejected,
        show_rejected: args.show_rejected,
        split_bytes: args.split_size,
        max_line_bytes: args.max_line_bytes,
        state: args.state.clone(),
        full: args.full,
        cluster,
        progress: !args.no_progress && !args.quiet && std::io::stderr().is_terminal(),
    };
    Ok(Options { train, follow, quiet: args.quiet })
}

/// `--hosts`, `--process` and the cluster secret.
fn cluster_options(args: &Args) -> Result<Option<ClusterOptions>, CommandError> {
    let Some(path) = &args.hosts else {
        return Ok(None);
    };
    let hosts = Hosts::load(path).map_err(CommandError::Usage)?;
    let process = match args.process {
        Some(p) if p >= hosts.addresses.len() => {
            return Err(CommandError::Usage(format!(
                "--process {p}: the hosts file has {} lines (processes 0..{})",
                hosts.addresses.len(),
                hosts.addresses.len() - 1
            )));
        }
        Some(p) => p,
        None => hosts.find_me().map_err(|e| CommandError::Usage(format!("--hosts {}: {e}", path.display())))?,
    };
    if args.peer_timeout == 0 {
        return Err(CommandError::Usage("--peer-timeout must be at least 1".into()));
    }
    Ok(Some(ClusterOptions {
        hosts,
        process,
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        peer_timeout: Duration::from_secs(args.peer_timeout),
        secret: Secret::load(args.cluster_secret_file.as_deref()).map_err(|e| CommandError::Usage(e.to_string()))?,
    }))
}

/// `--es-url` and the flags of the indices written.
fn es_options(args: &Args) -> Result<Option<EsOptions>, CommandError> {
    let Some(config) = args.es.config().map_err(CommandError::Usage)? else {
        return Ok(None);
    };
    if args.es_shards == Some(0) {
        return Err(CommandError::Usage("--es-shards must be at least 1".into()));
    }
    let grace = crate::config::duration::parse_duration_secs(&args.es_grace)
        .map_err(|e| CommandError::Usage(format!("--es-grace {e}")))?;
    Ok(Some(EsOptions {
        config,
        shards: args.es_shards,
        replicas: args.es_replicas,
        keep: args.es_keep.max(1),
        grace: Duration::from_secs(grace.max(0) as u64),
        connections: args.es_connections,
        batch_bytes: args.es_batch_bytes.max(1024),
        attempts: args.es_retries.max(1),
    }))
}

/// `--follow`, `--drift`, `--checkpoint` and `--max-updates`.
fn follow_options(args: &Args) -> Result<Option<FollowOptions>, CommandError> {
    let Some(interval) = &args.follow else {
        return Ok(None);
    };
    let duration = |flag: &str, s: &str| {
        crate::config::duration::parse_duration_secs(s)
            .map(|secs| Duration::from_secs(secs.max(0) as u64))
            .map_err(|e| CommandError::Usage(format!("{flag} {e}")))
    };
    let interval = duration("--follow", interval)?;
    let checkpoint = duration("--checkpoint", &args.checkpoint)?;
    let drift = crate::train::check_drift(args.drift).map_err(|e| CommandError::Usage(e.to_string()))?;
    Ok(Some(FollowOptions { interval, drift, checkpoint, max_updates: args.max_updates }))
}

fn report_rejections(stats: &ReadStats, failing: bool) {
    let total = stats.rejected_total();
    if total == 0 {
        return;
    }
    let reasons: Vec<String> = stats.rejected.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    let verdict = if failing { "" } else { " (skipped)" };
    eprintln!("{total} lines rejected{verdict}: {}", reasons.join(", "));
    for sample in &stats.samples {
        eprintln!("  {sample}");
    }
    if (stats.samples.len() as u64) < total {
        eprintln!("  ... ({} more)", total - stats.samples.len() as u64);
    }
}
