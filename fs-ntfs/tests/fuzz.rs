//! The fuzz seeds and corpora of the `ntfs` targets replay without panics,
//! and a packed seed reads like the volume it was packed from.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use fs_ntfs::fuzzing::{Packed, ntfs_read, pack};
use fs_ntfs::{NtfsVolume, records};
use test_support::testdata;

#[test]
fn fuzz_seeds_and_corpus_replay() {
    let n = test_support::replay_corpus(&["seeds/ntfs", "corpus/ntfs"], 5, ntfs_read);
    assert!(n >= 5);
}

#[test]
fn unit_targets_replay() {
    use fs_ntfs::fuzzing::{
        ntfs_boot, ntfs_index_buffer, ntfs_lznt1, ntfs_mft_record, ntfs_run_list,
    };
    type Entry = fn(&[u8]);
    let targets: [(&str, Entry); 5] = [
        ("ntfs_boot", ntfs_boot),
        ("ntfs_mft_record", ntfs_mft_record),
        ("ntfs_run_list", ntfs_run_list),
        ("ntfs_index_buffer", ntfs_index_buffer),
        ("ntfs_lznt1", ntfs_lznt1),
    ];
    for (name, entry) in targets {
        let seeds = format!("seeds/{name}");
        let corpus = format!("corpus/{name}");
        test_support::replay_corpus(&[&seeds, &corpus], 2, entry);
    }
}

#[test]
fn packed_volume_reads_like_the_original() {
    let Some(path) = testdata("ntfs-colinfinck/testfs1") else {
        return;
    };
    let image = std::fs::read(path).unwrap();
    let packed = pack(&image[..], 16 << 10, 1 << 20).unwrap();
    assert!(packed.len() <= 1 << 20);
    let disk = Packed::parse(&packed).unwrap();
    let vol = NtfsVolume::open(&disk).unwrap();
    assert_eq!(vol.label(), Some("mylabel"));
    let root = vol.file(records::ROOT).unwrap();
    let (rec, _) = vol.find(&root, "many_subdirs").unwrap().unwrap();
    let dir = vol.file(rec).unwrap();
    let names = vol.read_dir(&dir).unwrap();
    assert!(names.len() >= 512);
}
