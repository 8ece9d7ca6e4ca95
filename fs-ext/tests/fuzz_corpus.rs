//! Replays the seeds and the committed corpus of the `ext` fuzz target.

#[test]
fn ext_corpus_replays() {
    test_support::replay_corpus(&["seeds/ext", "corpus/ext"], 8, fs_ext::fuzzing::ext_read);
}
