//! Replays the seeds and corpora of the `partition` and
//! `partition_roundtrip` fuzz targets.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

fn replay(subs: &[&str], entry: fn(&[u8])) -> usize {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for sub in subs {
        let dir = fuzz.join(sub);
        for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            entry(&std::fs::read(file.unwrap().path()).unwrap());
            count += 1;
        }
    }
    count
}

#[test]
fn partition_corpus_replays() {
    let n = replay(
        &["seeds/partition", "corpus/partition"],
        partition::fuzz_read,
    );
    assert!(n >= 10, "only {n} inputs");
}

#[test]
fn partition_roundtrip_corpus_replays() {
    let n = replay(
        &["corpus/partition_roundtrip"],
        partition::arbitrary_layout::round_trip,
    );
    assert!(n >= 10, "only {n} inputs");
}
