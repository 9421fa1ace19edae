//! Connecting the processes of a run, with a deadline, each connection
//! authenticated.
//!
//! Process p connects to every process below it and accepts a connection
//! from every process above it (timely's convention), twice: one connection
//! for timely's data and one for the heartbeats of the
//! [`super::watchdog`]. On each, both sides first prove that they know the
//! cluster's shared secret ([`super::auth`]); a caller that does not is
//! refused and logged, and the run goes on. Callers are answered on threads
//! of their own, each with a deadline, so that a silent one delays no one.
//! Then both sides exchange a sealed hello: the process index, the number
//! of processes and workers, a fingerprint of the arguments and engine, the
//! binary's version, and process 0's clock and run id, which every process
//! adopts (so ranking windows and output names agree). A mismatch is an
//! error naming the process; a process that has not connected when the
//! deadline passes is named in the error. The data sockets are then handed
//! to timely, with a TCP user timeout so that a cut link fails.

use super::auth::{self, AuthError, Secret, TAG_BYTES};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// A hello: seven numbers and the binary's version.
const HELLO_BYTES: usize = 7 * 8 + VERSION_BYTES;
const VERSION_BYTES: usize = 24;
/// The longest one connection may take to prove itself and say hello.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// This binary's version, as carried in a hello.
fn version() -> [u8; VERSION_BYTES] {
    let mut v = [0u8; VERSION_BYTES];
    let text = env!("CARGO_PKG_VERSION").as_bytes();
    let n = text.len().min(VERSION_BYTES);
    v[..n].copy_from_slice(&text[..n]);
    v
}

fn show_version(v: &[u8; VERSION_BYTES]) -> String {
    String::from_utf8_lossy(v).trim_end_matches('\0').to_string()
}

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
    fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut b = [0u8; HELLO_BYTES];
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
            b[8 * k..8 + 8 * k].copy_from_slice(&v.to_le_bytes());
        }
        b[7 * 8..].copy_from_slice(&version());
        b
    }

    /// The hello and the version of the binary that sent it.
    fn decode(b: &[u8; HELLO_BYTES]) -> (Hello, [u8; VERSION_BYTES]) {
        let v = |k: usize| u64::from_le_bytes(b[8 * k..8 + 8 * k].try_into().expect("8 bytes"));
        let hello = Hello {
            process: v(0),
            processes: v(1),
            workers: v(2),
            fingerprint: v(3),
            now: v(4) as i64,
            run_id: v(5),
            started: v(6) as i64,
        };
        (hello, b[7 * 8..].try_into().expect("version bytes"))
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

impl Channel {
    fn byte(self) -> u8 {
        match self {
            Channel::Data => 1,
            Channel::Heartbeat => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Channel> {
        match b {
            1 => Some(Channel::Data),
            2 => Some(Channel::Heartbeat),
            _ => None,
        }
    }
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

/// A connection answered, by the thread that checked it.
struct Answered {
    peer: SocketAddr,
    result: Result<(TcpStream, Hello, [u8; VERSION_BYTES], Channel), AuthError>,
}

/// The state of connecting, while it lasts.
struct Connecting<'a> {
    addresses: &'a [String],
    hello: Hello,
    secret: Arc<Secret>,
    deadline: Instant,
    data: Vec<Option<TcpStream>>,
    heartbeats: Vec<Option<TcpStream>>,
    agreement: Option<Agreement>,
    /// Why the last attempt to reach each process failed.
    last_error: Vec<Option<String>>,
    /// Connections refused (who called, why), for the message if a process
    /// never comes.
    refused: Vec<String>,
}

/// Connects to every other process within `timeout`, proving to each that
/// this process knows `secret` and checking that it does. A data connection
/// whose sent data is not acknowledged for `peer_timeout` fails.
pub fn connect_all(
    addresses: &[String],
    hello: Hello,
    secret: &Secret,
    timeout: Duration,
    peer_timeout: Duration,
) -> Result<Connections, String> {
    let me = hello.process as usize;
    let n = addresses.len();
    let listener = listen(&addresses[me])?;
    let mut c = Connecting {
        addresses,
        hello,
        secret: Arc::new(secret.clone()),
        deadline: Instant::now() + timeout,
        data: (0..n).map(|_| None).collect(),
        heartbeats: (0..n).map(|_| None).collect(),
        agreement: (me == 0).then_some(Agreement { now: hello.now, run_id: hello.run_id, started: hello.started }),
        last_error: vec![None; n],
        refused: Vec::new(),
    };
    let (answered_tx, answered) = mpsc::channel();
    loop {
        let mut progressed = c.dial_below()?;
        loop {
            match listener.accept() {
                Ok((stream, peer)) => c.answer_in_background(stream, peer, answered_tx.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("accepting connections on {}: {e}", addresses[me])),
            }
        }
        while let Ok(a) = answered.try_recv() {
            progressed |= c.take_answered(a)?;
        }
        let missing: Vec<usize> =
            (0..n).filter(|&j| j != me && (c.data[j].is_none() || c.heartbeats[j].is_none())).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= c.deadline {
            return Err(c.gave_up(&missing, timeout));
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for s in c.data.iter().flatten() {
        s.set_read_timeout(None).and_then(|_| s.set_write_timeout(None)).map_err(|e| e.to_string())?;
        keepalive(s, peer_timeout);
    }
    let agreement = c.agreement.ok_or("no hello from process 0")?;
    Ok(Connections { data: c.data, heartbeats: c.heartbeats, agreement })
}

impl Connecting<'_> {
    fn me(&self) -> usize {
        self.hello.process as usize
    }

    /// Dials every process below this one not connected yet; true if one
    /// connected. A process that refuses this one's secret, or an address
    /// that does not prove it, ends the connecting.
    fn dial_below(&mut self) -> Result<bool, String> {
        let mut progressed = false;
        for j in 0..self.me() {
            for channel in [Channel::Data, Channel::Heartbeat] {
                if self.slots(channel)[j].is_some() {
                    continue;
                }
                let address = &self.addresses[j];
                match dial(address, &self.hello, &self.secret, channel, self.deadline) {
                    Ok((stream, theirs, version)) => {
                        check(&theirs, &version, &self.hello, j, address)?;
                        if j == 0 {
                            self.agreement =
                                Some(Agreement { now: theirs.now, run_id: theirs.run_id, started: theirs.started });
                        }
                        self.slots(channel)[j] = Some(stream);
                        progressed = true;
                    }
                    Err(Dialed::Unreachable(e)) => self.last_error[j] = Some(e),
                    Err(Dialed::Auth(e @ (AuthError::Refused | AuthError::BadProof | AuthError::BadSeal))) => {
                        return Err(format!("process {j} ({address}): {e}"));
                    }
                    Err(Dialed::Auth(e)) => self.last_error[j] = Some(e.to_string()),
                }
            }
        }
        Ok(progressed)
    }

    /// Checks a caller on a thread of its own, with a deadline, so that a
    /// silent or hostile caller delays no one.
    fn answer_in_background(&self, stream: TcpStream, peer: SocketAddr, done: mpsc::Sender<Answered>) {
        let (hello, secret) = (self.hello, self.secret.clone());
        let deadline = self.deadline.max(Instant::now() + Duration::from_secs(1)).min(Instant::now() + HANDSHAKE);
        let spawned = std::thread::Builder::new().name("ur:answer".into()).spawn(move || {
            let result = answer(stream, &hello, &secret, deadline);
            let _ = done.send(Answered { peer, result });
        });
        if let Err(e) = spawned {
            tracing::warn!(%peer, "cannot answer a connection: {e}");
        }
    }

    /// Takes an answered connection: true if it is a process of the run.
    fn take_answered(&mut self, Answered { peer, result }: Answered) -> Result<bool, String> {
        let (stream, theirs, version, channel) = match result {
            Ok(answered) => answered,
            Err(e) => {
                tracing::warn!("refused a connection from {peer}: {e}");
                self.refused.push(format!("{peer}: {e}"));
                return Ok(false);
            }
        };
        let (me, n) = (self.me(), self.addresses.len());
        let j = theirs.process as usize;
        if j <= me || j >= n {
            return Err(format!(
                "a process at {peer} says it is process {j}; only processes {}..{n} connect to process {me}",
                me + 1
            ));
        }
        if self.slots(channel)[j].is_some() {
            return Err(format!("two processes say they are process {j} ({}); check --process", self.addresses[j]));
        }
        check(&theirs, &version, &self.hello, j, &self.addresses[j])?;
        self.slots(channel)[j] = Some(stream);
        Ok(true)
    }

    fn slots(&mut self, channel: Channel) -> &mut Vec<Option<TcpStream>> {
        match channel {
            Channel::Data => &mut self.data,
            Channel::Heartbeat => &mut self.heartbeats,
        }
    }

    /// The message when `missing` never came.
    fn gave_up(&self, missing: &[usize], timeout: Duration) -> String {
        let names: Vec<String> = missing
            .iter()
            .map(|&j| match &self.last_error[j] {
                Some(e) => format!("process {j} ({}: {e})", self.addresses[j]),
                None => format!("process {j} ({})", self.addresses[j]),
            })
            .collect();
        let refused = match self.refused.last() {
            None => String::new(),
            Some(last) => format!("; refused {} connection(s), the last from {last}", self.refused.len()),
        };
        format!(
            "gave up after {}s waiting for {}: is ur-train running there with the same --hosts file?{refused}",
            timeout.as_secs(),
            names.join(", ")
        )
    }
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

/// Why dialing a process failed.
enum Dialed {
    /// Not listening (yet), or the connection broke: try again.
    Unreachable(String),
    /// Something answered, but did not take this process's proof or prove
    /// its own.
    Auth(AuthError),
}

fn dial(
    address: &str,
    hello: &Hello,
    secret: &Secret,
    channel: Channel,
    deadline: Instant,
) -> Result<(TcpStream, Hello, [u8; VERSION_BYTES]), Dialed> {
    let mut last = String::from("no address");
    for addr in resolve(address).map_err(Dialed::Unreachable)? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => {
                let deadline = deadline.min(Instant::now() + HANDSHAKE);
                return match exchange(stream, hello, secret, Some(channel), deadline) {
                    Ok((s, h, v, _)) => Ok((s, h, v)),
                    Err(AuthError::Io(e)) => Err(Dialed::Unreachable(e.to_string())),
                    Err(e) => Err(Dialed::Auth(e)),
                };
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(Dialed::Unreachable(last))
}

/// Answers a connection: the dialer says what it carries.
fn answer(
    stream: TcpStream,
    hello: &Hello,
    secret: &Secret,
    deadline: Instant,
) -> Result<(TcpStream, Hello, [u8; VERSION_BYTES], Channel), AuthError> {
    stream.set_nonblocking(false)?;
    exchange(stream, hello, secret, None, deadline)
}

/// Proves the secret both ways (dialing on `channel`, or answering), then
/// exchanges sealed hellos.
fn exchange(
    mut stream: TcpStream,
    hello: &Hello,
    secret: &Secret,
    dialing: Option<Channel>,
    deadline: Instant,
) -> Result<(TcpStream, Hello, [u8; VERSION_BYTES], Channel), AuthError> {
    let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(500));
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(wait))?;
    stream.set_write_timeout(Some(wait))?;
    let (session, channel) = match dialing {
        Some(channel) => (auth::dial(&mut stream, secret, channel.byte())?, channel),
        None => {
            let (session, carries) = auth::answer(&mut stream, secret)?;
            (session, Channel::from_byte(carries).ok_or(AuthError::NotUrTrain)?)
        }
    };
    let mine = hello.encode();
    let mut sealed = [0u8; HELLO_BYTES + TAG_BYTES];
    sealed[..HELLO_BYTES].copy_from_slice(&mine);
    sealed[HELLO_BYTES..].copy_from_slice(&session.seal(&mine));
    stream.write_all(&sealed)?;
    stream.read_exact(&mut sealed)?;
    let theirs: [u8; HELLO_BYTES] = sealed[..HELLO_BYTES].try_into().expect("hello bytes");
    session.open(&theirs, &sealed[HELLO_BYTES..])?;
    let (theirs, version) = Hello::decode(&theirs);
    Ok((stream, theirs, version, channel))
}

fn check(theirs: &Hello, version: &[u8; VERSION_BYTES], mine: &Hello, j: usize, address: &str) -> Result<(), String> {
    if theirs.process as usize != j {
        return Err(format!(
            "{address} answered as process {} but is line {j} of the hosts file; check --process",
            theirs.process
        ));
    }
    if *version != self::version() {
        return Err(format!(
            "process {j} ({address}) runs ur-train {}, this one {}: install the same version everywhere",
            show_version(version),
            show_version(&self::version())
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

    fn secret() -> Secret {
        Secret::from_bytes(b"a test secret of the cluster".to_vec()).unwrap()
    }

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
                std::thread::spawn(move || {
                    connect_all(&addresses, hello(p, 3), &secret(), Duration::from_secs(20), PEER)
                })
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
        let err = connect_all(&addresses, hello(1, 2), &secret(), Duration::from_secs(1), PEER).unwrap_err();
        assert!(err.contains("process 0") && err.contains(&addresses[0]), "{err}");
    }

    #[test]
    fn different_arguments_are_refused() {
        let addresses = free_ports(2);
        let a = addresses.clone();
        let other = std::thread::spawn(move || {
            connect_all(&a, Hello { workers: 3, ..hello(1, 2) }, &secret(), Duration::from_secs(10), PEER)
        });
        let err = connect_all(&addresses, hello(0, 2), &secret(), Duration::from_secs(10), PEER).unwrap_err();
        assert!(err.contains("--workers"), "{err}");
        assert!(other.join().unwrap().unwrap_err().contains("--workers"));
    }
}
