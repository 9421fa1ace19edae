//! The training state's integrity: a damaged state (a flipped bit, a
//! truncated or swapped part, an older format) is refused with "corrupt
//! state …; retrain with --full" — never a panic, never a wrong model — and
//! the state decoder and the engine.json loader never panic, whatever their
//! input (bounded property tests).

use crate::util::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The handmade data with rankings (a random one keeps item time spans) and
/// item properties: every table of a part has rows.
fn engine(dir: &Path) -> PathBuf {
    engine_file(
        dir,
        json!({
            "indicators": [{"name": "purchase"}, {"name": "view"}, {"name": "category-pref"}],
            "rankings": [
                {"name": "popRank", "type": "popular", "eventNames": ["purchase", "view"], "duration": "3650 days"},
                {"name": "uniqueRank", "type": "random"}
            ],
            "seed": 3
        }),
    )
}

fn run(engine: &Path, state: &Path, output: &Path, workers: usize) -> std::process::Output {
    let workers = workers.to_string();
    let args = train_args(
        engine,
        &handmade_events(),
        output,
        &["--state", state.to_str().unwrap(), "--now", HANDMADE_NOW, "-q", "--workers", &workers],
    );
    ur_train(&args)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// A state written by a real run (two workers: two parts), and the model a
/// run resuming from it gives with one and with two workers.
struct Fixture {
    dir: tempfile::TempDir,
    engine: PathBuf,
    state: PathBuf,
    models: [Vec<u8>; 2],
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let state = dir.path().join("state");
    let out = run(&engine, &state, &dir.path().join("first"), 2);
    assert!(out.status.success(), "{}", stderr(&out));
    let models = [1, 2].map(|workers| {
        let copy = dir.path().join(format!("state-copy-{workers}"));
        copy_dir(&state, &copy);
        let model = dir.path().join(format!("reference-{workers}"));
        let out = run(&engine, &copy, &model, workers);
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read(model.join("items.jsonl")).unwrap()
    });
    Fixture { dir, engine, state, models }
}

/// Resumes from a copy of the state with `file` changed by `damage`; the
/// run must refuse it as corrupt (exit `codes`), or give the exact model.
fn resume_damaged(f: &Fixture, case: &str, file: &str, workers: usize, codes: &[i32], damage: impl Fn(&mut Vec<u8>)) {
    let copy = f.dir.path().join(format!("damaged-{case}"));
    copy_dir(&f.state, &copy);
    let mut bytes = std::fs::read(copy.join(file)).unwrap();
    damage(&mut bytes);
    std::fs::write(copy.join(file), &bytes).unwrap();
    let model = f.dir.path().join(format!("model-{case}"));
    let out = run(&f.engine, &copy, &model, workers);
    let err = stderr(&out);
    match out.status.code() {
        Some(0) => {
            let items = std::fs::read(model.join("items.jsonl")).unwrap();
            assert!(items == f.models[workers - 1], "{case}: exit 0 with a different model");
        }
        Some(code) if codes.contains(&code) => {
            assert!(err.contains("corrupt state") && err.contains("retrain with --full"), "{case}: {err}");
        }
        code => panic!("{case}: exit {code:?}: {err}"),
    }
    std::fs::remove_dir_all(&copy).unwrap();
    let _ = std::fs::remove_dir_all(&model);
}

/// Exit codes of a refused state: a corrupt part or `state.json` fails the
/// run (1).
const PART_REFUSED: &[i32] = &[1];
const MANIFEST_REFUSED: &[i32] = &[1];

/// `n` bit positions spread over a file of `len` bytes, first and last
/// bytes included.
fn spread(len: usize, n: usize) -> Vec<usize> {
    let bits = len * 8;
    (0..n).map(|k| (k * (bits - 1) / (n - 1) + k % 8) % bits).collect()
}

#[test]
fn flipped_bits_in_a_part_or_state_json_are_refused() {
    let f = fixture();
    let part = std::fs::read(f.state.join("part-00000.bin")).unwrap();
    for (k, bit) in spread(part.len(), 60).into_iter().enumerate() {
        resume_damaged(&f, &format!("part-bit-{bit}"), "part-00000.bin", 1 + k % 2, PART_REFUSED, |b| {
            b[bit / 8] ^= 1 << (bit % 8)
        });
    }
    let manifest = std::fs::read(f.state.join("state.json")).unwrap();
    for (k, bit) in spread(manifest.len(), 30).into_iter().enumerate() {
        resume_damaged(&f, &format!("manifest-bit-{bit}"), "state.json", 1 + k % 2, MANIFEST_REFUSED, |b| {
            b[bit / 8] ^= 1 << (bit % 8)
        });
    }
}

#[test]
fn truncated_extended_or_swapped_parts_are_refused() {
    let f = fixture();
    let len = std::fs::read(f.state.join("part-00001.bin")).unwrap().len();
    for keep in [0, 7, 24, len / 2, len - 1] {
        resume_damaged(&f, &format!("truncated-{keep}"), "part-00001.bin", 2, PART_REFUSED, |b| b.truncate(keep));
    }
    resume_damaged(&f, "extended", "part-00001.bin", 1, PART_REFUSED, |b| b.push(0));
    let other = std::fs::read(f.state.join("part-00000.bin")).unwrap();
    resume_damaged(&f, "swapped", "part-00001.bin", 2, PART_REFUSED, |b| *b = other.clone());
    let out = {
        let copy = f.dir.path().join("missing");
        copy_dir(&f.state, &copy);
        std::fs::remove_file(copy.join("part-00001.bin")).unwrap();
        run(&f.engine, &copy, &f.dir.path().join("model-missing"), 2)
    };
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("part-00001.bin"), "{}", stderr(&out));
}

#[test]
fn a_state_of_the_previous_format_is_refused_as_such() {
    let f = fixture();
    let copy = f.dir.path().join("old");
    copy_dir(&f.state, &copy);
    let mut manifest: Value = serde_json::from_str(&std::fs::read_to_string(copy.join("state.json")).unwrap()).unwrap();
    let object = manifest.as_object_mut().unwrap();
    object.remove("checksum");
    object.insert("format".into(), 1.into());
    std::fs::write(copy.join("state.json"), serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let out = run(&f.engine, &copy, &f.dir.path().join("model-old"), 2);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("state format 1 is older than this release") && err.contains("retrain with --full"), "{err}");
}

/// A real part's bytes, for mutation.
fn sample_part() -> Vec<u8> {
    let part = ur::state::StatePart {
        items: vec!["i1".into(), "i2".into(), "i3".into()],
        user_names: "u1u2".into(),
        user_ends: vec![2, 4],
        primary_events: vec![3, 1],
        lens: vec![2, 1, 1, 0],
        pairs: vec![(0, 10), (2, 11), (1, 12), (2, 13)],
        history_hashes: vec![7, 0],
        rank_names: vec!["purchase".into()],
        rank_events: vec![(0, 0, 1_000), (2, 0, 2_000)],
        spans: vec![(1, 5, 9)],
        property_events: Vec::new(),
        doc_hashes: vec![(2, 42)],
    };
    ur::state::encode_part(0, &part)
}

/// The JSON values proptest draws: any shape, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![-1i64, 0, 1, 2, 3, 100, i64::from(u32::MAX) + 1]).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "purchase",
            "view",
            "popular",
            "trending",
            "hot",
            "random",
            "userDefined",
            "1 day",
            "0 days",
            "-5 days",
            "99999999999999999 days",
            "3650 days",
            "2026-01-15T12:00:00Z",
            "9999-99-99T99:99:99Z",
            "",
            "all",
            "collabFiltering",
            "backfill",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((engine_key(), inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Keys the engine reader knows, and a few it does not.
fn engine_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "name",
            "type",
            "eventNames",
            "aliases",
            "duration",
            "maxItemsPerUser",
            "maxCorrelatorsPerItem",
            "minLLR",
            "indicators",
            "rankings",
            "recsModel",
            "num",
            "seed",
            "userBias",
            "itemBias",
            "returnSelf",
            "fields",
            "values",
            "bias",
            "blacklistEvents",
            "maxQueryEvents",
            "maxEventsPerEventType",
            "maxCorrelatorsPerEventType",
            "backfillField",
            "availableDateName",
            "expireDateName",
            "dateName",
            "minEventsPerUser",
            "eventWindow",
            "removeDuplicates",
            "compressProperties",
            "offsetDate",
            "endDate",
            "params",
            "datasource",
            "algorithms",
            "sparkConf",
            "weird",
        ])
        .prop_map(String::from),
        "[a-zA-Z]{0,6}",
    ]
}

/// An engine.json shaped like a real one, with drawn values in its places.
fn engine_json() -> impl Strategy<Value = Value> {
    (
        json_value(),
        json_value(),
        prop::collection::vec(json_value(), 0..3),
        prop::collection::vec(json_value(), 0..3),
        prop::collection::vec((engine_key(), json_value()), 0..6),
    )
        .prop_map(|(event_names, window, indicators, rankings, extra)| {
            let mut params = json!({
                "appName": "fuzz",
                "eventNames": event_names,
                "indicators": indicators,
                "rankings": rankings,
            });
            for (key, value) in extra {
                params[key] = value;
            }
            json!({
                "datasource": {"params": {"appName": "fuzz", "eventWindow": window}},
                "algorithms": [{"name": "ur", "params": params}],
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_state_decoder_refuses_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        prop_assert!(ur::state::decode_part("p", 0, &bytes).is_err());
        prop_assert!(ur::state::decode_manifest("s", &bytes).is_err());
    }

    /// A frame with a valid checksum around any body: decoded or refused,
    /// and a decoded part is consistent.
    #[test]
    fn the_state_decoder_survives_any_sealed_body(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        noise in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let sealed = sample_part();
        let mut body = sealed[ur::state::seal::PART_HEADER..sealed.len() - ur::state::seal::PART_TRAILER].to_vec();
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        body.truncate(cut.index(body.len() + 1));
        if body.is_empty() {
            body = noise;
        }
        if let Ok(part) = ur::state::decode_part("p", 0, &ur::state::seal::seal_part(0, &body)) {
            prop_assert!(part.validate().is_ok());
        }
    }

    #[test]
    fn the_manifest_decoder_survives_any_sealed_json(value in json_value()) {
        let text = match value {
            Value::Object(fields) => serde_json::to_vec(&ur::state::seal::seal_manifest(fields)).unwrap(),
            other => serde_json::to_vec(&other).unwrap(),
        };
        let _ = ur::state::decode_manifest("s", &text);
    }

    #[test]
    fn the_engine_loader_never_panics_on_text(text in ".{0,200}") {
        let _ = ur::config::Engine::from_json(&text);
    }

    #[test]
    fn the_engine_loader_never_panics_on_json(value in json_value()) {
        let _ = ur::config::Engine::from_json(&value.to_string());
    }

    #[test]
    fn the_engine_loader_never_panics_on_engine_shaped_json(value in engine_json()) {
        let _ = ur::config::Engine::from_json(&value.to_string());
    }
}
