//! Detection and inspection of the real-world images under
//! `../shared/testdata` (made by VMware, Windows, qemu-img, fdisk, mkfs).

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use disk_io::FileDisk;
use image_convert::{FileSystem, GuestContent, inspect};
use test_support::testdata;
use vdisk_format::{Detected, Format, RawContent, detect};

#[test]
fn containers_are_detected_by_content() {
    for (rel, want) in [
        ("dfvfs/ext2.vhd", Detected::Vhd { fixed: false }),
        ("dfvfs/image.vhd", Detected::Vhd { fixed: false }),
        (
            "dfvfs/image-differential.vhd",
            Detected::Vhd { fixed: false },
        ),
        ("dfvfs/ext2.vmdk", Detected::VmdkSparse),
        ("plaso/image.vmdk", Detected::VmdkSparse),
        ("vmdk-rs-aon/streamOptimized.vmdk", Detected::VmdkSparse),
        ("vmdk-rs-aon/monolithicFlat.vmdk", Detected::VmdkDescriptor),
        (
            "vmdk-rs-aon/twoGbMaxExtentFlat.vmdk",
            Detected::VmdkDescriptor,
        ),
        (
            "vmdk-rs-aon/twoGbMaxExtentSparse.vmdk",
            Detected::VmdkDescriptor,
        ),
        ("vmdk-rs-aon/vmfs_thick.vmdk", Detected::VmdkDescriptor),
        (
            "vmdk-rs-aon/vmfs_thick-000001.vmdk",
            Detected::VmdkDescriptor,
        ),
    ] {
        let Some(path) = testdata(rel) else { return };
        let file = FileDisk::open(&path).unwrap();
        assert_eq!(detect(&file).unwrap(), want, "{rel}");
        if want.format() == Format::Vhd {
            continue; // read: see vdisk-format/tests/vhd.rs
        }
        if want.format() == Format::Vmdk {
            // VMDK is read: sparse files open; the descriptor-only ones
            // lack their extent files (vdisk-format/tests/vmdk.rs).
            let opened = vdisk_format::Image::open(&path);
            assert_eq!(opened.is_ok(), want == Detected::VmdkSparse, "{rel}");
            continue;
        }
        // Recognised, not read yet: an honest error naming the format.
        let err = vdisk_format::Image::open(&path).err().unwrap();
        assert_eq!(err.kind(), disk_io::ErrorKind::Unsupported, "{rel}");
        assert!(
            err.to_string().contains(want.format().name()),
            "{rel}: {err}"
        );
    }
}

/// (number, first LBA, sectors, type) of every partition, as the READMEs
/// of the shared test data describe them.
type Expected = &'static [(u32, u64, u64, &'static str)];

#[test]
fn partition_tables_list_what_their_readmes_describe() {
    const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    let cases: [(&str, &str, Expected, Option<&str>); 5] = [
        (
            "mbrman/disk1.img",
            "mbr",
            &[(1, 1, 1, "0x06"), (2, 3, 0, "0x0b")],
            None,
        ),
        (
            "mbrman/disk2.img",
            "mbr",
            &[
                (1, 1, 3, "0x83"),
                (2, 5, 15, "0x05"),
                (5, 6, 0, ""),
                (6, 8, 0, ""),
                (7, 11, 0, ""),
                (8, 15, 0, ""),
                (9, 17, 0, ""),
            ],
            None,
        ),
        (
            "gpt-crate/gpt-disk.img",
            "gpt",
            &[(1, 34, 1, LINUX), (2, 35, 4, LINUX)],
            None,
        ),
        (
            "ext4-fauxfaux/all-types-tiny.img",
            "mbr",
            &[(1, 1, 2047, "0x83")],
            Some("ext4"),
        ),
        (
            "plaso/tsk_volume_system.raw",
            "mbr",
            &[
                (1, 1, 350, "0x83"),
                (2, 351, 2529, "0x05"),
                (5, 352, 2528, ""),
            ],
            Some("ext2"),
        ),
    ];
    for (rel, kind, want, fs) in cases {
        let Some(path) = testdata(rel) else { return };
        let image = image_convert::open_source(&path, false).unwrap();
        let GuestContent::Table(table) = inspect(&image).unwrap() else {
            panic!("{rel}: no partition table");
        };
        assert_eq!(table.kind_name(), kind, "{rel}");
        assert!(table.warnings().is_empty(), "{rel}: {:?}", table.warnings());
        let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
        assert_eq!(
            numbers,
            want.iter().map(|w| w.0).collect::<Vec<_>>(),
            "{rel}"
        );
        for (p, &(number, lba, sectors, kind)) in table.partitions.iter().zip(want) {
            assert_eq!(p.start, lba * 512, "{rel} #{number}");
            if sectors != 0 {
                assert_eq!(p.size, sectors * 512, "{rel} #{number}");
            }
            if !kind.is_empty() {
                assert_eq!(p.kind.to_string(), kind, "{rel} #{number}");
            }
        }
        // The file system the README names is in the last partition.
        if let Some(fs) = fs {
            let p = table.partitions.last().unwrap();
            let window = disk_io::Window::new(&image, p.start, p.size).unwrap();
            assert_eq!(
                image_convert::probe_filesystem(&window)
                    .unwrap()
                    .map(|f| f.name()),
                Some(fs),
                "{rel}"
            );
        }
    }
}

#[test]
fn windows_ntfs_disk_has_one_ntfs_partition() {
    let Some(gz) = testdata("ntfs-msuhanov/ntfs-lastaccess.sanitized.raw.gz") else {
        return;
    };
    if !test_support::have("gzip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    test_support::sh(&format!("gzip -dc '{}' > d.img", gz.display()), dir.path());
    let image = image_convert::open_source(&dir.path().join("d.img"), false).unwrap();
    let GuestContent::Table(table) = inspect(&image).unwrap() else {
        panic!("no table")
    };
    assert_eq!(table.kind_name(), "mbr");
    let [p] = table.partitions.as_slice() else {
        panic!("{:?}", table.partitions)
    };
    assert_eq!(
        (p.number, p.start, p.kind.to_string()),
        (1, 128 * 512, "0x07".to_owned())
    );
    let window = disk_io::Window::new(&image, p.start, p.size).unwrap();
    assert_eq!(
        image_convert::probe_filesystem(&window).unwrap(),
        Some(FileSystem::Ntfs)
    );
}

/// qcow2 images from other projects' test suites: read byte for byte as
/// qemu-img reads them, holding the file systems their READMEs name.
#[test]
fn shared_qcow2_images_read_like_qemu_img() {
    for (rel, version, fs) in [
        ("plaso/image.qcow2", 2, "ext2"),
        ("keramics/ext2.qcow2", 3, "ext2"),
        ("keramics/fat16.qcow2", 3, "fat16"),
        ("keramics/fat32.qcow2", 3, "fat32"),
    ] {
        let Some(path) = testdata(rel) else { return };
        assert_eq!(
            detect(&FileDisk::open(&path).unwrap()).unwrap(),
            Detected::Qcow { version },
            "{rel}"
        );
        let image = image_convert::open_source(&path, false).unwrap();
        let GuestContent::FileSystem(found) = inspect(&image).unwrap() else {
            panic!("{rel}: no file system")
        };
        assert_eq!(found.name(), fs, "{rel}");
        if !test_support::have("qemu-img") {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        test_support::sh(
            &format!("qemu-img convert -O raw '{}' ref.raw", path.display()),
            dir.path(),
        );
        let reference = std::fs::read(dir.path().join("ref.raw")).unwrap();
        let mut ours = vec![0u8; reference.len()];
        disk_io::ReadAt::read_at(&image, 0, &mut ours).unwrap();
        assert!(ours == reference, "{rel}: differs from qemu-img convert");
    }
}

#[test]
fn bare_volumes_are_inspected() {
    for (rel, content) in [
        (
            "fat-rust-fatfs/fat12.img",
            GuestContent::FileSystem(FileSystem::Fat(fs_fat::FatType::Fat12)),
        ),
        (
            "ntfs-colinfinck/testfs1",
            GuestContent::FileSystem(FileSystem::Ntfs),
        ),
    ] {
        let Some(path) = testdata(rel) else { return };
        assert_eq!(
            detect(&FileDisk::open(&path).unwrap()).unwrap(),
            Detected::Raw(RawContent::Other),
            "{rel}"
        );
        let image = image_convert::open_source(&path, false).unwrap();
        assert_eq!(image.format(), Format::Raw);
        assert_eq!(inspect(&image).unwrap(), content, "{rel}");
    }
}
