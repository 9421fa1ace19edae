//! What a run reads: the input listing, the previous state (if any), the
//! files neither it nor a follower's model has consumed, and the files in
//! the model after the run.

use super::{Mode, TrainError, TrainOptions};
use crate::config::Engine;
use crate::dataflow::Failure;
use crate::dataflow::{StateIn, read::ReadPlan};
use crate::source::root::InputRoot;
use crate::source::{InputFile, Listing, list_inputs};
use crate::state::{Consumed, ConsumedInput, StateError};
use crate::storage::Store;

/// The input of a run.
pub(super) struct Selection {
    /// Where the input is.
    pub store: Store,
    /// The files to read: those not consumed yet.
    pub inputs: Vec<InputFile>,
    /// The state directory, with `--state`.
    pub state: Option<PreviousState>,
    /// The files in the model after this run.
    pub consumed_after: ConsumedInput,
}

/// Lists the input and selects the files not consumed yet; `None`: a warm
/// follower found none and has no checkpoint to write.
pub(super) fn select(opts: &TrainOptions, mode: &Mode) -> Result<Option<Selection>, TrainError> {
    let Listing { store, root, files: all_inputs } = list_inputs(&opts.input).map_err(TrainError::Setup)?;
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
        (Some(f), _) if warm => f.consumed.clone(),
        (_, Some(s)) => s.consumed(),
        _ => None,
    };
    if let Some(before) = &consumed_before {
        check_root(opts, state.as_ref().filter(|_| !warm), &before.root, &root)?;
    }
    let new: Vec<usize> = match &consumed_before {
        Some(consumed) => crate::state::new_files(&all_inputs, &consumed.files).map_err(TrainError::Setup)?,
        None => (0..all_inputs.len()).collect(),
    };
    let inputs: Vec<InputFile> = new.iter().map(|&f| all_inputs[f].clone()).collect();
    if warm && inputs.is_empty() && !mode.checkpoint() {
        return Ok(None);
    }
    let mut files = consumed_before.map(|c| c.files).unwrap_or_default();
    files.extend(inputs.iter().map(|f| Consumed { path: f.relative.clone(), len: f.len, mtime: f.mtime }));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let consumed_after = ConsumedInput { root, files };
    if let Some(s) = &state {
        tracing::info!(
            new_files = inputs.len(),
            consumed = s.consumed().map_or(0, |c| c.files.len()),
            resumed = s.manifest.is_some(),
            "state {}",
            s.dir
        );
    }
    Ok(Some(Selection { store, inputs, state, consumed_after }))
}

/// Files consumed from `before` are named relative to it: another root is
/// refused (exit 2), however the same root is spelt. `state`: the state
/// they were read from (else a follower's model).
fn check_root(
    opts: &TrainOptions,
    state: Option<&PreviousState>,
    before: &InputRoot,
    root: &InputRoot,
) -> Result<(), TrainError> {
    if before.same(root) {
        return Ok(());
    }
    let whose = match state {
        Some(s) => format!("the state in {} was trained on", s.dir),
        None => "the model this follower holds was trained on".to_string(),
    };
    Err(TrainError::Setup(format!(
        "--input {}: {whose} the files under {before}, this input is {root}: a state follows one input. \
         Give --input {before}, or retrain from {root} with --full (the state is then rebuilt from it)",
        opts.input
    )))
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

    /// The files the state's model was trained on, if it has one.
    pub fn consumed(&self) -> Option<ConsumedInput> {
        let m = self.manifest.as_ref()?;
        Some(ConsumedInput { root: m.input_root.clone(), files: m.consumed.clone() })
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
