//! Helpers shared by the integration tests.

// Test helpers: failing loudly is their job.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Command, Output};

/// True when an external tool is on PATH. Missing tools skip the test with
/// a printed reason locally, and fail it when `CI` is set.
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required in CI (run .ci/install-tools)");
        }
        eprintln!("skipped: {tool} is not installed (run .ci/install-tools)");
    }
    found
}

/// Runs `vdisk` with `args`.
pub fn vdisk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs a shell command, failing the test if it fails.
pub fn sh(cmd: &str, dir: &Path) {
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
}

/// Asserts exit status 2 and exactly one line on stderr, returning it.
pub fn assert_one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr:?}");
    assert!(stderr.starts_with("vdisk: "), "{stderr}");
    assert!(out.stdout.is_empty());
    stderr
}
