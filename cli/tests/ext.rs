//! `vdisk ls`, `cat` and `manifest` on ext volumes made by mkfs.ext4 -d:
//! the manifest equals the source tree (paths, types, sizes, sha256,
//! targets, times, modes, owners, links, xattrs), hard links share an
//! inode, and the inode numbers are those The Sleuth Kit reads.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use test_support::{have, have_all, sh};

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
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn lines(out: &[u8]) -> BTreeMap<String, Value> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["path"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn build_tree(root: &Path) -> bool {
    std::fs::create_dir_all(root.join("deep/a/b/c/d/e")).unwrap();
    std::fs::write(root.join("deep/a/b/c/d/e/leaf.txt"), b"leaf\n").unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::hard_link(root.join("big.bin"), root.join("deep/big-link")).unwrap();
    std::fs::write(root.join("ünïcødé ✓"), b"names\n").unwrap();
    std::os::unix::fs::symlink("deep/a", root.join("fast")).unwrap();
    std::os::unix::fs::symlink("x".repeat(120), root.join("slow")).unwrap();
    std::fs::create_dir(root.join("many")).unwrap();
    for i in 0..200 {
        std::fs::write(root.join(format!("many/file-{i:04}")), format!("{i}")).unwrap();
    }
    sh(
        "truncate -s 3M sparse && printf X | dd of=sparse bs=1 seek=2000000 conv=notrunc status=none \
         && printf o > owned && chown 70000:80000 owned && chmod 0604 owned",
        root,
    );
    // setfattr is optional here: without it the xattr part is skipped.
    let xattrs = Command::new("setfattr")
        .args(["-n", "user.colour", "-v", "blue"])
        .arg(root.join("owned"))
        .status()
        .is_ok_and(|s| s.success());
    if !xattrs {
        eprintln!("xattrs not checked: setfattr is not available");
    }
    xattrs
}

/// The manifest the tree should give.
fn expected(root: &Path, xattrs: bool) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let path = format!("/{}", p.strip_prefix(root).unwrap().to_str().unwrap());
            let mut v = serde_json::json!({
                "path": path,
                "mtime": md.mtime(),
                "mode": md.mode(),
                "uid": md.uid(),
                "gid": md.gid(),
            });
            if md.is_dir() {
                stack.push(p.clone());
                v["type"] = "dir".into();
            } else if md.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                let t = t.to_str().unwrap();
                v["type"] = "symlink".into();
                v["target"] = t.into();
                v["size"] = t.len().into();
                v["nlink"] = 1.into();
            } else {
                let data = std::fs::read(&p).unwrap();
                v["type"] = "file".into();
                v["size"] = data.len().into();
                v["sha256"] = format!("{:x}", Sha256::digest(&data)).into();
                v["nlink"] = md.nlink().into();
            }
            if xattrs && path == "/owned" {
                v["xattrs"] = serde_json::json!({
                    "user.colour": base64::engine::general_purpose::STANDARD.encode(b"blue")
                });
            }
            out.insert(path, v);
        }
    }
    out
}

/// Every expected field equals the manifest's (fields the tree cannot
/// predict, like directory sizes and inode numbers, are checked elsewhere).
fn compare(got: &BTreeMap<String, Value>, want: &BTreeMap<String, Value>, what: &str) {
    let paths: Vec<_> = got
        .keys()
        .filter(|p| !p.starts_with("/lost+found"))
        .collect();
    assert_eq!(paths, want.keys().collect::<Vec<_>>(), "{what}");
    assert!(got.contains_key("/lost+found"), "{what}");
    for (path, w) in want {
        let g = &got[path];
        for (k, v) in w.as_object().unwrap() {
            assert_eq!(&g[k], v, "{what}: {path}: field {k}");
        }
        if w.get("xattrs").is_none() {
            assert!(g.get("xattrs").is_none(), "{what}: {path}: {g}");
        }
        assert!(g["inode"].as_u64().unwrap() >= 2);
    }
    assert_eq!(got["/big.bin"]["inode"], got["/deep/big-link"]["inode"]);
}

#[test]
fn manifest_ls_cat_on_ext() {
    if !have_all(&["mkfs.ext4", "qemu-img", "sfdisk", "fls"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = d.join("tree");
    let xattrs = build_tree(&tree);
    let want = expected(&tree, xattrs);
    sh(
        "truncate -s 16M fs.img && mkfs.ext4 -q -F -L label1 -d tree fs.img \
         && qemu-img convert -O qcow2 fs.img fs.qcow2 \
         && truncate -s 20M disk.img && printf 'label: dos\\n2048,,83\\n' | sfdisk -q disk.img \
         && mkfs.ext4 -q -F -E offset=1048576 -d tree disk.img 16M",
        d,
    );
    let img = d.join("fs.img");
    let img_s = img.to_str().unwrap();
    let got = lines(&ok(&["manifest", img_s]));
    compare(&got, &want, "raw");
    // Inode numbers are the ones fls reads.
    let fls = sh(&format!("fls -r -p {img_s}"), d);
    for line in fls
        .lines()
        .filter(|l| !l.contains(" * ") && !l.contains("$Orphan"))
    {
        let (head, path) = line.split_once(":\t").unwrap();
        let ino: u64 = head.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(got[&format!("/{path}")]["inode"], ino, "{path}");
    }
    // The same through qcow2 and through partition 1 of an MBR disk.
    let qcow = lines(&ok(&["manifest", d.join("fs.qcow2").to_str().unwrap()]));
    assert_eq!(qcow, got);
    let part = lines(&ok(&[
        "manifest",
        d.join("disk.img").to_str().unwrap(),
        "--part",
        "1",
    ]));
    compare(&part, &want, "partition 1");
    // ls: one directory, or recursive.
    let ls = lines(&ok(&["ls", img_s, "/deep", "--json"]));
    assert_eq!(ls.keys().collect::<Vec<_>>(), ["/deep/a", "/deep/big-link"]);
    let ls = lines(&ok(&["ls", img_s, "-r", "--json"]));
    assert_eq!(ls.len(), got.len());
    // cat: bytes equal, holes as zeros.
    assert_eq!(
        ok(&["cat", img_s, "/big.bin"]),
        std::fs::read(tree.join("big.bin")).unwrap()
    );
    assert_eq!(
        ok(&["cat", img_s, "/sparse"]),
        std::fs::read(tree.join("sparse")).unwrap()
    );
    assert_eq!(ok(&["cat", img_s, "/many/file-0199"]), b"199");
    let info: Value = serde_json::from_slice(&ok(&["info", "--json", img_s])).unwrap();
    assert_eq!(info["filesystem"], "ext4", "{info}");
}

#[test]
fn ext_errors_are_one_line() {
    if !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "mkdir t && echo x > t/f && truncate -s 4M fs.img && mkfs.ext4 -q -F -d t fs.img",
        d,
    );
    let img = d.join("fs.img");
    let img_s = img.to_str().unwrap();
    for args in [
        vec!["cat", img_s, "/nope"],
        vec!["cat", img_s, "/f", "--stream", "s"],
        vec!["ls", img_s, "/f/x"],
    ] {
        let out = vdisk(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // A corrupt superblock checksum: one line naming the structure.
    let mut data = std::fs::read(&img).unwrap();
    data[1024 + 0x30] ^= 1; // s_wtime, under the superblock checksum
    std::fs::write(&img, &data).unwrap();
    let out = vdisk(&["manifest", img_s]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("superblock"), "{err}");
}
