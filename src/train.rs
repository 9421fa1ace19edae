//! A training run: source → dataflow → sink, as one library call.
//!
//! Lists the input, prepares the model directory, runs the workers
//! ([`crate::dataflow::run_worker`]) on timely, and publishes the model
//! with its manifest only if every worker succeeded.

use crate::config::Engine;
use crate::dataflow::{Failure, Summary, WorkerContext, read::ReadPlan, run_worker};
use crate::report::{RejectLimit, peak_rss_bytes};
use crate::sink::directory::ModelDir;
use crate::source::time::{Millis, format_iso8601};
use crate::source::{assign_files, list_inputs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub engine: Engine,
    /// Engine warnings, repeated in the manifest.
    pub engine_warnings: Vec<String>,
    pub input: String,
    pub output: PathBuf,
    pub now: Millis,
    pub workers: usize,
    pub max_rejected: RejectLimit,
    pub show_rejected: usize,
    pub progress: bool,
}

#[derive(Debug)]
pub enum TrainError {
    /// The run could not start: bad input location or output directory.
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
}

/// Trains and publishes the model.
pub fn train(opts: &TrainOptions) -> Result<Trained, TrainError> {
    let inputs = list_inputs(&opts.input).map_err(TrainError::Setup)?;
    let model_dir = ModelDir::create(&opts.output).map_err(TrainError::Setup)?;
    let workers = opts.workers.max(1);
    let total_bytes: u64 = inputs.iter().map(|f| f.len).sum();
    let ctx = Arc::new(WorkerContext {
        shares: assign_files(&inputs, workers),
        plan: ReadPlan::new(&opts.engine, opts.now),
        engine: opts.engine.clone(),
        inputs,
        now: opts.now,
        max_rejected: opts.max_rejected,
        show_rejected: opts.show_rejected,
        parts_dir: model_dir.tmp_path().to_path_buf(),
        bytes_read: Arc::new(AtomicU64::new(0)),
    });
    tracing::info!(
        files = ctx.inputs.len(),
        bytes = total_bytes,
        workers,
        "training"
    );

    let done = Arc::new(AtomicBool::new(false));
    let progress = opts
        .progress
        .then(|| spawn_progress(ctx.bytes_read.clone(), total_bytes, done.clone()));

    let worker_ctx = ctx.clone();
    let results = timely::execute(timely::Config::process(workers), move |worker| {
        run_worker(worker, &worker_ctx)
    })
    .map_err(|e| TrainError::Setup(format!("cannot start the workers: {e}")))?
    .join();
    done.store(true, Ordering::Relaxed);
    if let Some(handle) = progress {
        let _ = handle.join();
    }

    let mut summary = None;
    for (w, result) in results.into_iter().enumerate() {
        match result {
            Err(panic) => {
                return Err(TrainError::Failed(Failure::Output(format!(
                    "worker {w} failed: {panic}"
                ))));
            }
            Ok(Err(failure)) => return Err(TrainError::Failed(failure)),
            Ok(Ok(Some(s))) => summary = Some(s),
            Ok(Ok(None)) => {}
        }
    }
    let mut summary = summary.ok_or_else(|| {
        TrainError::Failed(Failure::Output("worker 0 returned no summary".into()))
    })?;
    summary
        .warnings
        .splice(0..0, opts.engine_warnings.iter().cloned());
    let manifest = manifest(opts, &summary, workers);
    model_dir
        .publish(workers, &manifest)
        .map_err(|e| TrainError::Failed(Failure::Output(e)))?;
    Ok(Trained { summary, manifest })
}

fn manifest(opts: &TrainOptions, s: &Summary, workers: usize) -> serde_json::Value {
    serde_json::json!({
        "format": "ur-train model 1",
        "version": env!("CARGO_PKG_VERSION"),
        "now": format_iso8601(opts.now),
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
        "processes": 1,
        "timings": s.timings,
        "peakRssBytes": peak_rss_bytes(),
        "warnings": s.warnings,
    })
}

fn spawn_progress(
    read: Arc<AtomicU64>,
    total: u64,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "reading {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        while !done.load(Ordering::Relaxed) {
            let n = read.load(Ordering::Relaxed);
            bar.set_position(n);
            if n >= total {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bar.finish_and_clear();
    })
}
