//! Logical conversion of disks holding FAT: the layout is kept (rescaled
//! for another size), each FAT partition is formatted afresh with the same
//! type, label and serial and filled file by file; the result passes
//! `fsck.fat -n`, mtools reads every file back, and its manifest (names,
//! kinds, sizes, contents, times, attributes) equals the source's.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use disk_io::{FileDisk, ReadAt};
use image_convert::logical::{SharedWriteDisk, copy_logical};
use image_convert::volume::{SharedDisk, Volume, open_filesystem, walk};
use test_support::{have_all, sh};

/// Path → (kind, size, mtime, attrs, content) of every entry.
type Manifest = BTreeMap<String, (String, u64, Option<i64>, Vec<&'static str>, Vec<u8>)>;

fn manifest(vol: &dyn Volume) -> Manifest {
    let root = vol.root().unwrap();
    let mut out = Manifest::new();
    walk(vol, &root, "", &mut |path, e| {
        let mut data = vec![0u8; e.size as usize];
        if e.kind == image_convert::volume::EntryKind::File {
            let mut at = 0;
            while at < data.len() {
                let n = vol.read(e, None, at as u64, &mut data[at..])?;
                assert!(n > 0, "{path}: short read");
                at += n;
            }
        }
        let mut attrs = e.attrs.clone();
        attrs.sort();
        out.insert(
            path.to_string(),
            (e.kind.name().to_string(), e.size, e.mtime, attrs, data),
        );
        Ok(())
    })
    .unwrap();
    out
}

fn open(path: &Path, part: Option<u32>) -> Box<dyn Volume> {
    let disk: SharedDisk = Arc::new(FileDisk::open(path).unwrap());
    open_filesystem(disk, part).unwrap()
}

/// Converts `src` into a new raw file of `size` bytes at `dst`.
fn convert(
    src: &Path,
    dst: &Path,
    size: u64,
) -> disk_io::Result<image_convert::logical::LogicalReport> {
    let disk: SharedDisk = Arc::new(FileDisk::open(src).unwrap());
    let out: SharedWriteDisk = Arc::new(FileDisk::create(dst, size).unwrap());
    copy_logical(disk, out, None, &mut |_, _| {})
}

#[test]
fn fat_partitions_copied_file_by_file() {
    if !have_all(&["mkfs.fat", "mcopy", "sfdisk", "fsck.fat", "mdir"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An MBR disk: FAT16 (1 MiB .. 33 MiB) and FAT32 (34 MiB .. end).
    sh(
        "mkdir -p t/Sub/Deeper t/many && printf hello > t/hello.txt \
         && head -c 3000000 /dev/urandom > t/Sub/big.bin && : > t/Sub/empty \
         && printf x > 't/Sub/Deeper/A long name é and 日本語.txt' \
         && for i in $(seq 1 300); do printf $i > t/many/file-$i.dat; done \
         && truncate -s 100M src.img \
         && printf 'label: dos\\nlabel-id: 0x1234abcd\\n2048,65536,6\\n69632,,c\\n' | sfdisk -q src.img \
         && mkfs.fat -F 16 -n SIXTEEN -i 0badcafe --offset 2048 src.img 32768 >/dev/null \
         && mkfs.fat -F 32 -n THIRTYTWO -i 12345678 --offset 69632 src.img >/dev/null \
         && cd t && TZ=UTC LC_ALL=C.UTF-8 mcopy -s -m -i ../src.img@@1M * :: \
         && TZ=UTC LC_ALL=C.UTF-8 mcopy -s -m -i ../src.img@@34M * :: && cd .. \
         && mattrib -i src.img@@1M +r +h ::hello.txt",
        d,
    );
    let src = d.join("src.img");
    let want: Vec<Manifest> = [1, 2].map(|p| manifest(&*open(&src, Some(p)))).into();
    for (name, size) in [
        ("same", 100u64 << 20),
        ("grown", 150 << 20),
        ("shrunk", 80 << 20),
    ] {
        let dst = d.join(format!("{name}.img"));
        let report = convert(&src, &dst, size).unwrap();
        assert_eq!(report.table, Some("mbr"));
        assert!(report.units.iter().all(|u| u.logical), "{name}: {report:?}");
        let table = partition::read(&FileDisk::open(&dst).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(table.partitions.len(), 2, "{name}");
        assert_eq!(table.partitions[0].kind, partition::PartitionType::Mbr(6));
        assert_eq!(
            table.partitions[1].kind,
            partition::PartitionType::Mbr(0x0c)
        );
        for (i, p) in table.partitions.iter().enumerate() {
            let vol = open(&dst, Some(p.number));
            let label = ["SIXTEEN", "THIRTYTWO"][i];
            assert_eq!(vol.fs_name(), ["fat16", "fat32"][i], "{name}");
            assert_eq!(vol.label().as_deref(), Some(label), "{name}");
            assert_eq!(
                vol.identity().serial,
                Some([0x0bad_cafe, 0x1234_5678][i]),
                "{name}"
            );
            let got = manifest(&*vol);
            assert_eq!(got.len(), want[i].len(), "{name} partition {}", p.number);
            for (path, entry) in &want[i] {
                assert_eq!(
                    got.get(path),
                    Some(entry),
                    "{name} partition {}: {path}",
                    p.number
                );
            }
            // The real tools agree.
            let part = d.join(format!("{name}-{}.part", p.number));
            sh(
                &format!(
                    "dd if={name}.img of={} bs=512 skip={} count={} status=none",
                    part.display(),
                    p.start / 512,
                    p.size / 512
                ),
                d,
            );
            let fsck = std::process::Command::new("fsck.fat")
                .arg("-n")
                .arg(&part)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&fsck.stdout);
            assert!(
                fsck.status.success() && text.lines().count() <= 3,
                "{name} partition {}: fsck.fat -n:\n{text}{}",
                p.number,
                String::from_utf8_lossy(&fsck.stderr)
            );
            let back = d.join(format!("back-{name}-{}", p.number));
            sh(
                &format!(
                    "mkdir {b} && LC_ALL=C.UTF-8 mcopy -s -n -i {} '::*' {b}/ && cmp {b}/Sub/big.bin t/Sub/big.bin \
                     && diff -r {b}/Sub t/Sub && diff -r {b}/many t/many",
                    part.display(),
                    b = back.display()
                ),
                d,
            );
        }
    }
    // Too small for the data: refused before anything is written.
    let dst = d.join("tiny.img");
    let err = convert(&src, &dst, 6 << 20).unwrap_err();
    assert!(err.to_string().contains("partition"), "{err}");
    let disk = FileDisk::open(&dst).unwrap();
    let mut head = vec![0u8; 1 << 20];
    disk.read_at(0, &mut head).unwrap();
    assert!(
        head.iter().all(|&b| b == 0),
        "something was written before the refusal"
    );
}
