//! Noticing a silent peer. Beside timely's connections, every pair of
//! processes keeps a heartbeat connection ([`super::connect`]): each process
//! sends every other a byte each second from a thread of its own, whatever
//! its workers do, and listens for theirs. A peer not heard from for
//! `--peer-timeout` (stopped, hung, or cut off without a reset) or whose
//! connection closes is reported to the caller, which ends the run. A
//! process whose workers are done says goodbye, so that the others stop
//! watching it while they finish.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BEAT: u8 = 1;
const GOODBYE: u8 = 2;

/// Why a peer is taken for lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Silence {
    #[error("process {process} ({address}) has been silent for {secs} s (--peer-timeout)")]
    Silent { process: usize, address: String, secs: u64 },
    #[error("lost the connection to process {process} ({address}): {reason}")]
    Closed { process: usize, address: String, reason: String },
}

/// The watchdog of a running process; [`Watchdog::stop`] it when the
/// workers are done.
pub struct Watchdog {
    stopped: Arc<AtomicBool>,
    /// Dropped to stop the sender.
    _beating: mpsc::Sender<()>,
    peers: Vec<TcpStream>,
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
        let stopped = Arc::new(AtomicBool::new(false));
        let mut peers = Vec::new();
        for (process, stream) in heartbeats.into_iter().enumerate() {
            let Some(stream) = stream else { continue };
            stream.set_read_timeout(Some(interval))?;
            stream.set_write_timeout(Some(interval))?;
            peers.push(stream.try_clone()?);
            let watch = Watch { process, address: addresses[process].clone(), timeout, stopped: stopped.clone() };
            std::thread::Builder::new().name(format!("ur:watch-{process}")).spawn(move || watch.run(stream, lost))?;
        }
        let (beating, beats) = mpsc::channel::<()>();
        let mut senders: Vec<TcpStream> = peers.iter().map(TcpStream::try_clone).collect::<Result<_, _>>()?;
        std::thread::Builder::new().name("ur:heartbeat".into()).spawn(move || {
            // A write error is the reader's to notice; the sender goes on.
            while let Err(mpsc::RecvTimeoutError::Timeout) = beats.recv_timeout(interval) {
                for s in &mut senders {
                    let _ = s.write_all(&[BEAT]);
                }
            }
        })?;
        Ok(Watchdog { stopped, _beating: beating, peers })
    }

    /// This process's workers are done: say goodbye and stop watching.
    pub fn stop(mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        for s in &mut self.peers {
            let _ = s.write_all(&[GOODBYE]);
        }
    }
}

/// One peer, watched.
struct Watch {
    process: usize,
    address: String,
    timeout: Duration,
    stopped: Arc<AtomicBool>,
}

impl Watch {
    fn run(self, mut stream: TcpStream, lost: fn(Silence)) {
        let mut heard = Instant::now();
        let mut buf = [0u8; 64];
        let silence = loop {
            let read = stream.read(&mut buf);
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            match read {
                Ok(0) => break self.closed("it closed the connection".into()),
                Ok(n) if buf[..n].contains(&GOODBYE) => return,
                Ok(_) => heard = Instant::now(),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if heard.elapsed() >= self.timeout {
                        break Silence::Silent {
                            process: self.process,
                            address: self.address.clone(),
                            secs: heard.elapsed().as_secs(),
                        };
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break self.closed(e.to_string()),
            }
        };
        lost(silence);
    }

    fn closed(&self, reason: String) -> Silence {
        Silence::Closed { process: self.process, address: self.address.clone(), reason }
    }
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
        assert!(matches!(s, Silence::Silent { process: 1, .. }), "{s}");
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
}
