//! Test hooks for the fault matrix (`scripts/faults.sh`) and the cluster
//! tests: holding a run at a known point. With `UR_TRAIN_TEST_HOLD=FILE` in
//! its environment, a process stops at the point `UR_TRAIN_TEST_HOLD_AT`
//! names (default `co-occurrence`), logs "holding mid-POINT" and waits
//! until FILE exists:
//! - `co-occurrence`: every worker, its rows received and its block not yet
//!   correlated; the other processes wait for it in the next exchange, as
//!   they would for a slow peer (its heartbeats go on);
//! - `publishing`: the process publishing, between the model directory and
//!   the state.
//!
//! A fault injected while it holds is certain to hit the run there, however
//! fast the run is. Unset (always, in production), a point costs one
//! environment lookup.

use std::path::PathBuf;
use std::time::Duration;

/// The environment variable naming the file a holding process waits for.
pub const HOLD_ENV: &str = "UR_TRAIN_TEST_HOLD";
/// The environment variable naming the point to hold at.
pub const HOLD_AT_ENV: &str = "UR_TRAIN_TEST_HOLD_AT";

/// Where a run can be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    CoOccurrence,
    Publishing,
}

impl Point {
    pub fn name(self) -> &'static str {
        match self {
            Point::CoOccurrence => "co-occurrence",
            Point::Publishing => "publishing",
        }
    }
}

/// Holds the caller at `point` while `UR_TRAIN_TEST_HOLD` names a file that
/// does not exist yet; returns at once when it is unset or empty, or names
/// another point.
pub fn at(point: Point, worker: usize) {
    let Some(file) = std::env::var_os(HOLD_ENV).filter(|f| !f.is_empty()).map(PathBuf::from) else { return };
    let wanted = std::env::var(HOLD_AT_ENV).unwrap_or_else(|_| Point::CoOccurrence.name().to_string());
    if wanted != point.name() {
        return;
    }
    tracing::warn!(worker, file = %file.display(), "holding mid-{} ({HOLD_ENV})", point.name());
    while !file.exists() {
        std::thread::park_timeout(Duration::from_millis(20));
    }
}
