//! Entry points shared by the fuzz targets and the corpus replay test, so
//! that what the fuzzer found stays tested under `cargo test`.

use disk_io::{ReadAt, extents};

use crate::raw::Raw;
use crate::{Detected, detect};

/// Detects the format of `data` and, when it is raw, reads it through the
/// raw format: every allocation run and a few reads around the edges.
/// Must never panic, whatever `data` holds.
pub fn detect_and_read(data: &[u8]) {
    let Ok(detected) = detect(data) else {
        return;
    };
    if let Detected::Raw(_) = detected {
        let image = Raw::new(data);
        for run in extents(&image, 0, u64::MAX) {
            if run.is_err() {
                return;
            }
        }
        let size = image.size();
        let mut buf = [0u8; 512];
        for offset in [0, size.saturating_sub(512), size.saturating_sub(1), size] {
            let _ = image.read_at(offset, &mut buf);
        }
    }
}
