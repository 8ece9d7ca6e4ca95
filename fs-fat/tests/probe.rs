//! The FAT type the probe names equals what mkfs.fat was asked to make.

use disk_io::FileDisk;
use fs_fat::{FatType, probe};
use test_support::{have, sh, testdata};

#[test]
fn mkfs_fat_volumes() {
    if !have("mkfs.fat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (size, bits, want) in [
        ("1440K", 12, FatType::Fat12),
        ("40M", 16, FatType::Fat16),
        ("300M", 32, FatType::Fat32),
        ("64M", 0, FatType::Fat16), // mkfs.fat's own choice for 64 MiB
    ] {
        let name = format!("fat-{size}-{bits}.img");
        let flag = if bits == 0 {
            String::new()
        } else {
            format!("-F {bits}")
        };
        sh(
            &format!("truncate -s {size} {name} && mkfs.fat {flag} {name} >/dev/null"),
            dir.path(),
        );
        let disk = FileDisk::open(dir.path().join(&name)).unwrap();
        assert_eq!(probe(&disk).unwrap(), Some(want), "{name}");
    }
}

#[test]
fn shared_fat12_and_non_fat() {
    if let Some(path) = testdata("fat-rust-fatfs/fat12.img") {
        assert_eq!(
            probe(&FileDisk::open(path).unwrap()).unwrap(),
            Some(FatType::Fat12)
        );
    }
    if let Some(path) = testdata("ntfs-colinfinck/testfs1") {
        assert_eq!(probe(&FileDisk::open(path).unwrap()).unwrap(), None);
    }
    assert_eq!(probe(&[0u8; 100][..]).unwrap(), None);
}
