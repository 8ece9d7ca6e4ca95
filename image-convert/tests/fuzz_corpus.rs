//! Replays the committed corpus of the `inspect` fuzz target.

#[test]
fn inspect_corpus_replays() {
    test_support::replay_corpus(&["corpus/inspect"], 10, image_convert::fuzz_inspect);
}
