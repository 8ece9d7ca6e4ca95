//! `vdisk info --json` against `sfdisk --json` on tables made by sfdisk and
//! sgdisk, the GPT backup fallback, and broken tables.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use test_support::{have_all, sh};

fn vdisk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .args(args)
        .output()
        .unwrap()
}

fn info(path: &Path) -> (Value, String) {
    let out = vdisk(&["info", "--json", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}: {stderr}", path.display());
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

/// A loop device over a file, with 4096-byte logical sectors (sfdisk here
/// has no --sector-size), detached on drop.
struct Loop(String);

impl Loop {
    fn attach_4k(dir: &Path, file: &str) -> Loop {
        Loop(
            sh(&format!("losetup -f --show -b 4096 {file}"), dir)
                .trim()
                .to_owned(),
        )
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// (index, start, size, type) per partition, in bytes, types as vdisk prints them.
fn sfdisk_layout(dir: &Path, device: &str) -> Vec<(u64, u64, u64, String)> {
    let v: Value = serde_json::from_str(&sh(&format!("sfdisk --json {device}"), dir)).unwrap();
    let table = &v["partitiontable"];
    let label = table["label"].as_str().unwrap().to_owned();
    let unit = table["sectorsize"].as_u64().unwrap_or(512);
    table["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            let digits = node.len() - node.bytes().rev().take_while(u8::is_ascii_digit).count();
            let index: u64 = node[digits..].parse().unwrap();
            let kind = p["type"].as_str().unwrap();
            let kind = if label == "dos" {
                format!("{:#04x}", u8::from_str_radix(kind, 16).unwrap())
            } else {
                kind.to_uppercase()
            };
            (
                index,
                p["start"].as_u64().unwrap() * unit,
                p["size"].as_u64().unwrap() * unit,
                kind,
            )
        })
        .collect()
}

fn vdisk_layout(v: &Value) -> Vec<(u64, u64, u64, String)> {
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["index"].as_u64().unwrap(),
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn info_equals_sfdisk_json() {
    if !have_all(&["sfdisk", "sgdisk", "mkfs.fat", "losetup"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // MBR: 3 primaries and an extended partition holding 3 logicals.
    sh(
        "truncate -s 64M mbr.raw && printf 'label: dos\\n,8M,83,*\\n,8M,7\\n,8M,c\\n,,5\\n,6M,83\\n,6M,82\\n,,83\\n' | sfdisk -q mbr.raw",
        d,
    );
    // GPT with the usual 128 entries (sgdisk), and with 8 (sfdisk's table-length).
    sh(
        "truncate -s 64M gpt128.raw && sgdisk -n 1:2048:+8M -t 1:ef00 -c 1:EFI -n 2:0:+16M -t 2:8300 -c 2:'root fs' -n 3:0:0 -t 3:0700 gpt128.raw >/dev/null",
        d,
    );
    sh(
        "truncate -s 64M gpt8.raw && printf 'label: gpt\\ntable-length: 8\\n,4M,L\\n,4M,S\\n,,L\\n' | sfdisk -q gpt8.raw",
        d,
    );
    // 4096-byte logical sectors, through a loop device that has them.
    sh("truncate -s 64M gpt4k.raw", d);
    let dev = Loop::attach_4k(d, "gpt4k.raw");
    sh(
        &format!("printf 'label: gpt\\n,8M,L\\n,,L\\n' | sfdisk -q {}", dev.0),
        d,
    );
    let layout_4k = sfdisk_layout(d, &dev.0);
    drop(dev);
    for (file, label, count) in [
        ("mbr.raw", "mbr", 7),
        ("gpt128.raw", "gpt", 3),
        ("gpt8.raw", "gpt", 3),
        ("gpt4k.raw", "gpt", 2),
    ] {
        let (v, stderr) = info(&d.join(file));
        assert!(stderr.is_empty(), "{file}: {stderr}");
        assert_eq!(v["partition_table"], label, "{file}");
        let ours = vdisk_layout(&v);
        assert_eq!(ours.len(), count, "{file}: {ours:?}");
        let theirs = if file == "gpt4k.raw" {
            layout_4k.clone()
        } else {
            sfdisk_layout(d, file)
        };
        assert_eq!(ours, theirs, "{file}");
    }
    let (v, _) = info(&d.join("gpt128.raw"));
    assert_eq!(v["partitions"][1]["name"], "root fs");
    assert!(v["partitions"][0].get("name").is_some());
    let (v, _) = info(&d.join("mbr.raw"));
    assert!(
        v["partitions"][0].get("name").is_none(),
        "MBR partitions have no names"
    );

    // File systems inside partitions are named.
    sh("mkfs.fat -F 16 --offset 2048 mbr.raw 16384 >/dev/null", d);
    let (v, _) = info(&d.join("mbr.raw"));
    assert_eq!(v["partitions"][0]["filesystem"], "fat16");
    assert_eq!(v["partitions"][1]["filesystem"], Value::Null);
}

#[test]
fn zeroed_primary_gpt_reads_from_backup_with_a_warning() {
    if !have_all(&["sgdisk", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "truncate -s 32M g.raw && sgdisk -n 1:2048:+4M -n 2:0:0 g.raw >/dev/null",
        d,
    );
    let (before, _) = info(&d.join("g.raw"));
    sh(
        "dd if=/dev/zero of=g.raw bs=512 seek=1 count=1 conv=notrunc status=none",
        d,
    );
    let (after, stderr) = info(&d.join("g.raw"));
    assert_eq!(vdisk_layout(&after), vdisk_layout(&before));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("warning")
            && stderr.contains("primary GPT header at LBA 1 is missing")
            && stderr.contains("backup"),
        "{stderr}"
    );
    // A CRC mismatch in the primary entry array is reported the same way.
    sh(
        "truncate -s 32M h.raw && sgdisk -n 1:2048:+4M h.raw >/dev/null && printf 'x' | dd of=h.raw bs=1 seek=1100 conv=notrunc status=none",
        d,
    );
    let (_, stderr) = info(&d.join("h.raw"));
    assert!(stderr.contains("entry array CRC-32"), "{stderr}");
}

fn assert_error(path: &Path, needles: &[&str]) {
    let out = vdisk(&["info", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in {stderr}");
    }
}

#[test]
fn broken_tables_are_errors_naming_table_and_offset() {
    if !have_all(&["sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let make = |name: &str| {
        sh(
            &format!(
                "truncate -s 16M {name} && printf 'label: dos\\n,4M,83\\n,,5\\n,2M,83\\n,,83\\n' | sfdisk -q {name}"
            ),
            d,
        );
        d.join(name)
    };
    // The second EBR's link points back at the first EBR: a loop.
    let looped = make("loop.raw");
    let second_ebr: u64 = sh(
        "sfdisk --json loop.raw | grep -o '\"start\": *[0-9]*' | tail -1 | grep -o '[0-9]*$'",
        d,
    )
    .trim()
    .parse::<u64>()
    .unwrap()
        - 2048;
    let link = second_ebr * 512 + 446 + 16;
    // type 0x05, relative start 0 (= the first EBR), one sector.
    sh(
        &format!(
            "printf '\\000\\000\\000\\000\\005\\000\\000\\000\\000\\000\\000\\000\\001\\000\\000\\000' | dd of=loop.raw bs=1 seek={link} conv=notrunc status=none"
        ),
        d,
    );
    assert_error(&looped, &["EBR chain loops", "at offset 0x"]);

    // Primary 1 grows past the end of the disk.
    let past = make("past.raw");
    sh(
        "printf '\\377\\377\\377\\000' | dd of=past.raw bs=1 seek=458 conv=notrunc status=none",
        d,
    );
    assert_error(
        &past,
        &["MBR partition 1", "past the end", "at offset 0x1be"],
    );

    // Primary 2 (the extended one) starts inside primary 1.
    let overlap = make("overlap.raw");
    sh(
        "printf '\\000\\020\\000\\000' | dd of=overlap.raw bs=1 seek=470 conv=notrunc status=none",
        d,
    );
    assert_error(&overlap, &["overlap", "at offset 0x"]);
}
