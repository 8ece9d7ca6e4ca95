//! `vdisk ls`, `cat` and `manifest` on NTFS volumes made by mkntfs and
//! filled through ntfs-3g, inside an MBR partition of a qcow2 image.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::process::{Command, Output};

use serde_json::Value;
use test_support::{have_all, sh};

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

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ls_cat_manifest_on_ntfs() {
    if !have_all(&[
        "mkntfs",
        "ntfs-3g",
        "sfdisk",
        "qemu-img",
        "python3",
        "sha256sum",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An MBR disk with one NTFS partition at 1 MiB.
    sh(
        "truncate -s 40M d.raw && echo 'start=2048, type=7' | sfdisk -q d.raw && \
         truncate -s 32M v.img && mkntfs -q -F -Q -c 4096 -L data v.img >/dev/null 2>&1 && mkdir mnt",
        d,
    );
    if !Command::new("ntfs-3g")
        .args(["v.img", "mnt"])
        .current_dir(d)
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("skipped: cannot mount with ntfs-3g (no FUSE here?)");
        return;
    }
    let fill = "mkdir -p mnt/docs/sub && printf 'hello\\n' > mnt/docs/a.txt && \
        head -c 300000 /dev/urandom > mnt/docs/sub/big.bin && ln mnt/docs/a.txt mnt/docs/hard.txt && \
        ln -s a.txt mnt/docs/link && : > mnt/empty && \
        python3 -c \"import os; os.setxattr('mnt/docs/a.txt', 'user.Zone.Identifier', b'[ZoneTransfer]')\" && \
        cp mnt/docs/sub/big.bin big.copy";
    let out = Command::new("sh")
        .args(["-c", fill])
        .current_dir(d)
        .output()
        .unwrap();
    sh("umount mnt", d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sh(
        "dd if=v.img of=d.raw bs=1M seek=1 conv=notrunc status=none && qemu-img convert -O qcow2 d.raw d.qcow2",
        d,
    );
    let img = d.join("d.qcow2");
    let img = img.to_str().unwrap();

    // ls of the root: no metadata files, sorted.
    let root = lines(&ok(&["ls", img, "--part", "1", "--json"]));
    let paths: Vec<&str> = root.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/docs", "/empty"]);

    // manifest: every entry, hard links share an inode, streams listed.
    let all = lines(&ok(&["manifest", img, "--part", "1"]));
    let by_path = |p: &str| {
        all.iter()
            .find(|e| e["path"] == p)
            .unwrap_or_else(|| panic!("{p}"))
    };
    let paths: Vec<&str> = all.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/docs",
            "/docs/a.txt",
            "/docs/hard.txt",
            "/docs/link",
            "/docs/sub",
            "/docs/sub/big.bin",
            "/empty"
        ]
    );
    let a = by_path("/docs/a.txt");
    assert_eq!(a["type"], "file");
    assert_eq!(a["size"], 6);
    assert_eq!(a["nlink"], 2);
    assert_eq!(a["inode"], by_path("/docs/hard.txt")["inode"]);
    assert_eq!(a["streams"][0]["name"], "Zone.Identifier");
    assert_eq!(a["streams"][0]["size"], 14);
    let want = sh("printf 'hello\\n' | sha256sum | cut -d' ' -f1", d);
    assert_eq!(a["sha256"], want.trim());
    let big = by_path("/docs/sub/big.bin");
    let want = sh("sha256sum big.copy | cut -d' ' -f1", d);
    assert_eq!(big["sha256"], want.trim());
    let link = by_path("/docs/link");
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "a.txt");
    assert_eq!(link["size"], 5);
    assert!(by_path("/docs")["mtime"].as_i64().unwrap() > 1_600_000_000);

    // The manifest agrees with The Sleuth Kit (fls -r names, icat bytes by
    // inode) and ntfs-3g's ntfsls -R on the partition.
    if have_all(&["fls", "icat", "ntfsls"]) {
        let manifest: std::collections::BTreeSet<String> =
            paths.iter().map(|p| p.to_string()).collect();
        let fls = sh("fls -r -p -u -o 2048 d.raw", d);
        let theirs: std::collections::BTreeSet<String> = fls
            .lines()
            .filter_map(|l| l.split_once(":\t"))
            .filter(|(meta, p)| !meta.contains('*') && !p.starts_with('$') && !p.contains(':'))
            .map(|(_, p)| format!("/{p}"))
            .collect();
        assert_eq!(manifest, theirs, "fls -r");
        let mut ntfsls = std::collections::BTreeSet::new();
        let mut dir = String::new();
        for line in sh("ntfsls -R -p / v.img", d).lines() {
            if let Some(head) = line.strip_suffix(':') {
                dir = head.trim_end_matches('/').to_string();
            } else if !line.is_empty() && line != "." && line != ".." {
                ntfsls.insert(format!("{dir}/{line}"));
            }
        }
        assert_eq!(manifest, ntfsls, "ntfsls -R");
        for e in all.iter().filter(|e| e["type"] == "file") {
            let inode = e["inode"].as_u64().unwrap();
            let sum = sh(
                &format!("icat -o 2048 d.raw {inode} | sha256sum | cut -d' ' -f1"),
                d,
            );
            assert_eq!(e["sha256"], sum.trim(), "icat {}", e["path"]);
        }
    }

    // cat: data, a named stream, case-insensitive lookup.
    assert_eq!(ok(&["cat", img, "--part", "1", "/docs/a.txt"]), b"hello\n");
    assert_eq!(ok(&["cat", img, "--part", "1", "/DOCS/A.TXT"]), b"hello\n");
    assert_eq!(
        ok(&[
            "cat",
            img,
            "--part",
            "1",
            "/docs/a.txt",
            "--stream",
            "Zone.Identifier"
        ]),
        b"[ZoneTransfer]"
    );
    assert_eq!(
        ok(&["cat", img, "--part", "1", "/docs/sub/big.bin"]),
        std::fs::read(d.join("big.copy")).unwrap()
    );
    // ls -r from a subdirectory.
    let sub = lines(&ok(&["ls", img, "--part", "1", "/docs", "-r", "--json"]));
    assert_eq!(sub.len(), 5);
    // A missing path is a one-line error.
    let out = vdisk(&["cat", img, "--part", "1", "/nope"]);
    assert_eq!(out.status.code(), Some(2));
}
