//! `vdisk convert --mode used` on MBR, GPT and table-less disks holding
//! FAT, ext4 and NTFS made by the real tools (free space full of random
//! bytes), read from raw, qcow2, vmdk and vhdx and written as raw and
//! qcow2: the checkers pass on every output partition, the manifests and
//! `compare --logical` agree, every byte the file systems keep is equal,
//! and the output holds little more than the used bytes.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use disk_io::{FileDisk, ReadAt};
use image_convert::used_layout;
use test_support::disks::{Disk, Fs, Table, build_disk, tools_for};
use test_support::{have, have_all, sh};

fn vdisk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = vdisk(args);
    assert!(
        out.status.success(),
        "vdisk {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Bytes the file occupies on the host file system.
fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

/// Reads `len` bytes at `off` of a raw file.
fn bytes(disk: &FileDisk, off: u64, len: u64) -> Vec<u8> {
    let mut b = vec![0u8; len as usize];
    disk.read_at(off, &mut b).unwrap();
    b
}

/// Converts `src` (the container holding `disk`) in used mode to `fmt`
/// and checks the output every way the module documentation lists.
fn check_used(dir: &Path, disk: &Disk, src: &Path, fmt: &str) {
    let out = dir.join(format!(
        "{}.used.{fmt}",
        src.file_name().unwrap().to_str().unwrap()
    ));
    ok(&[
        "convert",
        "--mode",
        "used",
        "-q",
        "-O",
        fmt,
        s(src),
        s(&out),
    ]);
    let raw: PathBuf = if fmt == "raw" {
        out.clone()
    } else {
        let r = out.with_extension("raw");
        sh(
            &format!("qemu-img convert -O raw {} {}", s(&out), s(&r)),
            dir,
        );
        r
    };

    // The checkers, on each partition on its own.
    for (i, p) in disk.parts.iter().enumerate() {
        let file = disk.extract(&raw, p, &format!("part{i}.img"));
        p.fs.fsck(&file);
        if p.fs == Fs::Ext4 {
            // The backup superblock and descriptors of group 1 were copied
            // (partclone and e2image leave them out).
            let orig = disk.extract(&disk.path, p, "orig.img");
            let header = |f: &Path| {
                sh(
                    &format!(
                        "dumpe2fs -h -o superblock=8193 -o blocksize=1024 {} 2>&1",
                        s(f)
                    ),
                    dir,
                )
                .replace(s(f), "")
            };
            let want = header(&orig);
            assert_eq!(want, header(&file));
            // ... and its descriptor and reserved descriptor blocks.
            let reserved: u64 = want
                .lines()
                .find_map(|l| l.strip_prefix("Reserved GDT blocks:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            let (x, y) = (
                FileDisk::open(&orig).unwrap(),
                FileDisk::open(&file).unwrap(),
            );
            let len = (2 + reserved) * 1024;
            assert!(bytes(&x, 8193 * 1024, len) == bytes(&y, 8193 * 1024, len));
            std::fs::remove_file(&orig).unwrap();
        }
        std::fs::remove_file(&file).unwrap();
    }

    // Same trees, by the contract's comparison and by the manifests.
    let verdict = ok(&["compare", "--logical", s(src), s(&out)]);
    assert!(verdict.contains("identical"), "{verdict}");
    for p in &disk.parts {
        let mut args = vec!["manifest"];
        let n;
        if let Some(number) = p.number {
            n = number.to_string();
            args.extend(["--part", &n]);
        }
        let want = ok(&[&args[..], &[s(src)]].concat());
        let got = ok(&[&args[..], &[s(&out)]].concat());
        assert_eq!(want, got, "{:?}", p.number);
        assert!(want.lines().count() >= 3, "{want}");
    }

    // Every byte the file systems keep is the source's; their free space
    // reads as zeros.
    let a = FileDisk::open(&disk.path).unwrap();
    let b = FileDisk::open(&raw).unwrap();
    let layout = used_layout(&a).unwrap();
    assert_eq!(layout.volumes.len(), disk.parts.len());
    let mut used = 0;
    for v in &layout.volumes {
        used += v.kept_bytes();
        for r in &v.keep {
            let mut at = r.start;
            while at < r.end {
                let n = (r.end - at).min(1 << 20);
                assert!(
                    bytes(&a, at, n) == bytes(&b, at, n),
                    "{:?} differs in {at:#x}+{n:#x}",
                    v.number
                );
                at += n;
            }
        }
        if v.fs == image_convert::FileSystem::Ntfs {
            // The last sector: the backup boot sector, which partclone misses.
            let end = v.start + v.size;
            let backup = bytes(&a, end - 512, 512);
            assert_eq!(&backup[3..11], b"NTFS    ");
            assert!(backup == bytes(&b, end - 512, 512));
        }
    }
    for r in layout.dropped() {
        assert!(bytes(&b, r.start, r.end - r.start).iter().all(|&x| x == 0));
    }

    // Little more than the used bytes, whereas the partitions hold
    // random bytes everywhere.
    let limit = used + used / 20 + (16 << 20);
    let total: u64 = disk.parts.iter().map(|p| p.size).sum();
    assert!(total > limit, "the test disk is too small to tell");
    let got = allocated(&out);
    assert!(
        got <= limit,
        "{}: {got} bytes allocated for {used} used",
        out.display()
    );
    eprintln!(
        "{} -> {fmt}: {used} bytes used, {got} allocated, partitions {total}",
        src.display()
    );
}

#[test]
fn used_mode_mbr_and_gpt_disks() {
    let fss = [Fs::Fat, Fs::Ext4, Fs::Ntfs];
    if !have_all(&tools_for(&fss)) || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let mbr = build_disk(d, "mbr.img", Table::Mbr, &fss, 20);
    assert_eq!(
        mbr.parts.iter().map(|p| p.number).collect::<Vec<_>>(),
        [Some(1), Some(2), Some(5)]
    );
    check_used(d, &mbr, &mbr.path, "raw");
    sh("qemu-img convert -O qcow2 mbr.img mbr.qcow2", d);
    check_used(d, &mbr, &d.join("mbr.qcow2"), "qcow2");

    let gpt = build_disk(d, "gpt.img", Table::Gpt, &fss, 20);
    sh("qemu-img convert -O vmdk gpt.img gpt.vmdk", d);
    check_used(d, &gpt, &d.join("gpt.vmdk"), "raw");
    sh("qemu-img convert -O vhdx gpt.img gpt.vhdx", d);
    check_used(d, &gpt, &d.join("gpt.vhdx"), "qcow2");
}

#[test]
fn used_mode_whole_disk_file_systems() {
    for fs in [Fs::Fat, Fs::Ext4, Fs::Ntfs] {
        if !have_all(&tools_for(&[fs])) || !have("qemu-img") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = build_disk(dir.path(), "whole.img", Table::None, &[fs], 40);
        check_used(dir.path(), &disk, &disk.path, "qcow2");
    }
}

#[test]
fn used_mode_refuses_to_shrink_and_logical_is_honest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "truncate -s 4M a.img && printf 'label: dos\\n,,83\\n' | sfdisk -q a.img",
        d,
    );
    let a = d.join("a.img");
    let b = d.join("b.img");
    let out = vdisk(&[
        "convert",
        "--mode",
        "used",
        "--size",
        "1M",
        "-O",
        "raw",
        s(&a),
        s(&b),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot shrink"));
    assert!(!b.exists());
    let out = vdisk(&["convert", "--mode", "logical", "-O", "raw", s(&a), s(&b)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!b.exists());
    // A disk with an empty partition: used mode copies it whole. With
    // --progress off a terminal, progress comes as lines on stderr.
    let out = vdisk(&[
        "convert",
        "--mode",
        "used",
        "--progress",
        "-O",
        "raw",
        s(&a),
        s(&b),
    ]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("4194304/4194304 bytes (100.0%)"), "{log}");
    assert!(log.contains("MiB/s, ETA"), "{log}");
    assert_eq!(
        ok(&["compare", s(&a), s(&b)]).trim(),
        "Images are identical."
    );
    std::fs::remove_file(&b).unwrap();
    let out = vdisk(&[
        "convert",
        "--mode",
        "used",
        "-q",
        "-O",
        "qcow2",
        s(&a),
        s(&b),
    ]);
    assert!(out.status.success() && out.stderr.is_empty());
}
