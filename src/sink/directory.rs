//! The model directory: `items.jsonl` + `manifest.json`, published
//! atomically.
//!
//! Everything is written into a hidden sibling, `.<name>.tmp-<pid>`, and
//! only a complete model is moved into place: by `rename` when there is no
//! previous model, by an atomic exchange (`renameat2(RENAME_EXCHANGE)`) when
//! there is one. A failed or killed run never leaves a partial model where
//! the old one was; its leftovers are removed by the next run.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const ITEMS: &str = "items.jsonl";
pub const MANIFEST: &str = "manifest.json";

/// A model being written.
pub struct ModelDir {
    target: PathBuf,
    tmp: PathBuf,
    published: bool,
}

impl ModelDir {
    /// Prepares a temporary directory next to `target`. `target` must not
    /// exist, be empty, or hold a previous model.
    pub fn create(target: &Path) -> Result<ModelDir, String> {
        let shown = target.display();
        if let Ok(meta) = fs::symlink_metadata(target) {
            if !meta.is_dir() {
                return Err(format!("--output {shown} exists and is not a directory"));
            }
            let empty = fs::read_dir(target)
                .map_err(|e| format!("--output {shown}: {e}"))?
                .next()
                .is_none();
            if !empty && !target.join(MANIFEST).is_file() {
                return Err(format!(
                    "--output {shown} is a non-empty directory without a {MANIFEST}: not a model, refusing to replace it"
                ));
            }
        }
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("--output {shown}: needs a directory name"))?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        remove_stale(&parent, name);
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        Ok(ModelDir {
            target: target.to_path_buf(),
            tmp,
            published: false,
        })
    }

    /// Where worker `index` writes its part of the documents.
    pub fn part_path(&self, index: usize) -> PathBuf {
        part_path(&self.tmp, index)
    }

    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Joins the parts (in order) into `items.jsonl`, writes the manifest and
    /// publishes the model.
    pub fn publish(mut self, parts: usize, manifest: &serde_json::Value) -> Result<(), String> {
        let err = |what: &str, e: io::Error| {
            format!("writing the model in {}: {what}: {e}", self.tmp.display())
        };
        let items_path = self.tmp.join(ITEMS);
        let mut items = fs::File::create(&items_path).map_err(|e| err(ITEMS, e))?;
        for p in 0..parts {
            let path = self.part_path(p);
            let mut part = fs::File::open(&path).map_err(|e| err("part", e))?;
            io::copy(&mut part, &mut items).map_err(|e| err(ITEMS, e))?;
            fs::remove_file(&path).map_err(|e| err("part", e))?;
        }
        items.sync_all().map_err(|e| err(ITEMS, e))?;
        let mut m = fs::File::create(self.tmp.join(MANIFEST)).map_err(|e| err(MANIFEST, e))?;
        serde_json::to_writer_pretty(&mut m, manifest).map_err(|e| err(MANIFEST, e.into()))?;
        m.write_all(b"\n")
            .and_then(|_| m.sync_all())
            .map_err(|e| err(MANIFEST, e))?;
        swap_into_place(&self.tmp, &self.target)
            .map_err(|e| format!("cannot move the model into {}: {e}", self.target.display()))?;
        self.published = true;
        // After an exchange, tmp holds the previous model.
        let _ = fs::remove_dir_all(&self.tmp);
        Ok(())
    }
}

impl Drop for ModelDir {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

pub fn part_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("items-{index:05}.jsonl"))
}

/// Removes `.<name>.tmp-<pid>` left by runs that no longer exist.
fn remove_stale(parent: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn swap_into_place(tmp: &Path, target: &Path) -> io::Result<()> {
    if fs::symlink_metadata(target).is_err() {
        return fs::rename(tmp, target);
    }
    if exchange(tmp, target).is_ok() {
        return Ok(());
    }
    // No atomic exchange on this file system: move the old model aside first.
    let old = tmp.with_extension("old");
    fs::rename(target, &old)?;
    fs::rename(tmp, target)?;
    fs::rename(&old, tmp)
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no atomic exchange",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_model(target: &Path, content: &str) -> Result<(), String> {
        let dir = ModelDir::create(target)?;
        fs::write(dir.part_path(0), content).unwrap();
        dir.publish(1, &serde_json::json!({"ok": true}))
    }

    #[test]
    fn publishes_and_replaces_atomically() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("model");
        write_model(&target, "one\n").unwrap();
        assert_eq!(fs::read_to_string(target.join(ITEMS)).unwrap(), "one\n");
        write_model(&target, "two\n").unwrap();
        assert_eq!(fs::read_to_string(target.join(ITEMS)).unwrap(), "two\n");
        let leftovers: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("model")]);
    }

    #[test]
    fn abandoned_model_leaves_old_one() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("model");
        write_model(&target, "old\n").unwrap();
        {
            let dir = ModelDir::create(&target).unwrap();
            fs::write(dir.part_path(0), "partial").unwrap();
        }
        assert_eq!(fs::read_to_string(target.join(ITEMS)).unwrap(), "old\n");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_foreign_directories() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("precious.txt"), "x").unwrap();
        let err = ModelDir::create(root.path()).err().unwrap();
        assert!(err.contains("not a model"), "{err}");
    }

    #[test]
    fn removes_leftovers_of_dead_runs() {
        let root = tempfile::tempdir().unwrap();
        let stale = root.path().join(".model.tmp-999999999");
        fs::create_dir(&stale).unwrap();
        write_model(&root.path().join("model"), "x\n").unwrap();
        assert!(!stale.exists());
    }
}
