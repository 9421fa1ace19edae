//! Event load for `ur events`, from its own process: N clients on
//! keep-alive connections post events (one per request to `/events.json`,
//! or `--batch` per request to `/batch/events.json`) for `--seconds`, and
//! the acknowledgement latency distribution and events/s are printed.
//!
//! ```text
//! cargo run --release --example events-load -- --addr 127.0.0.1:7070 --key KEY \
//!     --clients 16 --batch 50 --seconds 10
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let mut addr = "127.0.0.1:7070".to_string();
    let mut key = String::new();
    let (mut clients, mut batch, mut seconds) = (1usize, 1usize, 10u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = value,
            "--key" => key = value,
            "--clients" => clients = value.parse().expect("--clients N"),
            "--batch" => batch = value.parse().expect("--batch N"),
            "--seconds" => seconds = value.parse().expect("--seconds N"),
            other => panic!("unknown flag {other}"),
        }
    }
    let errors = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let path = if batch == 1 {
        format!("/events.json?accessKey={key}")
    } else {
        format!("/batch/events.json?accessKey={key}")
    };
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, path, errors, events, latencies) =
                (addr.clone(), path.clone(), errors.clone(), events.clone(), latencies.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(&addr);
                let mut mine = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let one = |i: u64| {
                        format!(
                            r#"{{"event":"view","entityType":"user","entityId":"u-{c}-{i}","targetEntityType":"item","targetEntityId":"i-{}","properties":{{}},"eventTime":"2026-01-15T12:00:00.000+0000"}}"#,
                            i % 1000
                        )
                    };
                    let body = if batch == 1 {
                        one(n)
                    } else {
                        format!("[{}]", (0..batch as u64).map(|i| one(n + i)).collect::<Vec<_>>().join(","))
                    };
                    n += batch as u64;
                    let t = Instant::now();
                    match conn.post(&path, &body) {
                        Ok(201 | 200) => {
                            mine.push(t.elapsed().as_secs_f64() * 1000.0);
                            events.fetch_add(batch as u64, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            conn = Conn::open(&addr);
                        }
                    }
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut l = std::mem::take(&mut *latencies.lock().unwrap());
    l.sort_by(f64::total_cmp);
    let pct =
        |p: f64| l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or(f64::NAN);
    println!(
        "clients {clients} batch {batch}: {} requests, {} errors in {elapsed:.1} s = {:.0} events/s; ack latency ms p50 {:.2} p99 {:.2} max {:.2}",
        l.len(),
        errors.load(Ordering::Relaxed),
        events.load(Ordering::Relaxed) as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    addr: String,
    reader: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let reader = TcpStream::connect(addr).ok().map(|s| {
            s.set_nodelay(true).ok();
            s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            BufReader::new(s)
        });
        Conn { addr: addr.to_string(), reader }
    }

    fn post(&mut self, path: &str, body: &str) -> std::io::Result<u16> {
        let reader = self.reader.as_mut().ok_or_else(|| std::io::Error::other("not connected"))?;
        write!(
            reader.get_mut(),
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut buf = vec![0u8; length];
        reader.read_exact(&mut buf)?;
        Ok(status)
    }
}
