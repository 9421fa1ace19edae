//! Source: an input location → the files to read → lines → events.
//!
//! `--input` is a file or a directory read recursively, the layout Spark and
//! Hadoop jobs write (`month=2011-01/part-00000.jsonl.gz`). Names starting
//! with `.` or `_` (`_SUCCESS`, `.part.crc`, `_temporary/`) are skipped as
//! Hadoop does, and so are `*.md` files (a README next to the partitions is
//! not event data); `.gz` files are decompressed. Files are listed in path
//! order so every worker sees the same list and can take its share of it.
//! A dangling symbolic link is skipped with a warning, not an error. Each
//! file is also named relative to the input's canonical root ([`root`]),
//! which is how a state identifies it.

pub mod event;
pub mod json;
pub mod lines;
pub mod root;

use crate::storage::{Store, file_name, join};
use root::InputRoot;

/// One file of input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputFile {
    /// Where it is read from: a local path or an `hdfs://` URL.
    pub path: String,
    /// Size in bytes as stored (compressed size for `.gz`).
    pub len: u64,
    /// Modification time, ms since the epoch.
    #[serde(default)]
    pub mtime: i64,
    /// The path relative to the input root (`month=2011-01/part-00000.jsonl.gz`):
    /// what a state records.
    #[serde(default)]
    pub relative: String,
}

impl InputFile {
    pub fn is_gzip(&self) -> bool {
        self.path.ends_with(".gz")
    }

    /// The name shown in messages.
    pub fn display(&self) -> String {
        self.path.clone()
    }
}

/// The input of a run, listed.
pub struct Listing {
    pub store: Store,
    /// Where the input is, canonical.
    pub root: InputRoot,
    /// The input files, sorted by path.
    pub files: Vec<InputFile>,
}

/// Lists the input files under `input`, sorted by path.
pub fn list_inputs(input: &str) -> Result<Listing, String> {
    let (store, path) = Store::resolve(input).map_err(|e| format!("--input {e}"))?;
    let top = store
        .stat(&path)
        .map_err(|e| format!("--input {e}"))?
        .ok_or_else(|| format!("--input {input}: No such file or directory"))?;
    let (root, name) = InputRoot::of(&store, &path, top.is_dir).map_err(|e| format!("--input {e}"))?;
    let mut files = Vec::new();
    if let Some(name) = name {
        files.push(InputFile { path: top.path, len: top.len, mtime: top.mtime, relative: name });
    } else {
        let mut dangling = Vec::new();
        walk(&store, (&path, ""), &mut files, &mut dangling).map_err(|e| format!("--input {e}"))?;
        if let Some(first) = dangling.first() {
            tracing::warn!(
                "--input {input}: {} dangling symbolic link(s) skipped (the first: {first})",
                dangling.len()
            );
        }
        if files.is_empty() {
            return Err(format!("--input {input}: no input files in this directory"));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Listing { store, root, files })
}

/// Lists `dir` (`relative` to the root) into `out`, recursively.
fn walk(
    store: &Store,
    (dir, relative): (&str, &str),
    out: &mut Vec<InputFile>,
    dangling: &mut Vec<String>,
) -> Result<(), String> {
    let (entries, links) = store.list_dir_counted(dir)?;
    dangling.extend(links);
    for entry in entries {
        let name = file_name(&entry.path);
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let relative = if relative.is_empty() { name.to_string() } else { join(relative, name) };
        if entry.is_dir {
            walk(store, (&entry.path, &relative), out, dangling)?;
        } else if !name.ends_with(".md") {
            out.push(InputFile { path: entry.path, len: entry.len, mtime: entry.mtime, relative });
        }
    }
    Ok(())
}

/// A piece of input one worker reads: a whole file, or the lines that
/// start in a byte range of a large uncompressed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkUnit {
    pub file: u32,
    pub start: u64,
    pub end: u64,
}

/// Cuts the files into units: uncompressed files larger than `split`
/// bytes into ranges of about `split` bytes (split at line boundaries when
/// read), `.gz` files whole.
pub fn plan_units(files: &[InputFile], split: u64) -> Vec<WorkUnit> {
    let split = split.max(1);
    let mut units = Vec::new();
    for (f, file) in files.iter().enumerate() {
        let pieces = if file.is_gzip() { 1 } else { file.len.div_ceil(split).max(1) };
        for p in 0..pieces {
            let start = file.len * p / pieces;
            let end = file.len * (p + 1) / pieces;
            units.push(WorkUnit { file: f as u32, start, end: if p + 1 == pieces { u64::MAX } else { end } });
        }
    }
    units
}

/// Splits units among `peers` workers, balancing bytes: largest first, each
/// to the least-loaded worker (ties to the lowest index). Deterministic, so
/// every worker of every process computes the same plan.
pub fn assign_units(units: &[WorkUnit], files: &[InputFile], peers: usize) -> Vec<Vec<usize>> {
    let size = |u: &WorkUnit| u.end.min(files[u.file as usize].len) - u.start;
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by(|&a, &b| size(&units[b]).cmp(&size(&units[a])).then(a.cmp(&b)));
    let mut load = vec![0u64; peers];
    let mut shares = vec![Vec::new(); peers];
    for u in order {
        let (w, _) = load.iter().enumerate().min_by_key(|&(w, l)| (*l, w)).expect("peers > 0");
        load[w] += size(&units[u]).max(1);
        shares[w].push(u);
    }
    for s in &mut shares {
        s.sort_unstable();
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_partitions_and_skips_hadoop_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("month=2011-01")).unwrap();
        std::fs::create_dir_all(p.join("_temporary/0")).unwrap();
        std::fs::write(p.join("month=2011-01/part-00000.jsonl.gz"), b"x").unwrap();
        std::fs::write(p.join("month=2011-01/_SUCCESS"), b"").unwrap();
        std::fs::write(p.join("month=2011-01/.part-00000.crc"), b"").unwrap();
        std::fs::write(p.join("_temporary/0/part-1"), b"x").unwrap();
        std::fs::write(p.join("a.jsonl"), b"xy").unwrap();
        std::fs::write(p.join("README.md"), b"# docs").unwrap();
        let Listing { root, files, .. } = list_inputs(p.to_str().unwrap()).unwrap();
        let prefix = format!("{}/", p.display());
        let names: Vec<_> = files.iter().map(|f| f.path.strip_prefix(&prefix).unwrap().to_string()).collect();
        assert_eq!(names, ["a.jsonl", "month=2011-01/part-00000.jsonl.gz"]);
        let relative: Vec<_> = files.iter().map(|f| f.relative.as_str()).collect();
        assert_eq!(relative, names);
        assert_eq!(root.as_str(), p.canonicalize().unwrap().to_str().unwrap());
        let single = list_inputs(&format!("{}/month=2011-01/../a.jsonl", p.display())).unwrap();
        assert_eq!((single.root, single.files[0].relative.as_str()), (root, "a.jsonl"));
        assert!(files[1].is_gzip());
        assert!(list_inputs("/definitely/not/here").err().unwrap().contains("/definitely/not/here"));
    }

    #[test]
    fn dangling_links_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("a.jsonl"), b"x").unwrap();
        std::os::unix::fs::symlink(p.join("gone.jsonl"), p.join("b.jsonl")).unwrap();
        assert_eq!(list_inputs(p.to_str().unwrap()).unwrap().files.len(), 1);
        let (entries, dangling) = Store::Local.list_dir_counted(p.to_str().unwrap()).unwrap();
        assert_eq!((entries.len(), dangling.len()), (1, 1));
    }

    #[test]
    fn assignment_is_balanced_and_complete() {
        let files: Vec<InputFile> = [10u64, 1, 1, 1, 9, 2]
            .iter()
            .enumerate()
            .map(|(i, &len)| InputFile { path: format!("f{i}"), len, mtime: 0, relative: format!("f{i}") })
            .collect();
        let units = plan_units(&files, 100);
        let shares = assign_units(&units, &files, 2);
        let mut all: Vec<usize> = shares.concat();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
        let load = |s: &Vec<usize>| s.iter().map(|&u| files[units[u].file as usize].len).sum::<u64>();
        assert!(load(&shares[0]).abs_diff(load(&shares[1])) <= 2);
    }

    #[test]
    fn large_plain_files_are_split_gzip_is_not() {
        let files = vec![
            InputFile { path: "a.jsonl".into(), len: 1000, mtime: 0, relative: "a.jsonl".into() },
            InputFile { path: "b.jsonl.gz".into(), len: 1000, mtime: 0, relative: "b.jsonl.gz".into() },
            InputFile { path: "c.jsonl".into(), len: 10, mtime: 0, relative: "c.jsonl".into() },
        ];
        let units = plan_units(&files, 300);
        let a: Vec<_> = units.iter().filter(|u| u.file == 0).map(|u| (u.start, u.end)).collect();
        assert_eq!(a, vec![(0, 250), (250, 500), (500, 750), (750, u64::MAX)]);
        assert_eq!(units.iter().filter(|u| u.file == 1).count(), 1);
        assert_eq!(units.iter().filter(|u| u.file == 2).count(), 1);
    }
}
