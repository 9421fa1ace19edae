//! The model does not depend on worker count, file layout or line order.

use crate::util::*;
use serde_json::json;

fn retail_engine(dir: &std::path::Path) -> std::path::PathBuf {
    // Small caps so downsampling decides a lot.
    engine_file(
        dir,
        json!({
            "indicators": [
                {"name": "purchase", "maxItemsPerUser": 40, "maxCorrelatorsPerItem": 20},
                {"name": "cancel", "maxItemsPerUser": 10},
                {"name": "country", "maxItemsPerUser": 30}
            ],
            "rankings": [{"name": "popRank", "type": "popular", "eventNames": ["purchase"]},
                         {"name": "trendRank", "type": "trending", "eventNames": ["purchase"], "duration": "60 days"}],
            "seed": 11
        }),
    )
}

#[test]
fn online_retail_is_byte_identical_for_1_2_and_3_workers() {
    let data = online_retail();
    assert!(data.is_dir(), "{} is needed by this test", data.display());
    let dir = tempfile::tempdir().unwrap();
    let engine = retail_engine(dir.path());
    let mut outputs = Vec::new();
    for w in ["1", "2", "3"] {
        let model = dir.path().join(format!("model-{w}"));
        train_ok(&engine, &data, &model, &["--workers", w, "--now", "2011-12-10T00:00:00Z", "-q"]);
        outputs.push(std::fs::read(model.join("items.jsonl")).unwrap());
    }
    assert!(outputs[0].len() > 100_000);
    assert!(outputs[0] == outputs[1], "1 vs 2 workers differ");
    assert!(outputs[0] == outputs[2], "1 vs 3 workers differ");
    let m = manifest(&dir.path().join("model-2"));
    let purchase = &m["model"]["interactions"]["purchase"];
    assert!(purchase["after_downsampling"].as_u64() < purchase["distinct"].as_u64(), "caps must bite: {purchase}");
}

#[test]
fn file_layout_and_order_do_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let engine = retail_engine(dir.path());
    // Take two months of retail data, re-partitioned three ways.
    let mut lines = Vec::new();
    for month in ["2011-01", "2011-02"] {
        let path = online_retail().join(format!("month={month}/part-00000.jsonl.gz"));
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(file), &mut text).unwrap();
        lines.extend(text.lines().map(str::to_string));
    }
    let one = dir.path().join("one/events.jsonl");
    write_lines(&one, &lines);
    let reversed_dir = dir.path().join("reversed");
    let mut reversed = lines.clone();
    reversed.reverse();
    for (p, chunk) in reversed.chunks(reversed.len() / 7 + 1).enumerate() {
        write_lines(&reversed_dir.join(format!("day={p}/part-{p}.jsonl")), chunk);
    }
    let gz_dir = dir.path().join("gz");
    std::fs::create_dir_all(&gz_dir).unwrap();
    let mut rng = Rng(3);
    let mut shuffled = lines.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for (p, chunk) in shuffled.chunks(shuffled.len() / 3 + 1).enumerate() {
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(gz_dir.join(format!("part-{p}.jsonl.gz"))).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut gz, (chunk.join("\n") + "\n").as_bytes()).unwrap();
        gz.finish().unwrap();
    }
    let mut outputs = Vec::new();
    for (input, workers) in [(&one, "1"), (&reversed_dir, "2"), (&gz_dir, "3")] {
        let model = dir.path().join(format!("model-{workers}"));
        train_ok(&engine, input, &model, &["--workers", workers, "--now", "2011-03-01T00:00:00Z", "-q"]);
        outputs.push(std::fs::read_to_string(model.join("items.jsonl")).unwrap());
    }
    assert!(outputs[0].lines().count() > 1000);
    assert_eq!(outputs[0], outputs[1], "one file vs reversed partitions");
    assert_eq!(outputs[0], outputs[2], "one file vs shuffled gzip parts");
}

#[test]
fn seed_changes_the_sample() {
    let data = online_retail().join("month=2011-11");
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for seed in [1, 2] {
        let engine = engine_file(
            &dir.path().join(format!("s{seed}")),
            json!({"indicators": [{"name": "purchase", "maxItemsPerUser": 5}], "seed": seed}),
        );
        let model = dir.path().join(format!("model-{seed}"));
        train_ok(&engine, &data, &model, &["-q", "--now", "2011-12-01T00:00:00Z"]);
        outputs.push(std::fs::read_to_string(model.join("items.jsonl")).unwrap());
    }
    assert_ne!(outputs[0], outputs[1]);
}
