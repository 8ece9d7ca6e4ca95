//! The GUID partition table (UEFI specification, chapter 5): a header in
//! LBA 1 and its backup in the last LBA, each pointing at an array of
//! partition entries, all protected by CRC-32.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use bitflags::bitflags;
use disk_io::crc::{crc32, crc32_parts};
use disk_io::{Error, ReadAt, Result};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::Guid;

/// `EFI PART`.
pub const SIGNATURE: [u8; 8] = *b"EFI PART";
/// Revision 1.0.
pub const REVISION_1_0: u32 = 0x0001_0000;
/// Size of the header fields defined by the specification.
pub const HEADER_SIZE: u32 = 92;
/// Size of the entry fields defined by the specification.
pub const MIN_ENTRY_SIZE: u32 = 128;
/// Largest entry array accepted, in bytes (the usual one is 16 KiB).
pub const MAX_ARRAY_BYTES: u64 = 16 << 20;

/// A GPT header as stored (the first 92 bytes of its sector).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawHeader {
    /// `EFI PART`.
    pub signature: [u8; 8],
    /// 0x00010000 for 1.0.
    pub revision: U32,
    /// Bytes covered by `header_crc32`.
    pub header_size: U32,
    /// CRC-32 of the header with this field zeroed.
    pub header_crc32: U32,
    /// Must be zero.
    pub reserved: U32,
    /// LBA of this header.
    pub my_lba: U64,
    /// LBA of the other header.
    pub alternate_lba: U64,
    /// First LBA a partition may use.
    pub first_usable_lba: U64,
    /// Last LBA a partition may use.
    pub last_usable_lba: U64,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// LBA of the entry array this header describes.
    pub entries_lba: U64,
    /// Number of entries in the array.
    pub num_entries: U32,
    /// Size of one entry (128 × 2^n).
    pub entry_size: U32,
    /// CRC-32 of the whole entry array.
    pub entries_crc32: U32,
}

/// A partition entry as stored (the first 128 bytes of each entry).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawEntry {
    /// Partition type; zero for an unused entry.
    pub type_guid: Guid,
    /// Unique partition GUID.
    pub unique_guid: Guid,
    /// First LBA.
    pub first_lba: U64,
    /// Last LBA, inclusive.
    pub last_lba: U64,
    /// Attribute bits.
    pub attributes: U64,
    /// Name, UTF-16LE, NUL-padded.
    pub name: [U16; 36],
}

bitflags! {
    /// GPT partition attribute bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct GptAttributes: u64 {
        /// Required for the platform to work.
        const REQUIRED_PARTITION = 1 << 0;
        /// Firmware must not produce a block I/O protocol for it.
        const NO_BLOCK_IO_PROTOCOL = 1 << 1;
        /// Legacy BIOS bootable.
        const LEGACY_BIOS_BOOTABLE = 1 << 2;
        /// Microsoft basic data: read-only.
        const READ_ONLY = 1 << 60;
        /// Microsoft basic data: shadow copy.
        const SHADOW_COPY = 1 << 61;
        /// Microsoft basic data: hidden.
        const HIDDEN = 1 << 62;
        /// Microsoft basic data: no drive letter.
        const NO_DRIVE_LETTER = 1 << 63;
        // Type-specific bits 48..63 and others are kept as they are.
        const _ = !0;
    }
}

/// The fields of a valid header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GptHeader {
    /// Revision.
    pub revision: u32,
    /// Bytes of the header covered by its CRC.
    pub header_size: u32,
    /// LBA of this header.
    pub my_lba: u64,
    /// LBA of the other copy.
    pub alternate_lba: u64,
    /// First usable LBA.
    pub first_usable_lba: u64,
    /// Last usable LBA.
    pub last_usable_lba: u64,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// LBA of the entry array.
    pub entries_lba: u64,
    /// Number of entries.
    pub num_entries: u32,
    /// Size of each entry.
    pub entry_size: u32,
    /// CRC-32 of the entry array.
    pub entries_crc32: u32,
}

/// A partition entry in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptPartition {
    /// Linux's number: entry index + 1.
    pub number: u32,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID.
    pub unique_guid: Guid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA, inclusive.
    pub last_lba: u64,
    /// Attributes.
    pub attributes: GptAttributes,
    /// Name (invalid UTF-16 decoded as U+FFFD).
    pub name: String,
}

impl GptPartition {
    /// Length in sectors.
    pub fn sectors(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }
}

/// A GPT read from a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpt {
    /// Logical sector size the table was found with.
    pub sector_size: u32,
    /// The header in use (the primary, unless it was damaged).
    pub header: GptHeader,
    /// Entries in use, by index.
    pub partitions: Vec<GptPartition>,
    /// True when the primary header and array are valid.
    pub primary_valid: bool,
    /// True when the backup header and array are valid.
    pub backup_valid: bool,
    /// What is damaged or inconsistent, one sentence each.
    pub warnings: Vec<String>,
}

/// Why one copy of the table is not usable.
enum Damage {
    /// No signature at all.
    Missing,
    /// Something is wrong; the message names it and the offset.
    Bad(Error),
}

impl Gpt {
    /// Reads the GPT of `disk` for logical sectors of `sector_size` bytes.
    ///
    /// `Ok(None)` when neither copy has a signature. When one copy is
    /// damaged the other is used and [`Gpt::warnings`] says what is wrong;
    /// when both are, the error names both.
    pub fn read<D: ReadAt + ?Sized>(disk: &D, sector_size: u32) -> Result<Option<Gpt>> {
        let ss = u64::from(sector_size);
        let sectors = disk.size() / ss;
        if sectors < 3 {
            return Ok(None);
        }
        let last = sectors - 1;
        let primary = read_copy(disk, sector_size, 1, last);
        // The backup lives in the last LBA; a valid primary says where.
        let backup_lba = match &primary {
            Ok((h, _)) if h.alternate_lba <= last && h.alternate_lba > 1 => h.alternate_lba,
            _ => last,
        };
        let backup = read_copy(disk, sector_size, backup_lba, last);
        let mut warnings = Vec::new();
        let (primary_valid, backup_valid) = (primary.is_ok(), backup.is_ok());
        let (header, partitions) = match (primary, backup) {
            (Ok(p), Ok(b)) => {
                if p.0.disk_guid != b.0.disk_guid || p.0.entries_crc32 != b.0.entries_crc32 {
                    warnings.push(format!(
                        "primary and backup GPT differ (disk GUID {} vs {}, entry array CRC {:#010x} vs {:#010x})",
                        p.0.disk_guid, b.0.disk_guid, p.0.entries_crc32, b.0.entries_crc32
                    ));
                }
                if b.0.my_lba != last {
                    warnings.push(format!(
                        "backup GPT header at LBA {} is not at the last LBA {last} (the disk has grown?)",
                        b.0.my_lba
                    ));
                }
                p
            }
            (Ok(p), Err(damage)) => {
                warnings.push(describe("backup", backup_lba, damage));
                p
            }
            (Err(damage), Ok(b)) => {
                warnings.push(format!(
                    "{}; using the backup at LBA {backup_lba}",
                    describe("primary", 1, damage)
                ));
                b
            }
            (Err(Damage::Missing), Err(Damage::Missing)) => return Ok(None),
            (Err(p), Err(b)) => {
                return Err(Error::corrupt(
                    format!(
                        "GPT: {}, and {}",
                        describe("primary", 1, p),
                        describe("backup", backup_lba, b)
                    ),
                    ss,
                ));
            }
        };
        Ok(Some(Gpt {
            sector_size,
            header,
            partitions,
            primary_valid,
            backup_valid,
            warnings,
        }))
    }
}

fn describe(which: &str, lba: u64, damage: Damage) -> String {
    match damage {
        Damage::Missing => format!("{which} GPT header at LBA {lba} is missing"),
        Damage::Bad(e) => match e.offset() {
            Some(offset) => format!("{which} GPT {} at offset {offset:#x}", e.message()),
            None => format!("{which} GPT: {e}"),
        },
    }
}

fn bad(what: String, offset: u64) -> Damage {
    Damage::Bad(Error::corrupt(what, offset))
}

/// Reads and checks the header at `lba` and its entry array.
fn read_copy<D: ReadAt + ?Sized>(
    disk: &D,
    sector_size: u32,
    lba: u64,
    last: u64,
) -> Result<(GptHeader, Vec<GptPartition>), Damage> {
    let ss = u64::from(sector_size);
    let at = lba * ss;
    let sector = disk_io::read_vec(disk, at, sector_size as usize).map_err(Damage::Bad)?;
    let raw = RawHeader::read_from_prefix(&sector)
        .map_err(|_| bad("header: sector shorter than a header".into(), at))?
        .0;
    if raw.signature != SIGNATURE {
        return Err(Damage::Missing);
    }
    let header_size = raw.header_size.get();
    if header_size < HEADER_SIZE || header_size > sector_size {
        return Err(bad(
            format!("header size {header_size} outside {HEADER_SIZE}..={sector_size}"),
            at + 12,
        ));
    }
    // CRC over header_size bytes with the CRC field taken as zero.
    let covered = sector.get(..header_size as usize).unwrap_or(&[]);
    let crc = crc32_parts(&[
        covered.get(..16).unwrap_or(&[]),
        &[0; 4],
        covered.get(20..).unwrap_or(&[]),
    ]);
    if crc != raw.header_crc32.get() {
        return Err(bad(
            format!(
                "header CRC-32 is {:#010x}, computed {crc:#010x}",
                raw.header_crc32.get()
            ),
            at + 16,
        ));
    }
    let h = GptHeader {
        revision: raw.revision.get(),
        header_size,
        my_lba: raw.my_lba.get(),
        alternate_lba: raw.alternate_lba.get(),
        first_usable_lba: raw.first_usable_lba.get(),
        last_usable_lba: raw.last_usable_lba.get(),
        disk_guid: raw.disk_guid,
        entries_lba: raw.entries_lba.get(),
        num_entries: raw.num_entries.get(),
        entry_size: raw.entry_size.get(),
        entries_crc32: raw.entries_crc32.get(),
    };
    if h.revision >> 16 != 1 {
        return Err(bad(
            format!("header revision {:#010x} is not 1.x", h.revision),
            at + 8,
        ));
    }
    if h.my_lba != lba {
        return Err(bad(
            format!("header says it is at LBA {}, found at LBA {lba}", h.my_lba),
            at + 24,
        ));
    }
    if h.first_usable_lba > h.last_usable_lba || h.last_usable_lba >= last || h.first_usable_lba < 2
    {
        return Err(bad(
            format!(
                "usable LBAs {}..={} do not fit a disk whose last LBA is {last}",
                h.first_usable_lba, h.last_usable_lba
            ),
            at + 40,
        ));
    }
    let entry_size = h.entry_size;
    if entry_size < MIN_ENTRY_SIZE
        || !(entry_size / MIN_ENTRY_SIZE).is_power_of_two()
        || !entry_size.is_multiple_of(MIN_ENTRY_SIZE)
    {
        return Err(bad(
            format!("entry size {entry_size} is not 128 × 2^n"),
            at + 84,
        ));
    }
    let array_bytes = u64::from(h.num_entries) * u64::from(entry_size);
    if array_bytes > MAX_ARRAY_BYTES {
        return Err(bad(
            format!(
                "entry array of {} × {entry_size} bytes exceeds {MAX_ARRAY_BYTES}",
                h.num_entries
            ),
            at + 80,
        ));
    }
    let array_sectors = array_bytes.div_ceil(ss);
    let array_end = h.entries_lba.saturating_add(array_sectors);
    // The array sits outside the usable area: before it (primary) or after it (backup).
    let outside = array_end <= h.first_usable_lba || h.entries_lba > h.last_usable_lba;
    if h.entries_lba < 2 || array_end > last + 1 || !outside {
        return Err(bad(
            format!(
                "entry array at LBAs {}..{array_end} overlaps the header or the usable area, or leaves the disk",
                h.entries_lba
            ),
            at + 72,
        ));
    }
    let array =
        disk_io::read_vec(disk, h.entries_lba * ss, array_bytes as usize).map_err(Damage::Bad)?;
    let crc = crc32(&array);
    if crc != h.entries_crc32 {
        return Err(bad(
            format!(
                "entry array CRC-32 is {:#010x}, computed {crc:#010x}",
                h.entries_crc32
            ),
            h.entries_lba * ss,
        ));
    }
    let mut parts = Vec::new();
    for (i, bytes) in array.chunks_exact(entry_size as usize).enumerate() {
        let Ok((e, _)) = RawEntry::read_from_prefix(bytes) else {
            continue;
        };
        if e.type_guid.is_zero() {
            continue;
        }
        let entry_at = h.entries_lba * ss + i as u64 * u64::from(entry_size);
        let (first, last_lba) = (e.first_lba.get(), e.last_lba.get());
        if first > last_lba || first < h.first_usable_lba || last_lba > h.last_usable_lba {
            return Err(bad(
                format!(
                    "entry {} (LBAs {first}..={last_lba}) lies outside the usable LBAs {}..={}",
                    i + 1,
                    h.first_usable_lba,
                    h.last_usable_lba
                ),
                entry_at + 32,
            ));
        }
        let units: Vec<u16> = e
            .name
            .iter()
            .map(|u| u.get())
            .take_while(|&u| u != 0)
            .collect();
        parts.push(GptPartition {
            number: i as u32 + 1,
            type_guid: e.type_guid,
            unique_guid: e.unique_guid,
            first_lba: first,
            last_lba,
            attributes: GptAttributes::from_bits_retain(e.attributes.get()),
            name: char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect(),
        });
    }
    check_overlaps(&parts, h.entries_lba * ss, entry_size)?;
    Ok((h, parts))
}

fn check_overlaps(parts: &[GptPartition], array_at: u64, entry_size: u32) -> Result<(), Damage> {
    let mut sorted: Vec<&GptPartition> = parts.iter().collect();
    sorted.sort_by_key(|p| p.first_lba);
    for pair in sorted.windows(2) {
        if let [a, b] = pair {
            if b.first_lba <= a.last_lba {
                return Err(bad(
                    format!(
                        "entries {} (LBAs {}..={}) and {} (LBAs {}..={}) overlap",
                        a.number, a.first_lba, a.last_lba, b.number, b.first_lba, b.last_lba
                    ),
                    array_at + u64::from(b.number - 1) * u64::from(entry_size),
                ));
            }
        }
    }
    Ok(())
}
