//! The model directory: documents + `manifest.json`, published atomically,
//! on the local file system or HDFS.
//!
//! Everything is written into a hidden sibling, `.<name>.tmp-<run>@<host>@<boot>`
//! (a cluster run's processes share `.<name>.tmp-<run>`), and only a complete
//! model is moved into place: by `rename` when there is no previous model;
//! when there is one, locally by an atomic exchange
//! (`renameat2(RENAME_EXCHANGE)`); without it (HDFS, NFS) by moving the old
//! model aside to `<tmp>.old` first. A crash between those two renames is
//! repaired by the next run, which moves `.old` back when the target is
//! missing. A directory is only replaced if its marker file is one of ours
//! (by content, not just by name). Leftovers of dead runs of this host (pid
//! gone, or another boot) are removed by the next run; another host's never.
//!
//! One process writes `items.jsonl`; several processes write one part per
//! worker, `items-NNNNN.jsonl` (concatenated in order: sorted by id).

use crate::storage::owner::{Machine, Writer, process_alive};
use crate::storage::{Store, file_name, join, parent};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub const ITEMS: &str = "items.jsonl";
pub const MANIFEST: &str = "manifest.json";

/// How the documents are laid out when the model is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// Concatenate the first n parts into `items.jsonl`.
    Concatenate(usize),
    /// Keep the parts as they are.
    Keep,
}

/// A kind of directory: the file that marks a complete one (and holds its
/// manifest), the option that names it in messages, and how to recognise a
/// marker written by a release from before markers named their producer.
pub struct Marker {
    pub file: &'static str,
    pub flag: &'static str,
    pub legacy: fn(&serde_json::Value) -> bool,
}

/// The `producer` of every manifest this program writes.
pub const PRODUCER: &str = "ur-train";

/// The model directory (`--output`).
pub const MODEL: Marker = Marker { file: MANIFEST, flag: "--output", legacy: legacy_model };

/// Every release so far has written `"format": "ur-train model N"`.
fn legacy_model(manifest: &serde_json::Value) -> bool {
    manifest.get("format").and_then(|f| f.as_str()).is_some_and(|f| f.starts_with("ur-train model "))
}

/// A model being written.
pub struct ModelDir {
    store: Store,
    target: String,
    tmp: String,
    /// The file that marks a complete directory of this kind (and holds its manifest).
    marker: &'static Marker,
    /// Remove the temporary directory if dropped unpublished.
    cleanup: bool,
}

impl ModelDir {
    /// Prepares the temporary directory next to `target` (it may exist
    /// already: processes of one run share it). `run` names the run: a name
    /// led by a number (`<pid>`, `<pid>-<update>`) is this process's and is
    /// tagged with this host and boot; another (a cluster run's id) is shared
    /// by the run's processes and used as is. `target` must not exist, be
    /// empty, or hold a previous model.
    pub fn create(target: &str, run: &str) -> Result<ModelDir, String> {
        ModelDir::create_marked(target, run, &MODEL)
    }

    /// The same for another kind of directory.
    pub fn create_marked(target: &str, run: &str, marker: &'static Marker) -> Result<ModelDir, String> {
        let flag = marker.flag;
        let (store, target) = Store::resolve(target).map_err(|e| format!("{flag} {e}"))?;
        let target = target.trim_end_matches('/').to_string();
        let name = file_name(&target).to_string();
        if name.is_empty() || name == "." || name == ".." {
            return Err(format!("{flag} {target}: needs a directory name"));
        }
        if let Some(restored) = recover(&store, &target).map_err(|e| format!("{flag} {e}"))? {
            tracing::warn!(
                "{flag} {target}: restored the previous directory from {restored} (a run was interrupted while publishing)"
            );
        }
        check_ours(&store, &target, marker).map_err(|e| format!("{flag} {e}"))?;
        let dir = parent(&target);
        store.create_dir_all(&dir).map_err(|e| format!("{flag} {e}"))?;
        remove_stale(&store, &target, marker);
        let tmp = join(&dir, &format!("{}{}", tmp_prefix(&name), tmp_run(run)));
        store.create_dir_all(&tmp).map_err(|e| format!("{flag} {e}"))?;
        if store.is_local() {
            PENDING.lock().unwrap_or_else(|p| p.into_inner()).push(tmp.clone());
        }
        Ok(ModelDir { store, target, tmp, marker, cleanup: true })
    }

    pub fn tmp_path(&self) -> &str {
        &self.tmp
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// Leaves the temporary directory to another process (which publishes it).
    pub fn detach(mut self) {
        self.cleanup = false;
    }

    /// Lays out the parts, writes the manifest and publishes the model.
    pub fn publish(mut self, parts: Parts, manifest: &serde_json::Value) -> Result<(), String> {
        let err = |what: &str, e: String| format!("writing the model in {}: {what}: {e}", self.tmp);
        for entry in self.store.list_dir(&self.tmp).map_err(|e| err("listing", e))? {
            if file_name(&entry.path).starts_with(".process-") {
                self.store.remove_all(&entry.path).map_err(|e| err("marker", e))?;
            }
        }
        if let Parts::Concatenate(n) = parts {
            let paths: Vec<String> = (0..n).map(|p| join(&self.tmp, &part_name(p))).collect();
            self.store.concat(&paths, &join(&self.tmp, ITEMS)).map_err(|e| err(ITEMS, e))?;
            for path in &paths {
                self.store.remove_all(path).map_err(|e| err("part", e))?;
            }
        }
        let mut text = serde_json::to_vec_pretty(manifest).map_err(|e| err(MANIFEST, e.to_string()))?;
        text.push(b'\n');
        let marker = self.marker.file;
        let mut m = self.store.create(&join(&self.tmp, marker)).map_err(|e| err(marker, e))?;
        m.write_all(&text).map_err(|e| err(marker, e.to_string()))?;
        m.finish().map_err(|e| err(marker, e.to_string()))?;
        self.swap_into_place().map_err(|e| format!("cannot move the model into {}: {e}", self.target))?;
        self.cleanup = false;
        Ok(())
    }

    fn swap_into_place(&self) -> Result<(), String> {
        let dir = parent(&self.target);
        // The files written, then the renames, are durable before the next step.
        self.store.sync_dir(&self.tmp)?;
        let previous = self.store.stat(&self.target)?;
        if previous.is_none() {
            self.store.rename(&self.tmp, &self.target)?;
            return self.store.sync_dir(&dir);
        }
        if self.store.is_local() && exchange(Path::new(&self.tmp), Path::new(&self.target)).is_ok() {
            // tmp now holds the previous model.
            self.store.sync_dir(&dir)?;
            return self.store.remove_all(&self.tmp);
        }
        // No atomic exchange: move the old model aside first. A crash in
        // between leaves no target and `.old`: `recover` moves it back.
        let old = format!("{}{OLD}", self.tmp);
        self.store.rename(&self.target, &old)?;
        self.store.sync_dir(&dir)?;
        self.store.rename(&self.tmp, &self.target)?;
        self.store.sync_dir(&dir)?;
        self.store.remove_all(&old)
    }
}

impl Drop for ModelDir {
    fn drop(&mut self) {
        if self.cleanup {
            let _ = self.store.remove_all(&self.tmp);
        }
        PENDING.lock().unwrap_or_else(|p| p.into_inner()).retain(|t| *t != self.tmp);
    }
}

/// Local temporary directories of unfinished models, for [`abandon_all`].
static PENDING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Removes the temporary directories of unfinished local models: for a
/// process about to exit without unwinding (a lost peer, a panic).
pub fn abandon_all() {
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|p| p.into_inner()));
    for tmp in pending {
        let _ = std::fs::remove_dir_all(tmp);
    }
}

/// The file worker `index` writes its documents to.
pub fn part_name(index: usize) -> String {
    format!("items-{index:05}.jsonl")
}

pub fn part_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(part_name(index))
}

/// Suffix of a previous directory moved aside while publishing.
const OLD: &str = ".old";

/// Why a directory cannot be published or repaired.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{0}")]
    Storage(String),
    #[error("{path} exists and is not a directory")]
    NotADirectory { path: String },
    #[error("{path} is a non-empty directory without a {marker}: not ours, refusing to replace it")]
    NoMarker { path: String, marker: &'static str },
    #[error("{path}/{marker} was not written by ur-train ({why}): not ours, refusing to replace it")]
    ForeignMarker { path: String, marker: &'static str, why: String },
}

impl From<String> for DirError {
    fn from(e: String) -> DirError {
        DirError::Storage(e)
    }
}

/// `.<name>.tmp-`: the start of every temporary name of `name`.
fn tmp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// The run part of a temporary name: tagged with this machine for a run of
/// this process, as is for a cluster run.
fn tmp_run(run: &str) -> String {
    if run.starts_with(|c: char| c.is_ascii_digit()) { Machine::this().tag(run) } else { run.to_string() }
}

/// The largest marker file read to recognise it.
const MARKER_MAX: u64 = 64 << 20;

/// Accepts `target` if it is absent, empty, or holds a `marker` of ours.
fn check_ours(store: &Store, target: &str, kind: &Marker) -> Result<(), DirError> {
    let marker = kind.file;
    let Some(entry) = store.stat(target)? else { return Ok(()) };
    if !entry.is_dir {
        return Err(DirError::NotADirectory { path: target.to_string() });
    }
    let contents = store.list_dir(target)?;
    if contents.is_empty() {
        return Ok(());
    }
    let Some(found) = contents.iter().find(|e| file_name(&e.path) == marker) else {
        return Err(DirError::NoMarker { path: target.to_string(), marker });
    };
    let foreign = |why: String| DirError::ForeignMarker { path: target.to_string(), marker, why };
    if found.is_dir || found.len > MARKER_MAX {
        return Err(foreign("not a manifest file".into()));
    }
    let mut text = Vec::new();
    store.open(&found.path, 0)?.take(MARKER_MAX).read_to_end(&mut text).map_err(|e| foreign(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| foreign(format!("not JSON: {e}")))?;
    let ours = value.get("producer").and_then(|p| p.as_str()) == Some(PRODUCER) || (kind.legacy)(&value);
    if ours { Ok(()) } else { Err(foreign("unknown format".into())) }
}

/// The writer of a temporary name (after the prefix), and whether it is a
/// previous directory moved aside.
fn writer_of(rest: &str) -> (Writer, bool) {
    match rest.strip_suffix(OLD) {
        Some(core) => (Writer::parse(core), true),
        None => (Writer::parse(rest), false),
    }
}

/// True if the writer may be publishing right now: a live process of this
/// host and boot.
fn may_be_running(writer: &Writer) -> bool {
    let this = Machine::this();
    matches!(writer, Writer::Tagged { machine, .. } if machine == this) && !writer.is_gone(this, process_alive)
}

/// Completes a publish interrupted between its two renames: when `target`
/// is missing and a previous directory moved aside (`<tmp>.old`) is there,
/// moves it back (the latest, if several) and returns its path. One moved
/// aside by a live process of this host is left to it.
pub fn recover(store: &Store, target: &str) -> Result<Option<String>, DirError> {
    let target = target.trim_end_matches('/');
    if store.stat(target)?.is_some() {
        return Ok(None);
    }
    let dir = parent(target);
    if store.stat(&dir)?.is_none() {
        return Ok(None);
    }
    let prefix = tmp_prefix(file_name(target));
    let old = store
        .list_dir(&dir)?
        .into_iter()
        .filter(|e| e.is_dir)
        .filter(|e| {
            file_name(&e.path).strip_prefix(&prefix).map(writer_of).is_some_and(|(w, old)| old && !may_be_running(&w))
        })
        .max_by(|a, b| (a.mtime, &a.path).cmp(&(b.mtime, &b.path)));
    let Some(old) = old else { return Ok(None) };
    store.rename(&old.path, target)?;
    store.sync_dir(&dir)?;
    Ok(Some(old.path))
}

/// Removes temporary directories of `target` left by gone runs of this host
/// (see [`Writer::is_gone`]); a previous directory moved aside only once
/// `target` holds a complete directory of ours. Failures are ignored: the
/// next run tries again.
fn remove_stale(store: &Store, target: &str, marker: &Marker) {
    let dir = parent(target);
    let prefix = tmp_prefix(file_name(target));
    let Ok(entries) = store.list_dir(&dir) else { return };
    let mut target_complete = None;
    for entry in entries {
        let Some((writer, old)) = file_name(&entry.path).strip_prefix(&prefix).map(writer_of) else { continue };
        if !writer.is_gone(Machine::this(), process_alive) {
            continue;
        }
        if old
            && !*target_complete.get_or_insert_with(|| {
                matches!(store.stat(&join(target, marker.file)), Ok(Some(_)))
                    && check_ours(store, target, marker).is_ok()
            })
        {
            continue;
        }
        let _ = store.remove_all(&entry.path);
    }
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings for the call.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no atomic exchange"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write_model(target: &Path, content: &str) -> Result<(), String> {
        let dir = ModelDir::create(target.to_str().unwrap(), &std::process::id().to_string())?;
        fs::write(Path::new(dir.tmp_path()).join(part_name(0)), content).unwrap();
        dir.publish(Parts::Concatenate(1), &serde_json::json!({"format": "ur-train model 1"}))
    }

    #[test]
    fn publishes_and_replaces_atomically() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("model");
        write_model(&target, "one\n").unwrap();
        assert_eq!(fs::read_to_string(target.join(ITEMS)).unwrap(), "one\n");
        write_model(&target, "two\n").unwrap();
        assert_eq!(fs::read_to_string(target.join(ITEMS)).unwrap(), "two\n");
        let leftovers: Vec<_> = fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("model")]);
    }

    #[test]
    fn abandoned_model_leaves_old_one() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("model");
        write_model(&target, "old\n").unwrap();
        {
            let dir = ModelDir::create(target.to_str().unwrap(), "1").unwrap();
            fs::write(Path::new(dir.tmp_path()).join(part_name(0)), "partial").unwrap();
        }
        assert_eq!(fs::read_to_string(target.join(ITEMS)).unwrap(), "old\n");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_foreign_directories() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("precious.txt"), "x").unwrap();
        let err = ModelDir::create(root.path().to_str().unwrap(), "1").err().unwrap();
        assert!(err.contains("not ours"), "{err}");
    }

    #[test]
    fn removes_leftovers_of_dead_runs() {
        let root = tempfile::tempdir().unwrap();
        let stale = root.path().join(format!(".model.tmp-{}", Machine::this().tag("999999999")));
        fs::create_dir(&stale).unwrap();
        write_model(&root.path().join("model"), "x\n").unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn temporary_names_carry_host_and_boot() {
        let root = tempfile::tempdir().unwrap();
        let dir = ModelDir::create(root.path().join("model").to_str().unwrap(), "42-3").unwrap();
        let name = file_name(dir.tmp_path()).to_string();
        assert_eq!(name, format!(".model.tmp-42-3@{}@{}", Machine::this().host, Machine::this().boot));
        let shared = ModelDir::create(root.path().join("model").to_str().unwrap(), "c00ff").unwrap();
        assert_eq!(file_name(shared.tmp_path()), ".model.tmp-c00ff");
    }

    #[test]
    fn other_hosts_and_live_runs_are_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let other = Machine { host: "elsewhere".into(), ..Machine::this().clone() };
        let keep = [
            format!(".model.tmp-{}", other.tag("999999999")),
            format!(".model.tmp-{}", Machine::this().tag("1")),
            ".model.tmp-999999999".to_string(),
            ".model.tmp-c0123".to_string(),
        ];
        for k in &keep {
            fs::create_dir(root.path().join(k)).unwrap();
        }
        write_model(&root.path().join("model"), "x\n").unwrap();
        for k in &keep {
            assert!(root.path().join(k).exists(), "{k} was removed");
        }
    }

    #[test]
    fn refuses_a_foreign_manifest() {
        let root = tempfile::tempdir().unwrap();
        let web = root.path().join("webapp");
        fs::create_dir(&web).unwrap();
        fs::write(web.join(MANIFEST), r#"{"name": "My App", "start_url": "/", "display": "standalone"}"#).unwrap();
        fs::write(web.join("index.html"), "<html>").unwrap();
        let err = write_model(&web, "x\n").unwrap_err();
        assert!(err.contains("not ours") && err.contains("not written by ur-train"), "{err}");
        assert!(web.join("index.html").exists());
        fs::write(web.join(MANIFEST), "not json at all").unwrap();
        assert!(write_model(&web, "x\n").unwrap_err().contains("not ours"));
    }

    #[test]
    fn accepts_directories_of_earlier_releases() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("model");
        fs::create_dir(&model).unwrap();
        fs::write(model.join(MANIFEST), r#"{"format": "ur-train model 1", "version": "0.1.0"}"#).unwrap();
        write_model(&model, "new\n").unwrap();
    }

    #[test]
    fn an_interrupted_publish_is_repaired() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("model");
        // Killed between the two renames: the previous model is only in `.old`.
        let old = root.path().join(format!(".model.tmp-{}.old", Machine::this().tag("999999999")));
        fs::create_dir(&old).unwrap();
        fs::write(old.join(ITEMS), "previous\n").unwrap();
        fs::write(old.join(MANIFEST), r#"{"format": "ur-train model 1"}"#).unwrap();
        let restored = recover(&Store::Local, target.to_str().unwrap()).unwrap();
        assert_eq!(restored.as_deref(), old.to_str());
        assert_eq!(fs::read_to_string(target.join(ITEMS)).unwrap(), "previous\n");
        assert!(recover(&Store::Local, target.to_str().unwrap()).unwrap().is_none());
    }

    #[test]
    fn a_moved_aside_model_is_restored_not_reaped() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("model");
        let old = root.path().join(format!(".model.tmp-{}.old", Machine::this().tag("999999999")));
        fs::create_dir(&old).unwrap();
        fs::write(old.join(ITEMS), "previous\n").unwrap();
        fs::write(old.join(MANIFEST), r#"{"format": "ur-train model 1"}"#).unwrap();
        // A new run that fails before publishing keeps the previous model.
        drop(ModelDir::create(target.to_str().unwrap(), "1").unwrap());
        assert_eq!(fs::read_to_string(target.join(ITEMS)).unwrap(), "previous\n");
        // With the target complete, a leftover `.old` of a dead run goes.
        let again = root.path().join(format!(".model.tmp-{}.old", Machine::this().tag("999999998")));
        fs::create_dir(&again).unwrap();
        write_model(&target, "new\n").unwrap();
        assert!(!again.exists());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn kept_parts_stay_separate() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("model");
        let dir = ModelDir::create(target.to_str().unwrap(), "c1").unwrap();
        for p in 0..3 {
            fs::write(Path::new(dir.tmp_path()).join(part_name(p)), format!("{p}\n")).unwrap();
        }
        fs::write(Path::new(dir.tmp_path()).join(".process-0"), "").unwrap();
        dir.publish(Parts::Keep, &serde_json::json!({})).unwrap();
        let mut names: Vec<_> =
            fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["items-00000.jsonl", "items-00001.jsonl", "items-00002.jsonl", "manifest.json"]);
    }
}
