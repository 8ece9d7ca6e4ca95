//! The VDI writer against qemu: conversions into dynamic and static images
//! pass `qemu-img check`, equal their source for `qemu-img compare` and
//! take no more room than qemu-img's own conversion; images made by
//! `qemu-img create` are written through `open_rw`, and images made here
//! are written by `qemu-io`, each then read by the other side; header
//! bytes the writer does not use survive a write.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use disk_io::{ReadAt, WriteAt};
use test_support::{Rng, have_all, sh};
use vdisk_format::{CreateOptions, Format, Image, create_output, open_rw};

fn opts(s: &str) -> CreateOptions {
    CreateOptions::parse(&[s.to_string()]).unwrap()
}

fn assert_clean(dir: &Path, name: &str) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "vdi", name])
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

/// The guest as qemu-img reads it.
fn qemu_guest(dir: &Path, name: &str) -> Vec<u8> {
    let _ = std::fs::remove_file(dir.join("guest.raw"));
    sh(
        &format!("qemu-img convert -f vdi -O raw {name} guest.raw"),
        dir,
    );
    std::fs::read(dir.join("guest.raw")).unwrap()
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn info(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&sh(
        &format!("qemu-img info -f vdi --output=json {name}"),
        dir,
    ))
    .unwrap()
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A sparse raw disk of `size` bytes: random pieces (whole blocks, partial
/// blocks, runs across blocks), a zero-filled piece among them.
fn make_source(path: &Path, size: u64, rng: &mut Rng) -> Vec<u8> {
    let mut model = vec![0u8; size as usize];
    for i in 0..24 {
        let len = match i % 4 {
            0 => 1 << 20,
            1 => 512 * (1 + rng.below(64)),
            2 => 1 + rng.below(3 << 20),
            _ => 4096,
        };
        let at = rng.below(size - len);
        let data = if i == 7 {
            vec![0u8; len as usize]
        } else {
            rng.bytes(len as usize)
        };
        model[at as usize..(at + len) as usize].copy_from_slice(&data);
    }
    let disk = disk_io::FileDisk::create(path, size).unwrap();
    // Only the non-zero 4 KiB pieces, so that the file stays sparse.
    for (i, chunk) in model.chunks(4096).enumerate() {
        if !disk_io::is_zero(chunk) {
            disk.write_at(i as u64 * 4096, chunk).unwrap();
        }
    }
    model
}

/// What `vdisk convert` does: the non-zero 4 KiB runs of each MiB,
/// written in a scattered order of MiB pieces.
fn copy_into(dst: &dyn WriteAt, model: &[u8], rng: &mut Rng) {
    let mut pieces: Vec<usize> = (0..model.len().div_ceil(1 << 20)).collect();
    for i in (1..pieces.len()).rev() {
        pieces.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for p in pieces {
        let start = p << 20;
        let end = (start + (1 << 20)).min(model.len());
        let mut run: Option<usize> = None;
        let mut at = start;
        while at <= end {
            let zero = at == end || disk_io::is_zero(&model[at..(at + 4096).min(end)]);
            match (run, zero) {
                (None, false) => run = Some(at),
                (Some(s), true) => {
                    dst.write_at(s as u64, &model[s..at]).unwrap();
                    run = None;
                }
                _ => {}
            }
            at += 4096;
        }
    }
}

fn convert_case(options: &str, seed: u64) {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = Rng(seed);
    let size = (40 << 20) + 3 * 512;
    let model = make_source(&d.join("src.raw"), size, &mut rng);
    let out = create_output(d.join("ours.vdi"), Format::Vdi, size, &opts(options)).unwrap();
    copy_into(&*out.disk, &model, &mut rng);
    out.finish().unwrap();
    out.disk.flush().unwrap();
    drop(out);
    assert_clean(d, "ours.vdi");
    // The file ends with its last block (room grown ahead is cut).
    let bytes = std::fs::read(d.join("ours.vdi")).unwrap();
    let le = |at: usize| u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()));
    assert_eq!(bytes.len() as u64, le(0x158) + (le(0x184) << 20));
    assert_eq!(le(0x154), 0x200, "block map after the header");
    assert_eq!(le(0x158) % (1 << 20), 0, "data area aligned");
    sh("qemu-img compare -f raw -F vdi src.raw ours.vdi", d);
    let v = info(d, "ours.vdi");
    assert_eq!(v["format"], "vdi");
    assert_eq!(v["virtual-size"], size);
    assert_eq!(v["cluster-size"], 1 << 20);
    let o = if options.is_empty() {
        String::new()
    } else {
        format!("-o {options}")
    };
    sh(
        &format!("qemu-img convert -f raw -O vdi {o} src.raw qemu.vdi"),
        d,
    );
    let (ours, theirs) = (
        allocated(&d.join("ours.vdi")),
        allocated(&d.join("qemu.vdi")),
    );
    assert!(
        ours <= theirs + theirs / 100,
        "{options}: {ours} bytes allocated, qemu-img {theirs}"
    );
    // Same layout and header as qemu's for what qemu shows.
    let q = info(d, "qemu.vdi");
    assert_eq!(q["virtual-size"], v["virtual-size"]);
    let image = Image::open(d.join("ours.vdi")).unwrap();
    let want = if options.contains("static") {
        "static"
    } else {
        "dynamic"
    };
    assert_eq!(image.info().unwrap().subformat.as_deref(), Some(want));
    let mut back = vec![0u8; size as usize];
    image.read_at(0, &mut back).unwrap();
    assert_eq!(first_difference(&back, &model), None);
}

#[test]
fn convert_dynamic() {
    convert_case("", 1);
}

#[test]
fn convert_static() {
    convert_case("static=on", 2);
}

/// Seeded random writes, zeroes and discards, overlapping and crossing
/// blocks, mirrored in a model.
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
                image.discard(off, len).unwrap();
                model[range].fill(0);
            }
            _ => {
                let data = rng.bytes(len as usize);
                image.write_at(off, &data).unwrap();
                model[range].copy_from_slice(&data);
            }
        }
        if i % 17 == 0 {
            image.flush().unwrap();
        }
    }
    image.flush().unwrap();
}

/// Images made here, written at random, then reopened and written more.
#[test]
fn random_writes_then_reopened() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    for (options, seed) in [("", 3), ("static=on", 4)] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let size = 16u64 << 20;
        let mut model = vec![0u8; size as usize];
        let mut rng = Rng(seed);
        {
            let out = create_output(d.join("w.vdi"), Format::Vdi, size, &opts(options)).unwrap();
            random_ops(&*out.disk, &mut model, &mut rng, 80, 1_500_000);
            let mut back = vec![0u8; size as usize];
            out.disk.read_at(0, &mut back).unwrap();
            assert_eq!(first_difference(&back, &model), None, "{options}: own read");
        }
        assert_clean(d, "w.vdi");
        {
            let w = open_rw(d.join("w.vdi")).unwrap();
            assert_eq!(w.format, Format::Vdi);
            random_ops(&*w.disk, &mut model, &mut rng, 40, 1_500_000);
            // Whole trailing blocks freed: the last one allocated.
            w.disk.discard(0, size).unwrap();
            model.fill(0);
            random_ops(&*w.disk, &mut model, &mut rng, 20, 1_500_000);
        }
        assert_clean(d, "w.vdi");
        assert_eq!(
            first_difference(&qemu_guest(d, "w.vdi"), &model),
            None,
            "{options}: qemu read"
        );
        let mut back = vec![0u8; size as usize];
        Image::open(d.join("w.vdi"))
            .unwrap()
            .read_at(0, &mut back)
            .unwrap();
        assert_eq!(first_difference(&back, &model), None, "{options}: reader");
    }
}

/// Images made by `qemu-img create -f vdi`, written through `open_rw`.
#[test]
fn qemu_images_written_here() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    for (options, seed) in [("", 5), ("-o static=on", 6)] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let size = 24u64 << 20;
        sh(&format!("qemu-img create -q -f vdi {options} q.vdi 24M"), d);
        sh(
            "qemu-io -f vdi -c 'write -P 0x5a 3M 1536k' q.vdi >/dev/null",
            d,
        );
        let mut model = vec![0u8; size as usize];
        model[3 << 20..(3 << 20) + (1536 << 10)].fill(0x5a);
        let mut rng = Rng(seed);
        {
            let w = open_rw(d.join("q.vdi")).unwrap();
            random_ops(&*w.disk, &mut model, &mut rng, 60, 1_500_000);
        }
        assert_clean(d, "q.vdi");
        assert_eq!(
            first_difference(&qemu_guest(d, "q.vdi"), &model),
            None,
            "{options}"
        );
        // And qemu goes on writing after us.
        sh(
            "qemu-io -f vdi -c 'write -P 0x6b 20M 2M' q.vdi >/dev/null",
            d,
        );
        model[20 << 20..22 << 20].fill(0x6b);
        assert_clean(d, "q.vdi");
        let mut back = vec![0u8; size as usize];
        Image::open(d.join("q.vdi"))
            .unwrap()
            .read_at(0, &mut back)
            .unwrap();
        assert_eq!(first_difference(&back, &model), None, "{options}");
    }
}

/// Images made here, written by `qemu-io`, read here.
#[test]
fn our_images_written_by_qemu() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    for options in ["", "static=on"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let size = 20u64 << 20;
        let mut model = vec![0u8; size as usize];
        {
            let out = create_output(d.join("o.vdi"), Format::Vdi, size, &opts(options)).unwrap();
            out.disk.write_at(1 << 20, &[0x11; 5000]).unwrap();
            out.disk.write_at((7 << 20) - 10, &[0x12; 20]).unwrap();
            out.finish().unwrap();
            out.disk.flush().unwrap();
        }
        model[1 << 20..(1 << 20) + 5000].fill(0x11);
        model[(7 << 20) - 10..(7 << 20) + 10].fill(0x12);
        for (pattern, off, len) in [
            (0x21u8, 1_000_000u64, 100_000u64),
            (0x22, 12 << 20, 3 << 20),
            (0x23, 512, 4096),
            (0x24, (19 << 20) + 4096, 8192),
        ] {
            sh(
                &format!("qemu-io -f vdi -c 'write -P {pattern} {off} {len}' o.vdi >/dev/null"),
                d,
            );
            model[off as usize..(off + len) as usize].fill(pattern);
        }
        assert_clean(d, "o.vdi");
        let mut back = vec![0u8; size as usize];
        Image::open(d.join("o.vdi"))
            .unwrap()
            .read_at(0, &mut back)
            .unwrap();
        assert_eq!(first_difference(&back, &model), None, "{options}");
        // And written here again after qemu.
        {
            let w = open_rw(d.join("o.vdi")).unwrap();
            w.disk.write_at(5 << 20, &[0x31; 70_000]).unwrap();
            w.disk.flush().unwrap();
        }
        model[5 << 20..(5 << 20) + 70_000].fill(0x31);
        assert_clean(d, "o.vdi");
        assert_eq!(
            first_difference(&qemu_guest(d, "o.vdi"), &model),
            None,
            "{options}"
        );
    }
}

/// Header bytes the writer does not use (comment, legacy geometry, the
/// unused field, padding, the pre-header text) are kept as they were;
/// only `blocks_allocated` and `uuid_modify` change.
#[test]
fn unknown_header_bytes_survive() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("qemu-img create -q -f vdi h.vdi 8M", d);
    let path = d.join("h.vdi");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0x30..0x38].copy_from_slice(b"vendor!!");
    bytes[0x54..0x54 + 13].copy_from_slice(b"a comment, ok");
    bytes[0x15c..0x168].copy_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
    bytes[0x16c..0x170].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    bytes[0x1c8..0x200].fill(0x5c);
    std::fs::write(&path, &bytes).unwrap();
    let before = bytes[..0x200].to_vec();
    {
        let w = open_rw(&path).unwrap();
        w.disk.write_at(3 << 20, &[9; 100]).unwrap();
        w.disk.flush().unwrap();
    }
    assert_clean(d, "h.vdi");
    let after = std::fs::read(&path).unwrap()[..0x200].to_vec();
    for i in 0..0x200 {
        if (0x184..0x188).contains(&i) || (0x198..0x1a8).contains(&i) {
            continue;
        }
        assert_eq!(before[i], after[i], "header byte {i:#x} changed");
    }
    assert_eq!(&after[0x184..0x188], &1u32.to_le_bytes());
    assert_ne!(&after[0x198..0x1a8], &before[0x198..0x1a8], "uuid_modify");
    assert_eq!(&after[0x188..0x198], &before[0x188..0x198], "uuid_create");
}

#[test]
fn options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let e = create_output(p("a"), Format::Vdi, 1 << 20, &opts("cluster_size=64k"))
        .err()
        .unwrap();
    assert_eq!(e.kind(), disk_io::ErrorKind::Unsupported);
    assert!(e.to_string().contains("cluster_size"), "{e}");
    assert!(create_output(p("b"), Format::Vdi, 1 << 20, &opts("static=maybe")).is_err());
    assert!(!p("b").exists());
    // Too big for the block map.
    assert!(create_output(p("c"), Format::Vdi, 1 << 60, &opts("")).is_err());
}

/// Damaged images: refused or written without a panic.
#[test]
fn mutated_images_are_errors_not_panics() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("qemu-img create -q -f vdi good.vdi 6M", d);
    sh(
        "qemu-io -f vdi -c 'write -P 1 0 100k' -c 'write -P 2 3M 12k' good.vdi >/dev/null",
        d,
    );
    let good = std::fs::read(d.join("good.vdi")).unwrap();
    let mut rng = Rng(77);
    let path = d.join("bad.vdi");
    for _ in 0..200 {
        let mut bad = good.clone();
        for _ in 0..1 + rng.below(6) {
            // Header and block map: the first 1 KiB.
            let at = 0x40 + rng.below(0x400 - 0x40) as usize;
            bad[at] = rng.next() as u8;
        }
        std::fs::write(&path, &bad).unwrap();
        let Ok(w) = open_rw(&path) else { continue };
        let size = w.disk.size();
        let mut buf = vec![0u8; 10_000];
        let _ = w
            .disk
            .write_at(rng.below(size.saturating_sub(5000)), &[3; 5000]);
        let _ = w
            .disk
            .write_zeroes(rng.below(size / 2), (size / 2).min(1 << 21));
        let _ = w.disk.discard(rng.below(size / 2), 9000);
        let _ = w
            .disk
            .read_at(rng.below(size.saturating_sub(10_000)), &mut buf);
        let _ = w.disk.flush();
    }
}

/// An image laid out as VirtualBox lays it out (block map at 1 MiB, data
/// at 2 MiB, far from the header): header and map are written apart.
#[test]
fn virtualbox_layout_written() {
    use vdisk_format::vdi::header::{ImageType, NewHeader, Uuid};
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 12u64 << 20;
    let blocks = 12u32;
    let mut bytes = NewHeader {
        image_type: ImageType::Dynamic,
        offset_bmap: 1 << 20,
        offset_data: 2 << 20,
        disk_size: size,
        block_size: 1 << 20,
        blocks,
        blocks_allocated: 0,
        uuid_create: Uuid([7; 16]),
        uuid_modify: Uuid([8; 16]),
    }
    .emit();
    bytes.resize(1 << 20, 0);
    bytes.extend(std::iter::repeat_n(0xffu8, blocks as usize * 4));
    bytes.resize(2 << 20, 0);
    std::fs::write(d.join("vb.vdi"), &bytes).unwrap();
    assert_clean(d, "vb.vdi");
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(9);
    {
        let w = open_rw(d.join("vb.vdi")).unwrap();
        random_ops(&*w.disk, &mut model, &mut rng, 30, 2_000_000);
    }
    assert_clean(d, "vb.vdi");
    assert_eq!(first_difference(&qemu_guest(d, "vb.vdi"), &model), None);
    let after = std::fs::read(d.join("vb.vdi")).unwrap();
    assert!(
        after[0x200..1 << 20].iter().all(|&b| b == 0),
        "bytes between header and map untouched"
    );
}
