//! Test hooks for the fault matrix (`scripts/faults.sh`) and the tests:
//! holding a run at a known point. With `UR_TRAIN_TEST_HOLD=FILE` in its
//! environment, a process stops at the point `UR_TRAIN_TEST_HOLD_AT` names
//! (default `co-occurrence`), logs "holding mid-POINT" and waits until FILE
//! exists:
//! - `reading`: the first worker to have read a unit of its input with
//!   more to read (once per process);
//! - `co-occurrence`: every worker, its rows received and its block not yet
//!   correlated; the other processes wait for it in the next exchange, as
//!   they would for a slow peer (its heartbeats go on);
//! - `bulk`: the first worker whose bulk request to Elasticsearch was
//!   acknowledged while it has more documents to send (once per process);
//! - `publishing`: the process publishing, between the model directory and
//!   the state.
//!
//! A fault injected while it holds is certain to hit the run there, however
//! fast the run is. Unset (always, in production), a point costs one
//! environment lookup.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// The environment variable naming the file a holding process waits for.
pub const HOLD_ENV: &str = "UR_TRAIN_TEST_HOLD";
/// The environment variable naming the point to hold at.
pub const HOLD_AT_ENV: &str = "UR_TRAIN_TEST_HOLD_AT";

/// Where a run can be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Reading,
    CoOccurrence,
    Bulk,
    Publishing,
}

impl Point {
    pub fn name(self) -> &'static str {
        match self {
            Point::Reading => "reading",
            Point::CoOccurrence => "co-occurrence",
            Point::Bulk => "bulk",
            Point::Publishing => "publishing",
        }
    }
}

/// Holds the caller at `point` while `UR_TRAIN_TEST_HOLD` names a file that
/// does not exist yet; returns at once when it is unset or empty, or names
/// another point.
pub fn at(point: Point) {
    let Some(file) = held_until(point) else { return };
    tracing::warn!(file = %file.display(), "holding mid-{} ({HOLD_ENV})", point.name());
    while !file.exists() {
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// [`at`], for the first caller of the process only.
pub fn once(point: Point) {
    static HELD: AtomicU8 = AtomicU8::new(0);
    let bit = 1 << point as u8;
    if held_until(point).is_some() && HELD.fetch_or(bit, Ordering::SeqCst) & bit == 0 {
        at(point);
    }
}

/// The file to wait for, if the run is to hold at `point`.
fn held_until(point: Point) -> Option<PathBuf> {
    let file = std::env::var_os(HOLD_ENV).filter(|f| !f.is_empty()).map(PathBuf::from)?;
    let wanted = std::env::var(HOLD_AT_ENV).unwrap_or_else(|_| Point::CoOccurrence.name().to_string());
    (wanted == point.name()).then_some(file)
}
