//! `vdisk ls`, `cat` and `manifest` on FAT volumes made by mkfs.fat and
//! mcopy: every name, type, size, sha256 and mtime equals the source tree.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sha2::{Digest, Sha256};
use test_support::{have_all, sh, testdata};

fn vdisk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Vec<u8> {
    let out = vdisk(args);
    assert!(
        out.status.success(),
        "vdisk {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes the source tree; returns path -> (is_dir, contents, mtime).
/// `full`: with a 2 MiB file and a directory of 2,000 entries (the small
/// variant fits a 1.44 MB floppy).
fn make_tree(root: &Path, full: bool) -> BTreeMap<String, (bool, Vec<u8>, u64)> {
    let mut t = 1_700_000_001u64;
    let mut pattern = 7u32;
    let big: Vec<u8> = (0..(2 << 20) + 333)
        .map(|_| {
            pattern = pattern.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (pattern >> 16) as u8
        })
        .collect();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("café.txt".into(), b"accent".to_vec()),
        ("中文 名字.txt".into(), b"cjk".to_vec()),
        (
            "a b c/d e f/g/h/i/j/deep.txt".into(),
            b"six levels".to_vec(),
        ),
        (format!("{}.bin", "x".repeat(220)), b"long".to_vec()),
        ("lower.txt".into(), b"lower".to_vec()),
    ];
    if full {
        files.push(("big/big.bin".into(), big));
        for i in 0..2000 {
            files.push((
                format!("many/{i:04} entry, ünïcode 名前.txt"),
                format!("{i}").into_bytes(),
            ));
        }
    } else {
        files.push(("big/big.bin".into(), big[..100_000].to_vec()));
    }
    let mut out = BTreeMap::new();
    for (path, data) in files {
        let p = root.join(&path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &data).unwrap();
        t += 3;
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(t))
            .unwrap();
        let mut dir = Path::new(&path).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            out.insert(format!("/{}", d.display()), (true, vec![], 0));
            dir = d.parent();
        }
        out.insert(format!("/{path}"), (false, data, t));
    }
    out
}

#[test]
fn manifest_ls_and_cat_match_the_tree() {
    if !have_all(&["mkfs.fat", "mcopy", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let full = make_tree(&d.join("t"), true);
    let small = make_tree(&d.join("s"), false);
    sh(
        "mkfs.fat -F 32 -n FATCLI -C f32.img 65536 >/dev/null \
         && cd t && TZ=UTC LC_ALL=C.UTF-8 mcopy -s -m -i ../f32.img * :: && cd .. \
         && mkfs.fat -C f12.img 1440 >/dev/null \
         && cd s && TZ=UTC LC_ALL=C.UTF-8 mcopy -s -m -i ../f12.img * :: && cd .. \
         && truncate -s 40M part.img && printf 'label: dos\\n2048,,6\\n' | sfdisk -q part.img \
         && mkfs.fat -F 16 --offset 2048 part.img >/dev/null \
         && cd t && TZ=UTC LC_ALL=C.UTF-8 mcopy -s -m -i ../part.img@@1M * ::",
        d,
    );
    for (args, tree) in [
        (vec!["f32.img"], &full),
        (vec!["part.img", "--part", "1"], &full),
        (vec!["f12.img"], &small),
    ] {
        let image = d.join(args[0]);
        let image = image.to_str().unwrap();
        let rest = &args[1..];
        let manifest = lines(&ok(&[&["manifest", image], rest].concat()));
        let paths: Vec<&str> = manifest
            .iter()
            .map(|v| v["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, tree.keys().map(String::as_str).collect::<Vec<_>>());
        let mut inodes = vec![];
        for v in &manifest {
            let path = v["path"].as_str().unwrap();
            let (is_dir, data, mtime) = &tree[path];
            for absent in ["mode", "uid", "gid", "nlink", "streams", "xattrs"] {
                assert!(v.get(absent).is_none(), "{path}: {absent}");
            }
            inodes.push(v["inode"].as_u64().unwrap());
            if *is_dir {
                assert_eq!(v["type"], "dir", "{path}");
                assert_eq!(v["size"], 0, "{path}");
            } else {
                assert_eq!(v["type"], "file", "{path}");
                assert_eq!(v["size"].as_u64().unwrap(), data.len() as u64, "{path}");
                assert_eq!(v["sha256"].as_str().unwrap(), sha(data), "{path}");
                let got = v["mtime"].as_i64().unwrap();
                assert!((got - *mtime as i64).abs() < 2, "{path}: {got} vs {mtime}");
                assert_eq!(v["attrs"], serde_json::json!(["archive"]), "{path}");
            }
        }
        inodes.sort();
        inodes.dedup();
        assert_eq!(inodes.len(), manifest.len(), "inodes are unique");

        // ls of one directory, and cat (names looked up without case).
        let listed = lines(&ok(
            &[&["ls", image], rest, &["--json", "/A B C/D E F"]].concat()
        ));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["path"], "/A B C/D E F/g");
        let human = String::from_utf8(ok(&[&["ls", image], rest].concat())).unwrap();
        assert!(
            human.contains("café.txt") && human.contains("中文 名字.txt"),
            "{human}"
        );
        let big = ok(&[&["cat", image], rest, &["/BIG/Big.bin"]].concat());
        assert!(big == tree["/big/big.bin"].1);
        assert_eq!(
            ok(&[&["cat", image], rest, &["/CAFÉ.TXT"]].concat()),
            b"accent"
        );
        assert!(ok(&[&["cat", image], rest, &["/empty"]].concat()).is_empty());
        let out = vdisk(&[&["cat", image], rest, &["/no such"]].concat());
        assert_eq!(out.status.code(), Some(2));
    }
    let out = ok(&["info", "--json", d.join("f32.img").to_str().unwrap()]);
    let info: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(info["filesystem"], "fat32");
}

#[test]
fn shared_fat12_manifest() {
    let Some(path) = testdata("fat-rust-fatfs/fat12.img") else {
        return;
    };
    let manifest = lines(&ok(&["manifest", path.to_str().unwrap()]));
    let long = manifest.iter().find(|v| v["path"] == "/long.txt").unwrap();
    assert_eq!(long["size"], 14000);
    assert_eq!(
        long["sha256"].as_str().unwrap(),
        sha(&b"Rust is cool!\n".repeat(1000))
    );
    for p in [
        "/short.txt",
        "/very/long/path/test.txt",
        "/very-long-dir-name/very-long-file-name.txt",
    ] {
        assert!(manifest.iter().any(|v| v["path"] == p), "{p}");
    }
}

#[test]
fn a_looping_chain_is_a_one_line_error() {
    if !have_all(&["mkfs.fat", "mcopy"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One sector per cluster, 1 reserved sector: FAT 1 at byte 512; the
    // file's clusters are 2, 3, 4, ...: make cluster 4 point back to 2.
    sh(
        "mkfs.fat -F 16 -s 1 -R 1 -C loop.img 8192 >/dev/null && head -c 5000 /dev/zero > f \
         && mcopy -i loop.img f :: && printf '\\002\\000' | dd of=loop.img bs=1 seek=$((512 + 8)) conv=notrunc status=none",
        d,
    );
    let image = d.join("loop.img");
    let out = vdisk(&["cat", image.to_str().unwrap(), "/f"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("loops back") && stderr.contains("offset 0x"),
        "{stderr}"
    );
    let out = vdisk(&["manifest", image.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}
