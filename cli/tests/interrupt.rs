//! Conversions interrupted by SIGINT and SIGKILL at random moments never
//! leave a file under the destination name unless it is complete; SIGINT
//! cancels the copy and removes the temporary output.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use test_support::{have_all, sh};

/// A small xorshift generator; the seed is printed so a failure can be
/// replayed with `VDISK_INTERRUPT_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".dst"))
        .collect()
}

#[test]
fn interrupted_conversions_leave_no_partial_destination() {
    if !have_all(&["sfdisk", "kill"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 64 MiB of random bytes behind an MBR (a raw source must look like a disk).
    sh(
        "head -c 64M /dev/urandom > src.img && printf 'label: dos\\n,,83\\n' | sfdisk -q src.img",
        d,
    );
    let vdisk = env!("CARGO_BIN_EXE_vdisk");
    let seed = std::env::var("VDISK_INTERRUPT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("VDISK_INTERRUPT_SEED={seed}");
    let mut rng = Rng(seed);
    let dst = d.join("dst.img");

    // How long a whole conversion takes here (the second run, with the
    // source in the page cache), to spread the signals over it.
    let mut full = Duration::ZERO;
    for _ in 0..2 {
        let started = Instant::now();
        let status = Command::new(vdisk)
            .args(["convert", "-q", "-O", "qcow2", "src.img", "dst.img"])
            .current_dir(d)
            .status()
            .unwrap();
        assert!(status.success());
        full = started.elapsed().max(Duration::from_millis(20));
        std::fs::remove_file(&dst).unwrap();
    }
    let mut cancelled = 0;
    for round in 0..8 {
        let format = ["qcow2", "raw"][round % 2];
        let mode = ["sector", "used"][(round / 2) % 2];
        let sigint = round % 4 < 2 || round >= 6;
        let delay = Duration::from_micros(rng.next() % (full.as_micros() as u64 * 5 / 4 + 1));
        let mut child = Command::new(vdisk)
            .args([
                "convert", "-q", "--mode", mode, "-O", format, "src.img", "dst.img",
            ])
            .current_dir(d)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if sigint {
            sh(&format!("kill -INT {} 2>/dev/null || true", child.id()), d);
        } else {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let what = format!(
            "round {round} ({mode} to {format}, SIG{} after {delay:?}): {:?} {}",
            if sigint { "INT" } else { "KILL" },
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if dst.exists() {
            // Complete: equal to the source.
            let cmp = Command::new(vdisk)
                .args(["compare", "src.img", "dst.img"])
                .current_dir(d)
                .output()
                .unwrap();
            assert_eq!(cmp.status.code(), Some(0), "{what}");
            std::fs::remove_file(&dst).unwrap();
        }
        if sigint {
            // Handled: either finished, or cancelled with status 2 and no
            // temporary file left (or killed before the handler was set).
            match out.status.code() {
                Some(0) => {}
                Some(2) => {
                    assert!(
                        String::from_utf8_lossy(&out.stderr).contains("interrupted"),
                        "{what}"
                    );
                    cancelled += 1;
                }
                None => {}
                Some(c) => panic!("status {c}: {what}"),
            }
            if out.status.code().is_some() {
                assert!(leftovers(d).is_empty(), "{what}: {:?}", leftovers(d));
            }
        }
        eprintln!("{what}");
        for name in leftovers(d) {
            std::fs::remove_file(d.join(name)).unwrap();
        }
    }
    eprintln!("{cancelled} conversions cancelled by SIGINT");
}
