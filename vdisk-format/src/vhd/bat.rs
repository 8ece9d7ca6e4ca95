//! The block allocation table: one big-endian `u32` per block, the sector
//! of the file where the block's sector bitmap starts (its data follows
//! the bitmap), or all ones for a block not stored.
//!
//! The sector bitmap holds one bit per sector of the block, the most
//! significant bit of its first byte for the first sector: set when this
//! file holds the sector.

use alloc::format;
use alloc::vec::Vec;

use disk_io::{Error, ReadAt, Result};

use super::dynamic_header::DynamicHeader;

/// BAT entry of a block not stored.
pub const UNUSED: u32 = u32::MAX;

/// The BAT, read whole (its size is bounded by the file's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bat {
    /// File offset of the table.
    pub offset: u64,
    /// The entries.
    pub entries: Vec<u32>,
}

impl Bat {
    /// Reads the BAT the header points to, after checking that it lies
    /// inside `file` (so a forged entry count cannot size an allocation
    /// beyond the file's own size).
    pub fn read<D: ReadAt + ?Sized>(file: &D, header: &DynamicHeader) -> Result<Bat> {
        let offset = header.table_offset;
        let bytes = u64::from(header.max_table_entries) * 4;
        if offset.checked_add(bytes).is_none_or(|e| e > file.size()) {
            return Err(Error::corrupt(
                format!(
                    "vhd BAT of {} entries at {offset:#x} (dynamic header table offset) past the end of the file",
                    header.max_table_entries
                ),
                header.offset + 16,
            ));
        }
        let raw = disk_io::read_vec(file, offset, bytes as usize)?;
        let entries = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap_or([0xff; 4])))
            .collect();
        Ok(Bat { offset, entries })
    }

    /// The entry of block `index` (unused past the table).
    pub fn get(&self, index: u64) -> u32 {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i).copied())
            .unwrap_or(UNUSED)
    }

    /// File offset of entry `index`, for messages.
    pub fn entry_offset(&self, index: u64) -> u64 {
        self.offset.saturating_add(index.saturating_mul(4))
    }
}

/// Whether the sector bitmap `bitmap` marks sector `sector` of its block.
pub fn bit(bitmap: &[u8], sector: u64) -> bool {
    usize::try_from(sector / 8)
        .ok()
        .and_then(|i| bitmap.get(i))
        .is_some_and(|b| b & (0x80 >> (sector % 8)) != 0)
}

/// The first sector at or after `from` (and before `end`) whose bit
/// differs from `value`, or `end`.
pub fn run_end(bitmap: &[u8], from: u64, end: u64, value: bool) -> u64 {
    let full = if value { 0xff } else { 0x00 };
    let mut s = from;
    while s < end {
        if s.is_multiple_of(8) && s + 8 <= end {
            let byte = usize::try_from(s / 8).ok().and_then(|i| bitmap.get(i));
            if byte == Some(&full) {
                s += 8;
                continue;
            }
        }
        if bit(bitmap, s) != value {
            return s;
        }
        s += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_runs() {
        let bm = [0xff, 0xf0, 0x00, 0x01];
        assert!(bit(&bm, 0) && bit(&bm, 11) && !bit(&bm, 12) && bit(&bm, 31));
        assert_eq!(run_end(&bm, 0, 32, true), 12);
        assert_eq!(run_end(&bm, 12, 32, false), 31);
        assert_eq!(run_end(&bm, 31, 32, true), 32);
        assert_eq!(run_end(&bm, 3, 10, true), 10);
        assert!(!bit(&bm, 1000));
    }
}
