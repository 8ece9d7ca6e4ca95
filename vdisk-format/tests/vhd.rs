//! VHD images made by qemu-img and qemu-io (qemu's `vpc`), read by
//! vdisk-format and compared with qemu-img's own reading: guest bytes,
//! allocation map and virtual size. qemu does not write differencing
//! disks: those are made here from qemu-made dynamic disks by filling in
//! the fields the specification gives a child (disk type, parent unique
//! id, time stamp and name, a parent locator), with every change and
//! checksum spelled out in `link`. Plus the shared dfvfs images, and
//! damaged images.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

use disk_io::{Allocation, ReadAt, extents};
use test_support::{have_all, sh, testdata};
use vdisk_format::{Format, Image, OpenOptions};

/// (start, length, state, layer) runs of an allocation map.
type Runs = Vec<(u64, u64, Allocation, u64)>;

/// Guest contents: none, scattered pattern and zero writes, 64 MiB random.
const CONTENTS: [(&str, &str); 3] = [
    ("empty", ""),
    (
        "scattered",
        "-c 'write -P 0x11 0 4k' -c 'write -P 0x22 1M 3M' -c 'write -z 2M 512k' -c 'write -P 0x33 40M 1M' -c 'write -P 0x44 33M 5k' -c 'write -P 0x55 47M 512'",
    ),
    ("random", "-c 'write -s random.bin 8M 64M'"),
];

fn read_all(image: &impl ReadAt) -> Vec<u8> {
    let mut ours = vec![0u8; image.size() as usize];
    // Odd-sized reads across sector and block boundaries.
    let mut at = 0;
    for step in [1000usize, 4096, 65536 + 17, 1 << 20].iter().cycle() {
        if at >= ours.len() {
            break;
        }
        let n = (*step).min(ours.len() - at);
        image.read_at(at as u64, &mut ours[at..at + n]).unwrap();
        at += n;
    }
    ours
}

/// Equal bytes, or a failure naming the first sector that differs.
fn same_bytes(ours: &[u8], theirs: &[u8], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: sizes");
    if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
        panic!(
            "{what}: guest bytes differ first at {i:#x}: ours {:02x?}, theirs {:02x?}",
            &ours[i..(i + 8).min(ours.len())],
            &theirs[i..(i + 8).min(theirs.len())]
        );
    }
}

fn our_map(image: &impl ReadAt) -> Runs {
    extents(image, 0, u64::MAX)
        .map(|e| e.map(|e| (e.offset, e.length, e.state, u64::from(e.layer))))
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `qemu-img map`: zero (whether or not the file holds the range, as it
/// does for a fixed disk) is Zero, other data is Data, not present is
/// Unallocated.
fn qemu_map(dir: &Path, name: &str) -> Runs {
    let map: serde_json::Value = serde_json::from_str(&sh(
        &format!("qemu-img map -f vpc --output=json {name}"),
        dir,
    ))
    .unwrap();
    map.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let state = if !e["present"].as_bool().unwrap() {
                Allocation::Unallocated
            } else if e["zero"].as_bool().unwrap() {
                Allocation::Zero
            } else {
                Allocation::Data
            };
            let (start, length) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            (start, length, state, e["depth"].as_u64().unwrap())
        })
        .collect()
}

/// Neighbouring runs of one state and layer as one.
fn merge(runs: Runs) -> Runs {
    let mut out: Runs = Vec::new();
    for (start, len, state, depth) in runs {
        match out.last_mut() {
            Some(last) if last.2 == state && last.3 == depth && last.0 + last.1 == start => {
                last.1 += len
            }
            _ => out.push((start, len, state, depth)),
        }
    }
    out
}

fn qemu_size(dir: &Path, name: &str) -> u64 {
    let info: serde_json::Value = serde_json::from_str(&sh(
        &format!("qemu-img info -f vpc --output=json {name}"),
        dir,
    ))
    .unwrap();
    info["virtual-size"].as_u64().unwrap()
}

/// Our guest bytes, map and size equal qemu-img's.
fn check(dir: &Path, name: &str, subformat: &str) {
    let image = Image::open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(image.format(), Format::Vhd);
    let info = image.info().unwrap();
    assert_eq!(info.subformat.as_deref(), Some(subformat), "{name}");
    assert_eq!(info.virtual_size, qemu_size(dir, name), "{name}");
    sh(
        &format!("qemu-img convert -f vpc -O raw {name} ref.raw"),
        dir,
    );
    let reference = std::fs::read(dir.join("ref.raw")).unwrap();
    assert_eq!(image.size(), reference.len() as u64, "{name}");
    same_bytes(&read_all(&image), &reference, name);
    assert_eq!(
        merge(our_map(&image)),
        merge(qemu_map(dir, name)),
        "{name}: allocation map differs from qemu-img map"
    );
    let report = vdisk_format::check(dir.join(name)).unwrap();
    assert!(report.is_clean(), "{name}: {report:?}");
}

#[test]
fn qemu_made_images_read_like_qemu_reads_them() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("head -c 64M /dev/urandom > random.bin", d);
    for subformat in ["dynamic", "fixed"] {
        for (content, write) in CONTENTS {
            let name = format!("{subformat}-{content}.vhd");
            sh(
                &format!("qemu-img create -q -f vpc -o subformat={subformat} {name} 80M"),
                d,
            );
            if !write.is_empty() {
                sh(&format!("qemu-io -f vpc {write} {name} >/dev/null"), d);
            }
            check(d, &name, subformat);
            if subformat == "dynamic" {
                let info = Image::open(d.join(&name)).unwrap().info().unwrap();
                assert_eq!(info.cluster_size, Some(2 << 20));
            }
        }
    }
}

#[test]
fn virtual_size_is_qemus() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for size in ["1000000", "12345678", "10M", "127M", "4G", "1T"] {
        for opts in [
            "subformat=dynamic",
            "subformat=fixed",
            "subformat=dynamic,force_size=on",
            "subformat=fixed,force_size=on",
        ] {
            if opts.contains("fixed") && size.ends_with(['G', 'T']) {
                continue;
            }
            let name = format!("s-{size}-{}.vhd", opts.replace([',', '='], "-"));
            sh(
                &format!("qemu-img create -q -f vpc -o {opts} {name} {size}"),
                d,
            );
            let info = Image::open(d.join(&name)).unwrap().info().unwrap();
            assert_eq!(info.virtual_size, qemu_size(d, &name), "{name}");
        }
    }
}

// ---- differencing disks ----

/// VHD checksum: one's complement of the byte sum, the field skipped.
fn checksum(b: &[u8], at: usize) -> u32 {
    !b.iter()
        .enumerate()
        .filter(|(i, _)| !(at..at + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Seconds since 2000-01-01 UTC of a file's modification time.
fn vhd_mtime(path: &Path) -> u32 {
    let m = std::fs::metadata(path).unwrap().modified().unwrap();
    (m.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 946_684_800) as u32
}

/// A parent locator to write into a child.
enum Locator<'a> {
    /// `W2ru`/`W2ku`: UTF-16LE path.
    Windows(&'a [u8; 4], &'a str),
    /// `MacX`: UTF-8 file URL.
    MacX(&'a str),
}

/// Makes the qemu-made dynamic disk `child` a differencing disk over
/// `parent` (both in `dir`): disk type 4 in both footers, the parent's
/// unique id and modification time, `unicode_name` as the parent name,
/// `locator` (its data appended before the end footer), and every
/// checksum recomputed. `bad_uuid` records a wrong parent id.
fn link(
    dir: &Path,
    child: &str,
    parent: &str,
    unicode_name: &str,
    locator: Option<Locator>,
    bad_uuid: bool,
) {
    let parent_bytes = std::fs::read(dir.join(parent)).unwrap();
    let parent_footer = &parent_bytes[parent_bytes.len() - 512..];
    let mut uuid: [u8; 16] = parent_footer[68..84].try_into().unwrap();
    if bad_uuid {
        uuid[0] ^= 0xff;
    }
    let ts = vhd_mtime(&dir.join(parent));
    let mut f = std::fs::read(dir.join(child)).unwrap();
    let mut footer: Vec<u8> = f[f.len() - 512..].to_vec();
    assert_eq!(&footer[..8], b"conectix");
    put32(&mut footer, 60, 4);
    let h = u64::from_be_bytes(footer[16..24].try_into().unwrap()) as usize;
    let mut header = f[h..h + 1024].to_vec();
    assert_eq!(&header[..8], b"cxsparse");
    header[40..56].copy_from_slice(&uuid);
    put32(&mut header, 56, ts);
    for (i, u) in unicode_name.encode_utf16().enumerate() {
        header[64 + 2 * i..66 + 2 * i].copy_from_slice(&u.to_be_bytes());
    }
    let end = f.len() - 512;
    f.truncate(end);
    if let Some(loc) = locator {
        let (code, data): (&[u8; 4], Vec<u8>) = match loc {
            Locator::Windows(code, path) => (
                code,
                path.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
            ),
            Locator::MacX(url) => (b"MacX", url.as_bytes().to_vec()),
        };
        let e = &mut header[576..600];
        e[0..4].copy_from_slice(code);
        put32(e, 4, 1);
        put32(e, 8, data.len() as u32);
        e[16..24].copy_from_slice(&(end as u64).to_be_bytes());
        let mut sector = data;
        sector.resize(512, 0);
        f.extend_from_slice(&sector);
    }
    let c = checksum(&header, 36);
    put32(&mut header, 36, c);
    f[h..h + 1024].copy_from_slice(&header);
    let c = checksum(&footer, 64);
    put32(&mut footer, 64, c);
    f[..512].copy_from_slice(&footer);
    f.extend_from_slice(&footer);
    std::fs::write(dir.join(child), f).unwrap();
}

/// Clears the sector bitmap bits of `sectors` of block `block` of a
/// dynamic disk (as a disk whose block was only partly written has them).
fn clear_bits(path: &Path, block: usize, sectors: std::ops::Range<usize>) {
    let mut f = std::fs::read(path).unwrap();
    let footer = &f[f.len() - 512..];
    let h = u64::from_be_bytes(footer[16..24].try_into().unwrap()) as usize;
    let bat = u64::from_be_bytes(f[h + 16..h + 24].try_into().unwrap()) as usize;
    let entry = be32(&f, bat + 4 * block) as usize;
    assert_ne!(entry, u32::MAX as usize, "block {block} is not allocated");
    for s in sectors {
        f[entry * 512 + s / 8] &= !(0x80 >> (s % 8));
    }
    std::fs::write(path, f).unwrap();
}

/// Which blocks of a dynamic disk qemu-img map says are stored.
fn stored_blocks(dir: &Path, name: &str, block: u64, size: u64) -> Vec<bool> {
    let mut out = vec![false; size.div_ceil(block) as usize];
    for (start, len, state, _) in qemu_map(dir, name) {
        if state == Allocation::Data {
            for b in start / block..(start + len).div_ceil(block) {
                out[b as usize] = true;
            }
        }
    }
    out
}

#[test]
fn differencing_chain_reads_each_layer_over_its_parent() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 24u64 << 20;
    let block = 2u64 << 20;
    let layers = [
        ("base.vhd", "-c 'write -P 1 0 8M' -c 'write -P 2 16M 3M'"),
        ("mid.vhd", "-c 'write -P 3 4M 6M' -c 'write -P 6 20M 1M'"),
        (
            "top.vhd",
            "-c 'write -P 4 6M 100k' -c 'write -P 5 22M 512' -c 'write -P 7 0 4k'",
        ),
    ];
    // Each layer's own bytes and stored blocks, as qemu reads it alone.
    let mut raw = Vec::new();
    let mut stored = Vec::new();
    for (name, write) in layers {
        sh(&format!("qemu-img create -q -f vpc {name} 24M"), d);
        sh(&format!("qemu-io -f vpc {write} {name} >/dev/null"), d);
        let size_q = qemu_size(d, name);
        assert!(size_q >= size);
        sh(
            &format!("qemu-img convert -f vpc -O raw {name} {name}.raw"),
            d,
        );
        raw.push(std::fs::read(d.join(format!("{name}.raw"))).unwrap());
        stored.push(stored_blocks(d, name, block, size_q));
    }
    // Sectors 8..24 of top's block 0 not stored in top: they come from mid
    // (which does not store block 0 either) and so from base.
    clear_bits(&d.join("top.vhd"), 0, 8..24);
    link(
        d,
        "mid.vhd",
        "base.vhd",
        "base.vhd",
        Some(Locator::Windows(b"W2ru", ".\\base.vhd")),
        false,
    );
    link(
        d,
        "top.vhd",
        "mid.vhd",
        "mid.vhd",
        Some(Locator::Windows(b"W2ku", "C:\\vms\\mid.vhd")),
        false,
    );

    let image = Image::open(d.join("top.vhd")).unwrap();
    assert!(image.warnings().is_empty(), "{:?}", image.warnings());
    let info = image.info().unwrap();
    assert_eq!(info.subformat.as_deref(), Some("differencing"));
    let chain: Vec<(String, Format)> = info
        .backing_chain
        .iter()
        .map(|b| (b.path.clone(), b.format))
        .collect();
    assert_eq!(
        chain,
        [
            ("mid.vhd".to_owned(), Format::Vhd),
            ("base.vhd".to_owned(), Format::Vhd)
        ]
    );
    // Expected guest bytes and map, sector by sector.
    let n = image.size() as usize;
    let mut want = vec![0u8; n];
    let mut want_map: Runs = Vec::new();
    for s in 0..n / 512 {
        let pos = s * 512;
        let b = pos / block as usize;
        let cleared = b == 0 && (8..24).contains(&s);
        let layer = (0..3).find(|&l| {
            let l_index = 2 - l; // layer 0 is top, the last made
            stored[l_index][b] && !(l == 0 && cleared)
        });
        let state = match layer {
            Some(l) => {
                want[pos..pos + 512].copy_from_slice(&raw[2 - l][pos..pos + 512]);
                (pos as u64, 512, Allocation::Data, l as u64)
            }
            None => (pos as u64, 512, Allocation::Zero, 2),
        };
        want_map.push(state);
    }
    same_bytes(&read_all(&image), &want, "the chain");
    assert_eq!(merge(our_map(&image)), merge(want_map));
    assert!(vdisk_format::check(d.join("top.vhd")).unwrap().is_clean());
}

#[test]
fn parent_identity_and_path_are_checked() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "mkdir img other && qemu-img create -q -f vpc img/base.vhd 8M && qemu-io -f vpc -c 'write -P 9 0 1M' img/base.vhd >/dev/null && cp img/base.vhd other/base.vhd",
        d,
    );
    let img = d.join("img");
    let make = |name: &str, unicode: &str, loc: Option<Locator>, bad_uuid: bool| {
        sh(&format!("qemu-img create -q -f vpc {name} 8M"), &img);
        link(&img, name, "base.vhd", unicode, loc, bad_uuid);
    };
    let open_err = |name: &str| {
        Image::open(img.join(name))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let damaged = OpenOptions {
        allow_damaged: true,
        ..Default::default()
    };

    // The parent unique id does not match: refused, or read with a warning.
    make("wrongid.vhd", "base.vhd", None, true);
    let err = open_err("wrongid.vhd");
    assert!(err.contains("parent unique id"), "{err}");
    assert!(err.contains("offset 0x228"), "{err}");
    let image = Image::open_with(img.join("wrongid.vhd"), &damaged).unwrap();
    assert!(
        image.warnings().iter().any(|w| w.contains("unique id")),
        "{:?}",
        image.warnings()
    );
    let mut buf = vec![0u8; 4096];
    image.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 9));

    // The parent changed after the child was made.
    make("stale.vhd", "base.vhd", None, false);
    sh("touch -d '2001-02-03 04:05:06' base.vhd", &img);
    let err = open_err("stale.vhd");
    assert!(err.contains("time stamp"), "{err}");
    assert!(Image::open_with(img.join("stale.vhd"), &damaged).is_ok());

    // The locators point outside the image's directory: refused, even
    // with a usable parent name beside it.
    make(
        "dotdot.vhd",
        "base.vhd",
        Some(Locator::Windows(b"W2ru", "..\\other\\base.vhd")),
        false,
    );
    let err = open_err("dotdot.vhd");
    assert!(err.contains("outside the image's directory"), "{err}");
    let outside = OpenOptions {
        allow_outside: true,
        ..Default::default()
    };
    // (The copy outside has the unique id; give it the time stamp too.)
    sh("touch -r img/base.vhd other/base.vhd", d);
    let image = Image::open_with(img.join("dotdot.vhd"), &outside).unwrap();
    assert_eq!(
        image.info().unwrap().backing_chain[0].path,
        "../other/base.vhd"
    );
    let url = format!("file://{}", d.join("other/base.vhd").display());
    make("macx.vhd", "base.vhd", Some(Locator::MacX(&url)), false);
    let err = open_err("macx.vhd");
    assert!(err.contains("absolute path"), "{err}");
    // Only the unicode name, and a parent that is not there.
    make("named.vhd", "base.vhd", None, false);
    assert_eq!(open_err("named.vhd"), "");
    make("missing.vhd", "nothere.vhd", None, false);
    let err = open_err("missing.vhd");
    assert!(
        err.contains("parent not found") && err.contains("nothere.vhd"),
        "{err}"
    );
}

// ---- shared images ----

#[test]
fn dfvfs_images() {
    let (Some(ext2), Some(parent), Some(child)) = (
        testdata("dfvfs/ext2.vhd"),
        testdata("dfvfs/image.vhd"),
        testdata("dfvfs/image-differential.vhd"),
    ) else {
        return;
    };
    if !have_all(&["qemu-img"]) {
        return;
    }
    // A clean dynamic disk: reads as qemu reads it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::os::unix::fs::symlink(&ext2, d.join("ext2.vhd")).unwrap();
    check(d, "ext2.vhd", "dynamic");

    // Checksums deliberately bad: refused by name and offset, read when
    // damaged images are allowed, with the child over its parent.
    let err = Image::open(&child).err().unwrap().to_string();
    assert!(
        err.contains("checksum") && err.contains("offset 0x"),
        "{err}"
    );
    let damaged = OpenOptions {
        allow_damaged: true,
        ..Default::default()
    };
    let image = Image::open_with(&child, &damaged).unwrap();
    eprintln!("refused: {err}\nwarnings: {:#?}", image.warnings());
    assert!(!image.warnings().is_empty());
    assert!(
        image.warnings().iter().any(|w| w.contains("checksum")),
        "{:?}",
        image.warnings()
    );
    let info = image.info().unwrap();
    assert_eq!(info.subformat.as_deref(), Some("differencing"));
    assert_eq!(info.backing_chain.len(), 1);
    assert_eq!(info.backing_chain[0].path, "image.vhd");
    let parent = Image::open_with(&parent, &damaged).unwrap();
    let ours = read_all(&image);
    let theirs = read_all(&parent);
    assert_eq!(ours.len(), theirs.len());
    // The child stores the disk's one block (BAT entry 0: sector 4, its
    // data after a one-sector bitmap); what it stores reads from it.
    let child_file = std::fs::read(&child).unwrap();
    let mut own = 0;
    for run in our_map(&image) {
        let (s, e) = (run.0 as usize, (run.0 + run.1) as usize);
        match run.3 {
            0 => {
                own += e - s;
                assert!(
                    ours[s..e] == child_file[0xa00 + s..0xa00 + e],
                    "child run {run:?}"
                );
            }
            _ => assert!(ours[s..e] == theirs[s..e], "parent run {run:?}"),
        }
    }
    assert_eq!(own, ours.len(), "the child stores all of its one block");
}

// ---- check and damaged input ----

#[test]
fn check_finds_damage_and_damage_is_named() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vpc a.vhd 16M && qemu-io -f vpc -c 'write -P 1 0 5M' a.vhd >/dev/null",
        d,
    );
    let clean = std::fs::read(d.join("a.vhd")).unwrap();
    assert!(vdisk_format::check(d.join("a.vhd")).unwrap().is_clean());
    let bat = 1536usize;

    // A BAT entry pointed past the end of the file.
    let mut f = clean.clone();
    put32(&mut f, bat + 4, 0x0100_0000);
    std::fs::write(d.join("b.vhd"), &f).unwrap();
    let report = vdisk_format::check(d.join("b.vhd")).unwrap();
    assert_eq!(report.errors, 1, "{report:?}");
    assert!(
        report.messages[0].contains("BAT entry 1 at offset 0x604"),
        "{report:?}"
    );
    let err = Image::open(d.join("b.vhd")).unwrap();
    let mut buf = vec![0u8; 4096];
    let e = err.read_at(2 << 20, &mut buf).err().unwrap().to_string();
    assert!(e.contains("BAT entry 1") && e.contains("0x604"), "{e}");

    // Two blocks at one place.
    let mut f = clean.clone();
    let first = be32(&f, bat);
    put32(&mut f, bat + 8, first);
    std::fs::write(d.join("c.vhd"), &f).unwrap();
    let report = vdisk_format::check(d.join("c.vhd")).unwrap();
    assert!(
        report.messages.iter().any(|m| m.contains("overlap")),
        "{report:?}"
    );

    // A block over the dynamic disk header, and a block size that is no
    // power of two (header checksum kept right: only the value is wrong).
    let mut f = clean.clone();
    put32(&mut f, bat + 4, 1);
    std::fs::write(d.join("m.vhd"), &f).unwrap();
    let report = vdisk_format::check(d.join("m.vhd")).unwrap();
    assert!(
        report
            .messages
            .iter()
            .any(|m| m.contains("overlaps the dynamic disk header")),
        "{report:?}"
    );
    let mut f = clean.clone();
    put32(&mut f, 512 + 32, 3 << 20);
    let c = checksum(&f[512..1536], 36);
    put32(&mut f, 512 + 36, c);
    std::fs::write(d.join("s.vhd"), &f).unwrap();
    let err = Image::open(d.join("s.vhd")).err().unwrap().to_string();
    assert!(err.contains("block size") && err.contains("0x220"), "{err}");

    // A flipped footer byte: the end footer fails its checksum, the copy
    // at offset 0 is used (a warning), and check reports it.
    let mut f = clean.clone();
    let n = f.len();
    f[n - 512 + 100] ^= 1;
    std::fs::write(d.join("e.vhd"), &f).unwrap();
    let report = vdisk_format::check(d.join("e.vhd")).unwrap();
    assert!(
        report.errors >= 1 && report.messages[0].contains("checksum"),
        "{report:?}"
    );
    let image = Image::open(d.join("e.vhd")).unwrap();
    assert!(image.warnings()[0].contains("copy at offset 0"));
    // Both copies flipped: an error naming the checksum and its offset.
    f[100] ^= 1;
    std::fs::write(d.join("f.vhd"), &f).unwrap();
    let err = Image::open(d.join("f.vhd")).err().unwrap().to_string();
    assert!(
        err.contains("vhd footer checksum") && err.contains("offset"),
        "{err}"
    );

    // A BAT of 2^32-1 entries: refused before anything is allocated.
    let mut f = clean.clone();
    put32(&mut f, 512 + 28, u32::MAX);
    let c = checksum(&f[512..1536], 36);
    put32(&mut f, 512 + 36, c);
    std::fs::write(d.join("g.vhd"), &f).unwrap();
    let err = Image::open(d.join("g.vhd")).err().unwrap().to_string();
    assert!(err.contains("vhd BAT") && err.contains("0x210"), "{err}");
    assert!(vdisk_format::check(d.join("g.vhd")).is_err());

    // Every truncation of the metadata fails cleanly.
    for len in [0, 100, 511, 512, 1000, 1536, 2000] {
        std::fs::write(d.join("t.vhd"), &clean[..len]).unwrap();
        let _ = Image::open(d.join("t.vhd"));
        vdisk_format::fuzzing::vhd_read(&clean[..len]);
    }
}

/// The fuzz seeds are what their names say (so the fuzzer starts from
/// images that open, not from errors).
#[test]
fn fuzz_seeds_open() {
    use vdisk_format::vhd::{DiskType, Vhd};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/vhd");
    for (name, want) in [
        ("dynamic.vhd", DiskType::Dynamic),
        ("empty.vhd", DiskType::Dynamic),
        ("force-size.vhd", DiskType::Dynamic),
        ("big-bat.vhd", DiskType::Dynamic),
        ("fixed.vhd", DiskType::Fixed),
        ("differencing.vhd", DiskType::Differencing),
    ] {
        let data = std::fs::read(dir.join(name)).unwrap();
        let parent: Option<vdisk_format::chain::Backing> = (want == DiskType::Differencing)
            .then(|| Box::new(vec![0u8; 4096]) as vdisk_format::chain::Backing);
        let image = Vhd::open_damaged(&data[..], parent).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(image.footer().disk_type, want, "{name}");
        let mut buf = vec![0u8; 4096];
        image.read_at(0, &mut buf).unwrap();
    }
}
