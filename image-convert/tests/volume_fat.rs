//! FAT volumes through the `Volume` interface: names, kinds, sizes,
//! contents, attributes and inodes, whole-disk and inside an MBR partition.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::sync::Arc;

use disk_io::FileDisk;
use image_convert::volume::{EntryKind, SharedDisk, open_filesystem, resolve, walk};
use test_support::{have_all, sh};

fn read_all(vol: &dyn image_convert::volume::Volume, e: &image_convert::volume::Entry) -> Vec<u8> {
    let mut out = vec![0u8; e.size as usize];
    let mut at = 0;
    while at < out.len() {
        let n = vol.read(e, None, at as u64, &mut out[at..]).unwrap();
        assert!(n > 0);
        at += n;
    }
    out
}

#[test]
fn fat_volumes_through_the_interface() {
    if !have_all(&["mkfs.fat", "mcopy", "mattrib", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    sh(
        "mkdir -p t/Sub/Deeper && printf hello > t/hello.txt && head -c 300000 /dev/urandom > t/Sub/big.bin \
         && : > t/Sub/empty && : > t/Sub/empty2 && printf x > 't/Sub/Deeper/A long name é.txt' \
         && mkfs.fat -F 32 -n LABEL32 -C whole.img 65536 >/dev/null \
         && cd t && TZ=UTC LC_ALL=C.UTF-8 mcopy -s -m -i ../whole.img * :: && cd .. \
         && mattrib -i whole.img +r +h ::hello.txt \
         && truncate -s 40M part.img && printf 'label: dos\\n2048,,6\\n' | sfdisk -q part.img \
         && mkfs.fat -F 16 --offset 2048 part.img >/dev/null \
         && cd t && TZ=UTC LC_ALL=C.UTF-8 mcopy -s -m -i ../part.img@@1M * :: ",
        dir.path(),
    );
    for (image, part, fs) in [("whole.img", None, "fat32"), ("part.img", Some(1), "fat16")] {
        let disk: SharedDisk = Arc::new(FileDisk::open(dir.path().join(image)).unwrap());
        let vol = open_filesystem(disk, part).unwrap();
        assert_eq!(vol.fs_name(), fs);
        if part.is_none() {
            assert_eq!(vol.label().as_deref(), Some("LABEL32"));
        }
        let root = vol.root().unwrap();
        let mut seen = BTreeMap::new();
        walk(&*vol, &root, "", &mut |path, e| {
            assert!(e.mode.is_none() && e.uid.is_none() && e.nlink.is_none());
            assert!(e.mtime.is_some(), "{path}");
            seen.insert(path.to_string(), e.clone());
            Ok(())
        })
        .unwrap();
        let names: Vec<_> = seen.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "/Sub",
                "/Sub/Deeper",
                "/Sub/Deeper/A long name é.txt",
                "/Sub/big.bin",
                "/Sub/empty",
                "/Sub/empty2",
                "/hello.txt"
            ]
        );
        // Inodes are unique, also for the two empty files without clusters.
        let mut inodes: Vec<u64> = seen.values().map(|e| e.inode).collect();
        inodes.sort();
        inodes.dedup();
        assert_eq!(inodes.len(), seen.len());
        assert_eq!(seen["/Sub"].kind, EntryKind::Dir);
        assert_eq!(seen["/Sub"].size, 0);
        let big = &seen["/Sub/big.bin"];
        assert_eq!(
            read_all(&*vol, big),
            std::fs::read(dir.path().join("t/Sub/big.bin")).unwrap()
        );
        let hello = resolve(&*vol, "/HELLO.TXT").unwrap();
        assert_eq!(read_all(&*vol, &hello), b"hello");
        if part.is_none() {
            assert_eq!(hello.attrs, ["readonly", "hidden", "archive"]);
        }
        let deep = resolve(&*vol, "/sub/deeper/a LONG name É.txt").unwrap();
        assert_eq!(deep.name, "A long name é.txt");
        assert!(vol.read(&deep, Some("ads"), 0, &mut [0u8; 4]).is_err());
        assert!(vol.list(&deep).is_err());
    }
}
