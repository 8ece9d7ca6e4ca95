//! VHDX files made by qemu-img and qemu-io, read by vdisk-format and
//! compared with qemu-img's own reading; a dirty log made by qemu itself
//! (an injected I/O error stops it between logging a BAT update and
//! writing it in place), replayed in memory without touching the file;
//! `check` on clean and damaged files.
//!
//! qemu's vhdx driver answers block status with "all data", so `qemu-img
//! map` says nothing to compare our map with; instead our map is checked
//! against the bytes: Zero and Unallocated runs read as zeros, and Data
//! runs cover every non-zero byte.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

use disk_io::{Allocation, FileDisk, ReadAt, extents};
use test_support::{have_all, sh};
use vdisk_format::vhdx::Vhdx;
use vdisk_format::{Format, Image};

/// Guest contents: none, scattered pattern and zero writes, or 64 MiB of
/// random data.
const CONTENTS: [(&str, &str); 3] = [
    ("empty", ""),
    (
        "scattered",
        "-c 'write -P 0x11 0 4k' -c 'write -P 0x22 1M 3M' -c 'write -z 2M 512k' -c 'write -P 0x33 47M 1M' -c 'write -P 0x44 33M 5k' -c 'write -z 40M 4M' -c 'write -P 0x55 40M 4k'",
    ),
    ("random", "-c 'write -s random.bin 8M 64M'"),
];

/// Reads the whole guest in odd-sized pieces.
fn read_all(image: &impl ReadAt) -> Vec<u8> {
    let mut ours = vec![0u8; image.size() as usize];
    let mut at = 0;
    for step in [1000usize, 4096, 65536 + 17, 3 << 20].iter().cycle() {
        if at >= ours.len() {
            break;
        }
        let n = (*step).min(ours.len() - at);
        image.read_at(at as u64, &mut ours[at..at + n]).unwrap();
        at += n;
    }
    ours
}

/// Our allocation map agrees with the bytes: runs that are not Data read
/// as zeros (no parent here). Returns the bytes of Data runs.
fn check_map(image: &impl ReadAt, bytes: &[u8], name: &str) -> u64 {
    let mut data = 0;
    let mut end = 0;
    for run in extents(image, 0, u64::MAX) {
        let run = run.unwrap();
        assert_eq!(run.offset, end, "{name}: map has a gap");
        end = run.end();
        let slice = &bytes[run.offset as usize..run.end() as usize];
        match run.state {
            Allocation::Data => data += run.length,
            Allocation::Zero | Allocation::Unallocated => assert!(
                disk_io::is_zero(slice),
                "{name}: {:?} run {:#x}+{:#x} holds non-zero bytes",
                run.state,
                run.offset,
                run.length
            ),
        }
    }
    assert_eq!(end, image.size(), "{name}: map does not cover the disk");
    data
}

/// Our guest bytes equal qemu-img's, info agrees with qemu-img info, the
/// map agrees with the bytes, and check finds nothing.
fn check(dir: &Path, name: &str, subformat: &str) {
    let path = dir.join(name);
    let image = Image::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(image.format(), Format::Vhdx);
    sh(&format!("qemu-img convert -O raw {name} ref.raw"), dir);
    let reference = std::fs::read(dir.join("ref.raw")).unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&sh(&format!("qemu-img info --output=json {name}"), dir)).unwrap();
    let ours = image.info().unwrap();
    assert_eq!(
        ours.virtual_size,
        info["virtual-size"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(ours.cluster_size, info["cluster-size"].as_u64(), "{name}");
    assert_eq!(ours.subformat.as_deref(), Some(subformat), "{name}");
    assert_eq!(image.size(), reference.len() as u64, "{name}");
    let bytes = read_all(&image);
    assert!(
        bytes == reference,
        "{name}: guest bytes differ from qemu-img convert"
    );
    let data = check_map(&image, &bytes, name);
    if !disk_io::is_zero(&bytes) {
        assert!(data > 0, "{name}: non-zero bytes but no Data run");
    }
    let report = vdisk_format::check(&path).unwrap();
    assert!(report.is_clean(), "{name}: {report:?}");
    assert!(report.messages.is_empty(), "{name}: {report:?}");
}

fn write_random(dir: &Path, len: usize) {
    // A fixed xorshift stream: random-looking, reproducible.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(dir.join("random.bin"), bytes).unwrap();
}

#[test]
fn qemu_made_images_read_like_qemu_reads_them() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_random(d, 64 << 20);
    for subformat in ["dynamic", "fixed"] {
        for block in ["1M", "32M"] {
            for (content, cmds) in CONTENTS {
                let name = format!("{subformat}-{block}-{content}.vhdx");
                sh(
                    &format!(
                        "qemu-img create -q -f vhdx -o subformat={subformat},block_size={block} {name} 80M"
                    ),
                    d,
                );
                if !cmds.is_empty() {
                    sh(&format!("qemu-io -f vhdx {cmds} {name} >/dev/null"), d);
                }
                check(d, &name, subformat);
            }
        }
    }
    // Fixed with every block FULLY_PRESENT (no ZERO block states), and a
    // disk whose size is not a multiple of the block size.
    sh(
        "qemu-img create -q -f vhdx -o subformat=fixed,block_state_zero=off,block_size=1M full.vhdx 5M && qemu-io -f vhdx -c 'write -P 7 1M 1M' full.vhdx >/dev/null",
        d,
    );
    check(d, "full.vhdx", "fixed");
    let v = Vhdx::open(FileDisk::open(d.join("full.vhdx")).unwrap()).unwrap();
    assert!(
        v.bat()
            .iter()
            .take(5)
            .all(|e| vdisk_format::vhdx::PayloadState::from_entry(*e)
                == Some(vdisk_format::vhdx::PayloadState::FullyPresent))
    );
    sh(
        "qemu-img create -q -f vhdx -o block_size=1M odd.vhdx 3500k && qemu-io -f vhdx -c 'write -P 9 3M 412k' odd.vhdx >/dev/null",
        d,
    );
    check(d, "odd.vhdx", "dynamic");
    // qemu-img convert, which writes whole blocks through the log.
    sh(
        "qemu-img convert -O vhdx -o subformat=dynamic random.bin conv.vhdx",
        d,
    );
    check(d, "conv.vhdx", "dynamic");
}

fn sha256(path: &Path) -> String {
    sh(
        &format!("sha256sum '{}'", path.display()),
        path.parent().unwrap(),
    )
}

#[test]
fn dirty_log_made_by_qemu_replays_in_memory_only() {
    if !have_all(&["qemu-img", "qemu-io", "sha256sum"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // qemu writes a new block's data, logs the BAT update, flushes the log,
    // then writes the BAT sector in place: an I/O error injected on that
    // BAT write (sector 4096: the BAT region at 2 MiB) and a crash leave a
    // log that must be replayed.
    std::fs::write(
        d.join("bd.cfg"),
        "[inject-error]\nevent = \"pwritev\"\nsector = \"4096\"\nerrno = \"5\"\nonce = \"on\"\n",
    )
    .unwrap();
    sh(
        "qemu-img create -q -f vhdx -o block_size=1M dirty.vhdx 16M",
        d,
    );
    let spec = r#"json:{"driver":"vhdx","file":{"driver":"blkdebug","config":"bd.cfg","image":{"driver":"file","filename":"dirty.vhdx"}}}"#;
    // qemu-io dies by abort(): the shell reports it, the test expects it.
    sh(
        &format!(
            "qemu-io -c 'write -P 0x5a 0 4k' -c 'write -P 0x6b 3M 8k' -c abort '{spec}' >/dev/null 2>&1 || true"
        ),
        d,
    );
    let path = d.join("dirty.vhdx");
    let v = Vhdx::open(FileDisk::open(&path).unwrap()).unwrap();
    assert!(!v.header().log_guid.is_zero(), "qemu left no dirty log");
    let replay = v.replay().unwrap();
    assert!(
        replay.entries > 0 && !replay.overlay.is_empty(),
        "{replay:?}"
    );
    drop(v);

    let before = sha256(&path);
    let image = Image::open(&path).unwrap();
    let ours = read_all(&image);
    check_map(&image, &ours, "dirty.vhdx");
    drop(image);
    assert_eq!(sha256(&path), before, "reading changed the file");
    assert!(
        ours[..4096].iter().all(|&b| b == 0x5a),
        "logged block not replayed"
    );

    let report = vdisk_format::check(&path).unwrap();
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(
        report.messages.iter().any(|m| m.contains("log")),
        "{report:?}"
    );

    // qemu refuses to read it read-only; it replays in place on repair.
    sh(
        "cp dirty.vhdx replayed.vhdx && qemu-img check -q -r all replayed.vhdx",
        d,
    );
    sh("qemu-img convert -O raw replayed.vhdx ref.raw", d);
    let reference = std::fs::read(d.join("ref.raw")).unwrap();
    assert!(
        ours == reference,
        "replayed bytes differ from qemu's replay"
    );
    assert_eq!(sha256(&path), before);
    let v = Vhdx::open(FileDisk::open(d.join("replayed.vhdx")).unwrap()).unwrap();
    assert!(v.header().log_guid.is_zero());
}

/// Rewrites the checksum of the 4 KiB header at `at` to something wrong.
fn break_crc(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(path)
        .unwrap();
    let mut crc = [0u8; 4];
    f.read_exact_at(&mut crc, at + 4).unwrap();
    crc[0] ^= 0xff;
    f.write_all_at(&crc, at + 4).unwrap();
}

#[test]
fn check_finds_damage_and_reads_name_it() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vhdx -o block_size=1M a.vhdx 8M && qemu-io -f vhdx -c 'write -P 1 0 1M' -c 'write -P 2 5M 4k' a.vhdx >/dev/null",
        d,
    );
    let reference = read_all(&Image::open(d.join("a.vhdx")).unwrap());

    // One header broken: read as before, check reports it.
    sh("cp a.vhdx one.vhdx", d);
    break_crc(&d.join("one.vhdx"), 64 << 10);
    assert!(read_all(&Image::open(d.join("one.vhdx")).unwrap()) == reference);
    let report = vdisk_format::check(d.join("one.vhdx")).unwrap();
    assert_eq!(report.errors, 1, "{report:?}");
    assert!(
        report.messages[0].contains("header 1 checksum"),
        "{report:?}"
    );

    // Both headers broken: no header to trust.
    sh("cp a.vhdx both.vhdx", d);
    break_crc(&d.join("both.vhdx"), 64 << 10);
    break_crc(&d.join("both.vhdx"), 128 << 10);
    let err = Image::open(d.join("both.vhdx")).err().unwrap();
    assert!(err.to_string().contains("neither header"), "{err}");
    let report = vdisk_format::check(d.join("both.vhdx")).unwrap();
    assert_eq!(report.errors, 2, "{report:?}");

    // Both headers valid with the same sequence number: neither is current.
    sh("cp a.vhdx same.vhdx", d);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(d.join("same.vhdx"))
        .unwrap();
    let mut h1 = vec![0u8; 4096];
    f.read_exact_at(&mut h1, 64 << 10).unwrap();
    f.write_all_at(&h1, 128 << 10).unwrap();
    drop(f);
    let err = Image::open(d.join("same.vhdx")).err().unwrap();
    assert!(err.to_string().contains("neither is current"), "{err}");
    let report = vdisk_format::check(d.join("same.vhdx")).unwrap();
    assert_eq!(report.errors, 1, "{report:?}");

    // Region table copy 1 broken: copy 2 is read, check reports copy 1.
    sh("cp a.vhdx region.vhdx", d);
    break_crc(&d.join("region.vhdx"), 192 << 10);
    assert!(read_all(&Image::open(d.join("region.vhdx")).unwrap()) == reference);
    let report = vdisk_format::check(d.join("region.vhdx")).unwrap();
    assert_eq!(report.errors, 1, "{report:?}");
    assert!(
        report.messages[0].contains("region table 1 checksum"),
        "{report:?}"
    );

    // A BAT entry (block 3) pointing past the end of the file.
    sh("cp a.vhdx past.vhdx", d);
    let v = Vhdx::open(FileDisk::open(d.join("past.vhdx")).unwrap()).unwrap();
    let bat_at = v
        .regions()
        .find(vdisk_format::vhdx::region_table::BAT_GUID, "BAT")
        .unwrap()
        .file_offset;
    drop(v);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("past.vhdx"))
        .unwrap();
    f.write_all_at(&((1u64 << 40) | 6).to_le_bytes(), bat_at + 3 * 8)
        .unwrap();
    drop(f);
    let report = vdisk_format::check(d.join("past.vhdx")).unwrap();
    assert_eq!(report.errors, 1, "{report:?}");
    assert!(report.messages[0].contains("BAT entry 3"), "{report:?}");
    let image = Image::open(d.join("past.vhdx")).unwrap();
    let mut buf = vec![0u8; 4096];
    image.read_at(0, &mut buf).unwrap();
    let err = image.read_at(3 << 20, &mut buf).unwrap_err();
    assert!(err.to_string().contains("BAT entry 3"), "{err}");
    assert_eq!(err.offset(), Some(bat_at + 24));

    // Two blocks at the same file offset.
    sh("cp a.vhdx twice.vhdx", d);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(d.join("twice.vhdx"))
        .unwrap();
    let mut e0 = [0u8; 8];
    f.read_exact_at(&mut e0, bat_at).unwrap();
    f.write_all_at(&e0, bat_at + 8).unwrap();
    drop(f);
    let report = vdisk_format::check(d.join("twice.vhdx")).unwrap();
    assert_eq!(report.errors, 1, "{report:?}");
    assert!(report.messages[0].contains("overlaps"), "{report:?}");
}

#[test]
fn truncated_and_garbled_files_are_errors_not_panics() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vhdx -o block_size=1M a.vhdx 8M && qemu-io -f vhdx -c 'write -P 1 0 1M' a.vhdx >/dev/null",
        d,
    );
    let bytes = std::fs::read(d.join("a.vhdx")).unwrap();
    for len in [
        8usize,
        4096,
        70 << 10,
        200 << 10,
        1 << 20,
        2 << 20,
        (3 << 20) + 4096,
    ] {
        let err = Vhdx::open(&bytes[..len]).err();
        assert!(err.is_some(), "truncated to {len} opened");
        assert!(
            err.unwrap().offset().is_some(),
            "no offset when truncated to {len}"
        );
    }
    // Flip bytes all over the structures (identifier, both headers, both
    // region tables, BAT, metadata table and items): never a panic.
    let mut b = bytes.clone();
    let ranges = [
        (0usize, 600usize),
        (64 << 10, 128),
        (128 << 10, 128),
        (192 << 10, 256),
        (256 << 10, 256),
        (2 << 20, 64),
        (3 << 20, 256),
        ((3 << 20) + (64 << 10), 64),
    ];
    for (start, len) in ranges {
        for at in (start..start + len).step_by(5) {
            b[at] ^= 0x5a;
            if let Ok(v) = Vhdx::open(&b[..]) {
                let mut buf = vec![0u8; 1 << 20];
                let _ = v.read_at(0, &mut buf);
                let _ = extents(&v, 0, u64::MAX).count();
            }
            let _ = vdisk_format::vhdx::check(&b[..]);
            b[at] ^= 0x5a;
        }
    }
}

#[test]
fn vhdx_corpus_replays() {
    test_support::replay_corpus(
        &["seeds/vhdx", "corpus/vhdx"],
        5,
        vdisk_format::fuzzing::vhdx_read,
    );
    // The seeds decode to the files they were made from.
    let seed = |name: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/seeds/vhdx")
                .join(name),
        )
        .unwrap()
    };
    let data = seed("data");
    let v = Vhdx::open(vdisk_format::fuzzing::SparseFile::new(&data)).unwrap();
    let mut buf = [0u8; 1024];
    v.read_at(3 << 20, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 2));
    let dirty = seed("dirty");
    let v = Vhdx::open(vdisk_format::fuzzing::SparseFile::new(&dirty)).unwrap();
    assert!(v.replay().unwrap().entries > 0);
    v.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 5));
}

/// Finds metadata item `guid` (as stored) in the metadata region at
/// `meta`: (offset of its table entry, offset of its data).
fn metadata_item(f: &std::fs::File, meta: u64, guid: &[u8; 16]) -> Option<(u64, u64)> {
    use std::os::unix::fs::FileExt;
    let mut table = vec![0u8; 64 << 10];
    f.read_exact_at(&mut table, meta).unwrap();
    let count = u16::from_le_bytes([table[10], table[11]]) as usize;
    (0..count).map(|i| 32 + 32 * i).find_map(|e| {
        (&table[e..e + 16] == guid).then(|| {
            let off = u32::from_le_bytes(table[e + 16..e + 20].try_into().unwrap());
            (meta + e as u64, meta + u64::from(off))
        })
    })
}

/// A parent locator item: the VHDX locator type and its key/value pairs.
fn locator(pairs: &[(&str, &str)]) -> Vec<u8> {
    let utf16 = |s: &str| {
        s.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>()
    };
    let mut head = vec![
        0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a, 0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59,
        0x13, 0, 0,
    ];
    head.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    let mut strings = Vec::new();
    let base = 20 + 12 * pairs.len();
    for (k, v) in pairs {
        let (k, v) = (utf16(k), utf16(v));
        let ko = base + strings.len();
        strings.extend_from_slice(&k);
        let vo = base + strings.len();
        strings.extend_from_slice(&v);
        head.extend_from_slice(&(ko as u32).to_le_bytes());
        head.extend_from_slice(&(vo as u32).to_le_bytes());
        head.extend_from_slice(&(k.len() as u16).to_le_bytes());
        head.extend_from_slice(&(v.len() as u16).to_le_bytes());
    }
    head.extend_from_slice(&strings);
    head
}

/// Turns the qemu-made dynamic file `child` (1 MiB blocks, made with
/// block_state_zero=off so unwritten blocks are NOT_PRESENT) into a
/// differencing file on `parent.vhdx` as the specification lays one out:
/// HasParent set, a parent locator item, block 2 PARTIALLY_PRESENT with a
/// sector bitmap block (sectors 0..16, 100 and 1024..2048 in this file),
/// block 4 ZERO. qemu cannot make differencing VHDX files.
fn make_differencing(dir: &Path, child: &str, linkage: &str, relative: &str) {
    use std::os::unix::fs::FileExt;
    let path = dir.join(child);
    let v = Vhdx::open(FileDisk::open(&path).unwrap()).unwrap();
    let meta = v
        .regions()
        .find(vdisk_format::vhdx::region_table::METADATA_GUID, "metadata")
        .unwrap()
        .file_offset;
    let bat = v
        .regions()
        .find(vdisk_format::vhdx::region_table::BAT_GUID, "BAT")
        .unwrap()
        .file_offset;
    let chunk_ratio = v.geometry().chunk_ratio;
    drop(v);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // File parameters: HasParent.
    let fp = [
        0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7,
        0x6b,
    ];
    let (_, fp_at) = metadata_item(&f, meta, &fp).unwrap();
    let mut flags = [0u8; 4];
    f.read_exact_at(&mut flags, fp_at + 4).unwrap();
    flags[0] |= 2;
    f.write_all_at(&flags, fp_at + 4).unwrap();
    // Parent locator: a new table entry, the item 128 KiB into the region.
    let item = locator(&[
        ("parent_linkage", linkage),
        ("relative_path", relative),
        ("absolute_win32_path", "C:\\elsewhere\\parent.vhdx"),
    ]);
    let mut count = [0u8; 2];
    f.read_exact_at(&mut count, meta + 10).unwrap();
    let n = u16::from_le_bytes(count);
    let mut entry = vec![
        0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab,
        0x0c,
    ];
    entry.extend_from_slice(&(128u32 << 10).to_le_bytes());
    entry.extend_from_slice(&(item.len() as u32).to_le_bytes());
    entry.extend_from_slice(&4u32.to_le_bytes()); // IsRequired
    entry.extend_from_slice(&0u32.to_le_bytes());
    f.write_all_at(&entry, meta + 32 + 32 * u64::from(n))
        .unwrap();
    f.write_all_at(&(n + 1).to_le_bytes(), meta + 10).unwrap();
    f.write_all_at(&item, meta + (128 << 10)).unwrap();
    // Sector bitmap block of chunk 0 at the end of the file.
    let sb_at = f.metadata().unwrap().len().div_ceil(1 << 20) << 20;
    let mut bits = vec![0u8; 1 << 20];
    let b2 = 2 * 256; // block 2: 2048 sectors per 1 MiB block, 8 per byte
    bits[b2] = 0xff;
    bits[b2 + 1] = 0xff;
    bits[b2 + 100 / 8] |= 1 << (100 % 8);
    bits[b2 + 128..b2 + 256].fill(0xff);
    f.write_all_at(&bits, sb_at).unwrap();
    f.write_all_at(&(sb_at | 6).to_le_bytes(), bat + chunk_ratio * 8)
        .unwrap();
    // Block 2 partially present, block 4 zero.
    let mut e2 = [0u8; 8];
    f.read_exact_at(&mut e2, bat + 2 * 8).unwrap();
    let e2 = u64::from_le_bytes(e2);
    assert_eq!(e2 & 7, 6, "block 2 was written in full");
    f.write_all_at(&(e2 | 7).to_le_bytes(), bat + 2 * 8)
        .unwrap();
    f.write_all_at(&2u64.to_le_bytes(), bat + 4 * 8).unwrap();
}

#[test]
fn differencing_file_reads_through_its_parent() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vhdx -o block_size=1M parent.vhdx 8M && qemu-io -f vhdx -c 'write -P 0xa0 0 8M' parent.vhdx >/dev/null",
        d,
    );
    sh(
        "qemu-img create -q -f vhdx -o block_size=1M,block_state_zero=off child.vhdx 8M && qemu-io -f vhdx -c 'write -P 0xc1 1M 1M' -c 'write -P 0xc2 2M 1M' -c 'write -P 0xc5 5M 4k' child.vhdx >/dev/null",
        d,
    );
    sh(
        "qemu-img convert -O raw parent.vhdx parent.raw && qemu-img convert -O raw child.vhdx child.raw",
        d,
    );
    let parent = std::fs::read(d.join("parent.raw")).unwrap();
    let child = std::fs::read(d.join("child.raw")).unwrap();
    sh("cp child.vhdx bad-link.vhdx", d);
    let linkage = Vhdx::open(FileDisk::open(d.join("parent.vhdx")).unwrap())
        .unwrap()
        .header()
        .data_write_guid
        .to_string()
        .to_uppercase();
    sh("cp child.vhdx moved.vhdx", d);
    make_differencing(d, "child.vhdx", &linkage, ".\\parent.vhdx");

    // What the child holds: blocks 1 and 5 in full, block 2 where its
    // sector bitmap says so, zeros for block 4, the parent elsewhere.
    let mut expected = parent.clone();
    let sector = |s: usize| s * 512..(s + 1) * 512;
    for b in [1usize, 5] {
        expected[b << 20..(b + 1) << 20].copy_from_slice(&child[b << 20..(b + 1) << 20]);
    }
    for s in (0..16).chain([100]).chain(1024..2048) {
        let r = sector(2 * 2048 + s);
        expected[r.clone()].copy_from_slice(&child[r]);
    }
    expected[4 << 20..5 << 20].fill(0);

    let path = d.join("child.vhdx");
    let err = Vhdx::open(FileDisk::open(&path).unwrap()).err().unwrap();
    assert_eq!(err.kind(), disk_io::ErrorKind::InvalidInput);
    let image = Image::open(&path).unwrap();
    let info = image.info().unwrap();
    assert_eq!(info.subformat.as_deref(), Some("differencing"));
    assert_eq!(info.backing_chain.len(), 1);
    assert_eq!(info.backing_chain[0].path, "./parent.vhdx");
    assert_eq!(info.backing_chain[0].format, Format::Vhdx);
    assert!(image.warnings().is_empty(), "{:?}", image.warnings());
    let ours = read_all(&image);
    assert!(
        ours == expected,
        "differencing read differs from the spec's rules"
    );

    // The map: this file's sectors at layer 0, the parent's at layer 1.
    let runs: Vec<_> = extents(&image, 0, u64::MAX)
        .map(|e| e.map(|e| (e.offset, e.length, e.state, e.layer)))
        .collect::<Result<_, _>>()
        .unwrap();
    let mb = 1u64 << 20;
    let s = |n: u64| 2 * mb + n * 512;
    assert_eq!(
        runs,
        vec![
            (0, mb, Allocation::Data, 1),
            (mb, mb + 16 * 512, Allocation::Data, 0),
            (s(16), 84 * 512, Allocation::Data, 1),
            (s(100), 512, Allocation::Data, 0),
            (s(101), 923 * 512, Allocation::Data, 1),
            (s(1024), 1024 * 512, Allocation::Data, 0),
            (3 * mb, mb, Allocation::Data, 1),
            (4 * mb, mb, Allocation::Zero, 0),
            (5 * mb, mb, Allocation::Data, 0),
            (6 * mb, 2 * mb, Allocation::Data, 1),
        ]
    );
    let report = vdisk_format::check(&path).unwrap();
    assert!(report.is_clean(), "{report:?}");

    // A parent that is not the one the child was made on: an error, or a
    // warning when damaged images are allowed.
    make_differencing(
        d,
        "bad-link.vhdx",
        "{00000000-1111-2222-3333-444444444444}",
        ".\\parent.vhdx",
    );
    let err = Image::open(d.join("bad-link.vhdx")).err().unwrap();
    assert!(err.to_string().contains("parent_linkage"), "{err}");
    let opts = vdisk_format::OpenOptions {
        allow_damaged: true,
        ..Default::default()
    };
    let image = Image::open_with(d.join("bad-link.vhdx"), &opts).unwrap();
    assert_eq!(image.warnings().len(), 1, "{:?}", image.warnings());

    // A relative path that no longer holds: the parent is found by the
    // file name of its absolute path, beside the child.
    make_differencing(d, "moved.vhdx", &linkage, "..\\old\\parent.vhdx");
    let image = Image::open(d.join("moved.vhdx")).unwrap();
    assert_eq!(image.info().unwrap().backing_chain[0].path, "parent.vhdx");
    assert!(read_all(&image) == expected);

    // No parent beside it: an error naming the parent.
    sh("mv parent.vhdx gone.vhdx", d);
    let err = Image::open(&path).err().unwrap();
    assert!(err.to_string().contains("parent.vhdx"), "{err}");
}

#[test]
fn bat_interleaves_sector_bitmap_entries_past_4_gib() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    // One sector bitmap entry follows every 4096 payload entries (1 MiB
    // blocks, 512-byte sectors: a 4 GiB chunk); blocks past the first
    // chunk are found one entry further on.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vhdx -o block_size=1M big.vhdx 4160M && qemu-io -f vhdx -c 'write -P 0x66 4095M 1M' -c 'write -P 0x77 4096M 4k' -c 'write -P 0x88 4159M 1M' big.vhdx >/dev/null",
        d,
    );
    let image = Image::open(d.join("big.vhdx")).unwrap();
    let g = 1u64 << 30;
    let m = 1u64 << 20;
    let mut buf = vec![0u8; 2 << 20];
    image.read_at(4 * g - m, &mut buf).unwrap();
    assert!(buf[..1 << 20].iter().all(|&b| b == 0x66));
    assert!(buf[1 << 20..(1 << 20) + 4096].iter().all(|&b| b == 0x77));
    assert!(disk_io::is_zero(&buf[(1 << 20) + 4096..]));
    let mut last = vec![0u8; 1 << 20];
    image.read_at(4159 * m, &mut last).unwrap();
    assert!(last.iter().all(|&b| b == 0x88));
    let data: Vec<_> = extents(&image, 0, u64::MAX)
        .map(|e| e.unwrap())
        .filter(|e| e.state == Allocation::Data)
        .map(|e| (e.offset, e.length))
        .collect();
    assert_eq!(data, vec![(4 * g - m, 2 * m), (4159 * m, m)]);
    assert!(vdisk_format::check(d.join("big.vhdx")).unwrap().is_clean());
}
