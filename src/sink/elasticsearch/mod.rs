//! The model in Elasticsearch, swapped in atomically.
//!
//! A run writes two new indices, `<indexName>_<millis>` (one document per
//! item) and `<indexName>_users_<millis>` (each user's recent items per
//! indicator, for query-time history), with bulk requests from every
//! worker. When all workers are done, the first process refreshes them,
//! checks the document counts, marks them published and moves both aliases
//! (`<indexName>`, `<indexName>_users`) in one `_aliases` call. Published
//! indices are kept for `ur rollback` (the last `keep`); older ones and
//! leftovers of failed runs are deleted. A failure before the swap deletes
//! the new indices: the aliases stay where they were.

pub mod bulk;
pub mod mapping;

use crate::config::Engine;
use crate::es::{Es, EsConfig, HttpMethod, error_reason};
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

/// Names of the indices of run `millis`.
pub fn index_names(alias: &str, millis: i64) -> (String, String) {
    (format!("{alias}_{millis}"), format!("{alias}_users_{millis}"))
}

/// The alias (and index name prefix) of a model: engine `indexName`, default `urindex`.
pub fn alias_of(engine: &Engine) -> String {
    engine.query.index_name.clone().unwrap_or_else(|| "urindex".into())
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
        let alias = alias_of(engine);
        let users_alias = format!("{alias}_users");
        let (model_index, users_index) = index_names(&alias, live.unwrap_or(millis));
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
        swap_aliases(es, &[(&self.alias, &self.model_index), (&self.users_alias, &self.users_index)])?;
        tracing::info!(alias = %self.alias, index = %self.model_index, "alias swapped");
        if let Err(e) = self.retain() {
            tracing::warn!("cleaning up old model indices: {e}");
        }
        Ok(())
    }

    /// The run (creation time) whose indices this target writes.
    pub fn run(&self) -> i64 {
        self.model_index.rsplit('_').next().and_then(|r| r.parse().ok()).unwrap_or(self.millis)
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

    /// Keeps the newest `keep` published models; deletes older models and
    /// older unpublished leftovers.
    fn retain(&self) -> Result<(), String> {
        let runs = list_runs(&self.es, &self.alias)?;
        let mut published: Vec<&Run> = runs.iter().filter(|r| r.published).collect();
        published.sort_by_key(|r| std::cmp::Reverse(r.millis));
        let kept: Vec<i64> = published.iter().take(self.keep).map(|r| r.millis).collect();
        for run in &runs {
            let stale = !kept.contains(&run.millis) && run.millis < self.millis;
            if stale {
                for index in &run.indices {
                    block_on(self.es.ok(&format!("deleting {index}"), HttpMethod::Delete, &format!("/{index}"), None))?;
                    tracing::info!(%index, "deleted old model index");
                }
            }
        }
        Ok(())
    }
}

/// The run (millis) the alias points to, if any.
pub fn live_run(es: &Es, alias: &str) -> Result<Option<i64>, String> {
    let (status, v) = block_on(es.call(HttpMethod::Get, &format!("/_alias/{alias}"), None))?;
    if status != 200 {
        return Ok(None);
    }
    let prefix = format!("{alias}_");
    Ok(v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, _)| name.strip_prefix(&prefix)?.parse::<i64>().ok())
        .max())
}

/// One run's indices as found in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub millis: i64,
    pub indices: Vec<String>,
    pub published: bool,
    /// Which aliases point at its indices.
    pub aliased: bool,
}

/// The runs of a model: indices `<alias>_<millis>` and `<alias>_users_<millis>`.
pub fn list_runs(es: &Es, alias: &str) -> Result<Vec<Run>, String> {
    let (status, value) =
        block_on(es.call(HttpMethod::Get, &format!("/{alias}_*?ignore_unavailable=true&allow_no_indices=true"), None))?;
    if status == 404 {
        return Ok(Vec::new());
    }
    if status != 200 {
        return Err(format!("listing {alias}_* indices: {status}: {}", error_reason(&value)));
    }
    let mut runs: Vec<Run> = Vec::new();
    let users_prefix = format!("{alias}_users_");
    let model_prefix = format!("{alias}_");
    for (name, index) in value.as_object().into_iter().flatten() {
        let millis = match name.strip_prefix(&users_prefix).or_else(|| name.strip_prefix(&model_prefix)) {
            Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => m.parse::<i64>().unwrap_or(0),
            _ => continue,
        };
        let meta = &index["mappings"]["_meta"]["ur_train"];
        let published = meta["published"] == Value::Bool(true);
        let aliased = index["aliases"].as_object().is_some_and(|a| !a.is_empty());
        match runs.iter_mut().find(|r| r.millis == millis) {
            Some(r) => {
                r.indices.push(name.clone());
                r.published &= published;
                r.aliased |= aliased;
            }
            None => runs.push(Run { millis, indices: vec![name.clone()], published, aliased }),
        }
    }
    for r in &mut runs {
        r.indices.sort();
    }
    runs.sort_by_key(|r| r.millis);
    Ok(runs)
}

/// Points each alias at its index, removing it from any other, in one call.
pub fn swap_aliases(es: &Es, pairs: &[(&String, &String)]) -> Result<(), String> {
    let mut actions = Vec::new();
    for (alias, index) in pairs {
        let (status, current) = block_on(es.call(HttpMethod::Get, &format!("/_alias/{alias}"), None))?;
        if status == 200 {
            for old in current.as_object().into_iter().flatten().map(|(k, _)| k) {
                if old != *index {
                    actions.push(json!({"remove": {"index": old, "alias": alias}}));
                }
            }
        }
        actions.push(json!({"add": {"index": index, "alias": alias}}));
    }
    block_on(es.ok("swapping aliases", HttpMethod::Post, "/_aliases", Some(json!({ "actions": actions })))).map(|_| ())
}

/// Moves the aliases back to the previous published run. Returns (from, to).
pub fn rollback(es: &Es, engine: &Engine) -> Result<(i64, i64), String> {
    let alias = alias_of(engine);
    let runs = list_runs(es, &alias)?;
    let current = runs
        .iter()
        .filter(|r| r.aliased)
        .max_by_key(|r| r.millis)
        .ok_or_else(|| format!("no model is live under the alias `{alias}`"))?;
    let previous = runs
        .iter()
        .filter(|r| r.published && r.millis < current.millis)
        .max_by_key(|r| r.millis)
        .ok_or_else(|| format!("no earlier published model of `{alias}` is kept to roll back to"))?;
    let (model, users) = index_names(&alias, previous.millis);
    let users_alias = format!("{alias}_users");
    let mut pairs = vec![(&alias, &model)];
    if previous.indices.contains(&users) {
        pairs.push((&users_alias, &users));
    }
    swap_aliases(es, &pairs)?;
    Ok((current.millis, previous.millis))
}
