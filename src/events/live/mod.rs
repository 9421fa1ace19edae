//! Query-time history that reacts at once: with `--es-url`, `ur events`
//! applies each acknowledged event to Elasticsearch within a second.
//!
//! Usage events go to the **live users index** `<alias>_users_live`, which
//! no training ever writes: one document per user, the most recent
//! distinct items per indicator, capped as the training caps them. A query
//! reads the training's history and this one and merges them (live items
//! first, distinct, capped: `crate::query::history`), so a training's alias
//! swap or in-place update can never erase an acknowledged event from a
//! user's history. Item `$set`/`$unset`/`$delete` go to the live model
//! index itself (the search needs them there); since a training publishing
//! a model can overwrite them, the server remembers the item changes it
//! applied (a journal) and, when the model alias moves or the live model
//! is updated in place (`_meta.ur_train.updated`), re-applies those
//! acknowledged since the new model's training could have missed them:
//! its start, less the longest a file stays open (`--roll-seconds`), less
//! a margin for clocks.
//!
//! Writes are batched by one background task (a short delay or a size
//! trigger, [`ops`] builds the bulk request, [`cache`] spares reading back
//! the documents it wrote): the 201 never waits for Elasticsearch. A failed
//! write is retried with back-off and counted; the event is durable in the
//! log either way: [`recover`] re-applies the log's events of the journal
//! window at start (and re-seeds the journal), and the next training has
//! them. [`items`] writes `$unset` (keys removed, by read-modify-write);
//! [`drain`] feeds a batch job (`ur import --es-url`) and waits for its
//! events. Replay and batch jobs write through the same task, cache included.

pub mod cache;
pub mod drain;
pub mod items;
pub mod ops;
pub mod recover;

use crate::config::Engine;
use crate::es::{Es, EsConfig, HttpMethod, error_reason, indices};
use crate::events::log::now_millis;
use crate::events::validate::Accepted;
use crate::time::Millis;
use cache::{ReadFirst, Written};
use ops::{LiveEngine, LiveOp, Stored};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Live updates could not start.
#[derive(Debug, thiserror::Error)]
#[error("live history: {0}")]
pub struct LiveError(pub String);

/// How live updates run.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub es: EsConfig,
    pub engine: Engine,
    /// The app whose events feed the engine's model.
    pub app: String,
    /// Events wait at most this long to be batched.
    pub delay: Duration,
    /// ... or until this many are waiting.
    pub max_batch: usize,
    /// How much earlier than a model's training start its input may end:
    /// the longest a file stays open plus a margin for clocks.
    pub replay_before: Duration,
    /// Item changes are remembered this long for re-applying.
    pub journal_for: Duration,
}

/// What live updates have done (counters, for logs and tests).
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Events taken to be applied.
    pub queued: AtomicU64,
    /// Events applied (acknowledged by Elasticsearch, or refused by it for
    /// good: see `refused`).
    pub applied: AtomicU64,
    /// Bulk requests that failed and were retried.
    pub write_failures: AtomicU64,
    /// Actions Elasticsearch refused (not retried), e.g. `$delete` of a missing item.
    pub refused: AtomicU64,
    /// Writes that found the document changed by another writer since it
    /// was read or cached: read again and re-applied at once.
    pub conflicts: AtomicU64,
    /// Events not queued because the queue was full.
    pub dropped: AtomicU64,
    /// Item changes re-applied after a model was published.
    pub replayed: AtomicU64,
    /// Events of the log re-applied at start ([`recover`]).
    pub recovered: AtomicU64,
}

/// The handle the request handlers use.
pub struct Live {
    app: String,
    engine: LiveEngine,
    tx: mpsc::Sender<Vec<(Millis, LiveOp)>>,
    pub stats: Arc<LiveStats>,
}

/// Messages (requests) waiting at most.
const QUEUE: usize = 65_536;

/// Live documents remembered with their versions (about 1 KB each).
const CACHED_USERS: usize = 100_000;

/// Bulk requests per flush at most: the first and those re-writing
/// documents another writer changed meanwhile.
const ROUNDS: usize = 3;

/// Users in a batch from which it is written in two requests at once.
const PARALLEL_FROM: usize = 64;

/// A bulk request, its reply cut to what [`ops::outcomes`] and
/// [`error_reason`] read (a reply of 5000 actions is parsed in a third of
/// the time).
const BULK: &str = "/_bulk?filter_path=error,status,items.*.status,items.*.error,items.*._seq_no,items.*._primary_term";
/// [`BULK`], its changes searchable at once.
const BULK_REFRESH: &str =
    "/_bulk?refresh=true&filter_path=error,status,items.*.status,items.*.error,items.*._seq_no,items.*._primary_term";

/// How one bulk request of a flush ended.
enum Round {
    /// Nothing pending any more.
    Done,
    /// Documents another writer changed: read them and write again now.
    Conflicts,
    /// Try again after a back-off.
    Retry(String),
}

impl Live {
    /// Connects, creates the live users index if needed and starts the
    /// background task (which ends when the handle is dropped).
    pub async fn start(options: LiveOptions) -> Result<(Live, tokio::task::JoinHandle<()>), LiveError> {
        Live::start_after(options, None).await
    }

    /// [`Live::start`], the task first applying `replay`'s events.
    async fn start_after(
        options: LiveOptions,
        replay: Option<(recover::Replay, std::path::PathBuf)>,
    ) -> Result<(Live, tokio::task::JoinHandle<()>), LiveError> {
        let es = Es::connect(&options.es).await.map_err(LiveError)?;
        let alias = indices::alias_of(&options.engine);
        let live_index = indices::live_users_index(&alias);
        create_live_index(&es, &options.engine, &live_index).await?;
        let engine = LiveEngine::of(&options.engine);
        let stats = Arc::new(LiveStats::default());
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut updater = Updater {
            es,
            engine: engine.clone(),
            alias,
            live_index,
            options: options.clone(),
            stats: stats.clone(),
            journal: VecDeque::new(),
            pruned_after: None,
            model: None,
            pending: Vec::new(),
            first_pending: None,
            oldest_pending: None,
            retry_at: None,
            written: Written::new(CACHED_USERS),
            read_first: ReadFirst::default(),
            backoff: Duration::from_millis(100),
            taken_through: Millis::MIN / 2,
            checkpoint: None,
            closing: false,
        };
        tracing::info!(app = %options.app, index = %updater.live_index, "live history on");
        let task = tokio::spawn(async move {
            if let Some((replay, checkpoint)) = replay {
                updater.replay(replay).await;
                updater.checkpoint = Some((checkpoint, None));
            }
            updater.run(rx).await
        });
        Ok((Live { app: options.app, engine, tx, stats }, task))
    }

    /// The live effects of `app`'s accepted events (none for another app).
    pub fn ops_of<'a>(&self, app: &str, accepted: impl IntoIterator<Item = &'a Accepted>) -> Vec<LiveOp> {
        if app != self.app {
            return Vec::new();
        }
        accepted.into_iter().filter_map(|a| self.engine.op_of(a)).collect()
    }

    /// Queues acknowledged events' effects; never waits.
    pub fn send(&self, ops: Vec<LiveOp>) {
        if ops.is_empty() {
            return;
        }
        let n = ops.len() as u64;
        let now = now_millis();
        match self.tx.try_send(ops.into_iter().map(|op| (now, op)).collect()) {
            Ok(()) => {
                self.stats.queued.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => {
                if self.stats.dropped.fetch_add(n, Ordering::Relaxed) == 0 {
                    tracing::warn!("live history queue full: events reach queries at the next training");
                }
            }
        }
    }
}

async fn create_live_index(es: &Es, engine: &Engine, index: &str) -> Result<(), LiveError> {
    let health = es.ok("cluster health", HttpMethod::Get, "/_cluster/health", None).await.map_err(LiveError)?;
    let nodes = health["number_of_data_nodes"].as_u64().unwrap_or(1);
    let meta = json!({"ur_events": {"live": true, "version": env!("CARGO_PKG_VERSION")}});
    let mut body = crate::sink::elasticsearch::mapping::users_index(engine, 1, u32::from(nodes > 1), meta);
    body["settings"]["refresh_interval"] = json!("1s");
    let (status, reply) = es
        .call(HttpMethod::Put, &format!("/{index}"), Some(serde_json::to_vec(&body).expect("JSON")))
        .await
        .map_err(LiveError)?;
    let exists = reply["error"]["type"].as_str().is_some_and(|t| t == "resource_already_exists_exception");
    if (200..300).contains(&status) || exists {
        return Ok(());
    }
    Err(LiveError(format!("creating {index}: {status}: {}", error_reason(&reply))))
}

/// The live model: its index and since when its training's input may
/// lack events (epoch millis: the training's start).
#[derive(Debug, Clone, PartialEq)]
struct Model {
    index: String,
    since: i64,
}

struct Updater {
    es: Es,
    engine: LiveEngine,
    alias: String,
    live_index: String,
    options: LiveOptions,
    stats: Arc<LiveStats>,
    /// Item changes, in acknowledgement order, with when they were taken.
    journal: VecDeque<(Millis, LiveOp)>,
    /// The newest journal entry dropped for age, if any.
    pruned_after: Option<Millis>,
    model: Option<Model>,
    pending: Vec<LiveOp>,
    first_pending: Option<Instant>,
    /// When the oldest pending event was acknowledged (for the timings).
    oldest_pending: Option<Millis>,
    retry_at: Option<Instant>,
    /// The documents this server wrote last, with their versions.
    written: Written,
    read_first: ReadFirst,
    backoff: Duration,
    /// The newest hand-over time of the events taken so far.
    taken_through: Millis,
    /// Where to record that events were applied ([`recover`]), and when it was last done.
    checkpoint: Option<(std::path::PathBuf, Option<Instant>)>,
    /// The queue closed (the server stops): pending events are due at once.
    closing: bool,
}

impl Updater {
    async fn run(mut self, mut rx: mpsc::Receiver<Vec<(Millis, LiveOp)>>) {
        let mut watch = tokio::time::interval(Duration::from_millis(250));
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        while open || !self.pending.is_empty() {
            let wake = self.due_at().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                got = rx.recv(), if open => match got {
                    Some(batch) => self.take(batch),
                    None => {
                        open = false;
                        self.closing = true;
                    }
                },
                _ = tokio::time::sleep_until(wake) => {}
                _ = watch.tick() => self.watch().await,
            }
            if self.due_at().is_some_and(|t| t <= Instant::now()) {
                self.flush().await;
            }
            if !open && self.retry_at.is_some() {
                tracing::warn!(events = self.pending.len(), "stopping with live updates not applied");
                return;
            }
        }
        self.record_stop();
    }

    /// When the pending events are to be written.
    fn due_at(&self) -> Option<Instant> {
        let first = self.first_pending?;
        let full = self.closing || self.pending.len() >= self.options.max_batch;
        let at = if full { first } else { first + self.options.delay };
        Some(self.retry_at.map_or(at, |r| r.max(at)))
    }

    fn take(&mut self, batch: Vec<(Millis, LiveOp)>) {
        if let Some((at, _)) = batch.first() {
            self.oldest_pending.get_or_insert(*at);
        }
        for (at, op) in batch {
            self.taken_through = self.taken_through.max(at);
            if matches!(op, LiveOp::Item { .. }) {
                self.journal.push_back((at, op.clone()));
            }
            self.pending.push(op);
        }
        self.first_pending.get_or_insert_with(Instant::now);
        self.prune_journal();
    }

    /// Item changes applied before a restart: remembered, not applied again.
    fn seed(&mut self, changes: Vec<(Millis, LiveOp)>) {
        self.journal.extend(changes);
        self.prune_journal();
    }

    /// Records, at most once a second, that the events taken were applied.
    fn record_applied(&mut self) {
        let Some((path, last)) = &mut self.checkpoint else { return };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = recover::write_checkpoint(path, self.taken_through - recover::CHECKPOINT_MARGIN) {
            tracing::warn!("recording the live checkpoint {}: {e} (a restart replays more)", path.display());
        }
    }

    /// At a clean stop — the queue closed, so every handler is gone and
    /// every event this server logged was handed over (`api::EventServer::store`);
    /// nothing pending; none dropped for a full queue — every event it
    /// created before now was applied: recorded without the margin, so the
    /// next start re-applies none of them.
    fn record_stop(&mut self) {
        let Some((path, _)) = &self.checkpoint else { return };
        if self.stats.dropped.load(Ordering::Relaxed) > 0 {
            return;
        }
        match recover::write_checkpoint(path, now_millis()) {
            Ok(()) => tracing::info!("live checkpoint: every event taken was applied"),
            Err(e) => tracing::warn!("recording the live checkpoint {}: {e} (a restart replays more)", path.display()),
        }
    }

    fn prune_journal(&mut self) {
        let oldest = now_millis() - self.options.journal_for.as_millis() as i64;
        while self.journal.front().is_some_and(|(at, _)| *at < oldest) || self.journal.len() > 1_000_000 {
            self.pruned_after = self.journal.pop_front().map(|(at, _)| at);
        }
    }

    /// Follows the model alias; when it moves (or the live model is
    /// updated in place), re-applies the item changes its training may lack.
    async fn watch(&mut self) {
        let model = match self.es.call(HttpMethod::Get, &format!("/{}/_mapping", self.alias), None).await {
            Ok((200, reply)) => reply.as_object().and_then(|m| m.iter().next()).map(|(index, m)| {
                let meta = &m["mappings"]["_meta"]["ur_train"];
                let since = meta["updated"].as_i64().or(meta["created"].as_i64()).unwrap_or(0);
                Model { index: index.clone(), since }
            }),
            Ok((404, _)) => None,
            Ok((status, reply)) => {
                tracing::debug!("reading the alias {}: {status}: {}", self.alias, error_reason(&reply));
                return;
            }
            Err(e) => {
                tracing::debug!("reading the alias {}: {e}", self.alias);
                return;
            }
        };
        if model == self.model {
            return;
        }
        if let Some(m) = &model {
            let cutoff = m.since - self.options.replay_before.as_millis() as i64;
            if self.pruned_after.is_some_and(|p| p >= cutoff) {
                tracing::warn!(
                    index = %m.index,
                    "the new model's training started before the item changes remembered: some may be missing until the next training"
                );
            }
            self.pending.retain(|op| matches!(op, LiveOp::Usage { .. }));
            let replay: Vec<LiveOp> =
                self.journal.iter().filter(|(at, _)| *at >= cutoff).map(|(_, op)| op.clone()).collect();
            self.stats.replayed.fetch_add(replay.len() as u64, Ordering::Relaxed);
            if !replay.is_empty() {
                tracing::info!(index = %m.index, changes = replay.len(), "new live model: re-applying item changes");
                self.pending.extend(replay);
                self.first_pending.get_or_insert_with(Instant::now);
            }
        }
        self.model = model;
    }

    /// Writes every pending event: one bulk request, and at once another
    /// for the users (and items) whose document another writer changed
    /// meanwhile (read again first), up to [`ROUNDS`] in all. What fails
    /// otherwise stays pending and is retried after a back-off.
    async fn flush(&mut self) {
        for round in 0..ROUNDS {
            match self.write_round(round > 0).await {
                Ok(Round::Done) => return self.done(),
                Ok(Round::Conflicts) => continue,
                Ok(Round::Retry(e)) | Err(e) => return self.failed(e),
            }
        }
        self.failed(format!("documents changed by another writer {ROUNDS} times over"));
    }

    /// One bulk request of the pending events; `read_unknown`: read the
    /// documents of the users not in the cache first (else as the last
    /// batches suggest). The items with an `$unset` are read every round
    /// ([`items::Unsets`]). Only what remains to do stays pending.
    async fn write_round(&mut self, read_unknown: bool) -> Result<Round, String> {
        let started = Instant::now();
        let waited = self.oldest_pending.map_or(0, |at| now_millis() - at);
        let users: Vec<String> = ops::users_of(&self.pending).into_iter().map(str::to_string).collect();
        let unknown: Vec<&str> = users.iter().map(String::as_str).filter(|u| !self.written.knows(u)).collect();
        let read_first = read_unknown || self.read_first.0;
        let mut current = if read_first { self.read_users(&unknown).await? } else { HashMap::new() };
        if read_first && !read_unknown {
            self.read_first.after_read(unknown.len(), current.len());
        }
        // The items with an `$unset`, to be written whole, as they are now.
        let items_index = self.model.as_ref().map(|m| m.index.as_str());
        let unsets = items::Unsets::read(&self.es, items_index, &self.pending).await.map_err(|e| e.0)?;
        let read = started.elapsed();
        let (cached, created) = (users.len() - unknown.len(), unknown.len() - current.len());
        for user in &users {
            if let Some(stored) = self.written.take(user) {
                current.insert(user.clone(), stored);
            }
        }
        let rest = unsets.rest(&self.pending);
        let docs = ops::user_docs(&self.engine, &self.pending, &current);
        // Two requests of disjoint users at once when there are many: the
        // node indexes them on two threads. Item changes go last, in order:
        // those that need no read, then the items written whole.
        let half = if docs.len() >= PARALLEL_FROM { docs.len() / 2 } else { 0 };
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let first_actions = ops::write_bulk(&mut first, &self.live_index, None, &docs[..half], &[], &current);
        let mut second_actions =
            ops::write_bulk(&mut second, &self.live_index, items_index, &docs[half..], &rest, &current);
        let mut item_actions: Vec<&str> = Vec::new();
        if let Some(index) = items_index {
            item_actions.extend(ops::partial_items(&rest));
            let whole = unsets.bulk_body(&mut second, index, &self.pending);
            second_actions += whole.len();
            item_actions.extend(whole);
        }
        if first_actions + second_actions == 0 {
            return Ok(Round::Done);
        }
        // Item changes must be searchable at once; histories are read by id (real time).
        let path = if item_actions.is_empty() { BULK } else { BULK_REFRESH };
        let written = Instant::now();
        let es = &self.es;
        let (first_reply, second_reply) = tokio::join!(
            async { if first_actions > 0 { Some(es.call(HttpMethod::Post, BULK, Some(first)).await) } else { None } },
            es.call(HttpMethod::Post, path, Some(second))
        );
        tracing::debug!(
            events = self.pending.len(),
            actions = first_actions + second_actions,
            requests = 1 + usize::from(first_actions > 0),
            cached,
            read = current.len() - cached,
            created,
            waited_ms = waited,
            mget_ms = read.as_millis() as u64,
            bulk_ms = written.elapsed().as_millis() as u64,
            "live flush"
        );
        let mut outcomes = first_reply.map_or_else(Vec::new, |r| self.request_outcomes(r, first_actions));
        outcomes.extend(self.request_outcomes(second_reply, second_actions));
        let settled = ops::settle(&self.pending, docs, &item_actions, &outcomes);
        if !read_first {
            let conflicts = settled.conflicts.iter().filter(|u| !current.contains_key(*u)).count();
            self.read_first.after_create(created, conflicts);
        }
        Ok(self.settle(settled))
    }

    /// The outcome of each of a bulk request's `actions`: a request that
    /// failed as a whole is retried, or refused for good if Elasticsearch
    /// refused it.
    fn request_outcomes(&self, reply: Result<(u16, Value), String>, actions: usize) -> Vec<ops::Outcome> {
        let (status, reply) = match reply {
            Ok((200, reply)) => return ops::outcomes(&reply),
            Ok(r) => r,
            Err(e) => return vec![ops::Outcome::Retry(e); actions],
        };
        let reason = error_reason(&reply);
        if ops::retryable(status) {
            return vec![ops::Outcome::Retry(format!("{status}: {reason}")); actions];
        }
        tracing::error!(status, "live history write refused, dropped: {reason}");
        vec![ops::Outcome::Refused(status, reason); actions]
    }

    /// Takes in what a bulk reply says: the documents written are cached,
    /// the rest stays pending.
    fn settle(&mut self, settled: ops::Settled) -> Round {
        for (user, stored) in settled.written {
            self.written.put(user, stored);
        }
        // Refused for good is done with too (a batch job waits for no more).
        self.stats.applied.fetch_add(settled.applied + settled.dropped, Ordering::Relaxed);
        let conflicts = settled.conflicts.len() + settled.item_conflicts.len();
        self.stats.conflicts.fetch_add(conflicts as u64, Ordering::Relaxed);
        self.stats.refused.fetch_add(settled.refused.len() as u64, Ordering::Relaxed);
        for (status, reason) in settled.refused.iter().take(10) {
            // A missing item (`$delete`) is no news; anything else is.
            if *status == 404 {
                tracing::debug!(status, "live update refused: {reason}");
            } else {
                tracing::warn!(status, "live update refused: {reason}");
            }
        }
        self.pending = settled.keep;
        match settled.retry {
            Some(e) => Round::Retry(e),
            None if self.pending.is_empty() => Round::Done,
            None => Round::Conflicts,
        }
    }

    /// The pending events stay pending, to be tried again after a back-off.
    fn failed(&mut self, e: String) {
        self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
        let retry_ms = self.backoff.as_millis() as u64;
        tracing::warn!(events = self.pending.len(), retry_ms, "live history write failed: {e}");
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
    }

    /// The live documents of `users`, with their versions (those that exist).
    async fn read_users(&self, users: &[&str]) -> Result<HashMap<String, Stored>, String> {
        let mut found = HashMap::new();
        if users.is_empty() {
            return Ok(found);
        }
        let body = json!({ "ids": users });
        let path = format!("/{}/_mget", self.live_index);
        let (status, reply) =
            self.es.call(HttpMethod::Post, &path, Some(serde_json::to_vec(&body).expect("JSON"))).await?;
        if status != 200 {
            return Err(format!("reading {}: {status}: {}", self.live_index, error_reason(&reply)));
        }
        for doc in reply["docs"].as_array().into_iter().flatten() {
            if let Some(e) = doc.get("error") {
                return Err(format!("reading {}: {}", self.live_index, error_reason(&json!({ "error": e }))));
            }
            let (Some(id), Some(source)) = (doc["_id"].as_str(), doc["_source"].as_object()) else { continue };
            let version = |k: &str| doc[k].as_u64().unwrap_or(0);
            let stored =
                Stored { source: source.clone(), seq_no: version("_seq_no"), primary_term: version("_primary_term") };
            found.insert(id.to_string(), stored);
        }
        Ok(found)
    }

    /// Every pending event was written (or refused for good, or was an item
    /// change with no live model to apply it to).
    fn done(&mut self) {
        self.stats.applied.fetch_add(self.pending.len() as u64, Ordering::Relaxed);
        self.pending.clear();
        self.first_pending = None;
        self.oldest_pending = None;
        self.retry_at = None;
        self.backoff = Duration::from_millis(100);
        self.record_applied();
    }
}
