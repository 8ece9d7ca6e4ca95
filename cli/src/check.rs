//! `vdisk check`: the container's own metadata, reported as `qemu-img
//! check` reports it (human text), or as the contract's JSON object.

use std::path::Path;

use image_convert::PathError;
use serde::Serialize;
use vdisk_format::CheckReport;

use crate::EXIT_NEGATIVE;

/// The JSON object of `vdisk check --json`, field names fixed by the contract.
#[derive(Serialize)]
struct CheckJson<'a> {
    errors: u64,
    leaks: u64,
    messages: &'a [String],
}

/// Checks the image at `path`; exit status 0 when clean, 1 when errors or
/// leaks were found. An image whose header cannot be read is an error.
pub fn run(path: &Path, json: bool) -> Result<u8, PathError> {
    let report = vdisk_format::check(path).map_err(|e| PathError::new(path, e))?;
    if json {
        let out = CheckJson {
            errors: report.errors,
            leaks: report.leaks,
            messages: &report.messages,
        };
        let text = serde_json::to_string(&out).map_err(|e| {
            PathError::from(disk_io::Error::invalid_input(format!("JSON output: {e}")))
        })?;
        println!("{text}");
    } else {
        print!("{}", human(&report));
    }
    Ok(if report.is_clean() { 0 } else { EXIT_NEGATIVE })
}

/// The report in `qemu-img check`'s words.
fn human(report: &CheckReport) -> String {
    let mut out = String::new();
    for m in &report.messages {
        out.push_str(m);
        out.push('\n');
    }
    let omitted =
        (report.errors.saturating_add(report.leaks)).saturating_sub(report.messages.len() as u64);
    if report.messages.len() >= vdisk_format::MAX_MESSAGES && omitted > 0 {
        out.push_str("(further messages omitted)\n");
    }
    if report.is_clean() {
        out.push_str("No errors were found on the image.\n");
        return out;
    }
    if !report.messages.is_empty() {
        out.push('\n');
    }
    if report.errors > 0 {
        out.push_str(&format!(
            "{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
            report.errors
        ));
    }
    if report.leaks > 0 {
        if report.errors > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
            report.leaks
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording_follows_qemu_img() {
        assert_eq!(
            human(&CheckReport::default()),
            "No errors were found on the image.\n"
        );
        let mut r = CheckReport::default();
        r.error("ERROR cluster 3 refcount=0 reference=1");
        r.leaks(2, "Leaked cluster 9 refcount=1 reference=0");
        let text = human(&r);
        assert!(text.starts_with("ERROR cluster 3"), "{text}");
        assert!(
            text.contains("\n1 errors were found on the image.\n"),
            "{text}"
        );
        assert!(
            text.contains("\n2 leaked clusters were found on the image.\n"),
            "{text}"
        );
    }
}
