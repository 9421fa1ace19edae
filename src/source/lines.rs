//! A file → its lines, with line numbers, decompressing `.gz`.
//!
//! Lines are split with `memchr` in a large buffer instead of `BufRead::lines`
//! (no allocation per line, no UTF-8 check of the whole line: the JSON parser
//! checks the strings it reads). Bytes read from storage are added to a
//! shared counter for the progress bar.
//!
//! A `.gz` file is streamed, member after member (concatenated gzip files
//! are one file), through flate2's zlib-rs inflater straight from a 1 MiB
//! read buffer: memory stays bounded whatever the file's size, and the
//! first corrupt or truncated member is an error naming the file and the
//! last line read (docs/benchmarks.md, "Decompression", has why zlib-rs
//! and why not whole-member inflation).

use super::{InputFile, WorkUnit};
use crate::storage::Store;
use flate2::bufread::MultiGzDecoder;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

const BUFFER: usize = 1 << 20;
/// Bytes read at a time past a line that is too long.
const SKIP_CHUNK: usize = 64 << 10;

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

/// The longest line read by default (`--max-line-bytes`): longer ones are
/// rejected without being held in memory.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// One line as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    Text(&'a [u8]),
    /// Longer than the limit: skipped up to its newline. `head` is its
    /// first `limit + 1` bytes (or fewer, if it ended sooner), `len` its
    /// length.
    TooLong {
        head: &'a [u8],
        len: u64,
    },
}

/// [`read_unit_limited`] with the default limit, for callers that take
/// text only: a line over the limit is given as its first
/// `DEFAULT_MAX_LINE_BYTES + 1` bytes (a cut line, which the event parser
/// rejects), never whole.
pub fn read_unit(
    store: &Store,
    file: &InputFile,
    unit: &WorkUnit,
    bytes_read: &AtomicU64,
    mut f: impl FnMut(u64, &[u8]),
) -> Result<u64, String> {
    read_unit_limited(store, file, unit, DEFAULT_MAX_LINE_BYTES, bytes_read, |no, line| match line {
        Line::Text(text) => f(no, text),
        Line::TooLong { head, .. } => f(no, head),
    })
}

/// Calls `f(line_number, line)` for each line of a work unit: the lines
/// that *start* in `unit.start .. unit.end` (the last one may run past the
/// end). Line numbers count from 1 at the unit's start. A line longer than
/// `max_line_bytes` comes as [`Line::TooLong`]. Errors name the file.
pub fn read_unit_limited(
    store: &Store,
    file: &InputFile,
    unit: &WorkUnit,
    max_line_bytes: usize,
    bytes_read: &AtomicU64,
    mut f: impl FnMut(u64, Line<'_>),
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
    split_lines_within(&mut reader, max_line_bytes, |line| {
        let line_start = pos;
        pos += line_len(&line) + 1;
        if std::mem::take(&mut skip) {
            return true;
        }
        if line_start >= unit.end {
            return false;
        }
        line_no += 1;
        f(
            line_no,
            match line {
                Line::Text(text) => Line::Text(trim_cr(text)),
                too_long => too_long,
            },
        );
        true
    })
    .map_err(|e| {
        let what = if file.is_gzip() { "cannot decompress" } else { "read error" };
        format!("{}: {what} after line {line_no}: {e}", file.display())
    })?;
    Ok(line_no)
}

fn line_len(line: &Line<'_>) -> u64 {
    match line {
        Line::Text(text) => text.len() as u64,
        Line::TooLong { len, .. } => *len,
    }
}

/// Splits a byte stream into lines at `\n`; `f` returns false to stop.
pub fn split_lines(reader: &mut dyn Read, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
    split_lines_within(reader, usize::MAX, |line| match line {
        Line::Text(text) => f(text),
        Line::TooLong { .. } => unreachable!("no line is longer than usize::MAX"),
    })
}

/// Splits a byte stream into lines at `\n`, holding at most
/// `max(max_line_bytes + 1, BUFFER)` bytes: a longer line is read past up to
/// its newline and given as [`Line::TooLong`]. `f` returns false to stop.
pub fn split_lines_within(
    reader: &mut dyn Read,
    max_line_bytes: usize,
    mut f: impl FnMut(Line<'_>) -> bool,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUFFER];
    let mut filled = 0usize;
    // `buf[..scanned]` holds no terminator.
    let mut scanned = 0usize;
    loop {
        let mut start = 0;
        while let Some(p) = memchr::memchr(b'\n', &buf[scanned..filled]) {
            let nl = scanned + p;
            if !f(limited(&buf[start..nl], max_line_bytes)) {
                return Ok(());
            }
            start = nl + 1;
            scanned = start;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        scanned = filled;
        if filled == buf.len() {
            if filled > max_line_bytes {
                // The line in the buffer is too long: read past it.
                let head_len = max_line_bytes + 1;
                if buf.len() - head_len < SKIP_CHUNK {
                    buf.resize(head_len + SKIP_CHUNK, 0);
                }
                let (len, rest) = skip_line(reader, &mut buf[head_len..], filled - head_len)?;
                let line = Line::TooLong { head: &buf[..head_len], len: len + head_len as u64 };
                let Some((from, to)) = rest else {
                    f(line);
                    return Ok(());
                };
                if !f(line) {
                    return Ok(());
                }
                buf.copy_within(head_len + from..head_len + to, 0);
                filled = to - from;
                scanned = 0;
                continue;
            }
            // A line longer than the buffer: grow it, up to the limit.
            let grown = buf.len().saturating_mul(2).min(max_line_bytes.saturating_add(1)).max(buf.len() + 1);
            buf.resize(grown, 0);
        }
        let n = match reader.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if filled > 0 {
                f(limited(&buf[..filled], max_line_bytes));
            }
            return Ok(());
        }
        filled += n;
    }
}

/// A complete line, as text or too long.
fn limited(text: &[u8], max_line_bytes: usize) -> Line<'_> {
    if text.len() > max_line_bytes {
        Line::TooLong { head: &text[..max_line_bytes + 1], len: text.len() as u64 }
    } else {
        Line::Text(text)
    }
}

/// Reads past the rest of a line, using `scratch` (whose first `held`
/// bytes are already of the line). Returns the line's length from the
/// start of `scratch`, and the range in `scratch` of the bytes read after
/// its newline (`None`: the stream ended first).
fn skip_line(reader: &mut dyn Read, scratch: &mut [u8], held: usize) -> io::Result<(u64, Option<(usize, usize)>)> {
    let mut len = held as u64;
    loop {
        let n = match reader.read(scratch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok((len, None));
        }
        if let Some(p) = memchr::memchr(b'\n', &scratch[..n]) {
            return Ok((len + p as u64, Some((p + 1, n))));
        }
        len += n as u64;
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
        let file = InputFile {
            path: path.to_str().unwrap().into(),
            len: text.len() as u64,
            mtime: 0,
            relative: String::new(),
        };
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

    fn limited(data: &[u8], max: usize) -> Vec<Result<Vec<u8>, (usize, u64)>> {
        let mut out = Vec::new();
        split_lines_within(&mut &data[..], max, |l| {
            out.push(match l {
                Line::Text(t) => Ok(t.to_vec()),
                Line::TooLong { head, len } => Err((head.len(), len)),
            });
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn lines_over_the_limit_are_skipped_to_the_next_newline() {
        assert_eq!(
            limited(b"abc\nabcdefgh\nxy\nabcdefghij", 5),
            vec![Ok(b"abc".to_vec()), Err((6, 8)), Ok(b"xy".to_vec()), Err((6, 10))]
        );
        // Longer than the buffer: the buffer stops growing at the limit.
        let mut data = vec![b'x'; BUFFER * 5 + 3];
        data.extend_from_slice(b"\nafter\n");
        data.extend(vec![b'y'; BUFFER * 2]);
        let out = limited(&data, BUFFER + 10);
        assert_eq!(
            out,
            vec![
                Err((BUFFER + 11, BUFFER as u64 * 5 + 3)),
                Ok(b"after".to_vec()),
                Err((BUFFER + 11, BUFFER as u64 * 2))
            ]
        );
        assert_eq!(limited(&vec![b'z'; BUFFER + 1], BUFFER), vec![Err((BUFFER + 1, BUFFER as u64 + 1))]);
        assert_eq!(limited(&vec![b'z'; BUFFER], BUFFER), vec![Ok(vec![b'z'; BUFFER])]);
    }

    /// A huge compressed line is read in bounded memory and the next line
    /// still counts, at its right number.
    #[test]
    fn a_huge_gzip_line_is_skipped() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        gz.write_all(b"first\n").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&chunk).unwrap();
        }
        gz.write_all(b"\nlast\n").unwrap();
        gz.finish().unwrap();
        let file = InputFile {
            len: std::fs::metadata(&path).unwrap().len(),
            path: path.to_str().unwrap().into(),
            mtime: 0,
            relative: String::new(),
        };
        let unit = WorkUnit { file: 0, start: 0, end: u64::MAX };
        let mut seen = Vec::new();
        read_unit_limited(&Store::Local, &file, &unit, 1000, &AtomicU64::new(0), |no, l| {
            seen.push((no, matches!(l, Line::TooLong { len, .. } if len == 64 << 20), l == Line::Text(b"last")))
        })
        .unwrap();
        assert_eq!(seen, vec![(1, false, false), (2, true, false), (3, false, true)]);
    }

    #[test]
    fn gzip_and_line_numbers() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        gz.write_all(b"one\ntwo\nthree\n").unwrap();
        gz.finish().unwrap();
        let file = InputFile {
            len: std::fs::metadata(&path).unwrap().len(),
            path: path.to_str().unwrap().into(),
            mtime: 0,
            relative: String::new(),
        };
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

    /// `members` gzipped one after the other into one file.
    fn gzip_members(dir: &std::path::Path, name: &str, members: &[&[u8]]) -> InputFile {
        use std::io::Write;
        let path = dir.join(name);
        let mut bytes = Vec::new();
        for member in members {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(member).unwrap();
            bytes.extend(gz.finish().unwrap());
        }
        std::fs::write(&path, &bytes).unwrap();
        InputFile { len: bytes.len() as u64, path: path.to_str().unwrap().into(), mtime: 0, relative: String::new() }
    }

    fn read_all(file: &InputFile) -> Result<Vec<(u64, String)>, String> {
        let unit = WorkUnit { file: 0, start: 0, end: u64::MAX };
        let mut seen = Vec::new();
        read_unit(&Store::Local, file, &unit, &AtomicU64::new(0), |no, l| {
            seen.push((no, String::from_utf8(l.to_vec()).unwrap()))
        })?;
        Ok(seen)
    }

    /// Concatenated members are one file; a line may straddle two members.
    #[test]
    fn gzip_members_are_read_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let file = gzip_members(dir.path(), "m.jsonl.gz", &[b"one\ntw", b"o\n", b"", b"three\nfour"]);
        let seen = read_all(&file).unwrap();
        let want: Vec<(u64, String)> =
            ["one", "two", "three", "four"].iter().enumerate().map(|(i, l)| (i as u64 + 1, l.to_string())).collect();
        assert_eq!(seen, want);
    }

    /// A damaged second member, or a file cut short, fails after the lines
    /// read before, naming the file.
    #[test]
    fn a_corrupt_or_truncated_member_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = gzip_members(dir.path(), "good.gz", &[b"a\nb\n", b"c\nd\n"]);
        let bytes = std::fs::read(&good.path).unwrap();
        let first_len = gzip_members(dir.path(), "first.gz", &[b"a\nb\n"]).len as usize;
        let mut corrupt = bytes.clone();
        // Past the second member's 10-byte header: its deflate data.
        for b in &mut corrupt[first_len + 10..bytes.len() - 8] {
            *b = 0xff;
        }
        for (name, data) in [("corrupt.gz", corrupt), ("truncated.gz", bytes[..bytes.len() - 5].to_vec())] {
            let path = dir.path().join(name);
            std::fs::write(&path, &data).unwrap();
            let file = InputFile {
                len: data.len() as u64,
                path: path.to_str().unwrap().into(),
                mtime: 0,
                relative: String::new(),
            };
            let err = read_all(&file).unwrap_err();
            assert!(err.contains(name) && err.contains("cannot decompress after line"), "{err}");
        }
    }

    /// A member far larger than the read buffer streams through it.
    #[test]
    fn a_large_member_streams() {
        let text: Vec<u8> = (0..200_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        assert!(text.len() > 2 * BUFFER);
        let dir = tempfile::tempdir().unwrap();
        let seen = read_all(&gzip_members(dir.path(), "big.gz", &[&text])).unwrap();
        assert_eq!(seen.len(), 200_000);
        assert_eq!(seen[199_999], (200_000, "line 199999".to_string()));
    }

    #[test]
    fn corrupt_gzip_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gz");
        std::fs::write(&path, b"\x1f\x8b\x08\x00garbage-not-deflate").unwrap();
        let file = InputFile { len: 10, path: path.to_str().unwrap().into(), mtime: 0, relative: String::new() };
        let unit = WorkUnit { file: 0, start: 0, end: u64::MAX };
        let err = read_unit(&Store::Local, &file, &unit, &AtomicU64::new(0), |_, _| {}).unwrap_err();
        assert!(err.contains("bad.gz") && err.contains("decompress"), "{err}");
    }
}
