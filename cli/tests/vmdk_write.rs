//! `vdisk convert -O vmdk`, `vdisk create -O vmdk --backing`, `vdisk
//! commit` and `vdisk rebase` on VMDK chains, against qemu-img: the
//! multi-file subformats name their extents after the final name (not the
//! temporary one the conversion writes to), every output checks clean and
//! compares equal to its source.

#![allow(clippy::unwrap_used, clippy::panic)]

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

#[test]
fn convert_to_every_subformat() {
    if !have_all(&["qemu-img", "qemu-io", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "truncate -s 20M src.raw && printf 'label: gpt\\n2048,,L\\n' | sfdisk -q src.raw && \
         head -c 2M /dev/urandom > rnd && dd if=rnd of=src.raw bs=64k seek=20 conv=notrunc status=none && \
         seq 1 300000 | head -c 1M > txt && dd if=txt of=src.raw bs=1k seek=9001 conv=notrunc status=none && \
         qemu-io -f raw -c 'write -P 0x5a 15M 700k' src.raw >/dev/null",
        d,
    );
    for sub in [
        "monolithicSparse",
        "streamOptimized",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
    ] {
        let name = format!("{sub}.vmdk");
        ok(&vdisk(
            &[
                "convert",
                "src.raw",
                &name,
                "-O",
                "vmdk",
                "-o",
                &format!("subformat={sub}"),
            ],
            d,
        ));
        sh(&format!("qemu-img check -q {name}"), d);
        sh(&format!("qemu-img compare -q src.raw {name}"), d);
        let v: serde_json::Value =
            serde_json::from_str(&sh(&format!("qemu-img info --output=json {name}"), d)).unwrap();
        assert_eq!(v["format-specific"]["data"]["create-type"], sub);
    }
    assert!(d.join("monolithicFlat-flat.vmdk").exists());
    assert!(d.join("twoGbMaxExtentSparse-s001.vmdk").exists());
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("vdisk-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn create_commit_rebase_a_vmdk_chain() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("qemu-img create -q -f vmdk parent.vmdk 16M", d);
    sh(
        "qemu-io -f vmdk -c 'write -P 0x42 0 16M' parent.vmdk >/dev/null",
        d,
    );
    ok(&vdisk(
        &[
            "create",
            "-O",
            "vmdk",
            "child.vmdk",
            "16M",
            "--backing",
            "parent.vmdk",
        ],
        d,
    ));
    sh("qemu-img check -q child.vmdk", d);
    let v: serde_json::Value =
        serde_json::from_str(&sh("qemu-img info --output=json child.vmdk", d)).unwrap();
    assert_eq!(v["backing-filename"], "parent.vmdk");
    sh("qemu-io -c 'write -P 0x43 1M 1k' child.vmdk >/dev/null", d);
    let out = sh(
        "qemu-io -r -c 'read -P 0x42 0 1M' -c 'read -P 0x43 1M 1k' -c 'read -P 0x42 1025k 63k' child.vmdk",
        d,
    );
    assert!(!out.contains("verification failed"), "{out}");
    sh("qemu-img create -q -f vmdk other.vmdk 16M", d);
    sh("qemu-img convert -O raw child.vmdk before.raw", d);
    ok(&vdisk(
        &["rebase", "child.vmdk", "--backing", "other.vmdk"],
        d,
    ));
    sh("qemu-img check -q child.vmdk", d);
    sh("qemu-img compare -q before.raw child.vmdk", d);
    ok(&vdisk(&["commit", "child.vmdk"], d));
    sh("qemu-img compare -q before.raw other.vmdk", d);
    sh("qemu-img compare -q before.raw child.vmdk", d);
    // Our reader opens the chain after commit (parentCID follows the parent).
    let out = vdisk(&["compare", "child.vmdk", "other.vmdk"], d);
    assert_eq!(out.status.code(), Some(0));
}
