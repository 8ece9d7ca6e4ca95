//! The qcow2 writer against qemu: images it makes and writes pass
//! `qemu-img check` with no errors and no leaks, read back equal to a model
//! of the guest through qemu-img and qemu-io, and survive being killed in
//! the middle of writing.

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
use vdisk_format::qcow2::write::{Qcow2Writer, open_path};
use vdisk_format::{CreateOptions, Format, Image, create_with};

fn opts(s: &str) -> CreateOptions {
    CreateOptions::parse(&[s.to_string()]).unwrap()
}

/// `qemu-img check` exit status: 0 clean, 2 corruption, 3 leaks only.
fn qemu_check(dir: &Path, name: &str) -> (i32, String) {
    let out = Command::new("qemu-img")
        .args(["check", name])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn assert_clean(dir: &Path, name: &str) {
    let (code, text) = qemu_check(dir, name);
    assert_eq!(code, 0, "qemu-img check {name}: {text}");
}

/// The guest as qemu-img reads it.
fn qemu_guest(dir: &Path, name: &str) -> Vec<u8> {
    let _ = std::fs::remove_file(dir.join("guest.raw"));
    sh(&format!("qemu-img convert -O raw {name} guest.raw"), dir);
    std::fs::read(dir.join("guest.raw")).unwrap()
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Seeded random writes, zeroes and discards, overlapping and crossing
/// clusters, mirrored in a model.
fn random_ops(image: &dyn WriteAt, model: &mut [u8], rng: &mut Rng, ops: usize, max_len: u64) {
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
                model[range].fill(0);
            }
            _ => {
                let byte = (i % 251 + 1) as u8;
                let data: Vec<u8> = (0..len).map(|k| byte ^ (k as u8 & 7)).collect();
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
    let path = dir.path().join("w.qcow2");
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(seed);
    {
        let image = create_with(&path, Format::Qcow2, size, &opts(options)).unwrap();
        random_ops(&*image, &mut model, &mut rng, ops, max_len);
        let mut back = vec![0u8; size as usize];
        image.read_at(0, &mut back).unwrap();
        assert_eq!(first_difference(&back, &model), None, "{options}: own read");
    }
    assert_clean(dir.path(), "w.qcow2");
    // Reopened: more writes over what is there.
    {
        let image = open_path(&path).unwrap();
        random_ops(&image, &mut model, &mut rng, ops / 2, max_len);
        image.flush().unwrap();
    }
    assert_clean(dir.path(), "w.qcow2");
    let guest = qemu_guest(dir.path(), "w.qcow2");
    assert_eq!(
        first_difference(&guest, &model),
        None,
        "{options}: qemu read"
    );
    let ours = Image::open(&path).unwrap();
    let mut back = vec![0u8; size as usize];
    ours.read_at(0, &mut back).unwrap();
    assert_eq!(first_difference(&back, &model), None, "{options}: reader");
}

#[test]
fn random_writes_v3_64k() {
    random_writes("", 16 << 20, 120, 300_000, 1);
}

#[test]
fn random_writes_v2_64k() {
    random_writes("compat=0.10", 12 << 20, 100, 300_000, 2);
}

#[test]
fn random_writes_512_grows_refcount_table() {
    // 512-byte clusters: a refcount block covers 128 KiB and the first
    // table 8 MiB of file, so this grows both several times.
    random_writes("cluster_size=512", 16 << 20, 200, 200_000, 3);
}

#[test]
fn random_writes_v2_512() {
    random_writes("cluster_size=512,compat=0.10", 4 << 20, 100, 50_000, 4);
}

#[test]
fn random_writes_2m() {
    random_writes("cluster_size=2M", 16 << 20, 20, 2_500_000, 5);
}

#[test]
fn options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let e = create_with(p("a"), Format::Qcow2, 1 << 20, &opts("frobnicate=1"))
        .err()
        .unwrap();
    assert_eq!(e.kind(), disk_io::ErrorKind::Unsupported);
    assert!(e.to_string().contains("frobnicate"), "{e}");
    for bad in [
        "cluster_size=1000",
        "cluster_size=4M",
        "cluster_size=256",
        "compat=0.9",
        "compat=0.10,compression_type=zstd",
        "compression_type=lz4",
        "compress=maybe",
    ] {
        assert!(
            create_with(p("b"), Format::Qcow2, 1 << 20, &opts(bad)).is_err(),
            "{bad}"
        );
        assert!(!p("b").exists(), "{bad} left a file");
    }
    let e = create_with(p("c"), Format::Raw, 1 << 20, &opts("compat=1.1"))
        .err()
        .unwrap();
    assert!(e.to_string().contains("compat"), "{e}");
}

/// `qemu-img info --output=json` of `name`.
fn info(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&sh(&format!("qemu-img info --output=json {name}"), dir)).unwrap()
}

#[test]
fn header_as_qemu_reads_it() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, o, compat, cs, ctype) in [
        ("a", "", "1.1", 65536, "zlib"),
        ("b", "compat=0.10,cluster_size=512", "0.10", 512, ""),
        (
            "c",
            "compression_type=zstd,cluster_size=2M",
            "1.1",
            2 << 20,
            "zstd",
        ),
    ] {
        let img = create_with(dir.path().join(name), Format::Qcow2, 5 << 30, &opts(o)).unwrap();
        img.flush().unwrap();
        drop(img);
        assert_clean(dir.path(), name);
        let v = info(dir.path(), name);
        assert_eq!(v["format"], "qcow2");
        assert_eq!(v["virtual-size"], 5u64 << 30);
        assert_eq!(v["cluster-size"], cs);
        assert_eq!(v["format-specific"]["data"]["compat"], compat, "{name}");
        if !ctype.is_empty() {
            assert_eq!(v["format-specific"]["data"]["compression-type"], ctype);
        }
    }
}

/// A child made by vdisk over a parent made by qemu, written by vdisk
/// (partial clusters copy the parent's bytes), read by qemu-io.
#[test]
fn child_over_qemu_parent() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("qemu-img create -q -f qcow2 base.qcow2 8M", d);
    sh(
        "qemu-io -c 'write -P 0x11 0 8M' -c 'write -P 0x22 1M 64k' base.qcow2 >/dev/null",
        d,
    );
    for o in ["", "compat=0.10,cluster_size=4k"] {
        let _ = std::fs::remove_file(d.join("child.qcow2"));
        let mut options = opts(o);
        options.set("backing_file", "base.qcow2").unwrap();
        let child = create_with(d.join("child.qcow2"), Format::Qcow2, 8 << 20, &options).unwrap();
        child.write_at(1000, &[0x33; 100]).unwrap();
        child
            .write_at((1 << 20) + 65536 - 50, &[0x44; 100])
            .unwrap();
        child.write_zeroes(3 << 20, 1 << 20).unwrap();
        child.discard(5 << 20, 4096).unwrap();
        child.write_zeroes((6 << 20) + 10, 10).unwrap();
        drop(child);
        assert_clean(d, "child.qcow2");
        let v = info(d, "child.qcow2");
        assert_eq!(v["backing-filename"], "base.qcow2");
        assert_eq!(v["backing-filename-format"], "qcow2");
        for (pattern, off, len) in [
            (0x11, 0, 1000),
            (0x33, 1000, 100),
            (0x11, 1100, 65536 - 1100),
            (0x22, 1 << 20, 65536 - 50),
            (0x44, (1 << 20) + 65536 - 50, 100),
            (0x11, (1 << 20) + 65536 + 50, 4096),
            (0x00, 3 << 20, 1 << 20),
            (0x11, 5 << 20, 4096),
            (0x11, 6 << 20, 10),
            (0x00, (6 << 20) + 10, 10),
            (0x11, (6 << 20) + 20, 4096),
        ] {
            let out = sh(
                &format!("qemu-io -r -c 'read -P {pattern} {off} {len}' child.qcow2"),
                d,
            );
            assert!(!out.contains("Pattern verification failed"), "{o}: {out}");
        }
    }
}

/// A child made by qemu-img, written by vdisk.
#[test]
fn qemu_child_written_by_vdisk() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("qemu-img create -q -f raw base.raw 4M", d);
    sh(
        "qemu-io -f raw -c 'write -P 0x55 0 4M' base.raw >/dev/null",
        d,
    );
    sh(
        "qemu-img create -q -f qcow2 -b base.raw -F raw -o cluster_size=16k child.qcow2 4M",
        d,
    );
    sh(
        "qemu-io -c 'write -P 0x66 100k 20k' child.qcow2 >/dev/null",
        d,
    );
    {
        let w = open_path(&d.join("child.qcow2")).unwrap();
        w.write_at(110 << 10, &[0x77; 3000]).unwrap();
        w.write_at(2 << 20, &[0x77; 3000]).unwrap();
        w.flush().unwrap();
    }
    assert_clean(d, "child.qcow2");
    let g = qemu_guest(d, "child.qcow2");
    let mut model = vec![0x55u8; 4 << 20];
    model[100 << 10..120 << 10].fill(0x66);
    model[110 << 10..(110 << 10) + 3000].fill(0x77);
    model[2 << 20..(2 << 20) + 3000].fill(0x77);
    assert_eq!(first_difference(&g, &model), None);
}

/// With `VDISK_CRASH_CHILD` set, the test below re-runs this binary as a
/// writer that prints each flushed generation and is killed mid-write.
const CHILD_ENV: &str = "VDISK_CRASH_CHILD";
const CRASH_SIZE: u64 = 8 << 20;

/// The data written at step `i`: a pattern naming the step.
fn step(i: u64, seed: u64) -> (u64, Vec<u8>) {
    let mut rng = Rng(seed ^ (i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
    let len = 1 + rng.below(100_000);
    let off = rng.below(CRASH_SIZE - len);
    let data = (0..len).map(|k| (i as u8) ^ (k as u8)).collect();
    (off, data)
}

#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (path, seed) = spec.split_once(':').unwrap();
    let seed: u64 = seed.parse().unwrap();
    let w = open_path(Path::new(path)).unwrap();
    for i in 0.. {
        let (off, data) = step(i, seed);
        w.write_at(off, &data).unwrap();
        if i % 50 == 49 {
            w.flush().unwrap();
            println!("flushed {i}");
        }
    }
}

#[test]
fn killed_writer_leaves_a_consistent_image() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let exe = std::env::current_exe().unwrap();
    for round in 0..10u64 {
        let name = format!("crash{round}.qcow2");
        let path = d.join(&name);
        let cs = ["cluster_size=512", "", "compat=0.10,cluster_size=4k"][round as usize % 3];
        drop(create_with(&path, Format::Qcow2, CRASH_SIZE, &opts(cs)).unwrap());
        let seed = round * 7919 + 1;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}:{seed}", path.display()))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150 + 61 * round));
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let flushed = text
            .lines()
            .filter_map(|l| l.strip_prefix("flushed "))
            .filter_map(|n| n.parse::<u64>().ok())
            .max();
        let (code, report) = qemu_check(d, &name);
        assert!(code == 0 || code == 3, "round {round}: {report}");
        // Replay the acknowledged writes; the image agrees on the bytes
        // no later write may have touched.
        eprintln!("round {round}: last flush after write {flushed:?}");
        let Some(last) = flushed else { continue };
        let mut model = vec![0u8; CRASH_SIZE as usize];
        let mut touched = vec![false; CRASH_SIZE as usize];
        for i in 0..=last {
            let (off, data) = step(i, seed);
            model[off as usize..off as usize + data.len()].copy_from_slice(&data);
        }
        // Writes after the last flush may or may not have landed.
        for i in last + 1..last + 200 {
            let (off, data) = step(i, seed);
            touched[off as usize..off as usize + data.len()].fill(true);
        }
        let guest = qemu_guest(d, &name);
        let bad = (0..model.len()).find(|&k| !touched[k] && guest[k] != model[k]);
        assert_eq!(bad, None, "round {round}: acknowledged data lost");
    }
}

#[test]
fn writer_is_shared_between_threads() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.qcow2");
    let w = Qcow2Writer::create(
        &path,
        8 << 20,
        &vdisk_format::qcow2::create::Params::default(),
        None,
    )
    .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let w = &w;
            s.spawn(move || {
                for k in 0..64u64 {
                    let off = (k * 4 + u64::from(t)) * 32768;
                    w.write_at(off, &[t + 1; 32768]).unwrap();
                }
            });
        }
    });
    drop(w);
    assert_clean(dir.path(), "t.qcow2");
    let g = qemu_guest(dir.path(), "t.qcow2");
    for (i, chunk) in g.chunks(32768).enumerate() {
        assert!(chunk.iter().all(|&b| b == (i % 4) as u8 + 1), "chunk {i}");
    }
}

/// Damaged images opened for writing: errors, never a panic or a hang.
#[test]
fn mutated_images_are_errors_not_panics() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f qcow2 -o cluster_size=4k good.qcow2 2M",
        d,
    );
    sh(
        "qemu-io -c 'write -P 1 0 100k' -c 'write -z 200k 8k' -c 'write -P 2 1M 12k' good.qcow2 >/dev/null",
        d,
    );
    let good = std::fs::read(d.join("good.qcow2")).unwrap();
    let mut rng = Rng(77);
    let path = d.join("bad.qcow2");
    for _ in 0..150 {
        let mut bad = good.clone();
        for _ in 0..1 + rng.below(8) {
            // Metadata lives in the first clusters: header, refcounts, L1, L2.
            let at = rng.below(6 * 4096.min(bad.len() as u64)) as usize;
            bad[at] = rng.next() as u8;
        }
        std::fs::write(&path, &bad).unwrap();
        let Ok(w) = open_path(&path) else { continue };
        let mut buf = vec![0u8; 10_000];
        let _ = w.write_at(rng.below((2 << 20) - 5000), &[3; 5000]);
        let _ = w.write_zeroes(rng.below(1 << 20), 70_000);
        let _ = w.discard(rng.below(1 << 20), 9000);
        let _ = w.read_at(rng.below((2 << 20) - 10_000), &mut buf);
        let _ = w.flush();
    }
}
