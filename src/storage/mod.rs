//! Storage resolved from a path: `hdfs://namenode:port/path` or
//! `hdfs://nameservice/path` goes to HDFS ([`hdfs`]), anything else
//! (`file://` or a plain path) to the local file system. Both give the same
//! small contract: list files, open at an offset, create, rename, delete.

pub mod hdfs;
pub mod owner;

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

/// Why [`Store::create_new`] failed: the file exists (someone else made it
/// first), or anything else.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0}")]
    Other(String),
}

/// A file or directory found by listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path as given back to [`Store`] (a full `hdfs://` URL for HDFS).
    pub path: String,
    pub len: u64,
    pub is_dir: bool,
    /// Modification time, ms since the epoch (0 if unknown).
    pub mtime: i64,
}

/// A file being written; `finish` makes it durable.
pub trait FileSink: Write + Send {
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// Where a path lives.
#[derive(Clone)]
pub enum Store {
    Local,
    Hdfs(Arc<hdfs::Hdfs>),
}

impl Store {
    /// The store of `path`, and the path to use with it.
    pub fn resolve(path: &str) -> Result<(Store, String), String> {
        if let Some(rest) = path.strip_prefix("file://") {
            return Ok((Store::Local, rest.to_string()));
        }
        if path.starts_with("hdfs://") || path.starts_with("viewfs://") {
            let client = hdfs::Hdfs::connect(path)?;
            return Ok((Store::Hdfs(client), path.to_string()));
        }
        if let Some(i) = path.find("://") {
            return Err(format!("{path}: `{}://` is not supported (use hdfs:// or a local path)", &path[..i]));
        }
        Ok((Store::Local, path.to_string()))
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Store::Local)
    }

    /// What is at `path`, if anything.
    pub fn stat(&self, path: &str) -> Result<Option<Entry>, String> {
        match self {
            Store::Local => match fs::metadata(path) {
                Ok(m) => Ok(Some(Entry { path: path.to_string(), len: m.len(), is_dir: m.is_dir(), mtime: mtime(&m) })),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("{path}: {e}")),
            },
            Store::Hdfs(h) => h.stat(path),
        }
    }

    /// The entries directly in a directory, sorted by path. A dangling
    /// local symbolic link is left out with a warning.
    pub fn list_dir(&self, path: &str) -> Result<Vec<Entry>, String> {
        let (entries, dangling) = self.list_dir_counted(path)?;
        for link in dangling {
            tracing::warn!("{link}: dangling symbolic link, skipped");
        }
        Ok(entries)
    }

    /// [`Store::list_dir`], giving back the dangling symbolic links left out.
    pub fn list_dir_counted(&self, path: &str) -> Result<(Vec<Entry>, Vec<String>), String> {
        let mut dangling = Vec::new();
        let mut out = match self {
            Store::Local => {
                let mut out = Vec::new();
                for entry in fs::read_dir(path).map_err(|e| format!("{path}: {e}"))? {
                    let entry = entry.map_err(|e| format!("{path}: {e}"))?;
                    let p = entry.path();
                    let m = match fs::metadata(&p) {
                        Ok(m) => m,
                        Err(e) if e.kind() == io::ErrorKind::NotFound && p.is_symlink() => {
                            dangling.push(p.to_string_lossy().into_owned());
                            continue;
                        }
                        Err(e) => return Err(format!("{}: {e}", p.display())),
                    };
                    out.push(Entry {
                        path: p.to_string_lossy().into_owned(),
                        len: m.len(),
                        is_dir: m.is_dir(),
                        mtime: mtime(&m),
                    });
                }
                out
            }
            Store::Hdfs(h) => h.list_dir(path)?,
        };
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((out, dangling))
    }

    /// Opens a file for reading at byte `offset`.
    pub fn open(&self, path: &str, offset: u64) -> Result<Box<dyn Read + Send>, String> {
        match self {
            Store::Local => {
                let mut f = fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
                if offset > 0 {
                    f.seek(SeekFrom::Start(offset)).map_err(|e| format!("{path}: {e}"))?;
                }
                Ok(Box::new(f))
            }
            Store::Hdfs(h) => h.open(path, offset),
        }
    }

    /// Creates (or replaces) a file.
    pub fn create(&self, path: &str) -> Result<Box<dyn FileSink>, String> {
        match self {
            Store::Local => {
                let f = fs::File::create(path).map_err(|e| format!("cannot write {path}: {e}"))?;
                Ok(Box::new(LocalSink { file: io::BufWriter::with_capacity(1 << 20, f), sync: true }))
            }
            Store::Hdfs(h) => h.create(path),
        }
    }

    /// Creates (or replaces) a scratch file: like [`Store::create`], but a
    /// local file is not synced to disk when finished (it is read back and
    /// removed before anything is published).
    pub fn create_scratch(&self, path: &str) -> Result<Box<dyn FileSink>, String> {
        match self {
            Store::Local => {
                let f = fs::File::create(path).map_err(|e| format!("cannot write {path}: {e}"))?;
                Ok(Box::new(LocalSink { file: io::BufWriter::with_capacity(1 << 20, f), sync: false }))
            }
            Store::Hdfs(h) => h.create(path),
        }
    }

    /// Writes `dest` as the concatenation of `parts` (synced). Local files
    /// are copied by the kernel (`copy_file_range`), without a pass through
    /// this process.
    pub fn concat(&self, parts: &[String], dest: &str) -> Result<(), String> {
        match self {
            Store::Local => {
                let mut out = fs::File::create(dest).map_err(|e| format!("cannot write {dest}: {e}"))?;
                for p in parts {
                    let mut f = fs::File::open(p).map_err(|e| format!("cannot read {p}: {e}"))?;
                    io::copy(&mut f, &mut out).map_err(|e| format!("cannot write {dest}: {e}"))?;
                }
                out.sync_all().map_err(|e| format!("cannot write {dest}: {e}"))
            }
            Store::Hdfs(_) => {
                let mut out = self.create(dest)?;
                for p in parts {
                    let mut f = self.open(p, 0)?;
                    io::copy(&mut f, &mut out).map_err(|e| format!("cannot write {dest}: {e}"))?;
                }
                out.finish().map_err(|e| format!("cannot write {dest}: {e}"))
            }
        }
    }

    /// Creates a file that must not exist yet.
    pub fn create_new(&self, path: &str) -> Result<Box<dyn FileSink>, CreateError> {
        match self {
            Store::Local => {
                let f = fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        CreateError::Exists(path.to_string())
                    } else {
                        CreateError::Other(format!("cannot create {path}: {e}"))
                    }
                })?;
                Ok(Box::new(LocalSink { file: io::BufWriter::new(f), sync: true }))
            }
            Store::Hdfs(h) => h.create_new(path),
        }
    }

    pub fn create_dir_all(&self, path: &str) -> Result<(), String> {
        match self {
            Store::Local => fs::create_dir_all(path).map_err(|e| format!("cannot create {path}: {e}")),
            Store::Hdfs(h) => h.mkdirs(path),
        }
    }

    /// Renames; the target must not exist.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), String> {
        match self {
            Store::Local => fs::rename(from, to).map_err(|e| format!("cannot rename {from} to {to}: {e}")),
            Store::Hdfs(h) => h.rename(from, to),
        }
    }

    /// Makes the entries of a local directory (files created, renamed or
    /// removed in it) durable; HDFS persists them on the NameNode already.
    pub fn sync_dir(&self, path: &str) -> Result<(), String> {
        match self {
            Store::Local => {
                fs::File::open(path).and_then(|d| d.sync_all()).map_err(|e| format!("cannot sync {path}: {e}"))
            }
            Store::Hdfs(_) => Ok(()),
        }
    }

    /// Removes a file or a directory tree; absent is fine.
    pub fn remove_all(&self, path: &str) -> Result<(), String> {
        match self {
            Store::Local => {
                let r = match fs::symlink_metadata(path) {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(path),
                    Ok(_) => fs::remove_file(path),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                };
                r.map_err(|e| format!("cannot remove {path}: {e}"))
            }
            Store::Hdfs(h) => h.delete(path),
        }
    }
}

fn mtime(m: &fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A local file; synced to disk when finished unless it is scratch.
struct LocalSink {
    file: io::BufWriter<fs::File>,
    sync: bool,
}

impl Write for LocalSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl FileSink for LocalSink {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let f = self.file.into_inner().map_err(|e| e.into_error())?;
        if self.sync { f.sync_all() } else { Ok(()) }
    }
}

/// Joins a directory and a name with `/`.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") }
}

/// The last component of a path.
pub fn file_name(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or(path)
}

/// The directory containing `path` (`.` for a bare name).
pub fn parent(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) => "/".into(),
        Some(i) if !trimmed[..i].ends_with(':') && !trimmed[..i].ends_with("//") => trimmed[..i].to_string(),
        Some(_) => trimmed.to_string(),
        None => ".".into(),
    }
}

/// True if the local path exists.
pub fn local_exists(path: &str) -> bool {
    Path::new(path).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(join("a/b", "c"), "a/b/c");
        assert_eq!(join("hdfs://nn:9000/m/", "c"), "hdfs://nn:9000/m/c");
        assert_eq!(file_name("hdfs://nn:9000/models/shop/"), "shop");
        assert_eq!(parent("hdfs://nn:9000/models/shop"), "hdfs://nn:9000/models");
        assert_eq!(parent("model"), ".");
        assert_eq!(parent("/model"), "/");
        assert_eq!(parent("a/model"), "a");
        assert!(Store::resolve("s3://bucket/x").err().unwrap().contains("s3://"));
    }

    #[test]
    fn local_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let (store, _) = Store::resolve(d).unwrap();
        store.create_dir_all(&join(d, "x/y")).unwrap();
        let mut w = store.create(&join(d, "x/y/f")).unwrap();
        w.write_all(b"hello world").unwrap();
        w.finish().unwrap();
        let mut r = store.open(&join(d, "x/y/f"), 6).unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "world");
        assert_eq!(store.list_dir(&join(d, "x")).unwrap()[0].path, join(d, "x/y"));
        store.rename(&join(d, "x"), &join(d, "z")).unwrap();
        assert!(store.stat(&join(d, "x")).unwrap().is_none());
        store.remove_all(&join(d, "z")).unwrap();
        assert!(store.stat(&join(d, "z")).unwrap().is_none());
    }

    #[test]
    fn exclusive_creation_tells_exists_from_other_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        Store::Local.create_new(&join(d, "f")).unwrap().finish().unwrap();
        assert!(matches!(Store::Local.create_new(&join(d, "f")), Err(CreateError::Exists(_))));
        let err = Store::Local.create_new(&join(d, "f/under-a-file")).err().unwrap();
        assert!(matches!(err, CreateError::Other(_)), "{err}");
    }
}
