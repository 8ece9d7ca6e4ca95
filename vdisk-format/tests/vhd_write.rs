//! The VHD writer against qemu (`-f vpc` always: qemu probes a fixed VHD
//! as raw). qemu-img has no consistency check for vpc (`qemu-img check`
//! says the format does not support checks), so images are checked by
//! vdisk's own check and by reading them back through qemu: conversions
//! equal their source (`qemu-img compare`), sizes are qemu-img's for the
//! same options, allocation at most qemu-img's plus 1%; random writes,
//! zeroes and discards read back as a model of the guest; differencing
//! disks made and written by vdisk read as expected, commit and rebase
//! keep the guest.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

use disk_io::{ReadAt, WriteAt};
use test_support::{Rng, have_all, sh};
use vdisk_format::{CreateOptions, Format, Image, create_with, open_rw};

fn opts(s: &str) -> CreateOptions {
    CreateOptions::parse(&[s.to_string()]).unwrap()
}

fn info(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&sh(
        &format!("qemu-img info -f vpc --output=json {name}"),
        dir,
    ))
    .unwrap()
}

/// The guest as qemu-img reads it.
fn qemu_guest(dir: &Path, name: &str) -> Vec<u8> {
    let _ = std::fs::remove_file(dir.join("guest.raw"));
    sh(
        &format!("qemu-img convert -f vpc -O raw {name} guest.raw"),
        dir,
    );
    std::fs::read(dir.join("guest.raw")).unwrap()
}

/// The guest as vdisk reads it (through its chain).
fn our_guest(path: &Path) -> Vec<u8> {
    let image = Image::open(path).unwrap();
    let mut v = vec![0u8; image.size() as usize];
    image.read_at(0, &mut v).unwrap();
    v
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// vdisk's check finds nothing; qemu-img's says vpc has no check (exit
/// 63) or finds nothing.
fn assert_clean(dir: &Path, name: &str) {
    let report = vdisk_format::check(dir.join(name)).unwrap();
    assert!(report.is_clean(), "vdisk check {name}: {report:?}");
    let out = Command::new("qemu-img")
        .args(["check", "-f", "vpc", name])
        .current_dir(dir)
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 63,
        "qemu-img check {name}: {code} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A sparse raw source: random 4 KiB..1 MiB pieces over `size` bytes.
fn make_source(path: &Path, size: u64, seed: u64) {
    let f = disk_io::FileDisk::create(path, size).unwrap();
    let mut rng = Rng(seed);
    for _ in 0..40 {
        let len = 4096 * (1 + rng.below(256));
        let at = rng.below(size - len) / 512 * 512 + rng.below(2) * 7;
        let at = at.min(size - len);
        f.write_at(at, &rng.bytes(len as usize)).unwrap();
    }
    // A piece across the end.
    f.write_at(size - 3000, &rng.bytes(3000)).unwrap();
}

/// Copies `src` into `dst` as a conversion does: the non-zero 4 KiB
/// blocks, in 1 MiB reads.
fn copy(src: &dyn ReadAt, dst: &dyn WriteAt) {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < src.size() {
        let n = (src.size() - at).min(1 << 20) as usize;
        src.read_at(at, &mut buf[..n]).unwrap();
        let mut i = 0;
        while i < n {
            let j = (i + 4096).min(n);
            if buf[i..j].iter().any(|&b| b != 0) {
                let mut k = j;
                while k < n && buf[k..(k + 4096).min(n)].iter().any(|&b| b != 0) {
                    k = (k + 4096).min(n);
                }
                dst.write_at(at + i as u64, &buf[i..k]).unwrap();
                i = k;
            } else {
                i = j;
            }
        }
        at += n as u64;
    }
}

/// Converts a raw source with vdisk and with qemu-img under the same
/// options; both read back equal to the source, with the same virtual
/// size, and vdisk's allocates at most qemu-img's plus 1%.
#[test]
fn conversions_match_qemu() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, size) in [(16u64 << 20) + 4096, 40 << 20].into_iter().enumerate() {
        let src = d.join(format!("src{i}.raw"));
        make_source(&src, size, 10 + i as u64);
        let source = disk_io::FileDisk::open(&src).unwrap();
        for o in [
            "",
            "subformat=dynamic,force_size=on",
            "subformat=fixed",
            "subformat=fixed,force_size=on",
        ] {
            let ours = format!("ours{i}.vhd");
            let theirs = format!("theirs{i}.vhd");
            let _ = std::fs::remove_file(d.join(&ours));
            let _ = std::fs::remove_file(d.join(&theirs));
            let out =
                vdisk_format::create_output(d.join(&ours), Format::Vhd, size, &opts(o)).unwrap();
            copy(&source, &*out.disk);
            out.finish().unwrap();
            out.disk.flush().unwrap();
            drop(out);
            let oo = if o.is_empty() {
                String::new()
            } else {
                format!("-o {o}")
            };
            sh(
                &format!("qemu-img convert -f raw -O vpc {oo} src{i}.raw {theirs}"),
                d,
            );
            assert_clean(d, &ours);
            let (a, b) = (info(d, &ours), info(d, &theirs));
            assert_eq!(a["virtual-size"], b["virtual-size"], "{o} {size}");
            if o.contains("force_size") {
                assert_eq!(a["virtual-size"], size, "{o}");
            }
            sh(
                &format!("qemu-img compare -f raw -F vpc src{i}.raw {ours}"),
                d,
            );
            sh(
                &format!("qemu-img compare -f vpc -F vpc {theirs} {ours}"),
                d,
            );
            let (ua, ub) = (du(&d.join(&ours)), du(&d.join(&theirs)));
            assert!(
                ua <= ub + ub / 100,
                "{o} {size}: vdisk allocates {ua} bytes, qemu-img {ub}"
            );
            // vdisk's reader agrees, and says dynamic or fixed.
            let img = Image::open(d.join(&ours)).unwrap();
            let want = if o.contains("fixed") {
                "fixed"
            } else {
                "dynamic"
            };
            assert_eq!(img.info().unwrap().subformat.as_deref(), Some(want));
            let mut whole = vec![0u8; size as usize];
            img.read_at(0, &mut whole).unwrap();
            let mut orig = vec![0u8; size as usize];
            source.read_at(0, &mut orig).unwrap();
            assert_eq!(first_difference(&whole, &orig), None, "{o}: vdisk read");
        }
    }
}

/// Virtual sizes of new images are qemu-img's for the same size and
/// options, across the CHS geometry's steps.
#[test]
fn sizes_match_qemu() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sizes: [u64; 12] = [
        512,
        1 << 20,
        (10 << 20) + 512,
        (127 << 20) + 7,
        1 << 30,
        (4 << 30) + (3 << 20),
        31 << 30,
        (65535 * 16 * 63 * 512) - 512,
        100 << 30,
        (65535u64 * 16 * 255 * 512) - 4096,
        (65535u64 * 16 * 255 * 512) + (1 << 20),
        2040 << 30,
    ];
    for size in sizes {
        for force in ["off", "on"] {
            let o = format!("force_size={force}");
            sh(
                &format!("qemu-img create -q -f vpc -o {o} theirs.vhd {size}"),
                d,
            );
            let w = create_with(d.join("ours.vhd"), Format::Vhd, size, &opts(&o)).unwrap();
            w.flush().unwrap();
            drop(w);
            let (a, b) = (info(d, "ours.vhd"), info(d, "theirs.vhd"));
            assert_eq!(a["virtual-size"], b["virtual-size"], "{size} {o}");
            assert_eq!(
                Image::open(d.join("ours.vhd")).unwrap().size(),
                b["virtual-size"].as_u64().unwrap(),
                "{size} {o}: vdisk reader"
            );
            std::fs::remove_file(d.join("ours.vhd")).unwrap();
            std::fs::remove_file(d.join("theirs.vhd")).unwrap();
        }
    }
    assert!(create_with(d.join("big.vhd"), Format::Vhd, 2041 << 30, &opts("")).is_err());
}

/// Seeded random writes, zeroes and discards, mirrored in a model (where
/// a discarded range reads from `parent`, zeros without one).
fn random_ops(
    image: &dyn WriteAt,
    model: &mut [u8],
    parent: Option<&[u8]>,
    rng: &mut Rng,
    ops: usize,
    max_len: u64,
) {
    let size = model.len() as u64;
    for i in 0..ops {
        let len = 1 + rng.below(max_len);
        let off = rng.below(size - len.min(size));
        let len = len.min(size - off);
        let range = off as usize..(off + len) as usize;
        match rng.below(10) {
            0 | 1 => {
                image.write_zeroes(off, len).unwrap();
                model[range].fill(0);
            }
            2 => {
                image.discard(off, len).unwrap();
                match parent {
                    Some(p) => model[range.clone()].copy_from_slice(&p[range]),
                    None => model[range].fill(0),
                }
            }
            _ => {
                // A byte per write, varied per sector: cheap, and a write
                // landing elsewhere shows.
                let byte = (i % 251 + 1) as u8;
                let mut data = vec![byte; len as usize];
                for (k, sector) in data.chunks_mut(512).enumerate() {
                    sector[0] ^= k as u8;
                }
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
fn random_writes_read_back() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (o, seed) in [("", 1), ("subformat=fixed", 2), ("force_size=on", 3)] {
        let path = d.join("w.vhd");
        let _ = std::fs::remove_file(&path);
        let size = 16u64 << 20;
        let image = create_with(&path, Format::Vhd, size, &opts(o)).unwrap();
        let mut model = vec![0u8; image.size() as usize];
        let mut rng = Rng(seed);
        random_ops(&*image, &mut model, None, &mut rng, 100, 2_500_000);
        let mut back = vec![0u8; model.len()];
        image.read_at(0, &mut back).unwrap();
        assert_eq!(first_difference(&back, &model), None, "{o}: own read");
        drop(image);
        assert_clean(d, "w.vhd");
        // Reopened: more of them over what is there.
        {
            let w = open_rw(&path).unwrap();
            random_ops(&*w.disk, &mut model, None, &mut rng, 60, 1_000_000);
            w.disk.flush().unwrap();
        }
        assert_clean(d, "w.vhd");
        assert_eq!(
            first_difference(&qemu_guest(d, "w.vhd"), &model),
            None,
            "{o}: qemu read"
        );
        assert_eq!(
            first_difference(&our_guest(&path), &model),
            None,
            "{o}: vdisk read"
        );
    }
}

/// Images of either tool written by the other: qemu-io writes into a
/// dynamic disk vdisk made and wrote, vdisk writes into one qemu-img made
/// and qemu-io wrote.
#[test]
fn each_tool_writes_the_others_images() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 20u64 << 20;
    // vdisk's, then qemu-io's writes.
    let w = create_with(d.join("a.vhd"), Format::Vhd, size, &opts("")).unwrap();
    let vsize = w.size() as usize;
    w.write_at(1000, &[0x11; 5000]).unwrap();
    w.write_at((5 << 20) - 100, &[0x22; 300]).unwrap();
    drop(w);
    sh(
        "qemu-io -f vpc -c 'write -P 0x33 2000 1000' -c 'write -P 0x44 8M 64k' a.vhd >/dev/null",
        d,
    );
    let mut model = vec![0u8; vsize];
    model[1000..6000].fill(0x11);
    model[(5 << 20) - 100..(5 << 20) + 200].fill(0x22);
    model[2000..3000].fill(0x33);
    model[8 << 20..(8 << 20) + 65536].fill(0x44);
    assert_clean(d, "a.vhd");
    assert_eq!(first_difference(&qemu_guest(d, "a.vhd"), &model), None);
    assert_eq!(first_difference(&our_guest(&d.join("a.vhd")), &model), None);
    // qemu's, then vdisk's writes.
    for sub in ["dynamic", "fixed"] {
        sh(
            &format!("qemu-img create -q -f vpc -o subformat={sub} b.vhd 20M"),
            d,
        );
        sh(
            "qemu-io -f vpc -c 'write -P 0x55 0 3M' -c 'write -P 0x66 10M 4k' b.vhd >/dev/null",
            d,
        );
        {
            let w = open_rw(d.join("b.vhd")).unwrap();
            w.disk.write_at(100, &[0x77; 1000]).unwrap();
            w.disk.write_at((3 << 20) - 10, &[0x78; 20]).unwrap();
            w.disk.write_at(15 << 20, &[0x79; 70000]).unwrap();
            w.disk.write_zeroes(10 << 20, 100).unwrap();
            w.disk.flush().unwrap();
        }
        let mut model = vec![0u8; vsize];
        model[..3 << 20].fill(0x55);
        model[10 << 20..(10 << 20) + 4096].fill(0x66);
        model[100..1100].fill(0x77);
        model[(3 << 20) - 10..(3 << 20) + 10].fill(0x78);
        model[15 << 20..(15 << 20) + 70000].fill(0x79);
        model[10 << 20..(10 << 20) + 100].fill(0);
        assert_clean(d, "b.vhd");
        assert_eq!(
            first_difference(&qemu_guest(d, "b.vhd"), &model),
            None,
            "{sub}"
        );
        assert_eq!(first_difference(&our_guest(&d.join("b.vhd")), &model), None);
        std::fs::remove_file(d.join("b.vhd")).unwrap();
    }
}

/// Differencing disks made by vdisk over a parent made and written by
/// qemu: written through `open_rw` (sectors written in part keep the
/// parent's other bytes), committed and rebased with the generic
/// operations, read by vdisk.
#[test]
fn chains_commit_and_rebase() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("qemu-img create -q -f vpc base.vhd 24M", d);
    sh(
        "qemu-io -f vpc -c 'write -P 0x11 0 24M' -c 'write -P 0x22 3M 1M' base.vhd >/dev/null",
        d,
    );
    let base = our_guest(&d.join("base.vhd"));
    let size = base.len() as u64;
    let mut backing = opts("");
    backing.set("backing_file", "base.vhd").unwrap();
    let child = create_with(d.join("child.vhd"), Format::Vhd, 24 << 20, &backing).unwrap();
    assert_eq!(child.size(), size);
    drop(child);
    let mut model = base.clone();
    {
        let w = open_rw(d.join("child.vhd")).unwrap();
        assert_eq!(w.parent.as_deref(), Some(d.join("base.vhd").as_path()));
        let mut rng = Rng(9);
        random_ops(&*w.disk, &mut model, Some(&base), &mut rng, 120, 600_000);
        // Sector-partial writes in blocks the child has and has not.
        for (at, len) in [(7, 3), (1 << 20, 1), ((9 << 20) + 511, 2), (20 << 20, 700)] {
            w.disk.write_at(at, &vec![0x99; len]).unwrap();
            model[at as usize..at as usize + len].fill(0x99);
        }
        w.disk.flush().unwrap();
    }
    assert_clean(d, "child.vhd");
    let v = info(d, "child.vhd");
    assert_eq!(v["virtual-size"], size);
    let img = Image::open(d.join("child.vhd")).unwrap();
    assert_eq!(
        img.info().unwrap().subformat.as_deref(),
        Some("differencing")
    );
    assert_eq!(img.info().unwrap().backing_chain[0].path, "base.vhd");
    assert_eq!(
        first_difference(&our_guest(&d.join("child.vhd")), &model),
        None
    );
    // The child as qemu sees it: qemu ignores the parent of a vpc
    // differencing disk, so only the sectors the child holds are compared.
    let theirs = qemu_guest(d, "child.vhd");
    assert_eq!(theirs.len(), model.len());

    // A grandchild over the child, then rebased onto the base: the guest
    // stays the same.
    let mut over_child = opts("");
    over_child.set("backing_file", "child.vhd").unwrap();
    let top = create_with(d.join("top.vhd"), Format::Vhd, size, &over_child).unwrap();
    top.write_at(5 << 20, &[0xab; 4096]).unwrap();
    model[5 << 20..(5 << 20) + 4096].fill(0xab);
    drop(top);
    assert_eq!(
        first_difference(&our_guest(&d.join("top.vhd")), &model),
        None
    );
    vdisk_format::rebase(d.join("top.vhd"), "base.vhd").unwrap();
    assert_clean(d, "top.vhd");
    let img = Image::open(d.join("top.vhd")).unwrap();
    assert_eq!(img.info().unwrap().backing_chain.len(), 1);
    assert_eq!(
        first_difference(&our_guest(&d.join("top.vhd")), &model),
        None,
        "rebase"
    );

    // Commit the child into the base: the base then holds the child's
    // guest, and the emptied child reads as its parent.
    let mut child_model = our_guest(&d.join("child.vhd"));
    vdisk_format::commit(d.join("child.vhd")).unwrap();
    assert_clean(d, "child.vhd");
    assert_clean(d, "base.vhd");
    assert_eq!(
        first_difference(&qemu_guest(d, "base.vhd"), &child_model),
        None,
        "commit"
    );
    assert_eq!(
        first_difference(&our_guest(&d.join("child.vhd")), &child_model),
        None
    );
    let child_file = Image::open(d.join("child.vhd")).unwrap();
    let runs: Vec<_> = disk_io::extents(&child_file, 0, size)
        .map(|e| e.unwrap())
        .collect();
    assert!(
        runs.iter().all(|e| e.layer >= 1),
        "child not emptied: {runs:?}"
    );
    // Written again after the commit.
    {
        let w = open_rw(d.join("child.vhd")).unwrap();
        w.disk.write_at(123, &[1, 2, 3]).unwrap();
        child_model[123..126].copy_from_slice(&[1, 2, 3]);
    }
    assert_eq!(
        first_difference(&our_guest(&d.join("child.vhd")), &child_model),
        None
    );
}

#[test]
fn options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    for bad in [
        "subformat=streamOptimized",
        "force_size=maybe",
        "block_size=1M",
        "preallocation=full",
        "subformat=fixed,backing_file=x.vhd",
        "backing_fmt=qcow2",
    ] {
        assert!(
            create_with(p("b"), Format::Vhd, 1 << 20, &opts(bad)).is_err(),
            "{bad}"
        );
        assert!(!p("b").exists(), "{bad} left a file");
    }
    // A differencing disk's parent is a vhd.
    drop(create_with(p("q.raw"), Format::Raw, 1 << 20, &opts("")).unwrap());
    assert!(
        create_with(
            p("c.vhd"),
            Format::Vhd,
            1 << 20,
            &opts("backing_file=q.raw")
        )
        .is_err()
    );
}

/// Damaged images opened for writing: errors, never a panic or a hang.
#[test]
fn mutated_images_are_errors_not_panics() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("qemu-img create -q -f vpc good.vhd 6M", d);
    sh(
        "qemu-io -f vpc -c 'write -P 1 0 100k' -c 'write -P 2 4M 12k' good.vhd >/dev/null",
        d,
    );
    let good = std::fs::read(d.join("good.vhd")).unwrap();
    let tail = good.len() - 512;
    let mut rng = Rng(77);
    let path = d.join("bad.vhd");
    for round in 0..200 {
        let mut bad = good.clone();
        for _ in 0..1 + rng.below(6) {
            // Footer copy, header and BAT, the first bitmap, the footer.
            let at = match rng.below(3) {
                0 => rng.below(2048),
                1 => 2048 + rng.below(1024),
                _ => tail as u64 + rng.below(512),
            } as usize;
            bad[at] = rng.next() as u8;
        }
        if round % 7 == 0 {
            bad.truncate(rng.below(bad.len() as u64) as usize);
        }
        std::fs::write(&path, &bad).unwrap();
        let Ok(w) = open_rw(&path) else { continue };
        let size = w.disk.size();
        let mut buf = vec![0u8; 10_000];
        let at = |r: &mut Rng, n: u64| r.below(size.saturating_sub(n));
        let _ = w.disk.write_at(at(&mut rng, 5000), &[3; 5000]);
        let _ = w.disk.write_zeroes(at(&mut rng, 70_000), 70_000);
        let _ = w.disk.discard(at(&mut rng, 9000), 9000);
        let _ = w.disk.read_at(at(&mut rng, 10_000), &mut buf);
        let _ = disk_io::extents(&*w.disk, 0, size).take(100).count();
        let _ = w.disk.flush();
    }
}

/// Writers on several threads share one image: the data of stored blocks
/// goes to the file outside the lock, bitmap updates under it.
#[test]
fn writer_is_shared_between_threads() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let w = create_with(
        d.join("t.vhd"),
        Format::Vhd,
        8 << 20,
        &opts("force_size=on"),
    )
    .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let w = &w;
            s.spawn(move || {
                // Each thread writes every fourth piece, in two halves, so
                // that most writes land in blocks another thread stored.
                for k in 0..64u64 {
                    let off = (k * 4 + u64::from(t)) * 32768;
                    w.write_at(off + 16384, &[t + 1; 16384]).unwrap();
                    w.write_at(off, &[t + 1; 16384]).unwrap();
                }
            });
        }
    });
    drop(w);
    assert_clean(d, "t.vhd");
    let g = qemu_guest(d, "t.vhd");
    for (i, chunk) in g.chunks(32768).enumerate() {
        assert!(chunk.iter().all(|&b| b == (i % 4) as u8 + 1), "chunk {i}");
    }
    let ours = our_guest(&d.join("t.vhd"));
    assert_eq!(first_difference(&ours, &g), None);
}

/// Footer and header bytes the writer does not understand (reserved
/// fields, saved state) are carried over when an existing image is
/// written: the footer moved to the new end of the file is the one read.
#[test]
fn unknown_footer_and_header_bytes_survive() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("qemu-img create -q -f vpc u.vhd 8M", d);
    let path = d.join("u.vhd");
    let mut f = std::fs::read(&path).unwrap();
    let seal = |b: &mut [u8], at: usize| {
        b[at..at + 4].fill(0);
        let sum = !b.iter().fold(0u32, |s, &x| s.wrapping_add(u32::from(x)));
        b[at..at + 4].copy_from_slice(&sum.to_be_bytes());
    };
    let end = f.len() - 512;
    for at in [0, end] {
        f[at + 84] = 1; // saved state
        f[at + 300] = 0x5a; // reserved
        seal(&mut f[at..at + 512], 64);
    }
    f[512 + 900] = 0xa5; // header reserved
    seal(&mut f[512..1536], 36);
    std::fs::write(&path, &f).unwrap();
    {
        let w = open_rw(&path).unwrap();
        w.disk.write_at(3 << 20, &[7; 4096]).unwrap();
        w.disk.flush().unwrap();
    }
    let g = std::fs::read(&path).unwrap();
    assert!(g.len() > f.len(), "a block was allocated");
    let end = g.len() - 512;
    for at in [0, end] {
        assert_eq!(&g[at..at + 8], b"conectix");
        assert_eq!((g[at + 84], g[at + 300]), (1, 0x5a), "footer at {at}");
    }
    assert_eq!(g[512 + 900], 0xa5);
    assert_clean(d, "u.vhd");
    let out = sh("qemu-io -f vpc -r -c 'read -P 7 3M 4k' u.vhd", d);
    assert!(!out.contains("verification failed"), "{out}");
}
