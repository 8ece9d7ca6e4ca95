//! Detection and inspection of the real-world images under
//! `../shared/testdata` (made by VMware, Windows, qemu-img, fdisk, mkfs).

use disk_io::FileDisk;
use image_convert::{FileSystem, GuestContent, TableKind, inspect};
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
        ("plaso/image.qcow2", Detected::Qcow { version: 2 }),
        ("keramics/ext2.qcow2", Detected::Qcow { version: 3 }),
        ("keramics/fat16.qcow2", Detected::Qcow { version: 3 }),
        ("keramics/fat32.qcow2", Detected::Qcow { version: 3 }),
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
        // Recognised, not read yet: an honest error naming the format.
        let err = vdisk_format::Image::open(&path).err().unwrap();
        assert_eq!(err.kind(), disk_io::ErrorKind::Unsupported, "{rel}");
        assert!(
            err.to_string().contains(want.format().name()),
            "{rel}: {err}"
        );
    }
}

#[test]
fn raw_disks_are_inspected() {
    for (rel, raw, content) in [
        (
            "mbrman/disk1.img",
            RawContent::Mbr,
            GuestContent::Table(TableKind::Mbr),
        ),
        (
            "mbrman/disk2.img",
            RawContent::Mbr,
            GuestContent::Table(TableKind::Mbr),
        ),
        (
            "plaso/tsk_volume_system.raw",
            RawContent::Mbr,
            GuestContent::Table(TableKind::Mbr),
        ),
        (
            "ext4-fauxfaux/all-types-tiny.img",
            RawContent::Mbr,
            GuestContent::Table(TableKind::Mbr),
        ),
        (
            "gpt-crate/gpt-disk.img",
            RawContent::Gpt { sector_size: 512 },
            GuestContent::Table(TableKind::Gpt { sector_size: 512 }),
        ),
        (
            "fat-rust-fatfs/fat12.img",
            RawContent::Other,
            GuestContent::FileSystem(FileSystem::Fat(fs_fat::FatType::Fat12)),
        ),
        (
            "ntfs-colinfinck/testfs1",
            RawContent::Other,
            GuestContent::FileSystem(FileSystem::Ntfs),
        ),
    ] {
        let Some(path) = testdata(rel) else { return };
        let file = FileDisk::open(&path).unwrap();
        assert_eq!(detect(&file).unwrap(), Detected::Raw(raw), "{rel}");
        let (image, got) = image_convert::open_source(&path, false).unwrap();
        assert_eq!(image.format(), Format::Raw);
        assert_eq!(got, content, "{rel}");
        assert_eq!(inspect(&file).unwrap(), content, "{rel}");
    }
}
