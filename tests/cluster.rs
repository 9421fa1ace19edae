//! Several processes: the local 3-host rehearsal (127.0.0.1, .2, .3 on one
//! port), identical models, and failing fast when a peer is missing or dies.

use crate::util::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that is free on 127.0.0.1 (and, in practice, on .2 and .3).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn hosts_file(dir: &Path, n: usize) -> std::path::PathBuf {
    let port = free_port();
    let path = dir.join("hosts.txt");
    let lines: Vec<String> = (1..=n).map(|i| format!("127.0.0.{i}:{port}")).collect();
    write_lines(&path, &lines);
    path
}

/// The cluster secret of the tests' runs (in the environment, as
/// cluster/launch.sh passes it).
const SECRET: &str = "a secret the test processes share";

fn spawn(args: &[String]) -> Child {
    spawn_with_secret(args, Some(SECRET))
}

fn spawn_with_secret(args: &[String], secret: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ur-train"));
    command.args(args);
    spawn_command(command, secret)
}

fn spawn_command(mut command: Command, secret: Option<&str>) -> Child {
    match secret {
        Some(s) => command.env("UR_CLUSTER_SECRET", s),
        None => command.env_remove("UR_CLUSTER_SECRET"),
    };
    command
        .arg("--no-progress")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ur-train starts")
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut s).unwrap();
    }
    s
}

/// 3 processes × 2 workers give the documents 1 process × 1 worker gives,
/// byte for byte, with files split into byte ranges across processes.
#[test]
fn three_processes_give_the_single_process_model() {
    let data = online_retail();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_file(
        dir.path(),
        serde_json::json!({
            "indicators": [{"name": "purchase", "maxItemsPerUser": 60}, {"name": "cancel"}, {"name": "country", "maxItemsPerUser": 100}],
            "rankings": [{"name": "popRank", "type": "popular", "eventNames": ["purchase"]}, {"type": "random"}],
            "seed": 3
        }),
    );
    // One uncompressed copy of two months, so byte ranges are exercised too.
    let input = dir.path().join("events");
    for month in ["2011-10", "2011-11"] {
        let gz = std::fs::File::open(data.join(format!("month={month}/part-00000.jsonl.gz"))).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(gz), &mut text).unwrap();
        std::fs::create_dir_all(input.join(format!("month={month}"))).unwrap();
        std::fs::write(input.join(format!("month={month}/part-00000.jsonl")), text).unwrap();
    }
    let now = ["--now", "2011-12-10T00:00:00Z", "-q"];
    let single = dir.path().join("single");
    train_ok(&engine, &input, &single, &[&now[..], &["--workers", "1"]].concat());

    let hosts = hosts_file(dir.path(), 3);
    let multi = dir.path().join("multi");
    let mut children: Vec<Child> = (0..3)
        .map(|p| {
            let p = p.to_string();
            let extra = [
                &now[..],
                &["--workers", "2", "--hosts", hosts.to_str().unwrap(), "--process", &p, "--split-size", "1000000"],
            ]
            .concat();
            spawn(&train_args(&engine, &input, &multi, &extra))
        })
        .collect();
    for (p, child) in children.iter_mut().enumerate() {
        let status = wait_with_deadline(child, Duration::from_secs(300)).expect("process finishes");
        assert!(status.success(), "process {p}: {}", stderr_of(child));
    }
    let mut parts: Vec<_> = std::fs::read_dir(&multi).unwrap().map(|e| e.unwrap().path()).collect();
    parts.sort();
    let names: Vec<String> = parts.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(
        names,
        [
            "items-00000.jsonl",
            "items-00001.jsonl",
            "items-00002.jsonl",
            "items-00003.jsonl",
            "items-00004.jsonl",
            "items-00005.jsonl",
            "manifest.json"
        ]
    );
    let joined: Vec<u8> =
        parts.iter().filter(|p| p.extension().unwrap() == "jsonl").flat_map(|p| std::fs::read(p).unwrap()).collect();
    let expected = std::fs::read(single.join("items.jsonl")).unwrap();
    assert!(expected.len() > 100_000);
    assert!(joined == expected, "3×2 documents differ from 1×1");
    let m = manifest(&multi);
    assert_eq!(m["processes"], 3);
    assert!(m["network"]["bytesToOtherProcesses"].as_u64().unwrap() > 0);
    assert_eq!(m["input"]["lines"], manifest(&single)["input"]["lines"]);
}

/// A process that never comes: the others give up after --connect-timeout,
/// naming it, with no model.
#[test]
fn a_missing_process_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = hosts_file(dir.path(), 3);
    let port = std::fs::read_to_string(&hosts).unwrap().lines().next().unwrap().rsplit(':').next().unwrap().to_string();
    let output = dir.path().join("model");
    let mut children: Vec<Child> = (0..2)
        .map(|p| {
            let extra = ["--hosts", hosts.to_str().unwrap(), "--process", &p.to_string(), "--connect-timeout", "2"];
            spawn(&train_args(&handmade_engine(), &handmade_events(), &output, &extra))
        })
        .collect();
    for child in &mut children {
        let status = wait_with_deadline(child, Duration::from_secs(60)).expect("gives up");
        assert_eq!(status.code(), Some(2));
        let err = stderr_of(child);
        assert!(err.contains(&format!("process 2 (127.0.0.3:{port}")), "{err}");
        assert!(err.contains("gave up after 2s"), "{err}");
    }
    assert!(!output.exists());
}

/// A process that dies mid-run: the others exit 1 promptly, publishing nothing.
#[test]
fn a_dead_process_fails_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = hosts_file(dir.path(), 3);
    let output = dir.path().join("model");
    let input = online_retail();
    let engine = engine_file(dir.path(), serde_json::json!({"eventNames": ["purchase", "cancel"]}));
    let mut children: Vec<Child> = (0..3)
        .map(|p| {
            let extra = ["--hosts", hosts.to_str().unwrap(), "--process", &p.to_string(), "--workers", "1"];
            let mut command = Command::new(env!("CARGO_BIN_EXE_ur-train"));
            command.args(train_args(&engine, &input, &output, &extra));
            if p == 2 {
                command.env(ur::hold::HOLD_ENV, dir.path().join("never"));
            }
            spawn_command(command, Some(SECRET))
        })
        .collect();
    // Once process 2 holds mid-co-occurrence (ur::hold), kill it.
    let mut victim = children.pop().unwrap();
    let mut lines = BufReader::new(victim.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("process 2 logs").unwrap();
        if line.contains("holding") {
            break;
        }
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    for (p, child) in children.iter_mut().enumerate() {
        let status = wait_with_deadline(child, Duration::from_secs(60)).expect("exits promptly");
        let err = stderr_of(child);
        assert_eq!(status.code(), Some(1), "process {p}: {err}");
        assert!(err.contains("lost the connection to process"), "{err}");
    }
    assert!(!output.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.iter().all(|n| !n.to_str().unwrap().contains(".tmp-")), "{leftovers:?}");
}

/// A run of several processes (1 worker each) on the online-retail events,
/// with a state; their logs are read line by line as they come.
struct Run {
    dir: tempfile::TempDir,
    engine: std::path::PathBuf,
    port: String,
    children: Vec<Child>,
    logs: Vec<std::sync::mpsc::Receiver<String>>,
}

impl Run {
    /// Starts `n` processes with `extra` flags and waits until every one
    /// trains (it logs "training": all have connected, the sinks are ready)
    /// and the last one holds mid-co-occurrence (`UR_TRAIN_TEST_HOLD`) until
    /// [`Run::release`]: a signal to it then is certain to hit the run
    /// mid-way, however fast the run is.
    fn start(n: usize, extra: &[&str]) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let hosts = hosts_file(dir.path(), n);
        let port =
            std::fs::read_to_string(&hosts).unwrap().lines().next().unwrap().rsplit(':').next().unwrap().to_string();
        let engine = engine_file(dir.path(), serde_json::json!({"eventNames": ["purchase", "cancel"]}));
        let state = dir.path().join("state");
        let mut children = Vec::new();
        let mut logs = Vec::new();
        for p in 0..n {
            let p = p.to_string();
            let mut flags = vec!["--hosts", hosts.to_str().unwrap(), "--process", &p, "--workers", "1", "--state"];
            flags.push(state.to_str().unwrap());
            flags.extend_from_slice(extra);
            let mut command = Command::new(env!("CARGO_BIN_EXE_ur-train"));
            command.args(train_args(&engine, &online_retail(), &dir.path().join("model"), &flags));
            if p == (n - 1).to_string() {
                command.env(ur::hold::HOLD_ENV, dir.path().join("release"));
            }
            let mut child = spawn_command(command, Some(SECRET));
            let (send, receive) = std::sync::mpsc::channel();
            let lines = BufReader::new(child.stderr.take().unwrap()).lines();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    let _ = send.send(line);
                }
            });
            children.push(child);
            logs.push(receive);
        }
        let run = Run { dir, engine, port, children, logs };
        for p in 0..n {
            while !run.logs[p].recv().expect("the process logs").contains("training") {}
        }
        while !run.logs[n - 1].recv().expect("the last process logs").contains("holding") {}
        run
    }

    /// Lets the last process go on from its hold.
    fn release(&self) {
        std::fs::write(self.dir.path().join("release"), "").unwrap();
    }

    /// The rest of process `p`'s log, once it has exited.
    fn log(&self, p: usize) -> String {
        self.logs[p].iter().collect::<Vec<_>>().join("\n")
    }

    fn signal(&self, p: usize, signal: libc::c_int) {
        // SAFETY: a signal to a child process of this test.
        assert_eq!(unsafe { libc::kill(self.children[p].id() as libc::pid_t, signal) }, 0);
    }

    /// No temporary directory next to the model or the state, no model.
    fn assert_clean(&self) {
        let leftovers: Vec<_> = std::fs::read_dir(self.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(leftovers.iter().all(|n| !n.to_str().unwrap().contains(".tmp-")), "{leftovers:?}");
        assert!(!self.dir.path().join("model").exists());
    }

    /// The lock of the state is free: a one-process run with it succeeds.
    fn assert_rerun_succeeds(&self) {
        let state = self.dir.path().join("state");
        train_ok(
            &self.engine,
            &online_retail(),
            &self.dir.path().join("model"),
            &["-q", "--workers", "1", "--state", state.to_str().unwrap()],
        );
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A peer that stops (SIGSTOP: its sockets stay open, it sends nothing) or
/// dies: the others exit 1 within --peer-timeout and some slack, naming it,
/// with no temporary directory left and the state's lock free.
fn a_peer_that_goes_silent(signal: libc::c_int) -> Duration {
    let timeout = 3;
    let mut run = Run::start(3, &["--peer-timeout", &timeout.to_string()]);
    run.signal(2, signal);
    let stopped = Instant::now();
    let mut slowest = Duration::ZERO;
    for p in 0..2 {
        let status = wait_with_deadline(&mut run.children[p], Duration::from_secs(timeout + 30)).expect("exits");
        slowest = slowest.max(stopped.elapsed());
        let err = run.log(p);
        assert_eq!(status.code(), Some(1), "process {p}: {err}");
        let named = format!("process 2 (127.0.0.3:{})", run.port);
        assert!(
            err.contains(&format!("{named} has been silent for")) || err.contains("lost the connection to process 2"),
            "process {p}: {err}"
        );
    }
    assert!(slowest < Duration::from_secs(timeout + 10), "{slowest:?}");
    let _ = run.children[2].kill();
    let _ = run.children[2].wait();
    run.assert_clean();
    run.assert_rerun_succeeds();
    slowest
}

#[test]
fn a_stopped_process_is_named_by_the_others() {
    let took = a_peer_that_goes_silent(libc::SIGSTOP);
    eprintln!("a stopped peer was detected in {took:?}");
}

/// Repeated: whichever process notices first tells the others, so that
/// every one names process 2, never the first of them to leave.
#[test]
fn a_killed_process_ends_the_run_cleanly() {
    for run in 0..5 {
        let took = a_peer_that_goes_silent(libc::SIGKILL);
        eprintln!("run {run}: a killed peer was detected in {took:?}");
    }
}

/// A peer that holds (busy, but its heartbeats go on) for longer than
/// --peer-timeout is slow, not silent: nobody leaves, and once it goes on
/// every process finishes.
#[test]
fn a_slow_peer_is_not_taken_for_a_silent_one() {
    let timeout = 2;
    let mut run = Run::start(3, &["--peer-timeout", &timeout.to_string()]);
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(timeout + 2) {
        for p in 0..3 {
            if let Some(status) = run.children[p].try_wait().unwrap() {
                panic!("process {p} left while process 2 was only slow ({status}): {}", run.log(p));
            }
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    run.release();
    for p in 0..3 {
        let status = wait_with_deadline(&mut run.children[p], Duration::from_secs(60)).expect("exits");
        assert!(status.success(), "process {p}: {}", run.log(p));
    }
    for part in 0..3 {
        let part = run.dir.path().join(format!("model/items-{part:05}.jsonl"));
        assert!(part.exists(), "{part:?} is missing");
    }
}

/// SIGTERM during a one-shot run (here process 0, waiting on a stopped
/// peer): exit 143, no temporary directory, the state's lock released.
#[test]
fn sigterm_ends_a_run_cleanly() {
    let mut run = Run::start(2, &["--peer-timeout", "600"]);
    run.signal(1, libc::SIGSTOP);
    run.signal(0, libc::SIGTERM);
    let status = wait_with_deadline(&mut run.children[0], Duration::from_secs(30)).expect("exits");
    let err = run.log(0);
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("SIGTERM"), "{err}");
    let _ = run.children[1].kill();
    let _ = run.children[1].wait();
    run.assert_clean();
    run.assert_rerun_succeeds();
}

/// Connects to `address` (retrying while nothing listens there yet).
fn connect_when_listening(address: &str) -> std::net::TcpStream {
    let start = Instant::now();
    loop {
        match std::net::TcpStream::connect(address) {
            Ok(s) => return s,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("{address}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Process `p` of a run of 2 on the handmade events, with `secret`.
fn spawn_handmade(hosts: &Path, output: &Path, p: usize, secret: Option<&str>, extra: &[&str]) -> Child {
    let p = p.to_string();
    let flags = [&["--hosts", hosts.to_str().unwrap(), "--process", &p, "--workers", "1"][..], extra].concat();
    spawn_with_secret(&train_args(&handmade_engine(), &handmade_events(), output, &flags), secret)
}

/// An impostor that echoes what process 0 sends, and callers that never
/// say anything, are refused without delaying the real process 1; the run
/// succeeds. The secret is in no process's argv and in no log.
#[test]
fn an_impostor_and_silent_callers_are_refused_without_delay() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = hosts_file(dir.path(), 2);
    let address = std::fs::read_to_string(&hosts).unwrap().lines().next().unwrap().to_string();
    let output = dir.path().join("model");
    let mut first = spawn_handmade(&hosts, &output, 0, Some(SECRET), &["--connect-timeout", "60"]);
    // Callers that never speak: each used to hold the accept loop for 10 s.
    let silent: Vec<_> = (0..4).map(|_| connect_when_listening(&address)).collect();
    // The impostor echoes process 0's opening back, as if it were process 1.
    let mut impostor = connect_when_listening(&address);
    impostor.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut opening = [0u8; 41];
    std::io::Read::read_exact(&mut impostor, &mut opening).unwrap();
    std::io::Write::write_all(&mut impostor, &opening).unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut impostor, &mut rest);
    assert!(rest.len() <= 1, "process 0 said more to the impostor: {rest:?}");

    let started = Instant::now();
    let mut second = spawn_handmade(&hosts, &output, 1, Some(SECRET), &[]);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", second.id())).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains(SECRET));
    let mut logs = Vec::new();
    for (p, child) in [&mut first, &mut second].into_iter().enumerate() {
        let status = wait_with_deadline(child, Duration::from_secs(120)).expect("finishes");
        let err = stderr_of(child);
        assert!(status.success(), "process {p}: {err}");
        assert!(!err.contains(SECRET), "{err}");
        logs.push(err);
    }
    assert!(started.elapsed() < Duration::from_secs(20), "the real peer waited {:?}", started.elapsed());
    assert!(logs[0].contains("refused a connection from 127.0.0.1:"), "{}", logs[0]);
    assert!(logs[0].contains("cluster protocol"), "{}", logs[0]);
    drop(silent);
}

/// A process with another secret is refused; it says which address refused
/// it, the other names the caller it refused; nothing is published.
#[test]
fn a_wrong_secret_is_refused_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = hosts_file(dir.path(), 2);
    let address = std::fs::read_to_string(&hosts).unwrap().lines().next().unwrap().to_string();
    let output = dir.path().join("model");
    let wrong = "not the secret the others share";
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let timeout = ["--connect-timeout", "5"];
    let file = [&timeout[..], &["--cluster-secret-file", secret_file.to_str().unwrap()]].concat();
    let mut first = spawn_handmade(&hosts, &output, 0, None, &file);
    let mut second = spawn_handmade(&hosts, &output, 1, Some(wrong), &timeout);
    let status = wait_with_deadline(&mut second, Duration::from_secs(60)).expect("gives up");
    let err = stderr_of(&mut second);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("process 0 ({address}): it refused this process's proof of the cluster secret")),
        "{err}"
    );
    let status = wait_with_deadline(&mut first, Duration::from_secs(60)).expect("gives up");
    let err0 = stderr_of(&mut first);
    assert_eq!(status.code(), Some(2), "{err0}");
    assert!(
        err0.contains("refused a connection from 127.0.0.") && err0.contains("did not prove the cluster secret"),
        "{err0}"
    );
    for log in [&err, &err0] {
        assert!(!log.contains(SECRET) && !log.contains(wrong), "{log}");
    }
    assert!(!output.exists());
}

/// A cluster run without a secret is refused before it listens.
#[test]
fn a_cluster_run_needs_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = hosts_file(dir.path(), 2);
    let output = dir.path().join("model");
    let mut child = spawn_handmade(&hosts, &output, 0, None, &[]);
    let status = wait_with_deadline(&mut child, Duration::from_secs(30)).expect("refuses");
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--cluster-secret-file") && err.contains("UR_CLUSTER_SECRET"), "{err}");
    let mut child = spawn_handmade(&hosts, &output, 0, Some("short"), &[]);
    assert_eq!(wait_with_deadline(&mut child, Duration::from_secs(30)).expect("refuses").code(), Some(2));
    assert!(stderr_of(&mut child).contains("at least 16"));
}
