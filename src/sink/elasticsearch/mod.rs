//! Writing the model into Elasticsearch, swapped in atomically.
//!
//! A run writes two new indices, `<indexName>_<millis>` (one document per
//! item) and `<indexName>_users_<millis>` (each user's recent items per
//! indicator, for query-time history), with bulk requests from every
//! worker. When all workers are done, the first process refreshes them,
//! checks the document counts, marks them published and moves both aliases
//! (`<indexName>`, `<indexName>_users`) in one `_aliases` call, then lets
//! [`crate::es::indices`] delete the runs no longer kept. A failure before
//! the swap deletes the new indices: the aliases stay where they were. An
//! update writes into the live indices in place instead. Index names, runs,
//! aliases, retention and rollback live in [`crate::es::indices`].

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
    pub keep: usize,
    pub replicas: u32,
    pub batch_bytes: usize,
    pub attempts: u32,
    pub permits: bulk::Permits,
    /// Updating the live indices in place (changed documents only) rather
    /// than writing new ones and swapping the aliases.
    pub in_place: bool,
}

impl EsTarget {
    /// Connects; on the first process also creates the run's indices. With
    /// `live`, the live indices of that run are updated in place instead.
    pub fn prepare(
        options: &EsOptions,
        engine: &Engine,
        millis: i64,
        create: bool,
        workers: usize,
        live: Option<i64>,
    ) -> Result<EsTarget, String> {
        let es = block_on(Es::connect(&options.config))?;
        let alias = indices::alias_of(engine);
        let users_alias = indices::users_alias(&alias);
        let (model_index, users_index) = indices::index_names(&alias, live.unwrap_or(millis));
        let nodes =
            block_on(es.ok("cluster health", HttpMethod::Get, "/_cluster/health", None))?["number_of_data_nodes"]
                .as_u64()
                .unwrap_or(1)
                .max(1) as u32;
        let shards = options.shards.unwrap_or(nodes);
        let replicas = options.replicas.unwrap_or(if nodes > 1 { 1 } else { 0 });
        let connections =
            options.connections.or(engine.query.num_es_write_connections.map(|n| n as usize)).unwrap_or(workers);
        let target = EsTarget {
            es,
            alias,
            users_alias,
            model_index,
            users_index,
            millis,
            keep: options.keep.max(1),
            replicas,
            batch_bytes: options.batch_bytes,
            attempts: options.attempts,
            permits: bulk::Permits::new(connections),
            in_place: live.is_some(),
        };
        if create && !target.in_place {
            let meta = json!({"ur_train": {"version": env!("CARGO_PKG_VERSION"), "created": millis}});
            let model = mapping::model_index(engine, shards, replicas, meta.clone());
            let users = mapping::users_index(engine, shards, replicas, meta);
            for (index, body) in [(&target.model_index, model), (&target.users_index, users)] {
                block_on(target.es.ok(
                    &format!("creating index {index}"),
                    HttpMethod::Put,
                    &format!("/{index}"),
                    Some(body),
                ))?;
            }
            tracing::info!(index = %target.model_index, shards, replicas, es = %target.es.info.version, "created indices");
        }
        Ok(target)
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
        }
        let published = json!({"_meta": {"ur_train": {
            "version": env!("CARGO_PKG_VERSION"), "created": self.millis, "published": true, "manifest": manifest,
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
        if let Err(e) = indices::retain(es, &self.alias, self.keep, self.millis) {
            tracing::warn!("cleaning up old model indices: {e}");
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
