//! The model directory: documents + `manifest.json`, published atomically,
//! on the local file system or HDFS.
//!
//! Everything is written into a hidden sibling, `.<name>.tmp-<run>`, and
//! only a complete model is moved into place: by `rename` when there is no
//! previous model; when there is one, locally by an atomic exchange
//! (`renameat2(RENAME_EXCHANGE)`), on HDFS by moving the old model aside
//! first. A failed or killed run never leaves a partial model where the old
//! one was; local leftovers of dead runs are removed by the next run.
//!
//! One process writes `items.jsonl`; several processes write one part per
//! worker, `items-NNNNN.jsonl` (concatenated in order: sorted by id).

use crate::storage::{Store, file_name, join, parent};
use std::io::{self, Write};
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

/// A model being written.
pub struct ModelDir {
    store: Store,
    target: String,
    tmp: String,
    /// The file that marks a complete directory of this kind (and holds its manifest).
    marker: &'static str,
    /// Remove the temporary directory if dropped unpublished.
    cleanup: bool,
}

impl ModelDir {
    /// Prepares `.<name>.tmp-<run>` next to `target` (it may exist already:
    /// processes of one run share it). `target` must not exist, be empty, or
    /// hold a previous model.
    pub fn create(target: &str, run: &str) -> Result<ModelDir, String> {
        ModelDir::create_marked(target, run, MANIFEST, "--output")
    }

    /// The same for another kind of directory, complete when it holds `marker`
    /// (`flag` names the option in messages).
    pub fn create_marked(target: &str, run: &str, marker: &'static str, flag: &str) -> Result<ModelDir, String> {
        let (store, target) = Store::resolve(target).map_err(|e| format!("{flag} {e}"))?;
        let target = target.trim_end_matches('/').to_string();
        if let Some(entry) = store.stat(&target).map_err(|e| format!("{flag} {e}"))? {
            if !entry.is_dir {
                return Err(format!("{flag} {target} exists and is not a directory"));
            }
            let contents = store.list_dir(&target).map_err(|e| format!("{flag} {e}"))?;
            let is_ours = contents.iter().any(|e| file_name(&e.path) == marker);
            if !contents.is_empty() && !is_ours {
                return Err(format!(
                    "{flag} {target} is a non-empty directory without a {marker}: not ours, refusing to replace it"
                ));
            }
        }
        let name = file_name(&target).to_string();
        if name.is_empty() || name == "." || name == ".." {
            return Err(format!("{flag} {target}: needs a directory name"));
        }
        let dir = parent(&target);
        store.create_dir_all(&dir).map_err(|e| format!("{flag} {e}"))?;
        if store.is_local() {
            remove_stale(Path::new(&dir), &name);
        }
        let tmp = join(&dir, &format!(".{name}.tmp-{run}"));
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
        let marker = self.marker;
        let mut m = self.store.create(&join(&self.tmp, marker)).map_err(|e| err(marker, e))?;
        m.write_all(&text).map_err(|e| err(marker, e.to_string()))?;
        m.finish().map_err(|e| err(marker, e.to_string()))?;
        self.swap_into_place().map_err(|e| format!("cannot move the model into {}: {e}", self.target))?;
        self.cleanup = false;
        Ok(())
    }

    fn swap_into_place(&self) -> Result<(), String> {
        let previous = self.store.stat(&self.target)?;
        if previous.is_none() {
            return self.store.rename(&self.tmp, &self.target);
        }
        if self.store.is_local() && exchange(Path::new(&self.tmp), Path::new(&self.target)).is_ok() {
            // tmp now holds the previous model.
            return self.store.remove_all(&self.tmp);
        }
        // No atomic exchange: move the old model aside first.
        let old = format!("{}.old", self.tmp);
        self.store.rename(&self.target, &old)?;
        self.store.rename(&self.tmp, &self.target)?;
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

/// Removes `.<name>.tmp-<pid>` left by local runs that no longer exist.
fn remove_stale(parent: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        // `<pid>`, or `<pid>-<update>` while following.
        let pid = pid.trim_end_matches(".old").split('-').next().unwrap_or_default();
        let alive = pid.parse::<u32>().map(|p| Path::new(&format!("/proc/{p}")).exists());
        if alive == Ok(false) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
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
        dir.publish(Parts::Concatenate(1), &serde_json::json!({"ok": true}))
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
        let stale = root.path().join(".model.tmp-999999999");
        fs::create_dir(&stale).unwrap();
        write_model(&root.path().join("model"), "x\n").unwrap();
        assert!(!stale.exists());
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
