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
//! `state.json` records the canonical input root and lists the files
//! consumed (path relative to that root, length, modification time), so each
//! file counts once however the input is spelt; a consumed file that changed
//! is an error, and another input root is refused. The
//! parts (`part-NNNNN.bin`, one per worker, any number of them) are bincode.
//! Every file carries a checksum and a decoded part is checked against its
//! own tables ([`seal`], [`validate`]): a damaged state is refused with
//! "corrupt state …; retrain with --full", never trained from.
//! The state is published after the model, atomically like it: a crash in
//! between leaves the previous state, and the next run consumes the same
//! files again — nothing is lost or counted twice.
//!
//! This module is the state's files (format, reading, writing, publication);
//! turning a worker's share into its part and back is
//! [`crate::dataflow::state_part`], and the model a `--follow` run keeps in
//! memory between updates is [`crate::dataflow::resident`], not this state.

pub mod lock;
pub mod seal;
pub mod validate;

use crate::model::PropertyEvent;
use crate::sink::directory::Marker;
use crate::source::InputFile;
use crate::source::root::InputRoot;
use crate::storage::{Store, join};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::io::{Read, Write};

pub const STATE_FILE: &str = "state.json";
/// 3: the input root, consumed paths relative to it; 2 recorded paths as
/// listed (and is refused: they cannot be related to a root safely);
/// 2 and later: checksummed files (`seal`), 1 had none.
pub const FORMAT: u32 = 3;

/// Why a state cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The storage failed (the message names the file).
    #[error("{0}")]
    Storage(String),
    /// A file of the state is damaged.
    #[error("corrupt state {path}: {what}; retrain with --full")]
    Corrupt { path: String, what: String },
    #[error("{path}: state format {found} is older than this release ({FORMAT}): retrain with --full")]
    Older { path: String, found: u64 },
    #[error(
        "{path}: state format {found} is newer than this release ({FORMAT}): use the release that wrote it, or retrain with --full"
    )]
    Newer { path: String, found: u64 },
}

/// The storage's errors are messages.
impl From<String> for StateError {
    fn from(e: String) -> StateError {
        StateError::Storage(e)
    }
}

/// The bincode options of a part body: fixed-size integers as
/// `bincode::serialize`, nothing after the part, no allocation beyond the
/// body's size.
fn part_codec(limit: u64) -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding().reject_trailing_bytes().with_limit(limit)
}

/// A file whose events are in the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumed {
    /// Relative to the input root.
    pub path: String,
    pub len: u64,
    pub mtime: i64,
}

/// The files a model was trained on: where the input is, and each file
/// consumed from it, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedInput {
    pub root: InputRoot,
    pub files: Vec<Consumed>,
}

/// `state.json`. It serializes with its `checksum` ([`seal::seal_manifest`]);
/// [`read_manifest`] checks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct StateManifest {
    pub format: u32,
    /// Always `ur-train`: marks the directory as ours.
    #[serde(default = "producer")]
    pub producer: String,
    /// What the state records (events of indicators and rankings); another
    /// engine with the same fingerprint can continue from it.
    pub fingerprint: u64,
    pub recorded: serde_json::Value,
    /// The canonical input root `consumed` is relative to.
    pub input_root: InputRoot,
    pub consumed: Vec<Consumed>,
    pub parts: usize,
    /// The run that wrote it, and when.
    pub run: String,
    pub written: String,
    /// The Elasticsearch index holding this state's model, if any.
    pub es_index: Option<String>,
}

impl Serialize for StateManifest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let fields = StateManifest::serialize(self, serde_json::value::Serializer).map_err(S::Error::custom)?;
        let serde_json::Value::Object(fields) = fields else {
            return Err(S::Error::custom("a state manifest is a JSON object"));
        };
        seal::seal_manifest(fields).serialize(serializer)
    }
}

/// Reads the fields only: [`read_manifest`] checks the checksum first.
impl<'de> Deserialize<'de> for StateManifest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StateManifest, D::Error> {
        StateManifest::deserialize(deserializer)
    }
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

/// Which input files are new, given what the state consumed from the same
/// root (compared by path relative to it). A consumed file that changed is
/// an error saying what to do.
pub fn new_files(files: &[InputFile], consumed: &[Consumed]) -> Result<Vec<usize>, String> {
    let mut by_path: std::collections::HashMap<&str, &Consumed> = std::collections::HashMap::new();
    for c in consumed {
        by_path.insert(c.path.as_str(), c);
    }
    let mut out = Vec::new();
    for (f, file) in files.iter().enumerate() {
        match by_path.get(file.relative.as_str()) {
            None => out.push(f),
            Some(c) if c.len == file.len && c.mtime == file.mtime => {}
            Some(c) => {
                return Err(format!(
                    "{} changed after it was consumed (length {} → {}, modified {} → {}): events are only ever added in new files. \
                     Restore the file, or rebuild the state from all input with --full",
                    file.path,
                    c.len,
                    file.len,
                    crate::time::format_iso8601(c.mtime),
                    crate::time::format_iso8601(file.mtime)
                ));
            }
        }
    }
    Ok(out)
}

/// Reads `state.json` of a state directory, if there is one.
pub fn read_manifest(store: &Store, dir: &str) -> Result<Option<StateManifest>, String> {
    open_manifest(store, dir).map_err(|e| e.to_string())
}

fn producer() -> String {
    PRODUCER.to_string()
}

pub use crate::sink::directory::PRODUCER;

/// A state directory: complete when it holds `state.json`.
pub const MARKER: Marker = Marker { file: STATE_FILE, flag: "--state", legacy: legacy_manifest };

/// Every release so far has written these fields into `state.json`.
fn legacy_manifest(manifest: &serde_json::Value) -> bool {
    manifest.get("format").is_some_and(|f| f.is_u64())
        && manifest.get("fingerprint").is_some_and(|f| f.is_u64())
        && manifest.get("consumed").is_some_and(|c| c.is_array())
        && manifest.get("parts").is_some_and(|p| p.is_u64())
}

/// Reads and checks `state.json` of a state directory, if there is one.
pub fn open_manifest(store: &Store, dir: &str) -> Result<Option<StateManifest>, StateError> {
    let path = join(dir, STATE_FILE);
    if store.stat(&path)?.is_none() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    store.open(&path, 0)?.read_to_end(&mut bytes).map_err(|e| StateError::Storage(format!("{path}: {e}")))?;
    decode_manifest(&path, &bytes).map(Some)
}

/// `state.json`'s bytes (from `path`) as a manifest, checksum and format
/// checked.
pub fn decode_manifest(path: &str, bytes: &[u8]) -> Result<StateManifest, StateError> {
    let corrupt = |what: String| StateError::Corrupt { path: path.to_string(), what };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    let fields = seal::open_manifest(path, value)?;
    StateManifest::deserialize(serde_json::Value::Object(fields)).map_err(|e| corrupt(e.to_string()))
}

pub fn part_name(index: usize) -> String {
    format!("part-{index:05}.bin")
}

/// Reads one part (every check of [`open_part`] but the indicator count).
pub fn read_part(store: &Store, dir: &str, index: usize) -> Result<StatePart, String> {
    load_part(store, dir, index).map_err(|e| e.to_string())
}

/// Reads and checks one part, for an engine with `indicators` indicators.
pub fn open_part(store: &Store, dir: &str, index: usize, indicators: usize) -> Result<StatePart, StateError> {
    let part = load_part(store, dir, index)?;
    part.check_indicators(indicators)
        .map_err(|e| StateError::Corrupt { path: join(dir, &part_name(index)), what: e.to_string() })?;
    Ok(part)
}

fn load_part(store: &Store, dir: &str, index: usize) -> Result<StatePart, StateError> {
    let path = join(dir, &part_name(index));
    let mut bytes = Vec::new();
    store.open(&path, 0)?.read_to_end(&mut bytes).map_err(|e| StateError::Storage(format!("{path}: {e}")))?;
    decode_part(&path, index, &bytes)
}

/// The bytes of part `index` (from `path`) as a part: frame, checksum,
/// format, decoding and consistency checked.
pub fn decode_part(path: &str, index: usize, bytes: &[u8]) -> Result<StatePart, StateError> {
    use bincode::Options;
    let corrupt = |what: String| StateError::Corrupt { path: path.to_string(), what };
    let body = seal::open_part(path, index, bytes)?;
    let part: StatePart =
        part_codec(body.len() as u64).deserialize(body).map_err(|e| corrupt(format!("undecodable: {e}")))?;
    part.validate().map_err(|e| corrupt(e.to_string()))?;
    Ok(part)
}

/// The bytes of part `index`: the body serialized in place, inside its
/// frame (no second copy of a part as big as the state's share of the
/// events).
pub fn encode_part(index: usize, part: &StatePart) -> Vec<u8> {
    use bincode::Options;
    let len = part_codec(u64::MAX).serialized_size(part).expect("a state part serializes") as usize;
    let mut out = Vec::with_capacity(seal::PART_HEADER + len + seal::PART_TRAILER);
    seal::begin_part(&mut out, index, len);
    part_codec(u64::MAX).serialize_into(&mut out, part).expect("a state part serializes");
    debug_assert_eq!(out.len(), seal::PART_HEADER + len, "serialized_size is the size serialized");
    seal::end_part(&mut out);
    out
}

/// What a part file's body can be written from: a [`StatePart`], or its
/// fields streamed from what they are made of
/// (`dataflow::state_part::PartStream`), in the same bytes.
pub trait PartBody {
    /// The body's length in bytes.
    fn body_len(&self) -> Result<u64, String>;
    fn write_body<W: Write>(&self, w: &mut W) -> std::io::Result<()>;
}

impl PartBody for StatePart {
    fn body_len(&self) -> Result<u64, String> {
        use bincode::Options;
        part_codec(u64::MAX).serialized_size(self).map_err(|e| e.to_string())
    }

    fn write_body<W: Write>(&self, w: &mut W) -> std::io::Result<()> {
        encode_into(w, self)
    }
}

/// Serializes `value` as a part body serializes it (a field of
/// [`StatePart`], or all of it).
pub fn encode_into<W: Write, T: Serialize + ?Sized>(w: &mut W, value: &T) -> std::io::Result<()> {
    use bincode::Options;
    part_codec(u64::MAX).serialize_into(w, value).map_err(|e| match *e {
        bincode::ErrorKind::Io(e) => e,
        e => std::io::Error::other(e),
    })
}

/// The length of [`encode_into`]'s bytes for `value`.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> u64 {
    use bincode::Options;
    part_codec(u64::MAX).serialized_size(value).expect("a part field has a size")
}

/// Writes part `index` of the state in `dir`, streamed: the bytes of
/// [`encode_part`] (for a [`StatePart`]), framed and checksummed ([`seal`]),
/// never all in memory; its size.
pub fn write_part(store: &Store, dir: &str, index: usize, body: &impl PartBody) -> Result<u64, String> {
    let path = join(dir, &part_name(index));
    let fail = |e: &dyn std::fmt::Display| format!("{path}: {e}");
    let len = body.body_len().map_err(|e| fail(&e))? as usize;
    let mut f = store.create(&path)?;
    let framed = seal::PartWriter::new(&mut f, index, len).map_err(|e| fail(&e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, framed);
    body.write_body(&mut w).map_err(|e| fail(&e))?;
    let framed = w.into_inner().map_err(|e| fail(e.error()))?;
    let bytes = framed.finish().map_err(|e| fail(&e))?;
    let expected = (seal::PART_HEADER + len + seal::PART_TRAILER) as u64;
    if bytes != expected {
        return Err(format!("{path}: wrote {bytes} bytes of a {expected}-byte part"));
    }
    f.finish().map_err(|e| fail(&e))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::directory::ModelDir;

    #[test]
    fn a_foreign_state_json_is_refused_and_an_earlier_release_accepted() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join(STATE_FILE), r#"{"format": 1}"#).unwrap();
        let err = ModelDir::create_marked(state.to_str().unwrap(), "1", &MARKER).err();
        assert!(err.unwrap().contains("not ours"));
        let manifest = r#"{"format": 1, "fingerprint": 7, "recorded": {}, "consumed": [], "parts": 1, "run": "1", "written": "x", "esIndex": null}"#;
        std::fs::write(state.join(STATE_FILE), manifest).unwrap();
        assert!(ModelDir::create_marked(state.to_str().unwrap(), "1", &MARKER).is_ok());
    }

    fn file(path: &str, len: u64, mtime: i64) -> InputFile {
        InputFile { path: format!("./in/{path}"), len, mtime, relative: path.into() }
    }

    #[test]
    fn new_and_changed_files() {
        let consumed =
            vec![Consumed { path: "a".into(), len: 10, mtime: 5 }, Consumed { path: "b".into(), len: 3, mtime: 1 }];
        let files = vec![file("a", 10, 5), file("b", 3, 1), file("c", 7, 9)];
        assert_eq!(new_files(&files, &consumed), Ok(vec![2]));
        let changed = vec![file("a", 11, 6), file("c", 7, 9)];
        let err = new_files(&changed, &consumed).unwrap_err();
        assert!(err.contains("./in/a changed") && err.contains("--full"), "{err}");
        // A consumed file that is gone is fine: its events are in the state.
        assert_eq!(new_files(&[file("c", 7, 9)], &consumed), Ok(vec![0]));
    }

    fn manifest() -> StateManifest {
        StateManifest {
            format: FORMAT,
            producer: PRODUCER.into(),
            fingerprint: 7,
            recorded: serde_json::json!({"indicators": [["buy", ["buy"]]], "random": false}),
            input_root: serde_json::from_value(serde_json::json!("/in")).unwrap(),
            consumed: vec![Consumed { path: "a".into(), len: 10, mtime: 5 }],
            parts: 2,
            run: "r".into(),
            written: "2026-01-01T00:00:00Z".into(),
            es_index: None,
        }
    }

    #[test]
    fn a_manifest_is_written_with_its_checksum_and_read_back() {
        let value = serde_json::to_value(manifest()).unwrap();
        assert!(value[seal::CHECKSUM_FIELD].is_string(), "{value}");
        let text = serde_json::to_vec_pretty(&value).unwrap();
        assert_eq!(decode_manifest("s", &text).unwrap(), manifest());
        let changed = String::from_utf8(text).unwrap().replace("\"parts\": 2", "\"parts\": 3");
        let err = decode_manifest("s", changed.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("corrupt state s: checksum mismatch"), "{err}");
    }

    #[test]
    fn parts_round_trip_and_are_checked() {
        let part = StatePart {
            items: vec!["i".into()],
            user_names: "u".into(),
            user_ends: vec![1],
            primary_events: vec![1],
            lens: vec![1, 0],
            pairs: vec![(0, 3)],
            history_hashes: vec![0],
            ..StatePart::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().to_str().unwrap();
        let bytes = write_part(&Store::Local, dir, 1, &part).unwrap();
        let file = std::fs::read(join(dir, &part_name(1))).unwrap();
        assert_eq!((bytes, &file), (file.len() as u64, &encode_part(1, &part)), "streamed as encoded");
        assert_eq!(open_part(&Store::Local, dir, 1, 2).unwrap().pairs, part.pairs);
        let err = open_part(&Store::Local, dir, 1, 3).unwrap_err().to_string();
        assert!(
            err.contains("corrupt state") && err.contains("records 2 indicators per user, the engine has 3"),
            "{err}"
        );
        // Serialized in its frame: the bytes of the body sealed.
        use bincode::Options;
        let body = part_codec(u64::MAX).serialize(&part).unwrap();
        assert_eq!(encode_part(1, &part), seal::seal_part(1, &body));
        // A part of format 1 (bincode, no frame) is not taken for one.
        let old = bincode::serialize(&part).unwrap();
        let err = decode_part("p", 1, &old).unwrap_err().to_string();
        assert!(err.starts_with("corrupt state p: "), "{err}");
    }
}
