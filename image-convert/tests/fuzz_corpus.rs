//! Replays the committed corpus of the `inspect` fuzz target.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

#[test]
fn inspect_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/inspect");
    let mut count = 0;
    for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        image_convert::fuzz_inspect(&std::fs::read(file.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count >= 10, "only {count} inputs in {}", dir.display());
}
