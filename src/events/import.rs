//! `ur import --app NAME PATH`, like `pio import`: every line of a file or
//! directory of PIO event JSON (the layout `ur-train` reads, `.gz` too) is
//! checked by the event server's rules ([`super::validate`]); if no more
//! lines are refused than `--max-rejected` allows, the accepted ones are
//! appended to the app's partitions through the same durable log as the
//! server's (its own part names, so a running server is no obstacle).
//! Otherwise nothing is written. A line's `eventId` is kept when it has
//! one (so an export imports back as itself); `creationTime` is now.
//! Each chunk of events, once durable, is handed to the caller (for live
//! updates, `ur import --es-url`).

use super::apps::Registry;
use super::log::{EventLog, LogConfig, now_millis};
use super::validate::{Accepted, accept};
use super::{EventsError, random_hex};
use crate::source::lines::read_unit;
use crate::source::{WorkUnit, list_inputs};
use crate::stats::RejectLimit;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    pub lines: u64,
    pub stored: u64,
    /// Refused lines by reason, and the first line number and file of each.
    pub rejected: BTreeMap<String, (u64, String)>,
}

impl Imported {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().map(|(n, _)| n).sum()
    }
}

/// Lines appended per commit.
const CHUNK: usize = 10_000;

/// Imports `input` into `app` under `root`; `stored` gets each chunk of
/// events once it is on disk.
pub fn import(
    root: &Path,
    app: &str,
    input: &str,
    limit: RejectLimit,
    stored: &mut dyn FnMut(&[Accepted]),
) -> Result<Imported, EventsError> {
    if Registry::load(root)?.app(app).is_none() {
        return Err(EventsError::Usage(format!("no app named `{app}` (see `ur app list`)")));
    }
    let listing = list_inputs(input).map_err(EventsError::Usage)?;
    let (store, files) = (listing.store, listing.files);
    let now = now_millis();
    let prefix = random_hex(8);
    let mut count = 0u64;
    let mut next_id = |v: &Value| match v.get("eventId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && id.len() <= 128 => id.to_string(),
        _ => {
            count += 1;
            format!("{prefix}{count:016x}")
        }
    };
    // Pass 1: count; pass 2 (only within the limit): store.
    let mut report = Imported::default();
    each_line(&store, &files, |file, no, line| {
        report.lines += 1;
        let checked = serde_json::from_slice::<Value>(line)
            .map_err(|e| format!("malformed JSON: {e}"))
            .and_then(|v| accept(&v, now, next_id(&v)).map_err(|e| e.0));
        if let Err(reason) = checked {
            let key = reason_key(&reason);
            report.rejected.entry(key).or_insert((0, format!("{file}:{no}"))).0 += 1;
        }
    })?;
    if limit.exceeded(report.rejected_total(), report.lines) {
        return Ok(report);
    }
    let log = EventLog::start(LogConfig {
        root: root.to_path_buf(),
        roll_after: Duration::from_secs(3600),
        roll_bytes: 128 << 20,
    })?;
    let mut batch = Vec::with_capacity(CHUNK);
    let mut failed = None;
    each_line(&store, &files, |_, _, line| {
        if failed.is_some() {
            return;
        }
        if let Ok(a) = serde_json::from_slice::<Value>(line)
            .map_err(|_| ())
            .and_then(|v| accept(&v, now, next_id(&v)).map_err(|_| ()))
        {
            batch.push(a);
            if batch.len() == CHUNK {
                failed = append(&log, app, &mut batch, &mut report, stored).err();
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if !batch.is_empty() {
        append(&log, app, &mut batch, &mut report, stored)?;
    }
    log.close();
    Ok(report)
}

/// Appends `batch` durably, then hands it to `stored`; empties it.
fn append(
    log: &EventLog,
    app: &str,
    batch: &mut Vec<Accepted>,
    report: &mut Imported,
    stored: &mut dyn FnMut(&[Accepted]),
) -> Result<(), EventsError> {
    log.append_blocking(app, batch.iter().map(|a| a.line.clone()).collect())?;
    report.stored += batch.len() as u64;
    stored(batch);
    batch.clear();
    Ok(())
}

/// The counting key of a refusal: the message without the event's own names.
fn reason_key(reason: &str) -> String {
    if reason.starts_with("malformed JSON") {
        return "malformed JSON".into();
    }
    if reason.starts_with("Fail to extract eventTime") {
        return "bad eventTime".into();
    }
    if reason.ends_with(" is not a supported reserved event name.") {
        return "unsupported reserved event name".into();
    }
    if reason.contains("'pio_' is a reserved name prefix") {
        return "reserved name prefix".into();
    }
    if reason.starts_with("Reserved event") {
        return "reserved event with a target".into();
    }
    reason.to_string()
}

fn each_line(
    store: &crate::storage::Store,
    files: &[crate::source::InputFile],
    mut f: impl FnMut(&str, u64, &[u8]),
) -> Result<(), EventsError> {
    let read = AtomicU64::new(0);
    for (i, file) in files.iter().enumerate() {
        let unit = WorkUnit { file: i as u32, start: 0, end: u64::MAX };
        read_unit(store, file, &unit, &read, |no, line| {
            if !line.iter().all(u8::is_ascii_whitespace) {
                f(&file.path, no, line)
            }
        })
        .map_err(EventsError::Storage)?;
    }
    Ok(())
}
