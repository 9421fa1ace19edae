//! Noticing a silent peer. Beside timely's connections, every pair of
//! processes keeps a heartbeat connection ([`super::connect`]): each process
//! sends every other a byte each second from a thread of its own, whatever
//! its workers do, and listens for theirs. A peer not heard from for
//! `--peer-timeout` (stopped, hung, or cut off without a reset) or whose
//! connection closes is reported to the caller, which ends the run. The
//! process that notices a silent or lost peer first (here, or in timely's
//! connections: [`connection_lost`]) tells the others, so that every
//! process names that peer rather than the first to leave, and waits
//! briefly for them to leave. A process whose workers are done says
//! goodbye, so that the others stop watching it while they finish.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

const BEAT: u8 = 1;
const GOODBYE: u8 = 2;
/// Followed by the silent process (u32) and for how long (u32 seconds).
const SILENT: u8 = 3;
const SILENT_BYTES: usize = 9;
/// Followed by the process whose connection was lost (u32).
const LOST: u8 = 4;
const LOST_BYTES: usize = 5;
/// How long a process that tells the others of a silent peer waits for them
/// to leave.
const TELLING: Duration = Duration::from_secs(2);

/// Set once this process reports a silent or lost peer (noticed here or
/// told by another): connections closing meanwhile are the others leaving,
/// not news.
static REPORTING: AtomicBool = AtomicBool::new(false);

/// The running watchdog, for [`connection_lost`].
static RUNNING: Mutex<Option<Weak<Shared>>> = Mutex::new(None);

/// If this process is reporting a silent or lost peer, waits (at most a
/// little longer than the others take to leave) for that report to end the
/// process; returns if it has not. A lost connection in the meantime is the
/// others leaving: it must not be reported instead of the peer first lost.
pub fn await_report() {
    let deadline = Instant::now() + TELLING + Duration::from_secs(1);
    while REPORTING.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// Timely's connection to `process` failed. If another report is under
/// way, waits for it ([`await_report`]); otherwise tells the other
/// processes that `process` is lost and waits briefly for them to leave.
/// The caller then reports the lost connection and ends the process.
pub fn connection_lost(process: usize) {
    await_report();
    let running = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(Weak::upgrade);
    if let Some(shared) = running {
        shared.tell_others(process, Report::Lost);
    }
}

/// Why a peer is taken for lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Silence {
    #[error("process {process} ({address}) has been silent for {secs} s (--peer-timeout){}",
        .noticed_by.map(|p| format!(", as process {p} noticed")).unwrap_or_default())]
    Silent { process: usize, address: String, secs: u64, noticed_by: Option<usize> },
    #[error("lost the connection to process {process} ({address}){}{}",
        .reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default(),
        .noticed_by.map(|p| format!(", as process {p} noticed")).unwrap_or_default())]
    Closed { process: usize, address: String, reason: Option<String>, noticed_by: Option<usize> },
}

/// What a process tells the others about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// Silent for so many seconds.
    Silent(u64),
    /// Its connection was lost.
    Lost,
}

impl Report {
    fn frame(self, subject: usize) -> Vec<u8> {
        let subject = (subject as u32).to_le_bytes();
        match self {
            Report::Silent(secs) => {
                let secs = (secs.min(u32::MAX as u64) as u32).to_le_bytes();
                [&[SILENT][..], &subject, &secs].concat()
            }
            Report::Lost => [&[LOST][..], &subject].concat(),
        }
    }
}

/// The watchdog of a running process; [`Watchdog::stop`] it when the
/// workers are done.
pub struct Watchdog {
    shared: Arc<Shared>,
    /// Dropped to stop the sender.
    _beating: mpsc::Sender<()>,
}

/// What the threads of a watchdog share.
struct Shared {
    addresses: Vec<String>,
    timeout: Duration,
    /// Set when this process's workers are done.
    stopped: AtomicBool,
    /// Set when a silent peer is being reported: the others' leaving is
    /// expected.
    ending: AtomicBool,
    /// The other processes' connections, for writing, by process.
    peers: Vec<(usize, TcpStream)>,
    /// A peer that left (or heard of the silence) while ending.
    left: Mutex<mpsc::Sender<usize>>,
    gone: Mutex<mpsc::Receiver<usize>>,
}

impl Shared {
    /// Tells every peer but `subject` what became of it, and waits
    /// (briefly) until they have left or heard of it too. Does nothing if
    /// this process is already ending.
    fn tell_others(&self, subject: usize, report: Report) {
        if self.ending.swap(true, Ordering::SeqCst) {
            return;
        }
        REPORTING.store(true, Ordering::SeqCst);
        let frame = report.frame(subject);
        let mut waiting: Vec<usize> = Vec::new();
        for (process, mut s) in self.peers.iter().filter(|(p, _)| *p != subject).map(|(p, s)| (*p, s)) {
            if s.write_all(&frame).is_ok() {
                waiting.push(process);
            }
        }
        let gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + TELLING;
        while !waiting.is_empty() {
            match gone.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(p) => waiting.retain(|&w| w != p),
                Err(_) => break,
            }
        }
    }
}

impl Watchdog {
    /// Watches the peers connected by `heartbeats` (by process; `None` for
    /// this one); `lost` is called, from the watchdog's thread, with the
    /// first peer silent for `timeout`.
    pub fn start(
        heartbeats: Vec<Option<TcpStream>>,
        addresses: &[String],
        timeout: Duration,
        lost: fn(Silence),
    ) -> std::io::Result<Watchdog> {
        let interval = (timeout / 3).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut streams = Vec::new();
        for (process, stream) in heartbeats.into_iter().enumerate() {
            let Some(stream) = stream else { continue };
            stream.set_read_timeout(Some(interval))?;
            stream.set_write_timeout(Some(interval))?;
            streams.push((process, stream));
        }
        let (left, gone) = mpsc::channel();
        let shared = Arc::new(Shared {
            addresses: addresses.to_vec(),
            timeout,
            stopped: AtomicBool::new(false),
            ending: AtomicBool::new(false),
            peers: streams.iter().map(|(p, s)| s.try_clone().map(|s| (*p, s))).collect::<Result<_, _>>()?,
            left: Mutex::new(left),
            gone: Mutex::new(gone),
        });
        *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::downgrade(&shared));
        let mut senders: Vec<TcpStream> = streams.iter().map(|(_, s)| s.try_clone()).collect::<Result<_, _>>()?;
        for (process, stream) in streams {
            let watch = Watch { process, shared: shared.clone() };
            std::thread::Builder::new().name(format!("ur:watch-{process}")).spawn(move || watch.run(stream, lost))?;
        }
        let (beating, beats) = mpsc::channel::<()>();
        std::thread::Builder::new().name("ur:heartbeat".into()).spawn(move || {
            // A write error is the reader's to notice; the sender goes on.
            while let Err(mpsc::RecvTimeoutError::Timeout) = beats.recv_timeout(interval) {
                for s in &mut senders {
                    let _ = s.write_all(&[BEAT]);
                }
            }
        })?;
        Ok(Watchdog { shared, _beating: beating })
    }

    /// This process's workers are done: say goodbye and stop watching.
    pub fn stop(self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for (_, mut s) in self.shared.peers.iter().map(|(p, s)| (p, s)) {
            let _ = s.write_all(&[GOODBYE]);
        }
    }
}

/// One peer, watched.
struct Watch {
    process: usize,
    shared: Arc<Shared>,
}

/// What a peer said.
enum Heard {
    Beat,
    Goodbye,
    /// It noticed that a process has been silent for so many seconds.
    Silent(usize, u64),
    /// It lost its connection to a process.
    Lost(usize),
}

impl Watch {
    fn run(self, mut stream: TcpStream, lost: fn(Silence)) {
        let shared = &self.shared;
        let mut heard = Instant::now();
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 64];
        let silence = loop {
            let read = stream.read(&mut buf);
            if shared.stopped.load(Ordering::SeqCst) {
                return;
            }
            let ending = shared.ending.load(Ordering::SeqCst);
            match read {
                Ok(0) if ending => return self.left(),
                Ok(0) => break self.closed("it closed the connection".into()),
                Ok(n) => {
                    heard = Instant::now();
                    pending.extend_from_slice(&buf[..n]);
                    match take_messages(&mut pending) {
                        Some(Heard::Goodbye) => return,
                        Some(Heard::Silent(..) | Heard::Lost(_)) if ending => return self.left(),
                        Some(Heard::Silent(process, secs)) => {
                            self.told();
                            break self.silent(process, secs, Some(self.process));
                        }
                        Some(Heard::Lost(process)) => {
                            self.told();
                            break self.lost(process, None, Some(self.process));
                        }
                        Some(Heard::Beat) | None => {}
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if heard.elapsed() >= shared.timeout && !ending {
                        let secs = heard.elapsed().as_secs();
                        shared.tell_others(self.process, Report::Silent(secs));
                        break self.silent(self.process, secs, None);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) if ending => return self.left(),
                Err(e) => break self.closed(e.to_string()),
            }
        };
        lost(silence);
    }

    fn left(&self) {
        let _ = self.shared.left.lock().unwrap_or_else(|p| p.into_inner()).send(self.process);
    }

    fn silent(&self, process: usize, secs: u64, noticed_by: Option<usize>) -> Silence {
        let address = self.shared.addresses.get(process).cloned().unwrap_or_else(|| "?".into());
        Silence::Silent { process, address, secs, noticed_by }
    }

    /// Another process told this one of a lost or silent peer: what
    /// follows is the others leaving.
    fn told(&self) {
        REPORTING.store(true, Ordering::SeqCst);
        self.shared.ending.store(true, Ordering::SeqCst);
    }

    /// This peer's connection closed or failed: the others are told.
    fn closed(&self, reason: String) -> Silence {
        self.shared.tell_others(self.process, Report::Lost);
        self.lost(self.process, Some(reason), None)
    }

    fn lost(&self, process: usize, reason: Option<String>, noticed_by: Option<usize>) -> Silence {
        let address = self.shared.addresses.get(process).cloned().unwrap_or_else(|| "?".into());
        Silence::Closed { process, address, reason, noticed_by }
    }
}

/// Consumes the complete messages at the front of `pending`; returns the
/// one that matters most (a silence, a goodbye, a beat).
fn take_messages(pending: &mut Vec<u8>) -> Option<Heard> {
    let mut most = None;
    let mut at = 0;
    while at < pending.len() {
        match pending[at] {
            SILENT if pending.len() - at < SILENT_BYTES => break,
            SILENT => {
                let u = |k: usize| u32::from_le_bytes(pending[k..k + 4].try_into().expect("4 bytes"));
                return Some(Heard::Silent(u(at + 1) as usize, u(at + 5) as u64));
            }
            LOST if pending.len() - at < LOST_BYTES => break,
            LOST => {
                let process = u32::from_le_bytes(pending[at + 1..at + 5].try_into().expect("4 bytes"));
                return Some(Heard::Lost(process as usize));
            }
            GOODBYE => most = Some(Heard::Goodbye),
            _ => most = most.or(Some(Heard::Beat)),
        }
        at += 1;
    }
    pending.drain(..at);
    most
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Mutex;

    static LOST: Mutex<Vec<Silence>> = Mutex::new(Vec::new());

    fn record(s: Silence) {
        LOST.lock().unwrap().push(s);
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (a, l.accept().unwrap().0)
    }

    /// Waits (bounded) until `lost` has reported a silence about `address`.
    fn reported(address: &str) -> Option<Silence> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            let found = LOST.lock().unwrap().iter().find(|s| s.to_string().contains(address)).cloned();
            if found.is_some() {
                return found;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
        None
    }

    #[test]
    fn a_silent_peer_is_reported_a_beating_one_is_not() {
        let (mine, theirs) = pair();
        let addresses = vec!["me:1".to_string(), "silent:2".to_string()];
        let started = Instant::now();
        let _dog = Watchdog::start(vec![None, Some(mine)], &addresses, Duration::from_millis(600), record).unwrap();
        // `theirs` never sends: reported after the timeout, by name.
        let s = reported("silent:2").expect("reported");
        assert!(started.elapsed() >= Duration::from_millis(600));
        assert!(matches!(s, Silence::Silent { process: 1, noticed_by: None, .. }), "{s}");
        assert!(s.to_string().contains("process 1 (silent:2) has been silent for"), "{s}");
        drop(theirs);
    }

    #[test]
    fn two_watchdogs_keep_each_other_alive_and_part_with_goodbye() {
        let (a, b) = pair();
        let addresses = vec!["alive-a:1".to_string(), "alive-b:2".to_string()];
        let timeout = Duration::from_millis(600);
        let dog_a = Watchdog::start(vec![None, Some(a)], &addresses, timeout, record).unwrap();
        let dog_b = Watchdog::start(vec![Some(b), None], &addresses, timeout, record).unwrap();
        // Several timeouts pass with heartbeats flowing.
        let start = Instant::now();
        while start.elapsed() < timeout * 4 {
            std::thread::park_timeout(timeout);
        }
        dog_a.stop();
        // b keeps running after a said goodbye, and does not report it.
        let start = Instant::now();
        while start.elapsed() < timeout * 3 {
            std::thread::park_timeout(timeout);
        }
        assert!(LOST.lock().unwrap().iter().all(|s| !s.to_string().contains("alive-")), "{:?}", LOST.lock().unwrap());
        dog_b.stop();
    }

    #[test]
    fn a_closed_connection_is_reported() {
        let (mine, theirs) = pair();
        let addresses = vec!["me:1".to_string(), "closed:2".to_string()];
        let _dog = Watchdog::start(vec![None, Some(mine)], &addresses, Duration::from_secs(60), record).unwrap();
        drop(theirs);
        let s = reported("closed:2").expect("reported");
        assert!(s.to_string().starts_with("lost the connection to process 1 (closed:2)"), "{s}");
    }

    #[test]
    fn the_first_to_notice_a_silence_tells_the_others() {
        let (to_silent, _silent) = pair();
        let (a, b) = pair();
        let addresses = vec!["me:1".to_string(), "quiet:2".to_string(), "other:3".to_string()];
        let timeout = Duration::from_millis(600);
        let _me = Watchdog::start(vec![None, Some(to_silent), Some(a)], &addresses, timeout, record).unwrap();
        // The other process is told (it hears process 0, not process 1).
        let _other = Watchdog::start(vec![Some(b), None, None], &addresses, timeout, record).unwrap();
        let start = Instant::now();
        let mut found = Vec::new();
        while found.len() < 2 && start.elapsed() < Duration::from_secs(20) {
            found = LOST.lock().unwrap().iter().filter(|s| s.to_string().contains("quiet:2")).cloned().collect();
            std::thread::park_timeout(Duration::from_millis(20));
        }
        assert!(found.iter().any(|s| matches!(s, Silence::Silent { process: 1, noticed_by: None, .. })), "{found:?}");
        assert!(
            found.iter().any(|s| s.to_string().starts_with("process 1 (quiet:2) has been silent for 0 s")
                && s.to_string().ends_with(", as process 0 noticed")),
            "{found:?}"
        );

        // A process told of a silence reports it, naming who noticed.
        let (mine, mut teller) = pair();
        let addresses = vec!["me:1".to_string(), "teller:2".to_string(), "mute:3".to_string()];
        let _dog = Watchdog::start(vec![None, Some(mine), None], &addresses, Duration::from_secs(60), record).unwrap();
        teller.write_all(&[BEAT, SILENT, 2, 0, 0, 0, 31, 0, 0, 0]).unwrap();
        let s = reported("mute:3").expect("reported");
        assert_eq!(s.to_string(), "process 2 (mute:3) has been silent for 31 s (--peer-timeout), as process 1 noticed");
    }

    #[test]
    fn a_lost_peer_is_told_to_the_others_and_reported_by_them() {
        // A heartbeat connection that closes: the others hear that process 1 is lost.
        let (to_lost, lost) = pair();
        let (mine, mut other) = pair();
        let addresses = vec!["me:1".to_string(), "gone:2".to_string(), "told:3".to_string()];
        let _dog = Watchdog::start(vec![None, Some(to_lost), Some(mine)], &addresses, Duration::from_secs(60), record)
            .unwrap();
        drop(lost);
        other.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut heard = Vec::new();
        let mut buf = [0u8; 64];
        while !heard.windows(LOST_BYTES).any(|w| w == [super::LOST, 1, 0, 0, 0]) {
            let n = other.read(&mut buf).unwrap();
            assert!(n > 0, "closed before telling: {heard:?}");
            heard.extend_from_slice(&buf[..n]);
        }
        drop(other);
        let s = reported("gone:2").expect("reported");
        assert!(s.to_string().starts_with("lost the connection to process 1 (gone:2): "), "{s}");

        // A process told of a lost peer reports it, naming who noticed.
        let (mine, mut teller) = pair();
        let addresses = vec!["me:1".to_string(), "noticer:2".to_string(), "killed:3".to_string()];
        let _dog = Watchdog::start(vec![None, Some(mine), None], &addresses, Duration::from_secs(60), record).unwrap();
        teller.write_all(&[BEAT, super::LOST, 2, 0, 0, 0]).unwrap();
        let s = reported("killed:3").expect("reported");
        assert_eq!(s.to_string(), "lost the connection to process 2 (killed:3), as process 1 noticed");
    }
}
