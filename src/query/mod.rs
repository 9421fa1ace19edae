//! Recommendations from the model in Elasticsearch, with the UR's query
//! semantics: [`request`] (the query), [`builder`] (query → Elasticsearch
//! search), [`history`] (the training's and the live history of a user
//! merged), this module (fetch the user's history and the query item,
//! search, answer `{"itemScores": [...]}`), [`server`] (`POST /queries.json`).

pub mod builder;
pub mod history;
pub mod request;
pub mod server;

use crate::config::Engine;
use crate::es::indices::{alias_of, live_users_index, users_alias};
use crate::es::{Es, HttpMethod, error_reason};
use crate::time::format_iso8601;
use request::Query;
use serde_json::{Map, Value, json};

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query is wrong (HTTP 400): the message names the client's mistake.
    #[error("{0}")]
    BadRequest(String),
    /// Elasticsearch failed (HTTP 502): the detail is for the server's log,
    /// never for the client.
    #[error("{0}")]
    Upstream(String),
}

/// Answers queries against one model.
pub struct Recommender {
    pub es: Es,
    pub engine: Engine,
    pub alias: String,
    pub users_alias: String,
    /// Caps on a query (see [`request::QueryLimits`]).
    pub limits: request::QueryLimits,
    /// The histories `ur events` keeps live.
    pub live_index: String,
}

impl Recommender {
    pub fn new(es: Es, engine: Engine) -> Recommender {
        let alias = alias_of(&engine);
        let users_alias = users_alias(&alias);
        let live_index = live_users_index(&alias);
        Recommender { es, engine, alias, users_alias, live_index, limits: request::QueryLimits::default() }
    }

    /// The same, with other caps.
    pub fn with_limits(self, limits: request::QueryLimits) -> Recommender {
        Recommender { limits, ..self }
    }

    /// `{"itemScores": [{"item": .., "score": ..}, ..]}` for a query.
    pub async fn recommend(&self, q: &Query) -> Result<Value, QueryError> {
        self.limits.check(q).map_err(QueryError::BadRequest)?;
        if let Some(names) = &q.event_names {
            for n in names {
                if !self.engine.indicators.iter().any(|i| &i.name == n) {
                    return Err(QueryError::BadRequest(format!("bad query: eventNames: `{n}` is not an indicator")));
                }
            }
        }
        // An empty id names no document: as for an unknown user or item.
        let history = match q.user.as_deref().filter(|u| !u.is_empty()) {
            Some(user) => self.history(user).await?.map(|h| self.capped(h)),
            None => None,
        };
        let item = match q.item.as_deref().filter(|i| !i.is_empty()) {
            Some(item) => self.source(&self.alias, item).await?,
            None => None,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let ctx = builder::Context {
            engine: &self.engine,
            history: history.as_ref(),
            item: item.as_ref(),
            now: format_iso8601(now),
        };
        let body = builder::build(q, &ctx);
        let path = format!("/{}/_search", self.alias);
        let (status, reply) = self
            .es
            .call(HttpMethod::Post, &path, Some(serde_json::to_vec(&body).expect("JSON")))
            .await
            .map_err(QueryError::Upstream)?;
        // The query was checked: a 400 here is ours to fix, not the client's.
        if status != 200 {
            return Err(QueryError::Upstream(format!("search in {}: {status}: {}", self.alias, error_reason(&reply))));
        }
        let with_ranks = q.with_ranks.unwrap_or(false);
        let scores: Vec<Value> = reply["hits"]["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|hit| {
                let mut entry = json!({ "item": hit["_id"], "score": hit["_score"].as_f64().unwrap_or(0.0) });
                if with_ranks {
                    let ranks: Map<String, Value> = self
                        .engine
                        .rankings
                        .iter()
                        .filter_map(|r| hit["_source"].get(&r.name).map(|v| (r.name.clone(), v.clone())))
                        .collect();
                    entry["ranks"] = Value::Object(ranks);
                }
                entry
            })
            .collect();
        Ok(json!({ "itemScores": scores }))
    }

    /// A user's history with at most `max_history` items per indicator.
    fn capped(&self, mut history: Map<String, Value>) -> Map<String, Value> {
        for indicator in &self.engine.indicators {
            if let Some(Value::Array(items)) = history.get_mut(&indicator.name) {
                items.truncate(self.limits.max_history);
            }
        }
        history
    }

    /// The user's history: the training's and the live one, merged, read
    /// in one `_mget` (a missing live index is no live history).
    pub async fn history(&self, user: &str) -> Result<Option<Map<String, Value>>, QueryError> {
        let body = json!({"docs": [
            {"_index": self.users_alias, "_id": user},
            {"_index": self.live_index, "_id": user},
        ]});
        let (status, reply) = self
            .es
            .call(HttpMethod::Post, "/_mget", Some(serde_json::to_vec(&body).expect("JSON")))
            .await
            .map_err(QueryError::Upstream)?;
        if status != 200 {
            return Err(QueryError::Upstream(format!(
                "reading the history of {user}: {status}: {}",
                error_reason(&reply)
            )));
        }
        let docs = reply["docs"].as_array().cloned().unwrap_or_default();
        let found = |n: usize| -> Result<Option<Map<String, Value>>, QueryError> {
            let doc = docs.get(n).cloned().unwrap_or(Value::Null);
            match &doc["error"] {
                Value::Null => Ok(doc["_source"].as_object().cloned()),
                e if e["type"] == "index_not_found_exception" => Ok(None),
                e => Err(QueryError::Upstream(format!("reading the history of {user}: {e}"))),
            }
        };
        Ok(history::merge(&self.engine, found(0)?, found(1)?))
    }

    /// A document's `_source`, or `None` if it does not exist.
    async fn source(&self, index: &str, id: &str) -> Result<Option<Map<String, Value>>, QueryError> {
        let path = format!("/{index}/_doc/{}", encode_path(id));
        let (status, reply) = self.es.call(HttpMethod::Get, &path, None).await.map_err(QueryError::Upstream)?;
        match status {
            200 => Ok(reply["_source"].as_object().cloned()),
            404 => Ok(None),
            s => Err(QueryError::Upstream(format!("reading {index}/{id}: {s}: {}", error_reason(&reply)))),
        }
    }
}

/// Percent-encodes an id for a URL path segment.
pub fn encode_path(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_ids() {
        assert_eq!(super::encode_path("Iphone 4"), "Iphone%204");
        assert_eq!(super::encode_path("a/b?c#é"), "a%2Fb%3Fc%23%C3%A9");
    }
}
