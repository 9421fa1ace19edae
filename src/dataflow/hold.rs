//! A test hook for the fault matrix (`scripts/faults.sh`). With
//! `UR_TRAIN_TEST_HOLD=FILE` in its environment, every worker of a process
//! stops mid-co-occurrence (its rows received, its block not yet
//! correlated), logs "holding mid-co-occurrence" and waits until FILE
//! exists. A fault injected while it holds is certain to hit the run
//! mid-co-occurrence, however fast the run is; the other processes wait for
//! it in the next exchange, as they would for a slow peer. Unset (always, in
//! production), this costs one environment lookup per run.

use std::path::PathBuf;
use std::time::Duration;

/// The environment variable naming the file a holding worker waits for.
pub const HOLD_ENV: &str = "UR_TRAIN_TEST_HOLD";

/// Holds this worker while `UR_TRAIN_TEST_HOLD` names a file that does not
/// exist yet; returns at once when it is unset or empty.
pub(super) fn mid_cooccurrence(worker: usize) {
    let Some(file) = std::env::var_os(HOLD_ENV).filter(|f| !f.is_empty()).map(PathBuf::from) else { return };
    tracing::warn!(worker, file = %file.display(), "holding mid-co-occurrence ({HOLD_ENV})");
    while !file.exists() {
        std::thread::park_timeout(Duration::from_millis(20));
    }
}
