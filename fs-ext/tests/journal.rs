//! An unreplayed journal written by debugfs (`journal_open`,
//! `journal_write`, `journal_close`): the reader sees the journaled
//! contents, honours revokes, matches what e2fsck's real replay produces,
//! and never writes the source.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use disk_io::FileDisk;
use fs_ext::ExtFs;
use fs_ext::superblock::Incompat;
use test_support::{have_all, sh};

fn block_of(img: &Path, path: &str) -> Vec<u64> {
    sh(
        &format!("debugfs -R 'blocks {path}' '{}' 2>/dev/null", img.display()),
        Path::new("/"),
    )
    .split_whitespace()
    .map(|b| b.parse().unwrap())
    .collect()
}

fn read(fs: &ExtFs<FileDisk>, path: &str) -> Vec<u8> {
    let inode = fs.resolve(path).unwrap();
    fs.read_all(&inode, 1 << 20).unwrap()
}

#[test]
fn debugfs_journal_transactions() {
    if !have_all(&["mkfs.ext4", "mkfs.ext3", "debugfs", "e2fsck", "sha256sum"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("tree")).unwrap();
    std::fs::write(d.join("tree/victim"), vec![b'A'; 8192]).unwrap();
    std::fs::write(d.join("tree/victim2"), vec![b'C'; 8192]).unwrap();
    // The first payload starts with the journal magic: written escaped.
    let mut pay = vec![b'B'; 4096];
    pay[..4].copy_from_slice(&0xc03b_3998u32.to_be_bytes());
    std::fs::write(d.join("pay"), &pay).unwrap();
    std::fs::write(d.join("pay2"), vec![b'D'; 4096]).unwrap();
    for (name, mkfs, jo) in [
        ("v3", "mkfs.ext4 -b 4096", "jo -c -v 3"),
        ("v2", "mkfs.ext4 -b 4096", "jo -c -v 2"),
        ("plain", "mkfs.ext4 -b 4096", "jo"),
        ("ext3", "mkfs.ext3 -b 4096", "jo"),
    ] {
        let img = d.join(format!("{name}.img"));
        sh(
            &format!("truncate -s 16M {name}.img && {mkfs} -q -F -d tree {name}.img",),
            d,
        );
        let v1 = block_of(&img, "/victim");
        let v2 = block_of(&img, "/victim2");
        // Transaction 1 rewrites victim's second block; transaction 2
        // rewrites victim2's first block, transaction 3 revokes it.
        std::fs::write(
            d.join("cmds"),
            format!(
                "{jo}\njw -b {} pay\njw -b {} pay2\njw -r {} pay\njc\n",
                v1[1], v2[0], v2[0]
            ),
        )
        .unwrap();
        sh(&format!("debugfs -w -f cmds {name}.img >/dev/null 2>&1"), d);
        let before = sh(&format!("sha256sum {name}.img"), d);
        let fs = ExtFs::open(FileDisk::open(&img).unwrap()).unwrap();
        assert!(
            fs.superblock().incompat.contains(Incompat::RECOVER),
            "{name}"
        );
        assert_eq!(fs.replayed_transactions(), 3, "{name}");
        assert_eq!(fs.journal_checksum_failures(), (0, 0), "{name}");
        let victim = read(&fs, "/victim");
        assert_eq!(&victim[..4096], &[b'A'; 4096][..], "{name}");
        assert_eq!(&victim[4096..], &pay[..], "{name}: escaped block restored");
        assert_eq!(read(&fs, "/victim2"), vec![b'C'; 8192], "{name}: revoked");
        drop(fs);
        assert_eq!(
            before,
            sh(&format!("sha256sum {name}.img"), d),
            "{name}: source written"
        );
        // e2fsck's real replay gives the same files.
        sh(
            &format!("cp {name}.img r.img && e2fsck -fy r.img >/dev/null 2>&1; true"),
            d,
        );
        let replayed = ExtFs::open(FileDisk::open(d.join("r.img")).unwrap()).unwrap();
        assert_eq!(replayed.replayed_blocks(), 0);
        assert_eq!(read(&replayed, "/victim"), victim, "{name}");
        assert_eq!(read(&replayed, "/victim2"), vec![b'C'; 8192], "{name}");
    }
}
