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

/// Guest contents: none, scattered pattern and zero writes, or 16 MiB of
/// random data.
const CONTENTS: [(&str, &str); 3] = [
    ("empty", ""),
    (
        "scattered",
        "-c 'write -P 0x11 0 4k' -c 'write -P 0x22 1M 3M' -c 'write -z 2M 512k' -c 'write -P 0x33 47M 1M' -c 'write -P 0x44 33M 5k' -c 'write -z 40M 4M' -c 'write -P 0x55 40M 4k'",
    ),
    ("random", "-c 'write -s random.bin 20M 16M'"),
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
    write_random(d, 16 << 20);
    for subformat in ["dynamic", "fixed"] {
        for block in ["1M", "32M"] {
            for (content, cmds) in CONTENTS {
                let name = format!("{subformat}-{block}-{content}.vhdx");
                sh(
                    &format!(
                        "qemu-img create -q -f vhdx -o subformat={subformat},block_size={block} {name} 48M"
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
}
