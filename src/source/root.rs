//! The input root: where `--input` is, spelt one way whatever the spelling
//! given, so a state can name the files it consumed relative to it.
//!
//! A local root is the canonical path (`std::fs::canonicalize`): `inc`,
//! `./inc/`, an absolute path, another working directory or a symbolic link
//! to it give the same root. An HDFS root is the URL normalised
//! ([`crate::storage::hdfs::normalize_url`]); two NameNode host names that
//! resolve to a common address with the same port are the same root. A
//! single file as input has its directory as root and its name as relative
//! path, so the directory can later be the input of the same state.

use crate::storage::{Store, hdfs};
use std::fmt;

/// A canonical input location, as a state records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct InputRoot(String);

impl InputRoot {
    /// The root of `path` (a path of `store`, as [`Store::resolve`] gives
    /// it) and, when `path` is a file, the file's name relative to it.
    pub fn of(store: &Store, path: &str, is_dir: bool) -> Result<(InputRoot, Option<String>), String> {
        let (dir, name) = match store {
            Store::Local => {
                let canonical = std::fs::canonicalize(path).map_err(|e| format!("{path}: {e}"))?;
                let lossy = |p: &std::path::Path| p.to_string_lossy().into_owned();
                match (is_dir, canonical.parent(), canonical.file_name()) {
                    (false, Some(dir), Some(name)) => (lossy(dir), Some(name.to_string_lossy().into_owned())),
                    _ => (lossy(&canonical), None),
                }
            }
            Store::Hdfs(_) => {
                let (prefix, path) = hdfs::split_url(&hdfs::normalize_url(path)?)?;
                match (is_dir, path.rsplit_once('/')) {
                    (false, Some((dir, name))) if !name.is_empty() => {
                        (format!("{prefix}{}", if dir.is_empty() { "/" } else { dir }), Some(name.to_string()))
                    }
                    _ => (format!("{prefix}{path}"), None),
                }
            }
        };
        Ok((InputRoot(dir), name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if both roots are the same location, however spelt.
    pub fn same(&self, other: &InputRoot) -> bool {
        self.0 == other.0 || (self.0.contains("://") && hdfs::same_location(&self.0, &other.0))
    }
}

impl fmt::Display for InputRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_roots_are_canonical() {
        let dir = tempfile::tempdir().unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        std::fs::create_dir(canonical.join("inc")).unwrap();
        std::fs::write(canonical.join("inc/a.jsonl"), b"x").unwrap();
        std::os::unix::fs::symlink(canonical.join("inc"), canonical.join("link")).unwrap();
        let inc = canonical.join("inc").to_str().unwrap().to_string();
        for spelling in [format!("{inc}/"), format!("{inc}/./"), format!("{}/link", canonical.display())] {
            let (root, name) = InputRoot::of(&Store::Local, &spelling, true).unwrap();
            assert_eq!((root.as_str(), name), (inc.as_str(), None), "{spelling}");
        }
        let (root, name) = InputRoot::of(&Store::Local, &format!("{inc}/../link/a.jsonl"), false).unwrap();
        assert_eq!((root.as_str(), name.as_deref()), (inc.as_str(), Some("a.jsonl")));
        assert!(InputRoot::of(&Store::Local, "/definitely/not/here", true).is_err());
    }

    #[test]
    fn roots_compare_by_location() {
        let root = |s: &str| InputRoot(s.into());
        assert!(root("/a").same(&root("/a")));
        assert!(!root("/a").same(&root("/b")));
        assert!(root("hdfs://localhost:9000/e").same(&root("hdfs://127.0.0.1:9000/e")));
        assert!(!root("hdfs://localhost:9000/e").same(&root("/e")));
    }
}
