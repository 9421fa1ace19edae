//! Writing the model into Elasticsearch, swapped in atomically.
//!
//! A run writes two new indices, `<indexName>_<millis>` (one document per
//! item) and `<indexName>_users_<millis>` (each user's recent items per
//! indicator, for query-time history), with bulk requests from every
//! worker. When all workers are done, the first process refreshes them,
//! checks the document counts, marks them published and moves both aliases
//! (`<indexName>`, `<indexName>_users`) in one `_aliases` call, then lets
//! [`crate::es::indices`] delete the runs no longer kept. A failure before
//! the swap deletes the new indices: the aliases stay where they were.
//! Before publishing, each new index must still carry the `_meta` this run
//! gave it (its run id), so an index another run deleted and bulk writes
//! re-created is never swapped in. An update writes into the live indices
//! in place instead — only while the aliases point at the indices the state
//! names; otherwise (after `ur rollback`, or a run that swapped and failed
//! before writing its state) the run writes new indices and swaps, and the
//! manifest says why. Index names, runs, aliases, retention and rollback
//! live in [`crate::es::indices`].

pub mod bulk;
pub mod mapping;

use crate::config::Engine;
use crate::es::{Es, EsConfig, HttpMethod, indices};
use crate::runtime::block_on;
use serde_json::{Value, json};

/// Where and how a run writes its indices.
#[derive(Debug, Clone)]
pub struct EsOptions {
    pub config: EsConfig,
    /// Primary shards; default: the number of data nodes.
    pub shards: Option<u32>,
    /// Replicas; default: 1 with several data nodes, 0 with one.
    pub replicas: Option<u32>,
    /// Published model indices kept (the live one included).
    pub keep: usize,
    /// Unpublished indices (leftovers, or an overlapping run's) younger
    /// than this are never deleted.
    pub grace: std::time::Duration,
    /// Bulk requests in flight per process.
    pub connections: Option<usize>,
    /// Bytes per bulk request.
    pub batch_bytes: usize,
    /// Tries per bulk request (429, 5xx, lost connections) before failing.
    pub attempts: u32,
}

/// The indices of one run.
pub struct EsTarget {
    pub es: Es,
    pub alias: String,
    pub users_alias: String,
    pub model_index: String,
    pub users_index: String,
    pub millis: i64,
    /// The run's id, in the `_meta` of its indices.
    pub run_id: String,
    pub retention: indices::Retention,
    pub replicas: u32,
    pub batch_bytes: usize,
    pub attempts: u32,
    pub permits: bulk::Permits,
    /// Updating the live indices in place (changed documents only) rather
    /// than writing new ones and swapping the aliases.
    pub in_place: bool,
    /// Why an update writes new indices rather than updating in place.
    pub rebuilt: Option<String>,
}

/// The run preparing its indices.
pub struct EsRun<'a> {
    /// Its time (epoch millis), naming its indices.
    pub millis: i64,
    /// Its id, recorded in the `_meta` of its indices.
    pub id: &'a str,
    /// This process creates the indices (the first one).
    pub create: bool,
    pub workers: usize,
    /// The run whose indices hold the model being updated, if any.
    pub live: Option<i64>,
}

/// The clock (epoch millis), to age leftovers.
fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Why the live indices of run `live` cannot be updated in place: the
/// aliases point elsewhere.
fn not_live(es: &Es, alias: &str, users_alias: &str, live: i64) -> Result<Option<String>, String> {
    let (model, users) = indices::index_names(alias, live);
    for (alias, index) in [(alias, model), (users_alias, users)] {
        let found = indices::alias_indices(es, alias)?;
        if found != [index.clone()] {
            return Ok(Some(format!(
                "the alias {alias} points at {found:?}, not at the state's index {index} (`ur rollback`, or a run \
                 that failed after its swap): writing new indices holding the whole model"
            )));
        }
    }
    Ok(None)
}

impl EsTarget {
    /// Connects; on the first process also creates the run's indices. With
    /// `run.live`, the live indices of that run are updated in place
    /// instead, if the aliases still point at them.
    pub fn prepare(options: &EsOptions, engine: &Engine, run: EsRun) -> Result<EsTarget, String> {
        let es = block_on(Es::connect(&options.config))?;
        let alias = indices::alias_of(engine);
        let users_alias = indices::users_alias(&alias);
        let rebuilt = match run.live {
            Some(live) => not_live(&es, &alias, &users_alias, live)?,
            None => None,
        };
        if let Some(why) = &rebuilt {
            tracing::warn!("no update in place: {why}");
        }
        let live = run.live.filter(|_| rebuilt.is_none());
        let (model_index, users_index) = indices::index_names(&alias, live.unwrap_or(run.millis));
        let nodes =
            block_on(es.ok("cluster health", HttpMethod::Get, "/_cluster/health", None))?["number_of_data_nodes"]
                .as_u64()
                .unwrap_or(1)
                .max(1) as u32;
        let shards = options.shards.unwrap_or(nodes);
        let replicas = options.replicas.unwrap_or(if nodes > 1 { 1 } else { 0 });
        let connections =
            options.connections.or(engine.query.num_es_write_connections.map(|n| n as usize)).unwrap_or(run.workers);
        let target = EsTarget {
            es,
            alias,
            users_alias,
            model_index,
            users_index,
            millis: run.millis,
            run_id: run.id.to_string(),
            retention: indices::Retention { keep: options.keep.max(1), grace: options.grace, now: run.millis },
            replicas,
            batch_bytes: options.batch_bytes,
            attempts: options.attempts,
            permits: bulk::Permits::new(connections),
            in_place: live.is_some(),
            rebuilt,
        };
        if run.create && !target.in_place {
            target.create(engine, shards)?;
        }
        Ok(target)
    }

    /// The `_meta` of the run's indices.
    fn meta(&self) -> Value {
        json!({"ur_train": {"version": env!("CARGO_PKG_VERSION"), "created": self.millis, "run": self.run_id}})
    }

    fn create(&self, engine: &Engine, shards: u32) -> Result<(), String> {
        let tolerant = mapping::Tolerance::of(&self.es.info);
        let model = mapping::model_index(engine, shards, self.replicas, self.meta(), tolerant);
        let users = mapping::users_index(engine, shards, self.replicas, self.meta());
        for (index, body) in [(&self.model_index, model), (&self.users_index, users)] {
            block_on(self.es.ok(
                &format!("creating index {index}"),
                HttpMethod::Put,
                &format!("/{index}"),
                Some(body),
            ))?;
        }
        tracing::info!(index = %self.model_index, shards, replicas = self.replicas, es = %self.es.info.version, "created indices");
        Ok(())
    }

    /// Fails unless `index` still carries the `_meta` this run gave it.
    fn check_ours(&self, index: &str) -> Result<(), String> {
        let mapping =
            block_on(self.es.ok(&format!("mapping of {index}"), HttpMethod::Get, &format!("/{index}/_mapping"), None))?;
        let meta = mapping.as_object().and_then(|m| m.values().next()).map(|m| &m["mappings"]["_meta"]["ur_train"]);
        let meta = meta.unwrap_or(&Value::Null);
        if meta["run"] != json!(self.run_id) || meta["created"] != json!(self.millis) {
            return Err(format!(
                "{index} is not the index this run created (its _meta is {meta}, this run is {}): another run or a \
                 person deleted or replaced it; not published",
                self.run_id
            ));
        }
        Ok(())
    }

    /// In place: fails unless the aliases still point at the indices updated.
    fn check_still_live(&self) -> Result<(), String> {
        for (alias, index) in [(&self.alias, &self.model_index), (&self.users_alias, &self.users_index)] {
            let found = indices::alias_indices(&self.es, alias)?;
            if found != [index.clone()] {
                return Err(format!(
                    "the alias {alias} moved to {found:?} while {index} was updated in place (`ur rollback`?): the \
                     update is not live; run again"
                ));
            }
        }
        Ok(())
    }

    /// Refreshes, checks counts, marks published and swaps the aliases (in
    /// place: refreshes and checks counts).
    pub fn publish(&self, documents: u64, users: u64, manifest: &Value) -> Result<(), String> {
        let es = &self.es;
        if self.in_place {
            for (index, expected) in [(&self.model_index, documents), (&self.users_index, users)] {
                block_on(es.ok(&format!("refreshing {index}"), HttpMethod::Post, &format!("/{index}/_refresh"), None))?;
                let count =
                    block_on(es.ok(&format!("counting {index}"), HttpMethod::Get, &format!("/{index}/_count"), None))?;
                let found = count["count"].as_u64().unwrap_or(0);
                if found != expected {
                    return Err(format!("{index} holds {found} documents after the update, the model has {expected}"));
                }
            }
            self.check_still_live()?;
            self.mark_updated()?;
            tracing::info!(index = %self.model_index, "updated in place");
            return Ok(());
        }
        for (index, expected) in [(&self.model_index, documents), (&self.users_index, users)] {
            let settings = json!({"index": {"refresh_interval": "1s", "number_of_replicas": self.replicas}});
            block_on(es.ok(
                &format!("settings of {index}"),
                HttpMethod::Put,
                &format!("/{index}/_settings"),
                Some(settings),
            ))?;
            block_on(es.ok(&format!("refreshing {index}"), HttpMethod::Post, &format!("/{index}/_refresh"), None))?;
            let count =
                block_on(es.ok(&format!("counting {index}"), HttpMethod::Get, &format!("/{index}/_count"), None))?;
            let found = count["count"].as_u64().unwrap_or(0);
            if found != expected {
                return Err(format!("{index} holds {found} documents after indexing, {expected} were written"));
            }
            self.check_ours(index)?;
        }
        let published = json!({"_meta": {"ur_train": {
            "version": env!("CARGO_PKG_VERSION"), "created": self.millis, "run": self.run_id, "published": true,
            "manifest": manifest,
        }}});
        for index in [&self.model_index, &self.users_index] {
            block_on(es.ok(
                &format!("marking {index}"),
                HttpMethod::Put,
                &format!("/{index}/_mapping"),
                Some(published.clone()),
            ))?;
        }
        indices::swap_aliases(es, &[(&self.alias, &self.model_index), (&self.users_alias, &self.users_index)])?;
        tracing::info!(alias = %self.alias, index = %self.model_index, "alias swapped");
        let retention = indices::Retention { now: now(), ..self.retention };
        if let Err(e) = indices::retain(es, &self.alias, &retention, self.millis) {
            tracing::warn!("cleaning up old model indices: {e}");
        }
        Ok(())
    }

    /// In place: records the run in the indices' `_meta` (`updated`), so
    /// `ur events` knows the live model changed and re-applies the item
    /// changes this run's input may lack (`crate::events::live`).
    fn mark_updated(&self) -> Result<(), String> {
        for index in [&self.model_index, &self.users_index] {
            let path = format!("/{index}/_mapping");
            let mapping = block_on(self.es.ok(&format!("mapping of {index}"), HttpMethod::Get, &path, None))?;
            let mut meta = mapping
                .as_object()
                .and_then(|m| m.values().next())
                .map_or(Value::Null, |m| m["mappings"]["_meta"].clone());
            if !meta["ur_train"].is_object() {
                continue;
            }
            meta["ur_train"]["updated"] = json!(self.millis);
            block_on(self.es.ok(&format!("marking {index}"), HttpMethod::Put, &path, Some(json!({ "_meta": meta }))))?;
        }
        Ok(())
    }

    /// The run (creation time) whose indices this target writes.
    pub fn run(&self) -> i64 {
        indices::run_of(&self.model_index).unwrap_or(self.millis)
    }

    /// A bulk writer into one of the run's indices, for worker `worker`.
    pub fn writer(&self, index: &str, worker: usize) -> bulk::BulkWriter<'_> {
        bulk::BulkWriter::new(
            &self.es,
            &self.permits,
            index,
            self.batch_bytes,
            self.attempts,
            worker as u64 ^ self.millis as u64,
        )
    }

    /// Deletes the run's indices (a failed run; in place there is nothing to undo).
    pub fn abort(&self) {
        if self.in_place {
            return;
        }
        for index in [&self.model_index, &self.users_index] {
            let _ = block_on(self.es.call(HttpMethod::Delete, &format!("/{index}"), None));
        }
    }
}
