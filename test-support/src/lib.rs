//! Helpers for the workspace's interop tests (a dev-dependency only).
//!
//! Tests that need an external tool or the shared test data call [`have`]
//! or [`testdata`] first: locally a missing piece skips the test with a
//! printed reason; with `CI` set it fails the test, so CI can never pass by
//! skipping.
//!
//! ```
//! if test_support::have("sh") {
//!     let dir = std::env::temp_dir();
//!     test_support::sh("true", &dir);
//! }
//! ```

// Failing loudly is what these helpers are for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod disks;

fn missing(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is required in CI (run .ci/install-tools)");
    }
    eprintln!("skipped: {what} is not available (run .ci/install-tools)");
}

/// True when `tool` is on `PATH`; otherwise skips (locally) or fails (in CI).
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v '{tool}'")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        missing(tool);
    }
    found
}

/// True when every tool of `tools` is there (see [`have`]).
pub fn have_all(tools: &[&str]) -> bool {
    tools.iter().all(|t| have(t))
}

/// Runs `cmd` with `sh -c` in `dir`, failing the test if it fails, and
/// returns its standard output.
pub fn sh(cmd: &str, dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The path of `rel` under the shared test data (`../shared/testdata` from
/// the repository root), or `None` (after skipping or failing as [`have`]
/// does) when it is not there.
pub fn testdata(rel: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata");
    let path = root.join(rel);
    if path.exists() {
        Some(path)
    } else {
        missing(&format!("shared test data {}", path.display()));
        None
    }
}

/// Feeds every file of the fuzz directories `subs` (e.g. `corpus/detect`,
/// relative to the workspace's `fuzz/`) to `entry`, the function the fuzz
/// target calls, and returns how many there were. Fails the test when a
/// directory is missing or holds fewer than `min` inputs in all.
pub fn replay_corpus(subs: &[&str], min: usize, entry: fn(&[u8])) -> usize {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for sub in subs {
        let dir = fuzz.join(sub);
        for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            entry(&std::fs::read(file.unwrap().path()).unwrap());
            count += 1;
        }
    }
    assert!(count >= min, "only {count} inputs in {subs:?}");
    count
}

/// A small deterministic generator (xorshift64*) for seeded test data and
/// mutations: the same seed gives the same sequence on every machine.
///
/// ```
/// let mut a = test_support::Rng(7);
/// let mut b = test_support::Rng(7);
/// assert_eq!(a.next(), b.next());
/// assert!(a.below(10) < 10);
/// assert_eq!(a.bytes(5).len(), 5);
/// ```
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0, without drawing).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}
