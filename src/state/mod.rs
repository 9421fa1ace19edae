//! Training state, for incremental runs (`--state DIR`).
//!
//! The state is the input compacted to what training needs, so a later run
//! reads only the files added since and trains from `state ∪ new events` —
//! the same pipeline and therefore exactly the model a full training on all
//! files gives, downsampling included:
//! - per user: the raw primary event count (for `minEventsPerUser`) and the
//!   distinct items of each indicator with their latest event time;
//! - the events counted by rankings (item, event name, time), each item's
//!   first and last event time (`random` rankings), every item property
//!   event;
//! - a hash of each document and user history last written, so
//!   Elasticsearch gets only what changed.
//!
//! `state.json` lists the files consumed (path, length, modification time),
//! so each file counts once; a consumed file that changed is an error. The
//! parts (`part-NNNNN.bin`, one per worker, any number of them) are bincode.
//! The state is published after the model, atomically like it: a crash in
//! between leaves the previous state, and the next run consumes the same
//! files again — nothing is lost or counted twice.
//!
//! This module is the state's files (format, reading, writing, publication);
//! turning a worker's share into its part and back is
//! [`crate::dataflow::state_part`], and the model a `--follow` run keeps in
//! memory between updates is [`crate::dataflow::resident`], not this state.

pub mod lock;

use crate::dataflow::read::PropertyEvent;
use crate::source::InputFile;
use crate::storage::{Store, join};
use serde::{Deserialize, Serialize};
use std::io::Read;

pub const STATE_FILE: &str = "state.json";
pub const FORMAT: u32 = 1;

/// A file whose events are in the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumed {
    pub path: String,
    pub len: u64,
    pub mtime: i64,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateManifest {
    pub format: u32,
    /// What the state records (events of indicators and rankings); another
    /// engine with the same fingerprint can continue from it.
    pub fingerprint: u64,
    pub recorded: serde_json::Value,
    pub consumed: Vec<Consumed>,
    pub parts: usize,
    /// The run that wrote it, and when.
    pub run: String,
    pub written: String,
    /// The Elasticsearch index holding this state's model, if any.
    pub es_index: Option<String>,
}

/// One worker's share of the state. Items are indices into `items`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StatePart {
    pub items: Vec<String>,
    pub user_names: String,
    pub user_ends: Vec<u32>,
    pub primary_events: Vec<u32>,
    /// Per user and indicator: number of (item, time) pairs.
    pub lens: Vec<u32>,
    /// (item, latest time in seconds).
    pub pairs: Vec<(u32, u32)>,
    /// Per user: hash of the user-history document last indexed (0: none).
    pub history_hashes: Vec<u64>,
    /// Names of the events in `rank_events`.
    pub rank_names: Vec<String>,
    /// (item, rank name, time ms).
    pub rank_events: Vec<(u32, u32, i64)>,
    /// (item, first, last) event times.
    pub spans: Vec<(u32, i64, i64)>,
    pub property_events: Vec<PropertyEvent>,
    /// (item, hash of its document as last written).
    pub doc_hashes: Vec<(u32, u64)>,
}

/// Which input files are new, given what the state consumed. A consumed
/// file that changed is an error saying what to do.
pub fn new_files(files: &[InputFile], consumed: &[Consumed]) -> Result<Vec<usize>, String> {
    let mut by_path: std::collections::HashMap<&str, &Consumed> = std::collections::HashMap::new();
    for c in consumed {
        by_path.insert(c.path.as_str(), c);
    }
    let mut out = Vec::new();
    for (f, file) in files.iter().enumerate() {
        match by_path.get(file.path.as_str()) {
            None => out.push(f),
            Some(c) if c.len == file.len && c.mtime == file.mtime => {}
            Some(c) => {
                return Err(format!(
                    "{} changed after it was consumed (length {} → {}, modified {} → {}): events are only ever added in new files. \
                     Restore the file, or rebuild the state from all input with --full",
                    file.path,
                    c.len,
                    file.len,
                    crate::source::time::format_iso8601(c.mtime),
                    crate::source::time::format_iso8601(file.mtime)
                ));
            }
        }
    }
    Ok(out)
}

/// Reads `state.json` of a state directory, if there is one.
pub fn read_manifest(store: &Store, dir: &str) -> Result<Option<StateManifest>, String> {
    let path = join(dir, STATE_FILE);
    if store.stat(&path)?.is_none() {
        return Ok(None);
    }
    let mut text = String::new();
    store.open(&path, 0)?.read_to_string(&mut text).map_err(|e| format!("{path}: {e}"))?;
    let m: StateManifest = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    if m.format != FORMAT {
        return Err(format!("{path}: state format {} is not {FORMAT}; rebuild it with --full", m.format));
    }
    Ok(Some(m))
}

pub fn part_name(index: usize) -> String {
    format!("part-{index:05}.bin")
}

/// Reads one part.
pub fn read_part(store: &Store, dir: &str, index: usize) -> Result<StatePart, String> {
    let path = join(dir, &part_name(index));
    let mut bytes = Vec::new();
    store.open(&path, 0)?.read_to_end(&mut bytes).map_err(|e| format!("{path}: {e}"))?;
    bincode::deserialize(&bytes).map_err(|e| format!("{path}: corrupt state part: {e}"))
}

/// Writes one part.
pub fn write_part(store: &Store, dir: &str, index: usize, part: &StatePart) -> Result<u64, String> {
    let path = join(dir, &part_name(index));
    let bytes = bincode::serialize(part).map_err(|e| format!("{path}: {e}"))?;
    let mut f = store.create(&path)?;
    std::io::Write::write_all(&mut f, &bytes).map_err(|e| format!("{path}: {e}"))?;
    f.finish().map_err(|e| format!("{path}: {e}"))?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, len: u64, mtime: i64) -> InputFile {
        InputFile { path: path.into(), len, mtime }
    }

    #[test]
    fn new_and_changed_files() {
        let consumed =
            vec![Consumed { path: "a".into(), len: 10, mtime: 5 }, Consumed { path: "b".into(), len: 3, mtime: 1 }];
        let files = vec![file("a", 10, 5), file("b", 3, 1), file("c", 7, 9)];
        assert_eq!(new_files(&files, &consumed), Ok(vec![2]));
        let changed = vec![file("a", 11, 6), file("c", 7, 9)];
        let err = new_files(&changed, &consumed).unwrap_err();
        assert!(err.contains("a changed") && err.contains("--full"), "{err}");
        // A consumed file that is gone is fine: its events are in the state.
        assert_eq!(new_files(&[file("c", 7, 9)], &consumed), Ok(vec![0]));
    }
}
