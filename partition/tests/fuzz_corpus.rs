//! Replays the seeds and corpora of the `partition` and
//! `partition_roundtrip` fuzz targets.

use test_support::replay_corpus;

#[test]
fn partition_corpus_replays() {
    replay_corpus(
        &["seeds/partition", "corpus/partition"],
        10,
        partition::fuzz_read,
    );
}

#[test]
fn partition_roundtrip_corpus_replays() {
    replay_corpus(
        &["corpus/partition_roundtrip"],
        10,
        partition::arbitrary_layout::round_trip,
    );
}
