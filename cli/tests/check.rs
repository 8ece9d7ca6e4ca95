//! `vdisk check` against its contract: qemu-img's wording, the JSON
//! object, and exit status 0 (clean), 1 (errors or leaks), 2 (unreadable).

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::process::{Command, Output};

use test_support::{have_all, sh};

fn vdisk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn clean_leaky_and_unreadable_images() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f qcow2 clean.qcow2 8M && qemu-io -f qcow2 -c 'write -P 1 0 128k' clean.qcow2 >/dev/null",
        d,
    );
    let clean = d.join("clean.qcow2");
    let p = clean.to_str().unwrap();
    let out = vdisk(&["check", p]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "No errors were found on the image.\n");
    let out = vdisk(&["check", "--json", p]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out).trim(),
        r#"{"errors":0,"leaks":0,"messages":[]}"#
    );

    // Leak one cluster: append it with refcount 1 (16-bit refcounts, 64 KiB
    // clusters, first refcount block).
    let mut b = std::fs::read(&clean).unwrap();
    let be64 = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    let block = (be64(&b, be64(&b, 48) as usize) & !0x1ff) as usize;
    let cluster = b.len() >> 16;
    b.resize((cluster + 1) << 16, 0);
    b[block + cluster * 2 + 1] = 1;
    let leaky = d.join("leaky.qcow2");
    std::fs::write(&leaky, &b).unwrap();
    let p = leaky.to_str().unwrap();
    let out = vdisk(&["check", p]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("Leaked cluster {cluster} ")),
        "{text}"
    );
    assert!(
        text.contains("\n1 leaked clusters were found on the image.\n"),
        "{text}"
    );
    let out = vdisk(&["check", "--json", p]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["errors"], 0);
    assert_eq!(v["leaks"], 1);
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);

    // A data cluster whose refcount is too low: errors.
    let l2 = (be64(&b, be64(&b, 40) as usize) & 0x00ff_ffff_ffff_fe00) as usize;
    let data = ((be64(&b, l2) & 0x00ff_ffff_ffff_fe00) >> 16) as usize;
    b[block + data * 2 + 1] = 0;
    std::fs::write(&leaky, &b).unwrap();
    let out = vdisk(&["check", p]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("\n2 errors were found on the image.\n"),
        "{text}"
    );

    // A header that cannot be read: one line on stderr, exit 2.
    std::fs::write(d.join("bad.qcow2"), b"QFI\xfb\0\0\0\x03").unwrap();
    let bad = d.join("bad.qcow2");
    for args in [
        vec!["check", bad.to_str().unwrap()],
        vec!["check", "--json", bad.to_str().unwrap()],
    ] {
        let out = vdisk(&args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("vdisk: {}: ", bad.display())),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn raw_images_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let out = vdisk(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "No errors were found on the image.\n");
}

#[test]
fn vdi_block_map_errors() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vdi a.vdi 4M && qemu-io -f vdi -c 'write -P 1 0 1M' a.vdi >/dev/null",
        d,
    );
    let path = d.join("a.vdi");
    let p = path.to_str().unwrap();
    assert_eq!(vdisk(&["check", p]).status.code(), Some(0));
    // Block map entry 0 (at offset 0x200) pointed beyond the data area.
    let mut b = std::fs::read(&path).unwrap();
    b[0x200..0x204].copy_from_slice(&1000u32.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let out = vdisk(&["check", "--json", p]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["errors"], 2, "{v}");
    assert_eq!(v["leaks"], 0, "{v}");
    assert!(
        v["messages"][0]
            .as_str()
            .unwrap()
            .contains("block index too large"),
        "{v}"
    );
}
