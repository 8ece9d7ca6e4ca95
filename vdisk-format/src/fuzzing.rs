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

/// Reads an opened image the way every container target does: 64 KiB at
/// 0, at `second`, a third and half way in, and at the end; then the first
/// 64 runs of its allocation map. Errors are expected and ignored.
fn read_around(image: &dyn ReadAt, second: u64) {
    let size = image.size();
    let mut buf = alloc::vec![0u8; 1 << 16];
    for offset in [0, second, size / 3, size / 2, size.saturating_sub(1 << 16)] {
        let n = (buf.len() as u64).min(size.saturating_sub(offset)) as usize;
        if let Some(b) = buf.get_mut(..n) {
            let _ = image.read_at(offset, b);
        }
    }
    for run in extents(image, 0, size).take(64) {
        if run.is_err() {
            return;
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
    read_around(&image, 1 << 16);
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
    read_around(&image, 1 << 16);
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
    read_around(&image, 4096);
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
    read_around(&image, 1 << 16);
}

/// Largest file a sparse fuzz input may describe.
const SPARSE_MAX: u64 = 64 << 20;

/// A file described by a fuzz input: a little-endian u32 file size in
/// 4 KiB units (at most 64 MiB), then pieces, each a u32 offset in 4 KiB
/// units, a u16 length and that many bytes; what no piece covers reads as
/// zeros. VHDX puts its structures megabytes apart, so this keeps seeds
/// small (`fuzz/make-vhdx-seeds.sh` writes them).
///
/// Unless bit 31 of the size is set, the checksums of the VHDX headers,
/// region tables and log entries (of a log of at most 1 MiB) are
/// recomputed, so that mutations reach the structures behind them.
pub struct SparseFile<'a> {
    size: u64,
    pieces: alloc::vec::Vec<(u64, &'a [u8])>,
    /// Ranges rewritten with their checksums recomputed, read over the pieces.
    patched: alloc::vec::Vec<(u64, alloc::vec::Vec<u8>)>,
}

/// Bytes of the VHDX header section.
const HEAD: u64 = 1 << 20;

impl<'a> SparseFile<'a> {
    /// Decodes `data`; a trailing partial piece is ignored.
    pub fn new(data: &'a [u8]) -> Self {
        let word = disk_io::bytes::le_u32(data, 0).unwrap_or(0);
        let size = (u64::from(word & 0x7fff_ffff) * 4096).min(SPARSE_MAX);
        let mut data = data.get(4..).unwrap_or(&[]);
        let mut pieces = alloc::vec::Vec::new();
        while let (Some(at), Some(len)) = (
            disk_io::bytes::le_u32(data, 0),
            disk_io::bytes::le_u16(data, 4),
        ) {
            let start = u64::from(at) * 4096;
            let Some(bytes) = data.get(6..6 + usize::from(len)) else {
                break;
            };
            data = data.get(6 + usize::from(len)..).unwrap_or(&[]);
            pieces.push((start, bytes));
        }
        let mut file = SparseFile {
            size,
            pieces,
            patched: alloc::vec::Vec::new(),
        };
        if word & 0x8000_0000 == 0 {
            file.fix_checksums();
        }
        file
    }

    /// Recomputes the checksums of the headers, region tables and log.
    fn fix_checksums(&mut self) {
        use crate::vhdx::header::checksum;
        let fix = |s: &mut [u8]| {
            let crc = checksum(s);
            if let Some(c) = s.get_mut(4..8) {
                c.copy_from_slice(&crc.to_le_bytes());
            }
        };
        let mut head = alloc::vec![0u8; HEAD as usize];
        if self.read_at(0, &mut head).is_err() {
            return;
        }
        for (at, len) in [
            (64usize << 10, 4096usize),
            (128 << 10, 4096),
            (192 << 10, 65536),
            (256 << 10, 65536),
        ] {
            if let Some(s) = head.get_mut(at..at + len) {
                fix(s);
            }
        }
        let log_len = disk_io::bytes::le_u32(&head, (64 << 10) + 68).unwrap_or(0);
        let log_at = disk_io::bytes::le_u64(&head, (64 << 10) + 72).unwrap_or(0);
        self.patched.push((0, head));
        if log_len == 0 || log_len > 1 << 20 || log_at < HEAD {
            return;
        }
        let mut log = alloc::vec![0u8; log_len as usize];
        if self.read_at(log_at, &mut log).is_err() {
            return;
        }
        // Last entry first: an entry's data sectors may look like entries.
        for pos in (0..log.len()).step_by(4096).rev() {
            let len = disk_io::bytes::le_u32(&log, pos + 8).unwrap_or(0) as usize;
            if log.get(pos..pos + 4) == Some(&b"loge"[..]) && len > 0 && len.is_multiple_of(4096) {
                if let Some(entry) = log.get_mut(pos..pos + len) {
                    fix(entry);
                }
            }
        }
        self.patched.push((log_at, log));
    }
}

impl ReadAt for SparseFile<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> disk_io::Result<()> {
        disk_io::check_range(self.size, offset, buf.len() as u64)?;
        let end = offset + buf.len() as u64;
        buf.fill(0);
        let pieces = self.pieces.iter().map(|(s, b)| (*s, *b));
        let patched = self.patched.iter().map(|(s, b)| (*s, b.as_slice()));
        for (start, bytes) in pieces.chain(patched) {
            let from = start.max(offset);
            let to = start.saturating_add(bytes.len() as u64).min(end);
            if from < to {
                let src = bytes.get((from - start) as usize..(to - start) as usize);
                let dst = buf.get_mut((from - offset) as usize..(to - offset) as usize);
                if let (Some(src), Some(dst)) = (src, dst) {
                    dst.copy_from_slice(src);
                }
            }
        }
        Ok(())
    }
}

/// Opens `data` as a VHDX file and reads it: the first MiB, the last
/// bytes, a few offsets between, the first runs of the allocation map,
/// and the check. `data` is the file itself when it starts with
/// `vhdxfile`, otherwise a [`SparseFile`]. A differencing file is read
/// over a small parent of zeros. Must never panic, loop without end, or
/// allocate without bound.
pub fn vhdx_read(data: &[u8]) {
    if data.starts_with(b"vhdxfile") {
        vhdx_read_file(data);
    } else {
        vhdx_read_file(&SparseFile::new(data));
    }
}

fn vhdx_read_file<D: ReadAt + ?Sized>(file: &D) {
    let _ = crate::vhdx::check(file);
    let image = match crate::vhdx::Vhdx::open(file) {
        Ok(v) => v,
        Err(e) if e.kind() == disk_io::ErrorKind::InvalidInput => {
            let parent: crate::chain::Backing = alloc::boxed::Box::new(alloc::vec![0u8; 1 << 20]);
            match crate::vhdx::Vhdx::with_parent(file, Some(parent)) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        Err(_) => return,
    };
    read_around(&image, 1 << 16);
}
