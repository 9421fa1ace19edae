//! Measures gzip decompression of a file set, single-threaded: CPU seconds
//! (getrusage, user + sys) and GB/s of output, for the two ways of reading
//! a `.gz` input that issue 14 compares.
//!
//! `stream`: `flate2::bufread::MultiGzDecoder` over a 1 MiB `BufReader`,
//! read 1 MiB at a time (what `src/source/lines.rs` does; `stream-read`:
//! `read::MultiGzDecoder`, which adds its own 32 KiB buffer); the inflater is the
//! one flate2 was built with (zlib-rs in this project; build the file in a
//! scratch crate with `flate2/rust_backend` or `flate2/zlib-ng` to compare
//! others, see docs/benchmarks.md). `whole`: the file read whole and each
//! member inflated at once by libdeflate into a buffer sized from its ISIZE
//! (single-member files only: a measuring tool, not a reader; built with
//! `--features bench-libdeflate`).
//!
//! ```text
//! cargo run --release --example inflate -- stream /work/bench-data/ur-large/*/*.gz
//! cargo run --release --example inflate --features bench-libdeflate -- whole …
//! ```

use std::io::{self, Read};
use std::time::Instant;

fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Bytes out of one file, streamed: through flate2's own 32 KiB buffer
/// (`read::MultiGzDecoder`, as `lines.rs` did) or straight from ours
/// (`bufread::MultiGzDecoder`).
fn stream(path: &str, buf: &mut [u8], own_buffer: bool) -> io::Result<u64> {
    let file = io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut gz: Box<dyn Read> = if own_buffer {
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    };
    let mut total = 0u64;
    loop {
        match gz.read(buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// Bytes out of one single-member file, inflated whole by libdeflate.
#[cfg(feature = "bench-libdeflate")]
fn whole(path: &str, out: &mut Vec<u8>, inflater: &mut libdeflater::Decompressor) -> io::Result<u64> {
    let data = std::fs::read(path)?;
    let Some(tail) = data.len().checked_sub(4).map(|at| &data[at..]) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "shorter than a gzip trailer"));
    };
    let isize = u32::from_le_bytes(tail.try_into().expect("4 bytes")) as usize;
    if out.len() < isize {
        out.resize(isize, 0);
    }
    let n = inflater
        .gzip_decompress(&data, &mut out[..isize])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))?;
    Ok(n as u64)
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let files: Vec<String> = args.collect();
    if !matches!(mode.as_str(), "stream" | "stream-read" | "whole") || files.is_empty() {
        eprintln!("usage: inflate stream|stream-read|whole FILE.gz...");
        std::process::exit(2);
    }
    let mut buf = vec![0u8; 1 << 20];
    #[cfg(feature = "bench-libdeflate")]
    let (mut out, mut inflater) = (Vec::new(), libdeflater::Decompressor::new());
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let mut bytes = 0u64;
    for path in &files {
        bytes += match mode.as_str() {
            "stream" => stream(path, &mut buf, true)?,
            "stream-read" => stream(path, &mut buf, false)?,
            #[cfg(feature = "bench-libdeflate")]
            _ => whole(path, &mut out, &mut inflater)?,
            #[cfg(not(feature = "bench-libdeflate"))]
            _ => panic!("`whole` needs --features bench-libdeflate"),
        };
    }
    let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    println!(
        "{mode}\tfiles {}\tout {bytes}\tcpu_s {cpu:.3}\twall_s {wall:.3}\tGB/s(cpu) {:.3}",
        files.len(),
        bytes as f64 / cpu / 1e9
    );
    Ok(())
}
