//! The region table (at 192 KiB, its copy at 256 KiB): where the BAT and
//! the metadata region are in the file.

use alloc::format;
use alloc::vec::Vec;

use disk_io::bytes::{le_u32, le_u64};
use disk_io::{Error, Result};

use super::header::{CHECKSUM_AT, Guid, checksum};

/// Offsets of the two copies.
pub const OFFSETS: [u64; 2] = [192 * 1024, 256 * 1024];
/// Bytes covered by the checksum.
pub const SIZE: usize = 64 * 1024;
/// "regi".
const SIGNATURE: u32 = 0x6967_6572;
/// Most entries a table may hold.
const MAX_ENTRIES: u32 = 2047;

/// The BAT region: 2DC27766-F623-4200-9D64-115E9BFD4A08.
pub const BAT_GUID: Guid = Guid([
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
]);
/// The metadata region: 8B7CA206-4790-4B9A-B8FE-575F050F886E.
pub const METADATA_GUID: Guid = Guid([
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
]);

/// One region table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// What the region holds.
    pub guid: Guid,
    /// File offset (a multiple of 1 MiB).
    pub file_offset: u64,
    /// Bytes (a multiple of 1 MiB).
    pub length: u32,
    /// A reader that does not know the region must refuse the file.
    pub required: bool,
}

impl Region {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.file_offset.saturating_add(u64::from(self.length))
    }
}

/// A parsed region table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionTable {
    /// Which copy (0 or 1).
    pub copy: usize,
    /// The entries.
    pub entries: Vec<Region>,
}

impl RegionTable {
    /// Parses and checks copy `copy` of the table from its 64 KiB.
    pub fn parse(bytes: &[u8], copy: usize) -> Result<RegionTable> {
        let at = OFFSETS.get(copy).copied().unwrap_or(0);
        let name = format!("vhdx region table {}", copy + 1);
        if bytes.len() < SIZE || le_u32(bytes, 0) != Some(SIGNATURE) {
            return Err(Error::corrupt(
                format!("{name} signature (expected 'regi')"),
                at,
            ));
        }
        let stored = le_u32(bytes, CHECKSUM_AT).unwrap_or(0);
        let computed = checksum(bytes.get(..SIZE).unwrap_or(&[]));
        if stored != computed {
            return Err(Error::corrupt(
                format!("{name} checksum {stored:#010x}, computed {computed:#010x}"),
                at + CHECKSUM_AT as u64,
            ));
        }
        let count = le_u32(bytes, 8).unwrap_or(0);
        if count > MAX_ENTRIES {
            return Err(Error::corrupt(
                format!("{name} entry count {count} (at most {MAX_ENTRIES})"),
                at + 8,
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let e = 16 + 32 * i;
            let region = Region {
                guid: Guid::at(bytes, e),
                file_offset: le_u64(bytes, e + 16).unwrap_or(0),
                length: le_u32(bytes, e + 24).unwrap_or(0),
                required: le_u32(bytes, e + 28).unwrap_or(0) & 1 != 0,
            };
            const MIB: u64 = 1 << 20;
            if !region.file_offset.is_multiple_of(MIB)
                || region.file_offset < MIB
                || !u64::from(region.length).is_multiple_of(MIB)
            {
                return Err(Error::corrupt(
                    format!(
                        "{name} entry {i} ({}) at {:#x}, {} bytes: not 1 MiB aligned or inside the header section",
                        region.guid, region.file_offset, region.length
                    ),
                    at + e as u64,
                ));
            }
            if entries.iter().any(|r: &Region| r.guid == region.guid) {
                return Err(Error::corrupt(
                    format!("{name} entry {i}: region {} listed twice", region.guid),
                    at + e as u64,
                ));
            }
            if region.required && region.guid != BAT_GUID && region.guid != METADATA_GUID {
                return Err(Error::unsupported(format!(
                    "{name} entry {i}: required region {} this reader does not know",
                    region.guid
                ))
                .at(at + e as u64));
            }
            entries.push(region);
        }
        Ok(RegionTable { copy, entries })
    }

    /// Reads copy `copy` through `read` (which sees replayed log sectors).
    pub fn read_copy(read: &dyn Fn(u64, &mut [u8]) -> Result<()>, copy: usize) -> Result<Self> {
        let at = OFFSETS.get(copy).copied().unwrap_or(0);
        let mut buf = alloc::vec![0u8; SIZE];
        read(at, &mut buf).map_err(|e| e.context(format!("vhdx region table {}", copy + 1)))?;
        RegionTable::parse(&buf, copy)
    }

    /// The region with `guid`; `what` names it in the error when missing.
    pub fn find(&self, guid: Guid, what: &str) -> Result<Region> {
        self.entries
            .iter()
            .find(|r| r.guid == guid)
            .copied()
            .ok_or_else(|| {
                Error::corrupt(
                    format!("vhdx region table {} has no {what} region", self.copy + 1),
                    OFFSETS.get(self.copy).copied().unwrap_or(0),
                )
            })
    }
}

/// Reads the region table: copy 1, or copy 2 when copy 1 is invalid.
/// Returns the table and, when copy 1 was invalid, why.
pub fn read(read: &dyn Fn(u64, &mut [u8]) -> Result<()>) -> Result<(RegionTable, Option<Error>)> {
    match RegionTable::read_copy(read, 0) {
        Ok(t) => Ok((t, None)),
        Err(e1) => match RegionTable::read_copy(read, 1) {
            Ok(t) => Ok((t, Some(e1))),
            Err(e2) => Err(Error::corrupt(
                format!("vhdx: neither region table is valid ({e1}; {e2})"),
                OFFSETS[0],
            )),
        },
    }
}
