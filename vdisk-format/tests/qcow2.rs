//! qcow2 images made by qemu-img and qemu-io, read by vdisk-format and
//! compared with qemu-img's own reading: guest bytes and allocation map
//! (state and the chain layer that holds each run).

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

use disk_io::{Allocation, ReadAt, extents};
use test_support::{have_all, sh};
use vdisk_format::{Format, Image};

/// Guest contents: none, scattered pattern and zero writes, or 64 MiB of
/// random data.
const CONTENTS: [(&str, &str); 3] = [
    ("empty", ""),
    (
        "scattered",
        "-c 'write -P 0x11 0 4k' -c 'write -P 0x22 1M 3M' -c 'write -z 2M 512k' -c 'write -P 0x33 63M 1M' -c 'write -P 0x44 33M 5k' -c 'write -z 40M 4M'",
    ),
    ("random", ""),
];

/// (start, length, state, layer) runs of an allocation map.
type Runs = Vec<(u64, u64, Allocation, u64)>;

/// Our guest bytes equal qemu-img's, and our allocation map matches
/// `qemu-img map` (data / zero / not present, and the layer) byte for byte.
fn check(dir: &Path, name: &str) {
    let path = dir.join(name);
    let image = Image::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(image.format(), Format::Qcow2);
    sh(&format!("qemu-img convert -O raw {name} ref.raw"), dir);
    let reference = std::fs::read(dir.join("ref.raw")).unwrap();
    assert_eq!(image.size(), reference.len() as u64, "{name}");
    let mut ours = vec![0u8; reference.len()];
    // Odd-sized reads across cluster and subcluster boundaries.
    let mut at = 0;
    for step in [1000usize, 4096, 65536 + 17, 1 << 20].iter().cycle() {
        if at >= ours.len() {
            break;
        }
        let n = (*step).min(ours.len() - at);
        image.read_at(at as u64, &mut ours[at..at + n]).unwrap();
        at += n;
    }
    assert!(
        ours == reference,
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
    let ours: Runs = extents(&image, 0, u64::MAX)
        .map(|e| e.map(|e| (e.offset, e.length, e.state, u64::from(e.layer))))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        merge(ours),
        merge(theirs),
        "{name}: allocation map differs from qemu-img map"
    );
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

#[test]
fn qemu_made_images_read_like_qemu_reads_them() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh("head -c 64M /dev/urandom > random.bin", d);
    for compat in ["0.10", "1.1"] {
        for cluster in ["512", "64k", "2M"] {
            for (content, cmds) in CONTENTS {
                let name = format!("c{compat}-{cluster}-{content}.qcow2");
                let opts = format!("compat={compat},cluster_size={cluster}");
                sh(
                    &format!("qemu-img create -q -f qcow2 -o {opts} {name} 64M"),
                    d,
                );
                let write = match content {
                    "random" => "-c 'write -s random.bin 0 64M'",
                    "empty" => "",
                    _ => cmds,
                };
                if !write.is_empty() {
                    sh(&format!("qemu-io -f qcow2 {write} {name} >/dev/null"), d);
                }
                check(d, &name);
            }
        }
    }
    // Extended L2 entries: 32 subclusters per cluster, written in pieces.
    for cluster in ["64k", "2M"] {
        let name = format!("ext-{cluster}.qcow2");
        sh(
            &format!(
                "qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size={cluster} {name} 64M"
            ),
            d,
        );
        sh(
            &format!(
                "qemu-io -f qcow2 -c 'write -P 1 0 4k' -c 'write -P 2 70k 2k' -c 'write -z 128k 64k' -c 'write -P 3 5M 100k' -c 'write -s random.bin 9M 3M' -c 'write -z 10M 8k' {name} >/dev/null"
            ),
            d,
        );
        check(d, &name);
    }
    // Compressed clusters, zlib and zstd, with some uncompressible data.
    sh(
        "qemu-img create -q -f raw src.raw 64M && qemu-io -f raw -c 'write -P 0x5a 0 5M' -c 'write -s random.bin 30M 4M' -c 'write -P 0x66 63M 1M' src.raw >/dev/null",
        d,
    );
    for kind in ["zlib", "zstd"] {
        for cluster in ["64k", "2M", "4k"] {
            let name = format!("comp-{kind}-{cluster}.qcow2");
            sh(
                &format!(
                    "qemu-img convert -c -O qcow2 -o compression_type={kind},cluster_size={cluster} src.raw {name}"
                ),
                d,
            );
            check(d, &name);
        }
    }
}

#[test]
fn info_names_cluster_size_and_refuses_what_it_cannot_read() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "qemu-img create -q -f qcow2 -o cluster_size=4k a.qcow2 16M",
        d,
    );
    let info = Image::open(d.join("a.qcow2")).unwrap().info().unwrap();
    assert_eq!(info.cluster_size, Some(4096));
    assert_eq!(info.virtual_size, 16 << 20);
    // A child opened by itself, without its parent, is refused by name.
    sh("qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2", d);
    let file = disk_io::FileDisk::open(d.join("b.qcow2")).unwrap();
    let err = vdisk_format::qcow2::Qcow2::open(file).err().unwrap();
    assert!(err.to_string().contains("backing file 'a.qcow2'"), "{err}");
    sh(
        "qemu-img create -q -f qcow2 --object secret,id=s,data=x -o encrypt.format=luks,encrypt.key-secret=s e.qcow2 16M",
        d,
    );
    let err = Image::open(d.join("e.qcow2")).err().unwrap();
    assert!(err.to_string().contains("encrypted qcow2"), "{err}");
}

#[test]
fn backing_chains_read_like_qemu_reads_them() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // qcow2 (4 KiB clusters) on qcow2 on a sparse raw file, with a parent
    // smaller than its child and zero clusters shadowing parent data.
    sh(
        "qemu-img create -q -f raw base.raw 48M && qemu-io -f raw -c 'write -P 1 0 8M' -c 'write -P 2 40M 4M' base.raw >/dev/null",
        d,
    );
    sh(
        "qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 64M && qemu-io -f qcow2 -c 'write -P 3 4M 8M' -c 'write -z 41M 1M' -c 'write -P 6 50M 1M' mid.qcow2 >/dev/null",
        d,
    );
    sh(
        "qemu-img create -q -f qcow2 -o cluster_size=4k -b mid.qcow2 -F qcow2 top.qcow2 && qemu-io -f qcow2 -c 'write -P 4 6M 100k' -c 'write -P 5 63M 1M' -c 'write -z 0 4k' top.qcow2 >/dev/null",
        d,
    );
    check(d, "top.qcow2");
    let info = Image::open(d.join("top.qcow2")).unwrap().info().unwrap();
    let chain: Vec<(String, Format)> = info
        .backing_chain
        .iter()
        .map(|b| (b.path.clone(), b.format))
        .collect();
    assert_eq!(
        chain,
        [
            ("mid.qcow2".to_owned(), Format::Qcow2),
            ("base.raw".to_owned(), Format::Raw)
        ]
    );
}

#[test]
fn backing_paths_are_policed() {
    if !have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "mkdir -p img other && qemu-img create -q -f raw other/base.raw 1M && cp other/base.raw img/base.raw",
        d,
    );
    let open = |name: &str| {
        Image::open(d.join("img").join(name))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let make = |name: &str, backing: &str| {
        sh(
            &format!("cd img && qemu-img create -q -f qcow2 -u -b '{backing}' -F raw {name} 1M"),
            d,
        );
    };
    make("dotdot.qcow2", "../other/base.raw");
    assert!(
        open("dotdot.qcow2").contains("outside the image's directory"),
        "{}",
        open("dotdot.qcow2")
    );
    make(
        "absolute.qcow2",
        &d.join("other/base.raw").display().to_string(),
    );
    assert!(open("absolute.qcow2").contains("absolute path"));
    sh(
        "ln -s ../other img/link && ln -s ../other/base.raw img/filelink.raw",
        d,
    );
    make("symdir.qcow2", "link/base.raw");
    assert!(open("symdir.qcow2").contains("outside the image's directory"));
    make("symfile.qcow2", "filelink.raw");
    assert!(open("symfile.qcow2").contains("outside the image's directory"));
    make("missing.qcow2", "nothere.raw");
    assert!(open("missing.qcow2").contains("nothere.raw"));
    make("ok.qcow2", "base.raw");
    assert_eq!(open("ok.qcow2"), "");
    // Allowed explicitly, the escapes open.
    let allow = vdisk_format::OpenOptions {
        allow_outside: true,
        ..Default::default()
    };
    for name in ["dotdot.qcow2", "absolute.qcow2", "symdir.qcow2"] {
        assert!(
            Image::open_with(d.join("img").join(name), &allow).is_ok(),
            "{name}"
        );
    }
    // The header names the wrong format for the parent.
    sh(
        "cd img && qemu-img create -q -f qcow2 -u -b ok.qcow2 -F raw wrongfmt.qcow2 1M",
        d,
    );
    assert!(
        open("wrongfmt.qcow2").contains("backing format 'raw'"),
        "{}",
        open("wrongfmt.qcow2")
    );
    // A cycle: a -> b -> a.
    sh(
        "cd img && qemu-img create -q -f qcow2 -u -b b.qcow2 -F qcow2 a.qcow2 1M && qemu-img create -q -f qcow2 -u -b a.qcow2 -F qcow2 b.qcow2 1M",
        d,
    );
    assert!(
        open("a.qcow2").contains("loops back"),
        "{}",
        open("a.qcow2")
    );
    // 64 images in a chain open; 65 are refused.
    sh(
        "cd img && qemu-img create -q -f qcow2 -u -b base.raw -F raw l1.qcow2 1M && for i in $(seq 2 64); do qemu-img create -q -f qcow2 -u -b l$((i-1)).qcow2 -F qcow2 l$i.qcow2 1M; done",
        d,
    );
    assert_eq!(open("l63.qcow2"), "");
    assert!(
        open("l64.qcow2").contains("deeper than 64"),
        "{}",
        open("l64.qcow2")
    );
}

#[test]
fn external_data_files_read_like_qemu_reads_them() {
    if !have_all(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let writes = CONTENTS[1].1;
    for (name, raw) in [("x-raw.qcow2", "on"), ("x.qcow2", "off")] {
        let data = format!("{name}.data");
        sh(
            &format!(
                "qemu-img create -q -f qcow2 -o data_file={data},data_file_raw={raw} {name} 64M && qemu-io -f qcow2 {writes} {name} >/dev/null"
            ),
            d,
        );
        check(d, name);
        // The check counts what qemu-img check counts: nothing wrong.
        let report = vdisk_format::check(d.join(name)).unwrap();
        assert!(report.is_clean(), "{name}: {report:?}");
        sh(&format!("qemu-img check -q {name}"), d);
        assert_eq!(
            Image::open(d.join(name)).unwrap().format(),
            Format::Qcow2,
            "{name}"
        );
    }
    // The data file is found under the path policy of backing files.
    sh(
        "mkdir -p sub other && cd sub && qemu-img create -q -f qcow2 -o data_file=../other/d.raw esc.qcow2 1M",
        d,
    );
    let err = Image::open(d.join("sub/esc.qcow2")).err().unwrap();
    assert!(
        err.to_string().contains("external data file") && err.to_string().contains("outside"),
        "{err}"
    );
    // A missing data file is named.
    sh("rm x.qcow2.data", d);
    let err = Image::open(d.join("x.qcow2")).err().unwrap();
    assert!(err.to_string().contains("x.qcow2.data"), "{err}");
}
