//! VDI images made by qemu-img and qemu-io, read by vdisk-format and
//! compared with qemu-img's own reading (guest bytes, allocation map,
//! virtual size); a differencing image built from qemu-made ones (qemu
//! cannot make one) read over its parent; and `check` on block maps the
//! test corrupts, counted as `qemu-img check` counts them.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command;

use disk_io::{Allocation, ReadAt, extents};
use test_support::{have_all, sh};
use vdisk_format::{Format, Image, OpenOptions};

/// (start, length, state, layer) runs of an allocation map.
type Runs = Vec<(u64, u64, Allocation, u64)>;

const MIB: u64 = 1 << 20;

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

fn our_map(image: &Image) -> Runs {
    extents(image, 0, u64::MAX)
        .map(|e| e.map(|e| (e.offset, e.length, e.state, u64::from(e.layer))))
        .collect::<Result<_, _>>()
        .unwrap()
}

fn read_all(image: &Image) -> Vec<u8> {
    let mut ours = vec![0u8; image.size() as usize];
    // Odd-sized reads across block boundaries.
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

/// Our guest bytes, allocation map and virtual size equal qemu-img's.
fn compare_with_qemu(dir: &Path, name: &str, subformat: &str) {
    let image = Image::open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(image.format(), Format::Vdi);
    sh(&format!("qemu-img convert -O raw {name} ref.raw"), dir);
    let reference = std::fs::read(dir.join("ref.raw")).unwrap();
    assert!(
        read_all(&image) == reference,
        "{name}: guest bytes differ from qemu-img convert"
    );

    let map: serde_json::Value =
        serde_json::from_str(&sh(&format!("qemu-img map --output=json {name}"), dir)).unwrap();
    let theirs: Runs = map
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let state = if e["data"].as_bool().unwrap() {
                Allocation::Data
            } else if e["present"].as_bool().unwrap() {
                Allocation::Zero
            } else {
                Allocation::Unallocated
            };
            let (start, length) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            (start, length, state, e["depth"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        merge(our_map(&image)),
        merge(theirs),
        "{name}: allocation map differs from qemu-img map"
    );

    let info: serde_json::Value =
        serde_json::from_str(&sh(&format!("qemu-img info --output=json {name}"), dir)).unwrap();
    let ours = image.info().unwrap();
    assert_eq!(ours.virtual_size, info["virtual-size"].as_u64().unwrap());
    assert_eq!(ours.subformat.as_deref(), Some(subformat));
    assert_eq!(ours.cluster_size, Some(MIB));
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
    let scattered = "-c 'write -P 0x11 0 4k' -c 'write -P 0x22 1M 3M' -c 'write -z 2M 512k' -c 'write -P 0x33 63M 1M' -c 'write -P 0x44 33M 5k' -c 'write -z 40M 4M' -c 'write -P 0x55 50M 1'";
    for (kind, opts) in [("dynamic", ""), ("static", "-o static=on")] {
        for (content, cmds) in [
            ("empty", ""),
            ("scattered", scattered),
            ("random", "-c 'write -s random.bin 0 64M'"),
        ] {
            let name = format!("{kind}-{content}.vdi");
            sh(&format!("qemu-img create -q -f vdi {opts} {name} 64M"), d);
            if !cmds.is_empty() {
                sh(&format!("qemu-io -f vdi {cmds} {name} >/dev/null"), d);
            }
            compare_with_qemu(d, &name, kind);
        }
    }
    // A size that is not a whole number of blocks.
    sh("qemu-img create -q -f vdi odd.vdi 5000k", d);
    sh(
        "qemu-io -f vdi -c 'write -P 1 4M 904k' odd.vdi >/dev/null",
        d,
    );
    compare_with_qemu(d, "odd.vdi", "dynamic");
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Block map entry `index` of the VDI image `b`, and its file offset.
fn map_entry(b: &[u8], index: usize) -> (u32, usize) {
    let at = le32(b, 0x154) as usize + index * 4;
    (le32(b, at), at)
}

fn set_map_entry(b: &mut [u8], index: usize, value: u32) {
    let (_, at) = map_entry(b, index);
    b[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Makes the qemu-made dynamic VDI `child` a differencing image over the
/// VDI `parent`, per VirtualBox's header layout: image type 4 at 0x4c,
/// `uuid_link` (0x1a8) = the parent's `uuid_create` (0x188), and
/// `uuid_parent_modify` (0x1b8) = the parent's `uuid_modify` (0x198).
fn make_differencing(child: &mut [u8], parent: &[u8]) {
    child[0x4c..0x50].copy_from_slice(&4u32.to_le_bytes());
    child[0x1a8..0x1b8].copy_from_slice(&parent[0x188..0x198]);
    child[0x1b8..0x1c8].copy_from_slice(&parent[0x198..0x1a8]);
}

#[test]
fn differencing_image_reads_over_its_parent() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vdi parent.vdi 8M
         qemu-io -f vdi -c 'write -P 1 0 3M' -c 'write -P 2 5M 1M' parent.vdi >/dev/null
         qemu-img create -q -f vdi other.vdi 8M
         qemu-io -f vdi -c 'write -P 3 0 8M' other.vdi >/dev/null
         qemu-img create -q -f vdi child.vdi 8M
         qemu-io -f vdi -c 'write -P 9 1M 1M' -c 'write -P 8 6M 100k' child.vdi >/dev/null
         qemu-img convert -O raw parent.vdi parent.raw
         qemu-img convert -O raw child.vdi child.raw
         mkfifo a-fifo.vdi
         mkdir dir.vdi",
        d,
    );
    let parent = std::fs::read(d.join("parent.vdi")).unwrap();
    let mut child = std::fs::read(d.join("child.vdi")).unwrap();
    make_differencing(&mut child, &parent);
    // The parent search skips what is not a regular file (a FIFO would
    // block) and VDIs with another identity (other.vdi).
    // Block 2 (data in the parent) marked as a zero block in the child.
    set_map_entry(&mut child, 2, 0xffff_fffe);
    std::fs::write(d.join("child.vdi"), &child).unwrap();

    // What the guest should see, block by block.
    let parent_raw = std::fs::read(d.join("parent.raw")).unwrap();
    let child_raw = std::fs::read(d.join("child.raw")).unwrap();
    let mut want = Vec::new();
    let mut want_map: Runs = Vec::new();
    for b in 0..8usize {
        let range = b * MIB as usize..(b + 1) * MIB as usize;
        let (bytes, state, layer) = match map_entry(&child, b).0 {
            0xffff_fffe => (vec![0u8; MIB as usize], Allocation::Zero, 0),
            0xffff_ffff => {
                let state = if map_entry(&parent, b).0 == 0xffff_ffff {
                    Allocation::Zero
                } else {
                    Allocation::Data
                };
                (parent_raw[range].to_vec(), state, 1)
            }
            _ => (child_raw[range].to_vec(), Allocation::Data, 0),
        };
        want.extend_from_slice(&bytes);
        want_map.push((b as u64 * MIB, MIB, state, layer));
    }

    let image = Image::open(d.join("child.vdi")).unwrap();
    assert!(read_all(&image) == want, "differencing read");
    assert_eq!(merge(our_map(&image)), merge(want_map));
    let info = image.info().unwrap();
    assert_eq!(info.subformat.as_deref(), Some("differencing"));
    assert_eq!(info.backing_chain.len(), 1);
    assert_eq!(info.backing_chain[0].path, "parent.vdi");
    assert_eq!(info.backing_chain[0].format, Format::Vdi);
    assert!(image.warnings().is_empty());
    let report = vdisk_format::check(d.join("child.vdi")).unwrap();
    assert!(report.is_clean(), "{report:?}");

    // The parent modified since (its uuid_modify changed): refused, or
    // read with a warning when damage is allowed.
    let mut changed = parent.clone();
    changed[0x198] ^= 0xff;
    std::fs::write(d.join("parent.vdi"), &changed).unwrap();
    let err = Image::open(d.join("child.vdi")).err().unwrap();
    assert!(err.to_string().contains("modified"), "{err}");
    let opts = OpenOptions {
        allow_damaged: true,
        ..OpenOptions::default()
    };
    let image = Image::open_with(d.join("child.vdi"), &opts).unwrap();
    assert_eq!(image.warnings().len(), 1, "{:?}", image.warnings());
    assert!(read_all(&image) == want);

    // No VDI in the directory has the parent UUID: refused by name.
    std::fs::remove_file(d.join("parent.vdi")).unwrap();
    let err = Image::open(d.join("child.vdi")).err().unwrap();
    assert!(err.to_string().contains("parent UUID"), "{err}");
    // And opened alone, without a parent, it is refused too.
    let file = disk_io::FileDisk::open(d.join("child.vdi")).unwrap();
    assert!(vdisk_format::vdi::Vdi::open(file).is_err());
}

/// An edit of an image's bytes.
type Damage = fn(&mut Vec<u8>);

/// `qemu-img check --output=json`: (corruptions, leaks).
fn qemu_check(path: &Path) -> (u64, u64) {
    let out = Command::new("qemu-img")
        .args(["check", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    (n("corruptions"), n("leaks"))
}

#[test]
fn check_finds_corrupted_block_maps() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vdi a.vdi 8M && qemu-io -f vdi -c 'write -P 1 0 2M' -c 'write -P 2 5M 1k' a.vdi >/dev/null",
        d,
    );
    let base = std::fs::read(d.join("a.vdi")).unwrap();
    let cases: [(&str, Damage, &str); 3] = [
        (
            "large.vdi",
            |b| set_map_entry(b, 0, 1000),
            "block index too large",
        ),
        (
            "twice.vdi",
            |b| {
                let (e, _) = map_entry(b, 0);
                set_map_entry(b, 3, e);
            },
            "also used by",
        ),
        ("count.vdi", |b| b[0x184] += 1, "allocated blocks mismatch"),
    ];
    for (name, damage, says) in cases {
        let mut b = base.clone();
        damage(&mut b);
        let path = d.join(name);
        std::fs::write(&path, &b).unwrap();
        let report = vdisk_format::check(&path).unwrap();
        assert!(
            report.messages.iter().any(|m| m.contains(says)),
            "{name}: {report:?}"
        );
        assert_eq!(
            (report.errors, report.leaks),
            qemu_check(&path),
            "{name}: {report:?}"
        );
    }

    // A block past the end of the file: qemu-img does not look, we do.
    let mut b = base.clone();
    set_map_entry(&mut b, 7, 5);
    b[0x184] += 1;
    std::fs::write(d.join("past.vdi"), &b).unwrap();
    let report = vdisk_format::check(d.join("past.vdi")).unwrap();
    assert_eq!(report.errors, 1, "{report:?}");
    assert!(report.messages[0].contains("past the end"), "{report:?}");
    let image = Image::open(d.join("past.vdi")).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = image.read_at(7 * MIB, &mut buf).err().unwrap();
    assert!(err.to_string().contains("block map entry 7"), "{err}");
}

#[test]
fn fuzz_corpus_replays() {
    test_support::replay_corpus(
        &["seeds/vdi", "corpus/vdi"],
        5,
        vdisk_format::fuzzing::vdi_read,
    );
}

/// Rewrites the qemu-made version 1.1 VDI `v1` as a version 0 image
/// (VirtualBox's packed `VDIHEADER0`): the same pre-header text and
/// signature with version 0.0, then type, flags, comment, legacy geometry,
/// disk size, block size, blocks, blocks allocated and the three UUIDs at
/// 0x48..0x1a4; the block map at 0x1a4 and the data right after it.
fn to_v0(v1: &[u8]) -> Vec<u8> {
    let blocks = le32(v1, 0x180) as usize;
    let (bmap, data) = (le32(v1, 0x154) as usize, le32(v1, 0x158) as usize);
    let mut out = vec![0u8; 0x1a4];
    out[..0x44].copy_from_slice(&v1[..0x44]);
    for (to, from, len) in [
        (0x48, 0x4c, 4 + 4 + 256), // type, flags, comment
        (0x150, 0x15c, 16),        // legacy geometry
        (0x160, 0x170, 8 + 4),     // disk size, block size
        (0x16c, 0x180, 4 + 4),     // blocks, allocated
        (0x174, 0x188, 48),        // uuid_create, uuid_modify, uuid_link
    ] {
        out[to..to + len].copy_from_slice(&v1[from..from + len]);
    }
    out.extend_from_slice(&v1[bmap..bmap + 4 * blocks]);
    out.extend_from_slice(&v1[data..]);
    out
}

#[test]
fn version_0_header_reads_like_its_version_1_twin() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vdi v1.vdi 8M && qemu-io -f vdi -c 'write -P 1 0 5k' -c 'write -P 2 3M 1M' -c 'write -P 3 7M 100k' v1.vdi >/dev/null",
        d,
    );
    let v1 = std::fs::read(d.join("v1.vdi")).unwrap();
    std::fs::write(d.join("v0.vdi"), to_v0(&v1)).unwrap();
    let old = Image::open(d.join("v0.vdi")).unwrap();
    let new = Image::open(d.join("v1.vdi")).unwrap();
    assert_eq!(old.size(), new.size());
    assert!(read_all(&old) == read_all(&new));
    assert_eq!(our_map(&old), our_map(&new));
    assert_eq!(old.info().unwrap().subformat.as_deref(), Some("dynamic"));
    let report = vdisk_format::check(d.join("v0.vdi")).unwrap();
    assert!(report.is_clean(), "{report:?}");
}
