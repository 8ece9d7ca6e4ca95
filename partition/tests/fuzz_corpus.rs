//! Replays the seeds and the corpus of the `partition` fuzz target.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

#[test]
fn partition_corpus_replays() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for sub in ["seeds/partition", "corpus/partition"] {
        let dir = fuzz.join(sub);
        for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            partition::fuzz_read(&std::fs::read(file.unwrap().path()).unwrap());
            count += 1;
        }
    }
    assert!(count >= 10, "only {count} inputs");
}
