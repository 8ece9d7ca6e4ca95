//! Grain directory and grain tables of a hosted sparse extent: the
//! directory holds the sector of each grain table, a table holds the
//! sector of each grain (0: not allocated, 1: a zero grain when the header
//! says so). Both are arrays of little-endian `u32`.

use alloc::format;
use alloc::vec::Vec;

use disk_io::{Error, ReadAt, Result};

use super::sparse_header::{SECTOR, SparseHeader};

/// Largest grain directory read, in bytes (64 MiB: a 2 PiB disk of 64 KiB
/// grains).
pub const MAX_GD_BYTES: u64 = 64 << 20;

/// A grain table entry: 0 means not allocated.
pub const GTE_UNALLOCATED: u32 = 0;
/// A grain table entry of 1 reads as zeros when the header has the
/// zeroed-grain flag.
pub const GTE_ZEROED: u32 = 1;

/// What one grain of an extent maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    /// Not stored in this extent: from the parent, or zeros.
    Unallocated,
    /// Reads as zeros (zeroed-grain entry).
    Zero,
    /// Stored as is at this byte offset of the file.
    Data(u64),
    /// Stored compressed; the byte offset of its grain marker (or of the
    /// compressed bytes, without markers).
    Compressed(u64),
}

/// Reads `count` little-endian `u32` entries at byte `at` of `file`;
/// `what` names the table in messages.
pub fn read_u32_table<D: ReadAt + ?Sized>(
    file: &D,
    at: u64,
    count: u64,
    what: &str,
) -> Result<Vec<u32>> {
    let bytes = count
        .checked_mul(4)
        .filter(|&b| b <= MAX_GD_BYTES)
        .ok_or_else(|| Error::corrupt(format!("vmdk {what}: {count} entries is too many"), at))?;
    if at.checked_add(bytes).is_none_or(|end| end > file.size()) {
        return Err(Error::corrupt(
            format!(
                "vmdk {what} at {at:#x} ({bytes} bytes) lies past the end of the file ({} bytes)",
                file.size()
            ),
            at,
        ));
    }
    let raw = disk_io::read_vec(file, at, bytes as usize)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
        .collect())
}

/// Reads the grain directory at sector `sector` (the primary or the
/// redundant one) of the extent described by `header`.
pub fn read_directory<D: ReadAt + ?Sized>(
    file: &D,
    header: &SparseHeader,
    sector: u64,
    what: &str,
) -> Result<Vec<u32>> {
    let at = sector
        .checked_mul(SECTOR)
        .ok_or_else(|| Error::corrupt(format!("vmdk {what} sector {sector:#x} overflows"), 56))?;
    read_u32_table(file, at, header.gd_entries(), what)
}

/// Reads the grain table at sector `sector` (named by directory entry
/// `index`).
pub fn read_table<D: ReadAt + ?Sized>(
    file: &D,
    header: &SparseHeader,
    sector: u32,
    index: u64,
) -> Result<Vec<u32>> {
    let at = u64::from(sector) * SECTOR;
    read_u32_table(
        file,
        at,
        u64::from(header.gtes_per_gt),
        &format!("grain table {index}"),
    )
}

/// The grain a table entry names, under the header's flags.
pub fn grain_of(header: &SparseHeader, gte: u32) -> Grain {
    match gte {
        GTE_UNALLOCATED => Grain::Unallocated,
        GTE_ZEROED if header.zeroed_grain_gte() => Grain::Zero,
        sector if header.compressed() => Grain::Compressed(u64::from(sector) * SECTOR),
        sector => Grain::Data(u64::from(sector) * SECTOR),
    }
}
