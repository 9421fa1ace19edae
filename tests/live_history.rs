//! Query-time history: `ur events --es-url` with a real Elasticsearch (the
//! node of `elasticsearch.rs`). The UR's handmade test end to end through
//! the event server; a new user's events and an item's `$delete` reach the
//! next query within a second; and a training published while events
//! arrive (their file still open, so not in its input) erases none of them.
//! A restart re-applies what a `kill -9` left unapplied and keeps the
//! journal, and a clean stop applies what is batched and leaves nothing
//! to re-apply; a live `$unset` removes keys; `ur import --es-url` applies the
//! imported events; two servers writing one live users index, each with
//! its cache, lose no event.

use crate::elasticsearch::{assert_answers_as_the_ur, engine_named, es_args, recommender, scores, server, train};
use crate::events::{EventServer, new_app, stored};
use crate::util::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use ur::query::Recommender;
use ur::query::request::Query;
use ur::runtime::block_on;

/// `ur events` feeding the model of `engine` from app `handmade`.
fn live_server(root: &Path, engine: &Path, extra: &[&str]) -> EventServer {
    let mut args: Vec<String> = vec!["-e".into(), engine.display().to_string(), "--live-app".into(), "handmade".into()];
    args.extend(es_args(&server().url));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    EventServer::start(root, &args)
}

/// An event root with app `handmade`, and the handmade model trained into
/// `alias`: (the root, the engine, the app's access key).
fn trained_app(dir: &Path, alias: &str) -> (PathBuf, PathBuf, String) {
    let root = dir.join("events");
    let engine = engine_named(dir, alias);
    let key = new_app(&root, "handmade");
    let out = train(&engine, &handmade_events(), &server().url, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    (root, engine, key)
}

fn post(s: &EventServer, key: &str, event: Value) {
    let (status, body) = s.call("POST", &format!("/events.json?accessKey={key}"), Some(&event.to_string()));
    assert_eq!(status, 201, "{event}: {body}");
}

fn items(r: &Recommender, query: Value) -> Vec<String> {
    let q: Query = serde_json::from_value(query).unwrap();
    scores(&block_on(r.recommend(&q)).unwrap()).into_iter().map(|(i, ..)| i).collect()
}

/// Polls `ok` until it holds; fails after `within` (no sleep stands for a sync).
fn within(s: &EventServer, within: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if ok() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}; ur events: {}", s.log());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn usage(event: &str, user: &str, item: &str) -> Value {
    json!({"event": event, "entityType": "user", "entityId": user, "targetEntityType": "item", "targetEntityId": item})
}

/// The seed's handmade test with the event server: POST the events, train
/// from the partitions it closed, query as the UR; then a new user's events
/// and an item's `$delete` change the next answers within a second.
#[test]
fn handmade_end_to_end_and_reacting_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("events");
    let engine = engine_named(dir.path(), "hm_live");
    let key = new_app(&root, "handmade");
    let s = live_server(&root, &engine, &["--roll-seconds", "1"]);
    let lines: Vec<Value> =
        std::fs::read_to_string(handmade_events()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (singles, batched) = lines.split_at(9);
    for e in singles {
        post(&s, &key, e.clone());
    }
    for chunk in batched.chunks(50) {
        let body = Value::Array(chunk.to_vec()).to_string();
        let (status, r) = s.call("POST", &format!("/batch/events.json?accessKey={key}"), Some(&body));
        assert_eq!(status, 200);
        assert!(r.as_array().unwrap().iter().all(|x| x["status"] == 201), "{r}");
    }
    within(&s, Duration::from_secs(10), "every file closed", || stored(&root, "handmade").len() == lines.len());
    let out = train(&engine, &root.join("handmade"), &server().url, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = recommender(&server().url, &engine);
    assert_answers_as_the_ur(&r);

    // A new user: popularity first; its purchase blacklists the item at once.
    let user = json!({"user": "newcomer", "currentDate": HANDMADE_NOW, "num": 10});
    let before = items(&r, user.clone());
    let bought = before[0].clone();
    post(&s, &key, usage("purchase", "newcomer", &bought));
    let took = within(&s, Duration::from_secs(1), "a purchase reaching the next query", || {
        !items(&r, user.clone()).contains(&bought)
    });
    eprintln!("purchase → query: {took:?}");
    assert_ne!(items(&r, user.clone()), before, "the answer changed");

    // An item's $delete removes it from every answer.
    let popular = json!({"currentDate": HANDMADE_NOW, "num": 10});
    let gone = items(&r, popular.clone())[0].clone();
    post(&s, &key, json!({"event": "$delete", "entityType": "item", "entityId": gone}));
    let took = within(&s, Duration::from_secs(1), "a $delete reaching the next query", || {
        !items(&r, popular.clone()).contains(&gone)
    });
    eprintln!("$delete → query: {took:?}");
    s.stop();
}

/// A training whose input lacks events acknowledged while it ran (their
/// file is still open) publishes its model by an alias swap: the user's
/// history still holds them, and an item deleted meanwhile stays deleted.
#[test]
fn a_training_swapping_the_alias_erases_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let (root, engine, key) = trained_app(dir.path(), "hm_swap");
    let s = live_server(&root, &engine, &[]);
    let r = recommender(&server().url, &engine);
    let user = json!({"user": "u1", "currentDate": HANDMADE_NOW, "num": 10});
    let popular = json!({"currentDate": HANDMADE_NOW, "num": 10});
    let shown = items(&r, user.clone());
    assert!(!shown.is_empty());

    // A second training runs, held mid-co-occurrence (ur::hold) until the
    // events below are live, however fast it is; meanwhile u1 buys what it
    // was shown and the most popular item is deleted.
    let alias = "hm_swap";
    let before_swap = crate::elasticsearch::alias_target(&crate::elasticsearch::client(&server().url), alias);
    let mut args = vec!["-e".to_string(), engine.display().to_string(), "-i".into()];
    args.push(handmade_events().display().to_string());
    args.extend(["--now".into(), HANDMADE_NOW.into(), "-q".into()]);
    args.extend(es_args(&server().url));
    let release = dir.path().join("release");
    let training = Command::new(env!("CARGO_BIN_EXE_ur-train"))
        .args(&args)
        .env(ur::hold::HOLD_ENV, &release)
        .stderr(Stdio::piped())
        .spawn()
        .expect("ur-train runs");
    for item in &shown {
        post(&s, &key, usage("purchase", "u1", item));
    }
    let gone = items(&r, popular.clone())[0].clone();
    post(&s, &key, json!({"event": "$delete", "entityType": "item", "entityId": gone}));
    within(&s, Duration::from_secs(1), "the live changes", || {
        items(&r, user.clone()).iter().all(|i| !shown.contains(i)) && !items(&r, popular.clone()).contains(&gone)
    });
    std::fs::write(&release, "").unwrap();
    let out = training.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after_swap = crate::elasticsearch::alias_target(&crate::elasticsearch::client(&server().url), alias);
    assert_ne!(before_swap, after_swap, "the training swapped the alias");

    // Right after the swap: the history holds every purchase (the trained
    // one lacks them: they are in a file still open).
    let now = items(&r, user.clone());
    assert!(now.iter().all(|i| !shown.contains(i)), "purchases {shown:?} lost by the swap: {now:?}");
    // The new model has the item again; the server re-applies the $delete.
    within(&s, Duration::from_secs(2), "the $delete re-applied to the new model", || {
        !items(&r, popular.clone()).contains(&gone)
    });
    let log = s.stop();
    assert!(log.contains("re-applying item changes"), "{log}");
}

/// Two `ur events` writers of one live users index, each with its cache of
/// the documents it wrote, and writes behind both their backs (a document
/// replaced, one deleted): a stale cache entry is detected (409), the
/// document read again, and no acknowledged event is lost or reordered.
#[test]
fn writers_sharing_the_live_index_lose_no_event() {
    use std::sync::atomic::Ordering;
    use ur::events::live::{Live, LiveOptions};
    let dir = tempfile::tempdir().unwrap();
    let path = engine_named(dir.path(), "hm_two_writers");
    let engine = ur::config::Engine::load(&path).unwrap().engine;
    let es = crate::elasticsearch::client(&server().url);
    let options = LiveOptions {
        es: ur::es::EsConfig {
            user: Some(crate::elasticsearch::USER.into()),
            password: Some(crate::elasticsearch::PASSWORD.into()),
            ..ur::es::EsConfig::with_urls(&server().url).unwrap()
        },
        engine: engine.clone(),
        app: "handmade".into(),
        delay: Duration::from_millis(5),
        max_batch: 5000,
        replay_before: Duration::from_secs(60),
        journal_for: Duration::from_secs(60),
    };
    let live_index = ur::es::indices::live_users_index(&ur::es::indices::alias_of(&engine));
    let rt = ur::runtime::runtime();
    let (a, _) = rt.block_on(Live::start(options.clone())).unwrap();
    let (b, _) = rt.block_on(Live::start(options)).unwrap();
    let buy = |w: &Live, item: &str| {
        let accepted = ur::events::validate::accept(&usage("purchase", "u1", item), 0, "id".into()).unwrap();
        let before = w.stats.applied.load(Ordering::Relaxed);
        w.send(w.ops_of("handmade", [&accepted]));
        let start = Instant::now();
        while w.stats.applied.load(Ordering::Relaxed) == before {
            assert!(start.elapsed() < Duration::from_secs(10), "{item} not applied: {:?}", w.stats);
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let doc = || {
        let (status, v) = block_on(es.call(ur::es::HttpMethod::Get, &format!("/{live_index}/_doc/u1"), None)).unwrap();
        assert_eq!(status, 200, "{v}");
        v["_source"]["purchase"].clone()
    };
    let conflicts = |w: &Live| w.stats.conflicts.load(Ordering::Relaxed);

    buy(&a, "a"); // a creates the document and caches it
    buy(&b, "b"); // b's create finds it: read, re-applied
    assert_eq!(doc(), json!(["b", "a"]));
    assert_eq!(conflicts(&b), 1, "{:?}", b.stats);
    buy(&a, "c"); // a's cached version is stale
    assert_eq!(doc(), json!(["c", "b", "a"]));
    assert_eq!(conflicts(&a), 1, "{:?}", a.stats);
    buy(&a, "d"); // now a's cache is right: no conflict
    assert_eq!(doc(), json!(["d", "c", "b", "a"]));
    assert_eq!(conflicts(&a), 1, "{:?}", a.stats);

    // Behind both caches' backs: the document replaced, then deleted.
    let put = |body: Value| {
        let path = format!("/{live_index}/_doc/u1?refresh=true");
        let (status, v) =
            block_on(es.call(ur::es::HttpMethod::Put, &path, Some(body.to_string().into_bytes()))).unwrap();
        assert!((200..300).contains(&status), "{v}");
    };
    put(json!({"user": "u1", "purchase": ["z"]}));
    buy(&a, "e");
    assert_eq!(doc(), json!(["e", "z"]), "the replaced document read again, not the cached one");
    assert_eq!(conflicts(&a), 2, "{:?}", a.stats);
    let (status, _) =
        block_on(es.call(ur::es::HttpMethod::Delete, &format!("/{live_index}/_doc/u1?refresh=true"), None)).unwrap();
    assert_eq!(status, 200);
    buy(&a, "f");
    assert_eq!(doc(), json!(["f"]), "a deleted document is created again");
    assert_eq!(a.stats.write_failures.load(Ordering::Relaxed), 0, "conflicts are re-written at once, no back-off");
    assert_eq!(b.stats.write_failures.load(Ordering::Relaxed), 0);
}

/// A user's live document in the live users index of `alias` (`None`: none).
fn live_doc(alias: &str, user: &str) -> Option<Value> {
    let es = crate::elasticsearch::client(&server().url);
    let path = format!("/{alias}_users_live/_doc/{user}");
    let (status, v) = block_on(es.call(ur::es::HttpMethod::Get, &path, None)).unwrap();
    (status == 200).then(|| v["_source"].clone())
}

/// An item's document in the live model of `alias`.
fn item_doc(alias: &str, item: &str) -> Option<Value> {
    let es = crate::elasticsearch::client(&server().url);
    let (status, v) = block_on(es.call(ur::es::HttpMethod::Get, &format!("/{alias}/_doc/{item}"), None)).unwrap();
    (status == 200).then(|| v["_source"].clone())
}

/// Events acknowledged but never applied (the server batches for ten
/// minutes and is killed with `kill -9` right after the 201s) are applied
/// when it starts again; the `$delete` it journaled then is re-applied to a
/// model published after the restart; another restart re-applying the same
/// window changes no history.
#[test]
fn a_restart_applies_what_a_kill_left_and_keeps_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let alias = "hm_restart";
    let (root, engine, key) = trained_app(dir.path(), alias);
    let r = recommender(&server().url, &engine);
    let popular = json!({"currentDate": HANDMADE_NOW, "num": 10});
    let shown = items(&r, popular.clone());
    let (gone, bought) = (shown[0].clone(), &shown[1..4]);

    let s = live_server(&root, &engine, &["--live-delay-ms", "600000"]);
    for item in bought {
        post(&s, &key, usage("purchase", "restarted", item));
    }
    post(&s, &key, json!({"event": "$delete", "entityType": "item", "entityId": gone}));
    drop(s); // kill -9
    assert_eq!(live_doc(alias, "restarted"), None, "nothing was applied before the kill");
    assert!(items(&r, popular.clone()).contains(&gone));

    let s = live_server(&root, &engine, &[]);
    let newest_first: Vec<&String> = bought.iter().rev().collect();
    within(&s, Duration::from_secs(5), "the killed server's events applied at restart", || {
        live_doc(alias, "restarted").is_some_and(|d| d["purchase"] == json!(newest_first))
            && !items(&r, popular.clone()).contains(&gone)
    });

    // A training published now lacks the $delete (its input is the
    // original events): the restarted server's journal re-applies it.
    let out = train(&engine, &handmade_events(), &server().url, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    within(&s, Duration::from_secs(2), "the $delete re-applied to the model published after the restart", || {
        !items(&r, popular.clone()).contains(&gone)
    });
    let log = s.stop();
    assert!(log.contains("re-applying item changes"), "{log}");

    // A clean stop records that every event taken was applied: the next
    // start re-applies none (it re-applied the last 10 s before).
    let before = live_doc(alias, "restarted").unwrap();
    let s = live_server(&root, &engine, &[]);
    within(&s, Duration::from_secs(5), "the window read", || s.log().contains("re-applied the log's events"));
    assert_eq!(reapplied(&s.log()), 0, "{}", s.log());
    s.stop();

    // Re-applying the window (the checkpoints moved back) leaves the history as it is.
    for entry in std::fs::read_dir(root.join("handmade")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_str().unwrap().starts_with(".live-applied-") {
            std::fs::write(&path, "0").unwrap();
        }
    }
    let s = live_server(&root, &engine, &[]);
    within(&s, Duration::from_secs(5), "the window re-applied", || s.log().contains("re-applied the log's events"));
    assert_eq!(reapplied(&s.log()), bought.len() as u64 + 1, "{}", s.log());
    assert_eq!(live_doc(alias, "restarted").unwrap(), before);
    s.stop();
}

/// A clean stop writes the events still batched (here for ten minutes) at
/// once, before it ends: they are in the user's history when it has
/// stopped, and the next start has nothing to re-apply. Before, they waited
/// for their batch, the stop gave up after 5 s, and the next start
/// re-applied them.
#[test]
fn a_clean_stop_applies_what_is_batched() {
    let dir = tempfile::tempdir().unwrap();
    let alias = "hm_clean_stop";
    let (root, engine, key) = trained_app(dir.path(), alias);

    let s = live_server(&root, &engine, &["--live-delay-ms", "600000"]);
    for item in ["Iphone 4", "Galaxy"] {
        post(&s, &key, usage("purchase", "stopped", item));
    }
    assert_eq!(live_doc(alias, "stopped"), None, "batched for ten minutes");
    let log = s.stop();
    assert!(log.contains("live checkpoint: every event taken was applied"), "{log}");
    let doc = live_doc(alias, "stopped").unwrap_or_else(|| panic!("not applied at the stop: {log}"));
    assert_eq!(doc["purchase"], json!(["Galaxy", "Iphone 4"]));

    let s = live_server(&root, &engine, &[]);
    within(&s, Duration::from_secs(5), "the window read", || s.log().contains("re-applied the log's events"));
    assert_eq!(reapplied(&s.log()), 0, "{}", s.log());
    s.stop();
}

/// How many events the start's replay re-applied, from its log line.
fn reapplied(log: &str) -> u64 {
    let line = log.lines().find(|l| l.contains("re-applied the log's events")).expect("the replay's line");
    let count = line.split("events=").nth(1).expect("events=N");
    count.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
}

/// A live `$unset` removes the keys from the item's document (as the next
/// training's document has none), not setting them to `null`.
#[test]
fn a_live_unset_removes_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let alias = "hm_unset";
    let (root, engine, key) = trained_app(dir.path(), alias);
    let s = live_server(&root, &engine, &[]);
    let item = "Iphone 6";
    let before = item_doc(alias, item).expect("a trained item");
    let set = json!({"event": "$set", "entityType": "item", "entityId": item,
        "properties": {"color": ["red"], "size": ["L"]}});
    post(&s, &key, set);
    within(&s, Duration::from_secs(2), "the $set", || {
        item_doc(alias, item).is_some_and(|d| d["color"] == json!(["red"]))
    });
    let unset = json!({"event": "$unset", "entityType": "item", "entityId": item, "properties": {"color": null}});
    post(&s, &key, unset);
    within(&s, Duration::from_secs(2), "the $unset", || {
        item_doc(alias, item).is_some_and(|d| d.get("color").is_none())
    });
    let mut expected = before;
    expected["size"] = json!(["L"]);
    assert_eq!(item_doc(alias, item).unwrap(), expected, "no `color` key, the rest as it was");
    s.stop();
}

/// `ur import --es-url` applies the imported events to the live history
/// and model before it exits, and says so; an unreachable cluster stops it
/// before anything is stored.
#[test]
fn import_with_es_url_applies_the_events_live() {
    let dir = tempfile::tempdir().unwrap();
    let alias = "hm_import";
    let (root, engine, _) = trained_app(dir.path(), alias);
    let r = recommender(&server().url, &engine);
    let popular = json!({"currentDate": HANDMADE_NOW, "num": 10});
    let shown = items(&r, popular.clone());
    let file = dir.path().join("new.jsonl");
    let mut lines: Vec<String> = shown[1..3].iter().map(|i| usage("purchase", "imported", i).to_string()).collect();
    lines.push(json!({"event": "$delete", "entityType": "item", "entityId": shown[0]}).to_string());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let import = |es: Vec<String>| {
        let mut args: Vec<String> = vec!["import".into(), "--app".into(), "handmade".into()];
        args.extend([file.display().to_string(), "--root".into(), root.display().to_string()]);
        args.extend(["-e".into(), engine.display().to_string()]);
        args.extend(es);
        Command::new(env!("CARGO_BIN_EXE_ur")).args(&args).env_remove("RUST_LOG").output().expect("ur runs")
    };
    let out = import(vec!["--es-url".into(), "http://127.0.0.1:1".into()]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing imported"), "{}", stderr(&out));
    assert!(stored(&root, "handmade").is_empty());

    let out = import(es_args(&server().url));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("applied 3 of 3 live updates"), "{}", stderr(&out));
    assert_eq!(stored(&root, "handmade").len(), 3);
    let newest_first: Vec<&String> = shown[1..3].iter().rev().collect();
    assert_eq!(live_doc(alias, "imported").unwrap()["purchase"], json!(newest_first));
    assert!(!items(&r, popular).contains(&shown[0]), "the imported $delete is applied");
}
