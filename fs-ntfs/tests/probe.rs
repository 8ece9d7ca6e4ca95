//! The probe recognises volumes made by mkntfs (every cluster size) and by Windows.

use disk_io::{FileDisk, Window};
use fs_ntfs::probe;
use test_support::{have, sh, testdata};

#[test]
fn mkntfs_volumes() {
    if !have("mkntfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for cluster in [512, 4096, 65536, 2 << 20] {
        sh(
            &format!(
                "rm -f v.img && truncate -s 64M v.img && mkntfs -q -F -f -c {cluster} v.img >/dev/null 2>&1"
            ),
            dir.path(),
        );
        let disk = FileDisk::open(dir.path().join("v.img")).unwrap();
        assert!(probe(&disk).unwrap(), "cluster size {cluster}");
    }
}

#[test]
fn shared_ntfs_images() {
    if let Some(path) = testdata("ntfs-colinfinck/testfs1") {
        assert!(probe(&FileDisk::open(path).unwrap()).unwrap());
    }
    if let Some(path) = testdata("fat-rust-fatfs/fat12.img") {
        assert!(!probe(&FileDisk::open(path).unwrap()).unwrap());
    }
    // Windows 10's volume, in the first partition of an MBR disk (gzipped).
    let Some(path) = testdata("ntfs-msuhanov/ntfs-lastaccess.sanitized.raw.gz") else {
        return;
    };
    if !have("gzip") || !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    sh(
        &format!("gzip -dc '{}' > d.img", path.display()),
        dir.path(),
    );
    let start: u64 = sh(
        "sfdisk --json d.img | grep -o '\"start\": *[0-9]*' | head -1 | grep -o '[0-9]*$'",
        dir.path(),
    )
    .trim()
    .parse()
    .unwrap();
    let disk = FileDisk::open(dir.path().join("d.img")).unwrap();
    assert!(!probe(&disk).unwrap(), "the MBR is not a volume");
    let size = disk_io::ReadAt::size(&disk) - start * 512;
    let part = Window::new(&disk, start * 512, size).unwrap();
    assert!(probe(&part).unwrap());
}
