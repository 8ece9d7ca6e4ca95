//! Replays the committed fuzz seeds and corpus of the `detect` target
//! through the entry point the fuzz target uses, so a fixed crash stays
//! fixed; and checks the seeds, made by the real tools, are detected as
//! what they are.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use vdisk_format::{Detected, RawContent, detect};

fn fuzz_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(sub)
}

#[test]
fn detect_corpus_replays() {
    let entry = vdisk_format::fuzzing::detect_and_read;
    test_support::replay_corpus(&["seeds/detect"], 10, entry);
    test_support::replay_corpus(&["corpus/detect"], 10, entry);
}

#[test]
fn seeds_are_detected_as_their_format() {
    let dir = fuzz_dir("seeds/detect");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    for (name, want) in [
        ("a.qcow2", Detected::Qcow { version: 3 }),
        ("b.qcow2", Detected::Qcow { version: 2 }),
        ("c.vmdk", Detected::VmdkSparse),
        ("d.vmdk", Detected::VmdkDescriptor),
        ("e.vhd", Detected::Vhd { fixed: false }),
        ("f-fixed.vhd", Detected::Vhd { fixed: true }),
        ("g.vhdx", Detected::Vhdx),
        ("h.vdi", Detected::Vdi),
        ("mbr.raw", Detected::Raw(RawContent::Mbr)),
        (
            "gpt.raw",
            Detected::Raw(RawContent::Gpt { sector_size: 512 }),
        ),
        ("fat12.raw", Detected::Raw(RawContent::Other)),
        ("fat32.raw", Detected::Raw(RawContent::Other)),
        ("ext4.raw", Detected::Raw(RawContent::Other)),
        ("ntfs.raw", Detected::Raw(RawContent::Other)),
    ] {
        assert_eq!(detect(&read(name)[..]).unwrap(), want, "{name}");
    }
    assert!(detect(&read("empty")[..]).is_err());
}

#[test]
fn qcow2_corpus_replays() {
    test_support::replay_corpus(
        &["seeds/qcow2", "corpus/qcow2"],
        10,
        vdisk_format::fuzzing::qcow2_read,
    );
}

#[test]
fn vhd_corpus_replays() {
    test_support::replay_corpus(
        &["seeds/vhd", "corpus/vhd"],
        6,
        vdisk_format::fuzzing::vhd_read,
    );
}
