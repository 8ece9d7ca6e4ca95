//! Creation parameters of a new VHDX file and the bytes of its fixed
//! structures (file type identifier, headers, region tables, metadata
//! region), laid out as the VHDX specification describes them and in the
//! order qemu places them: header section, log, BAT, metadata, payload.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::{Error, Result};

use super::bat::Geometry;
use super::header::{CHECKSUM_AT, Guid, checksum};
use super::metadata::{Metadata, ParentLocator};
use super::region_table::{BAT_GUID, METADATA_GUID};
use crate::options::{CreateOptions, parse_size};

/// One MiB: the alignment of every region and payload block.
pub const MIB: u64 = 1 << 20;
/// Logical and physical sector size of files made here (as qemu makes them).
pub const SECTOR_SIZE: u32 = 512;
/// Offset of the metadata items in the metadata region (after its table).
const ITEMS_AT: u32 = 64 << 10;
/// Offset of the parent locator item in a new metadata region.
const LOCATOR_AT: u32 = ITEMS_AT + (4 << 10);
/// Largest parent locator item written.
pub const MAX_LOCATOR: usize = 60 << 10;

/// Metadata item GUIDs (as stored).
pub(crate) mod items {
    use super::Guid;
    /// CAA16737-FA36-4D43-B3B6-33F0AA44E76B
    pub const FILE_PARAMETERS: Guid = Guid([
        0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7,
        0x6b,
    ]);
    /// 2FA54224-CD1B-4876-B211-5DBED83BF4B8
    pub const VIRTUAL_DISK_SIZE: Guid = Guid([
        0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4,
        0xb8,
    ]);
    /// BECA12AB-B2E6-4523-93EF-C309E000C746
    pub const PAGE_83_DATA: Guid = Guid([
        0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7,
        0x46,
    ]);
    /// 8141BF1D-A96F-4709-BA47-F233A8FAAB5F
    pub const LOGICAL_SECTOR_SIZE: Guid = Guid([
        0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab,
        0x5f,
    ]);
    /// CDA348C7-445D-4471-9CC9-E9885251C556
    pub const PHYSICAL_SECTOR_SIZE: Guid = Guid([
        0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44, 0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5,
        0x56,
    ]);
    /// A8D35F2D-B30B-454D-ABF7-D3D84834AB0C
    pub const PARENT_LOCATOR: Guid = Guid([
        0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab,
        0x0c,
    ]);
    /// B04AEFB7-D19E-4A81-B789-25B8E9445913: the VHDX parent locator type.
    pub const VHDX_LOCATOR_TYPE: Guid = Guid([
        0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a, 0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59,
        0x13,
    ]);
}

/// Metadata item flags: the item describes the virtual disk.
const IS_VIRTUAL_DISK: u32 = 2;
/// Metadata item flags: a reader must understand the item.
const IS_REQUIRED: u32 = 4;

/// How a new VHDX file is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Every payload block allocated up front (`subformat=fixed`).
    pub fixed: bool,
    /// Payload block size; 0 picks it from the disk size as qemu does.
    pub block_size: u64,
    /// Bytes of the log (a multiple of 1 MiB, 1 MiB by default).
    pub log_size: u64,
    /// New blocks of a dynamic file start in the ZERO state (qemu's
    /// default) rather than NOT_PRESENT.
    pub block_state_zero: bool,
    /// Parent file name of a differencing file, as stored in its locator.
    pub backing_file: Option<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            fixed: false,
            block_size: 0,
            log_size: MIB,
            block_state_zero: true,
            backing_file: None,
        }
    }
}

/// Option keys a VHDX file takes.
pub const KEYS: [&str; 7] = [
    "subformat",
    "block_size",
    "log_size",
    "block_state_zero",
    "backing_file",
    "backing_fmt",
    "preallocation",
];

impl Params {
    /// The parameters `-o` options ask for, checked.
    pub fn from_options(o: &CreateOptions) -> Result<Params> {
        o.only(&KEYS, "vhdx")?;
        let mut p = Params::default();
        match o.get("subformat") {
            None | Some("dynamic") => {}
            Some("fixed") => p.fixed = true,
            Some(v) => {
                return Err(Error::invalid_input(format!(
                    "format option subformat={v}: expected dynamic or fixed"
                )));
            }
        }
        if let Some(v) = o.get("block_size") {
            let b = parse_size("block_size", v)?;
            if b != 0 && (!b.is_power_of_two() || !(MIB..=256 * MIB).contains(&b)) {
                return Err(Error::invalid_input(format!(
                    "format option block_size={v}: a power of two from 1M to 256M (or 0: automatic)"
                )));
            }
            p.block_size = b;
        }
        if let Some(v) = o.get("log_size") {
            let l = parse_size("log_size", v)?;
            if l < MIB || !l.is_multiple_of(MIB) || l > 256 * MIB {
                return Err(Error::invalid_input(format!(
                    "format option log_size={v}: a multiple of 1M from 1M to 256M"
                )));
            }
            p.log_size = l;
        }
        p.block_state_zero = o.flag("block_state_zero", true)?;
        match o.get("preallocation") {
            None | Some("off") => {}
            Some(v) => {
                return Err(Error::unsupported(format!(
                    "format option preallocation={v} for vhdx (only off; subformat=fixed allocates every block)"
                )));
            }
        }
        if let Some(name) = o.get("backing_file") {
            if name.is_empty() || name.len() > 4096 {
                return Err(Error::invalid_input(format!(
                    "backing file name of {} bytes (1 to 4096)",
                    name.len()
                )));
            }
            if p.fixed {
                return Err(Error::invalid_input(
                    "a vhdx differencing file cannot be subformat=fixed",
                ));
            }
            p.backing_file = Some(name.into());
        }
        match o.get("backing_fmt") {
            None | Some("vhdx") => {}
            Some(v) => {
                return Err(Error::unsupported(format!(
                    "backing_fmt={v}: a vhdx differencing file's parent is a vhdx file"
                )));
            }
        }
        Ok(p)
    }

    /// The block size for a disk of `size` bytes: the one asked for, or
    /// qemu's choice (8 MiB up to 1 GiB, 16 MiB up to 100 GiB, 32 MiB up
    /// to 32 TiB, 64 MiB beyond).
    pub fn block_size_for(&self, size: u64) -> u64 {
        if self.block_size != 0 {
            return self.block_size;
        }
        if size > 32 << 40 {
            64 * MIB
        } else if size > 100 << 30 {
            32 * MIB
        } else if size > 1 << 30 {
            16 * MIB
        } else {
            8 * MIB
        }
    }
}

/// Where the structures of a new file go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Log region.
    pub log_offset: u64,
    /// Bytes of the log.
    pub log_length: u64,
    /// BAT region.
    pub bat_offset: u64,
    /// Bytes of the BAT region (a multiple of 1 MiB).
    pub bat_length: u64,
    /// Metadata region (1 MiB).
    pub metadata_offset: u64,
    /// First byte after the fixed structures (where payload goes).
    pub payload_offset: u64,
}

impl Layout {
    /// The layout for `geometry` with a log of `log_length` bytes.
    pub fn new(geometry: &Geometry, log_length: u64) -> Layout {
        let log_offset = MIB;
        let bat_offset = log_offset + log_length;
        let bat_length = (geometry.entries * 8).div_ceil(MIB).max(1) * MIB;
        let metadata_offset = bat_offset + bat_length;
        Layout {
            log_offset,
            log_length,
            bat_offset,
            bat_length,
            metadata_offset,
            payload_offset: metadata_offset + MIB,
        }
    }
}

/// The metadata a new file of `size` bytes gets (`has_parent` for a
/// differencing file).
pub fn metadata(size: u64, block_size: u64, fixed: bool, has_parent: bool) -> Metadata {
    Metadata {
        block_size: block_size as u32,
        leave_blocks_allocated: fixed,
        has_parent,
        virtual_size: size,
        logical_sector_size: SECTOR_SIZE,
        physical_sector_size: SECTOR_SIZE,
        page_83_data: None,
        parent_locator: None,
    }
}

/// Writes `v` little-endian at `at` of `b` (which is long enough).
pub(crate) fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(dst) = at.checked_add(v.len()).and_then(|end| b.get_mut(at..end)) {
        dst.copy_from_slice(v);
    }
}

/// Stores the checksum of `b` (a structure with its checksum at byte 4).
pub(crate) fn seal(b: &mut [u8]) {
    put(b, CHECKSUM_AT, &[0; 4]);
    let c = checksum(b);
    put(b, CHECKSUM_AT, &c.to_le_bytes());
}

/// The file type identifier (64 KiB): signature and creator.
pub fn file_identifier() -> Vec<u8> {
    let mut b = vec![0u8; 64 << 10];
    put(&mut b, 0, b"vhdxfile");
    let creator: Vec<u8> = "vdisk"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    put(&mut b, 8, &creator);
    b
}

/// A header (4 KiB) with the given fields, checksummed.
pub fn header(
    sequence: u64,
    file_write: Guid,
    data_write: Guid,
    log: Guid,
    layout: &Layout,
) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    put(&mut b, 0, b"head");
    put(&mut b, 8, &sequence.to_le_bytes());
    put(&mut b, 16, &file_write.0);
    put(&mut b, 32, &data_write.0);
    put(&mut b, 48, &log.0);
    put(&mut b, 64, &0u16.to_le_bytes());
    put(&mut b, 66, &1u16.to_le_bytes());
    put(&mut b, 68, &(layout.log_length as u32).to_le_bytes());
    put(&mut b, 72, &layout.log_offset.to_le_bytes());
    seal(&mut b);
    b
}

/// A region table (64 KiB) naming the BAT and the metadata region.
pub fn region_table(layout: &Layout) -> Vec<u8> {
    let mut b = vec![0u8; 64 << 10];
    put(&mut b, 0, b"regi");
    put(&mut b, 8, &2u32.to_le_bytes());
    let entries = [
        (BAT_GUID, layout.bat_offset, layout.bat_length),
        (METADATA_GUID, layout.metadata_offset, MIB),
    ];
    for (i, (guid, offset, length)) in entries.iter().enumerate() {
        let e = 16 + 32 * i;
        put(&mut b, e, &guid.0);
        put(&mut b, e + 16, &offset.to_le_bytes());
        put(&mut b, e + 24, &(*length as u32).to_le_bytes());
        put(&mut b, e + 28, &1u32.to_le_bytes());
    }
    seal(&mut b);
    b
}

/// The bytes of a parent locator item holding `entries` (key, value),
/// strings in UTF-16LE after the key/value table.
pub fn locator_item(locator: &ParentLocator) -> Result<Vec<u8>> {
    let n = locator.entries.len();
    let mut b = vec![0u8; 20 + 12 * n];
    put(&mut b, 0, &items::VHDX_LOCATOR_TYPE.0);
    put(&mut b, 18, &(n as u16).to_le_bytes());
    for (i, (k, v)) in locator.entries.iter().enumerate() {
        let field = |s: &str, b: &mut Vec<u8>| -> Result<(u32, u16)> {
            let at = b.len();
            b.extend(s.encode_utf16().flat_map(|u| u.to_le_bytes()));
            let len = u16::try_from(b.len() - at)
                .map_err(|_| Error::invalid_input("vhdx parent locator string too long"))?;
            Ok((at as u32, len))
        };
        let (ko, kl) = field(k, &mut b)?;
        let (vo, vl) = field(v, &mut b)?;
        let e = 20 + 12 * i;
        put(&mut b, e, &ko.to_le_bytes());
        put(&mut b, e + 4, &vo.to_le_bytes());
        put(&mut b, e + 8, &kl.to_le_bytes());
        put(&mut b, e + 10, &vl.to_le_bytes());
    }
    if b.len() > MAX_LOCATOR {
        return Err(Error::invalid_input(format!(
            "vhdx parent locator of {} bytes (at most {MAX_LOCATOR})",
            b.len()
        )));
    }
    Ok(b)
}

/// The metadata region (1 MiB): its table and items; `page_83` is the
/// disk's identity, `locator` the parent locator of a differencing file.
pub fn metadata_region(m: &Metadata, page_83: Guid, locator: Option<&[u8]>) -> Vec<u8> {
    let mut b = vec![0u8; MIB as usize];
    put(&mut b, 0, b"metadata");
    let mut fp = [0u8; 8];
    put(&mut fp, 0, &m.block_size.to_le_bytes());
    let flags = u32::from(m.leave_blocks_allocated) | u32::from(m.has_parent) << 1;
    put(&mut fp, 4, &flags.to_le_bytes());
    let list: Vec<(Guid, Vec<u8>, u32)> = [
        (items::FILE_PARAMETERS, fp.to_vec(), IS_REQUIRED),
        (
            items::VIRTUAL_DISK_SIZE,
            m.virtual_size.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            items::PAGE_83_DATA,
            page_83.0.to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            items::LOGICAL_SECTOR_SIZE,
            m.logical_sector_size.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            items::PHYSICAL_SECTOR_SIZE,
            m.physical_sector_size.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
    ]
    .into_iter()
    .collect();
    let mut at = ITEMS_AT;
    let mut count = 0usize;
    for (guid, data, flags) in list {
        put_entry(&mut b, count, guid, at, data.len() as u32, flags);
        put(&mut b, at as usize, &data);
        at += data.len() as u32;
        count += 1;
    }
    if let Some(l) = locator {
        put_entry(
            &mut b,
            count,
            items::PARENT_LOCATOR,
            LOCATOR_AT,
            l.len() as u32,
            IS_REQUIRED,
        );
        put(&mut b, LOCATOR_AT as usize, l);
        count += 1;
    }
    put(&mut b, 10, &(count as u16).to_le_bytes());
    b
}

/// Writes metadata table entry `i`.
pub(crate) fn put_entry(b: &mut [u8], i: usize, guid: Guid, offset: u32, length: u32, flags: u32) {
    let e = 32 + 32 * i;
    put(b, e, &guid.0);
    put(b, e + 16, &offset.to_le_bytes());
    put(b, e + 20, &length.to_le_bytes());
    put(b, e + 24, &flags.to_le_bytes());
}

/// A new random GUID (version 4).
#[cfg(feature = "std")]
pub fn random_guid() -> Guid {
    use core::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let word = |salt: u64| {
        let mut h = state.build_hasher();
        h.write_u128(now);
        h.write_u64(n);
        h.write_u32(std::process::id());
        h.write_u64(salt);
        h.finish()
    };
    let (a, b) = (word(1), word(2));
    let mut g = [0u8; 16];
    put(&mut g, 0, &a.to_le_bytes());
    put(&mut g, 8, &b.to_le_bytes());
    // Version 4 (high nibble of the third field), RFC 4122 variant.
    if let Some(b) = g.get_mut(7) {
        *b = (*b & 0x0f) | 0x40;
    }
    if let Some(b) = g.get_mut(8) {
        *b = (*b & 0x3f) | 0x80;
    }
    Guid(g)
}
