//! What a run reads: the input listing, the previous state (if any), the
//! files neither it nor a follower's model has consumed, and the files in
//! the model after the run.

use super::{Mode, TrainError, TrainOptions};
use crate::config::Engine;
use crate::dataflow::Failure;
use crate::dataflow::{StateIn, read::ReadPlan};
use crate::source::{InputFile, list_inputs};
use crate::state::{Consumed, StateError};
use crate::storage::Store;

/// The input of a run.
pub(super) struct Selection {
    /// Where the input is.
    pub store: Store,
    /// The files to read: those not consumed yet.
    pub inputs: Vec<InputFile>,
    /// The state directory, with `--state`.
    pub state: Option<PreviousState>,
    /// The files in the model after this run, sorted by path.
    pub consumed_after: Vec<Consumed>,
}

/// Lists the input and selects the files not consumed yet; `None`: a warm
/// follower found none and has no checkpoint to write.
pub(super) fn select(opts: &TrainOptions, mode: &Mode) -> Result<Option<Selection>, TrainError> {
    let (store, all_inputs) = list_inputs(&opts.input).map_err(TrainError::Setup)?;
    let is_first = opts.cluster.as_ref().is_none_or(|c| c.process == 0);
    let warm = mode.warm();
    let state = match &opts.state {
        None => None,
        Some(dir) => {
            Some(PreviousState::open(dir, &opts.engine, opts.full && !warm, is_first && matches!(mode, Mode::Once))?)
        }
    };
    // Consumed before this run: by the follower's model, else by the state.
    let consumed_before = match (mode.follower(), &state) {
        (Some(f), _) if warm => Some(f.consumed.clone()),
        (_, Some(s)) => Some(s.consumed()),
        _ => None,
    };
    let new: Vec<usize> = match &consumed_before {
        Some(consumed) => crate::state::new_files(&all_inputs, consumed).map_err(TrainError::Setup)?,
        None => (0..all_inputs.len()).collect(),
    };
    let inputs: Vec<InputFile> = new.iter().map(|&f| all_inputs[f].clone()).collect();
    if warm && inputs.is_empty() && !mode.checkpoint() {
        return Ok(None);
    }
    let mut consumed_after = consumed_before.unwrap_or_default();
    consumed_after.extend(inputs.iter().map(|f| Consumed { path: f.path.clone(), len: f.len, mtime: f.mtime }));
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
    Ok(Some(Selection { store, inputs, state, consumed_after }))
}

/// A hash of the files a run reads.
pub(super) fn listing_hash(inputs: &[InputFile]) -> u64 {
    let mut h = 0u64;
    for f in inputs {
        h = crate::hash::mix(h ^ xxhash_rust::xxh3::xxh3_64(f.path.as_bytes()) ^ f.len.rotate_left(17));
    }
    h
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
pub(super) struct PreviousState {
    pub dir: String,
    store: Store,
    pub manifest: Option<crate::state::StateManifest>,
    _lock: Option<crate::state::lock::StateLock>,
}

impl PreviousState {
    /// Refusals are setup errors (exit 2); a damaged state fails the run
    /// (exit 1) unless `--full` replaces it without reading it.
    fn open(dir: &str, engine: &Engine, full: bool, lock: bool) -> Result<PreviousState, TrainError> {
        if engine.event_window_secs.is_some() {
            return Err(TrainError::Setup(
                "--state cannot be used with datasource.params.eventWindow: a state keeps every event".into(),
            ));
        }
        let (store, dir) = Store::resolve(dir).map_err(|e| TrainError::Setup(format!("--state {e}")))?;
        let lock = match lock {
            true => Some(crate::state::lock::StateLock::acquire(&store, &dir).map_err(TrainError::Setup)?),
            false => None,
        };
        let manifest = match full {
            true => None,
            false => crate::state::open_manifest(&store, &dir).map_err(|e| match e {
                StateError::Storage(e) => TrainError::Setup(e),
                e => TrainError::Failed(Failure::Input(e.to_string())),
            })?,
        };
        let manifest = match manifest {
            Some(m) => {
                let (fingerprint, recorded) = state_fingerprint(engine);
                if m.fingerprint != fingerprint {
                    return Err(TrainError::Setup(format!(
                        "the state in {dir} was written for another engine configuration (it records {}, this engine needs {}): \
                         rebuild it with --full",
                        m.recorded, recorded
                    )));
                }
                Some(m)
            }
            None => None,
        };
        Ok(PreviousState { dir, store, manifest, _lock: lock })
    }

    /// The files the state's model was trained on.
    pub fn consumed(&self) -> Vec<Consumed> {
        self.manifest.as_ref().map(|m| m.consumed.clone()).unwrap_or_default()
    }

    /// Where the workers read the state from.
    pub fn resume(&self) -> Option<StateIn> {
        self.manifest.as_ref().map(|m| StateIn { store: self.store.clone(), dir: self.dir.clone(), parts: m.parts })
    }

    /// The run whose Elasticsearch indices hold this state's model.
    pub fn es_run(&self) -> Option<i64> {
        let index = self.manifest.as_ref()?.es_index.as_ref()?;
        index.rsplit('_').next()?.parse().ok()
    }
}
