//! Live updates for a batch job (`ur import --es-url`): every stored
//! event's effect is queued, waiting for room rather than dropped, and the
//! job waits until they are all applied — or until none has been for a
//! while (Elasticsearch failing) — and says how it went.

use super::Live;
use super::ops::LiveOp;
use crate::events::log::now_millis;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// How a batch job's live updates ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Effects queued.
    pub queued: u64,
    /// Effects written (or refused by Elasticsearch, see `refused`).
    pub applied: u64,
    /// Actions Elasticsearch refused (e.g. `$delete` of a missing item).
    pub refused: u64,
    /// Bulk requests that failed and were retried.
    pub write_failures: u64,
}

impl Drained {
    /// Whether every queued effect was applied.
    pub fn complete(&self) -> bool {
        self.applied >= self.queued
    }
}

impl Live {
    /// Queues the effects of stored events, waiting while the queue is
    /// full. From a thread outside the async runtime.
    pub fn send_blocking(&self, ops: Vec<LiveOp>) {
        if ops.is_empty() {
            return;
        }
        let n = ops.len() as u64;
        let now = now_millis();
        if self.tx.blocking_send(ops.into_iter().map(|op| (now, op)).collect()).is_ok() {
            self.stats.queued.fetch_add(n, Ordering::Relaxed);
        } else {
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Waits until every queued effect is applied, or none has been for
    /// `stalled`; then stops the background `task`.
    pub async fn drain(self, task: tokio::task::JoinHandle<()>, stalled: Duration) -> Drained {
        let stats = self.stats.clone();
        let applied = || stats.applied.load(Ordering::Relaxed);
        let mut last = (applied(), Instant::now());
        while applied() < stats.queued.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = applied();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= stalled {
                break;
            }
        }
        // Closing the queue ends the task (after one more try if some are pending).
        drop(self);
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        Drained {
            queued: stats.queued.load(Ordering::Relaxed) + stats.dropped.load(Ordering::Relaxed),
            applied: applied(),
            refused: stats.refused.load(Ordering::Relaxed),
            write_failures: stats.write_failures.load(Ordering::Relaxed),
        }
    }
}
