//! Restart replay: the log is the journal. The 201 never waits for
//! Elasticsearch, so a crash, a `kill -9` or a cluster unreachable until a
//! stop leaves acknowledged events not applied, and the in-memory journal
//! of item changes is gone. So at start `ur events --es-url` reads its
//! app's events of the journal window (`--live-journal-minutes`, by
//! `creationTime`) from the closed partitions — those crash recovery just
//! closed included — and, before any new event, applies them again
//! (usage events and item changes) and re-seeds the journal with the item
//! changes, so a model published later gets them re-applied too.
//!
//! Re-applying is exact: the events are applied in log order, oldest
//! first, to the live documents, and moving each used item to the front in
//! that order leaves the items of the window first, in the order of their
//! last use, then the older ones as they were — the history the first
//! application left. New events wait until the replay is done, so none is
//! overtaken by an older one. Item changes re-applied in order leave what
//! they left. Log order is: hour partitions in time order, then, within an
//! hour, each writer's files in the order it wrote them (writers by start
//! time), each file line by line. Files are streamed, a batch at a time:
//! memory holds one batch and the journal, whatever the log's size.

use super::ops::{LiveEngine, LiveOp};
use super::{Live, LiveError, LiveOptions, Updater};
use crate::events::log::{now_millis, subdirs};
use crate::events::validate::accept;
use crate::time::{Millis, parse_iso8601};
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

/// One hour, in milliseconds.
const HOUR: Millis = 3_600_000;

/// The window's events being read from the log, a batch at a time.
pub struct Replay {
    batches: mpsc::Receiver<Vec<(Millis, LiveOp)>>,
    files: usize,
}

impl Replay {
    /// Lists the closed files of `app` under `root` that may hold events
    /// created at or after `from`, and reads them in the background into
    /// batches of at most `batch` effects.
    pub fn start(root: &Path, app: &str, engine: LiveEngine, from: Millis, batch: usize) -> Result<Replay, LiveError> {
        let files = window_files(&root.join(app), from)?;
        let (tx, batches) = mpsc::channel(2);
        let count = files.len();
        std::thread::Builder::new()
            .name("ur-live-replay".into())
            .spawn(move || {
                let read = read_window(&files, &engine, from, batch.max(1), |b| tx.blocking_send(b).is_ok());
                tracing::debug!(events = read, files = files.len(), "read the log's window");
            })
            .map_err(|e| LiveError(format!("cannot start reading the log: {e}")))?;
        Ok(Replay { batches, files: count })
    }
}

impl Live {
    /// [`Live::start`], first re-applying the events of the app's log
    /// under `root` acknowledged within the journal window (see the module).
    pub async fn start_replaying(
        options: LiveOptions,
        root: &Path,
    ) -> Result<(Live, tokio::task::JoinHandle<()>), LiveError> {
        let from = now_millis() - options.journal_for.as_millis() as Millis;
        let replay = Replay::start(root, &options.app, LiveEngine::of(&options.engine), from, options.max_batch)?;
        Live::start_after(options, Some(replay)).await
    }
}

impl Updater {
    /// Applies the replay's batches one after the other, each written
    /// (retried until it is) before the next is taken; item changes go to
    /// the journal too.
    pub(super) async fn replay(&mut self, mut replay: Replay) {
        // The live model first: item changes are written to it.
        self.watch().await;
        let (mut events, mut items) = (0u64, 0u64);
        while let Some(batch) = replay.batches.recv().await {
            events += batch.len() as u64;
            items += batch.iter().filter(|(_, op)| matches!(op, LiveOp::Item { .. })).count() as u64;
            self.take(batch);
            while !self.pending.is_empty() {
                if let Some(at) = self.retry_at {
                    tokio::time::sleep_until(at).await;
                }
                self.flush().await;
            }
        }
        self.stats.recovered.fetch_add(events, Ordering::Relaxed);
        tracing::info!(
            events,
            item_changes = items,
            files = replay.files,
            journal = self.journal.len(),
            "re-applied the log's events of the journal window"
        );
    }
}

/// The closed event files under `app_dir` of the hours that can hold
/// events created at or after `from`, in log order.
fn window_files(app_dir: &Path, from: Millis) -> Result<Vec<PathBuf>, LiveError> {
    let err = |e: crate::events::log::LogError| LiveError(e.to_string());
    let mut out = Vec::new();
    for date in subdirs(app_dir).map_err(err)? {
        for hour in subdirs(&date).map_err(err)? {
            // A file of hour H holds events written in H, created no later.
            if hour_start(&date, &hour).is_some_and(|start| start + HOUR <= from) {
                continue;
            }
            let entries = std::fs::read_dir(&hour).map_err(|e| LiveError(format!("{}: {e}", hour.display())))?;
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with(['_', '.'])))
                .collect();
            files.sort_by_key(|p| write_order(p.file_name().and_then(|n| n.to_str()).unwrap_or_default()));
            out.extend(files);
        }
    }
    Ok(out)
}

/// The start of a `date=YYYY-MM-DD/hour=HH` partition.
fn hour_start(date: &Path, hour: &Path) -> Option<Millis> {
    let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
    let (date, hour) = (name(date)?, name(hour)?);
    let (date, hour) = (date.strip_prefix("date=")?.to_string(), hour.strip_prefix("hour=")?.to_string());
    parse_iso8601(&format!("{date}T{hour}:00:00Z"))
}

/// `part-<host>-<start>-<pid>-<seq>.jsonl` → (start, pid, seq, host):
/// one writer's files in the order it wrote them, writers by start time.
/// Other names come first, by name.
fn write_order(name: &str) -> (u64, u64, u64, String) {
    let parsed = name.strip_prefix("part-").and_then(|n| n.strip_suffix(".jsonl")).and_then(|core| {
        let mut f = core.rsplitn(4, '-');
        let (seq, pid, start) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
        Some((start, pid, seq, f.next()?.to_string()))
    });
    parsed.unwrap_or_else(|| (0, 0, 0, name.to_string()))
}

/// Streams the live effects of the events of `files` created at or after
/// `from`, in order, to `send` in batches of `batch`; stops when `send`
/// says no. Unreadable files are logged and skipped. Returns how many
/// effects were sent.
fn read_window(
    files: &[PathBuf],
    engine: &LiveEngine,
    from: Millis,
    batch: usize,
    mut send: impl FnMut(Vec<(Millis, LiveOp)>) -> bool,
) -> u64 {
    let mut sent = 0;
    let mut out = Vec::with_capacity(batch);
    let mut line = Vec::new();
    for path in files {
        let mut reader = match std::fs::File::open(path) {
            Ok(f) => std::io::BufReader::new(f),
            Err(e) => {
                tracing::warn!("replaying the log: {}: {e}; skipped", path.display());
                continue;
            }
        };
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("replaying the log: {}: {e}; the rest of the file is skipped", path.display());
                    break;
                }
            }
            let Some(effect) = effect_of(&line, engine, from) else { continue };
            out.push(effect);
            if out.len() >= batch {
                sent += out.len() as u64;
                if !send(std::mem::replace(&mut out, Vec::with_capacity(batch))) {
                    return sent;
                }
            }
        }
    }
    if !out.is_empty() {
        sent += out.len() as u64;
        send(out);
    }
    sent
}

/// A stored line's live effect, with its `creationTime`, if it was
/// created at or after `from` and has one.
fn effect_of(line: &[u8], engine: &LiveEngine, from: Millis) -> Option<(Millis, LiveOp)> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let created = v["creationTime"].as_str().and_then(parse_iso8601)?;
    if created < from {
        return None;
    }
    let id = v["eventId"].as_str().unwrap_or_default().to_string();
    let accepted = accept(&v, created, id).ok()?;
    Some((created, engine.op_of(&accepted)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Engine;
    use crate::events::live::ops::{self, ItemOp, Stored};
    use crate::time::format_iso8601;
    use serde_json::{Map, json};
    use std::collections::HashMap;

    fn engine() -> LiveEngine {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/handmade.json")).unwrap();
        LiveEngine::of(&Engine::from_json(&text).unwrap().engine)
    }

    /// A stored line created at `at`.
    fn stored(at: Millis, event: Value) -> String {
        let mut event = event;
        event["creationTime"] = json!(format_iso8601(at));
        accept(&event, at, format!("e{at}")).unwrap().line
    }

    fn buy(user: &str, item: &str) -> Value {
        json!({"event": "purchase", "entityType": "user", "entityId": user, "targetEntityType": "item", "targetEntityId": item})
    }

    #[test]
    fn the_window_in_log_order() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("shop");
        let h12 = 1_768_478_400_000; // 2026-01-15T12:00Z
        let write = |hour: Millis, name: &str, lines: &[String]| {
            let d = app.join(crate::events::log::partition_of(hour));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        };
        // Hour 10 ends before the window; hour 12 has an event just before it.
        write(h12 - 2 * HOUR, "part-h-1-1-000001.jsonl", &[stored(h12 - 2 * HOUR, buy("u", "old"))]);
        write(h12, "part-h-1-1-000001.jsonl", &[stored(h12 + 5, buy("u", "early")), stored(h12 + 20, buy("u", "a"))]);
        // The same writer's next file, and a later writer (another host, sorting first by name).
        write(h12, "part-h-1-1-000002.jsonl", &[stored(h12 + 30, buy("u", "b"))]);
        write(
            h12,
            "part-a-9-2-000001.jsonl",
            &[stored(h12 + 40, json!({"event": "$delete", "entityType": "item", "entityId": "a"}))],
        );
        write(h12, "_inprogress-3-1-000001@h@boot", &[stored(h12 + 50, buy("u", "open"))]);
        write(h12 + HOUR, "part-h-1-1-000003.jsonl", &[stored(h12 + HOUR, buy("u", "c")), "{torn".into()]);
        let files = window_files(&app, h12 + 10).unwrap();
        assert_eq!(files.len(), 4, "{files:?}");
        let mut got = Vec::new();
        let sent = read_window(&files, &engine(), h12 + 10, 2, |b| {
            assert!(b.len() <= 2);
            got.extend(b);
            true
        });
        assert_eq!(sent, 4);
        let usage = |item: &str| LiveOp::Usage { user: "u".into(), field: 0, item: item.into() };
        let delete = LiveOp::Item { item: "a".into(), op: ItemOp::Delete };
        assert_eq!(
            got,
            vec![(h12 + 20, usage("a")), (h12 + 30, usage("b")), (h12 + 40, delete), (h12 + HOUR, usage("c"))]
        );
    }

    #[test]
    fn write_order_of_names() {
        assert_eq!(write_order("part-my-host-1700-42-000003.jsonl"), (1700, 42, 3, "my-host".into()));
        assert!(write_order("part-h-1700-42-000010.jsonl") > write_order("part-h-1700-42-000009.jsonl"));
        assert!(write_order("part-a-1800-1-000001.jsonl") > write_order("part-z-1700-42-000009.jsonl"));
        assert_eq!(write_order("part-00000.jsonl"), (0, 0, 0, "part-00000.jsonl".into()));
    }

    /// Re-applying a window's usage events, in order, to the history they
    /// already made changes nothing — also on top of a history applied
    /// only in part (a crash in the middle), and at the cap.
    #[test]
    fn replay_in_log_order_is_exact() {
        let e = engine();
        let usage = |item: &str| LiveOp::Usage { user: "u".into(), field: 1, item: item.into() };
        let older = ["x", "y", "z", "b"];
        let window: Vec<LiveOp> = ["a", "b", "c", "a", "d", "b"].iter().map(|i| usage(i)).collect();
        let apply = |doc: Option<Map<String, Value>>, ops: &[LiveOp]| -> Map<String, Value> {
            let current: HashMap<String, Stored> = doc
                .map(|source| HashMap::from([("u".to_string(), Stored { source, seq_no: 1, primary_term: 1 })]))
                .unwrap_or_default();
            let mut out = Vec::new();
            ops::bulk_body(&mut out, &e, "live", None, ops, &current);
            let text = String::from_utf8(out).unwrap();
            match text.lines().nth(1) {
                Some(doc) => serde_json::from_str::<Value>(doc).unwrap().as_object().unwrap().clone(),
                None => current.get("u").map(|s| s.source.clone()).unwrap_or_default(),
            }
        };
        let before = apply(None, &older.iter().map(|i| usage(i)).collect::<Vec<_>>());
        let original = apply(Some(before.clone()), &window);
        assert_eq!(original["view"], json!(["b", "d", "a", "c", "z", "y", "x"]));
        assert_eq!(apply(Some(original.clone()), &window), original, "re-applied after all of it");
        for cut in 0..window.len() {
            let partial = apply(Some(before.clone()), &window[..cut]);
            assert_eq!(apply(Some(partial), &window), original, "re-applied after {cut} of it");
        }
    }
}
