//! Header fields the writers do not understand are carried over when an
//! existing image is written through `open_rw`: qcow2 compatible feature
//! bits and header extensions unknown to vdisk stay as they were
//! (autoclear bits are cleared, as the qcow2 specification requires of a
//! writer that does not maintain what they guard). VDI: see
//! `vdi_write.rs`, `unknown_header_bytes_survive`. VHDX: reserved header
//! bytes are kept.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use disk_io::WriteAt;
use test_support::{have_all, sh};

const UNKNOWN_EXT: u32 = 0x7a7a_7a7a;
const UNKNOWN_COMPATIBLE: u64 = 1 << 7;
const UNKNOWN_AUTOCLEAR: u64 = 1 << 9;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// The header extensions of a qcow2 v3 header: (type, data).
fn extensions(b: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut at = be32(b, 100) as usize;
    let mut out = Vec::new();
    loop {
        let (kind, len) = (be32(b, at), be32(b, at + 4) as usize);
        if kind == 0 {
            return out;
        }
        out.push((kind, b[at + 8..at + 8 + len].to_vec()));
        at += 8 + len.div_ceil(8) * 8;
    }
}

#[test]
fn qcow2_unknown_compatible_bit_and_extension_survive() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("qemu-img create -q -f qcow2 u.qcow2 8M", d);
    sh("qemu-io -c 'write -P 0x11 0 1M' u.qcow2 >/dev/null", d);
    let path = d.join("u.qcow2");
    let mut b = std::fs::read(&path).unwrap();
    // Append an unknown extension after qemu's, before the end marker.
    let mut exts = extensions(&b);
    exts.push((UNKNOWN_EXT, b"hello".to_vec()));
    let mut area = Vec::new();
    for (kind, data) in &exts {
        area.extend_from_slice(&kind.to_be_bytes());
        area.extend_from_slice(&(data.len() as u32).to_be_bytes());
        area.extend_from_slice(data);
        area.resize(area.len().div_ceil(8) * 8, 0);
    }
    area.extend_from_slice(&[0; 8]);
    let hl = be32(&b, 100) as usize;
    b[hl..hl + area.len()].copy_from_slice(&area);
    let compatible = be64(&b, 80) | UNKNOWN_COMPATIBLE;
    b[80..88].copy_from_slice(&compatible.to_be_bytes());
    let autoclear = be64(&b, 88) | UNKNOWN_AUTOCLEAR;
    b[88..96].copy_from_slice(&autoclear.to_be_bytes());
    std::fs::write(&path, &b).unwrap();
    sh("qemu-img check -q u.qcow2", d);
    {
        let w = vdisk_format::open_rw(&path).unwrap();
        w.disk.write_at(3 << 20, &[0x22; 70_000]).unwrap();
        w.disk.write_at(100, &[0x33; 100]).unwrap();
        w.disk.flush().unwrap();
    }
    let after = std::fs::read(&path).unwrap();
    assert_eq!(be64(&after, 80), compatible, "compatible features");
    assert_eq!(be64(&after, 88), 0, "autoclear features cleared");
    assert_eq!(extensions(&after), exts, "header extensions");
    // Everything else of the header as it was, but the fields a write may
    // move (L1 and refcount table offsets).
    let skip = |i: usize| (40..56).contains(&i) || (88..96).contains(&i);
    for i in 0..hl + area.len() {
        assert!(skip(i) || b[i] == after[i], "header byte {i} changed");
    }
    sh("qemu-img check -q u.qcow2", d);
    for (pattern, off, len) in [(0x11, 0, 100), (0x33, 100, 100), (0x11, 200, 4096)] {
        let out = sh(
            &format!("qemu-io -r -c 'read -P {pattern} {off} {len}' u.qcow2"),
            d,
        );
        assert!(!out.contains("Pattern verification failed"), "{out}");
    }
    let out = sh("qemu-io -r -c 'read -P 0x22 3M 70000' u.qcow2", d);
    assert!(!out.contains("Pattern verification failed"), "{out}");
}

/// VHDX: bytes of the header's reserved area (zero as the specification
/// writes them, but a later version may use them) are kept in the headers
/// the writer rewrites; both headers stay valid for qemu.
#[test]
fn vhdx_reserved_header_bytes_survive() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("qemu-img create -q -f vhdx u.vhdx 8M", d);
    let path = d.join("u.vhdx");
    let mut b = std::fs::read(&path).unwrap();
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    for at in [64 << 10, 128 << 10] {
        let h = &mut b[at..at + 4096];
        h[80..96].copy_from_slice(b"future-fields!!!");
        h[4..8].fill(0);
        let crc = disk_io::crc::crc32c(h);
        h[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&path, &b).unwrap();
    sh("qemu-img check -q u.vhdx", d);
    {
        let w = vdisk_format::open_rw(&path).unwrap();
        w.disk.write_at(3 << 20, &[0x22; 70_000]).unwrap();
        w.disk.flush().unwrap();
    }
    let after = std::fs::read(&path).unwrap();
    let current = [64usize << 10, 128 << 10]
        .into_iter()
        .max_by_key(|&at| le64(&after, at + 8))
        .unwrap();
    let h = &after[current..current + 4096];
    assert_eq!(&h[80..96], b"future-fields!!!", "reserved header bytes");
    assert!(le64(h, 8) > le64(&b, current + 8), "a header was rewritten");
    let mut zeroed = h.to_vec();
    zeroed[4..8].fill(0);
    assert_eq!(disk_io::crc::crc32c(&zeroed), le32(h, 4), "header checksum");
    sh("qemu-img check -q u.vhdx", d);
    let out = sh("qemu-io -r -c 'read -P 0x22 3M 70000' u.vhdx", d);
    assert!(!out.contains("Pattern verification failed"), "{out}");
}
