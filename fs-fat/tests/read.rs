//! Reading FAT volumes made by the real tools (mkfs.fat + mcopy) and the
//! shared real-world images; damaged volumes give errors, never panics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;
use disk_io::{FileDisk, ReadAt};
use fs_fat::{DirEntry, FatType, FatVolume};
use test_support::{have_all, sh, testdata};

fn build_image(dir: &Path, name: &str, mkfs: &str, big: bool) -> std::path::PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    fs::create_dir(&tree).unwrap();
    make_tree(&tree, big);
    sh(&format!("{mkfs} >/dev/null"), dir);
    sh(
        &format!("cd {name}-tree && TZ=UTC LC_ALL=C.UTF-8 mcopy -s -m -i ../{name} * ::"),
        dir,
    );
    dir.join(name)
}

#[test]
fn generated_images_read_back_exactly() {
    if !have_all(&["mkfs.fat", "mcopy", "fsck.fat"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, mkfs, big, want) in [
        ("fat12.img", "mkfs.fat -C -n FLOPPY", false, FatType::Fat12),
        (
            "fat16.img",
            "mkfs.fat -F 16 -C -n 'MY VOL'",
            true,
            FatType::Fat16,
        ),
        (
            "fat32.img",
            "mkfs.fat -F 32 -C -n VOL32 -i 0badcafe",
            true,
            FatType::Fat32,
        ),
    ] {
        let size = match want {
            FatType::Fat12 => 1440,
            FatType::Fat16 => 32 * 1024,
            FatType::Fat32 => 64 * 1024,
        };
        let image = build_image(dir.path(), name, &format!("{mkfs} {name} {size}"), big);
        let vol = FatVolume::open(FileDisk::open(&image).unwrap()).unwrap();
        assert_eq!(vol.fat_type(), want, "{name}");
        let tree = walk_tree(&dir.path().join(format!("{name}-tree")));
        compare(&walk_volume(&vol), &tree);

        // Labels, serial, case-insensitive lookup.
        let label = vol.label().unwrap();
        match want {
            FatType::Fat12 => assert_eq!(label.as_deref(), Some("FLOPPY")),
            FatType::Fat16 => assert_eq!(label.as_deref(), Some("MY VOL")),
            FatType::Fat32 => {
                assert_eq!(label.as_deref(), Some("VOL32"));
                assert_eq!(vol.serial(), Some(0x0bad_cafe));
                let backup = vol.backup_boot_sector().unwrap().unwrap();
                assert_eq!(&backup, vol.boot_sector());
                assert!(vol.fs_info().unwrap().is_some());
            }
        }
        let e = vol.open_path("/D1/d2/D3/d4/d5/D6/DEEP.BIN").unwrap();
        assert_eq!(e.size, 5000);
        let e = vol.open_path("CAFÉ RÉSUMÉ.TXT").unwrap();
        assert_eq!(e.name, "café résumé.txt");
        let e = vol.open_path("lower.txt").unwrap();
        assert_eq!(e.short_name, "lower.txt", "NT lowercase flags");
        assert!(!e.has_long_name);
        assert!(vol.open_path("no/such").is_err());

        // The used-cluster map is what fsck.fat counts.
        let used = fsck_used(dir.path(), name);
        let map = vol.used_clusters().unwrap();
        assert_eq!(map.count(), used, "{name}");
        if let Some(info) = vol.fs_info().unwrap() {
            // mtools keeps the FSInfo hint exact.
            assert_eq!(
                info.free_count,
                Some(vol.cluster_count() - used as u32),
                "{name}"
            );
        }
        // The map is exactly the union of the chains of every file and
        // directory (and the FAT32 root), which never overlap.
        let mut owned = std::collections::BTreeSet::new();
        let mut own = |first: u32| {
            for c in vol.chain(first) {
                let c = c.unwrap();
                assert!(map.contains(c), "cluster {c}");
                assert!(owned.insert(c), "cluster {c} in two chains");
            }
        };
        let root_first = vol.boot_sector().root_cluster;
        if root_first != 0 {
            own(root_first);
        }
        let mut firsts = vec![];
        vol.walk(&mut |_, e| {
            if e.first_cluster != 0 {
                firsts.push(e.first_cluster);
            }
            Ok(())
        })
        .unwrap();
        for first in firsts {
            own(first);
        }
        assert_eq!(owned.len() as u64, map.count(), "{name}");
        if want == FatType::Fat12 {
            // Fill the floppy to its last cluster: still equal, and full.
            let free = u64::from(vol.cluster_count()) - used;
            let bytes = free * u64::from(vol.cluster_size());
            sh(
                &format!("head -c {bytes} /dev/zero > fill && mcopy -i {name} fill ::"),
                dir.path(),
            );
            let full = FatVolume::open(FileDisk::open(&image).unwrap()).unwrap();
            let map = full.used_clusters().unwrap();
            assert_eq!(map.count(), fsck_used(dir.path(), name));
            assert_eq!(map.count(), u64::from(full.cluster_count()));
            assert_eq!(map.ranges().len(), 1);
            assert_eq!(map.ranges()[0], 2..full.cluster_count() + 2);
            let fill = full.open_path("fill").unwrap();
            assert_eq!(read_all(&full, &fill).len() as u64, bytes);
        }
    }
}

#[test]
fn sleuthkit_agrees_on_names_and_contents() {
    if !have_all(&["mkfs.fat", "mcopy", "fls", "icat"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, mkfs, tsk) in [
        ("tsk12.img", "mkfs.fat -C tsk12.img 1440", "fat12"),
        ("tsk16.img", "mkfs.fat -F 16 -C tsk16.img 16384", "fat16"),
        ("tsk32.img", "mkfs.fat -F 32 -C tsk32.img 65536", "fat32"),
    ] {
        let image = build_image(dir.path(), name, mkfs, false);
        let vol = FatVolume::open(FileDisk::open(&image).unwrap()).unwrap();
        let mine = walk_volume(&vol);
        let out = sh(&format!("fls -r -p -f {tsk} {name}"), dir.path());
        let mut theirs = BTreeMap::new();
        for line in out.lines() {
            // "r/r 1234:\tpath" or "d/d 1234:\tpath"
            let (head, path) = line.split_once(":\t").unwrap();
            if path.starts_with('$') || head.contains('*') || path.contains("(Volume Label Entry)")
            {
                continue;
            }
            let inode = head.rsplit(' ').next().unwrap().to_string();
            theirs.insert(format!("/{path}"), (head.starts_with('d'), inode));
        }
        assert_eq!(mine.len(), theirs.len(), "{name}");
        for (path, (is_dir, inode)) in &theirs {
            // fls truncates very long names: match those by prefix.
            let node = match mine.get(path) {
                Some((node, _)) => node,
                None => {
                    let found: Vec<_> = mine
                        .iter()
                        .filter(|(p, _)| p.starts_with(path.as_str()))
                        .collect();
                    assert_eq!(found.len(), 1, "{name}: {path}: fls name not found");
                    &found[0].1.0
                }
            };
            match node {
                Node::Dir => assert!(is_dir, "{path}"),
                // One icat per file is slow: the 60 tiny files of many/
                // are covered by their first.
                Node::File(_) if path.starts_with("/many/") && !path.ends_with("f00.txt") => {}
                Node::File(data) => {
                    let out = std::process::Command::new("icat")
                        .args(["-f", tsk, name, inode])
                        .current_dir(dir.path())
                        .output()
                        .unwrap();
                    assert!(&out.stdout == data, "{name}: {path}: icat disagrees");
                }
            }
        }
    }
}

#[test]
fn shared_rust_fatfs_fat12() {
    let Some(path) = testdata("fat-rust-fatfs/fat12.img") else {
        return;
    };
    let vol = FatVolume::open(FileDisk::open(path).unwrap()).unwrap();
    assert_eq!(vol.fat_type(), FatType::Fat12);
    assert_eq!(vol.label().unwrap().as_deref(), Some("Test!"));
    assert_eq!(vol.serial(), Some(0x1234_5678));
    let long = vol.open_path("long.txt").unwrap();
    assert_eq!(read_all(&vol, &long), b"Rust is cool!\n".repeat(1000));
    let short = vol.open_path("SHORT.TXT").unwrap();
    assert_eq!(short.size, 14);
    assert_eq!(read_all(&vol, &short), b"Rust is cool!\n");
    assert!(vol.open_path("very/long/path/test.txt").is_ok());
    let e = vol
        .open_path("very-long-dir-name/very-long-file-name.txt")
        .unwrap();
    assert!(e.has_long_name);
    assert_eq!(e.name, "very-long-file-name.txt");
    assert!(vol.open_path("VERY-L~1").is_ok(), "lookup by the 8.3 alias");
    let mut names = vec![];
    vol.walk(&mut |p, _| {
        names.push(p.to_string());
        Ok(())
    })
    .unwrap();
    assert!(names.len() >= 8, "{names:?}");
}

#[test]
fn shared_keramics_fat16_and_fat32() {
    for (file, want) in [
        ("keramics/fat16.qcow2", FatType::Fat16),
        ("keramics/fat32.qcow2", FatType::Fat32),
    ] {
        let Some(path) = testdata(file) else {
            return;
        };
        let image = vdisk_format::Image::open(path).unwrap();
        let vol = FatVolume::open(image).unwrap();
        assert_eq!(vol.fat_type(), want, "{file}");
        assert_eq!(vol.open_path("emptyfile").unwrap().size, 0);
        let f = vol.open_path("testdir1/testfile1").unwrap();
        assert_eq!(read_all(&vol, &f), b"Keramics\n");
        let f = vol.open_path("testdir1/TestFile2").unwrap();
        let text = read_all(&vol, &f);
        assert!(text.starts_with(b"\n") || text.windows(14).any(|w| w == b"Apache License"));
        let f = vol
            .open_path("testdir1/My long, very long file name, so very long")
            .unwrap();
        assert!(f.has_long_name);
    }
}

/// Writes `bytes` at `offset` of the file at `path`.
fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::options().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn damaged_fat16(dir: &Path) -> (std::path::PathBuf, u32, u64, u32, u64) {
    sh(
        "rm -rf d.img f.bin a && mkfs.fat -F 16 -s 1 -C d.img 8192 >/dev/null && head -c 20000 /dev/zero | tr '\\0' x > f.bin && mkdir -p a/b && echo hi > a/b/c && TZ=UTC mcopy -s -i d.img f.bin a ::",
        dir,
    );
    let image = dir.join("d.img");
    let vol = FatVolume::open(FileDisk::open(&image).unwrap()).unwrap();
    let f = vol.open_path("f.bin").unwrap();
    let b = vol.open_path("a/b").unwrap();
    let a = vol.open_path("a").unwrap();
    let fat = vol.boot_sector().fat_offset(0);
    (image, f.first_cluster, fat, a.first_cluster, b.offset)
}

#[test]
fn broken_long_names_fall_back_to_the_short_name() {
    if !have_all(&["mkfs.fat", "mcopy"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    sh(
        "mkfs.fat -F 16 -s 1 -C l.img 8192 >/dev/null && echo 1 > 'First long name.txt' && echo 2 > 'Second long name.txt' && mcopy -i l.img 'First long name.txt' 'Second long name.txt' ::",
        dir.path(),
    );
    let image = dir.path().join("l.img");
    let vol = FatVolume::open(FileDisk::open(&image).unwrap()).unwrap();
    let first = vol.open_path("First long name.txt").unwrap();
    let second = vol.open_path("Second long name.txt").unwrap();
    assert!(first.has_long_name && second.has_long_name);
    // The checksum of the first name's last piece (stored just before its
    // short entry) no longer matches; the second loses its first piece
    // (stored first: order 2 with the 0x40 flag) to a deletion mark.
    patch(
        &image,
        first.offset - 32 + 13,
        &[!first_checksum(&vol, &first)],
    );
    patch(&image, second.offset - 64, &[0xe5]);
    let vol = FatVolume::open(FileDisk::open(&image).unwrap()).unwrap();
    let names: Vec<String> = vol
        .read_dir(&vol.root())
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, [first.short_name.clone(), second.short_name.clone()]);
    assert!(
        vol.open_path("First long name.txt")
            .unwrap_or_else(|_| vol.root())
            .name
            .is_empty()
    );
    assert_eq!(vol.open_path(&first.short_name).unwrap().size, 2);
}

fn first_checksum<D: ReadAt>(vol: &FatVolume<D>, e: &DirEntry) -> u8 {
    let mut b = [0u8; 1];
    vol.disk().read_at(e.offset - 32 + 13, &mut b).unwrap();
    b[0]
}

#[test]
fn damage_is_an_error_naming_the_structure() {
    if !have_all(&["mkfs.fat", "mcopy"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // A cluster chain that loops back to its start.
    let (image, first, fat, _, _) = damaged_fat16(dir.path());
    let third = first + 2;
    patch(
        &image,
        fat + u64::from(third) * 2,
        &(first as u16).to_le_bytes(),
    );
    let vol = FatVolume::open(FileDisk::open(&image).unwrap()).unwrap();
    let f = vol.open_path("f.bin").unwrap();
    let err = vol.read_file(&f, 0, &mut [0u8; 10]).unwrap_err();
    assert!(err.to_string().contains("loops back"), "{err}");
    assert_eq!(err.offset(), Some(fat + u64::from(third) * 2), "{err}");

    // A chain pointing past the last cluster.
    patch(&image, fat + u64::from(third) * 2, &0xfff0u16.to_le_bytes());
    let vol = FatVolume::open(FileDisk::open(&image).unwrap()).unwrap();
    let err = vol.read_file(&f, 0, &mut [0u8; 10]).unwrap_err();
    assert!(err.to_string().contains("past the last cluster"), "{err}");
    assert_eq!(err.offset(), Some(fat + u64::from(third) * 2));

    // A directory that contains itself: a/b's entry points at a.
    let (image, _, _, a_cluster, b_entry) = damaged_fat16(dir.path());
    patch(&image, b_entry + 26, &(a_cluster as u16).to_le_bytes());
    let vol = FatVolume::open(FileDisk::open(&image).unwrap()).unwrap();
    let err = vol.walk(&mut |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("directory cycle"), "{err}");
    assert_eq!(err.offset(), Some(b_entry));

    // A boot sector with zero sectors per cluster.
    patch(&image, 13, &[0]);
    let err = FatVolume::open(FileDisk::open(&image).unwrap())
        .err()
        .unwrap();
    assert!(err.to_string().contains("BPB_SecPerClus"), "{err}");
    assert_eq!(err.offset(), Some(13));
    patch(&image, 13, &[4]);
    patch(&image, 11, &[0, 0]);
    let err = FatVolume::open(FileDisk::open(&image).unwrap())
        .err()
        .unwrap();
    assert!(err.to_string().contains("BPB_BytsPerSec"), "{err}");
    assert_eq!(err.offset(), Some(11));
    patch(&image, 11, &[0, 2]);
    patch(&image, 22, &[0, 0]);
    patch(&image, 36, &[0, 0, 0, 0]);
    let err = FatVolume::open(FileDisk::open(&image).unwrap())
        .err()
        .unwrap();
    assert!(err.to_string().contains("BPB_FATSz16"), "{err}");
}

#[test]
fn fuzz_seeds_hold_the_damage_they_claim() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/fat");
    let vol = FatVolume::open(fs::read(seeds.join("loop.img")).unwrap()).unwrap();
    let f = vol.open_path("hello.txt").unwrap();
    let err = vol.read_file(&f, 0, &mut [0u8; 8]).unwrap_err();
    assert!(err.to_string().contains("loops back"), "{err}");
    let vol = FatVolume::open(fs::read(seeds.join("selfdir.img")).unwrap()).unwrap();
    let err = vol.walk(&mut |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("directory cycle"), "{err}");
}

#[test]
fn fuzz_corpus_replays() {
    test_support::replay_corpus(&["seeds/fat"], 5, fs_fat::fuzzing::fat_read);
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/fat");
    if corpus.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        test_support::replay_corpus(&["corpus/fat"], 1, fs_fat::fuzzing::fat_read);
    }
}

#[test]
fn fragmented_file_of_many_clusters_reads_at_any_offset() {
    if !have_all(&["mkfs.fat", "mcopy", "mdel"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(40 << 20, 9);
    fs::write(dir.path().join("big"), &big).unwrap();
    // 200 one-cluster files, every other one deleted, and the FSInfo
    // next-free hint reset: the big file fills the 100 holes first (100
    // runs), then runs on contiguously; with
    // 512-byte clusters it spans 81,920 clusters, more than one chain
    // checkpoint per cluster.
    sh(
        "mkfs.fat -F 32 -C frag.img 65536 >/dev/null && mkdir s && for i in $(seq 100 299); do echo $i > s/f$i; done \
         && mcopy -i frag.img s/* :: && for i in $(seq 100 2 298); do mdel -i frag.img ::f$i; done \
         && printf '\\377\\377\\377\\377' | dd of=frag.img bs=1 seek=$((512 + 492)) conv=notrunc status=none \
         && mcopy -i frag.img big ::",
        dir.path(),
    );
    let vol = FatVolume::open(FileDisk::open(dir.path().join("frag.img")).unwrap()).unwrap();
    assert_eq!(vol.cluster_size(), 512);
    let e = vol.open_path("big").unwrap();
    let runs = {
        let clusters: Vec<u32> = vol.chain(e.first_cluster).map(|c| c.unwrap()).collect();
        assert_eq!(clusters.len(), (40 << 20) / 512);
        clusters.windows(2).filter(|w| w[1] != w[0] + 1).count() + 1
    };
    assert!(runs > 100, "{runs} runs");
    assert!(read_all(&vol, &e) == big);
    let mut x = 12345u64;
    for _ in 0..200 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        let at = (x >> 20) % big.len() as u64;
        let len = ((x >> 8) % 5000) as usize;
        let mut buf = vec![0u8; len];
        let n = vol.read_file(&e, at, &mut buf).unwrap();
        let at = at as usize;
        assert_eq!(n, len.min(big.len() - at));
        assert!(buf[..n] == big[at..at + n], "at {at} len {len}");
    }
}
