//! What the load generators (`query-load`, `events-load`) share: a
//! keep-alive HTTP/1.1 client connection (one request at a time, the status
//! read and the body skipped by its Content-Length) and latency percentiles.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    addr: String,
    reader: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub fn open(addr: &str) -> Conn {
        let reader = TcpStream::connect(addr).ok().map(|s| {
            s.set_nodelay(true).ok();
            s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            BufReader::new(s)
        });
        Conn { addr: addr.to_string(), reader }
    }

    pub fn post(&mut self, path: &str, body: &str) -> std::io::Result<u16> {
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

/// The `p` quantile of sorted latencies (NaN when there are none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}
