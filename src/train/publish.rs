//! Where a run writes, and its publication: the Elasticsearch indices
//! first, the model directory next (its manifest appearing publishes the
//! whole model), the state last (a crash before it leaves the previous
//! state, and the next run consumes the same files again).

use super::inputs::{PreviousState, state_fingerprint};
use super::processes::{Processes, clock};
use super::{Mode, TrainError, TrainOptions};
use crate::dataflow::{Failure, Summary};
use crate::sink::directory::{ModelDir, Parts};
use crate::sink::elasticsearch::{EsRun, EsTarget};
use crate::state::ConsumedInput;
use crate::time::format_iso8601;
use std::sync::Arc;

/// The sinks of a run, prepared before the workers start.
pub(super) struct Sinks {
    /// The model directory being written, with `--output`.
    pub model_dir: Option<ModelDir>,
    /// The state directory being written, with `--state` (unless a
    /// follower's tick writes no checkpoint).
    pub state_dir: Option<ModelDir>,
    /// The Elasticsearch indices being written, with `--es-url`.
    pub es: Option<Arc<EsTarget>>,
    /// This process: process 0 publishes the indices and the state.
    process: usize,
}

/// What a run published.
pub(super) struct Published {
    /// This process published the model directory (or would have, had there been one).
    pub directory: bool,
    /// The live index, when published to Elasticsearch by this process.
    pub es_index: Option<String>,
}

fn output_failed(e: String) -> TrainError {
    TrainError::Failed(Failure::Output(e))
}

impl Sinks {
    /// Creates the temporary model and state directories and prepares the
    /// Elasticsearch indices (updated in place when they hold the model
    /// being updated and are live).
    pub fn prepare(
        opts: &TrainOptions,
        mode: &Mode,
        state: Option<&PreviousState>,
        procs: &Processes,
    ) -> Result<Sinks, TrainError> {
        let model_dir = match &opts.output {
            Some(output) => Some(ModelDir::create(output, &procs.run).map_err(TrainError::Setup)?),
            None => None,
        };
        let state_dir = match state {
            Some(s) if !mode.warm() || mode.checkpoint() => {
                Some(ModelDir::create_marked(&s.dir, &procs.run, &crate::state::MARKER).map_err(TrainError::Setup)?)
            }
            _ => None,
        };
        let es = match &opts.es {
            Some(es) => {
                // Update the live indices in place when they hold the state's model.
                let live = match mode.follower() {
                    Some(f) if mode.warm() => f.es_run,
                    _ => state.and_then(|s| s.es_run()),
                };
                let run = EsRun {
                    millis: procs.started,
                    id: &procs.run,
                    create: procs.process == 0,
                    workers: procs.workers,
                    live,
                };
                Some(Arc::new(EsTarget::prepare(es, &opts.engine, run).map_err(TrainError::Setup)?))
            }
            None => None,
        };
        Ok(Sinks { model_dir, state_dir, es, process: procs.process })
    }

    /// A failed run leaves no new index behind: returns `e`.
    pub fn abort(&self, e: TrainError) -> TrainError {
        if let (Some(es), 0) = (&self.es, self.process) {
            es.abort();
        }
        e
    }

    /// Publishes the model and, with `--state`, the state recording `consumed`.
    pub fn publish(
        self,
        opts: &TrainOptions,
        procs: &Processes,
        summary: &Summary,
        manifest: &serde_json::Value,
        consumed: &ConsumedInput,
    ) -> Result<Published, TrainError> {
        let _publishing = super::Publishing::begin();
        let mut es_index = None;
        if let (Some(es), 0) = (&self.es, procs.process) {
            es.publish(summary.model.documents, summary.users_indexed, manifest)
                .map_err(|e| self.abort(output_failed(e)))?;
            es_index = Some(es.model_index.clone());
        }
        // One process: one items.jsonl. Several sharing a directory: process 0
        // publishes every part. Several with their own disks: each publishes its own.
        let parts = if procs.processes == 1 { Parts::Concatenate(procs.workers) } else { Parts::Keep };
        let directory = procs.processes == 1 || procs.process == 0 || !summary.shared_output;
        if let Some(dir) = self.model_dir {
            if directory {
                let started = std::time::Instant::now();
                dir.publish(parts, manifest).map_err(output_failed)?;
                tracing::debug!(secs = started.elapsed().as_secs_f64(), "model directory published");
            } else {
                dir.detach();
            }
        }
        crate::hold::at(crate::hold::Point::Publishing);
        if let Some(dir) = self.state_dir {
            if procs.process == 0 {
                publish_state(dir, opts, procs, consumed, es_index.clone())?;
            } else {
                dir.detach();
            }
        }
        Ok(Published { directory, es_index })
    }
}

/// Publishes the state directory, once every worker's part is in it.
fn publish_state(
    dir: ModelDir,
    opts: &TrainOptions,
    procs: &Processes,
    consumed: &ConsumedInput,
    es_index: Option<String>,
) -> Result<(), TrainError> {
    let names: Vec<String> = dir
        .store()
        .list_dir(dir.tmp_path())
        .map_err(output_failed)?
        .iter()
        .map(|e| crate::storage::file_name(&e.path).to_string())
        .collect();
    if let Some(missing) = (0..procs.peers()).map(crate::state::part_name).find(|p| !names.contains(p)) {
        return Err(output_failed(format!(
            "state part {missing} is not in {}: with several hosts, --state must be a directory every host shares (HDFS)",
            dir.tmp_path()
        )));
    }
    let (fingerprint, recorded) = state_fingerprint(&opts.engine);
    let written = crate::state::StateManifest {
        producer: crate::state::PRODUCER.to_string(),
        format: crate::state::FORMAT,
        fingerprint,
        recorded,
        input_root: consumed.root.clone(),
        consumed: consumed.files.clone(),
        parts: procs.peers(),
        run: procs.run.clone(),
        written: format_iso8601(clock()),
        es_index,
    };
    let value = serde_json::to_value(&written).expect("JSON");
    dir.publish(Parts::Keep, &value).map_err(output_failed)
}
