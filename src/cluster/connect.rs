//! Connecting the processes of a run, with a deadline.
//!
//! Process p connects to every process below it and accepts a connection
//! from every process above it (timely's convention), twice: one connection
//! for timely's data and one for the heartbeats of the
//! [`super::watchdog`]. On each, both sides exchange a hello: the process index, the number of processes and workers,
//! a fingerprint of the arguments, and process 0's clock and run id, which
//! every process adopts (so ranking windows and output names agree). A
//! mismatch is an error naming the process; a process that has not connected
//! when the deadline passes is named in the error. The data sockets are then
//! handed to timely, with a TCP user timeout so that a cut link fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The hello's first bytes on a data connection and on a heartbeat one.
const MAGIC: &[u8; 8] = b"URTRAIN1";
const HEARTBEAT_MAGIC: &[u8; 8] = b"URTRAINH";
const HELLO_BYTES: usize = 8 + 7 * 8;

/// What a process says about itself when it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub process: u64,
    pub processes: u64,
    pub workers: u64,
    /// Hash of the arguments that must be equal on every process.
    pub fingerprint: u64,
    /// This process's clock (ms since the epoch); process 0's is adopted.
    pub now: i64,
    /// A random id of the run; process 0's is adopted.
    pub run_id: u64,
    /// This process's wall clock at start (ms); process 0's names the run's
    /// Elasticsearch indices.
    pub started: i64,
}

impl Hello {
    fn encode(&self, channel: Channel) -> [u8; HELLO_BYTES] {
        let mut b = [0u8; HELLO_BYTES];
        b[..8].copy_from_slice(match channel {
            Channel::Data => MAGIC,
            Channel::Heartbeat => HEARTBEAT_MAGIC,
        });
        for (k, v) in [
            self.process,
            self.processes,
            self.workers,
            self.fingerprint,
            self.now as u64,
            self.run_id,
            self.started as u64,
        ]
        .into_iter()
        .enumerate()
        {
            b[8 + 8 * k..16 + 8 * k].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn decode(b: &[u8; HELLO_BYTES]) -> Option<(Hello, Channel)> {
        let channel = match &b[..8] {
            m if m == MAGIC => Channel::Data,
            m if m == HEARTBEAT_MAGIC => Channel::Heartbeat,
            _ => return None,
        };
        let v = |k: usize| u64::from_le_bytes(b[8 + 8 * k..16 + 8 * k].try_into().expect("8 bytes"));
        let hello = Hello {
            process: v(0),
            processes: v(1),
            workers: v(2),
            fingerprint: v(3),
            now: v(4) as i64,
            run_id: v(5),
            started: v(6) as i64,
        };
        Some((hello, channel))
    }
}

/// What a connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    /// Timely's data and progress.
    Data,
    /// The watchdog's heartbeats.
    Heartbeat,
}

/// The connections of a process to the others, by process (`None` for this
/// one), and what the processes agreed on.
#[derive(Debug)]
pub struct Connections {
    /// Timely's connections.
    pub data: Vec<Option<TcpStream>>,
    /// The watchdog's connections.
    pub heartbeats: Vec<Option<TcpStream>>,
    pub agreement: Agreement,
}

/// What all processes agree on: process 0's clock, run id and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    pub now: i64,
    pub run_id: u64,
    pub started: i64,
}

/// Connects to every other process within `timeout`. A data connection
/// whose sent data is not acknowledged for `peer_timeout` fails.
pub fn connect_all(
    addresses: &[String],
    hello: Hello,
    timeout: Duration,
    peer_timeout: Duration,
) -> Result<Connections, String> {
    let me = hello.process as usize;
    let n = addresses.len();
    let deadline = Instant::now() + timeout;
    let listener = listen(&addresses[me])?;
    let mut sockets: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    let mut heartbeats: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    let mut agreement = (me == 0).then_some(Agreement { now: hello.now, run_id: hello.run_id, started: hello.started });
    let mut last_error: Vec<Option<String>> = vec![None; n];

    loop {
        let mut progressed = false;
        for j in 0..me {
            for (channel, slots) in [(Channel::Data, &mut sockets), (Channel::Heartbeat, &mut heartbeats)] {
                if slots[j].is_some() {
                    continue;
                }
                match dial(&addresses[j], &hello, channel, deadline) {
                    Ok((stream, theirs)) => {
                        check(&theirs, &hello, j, &addresses[j])?;
                        if j == 0 {
                            agreement =
                                Some(Agreement { now: theirs.now, run_id: theirs.run_id, started: theirs.started });
                        }
                        slots[j] = Some(stream);
                        progressed = true;
                    }
                    Err(e) => last_error[j] = Some(e),
                }
            }
        }
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    progressed = true;
                    let Ok((stream, theirs, channel)) = answer(stream, &hello, deadline) else {
                        tracing::debug!(%peer, "ignored a connection that is not ur-train");
                        continue;
                    };
                    let j = theirs.process as usize;
                    if j <= me || j >= n {
                        return Err(format!(
                            "a process at {peer} says it is process {j}; only processes {}..{n} connect to process {me}",
                            me + 1
                        ));
                    }
                    let slots = match channel {
                        Channel::Data => &mut sockets,
                        Channel::Heartbeat => &mut heartbeats,
                    };
                    if slots[j].is_some() {
                        return Err(format!(
                            "two processes say they are process {j} ({}); check --process",
                            addresses[j]
                        ));
                    }
                    check(&theirs, &hello, j, &addresses[j])?;
                    slots[j] = Some(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("accepting connections on {}: {e}", addresses[me])),
            }
        }
        let missing: Vec<usize> =
            (0..n).filter(|&j| j != me && (sockets[j].is_none() || heartbeats[j].is_none())).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = missing
                .iter()
                .map(|&j| match &last_error[j] {
                    Some(e) => format!("process {j} ({}: {e})", addresses[j]),
                    None => format!("process {j} ({})", addresses[j]),
                })
                .collect();
            return Err(format!(
                "gave up after {}s waiting for {}: is ur-train running there with the same --hosts file?",
                timeout.as_secs(),
                names.join(", ")
            ));
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for s in sockets.iter().flatten() {
        s.set_read_timeout(None).and_then(|_| s.set_write_timeout(None)).map_err(|e| e.to_string())?;
        keepalive(s, peer_timeout);
    }
    let agreement = agreement.ok_or("no hello from process 0")?;
    Ok(Connections { data: sockets, heartbeats, agreement })
}

fn resolve(address: &str) -> Result<Vec<SocketAddr>, String> {
    address.to_socket_addrs().map(|a| a.collect()).map_err(|e| format!("cannot resolve {address}: {e}"))
}

fn listen(address: &str) -> Result<TcpListener, String> {
    let mut last = String::from("no address");
    for addr in resolve(address)? {
        match TcpListener::bind(addr) {
            Ok(l) => {
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                return Ok(l);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("cannot listen on {address} (this process's line of the hosts file): {last}"))
}

fn dial(address: &str, hello: &Hello, channel: Channel, deadline: Instant) -> Result<(TcpStream, Hello), String> {
    let mut last = String::from("no address");
    for addr in resolve(address)? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => return exchange(stream, hello, channel, deadline).map(|(s, h, _)| (s, h)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Answers a connection: the dialer's hello says what it carries.
fn answer(stream: TcpStream, hello: &Hello, deadline: Instant) -> Result<(TcpStream, Hello, Channel), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    exchange(stream, hello, Channel::Data, deadline)
}

fn exchange(
    mut stream: TcpStream,
    hello: &Hello,
    channel: Channel,
    deadline: Instant,
) -> Result<(TcpStream, Hello, Channel), String> {
    let wait =
        deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)).min(Duration::from_secs(10));
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(wait)).map_err(|e| e.to_string())?;
    stream.write_all(&hello.encode(channel)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; HELLO_BYTES];
    stream.read_exact(&mut buf).map_err(|e| e.to_string())?;
    let (theirs, channel) = Hello::decode(&buf).ok_or("not an ur-train process")?;
    Ok((stream, theirs, channel))
}

fn check(theirs: &Hello, mine: &Hello, j: usize, address: &str) -> Result<(), String> {
    if theirs.process as usize != j {
        return Err(format!(
            "{address} answered as process {} but is line {j} of the hosts file; check --process",
            theirs.process
        ));
    }
    if theirs.processes != mine.processes {
        return Err(format!(
            "process {j} ({address}) has {} hosts in its hosts file, this one {}: use the same file everywhere",
            theirs.processes, mine.processes
        ));
    }
    if theirs.workers != mine.workers {
        return Err(format!(
            "process {j} ({address}) runs {} workers, this one {}: pass the same --workers everywhere",
            theirs.workers, mine.workers
        ));
    }
    if theirs.fingerprint != mine.fingerprint {
        return Err(format!(
            "process {j} ({address}) was started with other arguments or another engine file: every process must run the same command"
        ));
    }
    Ok(())
}

/// Detects a dead peer within about a minute even if no packet says so,
/// and fails a send not acknowledged within `user_timeout` (a cut link).
fn keepalive(stream: &TcpStream, user_timeout: Duration) {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: a valid socket fd and a pointer to an int of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    #[cfg(target_os = "linux")]
    {
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 20);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 4);
        let ms = user_timeout.as_millis().clamp(1, libc::c_int::MAX as u128) as libc::c_int;
        set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: Duration = Duration::from_secs(30);

    fn hello(process: u64, processes: u64) -> Hello {
        Hello {
            process,
            processes,
            workers: 2,
            fingerprint: 7,
            now: 1000 + process as i64,
            run_id: 40 + process,
            started: 5000 + process as i64,
        }
    }

    fn free_ports(n: usize) -> Vec<String> {
        let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect()
    }

    #[test]
    fn three_processes_connect_and_adopt_process_0() {
        let addresses = free_ports(3);
        let handles: Vec<_> = (0..3u64)
            .map(|p| {
                let addresses = addresses.clone();
                std::thread::spawn(move || connect_all(&addresses, hello(p, 3), Duration::from_secs(20), PEER))
            })
            .collect();
        for (p, h) in handles.into_iter().enumerate() {
            let c = h.join().unwrap().unwrap();
            assert_eq!(c.agreement, Agreement { now: 1000, run_id: 40, started: 5000 });
            for sockets in [&c.data, &c.heartbeats] {
                assert_eq!(sockets.iter().filter(|s| s.is_some()).count(), 2);
                assert!(sockets[p].is_none());
            }
        }
    }

    #[test]
    fn a_missing_process_is_named() {
        let addresses = free_ports(2);
        let err = connect_all(&addresses, hello(1, 2), Duration::from_secs(1), PEER).unwrap_err();
        assert!(err.contains("process 0") && err.contains(&addresses[0]), "{err}");
    }

    #[test]
    fn different_arguments_are_refused() {
        let addresses = free_ports(2);
        let a = addresses.clone();
        let other = std::thread::spawn(move || {
            connect_all(&a, Hello { workers: 3, ..hello(1, 2) }, Duration::from_secs(10), PEER)
        });
        let err = connect_all(&addresses, hello(0, 2), Duration::from_secs(10), PEER).unwrap_err();
        assert!(err.contains("--workers"), "{err}");
        assert!(other.join().unwrap().unwrap_err().contains("--workers"));
    }
}
