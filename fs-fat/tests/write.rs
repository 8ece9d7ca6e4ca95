//! Formatting and writing: volumes fs-fat formats and fills pass
//! `fsck.fat -n` without a message, read back identical through mtools,
//! The Sleuth Kit and fs-fat's own reader, and count the clusters
//! `fsck.fat` counts; the format chooses what `mkfs.fat` chooses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::UNIX_EPOCH;

use common::{compare, fsck_used, make_tree, pattern, walk_tree, walk_volume};
use disk_io::{FileDisk, MemDisk, ReadAt, WriteAt};
use fs_fat::{
    Attributes, BootSector, FatType, FatVolume, FatWriter, FileTimes, FormatOptions, Timestamp,
};
use test_support::{have_all, sh};

fn ts(seconds: i64) -> Timestamp {
    Timestamp {
        seconds,
        nanoseconds: 0,
    }
}

/// Copies the host tree at `src` into directory `parent`.
fn copy_tree<D: disk_io::WriteAt>(w: &mut FatWriter<D>, src: &Path, parent: fs_fat::Node) {
    let mut entries: Vec<_> = fs::read_dir(src).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().into_string().unwrap();
        let meta = e.metadata().unwrap();
        let mtime = meta
            .modified()
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let times = FileTimes {
            created: Some(ts(mtime)),
            modified: Some(ts(mtime)),
            accessed: Some(ts(mtime)),
        };
        if meta.is_dir() {
            let d = w
                .create_dir(parent, &name, &times, Attributes::empty())
                .unwrap();
            copy_tree(w, &e.path(), d);
            w.set_times(d, &times).unwrap();
        } else {
            let data = fs::read(e.path()).unwrap();
            let f = w
                .create_file(
                    parent,
                    &name,
                    &times,
                    Attributes::ARCHIVE,
                    data.len() as u64,
                )
                .unwrap();
            for (i, chunk) in data.chunks(1 << 20).enumerate() {
                w.write(f, (i << 20) as u64, chunk).unwrap();
            }
        }
    }
}

/// `fsck.fat -n` succeeds and says nothing but its banner and summary.
fn fsck_clean(dir: &Path, image: &str) {
    let out = Command::new("fsck.fat")
        .args(["-n", image])
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{image}: fsck.fat: {stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("fsck.fat") && stderr.is_empty(),
        "{image}: fsck.fat says:\n{stdout}{stderr}"
    );
}

/// Every path `fls -r -p` lists (volume label and virtual files left out).
fn fls_names(dir: &Path, image: &str, tsk: &str) -> BTreeSet<String> {
    let out = sh(&format!("fls -r -p -f {tsk} {image}"), dir);
    out.lines()
        .filter_map(|line| {
            let (head, path) = line.split_once(":\t")?;
            (!path.starts_with('$')
                && !head.contains('*')
                && !path.contains("(Volume Label Entry)"))
            .then(|| format!("/{path}"))
        })
        .collect()
}

fn fill(dir: &Path, name: &str, size: u64, opts: &FormatOptions, big: bool) {
    let tree = dir.join(format!("{name}-tree"));
    fs::create_dir(&tree).unwrap();
    make_tree(&tree, big);
    let disk = FileDisk::create(dir.join(name), size).unwrap();
    let mut w = FatWriter::format(disk, opts).unwrap();
    let root = w.root();
    copy_tree(&mut w, &tree, root);
    w.into_inner().unwrap();
}

#[test]
fn formatted_and_filled_volumes_pass_every_checker() {
    if !have_all(&["fsck.fat", "mcopy", "mdir", "fls"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, size, fat_type, big, tsk) in [
        ("w12.img", 1_474_560u64, None, false, "fat12"),
        ("w16.img", 64 << 20, None, true, "fat16"),
        ("w32.img", 64 << 20, Some(FatType::Fat32), true, "fat32"),
    ] {
        let opts = FormatOptions {
            fat_type,
            label: Some("Written".into()),
            volume_id: Some(0x1234_abcd),
            time: ts(1_700_000_000),
            ..FormatOptions::default()
        };
        fill(d, name, size, &opts, big);
        let want = fat_type.unwrap_or(if big { FatType::Fat16 } else { FatType::Fat12 });

        // fsck.fat has nothing to say.
        fsck_clean(d, name);

        // fs-fat's reader sees the tree.
        let vol = FatVolume::open(FileDisk::open(d.join(name)).unwrap()).unwrap();
        assert_eq!(vol.fat_type(), want, "{name}");
        assert_eq!(vol.label().unwrap().as_deref(), Some("WRITTEN"));
        assert_eq!(vol.serial(), Some(0x1234_abcd));
        let tree = walk_tree(&d.join(format!("{name}-tree")));
        let mine = walk_volume(&vol);
        compare(&mine, &tree);
        let e = vol.open_path("lower.txt").unwrap();
        assert!(!e.has_long_name, "a lowercase 8.3 name needs no long name");
        assert_eq!(e.short_name, "lower.txt");
        let e = vol.open_path("UPPER.TXT").unwrap();
        assert!(!e.has_long_name);

        // The used-cluster map is what fsck.fat counts; FSInfo agrees.
        let used = fsck_used(d, name);
        assert_eq!(vol.used_clusters().unwrap().count(), used, "{name}");
        if want == FatType::Fat32 {
            let info = vol.fs_info().unwrap().unwrap();
            assert_eq!(info.free_count, Some(vol.cluster_count() - used as u32));
            assert_eq!(
                vol.backup_boot_sector().unwrap().as_ref(),
                Some(vol.boot_sector())
            );
        }

        // mtools copies every file out identical (with its mtime).
        let out = d.join(format!("{name}-mcopy"));
        fs::create_dir(&out).unwrap();
        sh(
            &format!(
                "TZ=UTC LC_ALL=C.UTF-8 mcopy -s -m -n -i {name} '::*' {}",
                out.display()
            ),
            d,
        );
        compare(&walk_tree(&out), &tree);
        let listed = sh(&format!("LC_ALL=C.UTF-8 mdir -/ -b -i {name} ::"), d);
        let listed: BTreeSet<&str> = listed
            .lines()
            .map(|l| l.trim_start_matches("::").trim_end_matches('/'))
            .collect();
        let names: BTreeSet<&str> = tree.keys().map(String::as_str).collect();
        assert_eq!(listed, names, "{name}: mdir");

        // The Sleuth Kit lists the same names (it cuts very long ones).
        let theirs = fls_names(d, name, tsk);
        assert_eq!(theirs.len(), tree.len(), "{name}: fls");
        for path in &theirs {
            assert!(
                tree.contains_key(path)
                    || tree.keys().filter(|p| p.starts_with(path.as_str())).count() == 1,
                "{name}: fls lists {path}"
            );
        }
    }
}

/// The boot sector fields `mkfs.fat` and `fs_fat::format` chose for a
/// volume of `size` bytes.
fn both(dir: &Path, size: u64, forced: Option<FatType>) -> (BootSector, BootSector) {
    let f = match forced {
        Some(FatType::Fat32) => "-F 32",
        Some(FatType::Fat16) => "-F 16",
        Some(FatType::Fat12) => "-F 12",
        None => "",
    };
    sh(
        &format!(
            "rm -f m.img && mkfs.fat {f} -C m.img {} >/dev/null",
            size / 1024
        ),
        dir,
    );
    let theirs = BootSector::read(&FileDisk::open(dir.join("m.img")).unwrap()).unwrap();
    let path = dir.join("o.img");
    let _ = fs::remove_file(&path);
    let disk = FileDisk::create(&path, size).unwrap();
    let opts = FormatOptions {
        fat_type: forced,
        ..FormatOptions::default()
    };
    let ours = fs_fat::format(&disk, &opts).unwrap();
    fsck_clean(dir, "o.img");
    (ours, theirs)
}

#[test]
fn format_chooses_what_mkfs_fat_chooses() {
    if !have_all(&["mkfs.fat", "fsck.fat"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut report = String::new();
    for (size, forced) in [
        (368_640u64, None),
        (1_474_560, None),
        (2_949_120, None),
        (2 << 20, None),
        (8 << 20, None),
        (16 << 20, None),
        (64 << 20, None),
        (300 << 20, None),
        (600 << 20, None),
        (48 << 20, Some(FatType::Fat32)),
        (16 << 20, Some(FatType::Fat12)),
    ] {
        let (o, m) = both(dir.path(), size, forced);
        let fields = [
            (
                "type",
                format!("{:?}", o.fat_type),
                format!("{:?}", m.fat_type),
            ),
            (
                "sectors/cluster",
                o.sectors_per_cluster.to_string(),
                m.sectors_per_cluster.to_string(),
            ),
            (
                "reserved",
                o.reserved_sectors.to_string(),
                m.reserved_sectors.to_string(),
            ),
            (
                "root entries",
                o.root_entries.to_string(),
                m.root_entries.to_string(),
            ),
            (
                "FAT sectors",
                o.fat_sectors.to_string(),
                m.fat_sectors.to_string(),
            ),
            (
                "media",
                format!("{:#x}", o.media),
                format!("{:#x}", m.media),
            ),
            (
                "clusters",
                o.cluster_count.to_string(),
                m.cluster_count.to_string(),
            ),
        ];
        let diffs: Vec<String> = fields
            .iter()
            .filter(|f| f.1 != f.2)
            .map(|f| format!("{} {} (mkfs.fat {})", f.0, f.1, f.2))
            .collect();
        report += &format!(
            "{:>9} KiB {:<10}: {}\n",
            size / 1024,
            forced.map_or("", |t| t.name()),
            if diffs.is_empty() {
                "same".to_string()
            } else {
                diffs.join(", ")
            }
        );
        // The specification's tables and mkfs.fat agree on the type except
        // between 4.1 and 16 MiB, where mkfs.fat keeps FAT12 with 2 KiB
        // clusters and the specification wants FAT16.
        if !(size > 4 << 20 && size < 16 << 20) {
            assert_eq!(o.fat_type, m.fat_type, "{size}");
        }
        // With the same type and cluster, the same reserved area and
        // about the same FAT (mkfs.fat sizes it a little tighter).
        if o.fat_type == m.fat_type && o.sectors_per_cluster == m.sectors_per_cluster {
            assert_eq!(o.reserved_sectors, m.reserved_sectors, "{size}");
            assert!(
                o.fat_sectors.abs_diff(m.fat_sectors) <= o.sectors_per_cluster.max(2),
                "{size}: FAT {} vs {}",
                o.fat_sectors,
                m.fat_sectors
            );
        }
    }
    println!("fs_fat::format against mkfs.fat:\n{report}");
}

#[test]
fn write_extend_truncate_delete_and_reopen() {
    if !have_all(&["fsck.fat", "mcopy"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, size, fat_type) in [
        ("m16.img", 16u64 << 20, Some(FatType::Fat16)),
        ("m32.img", 40 << 20, Some(FatType::Fat32)),
        ("m12.img", 1_474_560, None),
    ] {
        let opts = FormatOptions {
            fat_type,
            ..FormatOptions::default()
        };
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut w =
            FatWriter::format(FileDisk::create(d.join(name), size).unwrap(), &opts).unwrap();
        let cs = w.cluster_size() as usize;
        let free0 = w.free_clusters();
        let root = w.root();
        let t = FileTimes::default();
        let sub = w
            .create_dir(root, "Sub dir", &t, Attributes::empty())
            .unwrap();
        // Interleaved writes to two files: each keeps its own chain.
        let a = w
            .create_file(sub, "a.bin", &t, Attributes::ARCHIVE, 0)
            .unwrap();
        let b = w
            .create_file(sub, "B file.bin", &t, Attributes::ARCHIVE, 0)
            .unwrap();
        let mut da = vec![];
        let mut db = vec![];
        for i in 0..6 {
            let pa = pattern(cs + 100 * i, i as u64);
            let pb = pattern(cs / 2 + 7, 100 + i as u64);
            w.write(a, da.len() as u64, &pa).unwrap();
            w.write(b, db.len() as u64, &pb).unwrap();
            da.extend_from_slice(&pa);
            db.extend_from_slice(&pb);
        }
        // Overwrite inside, write past the end (a zero gap), read back.
        w.write(a, 10, b"overwritten").unwrap();
        da[10..21].copy_from_slice(b"overwritten");
        w.write(b, db.len() as u64 + 3 * cs as u64 + 5, b"tail")
            .unwrap();
        db.resize(db.len() + 3 * cs + 5, 0);
        db.extend_from_slice(b"tail");
        let mut back = vec![0u8; da.len() + 10];
        assert_eq!(w.read(a, 0, &mut back).unwrap(), da.len());
        assert!(back[..da.len()] == da[..]);
        // Truncate one to a cluster and a bit, extend it with zeros.
        w.set_len(a, cs as u64 + 1).unwrap();
        da.truncate(cs + 1);
        w.set_len(a, 3 * cs as u64).unwrap();
        da.resize(3 * cs, 0);
        model.insert("/Sub dir/a.bin".into(), da.clone());
        model.insert("/Sub dir/B file.bin".into(), db.clone());
        // A size hint larger than what is written: released on close.
        let c = w
            .create_file(root, "hinted", &t, Attributes::ARCHIVE, 50 * cs as u64)
            .unwrap();
        w.write(c, 0, b"short").unwrap();
        model.insert("/hinted".into(), b"short".to_vec());
        // Deleted files and directories free their clusters.
        let gone = w
            .create_file(root, "to be deleted.txt", &t, Attributes::ARCHIVE, 0)
            .unwrap();
        w.write(gone, 0, &pattern(5 * cs, 9)).unwrap();
        let gone_dir = w
            .create_dir(root, "empty dir", &t, Attributes::empty())
            .unwrap();
        assert!(w.remove(sub).is_err(), "not empty");
        w.remove(gone).unwrap();
        w.remove(gone_dir).unwrap();
        assert!(w.write(gone, 0, b"x").is_err(), "stale node");
        // A file truncated to nothing keeps no cluster.
        let z = w
            .create_file(root, "zeroed", &t, Attributes::ARCHIVE, 0)
            .unwrap();
        w.write(z, 0, &pattern(2 * cs, 4)).unwrap();
        w.set_len(z, 0).unwrap();
        model.insert("/zeroed".into(), vec![]);
        // Duplicates (without regard to case) and bad names are refused.
        assert!(
            w.create_file(root, "HINTED", &t, Attributes::ARCHIVE, 0)
                .is_err()
        );
        assert!(
            w.create_file(root, "a/b", &t, Attributes::ARCHIVE, 0)
                .is_err()
        );
        assert!(
            w.create_file(root, "trailing.", &t, Attributes::ARCHIVE, 0)
                .is_err()
        );
        // Attributes and times.
        w.set_attributes(c, Attributes::READ_ONLY | Attributes::HIDDEN)
            .unwrap();
        w.set_times(
            c,
            &FileTimes {
                created: Some(Timestamp {
                    seconds: 1_600_000_001,
                    nanoseconds: 500_000_000,
                }),
                modified: Some(ts(1_650_000_000)),
                accessed: Some(ts(1_660_000_000)),
            },
        )
        .unwrap();
        let used_clusters = |m: &BTreeMap<String, Vec<u8>>| -> u32 {
            m.values().map(|v| v.len().div_ceil(cs) as u32).sum::<u32>() + 1
        };
        w.flush().unwrap();
        assert_eq!(
            free0 - w.free_clusters(),
            used_clusters(&model),
            "{name}: clusters in use"
        );
        drop(w);
        fsck_clean(d, name);

        // Reopen and go on: the 8.3 aliases stay unique across sessions.
        let mut w = FatWriter::open(FileDisk::open_rw(d.join(name)).unwrap()).unwrap();
        let sub = w.open_path("/SUB DIR").unwrap();
        for i in 0..30 {
            let n = format!("Many similar names {i}.txt");
            let f = w.create_file(sub, &n, &t, Attributes::ARCHIVE, 0).unwrap();
            w.write(f, 0, n.as_bytes()).unwrap();
            model.insert(format!("/Sub dir/{n}"), n.into_bytes());
        }
        let a = w.open_path("sub dir/A.BIN").unwrap();
        w.write(a, 3 * cs as u64, b"more").unwrap();
        let da = model.get_mut("/Sub dir/a.bin").unwrap();
        da.extend_from_slice(b"more");
        w.into_inner().unwrap();
        fsck_clean(d, name);

        let vol = FatVolume::open(FileDisk::open(d.join(name)).unwrap()).unwrap();
        let mut found = BTreeMap::new();
        let mut shorts = BTreeSet::new();
        vol.walk(&mut |path, e| {
            if !e.is_dir() {
                found.insert(path.to_string(), common::read_all(&vol, e));
            }
            assert!(shorts.insert((
                path.rsplit_once('/').unwrap().0.to_string(),
                e.short_name.clone()
            )));
            Ok(())
        })
        .unwrap();
        assert_eq!(found, model, "{name}");
        let c = vol.open_path("hinted").unwrap();
        assert_eq!(c.attributes, Attributes::READ_ONLY | Attributes::HIDDEN);
        assert_eq!(c.modified.unwrap().seconds, 1_650_000_000);
        assert_eq!(
            c.created.unwrap(),
            Timestamp {
                seconds: 1_600_000_001,
                nanoseconds: 500_000_000
            }
        );
        assert_eq!(c.accessed.unwrap().seconds, 1_659_916_800);
        let e = vol.open_path("Sub dir/Many similar names 7.txt").unwrap();
        assert!(e.short_name.contains('~'), "{}", e.short_name);
        assert_eq!(vol.used_clusters().unwrap().count(), fsck_used(d, name));

        // mcopy reads them too.
        let out = d.join(format!("{name}-out"));
        fs::create_dir(&out).unwrap();
        sh(
            &format!(
                "LC_ALL=C.UTF-8 mcopy -s -n -i {name} '::*' {}",
                out.display()
            ),
            d,
        );
        for (path, data) in &model {
            assert!(
                fs::read(out.join(&path[1..])).unwrap() == *data,
                "{name}: {path}"
            );
        }
    }
}

#[test]
fn a_file_named_like_the_label_gets_an_alias() {
    let disk = MemDisk::new(1_474_560);
    let opts = FormatOptions {
        label: Some("DATA".into()),
        ..FormatOptions::default()
    };
    let mut w = FatWriter::format(&disk, &opts).unwrap();
    let root = w.root();
    let f = w
        .create_file(root, "DATA", &FileTimes::default(), Attributes::ARCHIVE, 0)
        .unwrap();
    w.write(f, 0, b"x").unwrap();
    w.into_inner().unwrap();
    let vol = FatVolume::open(&disk).unwrap();
    let e = vol.open_path("DATA").unwrap();
    assert!(e.has_long_name);
    assert_eq!(e.short_name, "DATA~1");
    assert_eq!(vol.label().unwrap().as_deref(), Some("DATA"));
}

#[test]
fn full_volumes_and_directories_are_errors() {
    let disk = MemDisk::new(1_474_560);
    let mut w = FatWriter::format(&disk, &FormatOptions::default()).unwrap();
    let root = w.root();
    let t = FileTimes::default();
    // 224 root entries: 224 short names fit, the next does not.
    for i in 0..224 {
        w.create_file(root, &format!("F{i}"), &t, Attributes::ARCHIVE, 0)
            .unwrap();
    }
    let e = w
        .create_file(root, "one more", &t, Attributes::ARCHIVE, 0)
        .unwrap_err();
    assert!(e.to_string().contains("root directory full"), "{e}");
    // The data area runs out.
    let f0 = w.lookup(root, "f0").unwrap().unwrap();
    w.remove(f0).unwrap();
    let f = w
        .create_file(root, "big", &t, Attributes::ARCHIVE, 0)
        .unwrap();
    let e = w.set_len(f, 2 << 20).unwrap_err();
    assert!(e.to_string().contains("full"), "{e}");
    w.set_len(f, 1 << 20).unwrap();
    w.flush().unwrap();
    let vol = FatVolume::open(&disk).unwrap();
    assert_eq!(vol.open_path("BIG").unwrap().size, 1 << 20);
    assert_eq!(vol.read_dir(&vol.root()).unwrap().len(), 224);
}

#[test]
fn a_hostile_volume_is_refused_or_written_without_panic() {
    // Every seed of the read fuzz target, opened for writing.
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/fat");
    for f in fs::read_dir(seeds).unwrap() {
        fs_fat::fuzzing::fat_write(&fs::read(f.unwrap().path()).unwrap());
    }
    // A directory whose chain loops: an error naming the FAT entry.
    let disk = MemDisk::new(16 << 20);
    let mut w = FatWriter::format(
        &disk,
        &FormatOptions {
            fat_type: Some(FatType::Fat16),
            ..FormatOptions::default()
        },
    )
    .unwrap();
    let root = w.root();
    let sub = w
        .create_dir(root, "sub", &FileTimes::default(), Attributes::empty())
        .unwrap();
    w.into_inner().unwrap();
    let boot = BootSector::read(&disk).unwrap();
    let at = boot.fat_offset(0) + u64::from(sub.cluster()) * 2;
    disk.write_at(at, &(sub.cluster() as u16).to_le_bytes())
        .unwrap();
    let mut w = FatWriter::open(&disk).unwrap();
    let e = w.open_path("sub/x").unwrap_err();
    assert!(e.to_string().contains("loops"), "{e}");
    assert_eq!(e.offset(), Some(at));
    let _ = disk.read_at(0, &mut [0u8; 1]);
}

#[test]
fn fuzz_write_corpus_replays() {
    test_support::replay_corpus(&["seeds/fat_write"], 5, fs_fat::fuzzing::fat_write);
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/fat_write");
    if corpus.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        test_support::replay_corpus(&["corpus/fat_write"], 1, fs_fat::fuzzing::fat_write);
    }
}

#[test]
fn format_options_reach_the_boot_sector() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opts.img");
    let disk = FileDisk::create(&path, 40 << 20).unwrap();
    let opts = FormatOptions {
        fat_type: Some(FatType::Fat16),
        bytes_per_sector: 4096,
        hidden_sectors: 2048,
        media: Some(0xf0),
        volume_id: Some(0xdead_beef),
        label: Some("opts".into()),
        ..FormatOptions::default()
    };
    let mut w = FatWriter::format(&disk, &opts).unwrap();
    let root = w.root();
    let f = w
        .create_file(
            root,
            "in 4K sectors.txt",
            &FileTimes::default(),
            Attributes::ARCHIVE,
            0,
        )
        .unwrap();
    w.write(f, 0, &pattern(100_000, 3)).unwrap();
    w.into_inner().unwrap();
    let vol = FatVolume::open(&disk).unwrap();
    let b = vol.boot_sector();
    assert_eq!(
        (b.bytes_per_sector, b.hidden_sectors, b.media, b.fat_type),
        (4096, 2048, 0xf0, FatType::Fat16)
    );
    assert_eq!(vol.serial(), Some(0xdead_beef));
    assert_eq!(vol.label().unwrap().as_deref(), Some("OPTS"));
    let e = vol.open_path("IN 4K SECTORS.TXT").unwrap();
    assert!(common::read_all(&vol, &e) == pattern(100_000, 3));
    if have_all(&["fsck.fat"]) {
        fsck_clean(dir.path(), "opts.img");
    }
    // Impossible requests are errors, not volumes.
    for bad in [
        FormatOptions {
            bytes_per_sector: 100,
            ..FormatOptions::default()
        },
        FormatOptions {
            sectors_per_cluster: Some(3),
            ..FormatOptions::default()
        },
        FormatOptions {
            fat_type: Some(FatType::Fat12),
            sectors_per_cluster: Some(1),
            ..FormatOptions::default()
        },
        FormatOptions {
            label: Some("no:colons".into()),
            ..FormatOptions::default()
        },
    ] {
        assert!(fs_fat::format(&disk, &bad).is_err(), "{bad:?}");
    }
}

#[test]
fn many_directories_cycle_through_the_cache() {
    // More directories than the writer caches, written round-robin: the
    // evicted ones are written back and read again.
    let disk = MemDisk::new(16 << 20);
    let opts = FormatOptions {
        fat_type: Some(FatType::Fat16),
        sectors_per_cluster: Some(1),
        ..FormatOptions::default()
    };
    let mut w = FatWriter::format(&disk, &opts).unwrap();
    let root = w.root();
    let t = FileTimes::default();
    let dirs: Vec<_> = (0..150)
        .map(|i| {
            w.create_dir(
                root,
                &format!("directory number {i}"),
                &t,
                Attributes::empty(),
            )
            .unwrap()
        })
        .collect();
    for round in 0..3 {
        for (i, d) in dirs.iter().enumerate() {
            let f = w
                .create_file(
                    *d,
                    &format!("file {round} of {i}.txt"),
                    &t,
                    Attributes::ARCHIVE,
                    0,
                )
                .unwrap();
            w.write(f, 0, format!("{round}/{i}").as_bytes()).unwrap();
        }
    }
    w.into_inner().unwrap();
    let vol = FatVolume::open(&disk).unwrap();
    let mut files = 0;
    vol.walk(&mut |path, e| {
        if !e.is_dir() {
            files += 1;
            let data = common::read_all(&vol, e);
            let (round, i) = path
                .trim_start_matches("/directory number ")
                .split_once("/file ")
                .map(|(i, rest)| (rest.split(' ').next().unwrap().to_string(), i.to_string()))
                .unwrap();
            assert_eq!(data, format!("{round}/{i}").into_bytes(), "{path}");
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(files, 450);
}
