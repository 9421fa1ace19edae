//! `ur export --app NAME --output DIR`, like `pio export`: the app's stored
//! events (closed partitions, and the complete lines of files still being
//! written) as `part-NNNNN.jsonl` files of PIO event JSON and a `_SUCCESS`
//! marker, in a local directory or on HDFS (`hdfs://`): what `ur-train`
//! and `pio import` read: a one-off copy (`ur events --ship` copies each
//! closed partition to HDFS as it closes, see [`super::ship`]).

use super::EventsError;
use super::read::{app_files, read_complete};
use crate::storage::{Store, join};
use std::io::Write;
use std::path::Path;

/// What an export wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exported {
    pub files: usize,
    pub events: u64,
    pub bytes: u64,
}

/// Exports `app` under `root` to `output`, which must not hold files yet.
pub fn export(root: &Path, app: &str, output: &str) -> Result<Exported, EventsError> {
    if !root.join(app).is_dir() {
        return Err(EventsError::Usage(format!("no events of app `{app}` under {}", root.display())));
    }
    let (store, out) = Store::resolve(output).map_err(EventsError::Usage)?;
    if let Some(e) = store.stat(&out).map_err(EventsError::Storage)? {
        let empty = e.is_dir && store.list_dir(&out).map_err(EventsError::Storage)?.is_empty();
        if !empty {
            return Err(EventsError::Usage(format!("--output {output} exists and is not an empty directory")));
        }
    }
    store.create_dir_all(&out).map_err(EventsError::Storage)?;
    let mut done = Exported::default();
    for path in app_files(root, app)? {
        let bytes = read_complete(&path)?;
        if bytes.is_empty() {
            continue;
        }
        let dest = join(&out, &format!("part-{:05}.jsonl", done.files));
        let mut w = store.create(&dest).map_err(EventsError::Storage)?;
        let fail = |e: std::io::Error| EventsError::Storage(format!("cannot write {dest}: {e}"));
        w.write_all(&bytes).map_err(fail)?;
        w.finish().map_err(fail)?;
        done.files += 1;
        done.events += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        done.bytes += bytes.len() as u64;
    }
    store
        .create(&join(&out, "_SUCCESS"))
        .and_then(|w| w.finish().map_err(|e| e.to_string()))
        .map_err(EventsError::Storage)?;
    store.sync_dir(&out).map_err(EventsError::Storage)?;
    Ok(done)
}
