//! A real HDFS: Hadoop's MiniDFSCluster (NameNode and DataNodes in one JVM,
//! from Maven Central, `scripts/minidfs.sh`). Input from HDFS gives the model
//! local files give; the model can be written to HDFS; a state recognises
//! its input under another NameNode host spelling; an HA nameservice is
//! resolved from HADOOP_CONF_DIR; an unreachable NameNode fails fast; a
//! NameNode restarted mid-read is waited out.

use crate::util::*;
use std::io::Write;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use ur::storage::Store;

/// A running MiniDFSCluster; stopped (stdin closed, then killed) on drop.
pub(crate) struct MiniDfs {
    child: Child,
    /// Its answers, one line per command.
    answers: std::io::Lines<BufReader<ChildStdout>>,
    pub(crate) url: String,
    conf_dir: tempfile::TempDir,
}

impl MiniDfs {
    fn start(ha: bool) -> MiniDfs {
        MiniDfs::start_with(if ha { &["--ha"] } else { &[] })
    }

    /// Started with more arguments of `scripts/minidfs.sh run` (`--port N`).
    pub(crate) fn start_with(args: &[&str]) -> MiniDfs {
        let conf_dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(repo().join("scripts/minidfs.sh"));
        cmd.arg("run").arg("--conf-dir").arg(conf_dir.path()).args(args);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("scripts/minidfs.sh runs (needs java and mvn: see scripts/test.sh)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().and_then(Result::ok).unwrap_or_default();
        let url =
            ready.strip_prefix("Ready ").unwrap_or_else(|| panic!("MiniDFS did not start: {ready:?}")).to_string();
        MiniDfs { child, answers: lines, url, conf_dir }
    }

    /// Sends a command (`restart-namenode`: see MiniDfs.java); its answer
    /// is the next [`MiniDfs::answer`].
    fn send(&mut self, command: &str) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{command}").unwrap();
    }

    fn answer(&mut self) -> String {
        self.answers.next().and_then(Result::ok).unwrap_or_else(|| "no answer: MiniDFS ended".into())
    }

    /// Uploads a local directory tree to `dest` (a path on this cluster),
    /// with a client configured from this cluster's configuration directory.
    fn upload(&self, local: &Path, dest: &str) {
        let client = hdfs_native::ClientBuilder::new()
            .with_url(self.url.clone())
            .with_config_dir(self.conf_dir.path().to_str().unwrap())
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(upload_tree(&client, local, dest));
    }

    fn read(&self, url: &str) -> Vec<u8> {
        let (store, _) = Store::resolve(url).unwrap();
        let mut r = store.open(url, 0).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut out).unwrap();
        out
    }
}

async fn upload_tree(client: &hdfs_native::Client, local: &Path, dest: &str) {
    client.mkdirs(dest, 0o755, true).await.unwrap();
    for entry in std::fs::read_dir(local).unwrap() {
        let path = entry.unwrap().path();
        let target = format!("{dest}/{}", path.file_name().unwrap().to_str().unwrap());
        if path.is_dir() {
            Box::pin(upload_tree(client, &path, &target)).await;
        } else {
            let mut w = client.create(&target, hdfs_native::WriteOptions::default()).await.unwrap();
            w.write_bytes(bytes::Bytes::from(std::fs::read(&path).unwrap())).await.unwrap();
            w.close().await.unwrap();
        }
    }
}

impl Drop for MiniDfs {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn retail() -> PathBuf {
    online_retail()
}

fn retail_engine(dir: &Path) -> PathBuf {
    engine_file(
        dir,
        serde_json::json!({
            "indicators": [{"name": "purchase", "maxItemsPerUser": 80}, {"name": "cancel"}, {"name": "country"}],
            "rankings": [{"name": "popRank", "type": "popular", "eventNames": ["purchase"]}],
        }),
    )
}

/// The `--now` of the Online Retail runs.
const NOW: &str = "2011-12-10T00:00:00Z";

/// Online Retail uploaded to `/events` of `dfs`: its engine (in `dir`) and
/// the items of the model local files give.
fn retail_uploaded(dfs: &MiniDfs, dir: &Path) -> (PathBuf, Vec<u8>) {
    let engine = retail_engine(dir);
    dfs.upload(&retail(), "/events");
    let local = dir.join("local");
    train_ok(&engine, &retail(), &local, &["--now", NOW, "-q"]);
    (engine, std::fs::read(local.join("items.jsonl")).unwrap())
}

/// One cluster for the non-HA tests, in one test function to start it once.
#[test]
fn hdfs_input_and_output() {
    let dfs = MiniDfs::start(false);
    let dir = tempfile::tempdir().unwrap();
    let (engine, expected) = retail_uploaded(&dfs, dir.path());
    let now = NOW;

    // The model from HDFS equals the model from local files.
    let from_hdfs = dir.path().join("from-hdfs");
    let input = PathBuf::from(format!("{}/events/", dfs.url));
    train_ok(&engine, &input, &from_hdfs, &["--now", now, "-q", "--workers", "2"]);
    assert!(expected.len() > 100_000);
    assert!(std::fs::read(from_hdfs.join("items.jsonl")).unwrap() == expected, "HDFS input gives another model");
    let m = manifest(&from_hdfs);
    assert_eq!(m["input"]["files"], 13, "README.md is skipped, the 13 partitions read");

    // The model written to HDFS, then replaced by a second run.
    let output = PathBuf::from(format!("{}/models/retail", dfs.url));
    for _ in 0..2 {
        train_ok(&engine, &input, &output, &["--now", now, "-q"]);
        assert!(dfs.read(&format!("{}/models/retail/items.jsonl", dfs.url)) == expected);
    }
    let (store, _) = Store::resolve(&dfs.url).unwrap();
    let names: Vec<String> = store
        .list_dir(&format!("{}/models", dfs.url))
        .unwrap()
        .into_iter()
        .map(|e| ur::storage::file_name(&e.path).to_string())
        .collect();
    assert_eq!(names, ["retail"], "no temporary directories left on HDFS");

    // Incremental state on HDFS: written, locked, published, resumed.
    let state = format!("{}/state/retail", dfs.url);
    let with_state = dir.path().join("with-state");
    for run in 0..2 {
        train_ok(&engine, &input, &with_state, &["--now", now, "-q", "--state", &state]);
        let m = manifest(&with_state);
        assert_eq!(m["input"]["files"], if run == 0 { 13 } else { 0 });
        assert!(std::fs::read(with_state.join("items.jsonl")).unwrap() == expected);
    }
    // The same input with another NameNode host spelling, without the
    // trailing slash: nothing is consumed again. Another directory is refused.
    let spelt = PathBuf::from(format!("{}/events", dfs.url.replace("127.0.0.1", "LocalHost")));
    train_ok(&engine, &spelt, &with_state, &["--now", now, "-q", "--state", &state]);
    assert_eq!(manifest(&with_state)["input"]["files"], 0, "{} read files again", spelt.display());
    assert!(std::fs::read(with_state.join("items.jsonl")).unwrap() == expected);
    dfs.upload(handmade_events().parent().unwrap(), "/other");
    let other = PathBuf::from(format!("{}/other", dfs.url));
    let out = ur_train(train_args(&engine, &other, &with_state, &["--now", now, "-q", "--state", &state]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let roots = [format!("{}/events", dfs.url.replace("127.0.0.1", "localhost")), format!("{}/other", dfs.url)];
    assert!(roots.iter().all(|r| err.contains(r.as_str())) && err.contains("--full"), "{roots:?}: {err}");
    let state_files: Vec<String> = store
        .list_dir(&format!("{}/state", dfs.url))
        .unwrap()
        .into_iter()
        .map(|e| ur::storage::file_name(&e.path).to_string())
        .collect();
    assert_eq!(state_files, ["retail"], "no lock or temporary directory left: {state_files:?}");

    // Two processes reading HDFS and writing one model on HDFS.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hosts = dir.path().join("hosts.txt");
    write_lines(&hosts, &[format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")]);
    let output = format!("{}/models/two", dfs.url);
    let children: Vec<Child> = (0..2)
        .map(|p| {
            Command::new(env!("CARGO_BIN_EXE_ur-train"))
                .args([
                    "-e",
                    engine.to_str().unwrap(),
                    "-i",
                    input.to_str().unwrap(),
                    "-o",
                    &output,
                    "--now",
                    now,
                    "-q",
                ])
                .args(["--hosts", hosts.to_str().unwrap(), "--process", &p.to_string(), "--workers", "2"])
                .env("UR_CLUSTER_SECRET", "the secret of the hdfs test cluster")
                .args(["--split-size", "200000", "--no-progress"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let joined: Vec<u8> = (0..4).flat_map(|w| dfs.read(&format!("{output}/items-{w:05}.jsonl"))).collect();
    assert!(joined == expected, "2 processes on HDFS give another model");
}

#[test]
fn ha_nameservice_from_hadoop_conf_dir() {
    let dfs = MiniDfs::start(true);
    assert_eq!(dfs.url, "hdfs://minidfs-ns");
    let dir = tempfile::tempdir().unwrap();
    dfs.upload(handmade_events().parent().unwrap(), "/handmade");
    let out = Command::new(env!("CARGO_BIN_EXE_ur-train"))
        .args(["-e", handmade_engine().to_str().unwrap(), "-i", "hdfs://minidfs-ns/handmade/events.jsonl"])
        .args(["-o", dir.path().join("model").to_str().unwrap(), "--now", HANDMADE_NOW, "-q", "--no-progress"])
        .env("HADOOP_CONF_DIR", dfs.conf_dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let local = dir.path().join("local");
    train_ok(&handmade_engine(), &handmade_events(), &local, &["--now", HANDMADE_NOW, "-q"]);
    assert_eq!(
        std::fs::read(dir.path().join("model/items.jsonl")).unwrap(),
        std::fs::read(local.join("items.jsonl")).unwrap()
    );
}

#[test]
fn unreachable_namenode_fails_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = ur_train([
        "-e",
        handmade_engine().to_str().unwrap(),
        "-i",
        "hdfs://127.0.0.1:1/events",
        "-o",
        dir.path().join("m").to_str().unwrap(),
    ]);
    let elapsed = start.elapsed();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("NameNode") && stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}

/// The NameNode restarted while a run reads (held after its first unit,
/// released once the NameNode's port refuses connections): the reads retry
/// until it is back and the run ends with the model local files give — it
/// failed with "IO error occurred while communicating with HDFS" before
/// reads retried.
#[test]
fn namenode_restart_mid_read_is_waited_out() {
    let mut dfs = MiniDfs::start(false);
    let dir = tempfile::tempdir().unwrap();
    let (engine, expected) = retail_uploaded(&dfs, dir.path());

    let (model, release) = (dir.path().join("model"), dir.path().join("release"));
    let input = PathBuf::from(format!("{}/events", dfs.url));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ur-train"))
        .args(train_args(&engine, &input, &model, &["--now", NOW, "--workers", "1", "--no-progress"]))
        .env(ur::hold::HOLD_ENV, &release)
        .env(ur::hold::HOLD_AT_ENV, "reading")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok);
    let mut log = String::new();
    read_until(&mut lines, &mut log, "holding mid-reading");

    dfs.send("restart-namenode");
    let namenode = dfs.url.strip_prefix("hdfs://").unwrap().to_string();
    eventually("the NameNode's port refusing connections", Duration::from_secs(60), || {
        std::net::TcpStream::connect(&namenode).is_err().then_some(())
    });
    std::fs::write(&release, "").unwrap();
    let status = child.wait().unwrap();
    lines.for_each(|line| log.push_str(&line));
    assert_eq!(dfs.answer(), "Restarted");
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("retrying"), "no read met the restart: {log}");
    assert!(
        std::fs::read(model.join("items.jsonl")).unwrap() == expected,
        "the run through the restart gives another model"
    );
}
