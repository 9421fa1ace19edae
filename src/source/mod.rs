//! Source: an input location → the files to read → lines → events.
//!
//! `--input` is a file or a directory read recursively, the layout Spark and
//! Hadoop jobs write (`month=2011-01/part-00000.jsonl.gz`). Names starting
//! with `.` or `_` (`_SUCCESS`, `.part.crc`, `_temporary/`) are skipped as
//! Hadoop does, and so are `*.md` files (a README next to the partitions is
//! not event data); `.gz` files are decompressed. Files are listed in path
//! order so every worker sees the same list and can take its share of it.

pub mod event;
pub mod json;
pub mod lines;
pub mod time;

use std::path::{Path, PathBuf};

/// One file of input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputFile {
    /// Where it is read from.
    pub path: PathBuf,
    /// Size in bytes as stored (compressed size for `.gz`).
    pub len: u64,
}

impl InputFile {
    pub fn is_gzip(&self) -> bool {
        self.path.extension().is_some_and(|e| e == "gz")
    }

    /// The name shown in messages.
    pub fn display(&self) -> String {
        self.path.display().to_string()
    }
}

/// Lists the input files under `input`, sorted by path.
pub fn list_inputs(input: &str) -> Result<Vec<InputFile>, String> {
    if let Some(scheme_end) = input.find("://") {
        let scheme = &input[..scheme_end];
        if scheme != "file" {
            return Err(format!(
                "--input {input}: `{scheme}://` is not supported by this build (use a local path or file://)"
            ));
        }
        return list_local(Path::new(&input[scheme_end + 3..]), input);
    }
    list_local(Path::new(input), input)
}

fn list_local(root: &Path, shown: &str) -> Result<Vec<InputFile>, String> {
    let meta = std::fs::metadata(root).map_err(|e| format!("--input {shown}: {e}"))?;
    let mut files = Vec::new();
    if meta.is_file() {
        files.push(InputFile {
            path: root.to_path_buf(),
            len: meta.len(),
        });
    } else {
        walk(root, &mut files).map_err(|e| format!("--input {shown}: {e}"))?;
        if files.is_empty() {
            return Err(format!("--input {shown}: no input files in this directory"));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<InputFile>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let meta = std::fs::metadata(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else if meta.is_file() && !name.ends_with(".md") {
            out.push(InputFile {
                path,
                len: meta.len(),
            });
        }
    }
    Ok(())
}

/// Splits files among `peers` workers, balancing bytes: largest first, each
/// to the least-loaded worker (ties to the lowest index). Deterministic, so
/// every worker computes the same plan.
pub fn assign_files(files: &[InputFile], peers: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| files[b].len.cmp(&files[a].len).then(a.cmp(&b)));
    let mut load = vec![0u64; peers];
    let mut shares = vec![Vec::new(); peers];
    for f in order {
        let (w, _) = load
            .iter()
            .enumerate()
            .min_by_key(|&(w, l)| (*l, w))
            .expect("peers > 0");
        load[w] += files[f].len.max(1);
        shares[w].push(f);
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
        let files = list_inputs(p.to_str().unwrap()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(p)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["a.jsonl", "month=2011-01/part-00000.jsonl.gz"]);
        assert!(files[1].is_gzip());
        assert!(
            list_inputs("/definitely/not/here")
                .unwrap_err()
                .contains("/definitely/not/here")
        );
    }

    #[test]
    fn assignment_is_balanced_and_complete() {
        let files: Vec<InputFile> = [10u64, 1, 1, 1, 9, 2]
            .iter()
            .enumerate()
            .map(|(i, &len)| InputFile {
                path: format!("f{i}").into(),
                len,
            })
            .collect();
        let shares = assign_files(&files, 2);
        let mut all: Vec<usize> = shares.concat();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
        let load = |s: &Vec<usize>| s.iter().map(|&f| files[f].len).sum::<u64>();
        assert!(load(&shares[0]).abs_diff(load(&shares[1])) <= 2);
    }
}
