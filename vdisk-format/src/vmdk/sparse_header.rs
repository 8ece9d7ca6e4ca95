//! The hosted sparse extent header (`SparseExtentHeader` of the VMware
//! Virtual Disk Format 5.0 specification): the first sector of a `KDMV`
//! extent file, and the footer copy of it that streamOptimized files carry
//! at their end. All fields are little-endian; sizes and offsets are in
//! 512-byte sectors.

use alloc::format;

use disk_io::bytes::{le_u16, le_u32, le_u64};
use disk_io::{Error, ReadAt, Result};

/// `KDMV` read as a little-endian `u32`.
pub const MAGIC: u32 = 0x564d_444b;
/// Bytes of a sector, the unit of every size and offset in the header.
pub const SECTOR: u64 = 512;
/// The grain directory offset of a streamOptimized header whose real
/// directory is named by the footer.
pub const GD_AT_END: u64 = u64::MAX;
/// Largest grain this reader accepts (1 MiB; VMware and qemu write 64 KiB).
pub const MAX_GRAIN_SECTORS: u64 = 2048;
/// Largest grain table this reader accepts (the specification fixes 512).
pub const MAX_GTES_PER_GT: u32 = 4096;
/// Largest embedded descriptor read (1 MiB, as qemu).
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;
/// Largest guest size accepted: 2^53 bytes, so that sector and byte
/// arithmetic on it never overflows.
pub const MAX_CAPACITY_SECTORS: u64 = 1 << 44;

/// Header flags.
pub mod flags {
    /// The newline-detection characters are valid.
    pub const VALID_NEWLINE_TEST: u32 = 1 << 0;
    /// A redundant grain directory (and tables) is kept.
    pub const REDUNDANT_GT: u32 = 1 << 1;
    /// A grain table entry of 1 means "zero grain".
    pub const ZEROED_GRAIN_GTE: u32 = 1 << 2;
    /// Grains are compressed.
    pub const COMPRESSED: u32 = 1 << 16;
    /// Grains and metadata are preceded by markers (streamOptimized).
    pub const MARKERS: u32 = 1 << 17;
    /// Every flag this reader understands.
    pub const KNOWN: u32 =
        VALID_NEWLINE_TEST | REDUNDANT_GT | ZEROED_GRAIN_GTE | COMPRESSED | MARKERS;
}

/// `compressAlgorithm` value for deflate (the only one defined).
pub const COMPRESSION_DEFLATE: u16 = 1;

/// The header fields, checked (see [`SparseHeader::parse`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseHeader {
    /// Header version (1, 2 or 3).
    pub version: u32,
    /// Flags (see [`flags`]).
    pub flags: u32,
    /// Guest size of the extent in sectors.
    pub capacity: u64,
    /// Grain size in sectors (a power of two).
    pub grain_sectors: u64,
    /// Sector of the embedded descriptor, or 0.
    pub descriptor_offset: u64,
    /// Sectors of the embedded descriptor.
    pub descriptor_size: u64,
    /// Entries per grain table.
    pub gtes_per_gt: u32,
    /// Sector of the redundant grain directory.
    pub rgd_offset: u64,
    /// Sector of the grain directory, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub overhead: u64,
    /// The extent was not closed cleanly.
    pub unclean_shutdown: bool,
    /// `compressAlgorithm`.
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Parses and checks the 512-byte header in `sector`, found at file
    /// offset `at` (0, or the footer's place) for messages.
    pub fn parse(sector: &[u8], at: u64) -> Result<SparseHeader> {
        let bad = |what: &str, field: u64| {
            Error::corrupt(format!("vmdk sparse header at {at:#x}: {what}"), at + field)
        };
        let short = |field: u64| bad("truncated", field);
        let u32_at = |f: usize| le_u32(sector, f).ok_or_else(|| short(f as u64));
        let u64_at = |f: usize| le_u64(sector, f).ok_or_else(|| short(f as u64));
        if u32_at(0)? != MAGIC {
            return Err(bad("bad magic (not KDMV)", 0));
        }
        let h = SparseHeader {
            version: u32_at(4)?,
            flags: u32_at(8)?,
            capacity: u64_at(12)?,
            grain_sectors: u64_at(20)?,
            descriptor_offset: u64_at(28)?,
            descriptor_size: u64_at(36)?,
            gtes_per_gt: u32_at(44)?,
            rgd_offset: u64_at(48)?,
            gd_offset: u64_at(56)?,
            overhead: u64_at(64)?,
            unclean_shutdown: sector.get(72).copied().unwrap_or(0) != 0,
            compress_algorithm: le_u16(sector, 77).ok_or_else(|| short(77))?,
        };
        if !(1..=3).contains(&h.version) {
            return Err(Error::unsupported(format!(
                "vmdk sparse header version {} (this reader knows 1 to 3)",
                h.version
            ))
            .at(at + 4));
        }
        if !h.grain_sectors.is_power_of_two() || h.grain_sectors > MAX_GRAIN_SECTORS {
            return Err(bad(
                &format!(
                    "grain size of {} sectors (must be a power of two up to {MAX_GRAIN_SECTORS})",
                    h.grain_sectors
                ),
                20,
            ));
        }
        if h.capacity > MAX_CAPACITY_SECTORS {
            return Err(bad(
                &format!("capacity of {} sectors is too large", h.capacity),
                12,
            ));
        }
        if h.gtes_per_gt == 0 || h.gtes_per_gt > MAX_GTES_PER_GT {
            return Err(bad(
                &format!(
                    "{} entries per grain table (1 to {MAX_GTES_PER_GT})",
                    h.gtes_per_gt
                ),
                44,
            ));
        }
        if h.compressed() && h.compress_algorithm != COMPRESSION_DEFLATE {
            return Err(Error::unsupported(format!(
                "vmdk grain compression algorithm {}",
                h.compress_algorithm
            ))
            .at(at + 77));
        }
        Ok(h)
    }

    /// Reads and parses the header at offset 0 of `file`.
    pub fn read<D: ReadAt + ?Sized>(file: &D) -> Result<SparseHeader> {
        let mut sector = [0u8; SECTOR as usize];
        let n = file.size().min(SECTOR) as usize;
        file.read_at(0, sector.get_mut(..n).unwrap_or(&mut []))?;
        if n < 79 {
            return Err(Error::corrupt(
                format!("vmdk sparse header truncated: the file has {n} bytes"),
                0,
            ));
        }
        SparseHeader::parse(&sector, 0)
    }

    /// Grain size in bytes.
    pub fn grain_size(&self) -> u64 {
        self.grain_sectors * SECTOR
    }

    /// Guest bytes one grain table covers.
    pub fn gt_coverage(&self) -> u64 {
        self.grain_size() * u64::from(self.gtes_per_gt)
    }

    /// Entries of the grain directory: enough tables to cover the capacity.
    pub fn gd_entries(&self) -> u64 {
        (self.capacity * SECTOR).div_ceil(self.gt_coverage())
    }

    /// True when grains are compressed.
    pub fn compressed(&self) -> bool {
        self.flags & flags::COMPRESSED != 0
    }

    /// True when grains and metadata carry markers.
    pub fn markers(&self) -> bool {
        self.flags & flags::MARKERS != 0
    }

    /// True when a grain table entry of 1 reads as a zero grain.
    pub fn zeroed_grain_gte(&self) -> bool {
        self.flags & flags::ZEROED_GRAIN_GTE != 0
    }

    /// True when the redundant grain directory is kept.
    pub fn has_redundant(&self) -> bool {
        self.flags & flags::REDUNDANT_GT != 0 && self.rgd_offset != 0
    }

    /// The embedded descriptor's byte range, when there is one (bounded to
    /// [`MAX_DESCRIPTOR_BYTES`]).
    pub fn descriptor_range(&self) -> Option<(u64, u64)> {
        if self.descriptor_offset == 0 || self.descriptor_size == 0 {
            return None;
        }
        let start = self.descriptor_offset.checked_mul(SECTOR)?;
        let len = self
            .descriptor_size
            .saturating_mul(SECTOR)
            .min(MAX_DESCRIPTOR_BYTES);
        Some((start, len))
    }
}

/// Reads the embedded descriptor's text of a sparse extent (up to its first
/// NUL byte), or `None` when it has none.
pub fn read_embedded_descriptor<D: ReadAt + ?Sized>(
    file: &D,
    header: &SparseHeader,
) -> Result<Option<alloc::vec::Vec<u8>>> {
    let Some((start, len)) = header.descriptor_range() else {
        return Ok(None);
    };
    let len = len.min(file.size().saturating_sub(start));
    if len == 0 {
        return Err(Error::corrupt(
            "vmdk embedded descriptor lies past the end of the file",
            28,
        ));
    }
    let mut text = disk_io::read_vec(file, start, len as usize)?;
    if let Some(nul) = text.iter().position(|&b| b == 0) {
        text.truncate(nul);
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; 512] {
        let mut s = [0u8; 512];
        s[0..4].copy_from_slice(b"KDMV");
        s[4..8].copy_from_slice(&1u32.to_le_bytes());
        s[8..12].copy_from_slice(&3u32.to_le_bytes());
        s[12..20].copy_from_slice(&2048u64.to_le_bytes());
        s[20..28].copy_from_slice(&128u64.to_le_bytes());
        s[44..48].copy_from_slice(&512u32.to_le_bytes());
        s
    }

    #[test]
    fn parses_and_rejects() {
        let h = SparseHeader::parse(&header(), 0).unwrap();
        assert_eq!(h.grain_size(), 65536);
        assert_eq!(h.gd_entries(), 1);
        let mut s = header();
        s[20] = 3;
        let e = SparseHeader::parse(&s, 0).unwrap_err();
        assert_eq!(e.offset(), Some(20));
        let mut s = header();
        s[0] = b'X';
        assert!(SparseHeader::parse(&s, 0).is_err());
        let mut s = header();
        s[44..48].copy_from_slice(&0u32.to_le_bytes());
        assert!(SparseHeader::parse(&s, 0).is_err());
        assert!(SparseHeader::parse(&s[..40], 0).is_err());
    }
}
