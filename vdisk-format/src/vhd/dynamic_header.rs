//! The dynamic disk header: 1024 bytes at the footer's data offset of
//! dynamic and differencing disks. All fields are big-endian.
//!
//! Layout: cookie `cxsparse` (0), data offset (8, unused), table offset
//! (16), header version (24), max table entries (28), block size (32),
//! checksum (36), parent unique id (40), parent time stamp (56), parent
//! unicode name (64, 512 bytes of UTF-16BE), eight parent locator entries
//! (576, 24 bytes each).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use disk_io::bytes::{be_u16, be_u32, be_u64};
use disk_io::{Error, ReadAt, Result};

use super::footer::checksum;
use super::parent_locator::ParentLocator;

/// `cxsparse`.
pub const COOKIE: &[u8; 8] = b"cxsparse";
/// Size of the header.
pub const SIZE: usize = 1024;
/// Offset of the checksum field.
const CHECKSUM_AT: usize = 36;
/// Offset of the first parent locator entry.
const LOCATORS_AT: usize = 576;
/// Parent locator entries.
pub const LOCATORS: usize = 8;
/// Smallest block size accepted (one sector).
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size accepted (256 MiB; the sector bitmap is then 64 KiB).
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;

/// The dynamic disk header, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicHeader {
    /// Where in the file the header was read.
    pub offset: u64,
    /// File offset of the block allocation table.
    pub table_offset: u64,
    /// Entries of the BAT.
    pub max_table_entries: u32,
    /// Bytes of guest data per block: a power of two.
    pub block_size: u32,
    /// The stored checksum.
    pub checksum: u32,
    /// The checksum the bytes add up to.
    pub computed_checksum: u32,
    /// Unique id of the parent (differencing disks).
    pub parent_unique_id: [u8; 16],
    /// Modification time of the parent when the child was made, seconds
    /// since 2000-01-01 UTC (differencing disks).
    pub parent_timestamp: u32,
    /// The parent's file name (differencing disks; empty otherwise).
    pub parent_name: String,
    /// Parent locator entries that name a platform.
    pub locators: Vec<ParentLocator>,
}

impl DynamicHeader {
    /// True when the stored checksum matches the bytes.
    pub fn checksum_ok(&self) -> bool {
        self.checksum == self.computed_checksum
    }

    /// Reads the header at `offset` of `file` (the checksum is not
    /// judged here).
    pub fn read<D: ReadAt + ?Sized>(file: &D, offset: u64) -> Result<DynamicHeader> {
        if offset
            .checked_add(SIZE as u64)
            .is_none_or(|e| e > file.size())
        {
            return Err(Error::corrupt(
                format!(
                    "vhd dynamic disk header at {offset:#x} (footer data offset) past the end of the file"
                ),
                offset,
            ));
        }
        let b = disk_io::read_vec(file, offset, SIZE)?;
        if b.get(..8) != Some(&COOKIE[..]) {
            return Err(Error::corrupt(
                "vhd dynamic disk header: no 'cxsparse' cookie",
                offset,
            ));
        }
        let truncated = || Error::corrupt("vhd dynamic disk header truncated", offset);
        let field = |at: usize| be_u32(&b, at).ok_or_else(truncated);
        let block_size = field(32)?;
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) || !block_size.is_power_of_two()
        {
            return Err(Error::corrupt(
                format!(
                    "vhd dynamic disk header: block size {block_size} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
                ),
                offset + 32,
            ));
        }
        let mut parent_unique_id = [0u8; 16];
        parent_unique_id.copy_from_slice(b.get(40..56).ok_or_else(truncated)?);
        let name_units: Vec<u16> = (0..256)
            .map_while(|i| be_u16(&b, 64 + 2 * i))
            .take_while(|&u| u != 0)
            .collect();
        let parent_name = char::decode_utf16(name_units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        let locators = (0..LOCATORS)
            .filter_map(|i| {
                let at = LOCATORS_AT + 24 * i;
                let e = b.get(at..at + 24)?;
                ParentLocator::parse(e, offset + at as u64)
            })
            .collect();
        Ok(DynamicHeader {
            offset,
            table_offset: be_u64(&b, 16).ok_or_else(truncated)?,
            max_table_entries: field(28)?,
            block_size,
            checksum: field(CHECKSUM_AT)?,
            computed_checksum: checksum(&b, CHECKSUM_AT),
            parent_unique_id,
            parent_timestamp: field(56)?,
            parent_name,
            locators,
        })
    }

    /// Bytes of the sector bitmap before each block's data: one bit per
    /// sector, padded to a whole sector.
    pub fn bitmap_size(&self) -> u64 {
        let bits = u64::from(self.block_size) / 512;
        bits.div_ceil(8).div_ceil(512) * 512
    }
}
