//! Hostile input: each test image, mutated 100 ways (bit flips in its
//! metadata, truncations, zeroed headers, fields pointing at themselves),
//! goes through the library's readers and every read-only subcommand.
//! Nothing may panic, run over 10 seconds or allocate past 1 GiB
//! (`ulimit -v`), and every refusal is one line naming the file.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::fs;
use std::path::Path;
use std::process::Command;

use disk_io::{ReadAt, extents};
use test_support::{Rng, have_all, sh};

/// Mutations per image.
const MUTATIONS: u64 = 100;

/// Makes the test images in `dir`; returns their file names.
fn make_images(dir: &Path) -> Vec<String> {
    let writes = "-c 'write -P 0x5a 0 64k' -c 'write -P 0xa5 1M 192k' -c 'write -z 2M 64k' -c 'write -P 7 3M 4k'";
    let mut names = Vec::new();
    for (name, create) in [
        ("q3.qcow2", "qemu-img create -q -f qcow2 q3.qcow2 4M"),
        (
            "q2.qcow2",
            "qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4096 q2.qcow2 4M",
        ),
        (
            "qx.qcow2",
            "qemu-img create -q -f qcow2 -o extended_l2=on q2x.qcow2 4M && mv q2x.qcow2 qx.qcow2",
        ),
        ("s.vmdk", "qemu-img create -q -f vmdk s.vmdk 4M"),
        ("d.vhd", "qemu-img create -q -f vpc d.vhd 4M"),
        ("d.vhdx", "qemu-img create -q -f vhdx d.vhdx 4M"),
        ("d.vdi", "qemu-img create -q -f vdi d.vdi 4M"),
    ] {
        sh(create, dir);
        sh(
            &format!("qemu-io -f {} {writes} {name} >/dev/null", fmt_of(name)),
            dir,
        );
        names.push(name.to_owned());
    }
    // Made by conversion: compressed clusters and a streamOptimized VMDK.
    sh("qemu-img convert -c -O qcow2 q3.qcow2 qz.qcow2", dir);
    names.push("qz.qcow2".into());
    sh(
        "qemu-img convert -O vmdk -o subformat=streamOptimized q3.qcow2 so.vmdk",
        dir,
    );
    names.push("so.vmdk".into());
    // A chain: a child over a raw parent.
    sh(
        "qemu-img convert -O raw q3.qcow2 base.raw && qemu-img create -q -f qcow2 -b base.raw -F raw c.qcow2 && qemu-io -f qcow2 -c 'write -P 1 512k 64k' c.qcow2 >/dev/null",
        dir,
    );
    names.push("c.qcow2".into());
    // Partition tables on raw disks.
    sh(
        "truncate -s 4M mbr.raw && printf 'label: dos\\n2048,2048,83\\n4096,,5\\n4200,1000,83\\n' | sfdisk -q mbr.raw",
        dir,
    );
    sh(
        "truncate -s 4M gpt.raw && printf 'label: gpt\\n2048,2048,L\\n4096,,L\\n' | sfdisk -q gpt.raw",
        dir,
    );
    names.extend(["mbr.raw".into(), "gpt.raw".into()]);
    // File systems, whole-disk, holding a small tree: their parsers see
    // the mutations through ls and manifest.
    sh(
        "mkdir -p tree/sub/deeper && printf hello > tree/a.txt && head -c 70000 /dev/zero | tr '\\0' x > tree/sub/b.bin && printf deep > tree/sub/deeper/c && ln -s a.txt tree/link",
        dir,
    );
    sh(
        "truncate -s 4M fat.raw && mkfs.fat -n HOSTILE fat.raw >/dev/null && mcopy -s -i fat.raw tree/a.txt tree/sub ::/",
        dir,
    );
    sh(
        "truncate -s 4M ext.raw && mkfs.ext4 -q -d tree ext.raw",
        dir,
    );
    sh(
        "truncate -s 4M ntfs.raw && mkntfs -q -F -Q ntfs.raw >/dev/null 2>&1",
        dir,
    );
    names.extend(["fat.raw".into(), "ext.raw".into(), "ntfs.raw".into()]);
    names
}

fn fmt_of(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("qcow2") => "qcow2",
        Some("vmdk") => "vmdk",
        Some("vhd") => "vpc",
        Some("vhdx") => "vhdx",
        Some("vdi") => "vdi",
        _ => "raw",
    }
}

/// The byte ranges worth mutating: the metadata at the start of the file,
/// and its last 64 KiB (footers, backup headers, streamOptimized markers).
fn mutate(data: &mut Vec<u8>, rng: &mut Rng) {
    let len = data.len() as u64;
    let hot = len.min(256 << 10);
    let pick = |rng: &mut Rng| {
        if rng.below(4) == 0 && len > hot {
            len - 1 - rng.below(hot.min(64 << 10))
        } else {
            rng.below(hot)
        }
    };
    match rng.below(6) {
        // A few bit flips.
        0 | 1 => {
            for _ in 0..1 + rng.below(8) {
                let at = pick(rng) as usize;
                data[at] ^= 1 << rng.below(8);
            }
        }
        // Truncation.
        2 => {
            let keep = rng.below(len);
            data.truncate(keep as usize);
        }
        // A zeroed range (a header, a table).
        3 => {
            let at = pick(rng) as usize;
            let n = (1 + rng.below(512)) as usize;
            let end = (at + n).min(data.len());
            data[at..end].fill(0);
        }
        // A field pointing at itself (a table at its own offset), either
        // byte order, 4 or 8 bytes.
        4 => {
            let at = (pick(rng) & !7) as usize;
            let v = at as u64;
            let bytes: Vec<u8> = match rng.below(4) {
                0 => v.to_le_bytes().to_vec(),
                1 => v.to_be_bytes().to_vec(),
                2 => (v as u32).to_le_bytes().to_vec(),
                _ => (v as u32).to_be_bytes().to_vec(),
            };
            let end = (at + bytes.len()).min(data.len());
            data[at..end].copy_from_slice(&bytes[..end - at]);
        }
        // Huge values in a field (sizes, counts).
        _ => {
            let at = pick(rng) as usize;
            let end = (at + 4).min(data.len());
            data[at..end].fill(0xff);
        }
    }
}

/// Reads `path` through the library: open, a few reads, the allocation
/// map, the check. Errors are fine; panics are not.
fn through_library(path: &Path) {
    let _ = vdisk_format::check(path);
    let Ok(image) = vdisk_format::Image::open(path) else {
        return;
    };
    let size = image.size();
    let mut buf = vec![0u8; 64 << 10];
    for offset in [0, size / 2, size.saturating_sub(buf.len() as u64)] {
        let n = (buf.len() as u64).min(size.saturating_sub(offset)) as usize;
        let _ = image.read_at(offset, &mut buf[..n]);
    }
    for run in extents(&image, 0, size).take(256) {
        if run.is_err() {
            break;
        }
    }
    let _ = image.info();
    let _ = image.check();
}

/// Runs `vdisk ARGS` under a 1 GiB address-space limit and a 10 s
/// timeout; checks the contract's exit codes and one-line errors.
fn through_cli(dir: &Path, file: &str, args: &str, what: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 1048576; exec timeout -s KILL 10 {} {args}",
            env!("CARGO_BIN_EXE_vdisk")
        ))
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        matches!(code, Some(0..=2)),
        "{what}: `vdisk {args}` ended with {:?} (timeout or signal?): {stderr}",
        out.status
    );
    assert!(
        !stderr.contains("panicked"),
        "{what}: `vdisk {args}`: {stderr}"
    );
    if code == Some(2) {
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("warning:")).collect();
        assert_eq!(lines.len(), 1, "{what}: `vdisk {args}`: {stderr}");
        assert!(
            lines[0].starts_with("vdisk: ") && lines[0].contains(file),
            "{what}: `vdisk {args}`: {stderr}"
        );
    }
}

#[test]
fn mutated_images_never_panic_hang_or_blow_up() {
    if !have_all(&[
        "qemu-img",
        "qemu-io",
        "sfdisk",
        "timeout",
        "mkfs.fat",
        "mcopy",
        "mkfs.ext4",
        "mkntfs",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = make_images(d);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut refused = 0;
    let mut runs = 0;
    for name in &images {
        let original = fs::read(d.join(name)).unwrap();
        for i in 0..MUTATIONS {
            let mut data = original.clone();
            mutate(&mut data, &mut rng);
            let file = format!("m-{name}");
            fs::write(d.join(&file), &data).unwrap();
            let what = format!("{name} mutation {i}");
            through_library(&d.join(&file));
            // Every third mutation also goes through the command line
            // (process start-up dominates; the library saw them all).
            if i % 3 == 0 {
                through_cli(d, &file, &format!("info --json {file}"), &what);
                through_cli(d, &file, &format!("check {file}"), &what);
                through_cli(
                    d,
                    &file,
                    &format!("convert -q {file} out.raw -O raw"),
                    &what,
                );
                through_cli(d, &file, &format!("compare {file} {name}"), &what);
                runs += 4;
                if name.starts_with("fat") || name.starts_with("ext") || name.starts_with("ntfs") {
                    through_cli(d, &file, &format!("manifest {file}"), &what);
                    through_cli(d, &file, &format!("ls -r --json {file}"), &what);
                    runs += 2;
                }
            }
            if vdisk_format::Image::open(d.join(&file)).is_err() {
                refused += 1;
            }
            let _ = fs::remove_file(d.join("out.raw"));
        }
    }
    eprintln!(
        "{} images x {MUTATIONS} mutations: {refused} refused at open, {runs} command runs",
        images.len()
    );
}
