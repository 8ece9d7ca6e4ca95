//! `vdisk compare --logical`: equal trees exit 0, and each kind of
//! difference (file contents, owner, partition type, layout) exits 1 with
//! the first difference on stdout; errors exit 2.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command;

use test_support::disks::{Fs, Table, build_disk, tools_for};
use test_support::{have_all, sh};

/// Status and stdout of `vdisk compare --logical a b` run in `dir`.
fn compare(dir: &Path, a: &str, b: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .args(["compare", "--logical", a, b])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn logical_comparison_finds_the_first_difference() {
    let fss = [Fs::Fat, Fs::Ext4];
    if !have_all(&tools_for(&fss)) || !have_all(&["debugfs", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = build_disk(d, "a.img", Table::Gpt, &fss, 16);
    let (fat, ext) = (&disk.parts[0], &disk.parts[1]);

    // Same trees in another container and with different free space.
    sh("qemu-img convert -O qcow2 a.img a.qcow2", d);
    let (code, out) = compare(d, "a.img", "a.qcow2");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("logically identical"), "{out}");

    // Different file contents, same size, in the FAT partition.
    sh(
        &format!(
            "cp --sparse=always a.img b.img && printf 'hello a.img.FS0\\n' > x.txt \
             && touch -d '2021-05-06 07:08:10 UTC' x.txt \
             && TZ=UTC mcopy -m -o -i b.img@@{} x.txt ::hello.txt",
            fat.start
        ),
        d,
    );
    let (code, out) = compare(d, "a.img", "b.img");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("partition 1 (fat16): /hello.txt: contents differ at byte 12"),
        "{out}"
    );

    // A different owner in the ext partition.
    let part = disk.extract(&disk.path, ext, "ext.img");
    sh(
        "debugfs -w -R 'set_inode_field /docs/empty.txt uid 1234' ext.img 2>/dev/null",
        d,
    );
    sh(
        &format!(
            "cp --sparse=always a.img c.img && dd if={} of=c.img bs=1M seek={} oflag=seek_bytes conv=notrunc status=none",
            part.display(),
            ext.start
        ),
        d,
    );
    let (code, out) = compare(d, "a.img", "c.img");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("partition 2 (ext4): /docs/empty.txt: uid differs: Some(0) and Some(1234)"),
        "{out}"
    );

    // A different partition type.
    sh(
        "cp --sparse=always a.img e.img && sfdisk -q --part-type e.img 2 933AC7E1-2EB4-4F13-B844-0E14E2AEF915",
        d,
    );
    let (code, out) = compare(d, "a.img", "e.img");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("partition 2: types differ"), "{out}");

    // A table against a whole-disk file system.
    sh(
        &format!(
            "dd if=a.img of=f.img bs=1M skip={} count={} iflag=skip_bytes,count_bytes status=none",
            ext.start, ext.size
        ),
        d,
    );
    let (code, out) = compare(d, "a.img", "f.img");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("gpt partition table and whole-disk ext4"),
        "{out}"
    );
    let (code, out) = compare(d, "f.img", "f.img");
    assert_eq!(code, Some(0), "{out}");

    // An unreadable image is an error naming it.
    let (code, out) = compare(d, "a.img", "missing.img");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("missing.img"), "{out}");
}

/// A logical copy (fresh FAT file systems, other sectors, rescaled
/// layout) compares equal, and `compare` without `--logical` tells them
/// apart.
#[test]
fn logical_copies_compare_equal() {
    use std::sync::Arc;

    use disk_io::FileDisk;
    use image_convert::logical::{SharedWriteDisk, copy_logical};
    use image_convert::volume::SharedDisk;
    use image_convert::{LogicalComparison, compare_logical};

    let fss = [Fs::Fat, Fs::Fat];
    if !have_all(&tools_for(&fss)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = build_disk(d, "a.img", Table::Mbr, &fss, 16);
    for (name, size) in [("same.img", 0u64), ("grown.img", 16 << 20)] {
        let src: SharedDisk = Arc::new(FileDisk::open(&disk.path).unwrap());
        let size = src.size() + size;
        let dst = d.join(name);
        let out: SharedWriteDisk = Arc::new(FileDisk::create(&dst, size).unwrap());
        copy_logical(Arc::clone(&src), out, None, &mut |_, _| {}).unwrap();
        let copy: SharedDisk = Arc::new(FileDisk::open(&dst).unwrap());
        assert_eq!(
            compare_logical(src, copy).unwrap(),
            LogicalComparison::Equal,
            "{name}"
        );
        let (code, out) = compare(d, "a.img", name);
        assert_eq!(code, Some(0), "{name}: {out}");
        let sectors = Command::new(env!("CARGO_BIN_EXE_vdisk"))
            .args(["compare", "a.img", name])
            .current_dir(d)
            .output()
            .unwrap();
        assert_eq!(sectors.status.code(), Some(1), "{name}");
    }
}
