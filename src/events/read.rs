//! Reading an app's stored events back: the files of `<root>/<app>/`
//! (closed parts and the complete lines of in-progress ones), PIO's
//! `GET /events.json` filters, one event by id. Every call reads the whole
//! app: on an append-only log without an index this is a debugging tool,
//! as PIO says of its own listing ("use cautiously").

use super::log::{IN_PROGRESS, LogError, final_name, readable_prefix, subdirs};
use crate::time::{Millis, parse_iso8601};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// PIO's filters of `GET /events.json`; `limit` `None` is all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub event: Option<String>,
    pub target_entity_type: Option<String>,
    pub target_entity_id: Option<String>,
    /// Inclusive.
    pub start_time: Option<Millis>,
    /// Exclusive.
    pub until_time: Option<Millis>,
    pub limit: Option<usize>,
    pub reversed: bool,
}

impl Filter {
    fn matches(&self, e: &Value) -> bool {
        let field = |name: &str, want: &Option<String>| want.as_deref().is_none_or(|w| e[name].as_str() == Some(w));
        if !(field("entityType", &self.entity_type)
            && field("entityId", &self.entity_id)
            && field("event", &self.event)
            && field("targetEntityType", &self.target_entity_type)
            && field("targetEntityId", &self.target_entity_id))
        {
            return false;
        }
        let t = event_time(e);
        self.start_time.is_none_or(|s| t >= s) && self.until_time.is_none_or(|u| t < u)
    }
}

fn event_time(e: &Value) -> Millis {
    e["eventTime"].as_str().and_then(parse_iso8601).unwrap_or(0)
}

/// The event files of `app`, closed and in progress, in path order.
pub fn app_files(root: &Path, app: &str) -> Result<Vec<PathBuf>, LogError> {
    let mut out = Vec::new();
    for date in subdirs(&root.join(app))? {
        for hour in subdirs(&date)? {
            let entries = std::fs::read_dir(&hour).map_err(|e| LogError(format!("{}: {e}", hour.display())))?;
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("part-") || name.starts_with(IN_PROGRESS) {
                    out.push(e.path());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The complete event lines of a file. An in-progress file renamed since
/// it was listed is read under its final name.
pub fn read_complete(path: &Path) -> Result<Vec<u8>, LogError> {
    let mut bytes = match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let renamed = path.file_name().and_then(|n| n.to_str()).and_then(final_name);
            match renamed {
                Some(name) => std::fs::read(path.with_file_name(name)),
                None => Err(e),
            }
        }
        other => other,
    }
    .map_err(|e| LogError(format!("{}: {e}", path.display())))?;
    let keep = readable_prefix(&bytes);
    bytes.truncate(keep);
    Ok(bytes)
}

fn each_event(root: &Path, app: &str, mut f: impl FnMut(&[u8])) -> Result<(), LogError> {
    for path in app_files(root, app)? {
        let bytes = read_complete(&path)?;
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            f(line);
        }
    }
    Ok(())
}

/// The events of `app` that pass `filter`, by event time (latest first
/// if reversed), at most `limit`.
pub fn find(root: &Path, app: &str, filter: &Filter) -> Result<Vec<Value>, LogError> {
    let mut found = Vec::new();
    each_event(root, app, |line| match serde_json::from_slice::<Value>(line) {
        Ok(v) if filter.matches(&v) => found.push(v),
        _ => {}
    })?;
    found.sort_by_key(event_time);
    if filter.reversed {
        found.reverse();
    }
    if let Some(n) = filter.limit {
        found.truncate(n);
    }
    Ok(found)
}

/// The event of `app` with this id.
pub fn by_id(root: &Path, app: &str, id: &str) -> Result<Option<Value>, LogError> {
    let needle = format!("\"eventId\":{}", Value::String(id.to_string()));
    let mut found = None;
    each_event(root, app, |line| {
        if found.is_none() && memchr::memmem::find(line, needle.as_bytes()).is_some() {
            found = serde_json::from_slice::<Value>(line).ok().filter(|v| v["eventId"].as_str() == Some(id));
        }
    })?;
    Ok(found)
}
