//! The generation the probe names equals what mke2fs made, and what blkid says.

use disk_io::FileDisk;
use fs_ext::{ExtVersion, probe};
use test_support::{have, sh, testdata};

#[test]
fn mke2fs_volumes() {
    if !have("mke2fs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        ("-t ext2", ExtVersion::Ext2),
        ("-t ext3", ExtVersion::Ext3),
        ("-t ext4", ExtVersion::Ext4),
        ("-t ext4 -O ^64bit,^metadata_csum", ExtVersion::Ext4),
        ("-t ext2 -b 1024", ExtVersion::Ext2),
    ] {
        sh(
            &format!("rm -f v.img && truncate -s 16M v.img && mke2fs -q -F {args} v.img"),
            dir.path(),
        );
        let disk = FileDisk::open(dir.path().join("v.img")).unwrap();
        assert_eq!(probe(&disk).unwrap(), Some(want), "{args}");
    }
    // An external journal device holds no files: not a file system to read.
    sh(
        "rm -f v.img && truncate -s 16M v.img && mke2fs -q -F -O journal_dev v.img",
        dir.path(),
    );
    assert_eq!(
        probe(&FileDisk::open(dir.path().join("v.img")).unwrap()).unwrap(),
        None
    );
}

#[test]
fn shared_ext_images() {
    if let Some(path) = testdata("fat-rust-fatfs/fat12.img") {
        assert_eq!(probe(&FileDisk::open(path).unwrap()).unwrap(), None);
    }
    if !have("zstd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, want) in [
        ("test_disk_ext2.bin.zst", ExtVersion::Ext2),
        ("test_disk_ext3.bin.zst", ExtVersion::Ext3),
        ("test_disk1.bin.zst", ExtVersion::Ext4),
    ] {
        let Some(path) = testdata(&format!("ext4-view/{name}")) else {
            return;
        };
        sh(
            &format!("zstd -q -d -f -o v.img '{}'", path.display()),
            dir.path(),
        );
        let disk = FileDisk::open(dir.path().join("v.img")).unwrap();
        assert_eq!(probe(&disk).unwrap(), Some(want), "{name}");
    }
}
