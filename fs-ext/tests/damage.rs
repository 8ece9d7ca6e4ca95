//! Damaged volumes: each damage is an error naming the inode and the byte
//! offset, never a panic or an endless loop.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use disk_io::{Error, ErrorKind};
use fs_ext::{ChecksumPolicy, ExtFs, Options};
use test_support::{have_all, sh};

/// A 1 KiB-block ext4 (no metadata_csum, so patched bytes are not caught
/// by a checksum first) with an htree directory `/a`.
fn base(dir: &Path) -> Vec<u8> {
    sh(
        "mkdir -p tree/a/b && (cd tree/a && for i in $(seq 1 300); do : > f$i; done) \
         && echo x > tree/file && truncate -s 8M d.img \
         && mkfs.ext4 -q -F -b 1024 -O ^metadata_csum -d tree d.img \
         && e2fsck -fyD d.img >/dev/null 2>&1; true",
        dir,
    );
    std::fs::read(dir.join("d.img")).unwrap()
}

fn walk_all(data: &[u8]) -> Result<usize, Error> {
    let fs = ExtFs::open(data)?;
    let mut n = 0;
    fs.walk(64, &mut |_, _, inode| {
        n += 1;
        if inode.file_type() == fs_ext::FileType::Regular {
            fs.read_all(inode, 1 << 20)?;
        }
        Ok(())
    })?;
    Ok(n)
}

fn blocks_of(img: &Path, path: &str) -> Vec<usize> {
    sh(
        &format!("debugfs -R 'blocks {path}' '{}' 2>/dev/null", img.display()),
        Path::new("/"),
    )
    .split_whitespace()
    .map(|b| b.parse().unwrap())
    .collect()
}

fn ino_of(img: &Path, path: &str) -> u32 {
    let out = sh(
        &format!("debugfs -R 'stat {path}' '{}' 2>/dev/null", img.display()),
        Path::new("/"),
    );
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn assert_names(err: &Error, ino: u32, what: &str) {
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{msg}");
    assert!(msg.contains(&format!("inode {ino}")), "{msg}");
    assert!(msg.contains(what), "{msg}");
    assert!(err.offset().is_some(), "{msg}");
}

#[test]
fn damaged_volumes() {
    if !have_all(&["mkfs.ext4", "debugfs", "e2fsck"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clean = base(d);
    let img = d.join("d.img");
    assert!(walk_all(&clean).unwrap() > 300);

    // A corrupted extent header magic (debugfs keeps the rest consistent).
    let file_ino = ino_of(&img, "/file");
    sh(
        "cp d.img e.img && debugfs -w -R 'sif /file block[0] 0x1234' e.img 2>/dev/null",
        d,
    );
    let bad = std::fs::read(d.join("e.img")).unwrap();
    let err = walk_all(&bad).unwrap_err();
    assert_names(&err, file_ino, "extent header magic");

    // An htree whose root points at the same leaf twice: a loop.
    let a_ino = ino_of(&img, "/a");
    let root = blocks_of(&img, "/a")[0] * 1024;
    let mut bad = clean.clone();
    let first = bad[root + 0x24..root + 0x28].to_vec();
    bad[root + 0x2c..root + 0x30].copy_from_slice(&first);
    let err = walk_all(&bad).unwrap_err();
    assert_names(&err, a_ino, "twice");

    // A directory entry naming an inode past the inode table.
    let root_dir = blocks_of(&img, "/")[0] * 1024;
    let mut bad = clean.clone();
    let block = &bad[root_dir..root_dir + 1024];
    let name_at = block.windows(4).position(|w| w == b"file").unwrap();
    let entry = root_dir + name_at - 8;
    bad[entry..entry + 4].copy_from_slice(&9_999_999u32.to_le_bytes());
    let err = walk_all(&bad).unwrap_err();
    assert_names(&err, 9_999_999, "out of range");

    // A directory linked inside itself: a cycle.
    sh(
        "cp d.img c.img && debugfs -w -R 'ln /a /a/b/loop' c.img 2>/dev/null",
        d,
    );
    let bad = std::fs::read(d.join("c.img")).unwrap();
    let err = walk_all(&bad).unwrap_err();
    assert_names(&err, a_ino, "cycle");

    // A directory record length that runs past its block.
    let mut bad = clean.clone();
    bad[entry + 4..entry + 6].copy_from_slice(&2000u16.to_le_bytes());
    let err = walk_all(&bad).unwrap_err();
    assert_names(&err, 2, "record length");

    // Truncated images and every single-byte damage to the superblock and
    // descriptors: errors or successes, no panic.
    for len in [0, 1024, 2048, 4096, 65536, clean.len() / 2] {
        let _ = walk_all(&clean[..len]);
    }
    for at in (1024..4096).step_by(7) {
        let mut bad = clean.clone();
        bad[at] ^= 0xff;
        let _ = walk_all(&bad);
    }
}

#[test]
fn checksum_mismatch_is_an_error_unless_read_anyway() {
    if !have_all(&["mkfs.ext4", "debugfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "mkdir tree && echo hello > tree/file && truncate -s 4M d.img \
         && mkfs.ext4 -q -F -b 1024 -d tree d.img",
        d,
    );
    let img = d.join("d.img");
    let ino = ino_of(&img, "/file");
    let mut bad = std::fs::read(&img).unwrap();
    // Flip a byte of the inode's mtime, leaving its checksum stale.
    let fs = ExtFs::open(&bad[..]).unwrap();
    let at = fs.inode_offset(ino).unwrap() as usize + 0x10;
    drop(fs);
    bad[at] ^= 1;
    let fs = ExtFs::open(&bad[..]).unwrap();
    let err = fs.resolve("/file").unwrap_err();
    assert_names(&err, ino, "checksum");
    let fs = ExtFs::open_with(
        &bad[..],
        Options {
            checksums: ChecksumPolicy::ReadAnyway,
            ..Options::default()
        },
    )
    .unwrap();
    let inode = fs.resolve("/file").unwrap();
    assert_eq!(fs.read_all(&inode, 100).unwrap(), b"hello\n");
    let m = fs.mismatches();
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].what, format!("inode {ino}"));
}

#[test]
fn gdt_csum_mismatch_names_the_descriptor() {
    if !have_all(&["mkfs.ext4"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    sh(
        "truncate -s 4M d.img && mkfs.ext4 -q -F -b 1024 -O ^metadata_csum,uninit_bg d.img",
        dir.path(),
    );
    let mut data = std::fs::read(dir.path().join("d.img")).unwrap();
    assert!(ExtFs::open(&data[..]).is_ok());
    // Descriptor 0 is at block 2 (1 KiB blocks); flip its free-blocks count.
    data[2048 + 0xc] ^= 1;
    let err = ExtFs::open(&data[..]).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("group descriptor 0"), "{err}");
    assert_eq!(err.offset(), Some(2048));
}
