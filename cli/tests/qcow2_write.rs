//! `vdisk convert -O qcow2` and `vdisk create -O qcow2` against qemu-img:
//! every option combination passes `qemu-img check` clean, compares equal
//! to the source, shows the asked-for header in `qemu-img info`, and takes
//! no more space than qemu-img's own conversion.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use test_support::{have_all, sh};

fn vdisk(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "vdisk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A 24 MiB raw disk with a GPT and scattered random, text and pattern
/// data between holes and zeros.
fn source(d: &Path) {
    sh(
        "truncate -s 24M src.raw && printf 'label: gpt\\n2048,,L\\n' | sfdisk -q src.raw",
        d,
    );
    sh(
        "head -c 3M /dev/urandom > rnd && \
         seq 1 400000 | head -c 5M > txt && \
         dd if=rnd of=src.raw bs=64k seek=16 conv=notrunc status=none && \
         dd if=txt of=src.raw bs=4k seek=1400 conv=notrunc status=none && \
         dd if=rnd of=src.raw bs=1k count=5 seek=17000 conv=notrunc status=none && \
         dd if=txt of=src.raw bs=512 count=3 seek=45001 conv=notrunc status=none && \
         qemu-io -f raw -c 'write -P 0x5a 20M 700k' -c 'write -z 20M 64k' src.raw >/dev/null",
        d,
    );
}

#[test]
fn convert_to_qcow2_matches_qemu_img() {
    if !have_all(&["qemu-img", "qemu-io", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    source(d);
    // (vdisk -o, qemu-img options, compat, cluster size, compression type)
    for (ours, theirs, compat, cs, ctype) in [
        ("", "", "1.1", 65536, "zlib"),
        ("compat=0.10", "-o compat=0.10", "0.10", 65536, ""),
        (
            "cluster_size=512",
            "-o cluster_size=512",
            "1.1",
            512,
            "zlib",
        ),
        (
            "cluster_size=2M",
            "-o cluster_size=2M",
            "1.1",
            2 << 20,
            "zlib",
        ),
        ("compress=on", "-c", "1.1", 65536, "zlib"),
        (
            "compress=on,compression_type=zstd",
            "-c -o compression_type=zstd",
            "1.1",
            65536,
            "zstd",
        ),
        (
            "compress=on,compat=0.10,cluster_size=4k",
            "-c -o compat=0.10,cluster_size=4k",
            "0.10",
            4096,
            "",
        ),
    ] {
        let _ = std::fs::remove_file(d.join("out.qcow2"));
        let _ = std::fs::remove_file(d.join("ref.qcow2"));
        let mut args = vec!["convert", "-q", "src.raw", "out.qcow2", "-O", "qcow2"];
        if !ours.is_empty() {
            args.extend(["-o", ours]);
        }
        ok(&vdisk(&args, d));
        sh("qemu-img check -q out.qcow2", d);
        sh("qemu-img compare -q -f raw -F qcow2 src.raw out.qcow2", d);
        let v: serde_json::Value =
            serde_json::from_str(&sh("qemu-img info --output=json out.qcow2", d)).unwrap();
        assert_eq!(v["format"], "qcow2", "{ours}");
        assert_eq!(v["virtual-size"], 24u64 << 20, "{ours}");
        assert_eq!(v["cluster-size"], cs, "{ours}");
        assert_eq!(v["format-specific"]["data"]["compat"], compat, "{ours}");
        if !ctype.is_empty() {
            assert_eq!(
                v["format-specific"]["data"]["compression-type"], ctype,
                "{ours}"
            );
        }
        sh(
            &format!("qemu-img convert -f raw -O qcow2 {theirs} src.raw ref.qcow2"),
            d,
        );
        let (a, b) = (
            allocated(&d.join("out.qcow2")),
            allocated(&d.join("ref.qcow2")),
        );
        eprintln!("{ours:40} vdisk {a:>10}  qemu-img {b:>10}");
        assert!(
            a <= b + b / 100,
            "{ours}: {a} bytes allocated, qemu-img {b}"
        );
    }
}

#[test]
fn create_child_with_backing() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("qemu-img create -q -f qcow2 parent.qcow2 16M", d);
    sh(
        "qemu-io -c 'write -P 0x42 0 16M' parent.qcow2 >/dev/null",
        d,
    );
    ok(&vdisk(
        &[
            "create",
            "-O",
            "qcow2",
            "child.qcow2",
            "16M",
            "--backing",
            "parent.qcow2",
        ],
        d,
    ));
    sh("qemu-img check -q child.qcow2", d);
    let v: serde_json::Value =
        serde_json::from_str(&sh("qemu-img info --output=json child.qcow2", d)).unwrap();
    assert_eq!(v["backing-filename"], "parent.qcow2");
    assert_eq!(v["backing-filename-format"], "qcow2");
    assert_eq!(v["virtual-size"], 16u64 << 20);
    sh("qemu-io -c 'write -P 0x43 1M 1k' child.qcow2 >/dev/null", d);
    let out = sh(
        "qemu-io -r -c 'read -P 0x42 0 1M' -c 'read -P 0x43 1M 1k' -c 'read -P 0x42 1025k 63k' child.qcow2",
        d,
    );
    assert!(!out.contains("verification failed"), "{out}");
    // Our reader sees the same chain.
    let out = vdisk(&["compare", "child.qcow2", "child.qcow2"], d);
    assert_eq!(out.status.code(), Some(0));
    // Options are checked; a missing parent is an error; nothing is left.
    for args in [
        vec![
            "create",
            "-O",
            "qcow2",
            "x.qcow2",
            "1M",
            "-o",
            "cluster_size=3k",
        ],
        vec![
            "create",
            "-O",
            "qcow2",
            "x.qcow2",
            "1M",
            "--backing",
            "nope.qcow2",
        ],
        vec!["create", "-O", "raw", "x.qcow2", "1M", "-o", "compat=1.1"],
        vec![
            "convert",
            "child.qcow2",
            "x.qcow2",
            "-O",
            "qcow2",
            "-o",
            "backing_file=parent.qcow2",
        ],
    ] {
        let out = vdisk(&args, d);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!d.join("x.qcow2").exists(), "{args:?}");
    }
}

/// A parent (qcow2 or raw) and a qcow2 child written by qemu-io, copied
/// into two directories: one for qemu-img, one for vdisk.
fn chain(d: &Path, parent_fmt: &str) {
    for sub in ["q", "v"] {
        let s = d.join(sub);
        std::fs::create_dir_all(&s).unwrap();
        sh(&format!("qemu-img create -q -f {parent_fmt} parent 8M"), &s);
        sh(
            &format!(
                "qemu-io -f {parent_fmt} -c 'write -P 0x11 0 6M' -c 'write -P 0x12 7M 512k' parent >/dev/null"
            ),
            &s,
        );
        sh("qemu-img create -q -f raw other 8M", &s);
        sh(
            "qemu-io -f raw -c 'write -P 0x11 0 2M' -c 'write -P 0x21 3M 1M' other >/dev/null",
            &s,
        );
        sh(
            &format!(
                "qemu-img create -q -f qcow2 -o cluster_size=16k -b parent -F {parent_fmt} child 8M"
            ),
            &s,
        );
        sh(
            "qemu-io -c 'write -P 0x31 100k 40k' -c 'write -z 1M 64k' -c 'write -P 0x32 5M 1k' -c 'write -P 0x33 7M 16k' child >/dev/null",
            &s,
        );
    }
}

#[test]
fn commit_matches_qemu_img() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    for parent_fmt in ["qcow2", "raw"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        chain(d, parent_fmt);
        let (q, v) = (d.join("q"), d.join("v"));
        sh("qemu-img commit -q child", &q);
        ok(&vdisk(&["commit", "child"], &v));
        if parent_fmt == "qcow2" {
            sh("qemu-img check -q parent", &v);
        }
        sh("qemu-img check -q child", &v);
        sh(
            &format!("qemu-img compare -q -f {parent_fmt} -F {parent_fmt} ../q/parent parent"),
            &v,
        );
        sh("qemu-img compare -q ../q/child child", &v);
        // The child holds nothing any more.
        let map = sh("qemu-img map --output=json child", &v);
        let runs: Vec<serde_json::Value> = serde_json::from_str(&map).unwrap();
        assert!(runs.iter().all(|r| r["depth"] != 0), "{map}");
    }
}

#[test]
fn rebase_matches_qemu_img() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    chain(d, "qcow2");
    let (q, v) = (d.join("q"), d.join("v"));
    sh("qemu-img convert -O raw child before.raw", &v);
    sh("qemu-img rebase -q -b other -F raw child", &q);
    ok(&vdisk(&["rebase", "child", "--backing", "other"], &v));
    sh("qemu-img check -q child", &v);
    let info: serde_json::Value =
        serde_json::from_str(&sh("qemu-img info --output=json child", &v)).unwrap();
    assert_eq!(info["backing-filename"], "other");
    assert_eq!(info["backing-filename-format"], "raw");
    sh("qemu-img compare -q -f raw -F qcow2 before.raw child", &v);
    sh("qemu-img compare -q ../q/child child", &v);
    // No more space than qemu-img's rebase.
    let (a, b) = (allocated(&v.join("child")), allocated(&q.join("child")));
    assert!(
        a <= b + b / 100,
        "rebase: {a} bytes allocated, qemu-img {b}"
    );
}
