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

/// Opens `data` as a qcow2 image and reads it: the first MiB, the last
/// bytes, a few offsets between, and the first runs of the allocation
/// map. Must never panic, loop without end, or allocate without bound.
pub fn qcow2_read(data: &[u8]) {
    let Ok(image) = crate::qcow2::Qcow2::open(data) else {
        return;
    };
    let size = image.size();
    let mut buf = alloc::vec![0u8; 1 << 16];
    for offset in [0, 1 << 16, size / 3, size / 2, size.saturating_sub(1 << 16)] {
        let n = (buf.len() as u64).min(size.saturating_sub(offset)) as usize;
        if let Some(b) = buf.get_mut(..n) {
            let _ = image.read_at(offset, b);
        }
    }
    for run in extents(&image, 0, size).take(64) {
        if run.is_err() {
            return;
        }
    }
}

/// Opens `data` as a VHD image, damaged checksums allowed so the fuzzer
/// reaches what lies behind them (a differencing disk over a small blank
/// parent), and reads it: a few offsets, the allocation map's first runs,
/// and `check`'s walk of the BAT. Must never panic, loop without end, or
/// allocate without bound.
pub fn vhd_read(data: &[u8]) {
    use crate::vhd::Vhd;
    let image = match Vhd::open_damaged(data, None) {
        Ok(image) => image,
        Err(_) => {
            let parent: crate::chain::Backing = alloc::boxed::Box::new(alloc::vec![0u8; 4096]);
            match Vhd::open_damaged(data, Some(parent)) {
                Ok(image) => image,
                Err(_) => return,
            }
        }
    };
    let size = image.size();
    let mut buf = alloc::vec![0u8; 1 << 16];
    for offset in [0, 4096, size / 3, size / 2, size.saturating_sub(1 << 16)] {
        let n = (buf.len() as u64).min(size.saturating_sub(offset)) as usize;
        if let Some(b) = buf.get_mut(..n) {
            let _ = image.read_at(offset, b);
        }
    }
    for run in extents(&image, 0, size).take(64) {
        if run.is_err() {
            break;
        }
    }
    #[cfg(feature = "std")]
    let _ = crate::vhd::check::check_file(data);
}
