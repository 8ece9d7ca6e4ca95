//! ext through the `Volume` interface: images inside containers and
//! partitions (qcow2, MBR primary and logical), compared with fls/icat.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use disk_io::FileDisk;
use image_convert::volume::{Entry, EntryKind, SharedDisk, Volume, open_filesystem, resolve, walk};
use test_support::{have_all, sh, testdata};

fn listing(volume: &dyn Volume) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let root = volume.root().unwrap();
    walk(volume, &root, "", &mut |path, e| {
        out.insert(path.to_string(), e.clone());
        Ok(())
    })
    .unwrap();
    out
}

fn read_all(volume: &dyn Volume, e: &Entry) -> Vec<u8> {
    let mut data = vec![0u8; e.size as usize];
    let mut done = 0;
    while done < data.len() {
        let n = volume
            .read(e, None, done as u64, &mut data[done..])
            .unwrap();
        assert!(n > 0);
        done += n;
    }
    data
}

/// `fls -r` (allocated entries) against the volume listing; regular files
/// against icat. `img` is the raw file fls reads, `sectors` the partition start.
fn cross_check(volume: &dyn Volume, img: &Path, sectors: u64) {
    let ours = listing(volume);
    let fls = sh(
        &format!("fls -r -p -o {sectors} '{}'", img.display()),
        Path::new("/"),
    );
    let theirs: BTreeMap<String, u64> = fls
        .lines()
        .filter(|l| !l.contains(" * ") && !l.contains("$OrphanFiles"))
        .filter_map(|l| {
            let (head, path) = l.split_once(":\t")?;
            Some((format!("/{path}"), head.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let ours_ino: BTreeMap<String, u64> = ours.iter().map(|(p, e)| (p.clone(), e.inode)).collect();
    assert_eq!(ours_ino, theirs);
    for (path, e) in &ours {
        if e.kind != EntryKind::File || e.size > 1 << 20 {
            continue;
        }
        let out = std::process::Command::new("icat")
            .args(["-o", &sectors.to_string()])
            .arg(img)
            .arg(e.inode.to_string())
            .output()
            .unwrap();
        if out.status.success() {
            assert_eq!(read_all(volume, e), out.stdout, "{path}");
        }
    }
}

#[test]
fn fauxfaux_partition_1() {
    if !have_all(&["fls", "icat"]) {
        return;
    }
    let Some(img) = testdata("ext4-fauxfaux/all-types-tiny.img") else {
        return;
    };
    let disk: SharedDisk = Arc::new(FileDisk::open(&img).unwrap());
    let volume = open_filesystem(disk, Some(1)).unwrap();
    assert_eq!(volume.fs_name(), "ext4");
    cross_check(&*volume, &img, 1);
    let all = listing(&*volume);
    assert!(all.contains_key("/lost+found"));
    let link = &all["/nonsense-symlink-file"];
    assert_eq!(link.kind, EntryKind::Symlink);
    assert_eq!(link.size, link.target.as_ref().unwrap().len() as u64);
    assert_eq!(all["/hardlink-file"].inode, all["/sparse-file"].inode);
    assert_eq!(all["/fifo-file"].kind, EntryKind::Other);
    let xattrs = &all["/multiple-xattrs"].xattrs;
    let names: Vec<&str> = xattrs.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"system.posix_acl_access"), "{names:?}");
    assert!(names.contains(&"security.capability"), "{names:?}");
    let e = resolve(&*volume, "/home/faux/hello.txt").unwrap();
    assert_eq!(e.mode.unwrap() & 0o170000, 0o100000);
}

#[test]
fn plaso_logical_partition_5() {
    if !have_all(&["fls", "icat"]) {
        return;
    }
    let Some(img) = testdata("plaso/tsk_volume_system.raw") else {
        return;
    };
    let disk: SharedDisk = Arc::new(FileDisk::open(&img).unwrap());
    let volume = open_filesystem(disk, Some(5)).unwrap();
    assert_eq!(volume.fs_name(), "ext2");
    cross_check(&*volume, &img, 352);
}

#[test]
fn keramics_ext2_in_qcow2() {
    if !have_all(&["qemu-img", "fls", "icat"]) {
        return;
    }
    let Some(img) = testdata("keramics/ext2.qcow2") else {
        return;
    };
    let disk: SharedDisk = Arc::new(vdisk_format::Image::open(&img).unwrap());
    let volume = open_filesystem(disk, None).unwrap();
    assert_eq!(volume.fs_name(), "ext2");
    assert_eq!(volume.label().as_deref(), Some("ext2_test"));
    // The Sleuth Kit reads the raw conversion.
    let dir = tempfile::tempdir().unwrap();
    sh(
        &format!("qemu-img convert -O raw '{}' raw.img", img.display()),
        dir.path(),
    );
    cross_check(&*volume, &dir.path().join("raw.img"), 0);
    let all = listing(&*volume);
    let f = &all["/testdir1/testfile1"];
    assert_eq!(read_all(&*volume, f), b"Keramics\n");
}
