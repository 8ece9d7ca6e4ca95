//! The block allocation table: one 64-bit entry per payload block (its
//! state and file offset in MiB), with one sector bitmap entry after every
//! chunk-ratio payload entries.

use alloc::format;
use alloc::vec::Vec;

use disk_io::{Error, Result};

use super::metadata::Metadata;
use super::region_table::Region;

/// Sectors one sector bitmap block describes (2^23).
const SECTORS_PER_BITMAP: u64 = 1 << 23;
/// File offsets in BAT entries are in MiB.
const MIB: u64 = 1 << 20;

/// What a payload block entry says about its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadState {
    /// Not in the file: the parent's (differencing) or undefined, read as
    /// zeros (fixed, dynamic).
    NotPresent,
    /// Contents undefined; read as zeros.
    Undefined,
    /// Reads as zeros.
    Zero,
    /// Trimmed; read as zeros. (Value 3, or 5 in drafts of the spec.)
    Unmapped,
    /// Every sector is in the file at the offset.
    FullyPresent,
    /// Sectors whose sector bitmap bit is set are in the file at the
    /// offset, the others are the parent's (differencing only).
    PartiallyPresent,
}

impl PayloadState {
    /// The state of a payload entry; `None` for the reserved value 4.
    pub fn from_entry(entry: u64) -> Option<PayloadState> {
        Some(match entry & 7 {
            0 => PayloadState::NotPresent,
            1 => PayloadState::Undefined,
            2 => PayloadState::Zero,
            3 | 5 => PayloadState::Unmapped,
            6 => PayloadState::FullyPresent,
            7 => PayloadState::PartiallyPresent,
            _ => return None,
        })
    }
}

/// Sector bitmap entry state: the bitmap block is in the file.
pub const SB_BLOCK_PRESENT: u64 = 6;
/// Sector bitmap entry state: no bitmap block.
pub const SB_BLOCK_NOT_PRESENT: u64 = 0;

/// File offset named by an entry.
pub fn entry_offset(entry: u64) -> u64 {
    entry & !(MIB - 1)
}

/// How the BAT of a file is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Payload block size.
    pub block_size: u64,
    /// Payload blocks per sector bitmap block.
    pub chunk_ratio: u64,
    /// Payload blocks covering the virtual disk.
    pub data_blocks: u64,
    /// Sector bitmap blocks covering them.
    pub bitmap_blocks: u64,
    /// Entries of the BAT.
    pub entries: u64,
}

impl Geometry {
    /// The layout the metadata implies.
    pub fn new(m: &Metadata) -> Geometry {
        let block_size = u64::from(m.block_size).max(1);
        let chunk_ratio =
            (SECTORS_PER_BITMAP * u64::from(m.logical_sector_size) / block_size).max(1);
        let data_blocks = m.virtual_size.div_ceil(block_size);
        let bitmap_blocks = data_blocks.div_ceil(chunk_ratio);
        let entries = if m.has_parent {
            bitmap_blocks * (chunk_ratio + 1)
        } else {
            data_blocks + data_blocks.saturating_sub(1) / chunk_ratio
        };
        Geometry {
            block_size,
            chunk_ratio,
            data_blocks,
            bitmap_blocks,
            entries,
        }
    }

    /// BAT index of payload block `block`.
    pub fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    /// BAT index of the sector bitmap block of chunk `chunk`.
    pub fn bitmap_index(&self, chunk: u64) -> u64 {
        chunk * (self.chunk_ratio + 1) + self.chunk_ratio
    }

    /// True when BAT index `index` is a sector bitmap entry.
    pub fn is_bitmap_index(&self, index: u64) -> bool {
        index % (self.chunk_ratio + 1) == self.chunk_ratio
    }
}

/// Reads the BAT from `region` through `read`: the entries `geometry`
/// needs, which must fit in the region, inside the file as replayed
/// (`file_size`) and no larger than the bytes really stored (`stored`:
/// a log may claim a longer file, never a bigger table) before anything
/// is allocated.
pub fn read(
    read: &dyn Fn(u64, &mut [u8]) -> Result<()>,
    region: Region,
    geometry: &Geometry,
    file_size: u64,
    stored: u64,
) -> Result<Vec<u64>> {
    let bytes = geometry.entries.saturating_mul(8);
    if bytes > u64::from(region.length) || region.end() > file_size || bytes > stored {
        return Err(Error::corrupt(
            format!(
                "vhdx BAT at {:#x}: {} entries ({bytes} bytes) do not fit the {}-byte region, or it ends past the end of the {file_size}-byte file",
                region.file_offset, geometry.entries, region.length
            ),
            region.file_offset,
        ));
    }
    let mut raw = alloc::vec![0u8; bytes as usize];
    read(region.file_offset, &mut raw).map_err(|e| e.context("vhdx BAT"))?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}
