//! `vdisk convert --mode logical`: MBR and GPT disks holding FAT, ext4 and
//! NTFS (made by the real tools), converted to raw, qcow2 and vhdx at the
//! same size, 50% larger and (FAT only, whose writer re-creates it) 40%
//! smaller. FAT partitions are formatted afresh and filled file by file;
//! the others are copied by sector. Every output partition passes its
//! checker and `vdisk compare --logical` exits 0.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Output};

use disk_io::FileDisk;
use test_support::disks::{Fs, Table, build_disk, tools_for};
use test_support::{have_all, sh};

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

/// Converts `src` logically to `fmt` at `size` (the source's when `None`)
/// and checks the result: checkers on every partition, the logical
/// comparison, the FAT partitions re-created (not copied).
fn check_logical(dir: &Path, src: &Path, fss: &[Fs], fmt: &str, size: Option<u64>) {
    let name = format!(
        "{}.{}.{fmt}",
        src.file_name().unwrap().to_str().unwrap(),
        size.map_or("same".to_string(), |s| s.to_string())
    );
    let out = dir.join(&name);
    let size_arg = size.map(|s| s.to_string());
    let mut args = vec!["convert", "--mode", "logical", "-q", "-O", fmt];
    if let Some(sz) = &size_arg {
        args.extend(["--size", sz]);
    }
    args.extend([s(src), s(&out)]);
    ok(&args);
    let verdict = ok(&["compare", "--logical", s(src), s(&out)]);
    assert!(verdict.contains("identical"), "{name}: {verdict}");

    // The checkers, on each partition of a raw copy.
    let raw = dir.join(format!("{name}.raw"));
    ok(&["convert", "-q", "-O", "raw", s(&out), s(&raw)]);
    if let Some(sz) = size {
        assert_eq!(std::fs::metadata(&raw).unwrap().len(), sz);
    }
    let table = partition::read(&FileDisk::open(&raw).unwrap())
        .unwrap()
        .unwrap();
    let parts: Vec<_> = table
        .partitions
        .iter()
        .filter(|p| !p.kind.is_extended())
        .collect();
    assert_eq!(parts.len(), fss.len(), "{name}");
    for (p, fs) in parts.iter().zip(fss) {
        let file = format!("{name}.p{}", p.number);
        sh(
            &format!(
                "dd if={} of={file} bs=1M skip={} count={} iflag=skip_bytes,count_bytes conv=sparse status=none",
                s(&raw),
                p.start,
                p.size
            ),
            dir,
        );
        fs.fsck(&dir.join(&file));
        let info = ok(&["info", "--json", s(&out)]);
        assert!(info.contains(fs.vdisk_name()), "{name}: {info}");
        std::fs::remove_file(dir.join(&file)).unwrap();
    }
    std::fs::remove_file(&raw).unwrap();
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn logical_conversions_keep_every_file() {
    let fss = [Fs::Fat, Fs::Ext4, Fs::Ntfs];
    if !have_all(&tools_for(&fss)) || !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gpt = build_disk(d, "gpt.img", Table::Gpt, &fss, 40);
    let gpt_size = std::fs::metadata(&gpt.path).unwrap().len();
    for fmt in ["raw", "qcow2", "vhdx"] {
        check_logical(d, &gpt.path, &fss, fmt, None);
    }
    check_logical(d, &gpt.path, &fss, "qcow2", Some(gpt_size / 2 * 3));
    // Sources inside containers (made by qemu-img).
    for fmt in ["qcow2", "vmdk", "vhdx"] {
        let inside = d.join(format!("gpt-src.{fmt}"));
        sh(
            &format!("qemu-img convert -O {fmt} gpt.img {}", s(&inside)),
            d,
        );
        check_logical(d, &inside, &fss, "raw", None);
    }
    // Shrinking the ext4 and NTFS partitions needs their writers: refused
    // up front, nothing left behind.
    let small = d.join("small.qcow2");
    let size = (gpt_size / 10 * 6).to_string();
    let out = vdisk(&[
        "convert",
        "--mode",
        "logical",
        "--size",
        &size,
        "-O",
        "qcow2",
        s(&gpt.path),
        s(&small),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shrink"));
    assert!(!small.exists());

    let mbr3 = build_disk(d, "mbr3.img", Table::Mbr, &fss, 40);
    check_logical(d, &mbr3.path, &fss, "qcow2", None);

    let fat = [Fs::Fat, Fs::Fat];
    let mbr = build_disk(d, "mbr.img", Table::Mbr, &fat, 40);
    let mbr_size = std::fs::metadata(&mbr.path).unwrap().len();
    check_logical(d, &mbr.path, &fat, "qcow2", Some(mbr_size / 2 * 3));
    check_logical(d, &mbr.path, &fat, "raw", Some(mbr_size / 10 * 6));
}
