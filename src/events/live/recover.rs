//! Restart replay: the log is the journal. The 201 never waits for
//! Elasticsearch, so a crash, a `kill -9` or a cluster unreachable until a
//! stop leaves acknowledged events not applied, and the in-memory journal
//! of item changes is gone. So at start `ur events --es-url` reads its
//! app's events of the journal window (`--live-journal-minutes`, by
//! `creationTime`) from the closed partitions — those crash recovery just
//! closed included — re-seeds the journal with the item changes, so a
//! model published later gets them re-applied too, and, before any new
//! event, applies again the events not known to be applied: those created
//! since the **checkpoint**. Each server records, at most once a second
//! after a write succeeds, a time before which every event it took was
//! applied, less ten seconds for the time between an event's creation and
//! its hand-over (`<root>/<app>/.live-applied-<host>@<port>`, the port it
//! is configured to listen on: one file per server, kept across its
//! restarts), and at a clean stop the stop time itself (every event it
//! logged was handed over and applied); a start replays from
//! the oldest checkpoint of the app's servers (a server that stopped for
//! good leaves an old one: more is replayed, never less), or the whole
//! window when there is none. Lines of hours wholly before the checkpoint
//! are only searched for item changes, so a long log is read at disk speed;
//! a usage event's line is read for the few members its effect depends on
//! (a stored line was accepted: it is not validated again).
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
/// How much earlier than its hand-over to the live task an event may have
/// been created (validation, the log's group commit: milliseconds), with
/// room to spare.
pub const CHECKPOINT_MARGIN: Millis = 10_000;

/// A batch of the window's effects: to apply, or only to remember in the
/// journal (created before the checkpoint: applied already).
pub enum ReplayBatch {
    Apply(Vec<(Millis, LiveOp)>),
    Seed(Vec<(Millis, LiveOp)>),
}

/// The window's events being read from the log, a batch at a time.
pub struct Replay {
    batches: mpsc::Receiver<ReplayBatch>,
    files: usize,
}

/// Checkpoint files start so.
const CHECKPOINT_PREFIX: &str = ".live-applied-";

/// Where the server of this host configured to listen on `port` records
/// its checkpoint for `app`: one file per server, the same at each of its
/// starts (`<host>@0` for every server of the host listening on port 0).
pub fn checkpoint_path(root: &Path, app: &str, port: u16) -> PathBuf {
    let host = &crate::storage::owner::Machine::this().host;
    root.join(app).join(format!("{CHECKPOINT_PREFIX}{host}@{port}"))
}

/// The one checkpoint of this host's servers before it had one per server.
fn shared_checkpoint_path(root: &Path, app: &str) -> PathBuf {
    root.join(app).join(format!("{CHECKPOINT_PREFIX}{}", crate::storage::owner::Machine::this().host))
}

/// The oldest checkpoint of `app`'s servers, if every one is readable.
fn oldest_checkpoint(app_dir: &Path) -> Option<Millis> {
    let mut oldest: Option<Millis> = None;
    for entry in std::fs::read_dir(app_dir).ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.starts_with(CHECKPOINT_PREFIX) && !n.ends_with(".tmp")) {
            continue;
        }
        let at: Millis = std::fs::read_to_string(entry.path()).ok()?.trim().parse().ok()?;
        oldest = Some(oldest.map_or(at, |o| o.min(at)));
    }
    oldest
}

/// Before when the app's events were applied: the oldest checkpoint of its
/// servers; for a server without one, the oldest of the others' or now if
/// none (live history turned on now), recorded at once, so a crash before
/// the first write replays from there. Events written while live history
/// was off reach histories at the next training. The host's shared
/// checkpoint of an earlier version counts once, then becomes the first
/// server's own (or goes).
fn applied_before(root: &Path, app: &str, port: u16, from: Millis) -> Result<Millis, LiveError> {
    let path = checkpoint_path(root, app, port);
    let shared = shared_checkpoint_path(root, app);
    let io = |p: &Path, e: std::io::Error| LiveError(format!("{}: {e}", p.display()));
    let oldest = oldest_checkpoint(&root.join(app));
    if shared.exists() {
        let moved = if path.exists() { std::fs::remove_file(&shared) } else { std::fs::rename(&shared, &path) };
        moved.map_err(|e| io(&shared, e))?;
    }
    let at = match oldest {
        Some(at) if path.exists() => at,
        other => {
            let at = other.unwrap_or(Millis::MAX).min(now_millis());
            std::fs::create_dir_all(root.join(app)).map_err(|e| io(root, e))?;
            write_checkpoint(&path, at).map_err(|e| io(&path, e))?;
            at
        }
    };
    Ok(at.max(from))
}

/// Records that every event created before `at` was applied (a stale or
/// missing file only makes a start replay more).
pub fn write_checkpoint(path: &Path, at: Millis) -> std::io::Result<()> {
    // The whole name and `.tmp`: host names have dots.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, at.to_string())?;
    std::fs::rename(&tmp, path)
}

impl Replay {
    /// Lists the closed files of `app` under `root` that may hold events
    /// created at or after `from`, and reads them in the background into
    /// batches of at most `batch` effects.
    pub fn start(
        root: &Path,
        app: &str,
        port: u16,
        engine: LiveEngine,
        from: Millis,
        batch: usize,
    ) -> Result<Replay, LiveError> {
        let files = window_files(&root.join(app), from)?;
        let applied_before = applied_before(root, app, port, from)?;
        let (tx, batches) = mpsc::channel(2);
        let count = files.len();
        std::thread::Builder::new()
            .name("ur-live-replay".into())
            .spawn(move || {
                let window = Window { from, applied_before, batch: batch.max(1) };
                let read = read_window(&files, &engine, &window, |b| tx.blocking_send(b).is_ok());
                tracing::debug!(events = read, files = files.len(), applied_before, "read the log's window");
            })
            .map_err(|e| LiveError(format!("cannot start reading the log: {e}")))?;
        Ok(Replay { batches, files: count })
    }
}

impl Live {
    /// [`Live::start`], first re-applying the events of the app's log
    /// under `root` acknowledged within the journal window (see the module);
    /// `port`, the one the server is configured to listen on, names its
    /// checkpoint.
    pub async fn start_replaying(
        options: LiveOptions,
        root: &Path,
        port: u16,
    ) -> Result<(Live, tokio::task::JoinHandle<()>), LiveError> {
        let from = now_millis() - options.journal_for.as_millis() as Millis;
        let engine = LiveEngine::of(&options.engine);
        let replay = Replay::start(root, &options.app, port, engine, from, options.max_batch)?;
        let checkpoint = checkpoint_path(root, &options.app, port);
        Live::start_after(options, Some((replay, checkpoint))).await
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
            let batch = match batch {
                ReplayBatch::Seed(seeds) => {
                    items += seeds.len() as u64;
                    self.seed(seeds);
                    continue;
                }
                ReplayBatch::Apply(batch) => batch,
            };
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

/// What of the log a replay reads.
struct Window {
    /// Events created before this are not read (the journal window).
    from: Millis,
    /// Events created before this were applied: only item changes are
    /// taken, for the journal.
    applied_before: Millis,
    /// Effects per batch.
    batch: usize,
}

/// Streams the live effects of the events of `files` created at or after
/// `window.from`, in order, to `send` in batches; stops when `send` says
/// no. Unreadable files are logged and skipped. Returns how many effects
/// were sent.
fn read_window(
    files: &[PathBuf],
    engine: &LiveEngine,
    window: &Window,
    mut send: impl FnMut(ReplayBatch) -> bool,
) -> u64 {
    let mut sent = 0;
    let (mut apply, mut seed) = (Vec::new(), Vec::new());
    let mut line = Vec::new();
    let item_change = memchr::memmem::Finder::new(b"\"event\":\"$");
    for path in files {
        // Lines of an hour wholly before the checkpoint: only item changes matter.
        let seed_only = hour_of(path).is_some_and(|start| start + HOUR <= window.applied_before);
        let mut reader = match std::fs::File::open(path) {
            Ok(f) => std::io::BufReader::with_capacity(1 << 20, f),
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
            if seed_only && item_change.find(&line).is_none() {
                continue;
            }
            let Some((at, op)) = effect_of(&line, engine, window.from) else { continue };
            if at >= window.applied_before {
                if !seed.is_empty() && !send(ReplayBatch::Seed(std::mem::take(&mut seed))) {
                    return sent;
                }
                apply.push((at, op));
            } else if matches!(op, LiveOp::Item { .. }) {
                if !apply.is_empty() && !send(ReplayBatch::Apply(std::mem::take(&mut apply))) {
                    return sent;
                }
                seed.push((at, op));
            } else {
                continue;
            }
            sent += 1;
            let full = |v: &Vec<_>| v.len() >= window.batch;
            if (full(&apply) && !send(ReplayBatch::Apply(std::mem::take(&mut apply))))
                || (full(&seed) && !send(ReplayBatch::Seed(std::mem::take(&mut seed))))
            {
                return sent;
            }
        }
    }
    if !seed.is_empty() && !send(ReplayBatch::Seed(seed)) {
        return sent;
    }
    if !apply.is_empty() {
        send(ReplayBatch::Apply(apply));
    }
    sent
}

/// The start of the hour partition a file is in.
fn hour_of(file: &Path) -> Option<Millis> {
    let hour = file.parent()?;
    hour_start(hour.parent()?, hour)
}

/// A stored line's live effect, with its `creationTime`, if it was
/// created at or after `from` and has one. A usage event's line is read
/// for its few members only ([`usage_effect_of`]); any other line is
/// accepted again, as the server accepted it.
fn effect_of(line: &[u8], engine: &LiveEngine, from: Millis) -> Option<(Millis, LiveOp)> {
    if let Ok(head) = serde_json::from_slice::<Head>(line)
        && !head.event.starts_with('$')
    {
        return usage_effect_of(head, engine, from);
    }
    accepted_effect_of(line, engine, from)
}

/// The members of a stored line that a usage event's effect depends on
/// (strings, or the line is read whole).
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(rename = "entityType", borrow)]
    entity_type: std::borrow::Cow<'a, str>,
    #[serde(rename = "entityId", borrow)]
    entity_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "targetEntityType", borrow, default)]
    target_entity_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "targetEntityId", borrow, default)]
    target_entity_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "creationTime", borrow)]
    creation_time: std::borrow::Cow<'a, str>,
}

/// A usage event's effect: what [`LiveEngine::op_of`] makes of the event
/// accepted. A stored line is an accepted event's line, which accepting
/// again gives back, so the validation is not done again (see the test
/// `usage_lines_read_for_their_members_as_accepted`).
fn usage_effect_of(head: Head, engine: &LiveEngine, from: Millis) -> Option<(Millis, LiveOp)> {
    let created = parse_iso8601(&head.creation_time)?;
    if created < from {
        return None;
    }
    let accepted = crate::events::validate::Accepted {
        event_id: String::new(),
        event: head.event.into_owned(),
        entity_type: head.entity_type.into_owned(),
        entity_id: head.entity_id.into_owned(),
        target_entity_type: head.target_entity_type.map(std::borrow::Cow::into_owned),
        target_entity_id: head.target_entity_id.map(std::borrow::Cow::into_owned),
        properties: serde_json::Map::new(),
        event_time: created,
        line: String::new(),
    };
    Some((created, engine.op_of(&accepted)?))
}

/// A stored line's effect, the line accepted again as the server did.
fn accepted_effect_of(line: &[u8], engine: &LiveEngine, from: Millis) -> Option<(Millis, LiveOp)> {
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
        let read = |applied_before: Millis| {
            let (mut applied, mut seeded) = (Vec::new(), Vec::new());
            let window = Window { from: h12 + 10, applied_before, batch: 2 };
            let sent = read_window(&files, &engine(), &window, |b| {
                match b {
                    ReplayBatch::Apply(b) => applied.push(b),
                    ReplayBatch::Seed(b) => seeded.push(b),
                }
                true
            });
            assert!(applied.iter().chain(&seeded).all(|b| !b.is_empty() && b.len() <= 2));
            (sent, applied.concat(), seeded.concat())
        };
        let usage = |item: &str| LiveOp::Usage { user: "u".into(), field: 0, item: item.into() };
        let delete = LiveOp::Item { item: "a".into(), op: ItemOp::Delete };
        // No checkpoint: the whole window is applied.
        let everything =
            vec![(h12 + 20, usage("a")), (h12 + 30, usage("b")), (h12 + 40, delete.clone()), (h12 + HOUR, usage("c"))];
        assert_eq!(read(h12 + 10), (4, everything, vec![]));
        // Applied before h12 + 35: the usage events before it are skipped.
        let after = vec![(h12 + 40, delete.clone()), (h12 + HOUR, usage("c"))];
        assert_eq!(read(h12 + 35), (2, after, vec![]));
        // Applied before h12 + 45: the delete only seeds the journal.
        assert_eq!(read(h12 + 45), (2, vec![(h12 + HOUR, usage("c"))], vec![(h12 + 40, delete.clone())]));
        // Everything applied (hour 12 is read for item changes only).
        assert_eq!(read(h12 + 2 * HOUR), (1, vec![], vec![(h12 + 40, delete)]));
    }

    #[test]
    fn without_a_checkpoint_live_history_starts_now() {
        let root = tempfile::tempdir().unwrap();
        let before = now_millis();
        let first = applied_before(root.path(), "shop", 7070, 0).unwrap();
        assert!((before..=now_millis()).contains(&first));
        assert_eq!(oldest_checkpoint(&root.path().join("shop")), Some(first), "recorded at once");
        assert_eq!(applied_before(root.path(), "shop", 7070, 0).unwrap(), first, "a restart keeps it");
        assert_eq!(applied_before(root.path(), "shop", 7070, first + 5).unwrap(), first + 5, "never before the window");
    }

    /// Two servers of one host, one root: B stops with events not applied
    /// while A goes on recording; B's restart replays from B's checkpoint.
    #[test]
    fn each_server_its_checkpoint_the_oldest_governs() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (checkpoint_path(root.path(), "shop", 7070), checkpoint_path(root.path(), "shop", 7071));
        assert_ne!(a, b);
        assert_eq!(a, checkpoint_path(root.path(), "shop", 7070), "the same at every start");
        applied_before(root.path(), "shop", 7070, 0).unwrap();
        applied_before(root.path(), "shop", 7071, 0).unwrap();
        write_checkpoint(&b, 1_000).unwrap(); // B's last record, then a crash
        write_checkpoint(&a, 5_000).unwrap(); // A goes on
        write_checkpoint(&a, 9_000).unwrap();
        assert_eq!(applied_before(root.path(), "shop", 7071, 0).unwrap(), 1_000, "B's restart");
        assert_eq!(applied_before(root.path(), "shop", 7070, 0).unwrap(), 1_000, "A's too: the oldest governs");
        // A half-written record of another server is not a checkpoint.
        std::fs::write(root.path().join("shop/.live-applied-c.example.com@80.tmp"), "torn").unwrap();
        assert_eq!(oldest_checkpoint(&root.path().join("shop")), Some(1_000));
    }

    /// The host's one checkpoint of an earlier version counts once, then is
    /// the first server's own.
    #[test]
    fn the_shared_checkpoint_of_before_becomes_a_servers_own() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("shop")).unwrap();
        let shared = shared_checkpoint_path(root.path(), "shop");
        write_checkpoint(&shared, 2_000).unwrap();
        assert_eq!(applied_before(root.path(), "shop", 7070, 0).unwrap(), 2_000);
        assert!(!shared.exists());
        assert_eq!(std::fs::read_to_string(checkpoint_path(root.path(), "shop", 7070)).unwrap(), "2000");
        assert_eq!(applied_before(root.path(), "shop", 7071, 0).unwrap(), 2_000, "a second server: the oldest");
        // Left again (a server of the earlier version still ran): it counts, then goes.
        write_checkpoint(&shared, 1_500).unwrap();
        assert_eq!(applied_before(root.path(), "shop", 7070, 0).unwrap(), 1_500);
        assert!(!shared.exists());
        assert_eq!(applied_before(root.path(), "shop", 7070, 0).unwrap(), 2_000);
    }

    #[test]
    fn the_oldest_checkpoint_counts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(oldest_checkpoint(dir.path()), None);
        write_checkpoint(&dir.path().join(".live-applied-a"), 500).unwrap();
        write_checkpoint(&dir.path().join(".live-applied-b"), 300).unwrap();
        assert_eq!(oldest_checkpoint(dir.path()), Some(300));
        write_checkpoint(&dir.path().join(".live-applied-b"), 900).unwrap();
        assert_eq!(oldest_checkpoint(dir.path()), Some(500));
        std::fs::write(dir.path().join(".live-applied-c"), "torn").unwrap();
        assert_eq!(oldest_checkpoint(dir.path()), None, "an unreadable one means: replay the whole window");
    }

    /// A usage line read for its members has the effect of the line
    /// accepted again; other lines are accepted again.
    #[test]
    fn usage_lines_read_for_their_members_as_accepted() {
        let e = engine();
        let at = 1_768_478_400_000;
        let mut lines: Vec<String> = [
            buy("u", "i"),
            json!({"event": "view", "entityType": "user", "entityId": "u\\\"x", "targetEntityType": "item", "targetEntityId": "é"}),
            json!({"event": "purchase", "entityType": "user", "entityId": "u", "targetEntityType": "shop", "targetEntityId": "i"}),
            json!({"event": "purchase", "entityType": "customer", "entityId": "u", "targetEntityType": "item", "targetEntityId": "i"}),
            json!({"event": "unknown", "entityType": "user", "entityId": "u", "targetEntityType": "item", "targetEntityId": "i"}),
            json!({"event": "purchase", "entityType": "user", "entityId": "u"}),
            json!({"event": "purchase", "entityType": "user", "entityId": "u", "targetEntityType": "item", "targetEntityId": "i",
                   "properties": {"creationTime": "2000-01-01T00:00:00.000Z", "n": [1, {"a": "b"}]}, "prId": "p"}),
            json!({"event": "$set", "entityType": "item", "entityId": "i", "properties": {"category": ["a"]}}),
            json!({"event": "$delete", "entityType": "item", "entityId": "i"}),
        ]
        .into_iter()
        .map(|event| stored(at, event))
        .collect();
        lines.push(stored(at - 1, buy("u", "old")));
        lines.extend(["{torn".to_string(), "[]".into(), r#"{"event": 1}"#.into()]);
        lines.push(r#"{"event":"purchase","entityType":"user","entityId":"u","targetEntityType":"item","targetEntityId":"i","creationTime":"yesterday"}"#.into());
        let mut some = 0;
        for line in &lines {
            let full = accepted_effect_of(line.as_bytes(), &e, at);
            assert_eq!(effect_of(line.as_bytes(), &e, at), full, "{line}");
            some += usize::from(full.is_some());
        }
        assert_eq!(some, 5, "{lines:?}");
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
