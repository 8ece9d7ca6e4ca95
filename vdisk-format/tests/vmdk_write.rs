//! The VMDK writer against qemu: every subformat it makes passes
//! `qemu-img check`, reads back equal to its source through qemu-img,
//! takes no more space than qemu-img's own conversion (+1%), and chains
//! cross between the two tools in both directions; `commit` and `rebase`
//! give what qemu-img gives.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

use disk_io::{Allocation, FileDisk, ReadAt, WriteAt, extents};
use test_support::{Rng, have_all, sh};
use vdisk_format::{CreateOptions, Format, Image, create_output, create_with};

fn opts(s: &str) -> CreateOptions {
    CreateOptions::parse(&[s.to_string()]).unwrap()
}

/// A sparse raw source of `size` bytes with scattered pieces of random
/// data, text, a repeated byte and zeros, some not grain aligned.
fn make_source(path: &Path, size: u64, seed: u64) {
    let disk = FileDisk::create(path, size).unwrap();
    let mut rng = Rng(seed);
    let text: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| b"the quick brown fox jumps over a lazy dog\n"[(i % 42) as usize])
        .collect();
    for i in 0..24u64 {
        let len = 4096 + rng.below(600 << 10);
        let at = rng.below(size - len) & !511;
        let data = match i % 4 {
            0 => rng.bytes(len as usize),
            1 => text[..len as usize].to_vec(),
            2 => vec![(i + 1) as u8; len as usize],
            _ => vec![0u8; len as usize],
        };
        disk.write_at(at, &data).unwrap();
    }
    // A partition table, so that the content is recognised as a disk.
    disk.write_at(510, &[0x55, 0xaa]).unwrap();
}

/// Copies `src` into a new image at `dst` as `vdisk convert` does: data
/// runs only, front to back, then finish.
fn copy(src: &Path, dst: &Path, format: Format, options: &str) {
    let image = Image::open(src).unwrap();
    let out = create_output(dst, format, image.size(), &opts(options)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for run in extents(&image, 0, image.size()) {
        let run = run.unwrap();
        if run.state != Allocation::Data {
            continue;
        }
        let mut at = run.offset;
        while at < run.end() {
            let n = (run.end() - at).min(buf.len() as u64) as usize;
            image.read_at(at, &mut buf[..n]).unwrap();
            if buf[..n].iter().any(|&b| b != 0) {
                out.disk.write_at(at, &buf[..n]).unwrap();
            }
            at += n as u64;
        }
    }
    out.finish().unwrap();
    out.disk.flush().unwrap();
}

fn qemu_check(dir: &Path, name: &str) {
    let out = Command::new("qemu-img")
        .args(["check", name])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img check {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_compare(dir: &Path, a: &str, b: &str) {
    let out = Command::new("qemu-img")
        .args(["compare", a, b])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img compare {a} {b}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn info(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&sh(&format!("qemu-img info --output=json {name}"), dir)).unwrap()
}

/// Bytes allocated by the files of a disk named `name` (its extents too).
fn allocated(dir: &Path, name: &str) -> u64 {
    let stem = name.strip_suffix(".vmdk").unwrap();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let n = e.file_name().into_string().unwrap();
            n == name || (n.starts_with(&format!("{stem}-")) && n.ends_with(".vmdk"))
        })
        .map(|e| {
            use std::os::unix::fs::MetadataExt;
            e.metadata().unwrap().blocks() * 512
        })
        .sum()
}

#[test]
fn every_subformat_copies_like_qemu_img() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 48 << 20;
    make_source(&d.join("src.raw"), size, 7);
    for sub in [
        "monolithicSparse",
        "streamOptimized",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
    ] {
        let ours = format!("v-{sub}.vmdk");
        let theirs = format!("q-{sub}.vmdk");
        copy(
            &d.join("src.raw"),
            &d.join(&ours),
            Format::Vmdk,
            &format!("subformat={sub}"),
        );
        sh(
            &format!("qemu-img convert -f raw -O vmdk -o subformat={sub} src.raw {theirs}"),
            d,
        );
        qemu_check(d, &ours);
        qemu_compare(d, "src.raw", &ours);
        let i = info(d, &ours);
        assert_eq!(i["format"], "vmdk", "{sub}");
        assert_eq!(i["virtual-size"], size, "{sub}");
        assert_eq!(i["format-specific"]["data"]["create-type"], sub, "{sub}");
        let (a, b) = (allocated(d, &ours), allocated(d, &theirs));
        assert!(
            a <= b + b / 100,
            "{sub}: {a} bytes allocated, qemu-img's conversion {b}"
        );
        // Our reader agrees.
        let back = Image::open(d.join(&ours)).unwrap();
        let src = FileDisk::open(d.join("src.raw")).unwrap();
        let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        for at in (0..size).step_by(1 << 20) {
            back.read_at(at, &mut x).unwrap();
            src.read_at(at, &mut y).unwrap();
            assert!(x == y, "{sub}: differs in MiB at {at:#x}");
        }
    }
}

#[test]
fn stream_is_laid_out_as_vmware_expects() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_source(&d.join("src.raw"), 16 << 20, 3);
    copy(
        &d.join("src.raw"),
        &d.join("s.vmdk"),
        Format::Vmdk,
        "subformat=streamOptimized",
    );
    let f = std::fs::read(d.join("s.vmdk")).unwrap();
    let le32 = |at: usize| u32::from_le_bytes(f[at..at + 4].try_into().unwrap());
    let le64 = |at: usize| u64::from_le_bytes(f[at..at + 8].try_into().unwrap());
    assert_eq!(&f[..4], b"KDMV");
    assert_eq!(le32(4), 3, "version");
    assert_eq!(le32(8) & 0x30000, 0x30000, "compressed and markers flags");
    assert_eq!(le64(56), u64::MAX, "header gdOffset is GD_AT_END");
    assert_eq!(u16::from_le_bytes([f[77], f[78]]), 1, "deflate");
    let n = f.len();
    assert_eq!(n % 512, 0);
    // Footer marker, footer, end-of-stream marker.
    assert_eq!((le64(n - 1536), le32(n - 1528), le32(n - 1524)), (1, 0, 3));
    assert_eq!(&f[n - 1024..n - 1020], b"KDMV");
    let gd = le64(n - 1024 + 56);
    assert!(gd > 128 && gd * 512 < n as u64, "footer names the GD");
    // The GD marker right before the directory.
    let m = (gd as usize - 1) * 512;
    assert_eq!((le32(m + 8), le32(m + 12)), (0, 2));
    assert!(f[n - 512..].iter().all(|&b| b == 0));
    // The first grain: its marker, a zlib stream.
    let g = 128 * 512;
    assert_eq!(le64(g), 0);
    assert!(le32(g + 8) > 0);
    assert_eq!(f[g + 12], 0x78);
}

/// Random writes, zeroes and discards mirrored in a model.
fn random_ops(image: &dyn WriteAt, model: &mut [u8], rng: &mut Rng, ops: usize, max_len: u64) {
    let size = model.len() as u64;
    for i in 0..ops {
        let len = 1 + rng.below(max_len);
        let off = rng.below(size - len.min(size));
        let len = len.min(size - off);
        let range = off as usize..(off + len) as usize;
        match rng.below(10) {
            0 => {
                image.write_zeroes(off, len).unwrap();
                model[range].fill(0);
            }
            1 => {
                // No parent: discarded bytes read as zeros.
                image.discard(off, len).unwrap();
                model[range].fill(0);
            }
            _ => {
                let data = rng.bytes(len as usize);
                image.write_at(off, &data).unwrap();
                model[range].copy_from_slice(&data);
            }
        }
        if i % 37 == 0 {
            image.flush().unwrap();
        }
    }
}

#[test]
fn random_writes_read_back_through_qemu() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (k, options) in [
        "subformat=monolithicSparse",
        "subformat=monolithicSparse,zeroed_grain=on",
        "subformat=twoGbMaxExtentSparse",
        "subformat=monolithicFlat",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("r{k}.vmdk");
        let size = 20 << 20;
        let mut model = vec![0u8; size as usize];
        let mut rng = Rng(99 + k as u64);
        {
            let img = create_with(d.join(&name), Format::Vmdk, size, &opts(options)).unwrap();
            random_ops(&*img, &mut model, &mut rng, 300, 200_000);
            img.flush().unwrap();
        }
        // Reopened: more of the same through open_rw.
        {
            let w = vdisk_format::open_rw(d.join(&name)).unwrap();
            random_ops(&*w.disk, &mut model, &mut rng, 100, 300_000);
            let mut back = vec![0u8; size as usize];
            w.disk.read_at(0, &mut back).unwrap();
            assert!(
                back == model,
                "{options}: writer reads differ from the model"
            );
            w.disk.flush().unwrap();
        }
        qemu_check(d, &name);
        let _ = std::fs::remove_file(d.join("guest.raw"));
        sh(&format!("qemu-img convert -O raw {name} guest.raw"), d);
        let guest = std::fs::read(d.join("guest.raw")).unwrap();
        let at = guest.iter().zip(&model).position(|(a, b)| a != b);
        assert!(at.is_none(), "{options}: qemu reads differ at {at:?}");
    }
}

#[test]
fn first_write_changes_the_cid() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.vmdk");
    drop(create_with(&p, Format::Vmdk, 1 << 20, &CreateOptions::new()).unwrap());
    let cid = || {
        vdisk_format::vmdk::read_descriptor(&FileDisk::open(&p).unwrap())
            .unwrap()
            .cid
    };
    let before = cid();
    let w = vdisk_format::open_rw(&p).unwrap();
    w.disk.read_at(0, &mut [0u8; 512]).unwrap();
    assert_eq!(cid(), before, "reading keeps the CID");
    w.disk.write_at(0, b"x").unwrap();
    let after = cid();
    assert_ne!(after, before);
    w.disk.write_at(1, b"y").unwrap();
    assert_eq!(cid(), after, "one new CID per opening");
}

#[test]
fn options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = [
        "subformat=nope",
        "adapter_type=floppy",
        "compat6=on,hwversion=7",
        "cluster_size=4k",
        "subformat=monolithicFlat,backing_file=x.vmdk",
    ];
    for (i, o) in bad.iter().enumerate() {
        assert!(
            create_with(
                d.join(format!("b{i}.vmdk")),
                Format::Vmdk,
                1 << 20,
                &opts(o)
            )
            .is_err(),
            "{o} accepted"
        );
    }
    drop(
        create_with(
            d.join("ok.vmdk"),
            Format::Vmdk,
            1 << 30,
            &opts("adapter_type=lsilogic,compat6=on"),
        )
        .unwrap(),
    );
    let text = String::from_utf8_lossy(&std::fs::read(d.join("ok.vmdk")).unwrap()[512..10752])
        .into_owned();
    assert!(text.contains("ddb.adapterType = \"lsilogic\""), "{text}");
    assert!(text.contains("ddb.virtualHWVersion = \"6\""), "{text}");
    assert!(text.contains("ddb.geometry.heads = \"255\""), "{text}");
}

/// A parent made by qemu-img with patterns, as a VMDK.
fn qemu_parent(d: &Path, name: &str, opts: &str) {
    sh(&format!("qemu-img create -q -f vmdk {opts} {name} 8M"), d);
    sh(
        &format!(
            "qemu-io -f vmdk -c 'write -P 0x11 0 8M' -c 'write -P 0x22 1M 64k' {name} >/dev/null"
        ),
        d,
    );
}

fn qemu_io_read(d: &Path, name: &str, pattern: u8, off: u64, len: u64) {
    let out = sh(
        &format!("qemu-io -r -c 'read -P {pattern} {off} {len}' {name}"),
        d,
    );
    assert!(
        !out.contains("Pattern verification failed"),
        "{name} {off}+{len} != {pattern:#x}: {out}"
    );
}

#[test]
fn vdisk_child_written_by_qemu_io() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (k, sub) in ["monolithicSparse", "twoGbMaxExtentSparse"]
        .iter()
        .enumerate()
    {
        let parent = format!("base{k}.vmdk");
        let child = format!("child{k}.vmdk");
        qemu_parent(d, &parent, "");
        {
            let c = create_with(
                d.join(&child),
                Format::Vmdk,
                8 << 20,
                &opts(&format!("subformat={sub},backing_file={parent}")),
            )
            .unwrap();
            // A partial grain through vdisk: the rest comes from the parent.
            c.write_at(3 << 20, &[0x44; 1000]).unwrap();
            c.flush().unwrap();
        }
        let i = info(d, &child);
        assert_eq!(i["backing-filename"], parent);
        assert_eq!(i["format-specific"]["data"]["create-type"], *sub);
        sh(
            &format!(
                "qemu-io -c 'write -P 0x33 100k 20k' -c 'write -P 0x55 6M 64k' {child} >/dev/null"
            ),
            d,
        );
        qemu_check(d, &child);
        qemu_io_read(d, &child, 0x11, 0, 100 << 10);
        qemu_io_read(d, &child, 0x33, 100 << 10, 20 << 10);
        qemu_io_read(d, &child, 0x11, 120 << 10, 8 << 10);
        qemu_io_read(d, &child, 0x22, 1 << 20, 64 << 10);
        qemu_io_read(d, &child, 0x44, 3 << 20, 1000);
        qemu_io_read(d, &child, 0x11, (3 << 20) + 1000, 60000);
        qemu_io_read(d, &child, 0x55, 6 << 20, 64 << 10);
        // The parent is untouched.
        qemu_io_read(d, &parent, 0x11, 100 << 10, 20 << 10);
        // And our reader sees what qemu wrote.
        let img = Image::open(d.join(&child)).unwrap();
        let mut b = vec![0u8; 20 << 10];
        img.read_at(100 << 10, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0x33));
    }
}

#[test]
fn qemu_child_written_by_vdisk() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (k, sub) in ["monolithicSparse", "twoGbMaxExtentSparse"]
        .iter()
        .enumerate()
    {
        let parent = format!("base{k}.vmdk");
        let child = format!("child{k}.vmdk");
        qemu_parent(d, &parent, "");
        sh(
            &format!("qemu-img create -q -f vmdk -o subformat={sub} -b {parent} -F vmdk {child}"),
            d,
        );
        sh(
            &format!("qemu-io -c 'write -P 0x66 100k 20k' {child} >/dev/null"),
            d,
        );
        {
            let w = vdisk_format::open_rw(d.join(&child)).unwrap();
            assert!(w.parent.is_some());
            w.disk.write_at(110 << 10, &[0x77; 4096]).unwrap();
            w.disk.write_at((2 << 20) + 5, &[0x78; 70000]).unwrap();
            w.disk.write_zeroes(5 << 20, 128 << 10).unwrap();
            w.disk.flush().unwrap();
        }
        qemu_check(d, &child);
        qemu_io_read(d, &child, 0x66, 100 << 10, 10 << 10);
        qemu_io_read(d, &child, 0x77, 110 << 10, 4096);
        qemu_io_read(d, &child, 0x66, (114 << 10) as u64, 6 << 10);
        qemu_io_read(d, &child, 0x11, 2 << 20, 5);
        qemu_io_read(d, &child, 0x78, (2 << 20) + 5, 70000);
        qemu_io_read(d, &child, 0x11, (2 << 20) + 70005, 1000);
        qemu_io_read(d, &child, 0, 5 << 20, 128 << 10);
        qemu_io_read(d, &child, 0x11, (5 << 20) + (128 << 10), 4096);
        qemu_io_read(d, &parent, 0x11, 5 << 20, 4096);
    }
}

/// A parent and a child with writes in both, made by qemu.
fn chain(d: &Path) {
    qemu_parent(d, "base.vmdk", "");
    sh(
        "qemu-img create -q -f vmdk -b base.vmdk -F vmdk child.vmdk",
        d,
    );
    sh(
        "qemu-io -c 'write -P 0x99 64k 200k' -c 'write -P 0x9a 7M 1k' -c 'write -z 2M 128k' child.vmdk >/dev/null",
        d,
    );
}

#[test]
fn commit_matches_qemu_img() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (v, q) = (dir.path().join("v"), dir.path().join("q"));
    for p in [&v, &q] {
        std::fs::create_dir(p).unwrap();
        chain(p);
    }
    sh("qemu-img convert -O raw child.vmdk before.raw", &v);
    sh("qemu-img commit -q child.vmdk", &q);
    let merged = vdisk_format::commit(v.join("child.vmdk")).unwrap();
    assert!(merged > 0);
    qemu_check(&v, "base.vmdk");
    qemu_check(&v, "child.vmdk");
    let out = Command::new("qemu-img")
        .arg("compare")
        .arg(v.join("base.vmdk"))
        .arg(q.join("base.vmdk"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    qemu_compare(&v, "before.raw", "base.vmdk");
    // The child is emptied, reads as its parent, and opens with our reader.
    qemu_compare(&v, "before.raw", "child.vmdk");
    let img = Image::open(v.join("child.vmdk")).unwrap();
    let own: u64 = extents(&img, 0, img.size())
        .map(|e| e.unwrap())
        .filter(|e| e.layer == 0 && e.state != Allocation::Unallocated)
        .map(|e| e.length)
        .sum();
    assert_eq!(own, 0, "the child still holds data after commit");
}

#[test]
fn rebase_keeps_the_guest() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    chain(d);
    qemu_parent(d, "other.vmdk", "");
    sh(
        "qemu-io -c 'write -P 0x5e 1M 300k' -c 'write -z 4M 64k' other.vmdk >/dev/null",
        d,
    );
    sh("qemu-img convert -O raw child.vmdk before.raw", d);
    vdisk_format::rebase(d.join("child.vmdk"), "other.vmdk").unwrap();
    qemu_check(d, "child.vmdk");
    let i = info(d, "child.vmdk");
    assert_eq!(i["backing-filename"], "other.vmdk");
    qemu_compare(d, "before.raw", "child.vmdk");
    // Our reader accepts the new link (parentCID matches).
    let img = Image::open(d.join("child.vmdk")).unwrap();
    assert_eq!(img.info().unwrap().backing_chain[0].path, "other.vmdk");
}

#[test]
fn damaged_disks_are_refused_or_written_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good.vmdk");
    {
        let w = create_with(&good, Format::Vmdk, 4 << 20, &CreateOptions::new()).unwrap();
        w.write_at(70_000, &[7u8; 100_000]).unwrap();
        w.flush().unwrap();
    }
    let bytes = std::fs::read(&good).unwrap();
    let mut rng = Rng(4242);
    for run in 0..200 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(8) {
            // Mostly the header, descriptor and directories.
            let at = if rng.below(4) == 0 {
                rng.below(b.len() as u64)
            } else {
                rng.below(16 << 10)
            } as usize;
            b[at] = rng.next() as u8;
        }
        let p = d.join(format!("bad{run}.vmdk"));
        std::fs::write(&p, &b).unwrap();
        if let Ok(w) = vdisk_format::open_rw(&p) {
            let size = w.disk.size();
            let _ = w.disk.write_at(rng.below(size.max(1)), &[1u8; 3000]);
            let _ = w.disk.discard(0, size.min(1 << 20));
            let _ = w.disk.write_zeroes(0, size.min(100_000));
            let mut buf = vec![0u8; 8192];
            let _ = w.disk.read_at(0, &mut buf);
            let _ = w.disk.flush();
        }
        std::fs::remove_file(&p).unwrap();
    }
}
