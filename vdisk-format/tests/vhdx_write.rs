//! The VHDX writer against qemu: files it makes and writes (dynamic and
//! fixed) pass `qemu-img check`, read back equal to a model of the guest
//! through qemu-img and our reader, convert no larger than qemu-img's;
//! differencing files (which qemu does not open) are written through
//! `open_rw`, committed and rebased; a log left by a crash is replayed.

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
use vdisk_format::vhdx::write::{VhdxWriter, open_path_with_parent};
use vdisk_format::{CreateOptions, Format, Image, create_output, create_with, open_rw};

fn opts(s: &str) -> CreateOptions {
    CreateOptions::parse(&[s.to_string()]).unwrap()
}

/// `qemu-img check -f vhdx` exit status and output.
fn qemu_check(dir: &Path, name: &str, repair: bool) -> (i32, String) {
    let mut c = Command::new("qemu-img");
    c.args(["check", "-f", "vhdx"]);
    if repair {
        c.args(["-r", "all"]);
    }
    let out = c.arg(name).current_dir(dir).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn assert_clean(dir: &Path, name: &str) {
    let (code, text) = qemu_check(dir, name, false);
    assert_eq!(code, 0, "qemu-img check {name}: {text}");
    let ours = vdisk_format::check(dir.join(name)).unwrap();
    assert_eq!(ours.errors, 0, "vdisk check {name}: {:?}", ours.messages);
}

/// The guest as qemu-img reads it.
fn qemu_guest(dir: &Path, name: &str) -> Vec<u8> {
    let _ = std::fs::remove_file(dir.join("guest.raw"));
    sh(
        &format!("qemu-img convert -f vhdx -O raw {name} guest.raw"),
        dir,
    );
    std::fs::read(dir.join("guest.raw")).unwrap()
}

/// The guest as our reader reads it.
fn our_guest(path: &Path) -> Vec<u8> {
    let image = Image::open(path).unwrap();
    let mut back = vec![0u8; image.size() as usize];
    image.read_at(0, &mut back).unwrap();
    back
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// `qemu-img info --output=json` of `name`.
fn info(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&sh(
        &format!("qemu-img info -f vhdx --output=json {name}"),
        dir,
    ))
    .unwrap()
}

/// Seeded random writes, zeroes and discards, overlapping and crossing
/// blocks, mirrored in a model (which starts as the parent's guest).
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
                // Whole blocks only for a discard's content to be defined
                // (zeros, or the parent's in a child): checked separately.
                image.write_zeroes(off, len).unwrap();
                model[range].fill(0);
            }
            _ => {
                let byte = (i % 251 + 1) as u8;
                let mut data = vec![byte; len as usize];
                for (j, c) in data.chunks_mut(512).enumerate() {
                    c.fill(byte ^ (j as u8 & 7));
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

fn random_writes(options: &str, size: u64, ops: usize, max_len: u64, seed: u64) {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.vhdx");
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(seed);
    {
        let out = create_output(&path, Format::Vhdx, size, &opts(options)).unwrap();
        random_ops(&*out.disk, &mut model, &mut rng, ops, max_len);
        let mut back = vec![0u8; size as usize];
        out.disk.read_at(0, &mut back).unwrap();
        assert_eq!(first_difference(&back, &model), None, "{options}: own read");
        out.finish().unwrap();
        out.disk.flush().unwrap();
    }
    assert_clean(dir.path(), "w.vhdx");
    // Reopened: more writes over what is there.
    {
        let w = open_rw(&path).unwrap();
        random_ops(&*w.disk, &mut model, &mut rng, ops / 2, max_len);
        w.disk.flush().unwrap();
    }
    assert_clean(dir.path(), "w.vhdx");
    let guest = qemu_guest(dir.path(), "w.vhdx");
    assert_eq!(
        first_difference(&guest, &model),
        None,
        "{options}: qemu read"
    );
    assert_eq!(
        first_difference(&our_guest(&path), &model),
        None,
        "{options}: reader"
    );
    let v = info(dir.path(), "w.vhdx");
    assert_eq!(v["format"], "vhdx");
    assert_eq!(v["virtual-size"], size);
}

#[test]
fn random_writes_dynamic() {
    random_writes("", 24 << 20, 150, 3_000_000, 1);
}

#[test]
fn random_writes_dynamic_1m_blocks() {
    random_writes(
        "block_size=1M,block_state_zero=off",
        16 << 20,
        150,
        300_000,
        2,
    );
}

#[test]
fn random_writes_fixed() {
    random_writes("subformat=fixed,block_size=2M", 16 << 20, 100, 1_000_000, 3);
}

#[test]
fn options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let e = create_with(p("a"), Format::Vhdx, 1 << 20, &opts("frobnicate=1"))
        .err()
        .unwrap();
    assert_eq!(e.kind(), disk_io::ErrorKind::Unsupported);
    assert!(e.to_string().contains("frobnicate"), "{e}");
    for bad in [
        "block_size=3M",
        "block_size=512M",
        "block_size=512k",
        "log_size=1000",
        "subformat=thin",
        "block_state_zero=maybe",
    ] {
        assert!(
            create_with(p("b"), Format::Vhdx, 1 << 20, &opts(bad)).is_err(),
            "{bad}"
        );
        assert!(!p("b").exists(), "{bad} left a file");
    }
}

/// Header fields as qemu reads them, for the sizes that pick each of
/// qemu's automatic block sizes.
#[test]
fn header_as_qemu_reads_it() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, o, size, block) in [
        ("a.vhdx", "", 64u64 << 20, 8u64 << 20),
        ("b.vhdx", "", 5 << 30, 16 << 20),
        ("c.vhdx", "", 200 << 30, 32 << 20),
        ("d.vhdx", "block_size=1M,log_size=2M", 1000 * 1000, 1 << 20),
        ("e.vhdx", "subformat=fixed", 20 << 20, 8 << 20),
    ] {
        let out = create_output(dir.path().join(name), Format::Vhdx, size, &opts(o)).unwrap();
        out.finish().unwrap();
        drop(out);
        assert_clean(dir.path(), name);
        let v = info(dir.path(), name);
        assert_eq!(v["format"], "vhdx");
        assert_eq!(v["virtual-size"], size.next_multiple_of(512), "{name}");
        assert_eq!(v["cluster-size"], block, "{name}");
        let ours = Image::open(dir.path().join(name)).unwrap().info().unwrap();
        let sub = if o.contains("fixed") {
            "fixed"
        } else {
            "dynamic"
        };
        assert_eq!(ours.subformat.as_deref(), Some(sub), "{name}");
    }
}

/// A sparse raw source: random runs of data among holes.
fn sparse_source(path: &Path, size: u64, seed: u64) {
    let f = FileDisk::create(path, size).unwrap();
    let mut rng = Rng(seed);
    let mut pos = 0u64;
    while pos < size {
        let gap = rng.below(6 << 20);
        let len = (1 + rng.below(3 << 20)).min(size.saturating_sub(pos + gap));
        pos += gap;
        if len == 0 || pos >= size {
            break;
        }
        let mut data = vec![0u8; len as usize];
        for c in data.chunks_mut(4096) {
            c.fill(rng.next() as u8 | 1);
        }
        f.write_at(pos, &data).unwrap();
        pos += len;
    }
}

/// Copies `src` into a new image at `dst` as a conversion does: data runs
/// written in 2 MiB pieces, holes skipped.
fn convert(src: &Path, dst: &Path, o: &str) {
    let src = FileDisk::open(src).unwrap();
    let out = create_output(dst, Format::Vhdx, src.size(), &opts(o)).unwrap();
    let mut buf = vec![0u8; 2 << 20];
    for run in extents(&src, 0, src.size()) {
        let run = run.unwrap();
        if run.state != Allocation::Data {
            continue;
        }
        let mut at = run.offset;
        while at < run.end() {
            let n = (run.end() - at).min(buf.len() as u64) as usize;
            src.read_at(at, &mut buf[..n]).unwrap();
            if buf[..n].iter().any(|&b| b != 0) {
                out.disk.write_at(at, &buf[..n]).unwrap();
            }
            at += n as u64;
        }
    }
    out.finish().unwrap();
    out.disk.flush().unwrap();
}

fn allocated(path: &Path) -> u64 {
    FileDisk::open(path).unwrap().allocated_bytes().unwrap()
}

#[test]
fn conversion_matches_qemu_img() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (seed, size, o) in [
        (7u64, 48u64 << 20, ""),
        (8, 40 << 20, "subformat=fixed"),
        (9, 16 << 20, "block_size=1M"),
    ] {
        for f in ["ours.vhdx", "qemu.vhdx", "src.raw"] {
            let _ = std::fs::remove_file(d.join(f));
        }
        sparse_source(&d.join("src.raw"), size, seed);
        convert(&d.join("src.raw"), &d.join("ours.vhdx"), o);
        let qo = if o.is_empty() {
            String::new()
        } else {
            format!("-o {o}")
        };
        sh(
            &format!("qemu-img convert -f raw -O vhdx {qo} src.raw qemu.vhdx"),
            d,
        );
        assert_clean(d, "ours.vhdx");
        sh("qemu-img compare -f raw -F vhdx src.raw ours.vhdx", d);
        let v = info(d, "ours.vhdx");
        assert_eq!(v["virtual-size"], size);
        let (ours, qemu) = (
            allocated(&d.join("ours.vhdx")),
            allocated(&d.join("qemu.vhdx")),
        );
        println!("{o:?}: {ours} bytes allocated, qemu-img {qemu}");
        assert!(
            ours <= qemu + qemu / 100,
            "{o}: {ours} bytes allocated, qemu-img {qemu}"
        );
    }
}

/// A differencing file over a parent made by us, written through
/// `open_rw`: partial blocks keep the parent's sectors; then committed
/// and rebased by the generic chain operations.
#[test]
fn children_commit_and_rebase() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 20u64 << 20;
    let mut rng = Rng(11);
    let mut model = vec![0u8; size as usize];
    {
        let base = create_with(
            d.join("base.vhdx"),
            Format::Vhdx,
            size,
            &opts("block_size=2M"),
        )
        .unwrap();
        random_ops(&*base, &mut model, &mut rng, 60, 2_000_000);
        base.flush().unwrap();
    }
    let base_model = model.clone();
    // A second parent with the same content, made by qemu-img.
    sh("qemu-img convert -f vhdx -O vhdx base.vhdx base2.vhdx", d);
    {
        let child = create_with(
            d.join("child.vhdx"),
            Format::Vhdx,
            size,
            &opts("backing_file=base.vhdx,block_size=1M"),
        )
        .unwrap();
        child.write_at(1000, &[0x33; 100]).unwrap();
        model[1000..1100].fill(0x33);
        child.flush().unwrap();
    }
    {
        let w = open_rw(d.join("child.vhdx")).unwrap();
        assert_eq!(w.parent.as_deref(), Some(d.join("base.vhdx").as_path()));
        random_ops(&*w.disk, &mut model, &mut rng, 80, 600_000);
        // Discarding whole blocks brings the parent back.
        w.disk.discard(4 << 20, 2 << 20).unwrap();
        model[4 << 20..6 << 20].copy_from_slice(&base_model[4 << 20..6 << 20]);
        // Partial discards of a child's sectors do too.
        w.disk.write_at(7 << 20, &[0x99; 8192]).unwrap();
        w.disk.discard((7 << 20) + 512, 1024).unwrap();
        model[7 << 20..(7 << 20) + 8192].fill(0x99);
        model[(7 << 20) + 512..(7 << 20) + 1536]
            .copy_from_slice(&base_model[(7 << 20) + 512..(7 << 20) + 1536]);
        let mut back = vec![0u8; size as usize];
        w.disk.read_at(0, &mut back).unwrap();
        assert_eq!(first_difference(&back, &model), None, "writer's own read");
    }
    assert_eq!(vdisk_format::check(d.join("child.vhdx")).unwrap().errors, 0);
    let image = Image::open(d.join("child.vhdx")).unwrap();
    assert_eq!(
        image.info().unwrap().subformat.as_deref(),
        Some("differencing")
    );
    assert_eq!(
        first_difference(&our_guest(&d.join("child.vhdx")), &model),
        None
    );
    assert!(image.warnings().is_empty(), "{:?}", image.warnings());
    drop(image);

    // Rebase onto the copy: same guest, new parent named and linked.
    vdisk_format::rebase(d.join("child.vhdx"), "base2.vhdx").unwrap();
    let (_, parent) = open_path_with_parent(&d.join("child.vhdx")).unwrap();
    assert_eq!(parent.as_deref(), Some(d.join("base2.vhdx").as_path()));
    assert_eq!(
        first_difference(&our_guest(&d.join("child.vhdx")), &model),
        None
    );

    // Commit: the parent holds the guest, the child is empty and still
    // opens (it records the parent's new identity).
    let merged = vdisk_format::commit(d.join("child.vhdx")).unwrap();
    assert!(merged > 0);
    assert_clean(d, "base2.vhdx");
    assert_eq!(first_difference(&qemu_guest(d, "base2.vhdx"), &model), None);
    assert_eq!(
        first_difference(&our_guest(&d.join("child.vhdx")), &model),
        None
    );
    let child = Image::open(d.join("child.vhdx")).unwrap();
    let runs: Vec<_> = extents(&child, 0, size).map(|r| r.unwrap()).collect();
    assert!(runs.iter().all(|r| r.layer > 0), "child still holds data");
}

/// A writer stopped right after its log entry is durable leaves a file
/// that needs replay: our reader replays it in memory, qemu refuses to
/// open it read-only and replays it with `check -r all`, our writer
/// replays it in place on open.
#[test]
fn dirty_log_is_replayed() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 16u64 << 20;
    let mut model = vec![0u8; size as usize];
    {
        let out =
            create_output(d.join("a.vhdx"), Format::Vhdx, size, &opts("block_size=1M")).unwrap();
        out.disk.write_at(0, &[1; 5000]).unwrap();
        model[..5000].fill(1);
        out.finish().unwrap();
    }
    {
        let (w, _) = open_path_with_parent(&d.join("a.vhdx")).unwrap();
        w.write_at(3 << 20, &[2; 70000]).unwrap();
        w.write_at(9 << 20, &[3; 100]).unwrap();
        model[3 << 20..(3 << 20) + 70000].fill(2);
        model[9 << 20..(9 << 20) + 100].fill(3);
        w.crash_after_log();
        w.flush().unwrap();
        let _: &VhdxWriter = &w;
    }
    let (code, text) = qemu_check(d, "a.vhdx", false);
    assert_ne!(code, 0, "qemu opens a file with a log to replay read-only");
    assert!(text.contains("log"), "{text}");
    assert_eq!(
        first_difference(&our_guest(&d.join("a.vhdx")), &model),
        None
    );
    sh("cp a.vhdx b.vhdx", d);
    let (code, text) = qemu_check(d, "b.vhdx", true);
    assert_eq!(code, 0, "qemu-img check -r all: {text}");
    assert_clean(d, "b.vhdx");
    assert_eq!(first_difference(&qemu_guest(d, "b.vhdx"), &model), None);
    // Our writer replays in place on open.
    drop(open_rw(d.join("a.vhdx")).unwrap());
    assert_clean(d, "a.vhdx");
    assert_eq!(first_difference(&qemu_guest(d, "a.vhdx"), &model), None);
}

/// Files across the two tools: one made by qemu-img written through
/// `open_rw`, one made by us written by qemu-io; both read back as the
/// model through qemu and our reader.
#[test]
fn written_across_tools() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 24usize << 20;
    sh("qemu-img create -q -f vhdx -o block_size=2M q.vhdx 24M", d);
    sh(
        "qemu-io -f vhdx -c 'write -P 0x55 1M 3M' -c 'write -P 0x66 10M 100k' q.vhdx >/dev/null",
        d,
    );
    let mut model = vec![0u8; size];
    model[1 << 20..4 << 20].fill(0x55);
    model[10 << 20..(10 << 20) + (100 << 10)].fill(0x66);
    {
        let w = open_rw(d.join("q.vhdx")).unwrap();
        w.disk.write_at((2 << 20) - 100, &[0x77; 300]).unwrap();
        w.disk.write_at(20 << 20, &[0x78; 5000]).unwrap();
        w.disk.write_zeroes(10 << 20, 4096).unwrap();
        w.disk.flush().unwrap();
    }
    model[(2 << 20) - 100..(2 << 20) + 200].fill(0x77);
    model[20 << 20..(20 << 20) + 5000].fill(0x78);
    model[10 << 20..(10 << 20) + 4096].fill(0);
    assert_clean(d, "q.vhdx");
    assert_eq!(first_difference(&qemu_guest(d, "q.vhdx"), &model), None);
    assert_eq!(
        first_difference(&our_guest(&d.join("q.vhdx")), &model),
        None
    );

    let out = create_output(d.join("o.vhdx"), Format::Vhdx, size as u64, &opts("")).unwrap();
    out.disk.write_at(5 << 20, &[0x11; 9000]).unwrap();
    out.finish().unwrap();
    drop(out);
    sh(
        "qemu-io -f vhdx -c 'write -P 0x22 6M 1M' -c 'write -P 0x33 17M 512' o.vhdx >/dev/null",
        d,
    );
    let mut model = vec![0u8; size];
    model[5 << 20..(5 << 20) + 9000].fill(0x11);
    model[6 << 20..7 << 20].fill(0x22);
    model[17 << 20..(17 << 20) + 512].fill(0x33);
    assert_clean(d, "o.vhdx");
    assert_eq!(
        first_difference(&our_guest(&d.join("o.vhdx")), &model),
        None
    );
    // And once more through our writer, over what qemu wrote.
    {
        let w = open_rw(d.join("o.vhdx")).unwrap();
        w.disk.write_at((6 << 20) + 10, &[0x44; 10]).unwrap();
        w.disk.flush().unwrap();
    }
    model[(6 << 20) + 10..(6 << 20) + 20].fill(0x44);
    assert_clean(d, "o.vhdx");
    assert_eq!(first_difference(&qemu_guest(d, "o.vhdx"), &model), None);
}

/// A BAT entry naming a block past the end of the file is refused when
/// the file is opened for writing (new blocks would alias it), naming the
/// entry.
#[test]
fn block_past_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.vhdx");
    let out = create_output(&path, Format::Vhdx, 8 << 20, &opts("block_size=1M")).unwrap();
    out.disk.write_at(0, &[5; 512]).unwrap();
    out.finish().unwrap();
    drop(out);
    let file = FileDisk::open_rw(&path).unwrap();
    // The BAT is at 2 MiB (after the 1 MiB log); entry 0 -> 1 TiB.
    file.write_at(2 << 20, &((1u64 << 40) | 6).to_le_bytes())
        .unwrap();
    drop(file);
    let e = open_rw(&path).err().unwrap();
    assert!(e.to_string().contains("BAT entry 0"), "{e}");
}
