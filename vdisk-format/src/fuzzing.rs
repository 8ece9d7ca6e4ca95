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

/// Checks `data` as a qcow2 image, opens it and reads it: the first MiB,
/// the last bytes, a few offsets between, and the first runs of the
/// allocation map. Must never panic, loop without end, or allocate without bound.
pub fn qcow2_read(data: &[u8]) {
    let _ = crate::qcow2::check::check(data);
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

/// A parent disk of zeros for differencing images read by [`vdi_read`].
struct Zeros(u64);

impl ReadAt for Zeros {
    fn size(&self) -> u64 {
        self.0
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> disk_io::Result<()> {
        disk_io::check_range(self.0, offset, buf.len() as u64)?;
        buf.fill(0);
        Ok(())
    }
}

/// Opens `data` as a VDI image (a differencing one over a parent of
/// zeros) and reads it: a few offsets, the first runs of the allocation
/// map, and the block map check. Must never panic, loop without end, or
/// allocate without bound.
pub fn vdi_read(data: &[u8]) {
    let _ = crate::vdi::check(data);
    let Ok(header) = crate::vdi::Header::read(data) else {
        return;
    };
    let parent: Option<crate::chain::Backing> = (header.image_type
        == crate::vdi::ImageType::Differencing)
        .then(|| alloc::boxed::Box::new(Zeros(header.disk_size)) as crate::chain::Backing);
    let Ok(image) = crate::vdi::Vdi::with_parent(data, parent) else {
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

/// Reads `data` as a VMDK without opening any file: a hosted sparse or
/// streamOptimized extent (header, footer, embedded descriptor, grain
/// directory and tables, compressed grains) read and checked, or a text
/// descriptor parsed. Must never panic, loop without end, or allocate
/// without bound.
pub fn vmdk_read(data: &[u8]) {
    use crate::vmdk::{Descriptor, SparseExtent, Vmdk};
    if data.get(..4) != Some(b"KDMV") {
        if let Ok(d) = Descriptor::parse(data, 0) {
            let _ = d.guest_size();
            let _ = Descriptor::parse(d.emit().as_bytes(), 0);
        }
        return;
    }
    let mut report = crate::CheckReport::default();
    let _ = crate::vmdk::check::check_sparse(data, "fuzz", &mut report);
    let _ = crate::vmdk::embedded_descriptor(data);
    // The extent alone, whatever parent its descriptor names.
    if let Ok(extent) = SparseExtent::open(data) {
        let size = extent.size();
        let mut pos = 0u64;
        for _ in 0..64 {
            if pos >= size {
                break;
            }
            match extent.grain_at(pos) {
                Ok((_, _, end)) if end > pos => pos = end,
                _ => break,
            }
        }
    }
    let Ok(image) = Vmdk::open_sparse(data) else {
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
