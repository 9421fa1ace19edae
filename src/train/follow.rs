//! The resident trainer (`--follow`): the first tick trains (from the state
//! or all input), later ticks update the model kept in memory with the
//! files not consumed yet (see `dataflow::resident`).

use super::{Mode, TrainError, TrainOptions, Trained, run};
use crate::dataflow::resident::Follow;
use crate::state::ConsumedInput;
use crate::state::lock::StateLock;
use std::sync::Arc;

/// A resident trainer, ticked by its caller.
pub struct Follower {
    pub(super) shared: Arc<Follow>,
    /// The files in the resident model, once a tick trained.
    pub(super) consumed: Option<ConsumedInput>,
    /// Ticks that trained or updated.
    pub ticks: u64,
    /// The run whose Elasticsearch indices the updates write in place.
    pub(super) es_run: Option<i64>,
    _lock: Option<StateLock>,
}

/// `--drift`: a fraction ≥ 0.
pub fn check_drift(drift: f64) -> Result<f64, TrainError> {
    if drift >= 0.0 && drift.is_finite() {
        Ok(drift)
    } else {
        Err(TrainError::Setup(format!("--drift {drift}: must be a fraction ≥ 0")))
    }
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
        check_drift(drift)?;
        // The state is this process's for as long as it follows.
        let lock = match &opts.state {
            Some(dir) => {
                let (store, dir) =
                    crate::storage::Store::resolve(dir).map_err(|e| TrainError::Setup(format!("--state {e}")))?;
                Some(StateLock::acquire(&store, &dir).map_err(TrainError::Setup)?)
            }
            None => None,
        };
        Ok(Follower {
            shared: Arc::new(Follow::new(opts.workers.max(1), drift)),
            consumed: None,
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
        let result = run(opts, Mode::Tick { follower: self, checkpoint });
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

    /// After a published tick: the model holds `consumed`, in the indices
    /// of `es_run` when indexed into Elasticsearch.
    pub(super) fn ticked(&mut self, consumed: ConsumedInput, es_run: Option<i64>) {
        self.consumed = Some(consumed);
        self.ticks += 1;
        self.es_run = es_run;
    }
}
