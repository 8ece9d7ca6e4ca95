//! The command line against its contract (shared/spec/cli.md) and against
//! qemu-img on the same images.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output};

use test_support::{have_all, sh};

/// Runs `vdisk` with `args`.
fn vdisk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .args(args)
        .output()
        .unwrap()
}

/// Asserts exit status 2, no stdout, and exactly one line on stderr; returns it.
fn assert_one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr:?}");
    assert!(stderr.starts_with("vdisk: "), "{stderr}");
    assert!(out.stdout.is_empty());
    stderr
}

#[test]
fn non_images_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("empty"), b"").unwrap();
    // Deterministic "random" bytes (xorshift).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(d.join("random"), random).unwrap();
    fs::create_dir(d.join("dir")).unwrap();
    for (name, expect) in [
        ("empty", "empty file"),
        ("random", "at offset 0x0"),
        ("dir", "is a directory"),
        ("missing", "No such file"),
    ] {
        let path = d.join(name);
        let p = path.to_str().unwrap();
        for args in [vec!["info", p], vec!["info", "--json", p]] {
            let line = assert_one_line_error(&vdisk(&args));
            assert!(line.contains(p) && line.contains(expect), "{line}");
        }
        let out = d.join("out.raw");
        let line =
            assert_one_line_error(&vdisk(&["convert", p, out.to_str().unwrap(), "-O", "raw"]));
        assert!(line.contains(expect), "{line}");
        assert!(!out.exists());
    }
    // Nothing is left behind, not even the temporary output.
    let left: Vec<_> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    for args in [
        vec![],
        vec!["convert"],
        vec!["convert", "a", "b", "-O", "qcow3"],
        vec!["convert", "a", "b", "-O", "raw", "--mode", "fast"],
        vec!["info", "x", "--bogus"],
        vec!["create", "-O", "raw", "x", "12Q"],
    ] {
        assert_one_line_error(&vdisk(&args));
    }
    assert_eq!(vdisk(&["--help"]).status.code(), Some(0));
    assert_eq!(vdisk(&["--version"]).status.code(), Some(0));
}

#[test]
fn create_info_convert_compare_on_raw() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = d.join("a.raw");
    let a_s = a.to_str().unwrap();
    let out = vdisk(&["create", "-O", "raw", a_s, "64M"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::metadata(&a).unwrap().len(), 64 << 20);

    let info = vdisk(&["info", "--json", a_s]);
    assert!(info.status.success());
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["format"], "raw");
    assert_eq!(v["virtual_size"], 64 << 20);
    assert_eq!(v["partition_table"], serde_json::Value::Null);
    assert_eq!(v["partitions"], serde_json::json!([]));
    assert_eq!(v["backing_chain"], serde_json::json!([]));

    // Write a little data, convert, compare.
    let disk = disk_io::FileDisk::open_rw(&a).unwrap();
    disk_io::WriteAt::write_at(&disk, 5 << 20, b"guest data").unwrap();
    let b = d.join("b.raw");
    let b_s = b.to_str().unwrap();
    let out = vdisk(&["convert", "--quiet", a_s, b_s, "-O", "raw"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert!(
        fs::metadata(&b).unwrap().blocks() * 512 <= 64 << 10,
        "output is not sparse"
    );
    assert_eq!(vdisk(&["compare", a_s, b_s]).status.code(), Some(0));

    disk_io::WriteAt::write_at(&disk, 7 << 20, b"x").unwrap();
    let out = vdisk(&["compare", a_s, b_s]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}", 7 << 20)));

    // Options raw does not take, formats not written yet, logical mode (no
    // writer wired in yet), shrinking, converting onto the source.
    for args in [
        vec!["convert", a_s, "c", "-O", "raw", "-o", "compat=1.1"],
        vec!["convert", a_s, "c", "-O", "qcow2", "-o", "frobnicate=1"],
        vec!["convert", a_s, "c", "-O", "raw", "--mode", "logical"],
        vec!["convert", a_s, "c", "-O", "raw", "--size", "1M"],
        vec!["convert", a_s, a_s, "-O", "raw"],
    ] {
        assert_one_line_error(&vdisk(&args));
    }
    assert!(!d.join("c").exists());
}

#[test]
fn info_names_tables_and_file_systems() {
    if !have_all(&["sfdisk", "mkfs.ext4", "mkfs.fat"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "truncate -s 32M mbr.raw && printf 'label: dos\\n2048,,83\\n' | sfdisk -q mbr.raw",
        d,
    );
    sh(
        "truncate -s 32M gpt.raw && printf 'label: gpt\\n2048,,L\\n' | sfdisk -q gpt.raw",
        d,
    );
    sh("truncate -s 32M ext.raw && mkfs.ext4 -q ext.raw", d);
    sh(
        "truncate -s 32M fat.raw && mkfs.fat -F 16 fat.raw >/dev/null",
        d,
    );
    for (file, key, value) in [
        ("mbr.raw", "partition_table", "mbr"),
        ("gpt.raw", "partition_table", "gpt"),
        ("ext.raw", "filesystem", "ext4"),
        ("fat.raw", "filesystem", "fat16"),
    ] {
        let out = vdisk(&["info", "--json", d.join(file).to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[key], value, "{file}: {v}");
    }
}

#[test]
fn convert_matches_qemu_img() {
    if !have_all(&["qemu-img", "qemu-io", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A 256 MiB sparse disk with a table and scattered data, some of it zeros.
    sh(
        "qemu-img create -q -f raw src.raw 256M && printf 'label: gpt\\n2048,,L\\n' | sfdisk -q src.raw",
        d,
    );
    let mut cmds = String::from("qemu-io -f raw");
    for i in 0..40u64 {
        let off = (1 << 20) + i * 6_291_456 + (i % 7) * 65536;
        let pattern = if i.is_multiple_of(5) { 0 } else { i + 1 };
        cmds += &format!(" -c 'write -P {pattern} {off} 300k'");
    }
    sh(&format!("{cmds} src.raw >/dev/null"), d);
    let (src, ours) = (d.join("src.raw"), d.join("ours.raw"));
    let out = vdisk(&[
        "convert",
        src.to_str().unwrap(),
        ours.to_str().unwrap(),
        "-O",
        "raw",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sh("qemu-img convert -f raw -O raw src.raw theirs.raw", d);
    sh("cmp src.raw ours.raw && cmp theirs.raw ours.raw", d);
    sh("qemu-img compare -f raw -F raw src.raw ours.raw", d);
    let ours = fs::metadata(&ours).unwrap().blocks();
    let theirs = fs::metadata(d.join("theirs.raw")).unwrap().blocks();
    let src = fs::metadata(&src).unwrap().blocks();
    // As sparse as qemu-img's output, and never more than the input.
    assert!(ours <= theirs, "ours {ours} blocks, qemu-img {theirs}");
    assert!(ours <= src, "ours {ours} blocks, source {src}");
}

#[test]
fn file_system_addressing_errors_are_one_line() {
    if !have_all(&["sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "truncate -s 4M t.raw && printf 'label: dos\\n2048,,83\\n' | sfdisk -q t.raw",
        d,
    );
    let p = d.join("t.raw");
    let p = p.to_str().unwrap();
    // A table but no --part: the partitions are named.
    let line = assert_one_line_error(&vdisk(&["ls", p]));
    assert!(line.contains("--part N (1)"), "{line}");
    // A partition that does not exist.
    let line = assert_one_line_error(&vdisk(&["manifest", p, "--part", "7"]));
    assert!(line.contains("no partition 7"), "{line}");
    // A partition with nothing readable in it.
    let line = assert_one_line_error(&vdisk(&["cat", p, "--part", "1", "/x"]));
    assert!(line.contains("partition 1 holds no file system"), "{line}");
}
