//! `check` on qcow2 images: clean on every kind of image qemu makes, and
//! the same error and leak counts as `qemu-img check` on images the test
//! damages on purpose (refcounts edited, a cluster leaked, an L2 entry
//! pointed past the end of the file).

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command;

use test_support::{have_all, sh};
use vdisk_format::{CheckReport, check};

/// `qemu-img check --output=json`: (corruptions, leaks, check-errors).
fn qemu_check(path: &Path) -> (u64, u64, u64) {
    let out = Command::new("qemu-img")
        .args(["check", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    (n("corruptions"), n("leaks"), n("check-errors"))
}

fn ours(path: &Path) -> CheckReport {
    check(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn be64(b: &[u8], at: u64) -> u64 {
    u64::from_be_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

fn be32(b: &[u8], at: u64) -> u32 {
    u32::from_be_bytes(b[at as usize..at as usize + 4].try_into().unwrap())
}

/// The few header fields the damage needs.
struct Layout {
    cluster_bits: u32,
    l1_offset: u64,
    reftable_offset: u64,
}

fn layout(b: &[u8]) -> Layout {
    Layout {
        cluster_bits: be32(b, 20),
        l1_offset: be64(b, 40),
        reftable_offset: be64(b, 48),
    }
}

/// File offset of the 16-bit refcount of `cluster` (default refcount width).
fn refcount_at(b: &[u8], cluster: u64) -> u64 {
    let l = layout(b);
    let per_block = (1u64 << l.cluster_bits) / 2;
    let block = be64(b, l.reftable_offset + cluster / per_block * 8) & !0x1ff;
    assert_ne!(block, 0);
    block + cluster % per_block * 2
}

fn add_refcount(b: &mut [u8], cluster: u64, delta: i32) {
    let at = refcount_at(b, cluster) as usize;
    let v = u16::from_be_bytes([b[at], b[at + 1]]);
    let v = (i32::from(v) + delta) as u16;
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// File offset of the first L2 entry of the first L2 table.
fn first_l2_entry(b: &[u8]) -> u64 {
    let l = layout(b);
    be64(b, l.l1_offset) & 0x00ff_ffff_ffff_fe00
}

#[test]
fn qemu_made_images_are_clean() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let writes =
        "-c 'write -P 1 0 100k' -c 'write -z 1M 64k' -c 'write -P 2 3M 1M' -c 'write -P 3 60M 5k'";
    let script = format!(
        "set -e
        qemu-img create -q -f qcow2 empty.qcow2 64M
        qemu-img create -q -f qcow2 written.qcow2 64M
        qemu-io -f qcow2 {writes} written.qcow2 >/dev/null
        qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 64M
        qemu-io -f qcow2 {writes} v2.qcow2 >/dev/null
        qemu-img snapshot -c one v2.qcow2
        qemu-io -f qcow2 -c 'write -P 9 0 64k' v2.qcow2 >/dev/null
        qemu-img create -q -f qcow2 snaps.qcow2 64M
        qemu-io -f qcow2 {writes} snaps.qcow2 >/dev/null
        qemu-img snapshot -c one snaps.qcow2
        qemu-io -f qcow2 -c 'write -P 7 0 64k' -c 'write -P 8 10M 64k' snaps.qcow2 >/dev/null
        qemu-img snapshot -c two snaps.qcow2
        qemu-io -f qcow2 -c 'write -P 6 3M 4k' snaps.qcow2 >/dev/null
        qemu-img snapshot -d one snaps.qcow2
        qemu-img snapshot -c three snaps.qcow2
        qemu-img create -q -f qcow2 -o extended_l2=on ext.qcow2 64M
        qemu-io -f qcow2 {writes} -c 'write -P 4 2M 2k' ext.qcow2 >/dev/null
        qemu-img create -q -f qcow2 -o cluster_size=512 c512.qcow2 16M
        qemu-io -f qcow2 -c 'write -P 1 0 100k' -c 'write -z 1M 64k' -c 'write -P 2 3M 1M' c512.qcow2 >/dev/null
        qemu-img create -q -f qcow2 -o cluster_size=2M c2m.qcow2 64M
        qemu-io -f qcow2 {writes} c2m.qcow2 >/dev/null
        qemu-img create -q -f qcow2 -o refcount_bits=1 r1.qcow2 64M
        qemu-io -f qcow2 {writes} r1.qcow2 >/dev/null
        qemu-img create -q -f qcow2 -o refcount_bits=64 r64.qcow2 64M
        qemu-io -f qcow2 {writes} r64.qcow2 >/dev/null
        qemu-img create -q -f qcow2 bitmap.qcow2 64M
        qemu-img bitmap --add bitmap.qcow2 b0
        qemu-io -f qcow2 {writes} bitmap.qcow2 >/dev/null
        qemu-img create -q -f raw src.raw 4M
        qemu-io -f raw -c 'write -P 5 0 1M' -c 'write -P 6 2M 300k' src.raw >/dev/null
        qemu-img convert -c -O qcow2 -o cluster_size=4k src.raw zlib.qcow2
        qemu-img convert -c -O qcow2 -o cluster_size=4k,compression_type=zstd src.raw zstd.qcow2
        qemu-img snapshot -c s zlib.qcow2
        "
    );
    sh(&script, d);
    for name in [
        "empty.qcow2",
        "written.qcow2",
        "v2.qcow2",
        "snaps.qcow2",
        "ext.qcow2",
        "c512.qcow2",
        "c2m.qcow2",
        "r1.qcow2",
        "r64.qcow2",
        "bitmap.qcow2",
        "zlib.qcow2",
        "zstd.qcow2",
    ] {
        let path = d.join(name);
        assert_eq!(qemu_check(&path), (0, 0, 0), "{name}: qemu-img check");
        let report = ours(&path);
        assert!(report.is_clean(), "{name}: {report:?}");
    }
}

/// Damages a copy of a written image with `damage` and compares our
/// counts with qemu-img's; returns our report.
fn damaged(dir: &Path, name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> CheckReport {
    damaged_from(dir, "base.qcow2", name, damage)
}

/// [`damaged`] on a copy of `base`.
fn damaged_from(
    dir: &Path,
    base: &str,
    name: &str,
    damage: impl FnOnce(&mut Vec<u8>),
) -> CheckReport {
    let path = dir.join(name);
    let mut bytes = std::fs::read(dir.join(base)).unwrap();
    damage(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
    let report = ours(&path);
    let (corruptions, leaks, check_errors) = qemu_check(&path);
    assert_eq!(check_errors, 0, "{name}");
    assert_eq!(
        (report.errors, report.leaks),
        (corruptions, leaks),
        "{name}: ours {report:?} vs qemu-img check"
    );
    assert_eq!(
        report.messages.len() as u64,
        report.errors + report.leaks,
        "{name}: one message per finding"
    );
    report
}

#[test]
fn damage_is_counted_as_qemu_img_counts_it() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f qcow2 base.qcow2 8M && qemu-io -f qcow2 -c 'write -P 1 0 256k' -c 'write -P 2 4M 64k' base.qcow2 >/dev/null",
        d,
    );
    let base = std::fs::read(d.join("base.qcow2")).unwrap();
    let data = be64(&base, first_l2_entry(&base)) & 0x00ff_ffff_ffff_fe00;
    let data_cluster = data >> 16;

    // A data cluster's refcount one too low: an error, and its COPIED
    // flag no longer agrees.
    let r = damaged(d, "low.qcow2", |b| add_refcount(b, data_cluster, -1));
    assert_eq!((r.errors, r.leaks), (2, 0), "{r:?}");
    assert!(
        r.messages
            .iter()
            .any(|m| m.contains(&format!("offset {data:#x}"))
                && m.contains("refcount=0 reference=1")),
        "{r:?}"
    );

    // One too high: a leak (as qemu says), and the COPIED flag disagrees.
    let r = damaged(d, "high.qcow2", |b| add_refcount(b, data_cluster, 1));
    assert_eq!((r.errors, r.leaks), (1, 1), "{r:?}");

    // A cluster appended to the file with refcount 1 that nothing uses.
    let r = damaged(d, "leak.qcow2", |b| {
        let cluster = b.len() as u64 >> 16;
        b.resize((cluster as usize + 1) << 16, 0);
        add_refcount(b, cluster, 1);
    });
    assert_eq!((r.errors, r.leaks), (0, 1), "{r:?}");

    // The refcount of an L2 table cleared.
    let r = damaged(d, "l2ref.qcow2", |b| {
        let l2 = be64(b, layout(b).l1_offset) & 0x00ff_ffff_ffff_fe00;
        add_refcount(b, l2 >> 16, -1);
    });
    assert!(r.errors >= 1, "{r:?}");

    // An L2 entry pointed far past the end of the file.
    let r = damaged(d, "past.qcow2", |b| {
        let at = first_l2_entry(b) as usize;
        let entry = (1u64 << 63) | (1 << 40);
        b[at..at + 8].copy_from_slice(&entry.to_be_bytes());
    });
    assert!(r.errors >= 1, "{r:?}");
    assert!(
        r.messages.iter().any(|m| m.contains("past the end")),
        "{r:?}"
    );

    // An L2 entry pointed at another data cluster: referenced twice.
    let r = damaged(d, "twice.qcow2", |b| {
        let at = first_l2_entry(b) as usize;
        let other = be64(b, at as u64 + 8);
        b[at..at + 8].copy_from_slice(&other.to_be_bytes());
    });
    assert!(r.errors >= 1 && r.leaks >= 1, "{r:?}");
}

/// The host cluster the first L2 entry of the first L2 table points to
/// (compressed or not).
fn first_host_cluster(b: &[u8]) -> u64 {
    let bits = layout(b).cluster_bits;
    let entry = be64(b, first_l2_entry(b));
    let host = if entry & (1 << 62) != 0 {
        entry & ((1u64 << (62 - (bits - 8))) - 1)
    } else {
        entry & 0x00ff_ffff_ffff_fe00
    };
    host >> bits
}

#[test]
fn shared_and_compressed_clusters_are_counted_as_qemu_img_counts_them() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "set -e
        qemu-img create -q -f qcow2 snap.qcow2 8M
        qemu-io -f qcow2 -c 'write -P 1 0 256k' snap.qcow2 >/dev/null
        qemu-img snapshot -c one snap.qcow2
        qemu-img create -q -f raw src.raw 1M
        qemu-io -f raw -c 'write -P 5 0 512k' src.raw >/dev/null
        qemu-img convert -c -O qcow2 -o cluster_size=4k src.raw comp.qcow2
        qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty.qcow2 8M
        (qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 2 4M 64k' -c abort dirty.qcow2 >/dev/null 2>&1 || true)",
        d,
    );
    // Lazy refcounts and a crash (the dirty bit set): the refcounts were
    // never written, every data cluster is an error, twice (refcount and
    // COPIED flag), as qemu-img counts them (34 with qemu 10.0).
    let r = damaged_from(d, "dirty.qcow2", "dirty-copy.qcow2", |_| {});
    assert!(r.errors >= 17, "{r:?}");
    for base in ["snap.qcow2", "comp.qcow2"] {
        for delta in [-1, 1] {
            let name = format!("{delta}-{base}");
            let r = damaged_from(d, base, &name, |b| {
                let cluster = first_host_cluster(b);
                add_refcount(b, cluster, delta);
            });
            assert!(!r.is_clean(), "{name}: {r:?}");
        }
        // The copied flag set where the refcount is not 1 (snapshot), or
        // on a compressed cluster.
        let name = format!("copied-{base}");
        let r = damaged_from(d, base, &name, |b| {
            let at = first_l2_entry(b) as usize;
            b[at] |= 0x80;
        });
        assert!(r.errors >= 1, "{name}: {r:?}");
    }
}

#[test]
fn unreadable_header_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.qcow2");
    let mut b = vec![0u8; 4096];
    b[..4].copy_from_slice(b"QFI\xfb");
    b[7] = 3;
    b[23] = 16;
    std::fs::write(&path, &b).unwrap();
    assert!(check(&path).is_err());
}
