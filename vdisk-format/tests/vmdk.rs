//! VMDK images made by qemu-img and qemu-io (and a few made by VMware),
//! read by vdisk-format and compared with qemu-img's own reading: guest
//! bytes and allocation map (state and the chain layer of each run).

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

use disk_io::{Allocation, ErrorKind, ReadAt, extents};
use test_support::{have_all, sh, testdata};
use vdisk_format::{Format, Image, OpenOptions};

/// Scattered pattern and zero writes over a 64 MiB disk.
const SCATTERED: &str = "-c 'write -P 0xab 0 4k' -c 'write -P 0xab 1M 3M' -c 'write -z 2M 512k' -c 'write -P 0xab 63M 1M' -c 'write -P 0xab 33M 5k' -c 'write -z 40M 4M' -c 'write -P 0xab 40M 4k'";

const SUBFORMATS: [&str; 5] = [
    "monolithicSparse",
    "streamOptimized",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
];

/// (start, length, state, layer) runs of an allocation map.
type Runs = Vec<(u64, u64, Allocation, u64)>;

/// qemu-img's allocation map: `present:false` is not stored in the chain
/// (Unallocated), `zero:true` otherwise is Zero (for flat extents qemu
/// says `data:true,zero:true` over holes of the extent file: we say Zero),
/// the rest is Data.
fn qemu_map(dir: &Path, name: &str) -> Runs {
    let map: serde_json::Value =
        serde_json::from_str(&sh(&format!("qemu-img map --output=json {name}"), dir)).unwrap();
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

fn our_map(image: &Image) -> Runs {
    extents(image, 0, u64::MAX)
        .map(|e| e.map(|e| (e.offset, e.length, e.state, u64::from(e.layer))))
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Neighbouring runs of one state and layer as one. qemu gives ranges that
/// no layer holds the chain's length as depth; those compare by state alone.
fn merge(runs: Runs) -> Runs {
    let mut out: Runs = Vec::new();
    for (start, len, state, depth) in runs {
        let depth = if state == Allocation::Unallocated {
            0
        } else {
            depth
        };
        match out.last_mut() {
            Some(last) if last.2 == state && last.3 == depth && last.0 + last.1 == start => {
                last.1 += len
            }
            _ => out.push((start, len, state, depth)),
        }
    }
    out
}

/// Reads the whole guest in odd-sized pieces.
fn read_all(image: &Image) -> Vec<u8> {
    let mut ours = vec![0u8; image.size() as usize];
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

/// Our guest bytes equal qemu-img's, and our allocation map matches
/// `qemu-img map`.
fn check(dir: &Path, name: &str) -> Image {
    let image = Image::open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(image.format(), Format::Vmdk);
    sh(&format!("qemu-img convert -O raw {name} ref.raw"), dir);
    let reference = std::fs::read(dir.join("ref.raw")).unwrap();
    assert_eq!(image.size(), reference.len() as u64, "{name}");
    assert!(
        read_all(&image) == reference,
        "{name}: guest bytes differ from qemu-img convert"
    );
    assert_eq!(
        merge(our_map(&image)),
        merge(qemu_map(dir, name)),
        "{name}: allocation map differs from qemu-img map"
    );
    image
}

#[test]
fn qemu_made_subformats_read_like_qemu_reads_them() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "head -c 64M /dev/urandom > random.bin && qemu-img create -q -f raw random.raw 64M && qemu-io -f raw -c 'write -s random.bin 0 64M' random.raw >/dev/null",
        d,
    );
    sh(
        &format!(
            "qemu-img create -q -f raw scattered.raw 64M && qemu-io -f raw {SCATTERED} scattered.raw >/dev/null"
        ),
        d,
    );
    for sub in SUBFORMATS {
        for content in ["empty", "scattered", "random"] {
            let name = format!("{sub}-{content}.vmdk");
            let direct = sub != "streamOptimized";
            match content {
                "empty" => sh(
                    &format!("qemu-img create -q -f vmdk -o subformat={sub} {name} 64M"),
                    d,
                ),
                "scattered" if direct => sh(
                    &format!(
                        "qemu-img create -q -f vmdk -o subformat={sub} {name} 64M && qemu-io -f vmdk {SCATTERED} {name} >/dev/null"
                    ),
                    d,
                ),
                _ => sh(
                    &format!("qemu-img convert -O vmdk -o subformat={sub} {content}.raw {name}"),
                    d,
                ),
            };
            let image = check(d, &name);
            let info = image.info().unwrap();
            assert_eq!(info.subformat.as_deref(), Some(sub), "{name}");
            if sub.contains("Sparse") || sub == "streamOptimized" {
                assert_eq!(info.cluster_size, Some(65536), "{name}");
            }
            let report = vdisk_format::check(d.join(&name)).unwrap();
            assert!(report.is_clean(), "{name}: {report:?}");
        }
    }
    // Zeroed-grain entries: `write -z` leaves zero grains (GTE 1).
    for sub in ["monolithicSparse", "twoGbMaxExtentSparse"] {
        let name = format!("{sub}-zeroed.vmdk");
        sh(
            &format!(
                "qemu-img create -q -f vmdk -o subformat={sub},zeroed_grain=on {name} 64M && qemu-io -f vmdk {SCATTERED} {name} >/dev/null"
            ),
            d,
        );
        let image = check(d, &name);
        assert!(
            our_map(&image)
                .iter()
                .any(|r| r.2 == Allocation::Zero && r.0 == 2 << 20),
            "{name}: no zero grains"
        );
        assert!(vdisk_format::check(d.join(&name)).unwrap().is_clean());
    }
}

/// Disks of several extents (2 GiB each): the map in full, the bytes
/// around the extent boundaries.
#[test]
fn several_extents() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let name = format!("{sub}-5g.vmdk");
        sh(
            &format!(
                "qemu-img create -q -f vmdk -o subformat={sub} {name} 5G && qemu-io -f vmdk -c 'write -P 0x11 2047M 2M' -c 'write -P 0x22 4095M 1025k' -c 'write -P 0x33 5119M 1M' {name} >/dev/null"
            ),
            d,
        );
        let image = Image::open(d.join(&name)).unwrap();
        assert_eq!(image.size(), 5 << 30);
        assert_eq!(merge(our_map(&image)), merge(qemu_map(d, &name)), "{name}");
        sh(&format!("qemu-img convert -O raw {name} ref.raw"), d);
        let reference = std::fs::File::open(d.join("ref.raw")).unwrap();
        use std::os::unix::fs::FileExt;
        for at in [(2047u64 << 20) - 4096, (4095 << 20) - 4096, 5119 << 20] {
            let mut want = vec![0u8; (3 << 20) - 4096 + 512];
            let n = want.len().min((image.size() - at) as usize);
            reference.read_exact_at(&mut want[..n], at).unwrap();
            let mut got = vec![0u8; n];
            image.read_at(at, &mut got).unwrap();
            assert!(got == want[..n], "{name}: bytes at {at:#x}");
        }
        assert!(vdisk_format::check(d.join(&name)).unwrap().is_clean());
    }
}

#[test]
fn chain_of_three() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vmdk base.vmdk 16M && qemu-io -f vmdk -c 'write -P 1 0 1M' -c 'write -P 2 8M 1M' base.vmdk >/dev/null",
        d,
    );
    sh(
        "qemu-img create -q -f vmdk -b base.vmdk -F vmdk mid.vmdk && qemu-io -f vmdk -c 'write -P 3 512k 1M' -c 'write -P 4 12M 64k' mid.vmdk >/dev/null",
        d,
    );
    sh(
        "qemu-img create -q -f vmdk -b mid.vmdk -F vmdk top.vmdk && qemu-io -f vmdk -c 'write -P 5 8M 4k' -c 'write -P 6 15M 1M' top.vmdk >/dev/null",
        d,
    );
    let image = check(d, "top.vmdk");
    let info = image.info().unwrap();
    let chain: Vec<_> = info.backing_chain.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(chain, ["mid.vmdk", "base.vmdk"]);
    assert!(our_map(&image).iter().any(|r| r.3 == 2));
    assert!(image.warnings().is_empty());
    // A child made of a descriptor and a separate sparse extent.
    sh(
        "qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse -b mid.vmdk -F vmdk split.vmdk && qemu-io -f vmdk -c 'write -P 7 1M 64k' split.vmdk >/dev/null",
        d,
    );
    let image = check(d, "split.vmdk");
    assert_eq!(image.info().unwrap().backing_chain.len(), 2);
}

#[test]
fn parent_cid_mismatch_is_damage() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vmdk base.vmdk 4M && qemu-img create -q -f vmdk -b base.vmdk -F vmdk child.vmdk",
        d,
    );
    Image::open(d.join("child.vmdk")).unwrap();
    // Writing to the parent gives it a new CID: the child no longer matches.
    sh(
        "qemu-io -f vmdk -c 'write -P 7 0 64k' base.vmdk >/dev/null",
        d,
    );
    let err = Image::open(d.join("child.vmdk")).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("parentCID"), "{err}");
    let opts = OpenOptions {
        allow_damaged: true,
        ..OpenOptions::default()
    };
    let image = Image::open_with(d.join("child.vmdk"), &opts).unwrap();
    assert_eq!(image.warnings().len(), 1, "{:?}", image.warnings());
    assert!(image.warnings()[0].contains("parentCID"));
    let mut buf = [0u8; 512];
    image.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [7; 512]);
}

#[test]
fn extent_paths_outside_the_directory_are_refused() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vmdk -o subformat=monolithicFlat x.vmdk 1M && mkdir sub && sed 's|\"x-flat.vmdk\"|\"../x-flat.vmdk\"|' x.vmdk > sub/up.vmdk && sed \"s|\\\"x-flat.vmdk\\\"|\\\"$PWD/x-flat.vmdk\\\"|\" x.vmdk > sub/abs.vmdk",
        d,
    );
    for name in ["sub/up.vmdk", "sub/abs.vmdk"] {
        let err = Image::open(d.join(name)).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name}: {err}");
        assert!(err.to_string().contains("x-flat.vmdk"), "{name}: {err}");
        let opts = OpenOptions {
            allow_outside: true,
            ..OpenOptions::default()
        };
        let image = Image::open_with(d.join(name), &opts).unwrap();
        assert_eq!(image.size(), 1 << 20);
    }
}

#[test]
fn shared_images() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for rel in [
        "vmdk-rs-aon/streamOptimized.vmdk",
        "plaso/image.vmdk",
        "dfvfs/ext2.vmdk",
    ] {
        let Some(path) = testdata(rel) else { return };
        let local = rel.replace('/', "-");
        std::os::unix::fs::symlink(&path, d.join(&local)).unwrap();
        let image = check(d, &local);
        assert!(
            vdisk_format::check(&path).unwrap().is_clean(),
            "{rel}: check"
        );
        if rel.starts_with("vmdk-rs-aon") {
            let mut mbr = [0u8; 512];
            image.read_at(0, &mut mbr).unwrap();
            assert_eq!(&mbr[510..], &[0x55, 0xaa]);
            assert_eq!(mbr[446 + 4], 0x07, "NTFS partition type");
            let mut vbr = [0u8; 512];
            image.read_at(128 * 512, &mut vbr).unwrap();
            assert_eq!(&vbr[3..11], b"NTFS    ");
            assert_eq!(
                image.info().unwrap().subformat.as_deref(),
                Some("streamOptimized")
            );
        }
    }
}

#[test]
fn descriptor_only_files_parse_and_name_their_missing_extent() {
    for (file, create, extent, sectors) in [
        (
            "monolithicFlat.vmdk",
            "monolithicFlat",
            "monolithicFlat-flat.vmdk",
            20480,
        ),
        (
            "twoGbMaxExtentFlat.vmdk",
            "twoGbMaxExtentFlat",
            "twoGbMaxExtentFlat-f001.vmdk",
            20480,
        ),
        (
            "twoGbMaxExtentSparse.vmdk",
            "twoGbMaxExtentSparse",
            "twoGbMaxExtentSparse-s001.vmdk",
            20480,
        ),
        ("vmfs_thick.vmdk", "vmfs", "vmfs_thick-flat.vmdk", 4096),
        (
            "vmfs_thick-000001.vmdk",
            "vmfsSparse",
            "vmfs_thick-000001-delta.vmdk",
            4096,
        ),
    ] {
        let Some(path) = testdata(&format!("vmdk-rs-aon/{file}")) else {
            return;
        };
        let text = std::fs::read(&path).unwrap();
        let desc = vdisk_format::vmdk::Descriptor::parse(&text, 0).unwrap();
        assert_eq!(desc.create_type.as_deref(), Some(create), "{file}");
        assert_eq!(desc.extents.len(), 1);
        assert_eq!(desc.extents[0].file.as_deref(), Some(extent));
        assert_eq!(desc.extents[0].sectors, sectors);
        if file == "vmfs_thick-000001.vmdk" {
            assert_eq!(desc.parent_cid, Some(0x0172_e8a4));
            assert_eq!(desc.cid, Some(0x8f67_ca74));
            assert_eq!(
                desc.parent_file_name_hint.as_deref(),
                Some("vmfs_thick.vmdk")
            );
        }
        let err = Image::open(&path).err().unwrap();
        assert!(err.to_string().contains(extent), "{file}: {err}");
    }
}

/// Byte offset of the first grain table named by the (redundant, when
/// `redundant`) grain directory of a sparse extent file.
fn first_gt(bytes: &[u8], redundant: bool) -> usize {
    let field = if redundant { 48 } else { 56 };
    let gd = u64::from_le_bytes(bytes[field..field + 8].try_into().unwrap()) as usize * 512;
    u32::from_le_bytes(bytes[gd..gd + 4].try_into().unwrap()) as usize * 512
}

#[test]
fn check_reports_corruption() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vmdk a.vmdk 8M && qemu-io -f vmdk -c 'write -P 9 0 256k' a.vmdk >/dev/null && cp a.vmdk b.vmdk",
        d,
    );
    assert!(vdisk_format::check(d.join("a.vmdk")).unwrap().is_clean());
    // A grain table entry pointing past the end of the file.
    let mut a = std::fs::read(d.join("a.vmdk")).unwrap();
    let gt = first_gt(&a, false);
    a[gt + 4..gt + 8].copy_from_slice(&0x00ff_0000u32.to_le_bytes());
    std::fs::write(d.join("a.vmdk"), &a).unwrap();
    let report = vdisk_format::check(d.join("a.vmdk")).unwrap();
    assert!(report.errors >= 1, "{report:?}");
    assert!(
        report
            .messages
            .iter()
            .any(|m| m.contains("past the end") && m.contains(&format!("{:#x}", gt + 4))),
        "{report:?}"
    );
    // Reading that grain is an error naming the grain table, not a panic.
    let image = Image::open(d.join("a.vmdk")).unwrap();
    let mut buf = vec![0u8; 65536];
    let err = image.read_at(65536, &mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert_eq!(err.offset(), Some(gt as u64 + 4), "{err}");
    image.read_at(0, &mut buf).unwrap();

    // The redundant grain table saying something else.
    let mut b = std::fs::read(d.join("b.vmdk")).unwrap();
    let rgt = first_gt(&b, true);
    b[rgt..rgt + 4].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(d.join("b.vmdk"), &b).unwrap();
    let report = vdisk_format::check(d.join("b.vmdk")).unwrap();
    assert_eq!(report.errors, 1, "{report:?}");
    assert!(report.messages[0].contains("redundant"), "{report:?}");

    // A stream's grain marker naming another sector than its table says.
    sh(
        "qemu-img create -q -f raw s.raw 1M && qemu-io -f raw -c 'write -P 1 64k 64k' s.raw >/dev/null && qemu-img convert -O vmdk -o subformat=streamOptimized s.raw s.vmdk",
        d,
    );
    assert!(vdisk_format::check(d.join("s.vmdk")).unwrap().is_clean());
    let s = std::fs::read(d.join("s.vmdk")).unwrap();
    let gt = first_gt(&s, false);
    let marker = u32::from_le_bytes(s[gt + 4..gt + 8].try_into().unwrap()) as usize * 512;
    assert_eq!(&s[marker..marker + 8], &128u64.to_le_bytes());
    std::fs::write(d.join("s.vmdk"), patch(&s, marker, &7u64.to_le_bytes())).unwrap();
    let report = vdisk_format::check(d.join("s.vmdk")).unwrap();
    assert_eq!(report.errors, 1, "{report:?}");
    assert!(report.messages[0].contains("grain marker"), "{report:?}");
}

#[test]
fn damaged_headers_are_errors_naming_the_structure() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f raw s.raw 4M && qemu-io -f raw -c 'write -P 3 0 1M' s.raw >/dev/null && qemu-img convert -O vmdk -o subformat=streamOptimized s.raw s.vmdk && qemu-img create -q -f vmdk m.vmdk 4M",
        d,
    );
    let stream = std::fs::read(d.join("s.vmdk")).unwrap();
    let sparse = std::fs::read(d.join("m.vmdk")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "grain size",
            patch(&sparse, 20, &3u64.to_le_bytes()),
            "grain size",
        ),
        (
            "gd offset",
            patch(&sparse, 56, &0xffff_fff0u64.to_le_bytes()),
            "grain directory",
        ),
        (
            "gtes",
            patch(&sparse, 44, &0u32.to_le_bytes()),
            "grain table",
        ),
        ("capacity", patch(&sparse, 12, &[0xff; 4]), "capacity"),
        ("truncated", sparse[..300].to_vec(), "embedded descriptor"),
        ("truncated gd", sparse[..13000].to_vec(), "grain directory"),
        (
            "footer",
            patch(&stream, 56, &u64::MAX.to_le_bytes()),
            "footer",
        ),
    ];
    for (what, bytes, needle) in cases {
        std::fs::write(d.join("bad.vmdk"), &bytes).unwrap();
        let err = Image::open(d.join("bad.vmdk")).err().unwrap();
        assert!(err.to_string().contains(needle), "{what}: {err}");
        assert!(err.offset().is_some(), "{what}: {err}");
    }
    // A compressed grain that does not inflate.
    let gd = first_gt(&stream, false);
    let grain = u32::from_le_bytes(stream[gd..gd + 4].try_into().unwrap()) as usize * 512;
    let bad = patch(&stream, grain + 12, &[0xff; 16]);
    std::fs::write(d.join("bad.vmdk"), &bad).unwrap();
    let image = Image::open(d.join("bad.vmdk")).unwrap();
    let err = image.read_at(0, &mut [0u8; 512]).unwrap_err();
    assert!(err.to_string().contains("compressed grain"), "{err}");
}

fn patch(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + with.len()].copy_from_slice(with);
    b
}

#[test]
fn fuzz_corpus_replays() {
    test_support::replay_corpus(
        &["seeds/vmdk", "corpus/vmdk"],
        5,
        vdisk_format::fuzzing::vmdk_read,
    );
}

/// VMware writes streamOptimized extents with the grain directory after
/// the grains: the header says `0xffffffffffffffff` and the footer (a copy
/// of the header, between a footer marker and the end-of-stream marker)
/// names the directory. qemu-img puts it first; the test moves the
/// pointer from a qemu-made stream to a footer, as VMware lays it out.
#[test]
fn stream_footer_names_the_grain_directory() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f raw s.raw 8M && qemu-io -f raw -c 'write -P 3 0 1M' -c 'write -P 4 5M 70k' s.raw >/dev/null && qemu-img convert -O vmdk -o subformat=streamOptimized s.raw s.vmdk",
        d,
    );
    let stream = std::fs::read(d.join("s.vmdk")).unwrap();
    let header = stream[..512].to_vec();
    let mut vmware = patch(&stream, 56, &u64::MAX.to_le_bytes());
    let mut footer_marker = vec![0u8; 512];
    footer_marker[0..8].copy_from_slice(&1u64.to_le_bytes());
    footer_marker[12..16].copy_from_slice(&3u32.to_le_bytes());
    vmware.extend_from_slice(&footer_marker);
    vmware.extend_from_slice(&header);
    vmware.extend_from_slice(&[0u8; 512]);
    std::fs::write(d.join("vmware.vmdk"), &vmware).unwrap();
    let image = Image::open(d.join("vmware.vmdk")).unwrap();
    let reference = std::fs::read(d.join("s.raw")).unwrap();
    assert!(read_all(&image) == reference);
    assert!(
        vdisk_format::check(d.join("vmware.vmdk"))
            .unwrap()
            .is_clean()
    );
    // Without the end-of-stream marker the footer is not trusted.
    std::fs::write(d.join("cut.vmdk"), &vmware[..vmware.len() - 512]).unwrap();
    let err = Image::open(d.join("cut.vmdk")).err().unwrap();
    assert!(err.to_string().contains("footer"), "{err}");
}

/// ESX formats are refused by name: COWD sparse files, seSparse and raw
/// device extents, VMFSSPARSE extents not in the hosted sparse format.
#[test]
fn esx_formats_are_unsupported_by_name() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vmdk -o subformat=monolithicFlat x.vmdk 1M && printf COWD > cowd.vmdk && truncate -s 64k cowd.vmdk",
        d,
    );
    let cases = [
        ("SESPARSE \"x-flat.vmdk\"", "seSparse"),
        ("VMFSRDM \"x-flat.vmdk\"", "raw device"),
        ("VMFSRAW \"x-flat.vmdk\"", "raw device"),
        ("VMFSSPARSE \"x-flat.vmdk\"", "VMFSSPARSE"),
        ("VMFSSPARSE \"cowd.vmdk\"", "COWD"),
    ];
    for (i, (extent, needle)) in cases.iter().enumerate() {
        let name = format!("esx{i}.vmdk");
        sh(
            &format!(
                "sed 's|FLAT \"x-flat.vmdk\" 0|{}|' x.vmdk > {name}",
                extent.replace('"', "\\\"")
            ),
            d,
        );
        let err = Image::open(d.join(&name)).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{extent}: {err}");
        assert!(err.to_string().contains(needle), "{extent}: {err}");
    }
    let err = Image::open(d.join("cowd.vmdk")).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("COWD"), "{err}");
}

/// The compact stream seeds (made by fuzz/make-seeds.sh) are valid
/// streams, so the fuzzer starts from compressed grains that inflate.
#[test]
fn stream_seeds_read() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/vmdk");
    for name in ["vm-stream-compact.vmdk", "vm-stream-footer.vmdk"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let disk = vdisk_format::vmdk::Vmdk::open_sparse(&bytes[..]).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        disk.read_at(0, &mut buf).unwrap();
        assert!(buf[..64 << 10].iter().all(|&b| b == 6), "{name}");
        assert!(buf[512 << 10..520 << 10].iter().all(|&b| b == 7), "{name}");
        assert!(buf[64 << 10..512 << 10].iter().all(|&b| b == 0), "{name}");
        let mut report = vdisk_format::CheckReport::default();
        vdisk_format::vmdk::check::check_sparse(&bytes[..], name, &mut report).unwrap();
        assert!(report.is_clean(), "{name}: {report:?}");
    }
}

/// createType vmfs with a VMFS extent and a second FLAT extent (read like
/// qemu reads them), and a ZERO extent between them. qemu skips ZERO
/// extent lines (its disk is shorter by their size); we follow the VMware
/// specification, where they hold guest sectors that read as zeros, and
/// compare with the extent file's bytes instead.
#[test]
fn vmfs_and_zero_extents() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f vmdk -o subformat=monolithicFlat x.vmdk 1M && qemu-io -f vmdk -c 'write -P 5 0 64k' -c 'write -P 6 600k 8k' x.vmdk >/dev/null",
        d,
    );
    let edit = |extents: &str, out: &str| {
        sh(
            &format!(
                "sed -e 's|createType=\"monolithicFlat\"|createType=\"vmfs\"|' -e 's|RW 2048 FLAT \"x-flat.vmdk\" 0|{extents}|' x.vmdk > {out}"
            ),
            d,
        )
    };
    edit(
        "RW 2048 VMFS \"x-flat.vmdk\"\\nRW 1024 FLAT \"x-flat.vmdk\" 1024",
        "v.vmdk",
    );
    let image = check(d, "v.vmdk");
    assert_eq!(image.info().unwrap().subformat.as_deref(), Some("vmfs"));
    edit(
        "RW 2048 VMFS \"x-flat.vmdk\"\\nRW 1024 ZERO\\nRW 1024 FLAT \"x-flat.vmdk\" 1024",
        "z.vmdk",
    );
    let image = Image::open(d.join("z.vmdk")).unwrap();
    let flat = std::fs::read(d.join("x-flat.vmdk")).unwrap();
    let mut want = flat.clone();
    want.extend_from_slice(&[0u8; 512 << 10]);
    want.extend_from_slice(&flat[512 << 10..]);
    assert!(read_all(&image) == want);
    let map = merge(our_map(&image));
    assert!(
        map.iter().any(|r| r.2 == Allocation::Zero
            && r.0 <= 1 << 20
            && r.0 + r.1 >= (1 << 20) + (512 << 10)),
        "{map:?}"
    );
    assert!(vdisk_format::check(d.join("z.vmdk")).unwrap().is_clean());
}

#[test]
fn allocated_bytes_count_every_extent_file_as_qemu_does() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, sub) in [
        ("two.vmdk", "twoGbMaxExtentSparse"),
        ("flat.vmdk", "monolithicFlat"),
    ] {
        sh(
            &format!(
                "qemu-img create -q -f vmdk -o subformat={sub} {name} 5G && qemu-io -f vmdk -c 'write -P 1 0 1M' -c 'write -P 2 4G 2M' {name} >/dev/null"
            ),
            d,
        );
        let info: serde_json::Value =
            serde_json::from_str(&sh(&format!("qemu-img info --output=json {name}"), d)).unwrap();
        let ours = vdisk_format::Image::open(d.join(name))
            .unwrap()
            .info()
            .unwrap()
            .allocated_bytes;
        assert_eq!(ours, info["actual-size"].as_u64().unwrap(), "{name}");
    }
}
