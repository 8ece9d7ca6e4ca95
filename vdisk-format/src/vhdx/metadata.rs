//! The metadata region: a table of items, of which this reader knows the
//! ones the specification defines — file parameters (block size, whether
//! the file has a parent), virtual disk size, page 83 data (the disk's
//! identity), logical and physical sector sizes, and the parent locator.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use disk_io::bytes::{le_u16, le_u32, le_u64};
use disk_io::{Error, Result};

use super::file_identifier::utf16le;
use super::header::Guid;
use super::region_table::Region;

/// "metadata".
const SIGNATURE: &[u8; 8] = b"metadata";
/// Bytes of the table at the start of the region.
const TABLE_SIZE: usize = 64 * 1024;
/// Most entries the table may hold.
const MAX_ENTRIES: u16 = 2047;
/// Largest item (the specification's limit).
const MAX_ITEM: u32 = 1 << 20;
/// Largest virtual disk (64 TiB).
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// CAA16737-FA36-4D43-B3B6-33F0AA44E76B
const FILE_PARAMETERS: Guid = Guid([
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b,
]);
/// 2FA54224-CD1B-4876-B211-5DBED83BF4B8
const VIRTUAL_DISK_SIZE: Guid = Guid([
    0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8,
]);
/// BECA12AB-B2E6-4523-93EF-C309E000C746
const PAGE_83_DATA: Guid = Guid([
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46,
]);
/// 8141BF1D-A96F-4709-BA47-F233A8FAAB5F
const LOGICAL_SECTOR_SIZE: Guid = Guid([
    0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f,
]);
/// CDA348C7-445D-4471-9CC9-E9885251C556
const PHYSICAL_SECTOR_SIZE: Guid = Guid([
    0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44, 0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56,
]);
/// A8D35F2D-B30B-454D-ABF7-D3D84834AB0C
const PARENT_LOCATOR: Guid = Guid([
    0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c,
]);
/// B04AEFB7-D19E-4A81-B789-25B8E9445913: the locator type of a VHDX parent.
const VHDX_LOCATOR_TYPE: Guid = Guid([
    0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a, 0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13,
]);

/// The parent locator of a differencing file: key/value pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParentLocator {
    /// Keys and values in file order (`parent_linkage`, `relative_path`,
    /// `volume_path`, `absolute_win32_path`, ...).
    pub entries: Vec<(String, String)>,
}

impl ParentLocator {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The parent's DataWriteGuid this file was made on.
    pub fn parent_linkage(&self) -> Option<Guid> {
        self.get("parent_linkage").and_then(Guid::parse)
    }

    /// The alternative linkage some writers record.
    pub fn parent_linkage2(&self) -> Option<Guid> {
        self.get("parent_linkage2").and_then(Guid::parse)
    }
}

/// The metadata this reader needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Payload block size (a power of two, 1 MiB to 256 MiB).
    pub block_size: u32,
    /// Blocks stay allocated (a fixed file).
    pub leave_blocks_allocated: bool,
    /// The file is a differencing file.
    pub has_parent: bool,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// Logical sector size (512 or 4096).
    pub logical_sector_size: u32,
    /// Physical sector size (512 or 4096).
    pub physical_sector_size: u32,
    /// The disk's identity (SCSI page 83).
    pub page_83_data: Option<Guid>,
    /// Where the parent is, for a differencing file.
    pub parent_locator: Option<ParentLocator>,
}

/// Reads the metadata region `region` through `read`.
pub fn read(read: &dyn Fn(u64, &mut [u8]) -> Result<()>, region: Region) -> Result<Metadata> {
    let base = region.file_offset;
    if (region.length as usize) < TABLE_SIZE {
        return Err(Error::corrupt(
            format!(
                "vhdx metadata region at {base:#x} is {} bytes, smaller than its table",
                region.length
            ),
            base,
        ));
    }
    let mut table = alloc::vec![0u8; TABLE_SIZE];
    read(base, &mut table).map_err(|e| e.context("vhdx metadata table"))?;
    if table.get(..8) != Some(&SIGNATURE[..]) {
        return Err(Error::corrupt(
            "vhdx metadata table signature (expected 'metadata')",
            base,
        ));
    }
    let count = le_u16(&table, 10).unwrap_or(0);
    if count > MAX_ENTRIES {
        return Err(Error::corrupt(
            format!("vhdx metadata table entry count {count} (at most {MAX_ENTRIES})"),
            base + 10,
        ));
    }
    let mut items: Vec<(Guid, Vec<u8>)> = Vec::new();
    for i in 0..usize::from(count) {
        let e = 32 + 32 * i;
        let at = base + e as u64;
        let guid = Guid::at(&table, e);
        let offset = le_u32(&table, e + 16).unwrap_or(0);
        let length = le_u32(&table, e + 20).unwrap_or(0);
        let flags = le_u32(&table, e + 24).unwrap_or(0);
        let is_user = flags & 1 != 0;
        let required = flags & 4 != 0;
        if items.iter().any(|(g, _)| *g == guid) {
            return Err(Error::corrupt(
                format!("vhdx metadata entry {i}: item {guid} listed twice"),
                at,
            ));
        }
        let known = [
            FILE_PARAMETERS,
            VIRTUAL_DISK_SIZE,
            PAGE_83_DATA,
            LOGICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR_SIZE,
            PARENT_LOCATOR,
        ]
        .contains(&guid);
        if !known || is_user {
            if required {
                return Err(Error::unsupported(format!(
                    "vhdx metadata entry {i}: required item {guid} this reader does not know"
                ))
                .at(at));
            }
            continue;
        }
        if length == 0 {
            continue;
        }
        let end = u64::from(offset) + u64::from(length);
        if offset < TABLE_SIZE as u32 || length > MAX_ITEM || end > u64::from(region.length) {
            return Err(Error::corrupt(
                format!(
                    "vhdx metadata entry {i} ({guid}): item at {offset:#x}+{length} outside the metadata region"
                ),
                at,
            ));
        }
        let mut data = alloc::vec![0u8; length as usize];
        read(base + u64::from(offset), &mut data)
            .map_err(|e| e.context(format!("vhdx metadata item {guid}")))?;
        items.push((guid, data));
    }
    let item = |g: Guid| {
        items
            .iter()
            .find(|(k, _)| *k == g)
            .map(|(_, v)| v.as_slice())
    };
    let entry_at = |g: Guid| {
        let i = (0..usize::from(count))
            .find(|&i| Guid::at(&table, 32 + 32 * i) == g)
            .unwrap_or(0);
        base + 32 + 32 * i as u64
    };
    let need = |g: Guid, what: &str, len: usize| -> Result<&[u8]> {
        match item(g) {
            Some(d) if d.len() >= len => Ok(d),
            Some(_) => Err(Error::corrupt(
                format!("vhdx metadata item {what} shorter than {len} bytes"),
                entry_at(g),
            )),
            None => Err(Error::corrupt(
                format!("vhdx metadata has no {what} item"),
                base,
            )),
        }
    };

    let fp = need(FILE_PARAMETERS, "file parameters", 8)?;
    let block_size = le_u32(fp, 0).unwrap_or(0);
    let fp_flags = le_u32(fp, 4).unwrap_or(0);
    if !block_size.is_power_of_two() || !(1 << 20..=256 << 20).contains(&block_size) {
        return Err(Error::corrupt(
            format!("vhdx block size {block_size} (a power of two from 1 MiB to 256 MiB)"),
            entry_at(FILE_PARAMETERS),
        ));
    }
    let virtual_size = le_u64(need(VIRTUAL_DISK_SIZE, "virtual disk size", 8)?, 0).unwrap_or(0);
    let logical_sector_size =
        le_u32(need(LOGICAL_SECTOR_SIZE, "logical sector size", 4)?, 0).unwrap_or(0);
    let physical_sector_size =
        le_u32(need(PHYSICAL_SECTOR_SIZE, "physical sector size", 4)?, 0).unwrap_or(0);
    for (what, v, g) in [
        ("logical", logical_sector_size, LOGICAL_SECTOR_SIZE),
        ("physical", physical_sector_size, PHYSICAL_SECTOR_SIZE),
    ] {
        if v != 512 && v != 4096 {
            return Err(Error::corrupt(
                format!("vhdx {what} sector size {v} (512 or 4096)"),
                entry_at(g),
            ));
        }
    }
    if virtual_size > MAX_VIRTUAL_SIZE
        || !virtual_size.is_multiple_of(u64::from(logical_sector_size))
    {
        return Err(Error::corrupt(
            format!(
                "vhdx virtual disk size {virtual_size} (at most 64 TiB, a multiple of the {logical_sector_size}-byte sector)"
            ),
            entry_at(VIRTUAL_DISK_SIZE),
        ));
    }
    let page_83_data = item(PAGE_83_DATA)
        .filter(|d| d.len() >= 16)
        .map(|d| Guid::at(d, 0));
    let has_parent = fp_flags & 2 != 0;
    let parent_locator = match item(PARENT_LOCATOR) {
        Some(d) => Some(parse_locator(d, entry_at(PARENT_LOCATOR))?),
        None if has_parent => {
            return Err(Error::corrupt(
                "vhdx differencing file has no parent locator",
                base,
            ));
        }
        None => None,
    };
    Ok(Metadata {
        block_size,
        leave_blocks_allocated: fp_flags & 1 != 0,
        has_parent,
        virtual_size,
        logical_sector_size,
        physical_sector_size,
        page_83_data,
        parent_locator,
    })
}

/// Parses a parent locator item; `at` is its table entry (for errors).
fn parse_locator(d: &[u8], at: u64) -> Result<ParentLocator> {
    let kind = Guid::at(d, 0);
    if d.len() < 20 || kind != VHDX_LOCATOR_TYPE {
        return Err(Error::unsupported(format!(
            "vhdx parent locator type {kind} (only the VHDX locator is known)"
        ))
        .at(at));
    }
    let count = le_u16(d, 18).unwrap_or(0);
    let mut entries = Vec::new();
    for i in 0..usize::from(count) {
        let e = 20 + 12 * i;
        let (Some(ko), Some(vo), Some(kl), Some(vl)) = (
            le_u32(d, e),
            le_u32(d, e + 4),
            le_u16(d, e + 8),
            le_u16(d, e + 10),
        ) else {
            return Err(Error::corrupt(
                format!("vhdx parent locator entry {i} past the end of the item"),
                at,
            ));
        };
        let field = |o: u32, l: u16| {
            let o = o as usize;
            o.checked_add(usize::from(l))
                .and_then(|end| d.get(o..end))
                .map(utf16le)
        };
        match (field(ko, kl), field(vo, vl)) {
            (Some(k), Some(v)) => entries.push((k, v)),
            _ => {
                return Err(Error::corrupt(
                    format!("vhdx parent locator entry {i}: key or value past the end of the item"),
                    at,
                ));
            }
        }
    }
    Ok(ParentLocator { entries })
}
