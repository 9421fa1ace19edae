//! A file → its lines, with line numbers, decompressing `.gz`.
//!
//! Lines are split with `memchr` in a large buffer instead of `BufRead::lines`
//! (no allocation per line, no UTF-8 check of the whole line: the JSON parser
//! checks the strings it reads). Bytes read from storage are added to a
//! shared counter for the progress bar.

use super::{InputFile, WorkUnit};
use crate::storage::Store;
use flate2::read::MultiGzDecoder;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

const BUFFER: usize = 1 << 20;

/// Counts bytes read from the underlying file into a shared counter.
struct Counting<'a, R> {
    inner: R,
    counter: &'a AtomicU64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Calls `f(line_number, line)` for each line of a work unit: the lines
/// that *start* in `unit.start .. unit.end` (the last one may run past the
/// end). Line numbers count from 1 at the unit's start. Errors name the file.
pub fn read_unit(
    store: &Store,
    file: &InputFile,
    unit: &WorkUnit,
    bytes_read: &AtomicU64,
    mut f: impl FnMut(u64, &[u8]),
) -> Result<u64, String> {
    let open_at = unit.start.saturating_sub(1);
    let raw = store.open(&file.path, open_at)?;
    let counting = Counting { inner: raw, counter: bytes_read };
    let mut reader: Box<dyn Read> = if file.is_gzip() {
        Box::new(MultiGzDecoder::new(io::BufReader::with_capacity(BUFFER, counting)))
    } else {
        Box::new(counting)
    };
    // From inside the range, the first piece read belongs to the unit before.
    let mut skip = unit.start > 0;
    let mut pos = open_at;
    let mut line_no = 0u64;
    split_lines(&mut reader, |line| {
        let line_start = pos;
        pos += line.len() as u64 + 1;
        if std::mem::take(&mut skip) {
            return true;
        }
        if line_start >= unit.end {
            return false;
        }
        line_no += 1;
        f(line_no, trim_cr(line));
        true
    })
    .map_err(|e| {
        let what = if file.is_gzip() { "cannot decompress" } else { "read error" };
        format!("{}: {what} after line {line_no}: {e}", file.display())
    })?;
    Ok(line_no)
}

/// Splits a byte stream into lines at `\n`; `f` returns false to stop.
pub fn split_lines(reader: &mut dyn Read, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
    let mut buf = vec![0u8; BUFFER];
    let mut filled = 0usize;
    loop {
        if filled == buf.len() {
            // A line longer than the buffer: grow it.
            buf.resize(buf.len() * 2, 0);
        }
        let n = match reader.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if filled > 0 {
                f(&buf[..filled]);
            }
            return Ok(());
        }
        let end = filled + n;
        let mut start = 0;
        // Only the new bytes can hold new terminators.
        let mut search_from = filled;
        while let Some(p) = memchr::memchr(b'\n', &buf[search_from..end]) {
            let nl = search_from + p;
            if !f(&buf[start..nl]) {
                return Ok(());
            }
            start = nl + 1;
            search_from = start;
        }
        buf.copy_within(start..end, 0);
        filled = end - start;
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        split_lines(&mut &data[..], |l| {
            out.push(trim_cr(l).to_vec());
            true
        })
        .unwrap();
        out
    }

    /// Every line is read exactly once, whatever the cut points.
    #[test]
    fn ranges_partition_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        let lines: Vec<String> = (0..200).map(|i| "x".repeat(i % 17) + &i.to_string()).collect();
        let text = lines.join("\n") + "\n";
        std::fs::write(&path, &text).unwrap();
        let file = InputFile { path: path.to_str().unwrap().into(), len: text.len() as u64, mtime: 0 };
        for split in [1u64, 7, 50, 333, 10_000] {
            let units = crate::source::plan_units(std::slice::from_ref(&file), split);
            let mut seen = Vec::new();
            let mut counts = Vec::new();
            for unit in &units {
                let n = read_unit(&Store::Local, &file, unit, &AtomicU64::new(0), |_, l| {
                    seen.push(String::from_utf8(l.to_vec()).unwrap())
                })
                .unwrap();
                counts.push(n);
            }
            assert_eq!(seen, lines, "split {split}");
            assert_eq!(counts.iter().sum::<u64>(), 200);
        }
    }

    #[test]
    fn splits() {
        assert_eq!(lines_of(b"a\nbb\r\n\nccc"), vec![b"a".to_vec(), b"bb".to_vec(), b"".to_vec(), b"ccc".to_vec()]);
        assert_eq!(lines_of(b"a\n"), vec![b"a".to_vec()]);
        assert!(lines_of(b"").is_empty());
    }

    #[test]
    fn long_lines_cross_buffers() {
        let long = vec![b'x'; BUFFER * 3 + 17];
        let mut data = long.clone();
        data.push(b'\n');
        data.extend_from_slice(b"tail");
        let lines = lines_of(&data);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], long);
        assert_eq!(lines[1], b"tail");
    }

    #[test]
    fn gzip_and_line_numbers() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        gz.write_all(b"one\ntwo\nthree\n").unwrap();
        gz.finish().unwrap();
        let file =
            InputFile { len: std::fs::metadata(&path).unwrap().len(), path: path.to_str().unwrap().into(), mtime: 0 };
        let counter = AtomicU64::new(0);
        let mut seen = Vec::new();
        let unit = WorkUnit { file: 0, start: 0, end: u64::MAX };
        let n = read_unit(&Store::Local, &file, &unit, &counter, |no, l| {
            seen.push((no, String::from_utf8(l.to_vec()).unwrap()))
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen[2], (3, "three".to_string()));
        assert_eq!(counter.load(Ordering::Relaxed), file.len);
    }

    #[test]
    fn corrupt_gzip_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gz");
        std::fs::write(&path, b"\x1f\x8b\x08\x00garbage-not-deflate").unwrap();
        let file = InputFile { len: 10, path: path.to_str().unwrap().into(), mtime: 0 };
        let unit = WorkUnit { file: 0, start: 0, end: u64::MAX };
        let err = read_unit(&Store::Local, &file, &unit, &AtomicU64::new(0), |_, _| {}).unwrap_err();
        assert!(err.contains("bad.gz") && err.contains("decompress"), "{err}");
    }
}
