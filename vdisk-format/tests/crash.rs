//! Crash safety of every sparse format written through `open_rw`: a child
//! process makes 1,000 random writes with a flush every 50 and is killed
//! with SIGKILL at a random moment, 50 times per format. Afterwards
//! `qemu-img check` finds no corruption (qcow2 leaks allowed), every write
//! acknowledged by a flush reads back, and what no write touched reads as
//! zeros.
//!
//! The child is this test binary re-run with `CRASH_CHILD` set: the test
//! `crash_child` then does the writing instead of returning at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use disk_io::{ReadAt, WriteAt};
use test_support::Rng;
use vdisk_format::{CreateOptions, Format};

/// Guest size of every test image.
const SIZE: u64 = 256 << 20;
/// Each write stays inside its own slot, so that writes never overlap.
const SLOT: u64 = 64 << 10;
const WRITES: usize = 1000;
const FLUSH_EVERY: usize = 50;
const RUNS: u64 = 50;

/// One test per format written with random access (name as qemu knows
/// it, format, `-o` options), so that they run side by side.
macro_rules! crash_tests {
    ($($test:ident: $name:expr, $format:expr, $options:expr;)*) => {
        $(
            #[test]
            fn $test() {
                killed_writers_leave_consistent_images($name, $format, $options);
            }
        )*
    };
}

crash_tests! {
    qcow2_survives_kills: "qcow2", Format::Qcow2, "";
    vhdx_survives_kills: "vhdx", Format::Vhdx, "block_size=1M";
    vdi_survives_kills: "vdi", Format::Vdi, "";
    vmdk_survives_kills: "vmdk", Format::Vmdk, "";
    // Its exact size: without force_size, VHD rounds up to a CHS geometry.
    vpc_survives_kills: "vpc", Format::Vhd, "force_size=on";
}

/// The `i`th write of run `seed`: its offset and bytes. Slots are a
/// permutation, so no two writes share one.
fn plan(seed: u64) -> Vec<(u64, Vec<u8>)> {
    let slots = SIZE / SLOT;
    let mut order: Vec<u64> = (0..slots).collect();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order
        .into_iter()
        .take(WRITES)
        .map(|slot| {
            // Mostly small unaligned writes (partial clusters), some whole.
            let len = match rng.below(8) {
                0 => SLOT,
                1 => 512 * (1 + rng.below(16)),
                _ => 1 + rng.below(8192),
            };
            let at = slot * SLOT + rng.below(SLOT - len + 1);
            // Never zero bytes, so that a lost write cannot pass for one.
            let mut word = rng.next() | 0x0101_0101_0101_0101;
            let mut data = Vec::with_capacity(len as usize + 8);
            while (data.len() as u64) < len {
                data.extend_from_slice(&word.to_le_bytes());
                word = word.rotate_left(7) | 0x0101_0101_0101_0101;
            }
            data.truncate(len as usize);
            (at, data)
        })
        .collect()
}

/// The child's side: write the plan, report each flush on stdout.
#[test]
fn crash_child() {
    let (Ok(path), Ok(seed)) = (std::env::var("CRASH_CHILD"), std::env::var("CRASH_SEED")) else {
        return;
    };
    let seed: u64 = seed.parse().unwrap();
    let image = vdisk_format::open_rw(&path).unwrap();
    let mut out = std::io::stdout().lock();
    for (i, (at, data)) in plan(seed).iter().enumerate() {
        image.disk.write_at(*at, data).unwrap();
        if (i + 1) % FLUSH_EVERY == 0 {
            image.disk.flush().unwrap();
            writeln!(out, "FLUSHED {}", i + 1).unwrap();
            out.flush().unwrap();
        }
    }
    writeln!(out, "DONE").unwrap();
}

/// Runs the child on `path` and kills it after a random number of its
/// flushes plus a random delay; returns how many writes were acknowledged.
fn run_and_kill(path: &Path, seed: u64) -> usize {
    let mut rng = Rng(seed ^ 0x5555_aaaa_0f0f_f0f0);
    let kill_after = rng.below((WRITES / FLUSH_EVERY) as u64 + 1) as usize;
    let delay = Duration::from_micros(rng.below(3000));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("CRASH_CHILD", path)
        .env("CRASH_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = 0usize;
    let mut flushes = 0usize;
    while flushes < kill_after {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(n) = line.strip_prefix("FLUSHED ") {
            acked = n.trim().parse().unwrap();
            flushes += 1;
        }
    }
    std::thread::sleep(delay);
    let _ = child.kill();
    // Acknowledgements printed before the kill still count.
    for line in lines.map_while(|l| l.ok()) {
        if let Some(n) = line.strip_prefix("FLUSHED ") {
            acked = n.trim().parse().unwrap();
        }
    }
    child.wait().unwrap();
    acked
}

fn killed_writers_leave_consistent_images(name: &str, format: Format, options: &str) {
    if std::env::var("CRASH_CHILD").is_ok() || !test_support::have_all(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let opts = CreateOptions::parse(&[options.to_string()]).unwrap();
        let mut killed_midway = 0;
        let mut dirty_logs = 0;
        for run in 0..RUNS {
            let seed = 1 + run + 1000 * format as u64;
            let img = dir.path().join(format!("crash-{run}.{name}"));
            let out = vdisk_format::create_output(&img, format, SIZE, &opts).unwrap();
            out.finish().unwrap();
            out.disk.flush().unwrap();
            drop(out);
            let acked = run_and_kill(&img, seed);
            if acked < WRITES {
                killed_midway += 1;
            }
            let mut check = Command::new("qemu-img")
                .args(["check", "-f", name])
                .arg(&img)
                .output()
                .unwrap();
            // A VHDX killed between writing a log entry and retiring it
            // holds a log to replay: qemu refuses to open it read-only
            // (as it should; that is no corruption) and replays it when
            // it opens it for writing, as `check -r all` does.
            if name == "vhdx"
                && String::from_utf8_lossy(&check.stderr).contains("log that needs to be replayed")
            {
                dirty_logs += 1;
                check = Command::new("qemu-img")
                    .args(["check", "-r", "all", "-f", name])
                    .arg(&img)
                    .output()
                    .unwrap();
            }
            let mut code = check.status.code().unwrap_or(-1);
            if name == "vpc" && code == 63 {
                // qemu-img has no check for vpc ("does not support
                // checks"): vdisk's own check stands in for it.
                let report = vdisk_format::check(&img).unwrap();
                assert!(report.is_clean(), "{name} run {run}: {report:?}");
                code = 0;
            }
            let leaks_ok = name == "qcow2" && code == 3;
            assert!(
                code == 0 || leaks_ok,
                "{name} run {run}: qemu-img check exit {code} after {acked} acknowledged writes:\n{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
            // Read back through qemu's eyes.
            let raw = dir.path().join("readback.raw");
            let _ = std::fs::remove_file(&raw);
            let conv = Command::new("qemu-img")
                .args(["convert", "-f", name, "-O", "raw"])
                .arg(&img)
                .arg(&raw)
                .status()
                .unwrap();
            assert!(conv.success(), "{name} run {run}: qemu-img convert failed");
            let back = disk_io::FileDisk::open(&raw).unwrap();
            assert_eq!(back.size(), SIZE, "{name} run {run}: virtual size");
            let writes = plan(seed);
            let mut buf = vec![0u8; SLOT as usize];
            for (i, (at, data)) in writes.iter().enumerate().take(acked) {
                let got = &mut buf[..data.len()];
                back.read_at(*at, got).unwrap();
                assert!(
                    got == &data[..],
                    "{name} run {run}: acknowledged write {i} at {at:#x} ({} bytes) lost",
                    data.len()
                );
            }
            // Slots no write of the plan touches must read as zeros.
            let used: std::collections::HashSet<u64> =
                writes.iter().map(|(at, _)| at / SLOT).collect();
            let mut rng = Rng(seed);
            for _ in 0..64 {
                let slot = rng.below(SIZE / SLOT);
                if used.contains(&slot) {
                    continue;
                }
                back.read_at(slot * SLOT, &mut buf).unwrap();
                assert!(
                    buf.iter().all(|&b| b == 0),
                    "{name} run {run}: untouched slot {slot} is not zero"
                );
            }
            std::fs::remove_file(&img).unwrap();
        }
        println!(
            "{name}: {RUNS} runs, {killed_midway} killed before the last write, {dirty_logs} left a log to replay"
        );
        assert!(killed_midway > RUNS / 2, "{name}: the kills came too late");
    }
}
