//! Real-world images from other projects (read in place from the shared
//! test data), cross-checked with The Sleuth Kit: `fls -r` for listings,
//! `icat` for contents.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use disk_io::{ErrorKind, FileDisk, ReadAt, Window};
use fs_ext::{ExtFs, FileType, Options};
use test_support::{have_all, sh, testdata};

/// Decompresses a shared `.zst` image into `dir`.
fn unzstd(rel: &str, dir: &Path) -> Option<PathBuf> {
    let src = testdata(rel)?;
    let out = dir.join(Path::new(rel).file_stem().unwrap());
    sh(
        &format!("zstd -q -d -f '{}' -o '{}'", src.display(), out.display()),
        dir,
    );
    Some(out)
}

/// `path → inode` of every allocated entry `fls -r` lists.
fn fls(img: &Path, sector_offset: u64) -> BTreeMap<String, u32> {
    let out = sh(
        &format!("fls -r -p -o {sector_offset} '{}'", img.display()),
        Path::new("/"),
    );
    out.lines()
        .filter(|l| !l.contains(" * ") && !l.contains("$OrphanFiles"))
        .filter_map(|l| {
            let (head, path) = l.split_once(":\t")?;
            let ino = head.rsplit(' ').next()?.parse().ok()?;
            Some((format!("/{path}"), ino))
        })
        .collect()
}

fn listing<D: ReadAt>(fs: &ExtFs<D>) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    fs.walk(256, &mut |path, _, inode| {
        out.insert(String::from_utf8_lossy(path).into_owned(), inode.ino);
        Ok(())
    })
    .unwrap();
    out
}

fn debugfs_dump(img: &Path, ino: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dump");
    sh(
        &format!(
            "debugfs -R 'dump <{ino}> {}' '{}' 2>/dev/null",
            out.display(),
            img.display()
        ),
        dir.path(),
    );
    std::fs::read(out).unwrap()
}

/// icat's output, or `None` where icat itself fails (it refuses extents
/// past the end of a truncated image).
fn icat(img: &Path, sector_offset: u64, ino: u32) -> Option<Vec<u8>> {
    let out = std::process::Command::new("icat")
        .args(["-o", &sector_offset.to_string()])
        .arg(img)
        .arg(ino.to_string())
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

/// Listing equal to fls; every regular file's content equal to icat's
/// (the first `max_files` of them).
fn cross_check<D: ReadAt>(fs: &ExtFs<D>, img: &Path, sector_offset: u64, max_files: usize) {
    let ours = listing(fs);
    let theirs = fls(img, sector_offset);
    assert_eq!(ours, theirs, "{}", img.display());
    let mut n = 0;
    for (path, ino) in &ours {
        let inode = fs.inode(*ino).unwrap();
        if inode.file_type() != FileType::Regular || n >= max_files {
            continue;
        }
        n += 1;
        let data = fs.read_all(&inode, 1 << 28).unwrap();
        // icat crawls through large block-mapped files: debugfs for those.
        let want = if inode.size > 1 << 20 && sector_offset == 0 {
            Some(debugfs_dump(img, *ino))
        } else {
            icat(img, sector_offset, *ino)
        };
        if let Some(want) = want {
            assert!(data == want, "{path}");
        }
    }
}

#[test]
fn ext4_view_disk1() {
    if !have_all(&["zstd", "fls", "icat"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(img) = unzstd("ext4-view/test_disk1.bin.zst", dir.path()) else {
        return;
    };
    let fs = ExtFs::open(FileDisk::open(&img).unwrap()).unwrap();
    let small = fs.resolve("/small_file").unwrap();
    assert_eq!(fs.read_all(&small, 100).unwrap(), b"hello, world!");
    let owner = fs.resolve("/owner_file").unwrap();
    assert_eq!((owner.uid, owner.gid), (123, 456));
    for (link, target) in [
        ("/sym_simple", "small_file".to_string()),
        ("/sym_59", "a".repeat(59)),
        ("/sym_60", "a".repeat(60)),
    ] {
        let inode = fs.resolve(link).unwrap();
        assert_eq!(fs.read_link(&inode).unwrap(), target.as_bytes(), "{link}");
    }
    let big_dir = fs.resolve("/big_dir").unwrap();
    let entries = fs.read_dir(&big_dir).unwrap();
    assert_eq!(entries.len(), 10_000);
    for e in entries.iter().step_by(97) {
        let inode = fs.inode(e.inode).unwrap();
        assert_eq!(fs.read_all(&inode, 100).unwrap(), e.name);
    }
    // Encrypted contents are refused as unsupported, by inode.
    let enc = fs.resolve("/encrypted_dir").unwrap();
    let file = fs.read_dir(&enc).unwrap().pop().unwrap();
    let inode = fs.inode(file.inode).unwrap();
    let err = fs.read_all(&inode, 100).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(
        err.to_string().contains(&format!("inode {}", inode.ino)),
        "{err}"
    );
    // fls shows encrypted names differently: compare outside that directory.
    let ours: BTreeMap<_, _> = listing(&fs)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("/encrypted_dir/"))
        .collect();
    let theirs: BTreeMap<_, _> = fls(&img, 0)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("/encrypted_dir/"))
        .collect();
    assert_eq!(ours, theirs);
    for path in ["/holes", "/small_file", "/medium_dir/999"] {
        let inode = fs.resolve(path).unwrap();
        let want = icat(&img, 0, inode.ino).unwrap();
        assert_eq!(fs.read_all(&inode, 1 << 20).unwrap(), want, "{path}");
    }
    assert_eq!(fs.used_blocks().unwrap(), dumpe2fs_used(&fs, &img));
    fs.verify_bitmaps().unwrap();
    assert!(fs.mismatches().is_empty());
}

/// The complement of the free ranges dumpe2fs lists.
fn dumpe2fs_used<D: ReadAt>(fs: &ExtFs<D>, img: &Path) -> Vec<(u64, u64)> {
    let sb = fs.superblock();
    let out = sh(
        &format!("dumpe2fs '{}' 2>/dev/null", img.display()),
        Path::new("/"),
    );
    let mut free = Vec::new();
    for line in out.lines() {
        let Some(list) = line.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for part in list.split(", ").filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            free.push((a, b - a + 1));
        }
    }
    free.sort_unstable();
    let mut used = Vec::new();
    let mut at = u64::from(sb.first_data_block);
    for (s, len) in free {
        if s > at {
            used.push((at, s - at));
        }
        at = at.max(s + len);
    }
    if at < sb.blocks_count {
        used.push((at, sb.blocks_count - at));
    }
    used
}

#[test]
fn ext4_view_ext2_ext3() {
    if !have_all(&["zstd", "fls", "icat", "debugfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for rel in [
        "ext4-view/test_disk_ext2.bin.zst",
        "ext4-view/test_disk_ext3.bin.zst",
    ] {
        let Some(img) = unzstd(rel, dir.path()) else {
            return;
        };
        let fs = ExtFs::open(FileDisk::open(&img).unwrap()).unwrap();
        // big_file of test_disk_ext2 reaches the triple-indirect block.
        cross_check(&fs, &img, 0, 40);
        assert_eq!(fs.used_blocks().unwrap(), dumpe2fs_used(&fs, &img), "{rel}");
        std::fs::remove_file(&img).unwrap();
    }
}

#[test]
fn ext4_view_journal_replayed_in_memory() {
    if !have_all(&["zstd", "sha256sum"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(img) = unzstd("ext4-view/test_disk_4k_block_journal.bin.zst", dir.path()) else {
        return;
    };
    let before = sh(&format!("sha256sum '{}'", img.display()), dir.path());
    let fs = ExtFs::open(FileDisk::open(&img).unwrap()).unwrap();
    assert!(fs.replayed_blocks() > 0);
    assert!(fs.replayed_transactions() > 0);
    assert_eq!(fs.journal_checksum_failures(), (0, 0));
    assert!(fs.resolve("/dir500").is_ok());
    // Without the replay the directory does not exist yet.
    let raw = ExtFs::open_with(
        FileDisk::open(&img).unwrap(),
        Options {
            replay_journal: false,
            ..Options::default()
        },
    );
    if let Ok(raw) = raw {
        assert!(raw.resolve("/dir500").is_err());
    }
    // Everything reads, and the source was not written.
    let n = listing(&fs).len();
    assert!(n > 500, "{n}");
    drop(fs);
    let after = sh(&format!("sha256sum '{}'", img.display()), dir.path());
    assert_eq!(before, after);
}

#[test]
fn fauxfaux_all_types_in_partition_1() {
    if !have_all(&["fls", "icat"]) {
        return;
    }
    let Some(img) = testdata("ext4-fauxfaux/all-types-tiny.img") else {
        return;
    };
    // MBR partition 1 starts at LBA 1 (README), 2047 sectors.
    let disk = FileDisk::open(&img).unwrap();
    let part = Window::new(disk, 512, 2047 * 512).unwrap();
    let fs = ExtFs::open(part).unwrap();
    cross_check(&fs, &img, 1, 100);
    let sparse = fs.resolve("/sparse-file").unwrap();
    assert!(sparse.size >= 10 << 20);
}
