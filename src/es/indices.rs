//! Which indices hold a model and which of them is live.
//!
//! A model named `<indexName>` (engine `indexName`, default `urindex`) lives
//! in runs: each run writes `<alias>_<millis>` (one document per item) and
//! `<alias>_users_<millis>` (user histories). The aliases `<alias>` and
//! `<alias>_users` point at the live run; they are moved in one `_aliases`
//! call. Published runs are kept for `ur rollback` (the newest `keep`);
//! older ones are deleted, and so are leftovers (runs never published)
//! once older than a grace period, since a leftover may be an overlapping
//! run still writing. Only indices whose `_meta` says ur-train made them
//! are ever deleted, and never a live one. Writing a run's indices is the
//! sink's business (`sink::elasticsearch`); queries and `ur rollback` only
//! need this module.

use super::{Es, HttpMethod, error_reason};
use crate::config::Engine;
use crate::runtime::block_on;
use serde_json::{Value, json};

/// The alias (and index name prefix) of a model: engine `indexName`, default `urindex`.
pub fn alias_of(engine: &Engine) -> String {
    engine.query.index_name.clone().unwrap_or_else(|| "urindex".into())
}

/// The alias of a model's user histories.
pub fn users_alias(alias: &str) -> String {
    format!("{alias}_users")
}

/// The live users index of a model: the histories `ur events` keeps up to
/// date, which no training writes (see `crate::events::live`).
pub fn live_users_index(alias: &str) -> String {
    format!("{alias}_users_live")
}

/// Names of the indices of run `millis`: (items, user histories).
pub fn index_names(alias: &str, millis: i64) -> (String, String) {
    (format!("{alias}_{millis}"), format!("{alias}_users_{millis}"))
}

/// The run (creation time) of an index named by [`index_names`].
pub fn run_of(index: &str) -> Option<i64> {
    index.rsplit('_').next().and_then(|r| r.parse().ok())
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

/// The indices an alias points at, sorted (none: the alias does not exist).
pub fn alias_indices(es: &Es, alias: &str) -> Result<Vec<String>, String> {
    let (status, v) = block_on(es.call(HttpMethod::Get, &format!("/_alias/{alias}"), None))?;
    if status == 404 {
        return Ok(Vec::new());
    }
    if status != 200 {
        return Err(format!("reading the alias {alias}: {status}: {}", error_reason(&v)));
    }
    let mut names: Vec<String> = v.as_object().into_iter().flatten().map(|(k, _)| k.clone()).collect();
    names.sort();
    Ok(names)
}

/// One run's indices as found in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub millis: i64,
    pub indices: Vec<String>,
    pub published: bool,
    /// Which aliases point at its indices.
    pub aliased: bool,
    /// Every index of the run has ur-train's `_meta` (was made by a run).
    pub ours: bool,
    /// When its newest index was created (cluster clock, epoch millis), or
    /// the run's own time if later.
    pub created: i64,
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
        let ours = meta.is_object();
        let aliased = index["aliases"].as_object().is_some_and(|a| !a.is_empty());
        let created = index["settings"]["index"]["creation_date"]
            .as_str()
            .and_then(|c| c.parse::<i64>().ok())
            .unwrap_or(0)
            .max(millis);
        match runs.iter_mut().find(|r| r.millis == millis) {
            Some(r) => {
                r.indices.push(name.clone());
                r.published &= published;
                r.aliased |= aliased;
                r.ours &= ours;
                r.created = r.created.max(created);
            }
            None => runs.push(Run { millis, indices: vec![name.clone()], published, aliased, ours, created }),
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

/// What retention keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Published runs kept (the newest ones).
    pub keep: usize,
    /// Leftovers (runs never published) younger than this are kept: they
    /// may be an overlapping run still writing.
    pub grace: std::time::Duration,
    /// Now (epoch millis), to age leftovers.
    pub now: i64,
}

/// The runs retention deletes: published runs beyond the newest `keep` and
/// leftovers older than the grace period; never run `this`, a live run, or
/// a run whose indices are not all ur-train's.
pub fn stale_runs(runs: &[Run], retention: &Retention, this: i64) -> Vec<Run> {
    let mut published: Vec<&Run> = runs.iter().filter(|r| r.published).collect();
    published.sort_by_key(|r| std::cmp::Reverse(r.millis));
    let kept: Vec<i64> = published.iter().take(retention.keep).map(|r| r.millis).collect();
    let grace = retention.grace.as_millis().min(i64::MAX as u128) as i64;
    runs.iter()
        .filter(|run| run.millis != this && !run.aliased && run.ours)
        .filter(|run| match run.published {
            true => !kept.contains(&run.millis),
            false => retention.now.saturating_sub(run.created) >= grace,
        })
        .cloned()
        .collect()
}

/// Deletes the runs of `alias` that [`stale_runs`] names; `this` is the
/// run just published.
pub fn retain(es: &Es, alias: &str, retention: &Retention, this: i64) -> Result<(), String> {
    let runs = list_runs(es, alias)?;
    for run in stale_runs(&runs, retention, this) {
        for index in &run.indices {
            block_on(es.ok(&format!("deleting {index}"), HttpMethod::Delete, &format!("/{index}"), None))?;
            tracing::info!(%index, published = run.published, "deleted old model index");
        }
    }
    Ok(())
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
    let users_alias = users_alias(&alias);
    let mut pairs = vec![(&alias, &model)];
    if previous.indices.contains(&users) {
        pairs.push((&users_alias, &users));
    }
    swap_aliases(es, &pairs)?;
    Ok((current.millis, previous.millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_runs() {
        let (model, users) = index_names("shop", 1_700_000_000_123);
        assert_eq!(model, "shop_1700000000123");
        assert_eq!(users, "shop_users_1700000000123");
        assert_eq!(run_of(&model), Some(1_700_000_000_123));
        assert_eq!(run_of(&users), Some(1_700_000_000_123));
        assert_eq!(users_alias("shop"), "shop_users");
        assert_eq!(live_users_index("shop"), "shop_users_live");
        assert_eq!(run_of(&live_users_index("shop")), None, "never taken for a run");
    }

    fn run(millis: i64, published: bool, aliased: bool, ours: bool) -> Run {
        Run { millis, indices: vec![format!("m_{millis}")], published, aliased, ours, created: millis }
    }

    #[test]
    fn retention_spares_live_fresh_and_foreign_runs() {
        let hour = 3_600_000;
        let runs = vec![
            run(1, true, false, true),               // old published: beyond keep
            run(2, true, true, true),                // live (rolled back to)
            run(3, false, false, true),              // old leftover
            run(10 * hour, false, false, true),      // fresh leftover: an overlapping run
            run(10 * hour + 1, false, false, false), // not ours
            run(10 * hour + 2, true, false, true),   // this run
        ];
        let retention = Retention { keep: 1, grace: std::time::Duration::from_secs(3600), now: 10 * hour + 10 };
        let stale: Vec<i64> = stale_runs(&runs, &retention, 10 * hour + 2).iter().map(|r| r.millis).collect();
        assert_eq!(stale, vec![1, 3]);
        let retention = Retention { grace: std::time::Duration::ZERO, ..retention };
        let stale: Vec<i64> = stale_runs(&runs, &retention, 10 * hour + 2).iter().map(|r| r.millis).collect();
        assert_eq!(stale, vec![1, 3, 10 * hour]);
    }
}
