//! The master boot record and the chain of extended boot records that
//! holds logical partitions.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use disk_io::{Error, ReadAt, Result};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Byte offset of the partition entries in an MBR or EBR sector.
pub const ENTRIES_OFFSET: u64 = 446;
/// Partition types that open an extended partition (CHS, LBA, Linux).
pub const EXTENDED_TYPES: [u8; 3] = [0x05, 0x0f, 0x85];
/// The type of a GPT protective partition.
pub const PROTECTIVE_TYPE: u8 = 0xee;
/// Most logical partitions followed in one EBR chain.
pub const MAX_LOGICAL: usize = 1024;

/// One 16-byte partition entry as stored.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawEntry {
    /// 0x80 bootable, 0x00 not.
    pub status: u8,
    /// CHS address of the first sector.
    pub chs_first: [u8; 3],
    /// Partition type.
    pub kind: u8,
    /// CHS address of the last sector.
    pub chs_last: [u8; 3],
    /// First sector (for EBR entries: relative, see [`Mbr::read`]).
    pub first_lba: U32,
    /// Number of sectors.
    pub sectors: U32,
}

/// A whole MBR or EBR sector as stored.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawMbr {
    /// Boot code (preserved on write).
    pub boot_code: [u8; 440],
    /// Disk signature (Windows' disk identifier).
    pub disk_signature: U32,
    /// Usually zero; 0x5a5a marks a copy-protected disk.
    pub reserved: U16,
    /// The four entries.
    pub entries: [RawEntry; 4],
    /// 0x55 0xaa.
    pub signature: [u8; 2],
}

/// A partition entry in use, with absolute sector numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MbrPartition {
    /// Linux's number: 1-4 for the primary slots, 5 and up for logical
    /// partitions in chain order.
    pub number: u32,
    /// Boot flag.
    pub bootable: bool,
    /// Partition type byte.
    pub kind: u8,
    /// First sector, absolute.
    pub first_lba: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// Byte offset of the entry that describes it (for error messages and repair).
    pub entry_offset: u64,
}

impl MbrPartition {
    /// One past the last sector.
    pub fn end_lba(&self) -> u64 {
        self.first_lba + self.sectors
    }

    /// True for an extended partition (the container of logical ones).
    pub fn is_extended(&self) -> bool {
        EXTENDED_TYPES.contains(&self.kind)
    }
}

/// A parsed MBR with its logical partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mbr {
    /// Boot code, kept so that a rewrite preserves it.
    pub boot_code: alloc::boxed::Box<[u8; 440]>,
    /// Disk signature.
    pub disk_signature: u32,
    /// Primary entries in use, by slot.
    pub primary: Vec<MbrPartition>,
    /// Logical partitions in chain order.
    pub logical: Vec<MbrPartition>,
}

impl RawMbr {
    /// Views a 512-byte sector as an MBR, when it carries the boot signature
    /// and four well-formed entries (boot indicator 0x00 or 0x80) and does
    /// not name a file system (FAT, NTFS and exFAT boot sectors also end in
    /// `55 aa`).
    pub fn parse(sector: &[u8]) -> Option<RawMbr> {
        let mbr = RawMbr::read_from_prefix(sector).ok()?.0;
        let oem = sector.get(3..11);
        let names_fs = oem == Some(b"NTFS    ")
            || oem == Some(b"EXFAT   ")
            || sector.get(0x36..0x39) == Some(b"FAT")
            || sector.get(0x52..0x57) == Some(b"FAT32");
        let entries_ok = mbr.entries.iter().all(|e| e.status & 0x7f == 0);
        (mbr.signature == [0x55, 0xaa] && entries_ok && !names_fs).then_some(mbr)
    }

    /// True when one entry is a GPT protective partition (protective or
    /// hybrid MBR).
    pub fn is_protective(&self) -> bool {
        self.entries.iter().any(|e| e.kind == PROTECTIVE_TYPE)
    }
}

fn corrupt(what: alloc::string::String, offset: u64) -> Error {
    Error::corrupt(what, offset)
}

impl Mbr {
    /// Reads the MBR at sector 0 of `disk` and follows the EBR chain of its
    /// extended partition. `Ok(None)` when sector 0 is not an MBR.
    ///
    /// Entries that reach past the end of the disk, overlap each other, or
    /// (for logical partitions) leave their extended partition, and EBR
    /// chains that loop, are errors naming the entry and its offset.
    pub fn read<D: ReadAt + ?Sized>(disk: &D, sector_size: u32) -> Result<Option<Mbr>> {
        let ss = u64::from(sector_size);
        if disk.size() < ss {
            return Ok(None);
        }
        let sector = disk_io::read_vec(disk, 0, sector_size as usize)?;
        let Some(raw) = RawMbr::parse(&sector) else {
            return Ok(None);
        };
        let disk_sectors = disk.size() / ss;
        let mut primary = Vec::new();
        for (slot, e) in raw.entries.iter().enumerate() {
            if e.kind == 0 || e.sectors.get() == 0 {
                continue;
            }
            let mut p = MbrPartition {
                number: slot as u32 + 1,
                bootable: e.status == 0x80,
                kind: e.kind,
                first_lba: u64::from(e.first_lba.get()),
                sectors: u64::from(e.sectors.get()),
                entry_offset: ENTRIES_OFFSET + 16 * slot as u64,
            };
            // A protective entry may claim more than the disk (0xffffffff
            // sectors on large disks): it covers the rest of the disk.
            if e.kind == PROTECTIVE_TYPE && p.first_lba < disk_sectors {
                p.sectors = p.sectors.min(disk_sectors - p.first_lba);
            }
            check_bounds("MBR", &p, 1, disk_sectors)?;
            primary.push(p);
        }
        check_overlaps("MBR", &primary)?;
        let mut logical = Vec::new();
        let mut extended = primary.iter().filter(|p| p.is_extended());
        if let Some(ext) = extended.next() {
            if let Some(second) = extended.next() {
                return Err(Error::unsupported(alloc::format!(
                    "MBR with two extended partitions (entries {} and {})",
                    ext.number,
                    second.number
                ))
                .at(second.entry_offset));
            }
            logical = read_ebr_chain(disk, ss, ext)?;
            check_overlaps("EBR chain", &logical)?;
        }
        Ok(Some(Mbr {
            boot_code: alloc::boxed::Box::new(raw.boot_code),
            disk_signature: raw.disk_signature.get(),
            primary,
            logical,
        }))
    }

    /// Every partition, primaries then logicals.
    pub fn partitions(&self) -> impl Iterator<Item = &MbrPartition> {
        self.primary.iter().chain(self.logical.iter())
    }
}

fn check_bounds(table: &str, p: &MbrPartition, first_allowed: u64, end_allowed: u64) -> Result<()> {
    if p.first_lba < first_allowed || p.end_lba() > end_allowed {
        return Err(corrupt(
            alloc::format!(
                "{table} partition {} (sectors {}..{}) lies outside sectors {first_allowed}..{end_allowed}{}",
                p.number,
                p.first_lba,
                p.end_lba(),
                if p.end_lba() > end_allowed {
                    ", past the end of its container"
                } else {
                    ""
                }
            ),
            p.entry_offset,
        ));
    }
    Ok(())
}

fn check_overlaps(table: &str, parts: &[MbrPartition]) -> Result<()> {
    let mut sorted: Vec<&MbrPartition> = parts.iter().collect();
    sorted.sort_by_key(|p| p.first_lba);
    for pair in sorted.windows(2) {
        if let [a, b] = pair {
            if b.first_lba < a.end_lba() {
                return Err(corrupt(
                    alloc::format!(
                        "{table} partitions {} (sectors {}..{}) and {} (sectors {}..{}) overlap",
                        a.number,
                        a.first_lba,
                        a.end_lba(),
                        b.number,
                        b.first_lba,
                        b.end_lba()
                    ),
                    b.entry_offset,
                ));
            }
        }
    }
    Ok(())
}

/// Follows the EBRs of extended partition `ext`: each EBR's first entry is
/// a logical partition relative to that EBR, its second the link to the next
/// EBR relative to the start of the extended partition.
fn read_ebr_chain<D: ReadAt + ?Sized>(
    disk: &D,
    ss: u64,
    ext: &MbrPartition,
) -> Result<Vec<MbrPartition>> {
    let mut logical = Vec::new();
    let mut seen = BTreeSet::new();
    let mut ebr_lba = ext.first_lba;
    let mut link_offset = ext.entry_offset;
    let mut sector = alloc::vec![0u8; ss as usize];
    loop {
        if !seen.insert(ebr_lba) {
            return Err(corrupt(
                alloc::format!("EBR chain loops back to the EBR at sector {ebr_lba}"),
                link_offset,
            ));
        }
        if seen.len() > MAX_LOGICAL {
            return Err(corrupt(
                alloc::format!("EBR chain longer than {MAX_LOGICAL} links"),
                link_offset,
            ));
        }
        let at = ebr_lba * ss;
        disk.read_at(at, &mut sector)?;
        let raw = RawMbr::read_from_prefix(&sector)
            .map_err(|_| corrupt("EBR sector too short".into(), at))?
            .0;
        if raw.signature != [0x55, 0xaa] {
            return Err(corrupt(
                alloc::format!("EBR at sector {ebr_lba}: no 55 aa boot signature"),
                at + 510,
            ));
        }
        let [data, link, ..] = raw.entries;
        if data.kind != 0 && data.sectors.get() != 0 && !EXTENDED_TYPES.contains(&data.kind) {
            let p = MbrPartition {
                number: 5 + logical.len() as u32,
                bootable: data.status == 0x80,
                kind: data.kind,
                first_lba: ebr_lba + u64::from(data.first_lba.get()),
                sectors: u64::from(data.sectors.get()),
                entry_offset: at + ENTRIES_OFFSET,
            };
            // Inside the extended partition, after its own EBR.
            check_bounds("EBR", &p, ebr_lba + 1, ext.end_lba())?;
            logical.push(p);
        }
        if link.kind == 0 || link.sectors.get() == 0 {
            return Ok(logical);
        }
        if !EXTENDED_TYPES.contains(&link.kind) {
            return Err(corrupt(
                alloc::format!(
                    "EBR at sector {ebr_lba}: link entry has type {:#04x}, not extended",
                    link.kind
                ),
                at + ENTRIES_OFFSET + 16,
            ));
        }
        let next = ext.first_lba + u64::from(link.first_lba.get());
        if next < ext.first_lba || next >= ext.end_lba() {
            return Err(corrupt(
                alloc::format!(
                    "EBR at sector {ebr_lba}: next EBR at sector {next} lies outside the extended partition (sectors {}..{})",
                    ext.first_lba,
                    ext.end_lba()
                ),
                at + ENTRIES_OFFSET + 16,
            ));
        }
        link_offset = at + ENTRIES_OFFSET + 16;
        ebr_lba = next;
    }
}
