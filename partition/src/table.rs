//! One view over either table type: partitions numbered as Linux numbers
//! them, positions in bytes.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use disk_io::{ReadAt, Result};

use crate::gpt::{Gpt, GptAttributes};
use crate::mbr::{Mbr, RawMbr};
use crate::{Guid, gpt_type_name, mbr_type_name};

/// A partition type: an MBR type byte or a GPT type GUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartitionType {
    /// MBR type byte.
    Mbr(u8),
    /// GPT type GUID.
    Gpt(Guid),
}

impl PartitionType {
    /// True for an MBR extended partition (types 0x05, 0x0f, 0x85), which
    /// holds EBRs rather than a file system.
    pub fn is_extended(&self) -> bool {
        matches!(self, PartitionType::Mbr(k) if crate::mbr::EXTENDED_TYPES.contains(k))
    }

    /// A human name for common types.
    pub fn name(&self) -> Option<&'static str> {
        match self {
            PartitionType::Mbr(b) => mbr_type_name(*b),
            PartitionType::Gpt(g) => gpt_type_name(g),
        }
    }
}

impl fmt::Display for PartitionType {
    /// `0x83` or `0FC63DAF-8483-4772-8E79-3D69D8477DE4`, as `vdisk info` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionType::Mbr(b) => write!(f, "{b:#04x}"),
            PartitionType::Gpt(g) => write!(f, "{g}"),
        }
    }
}

/// One partition, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Number as Linux numbers it (MBR: 1-4 primary, 5+ logical in chain
    /// order; GPT: entry index + 1).
    pub number: u32,
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// Type.
    pub kind: PartitionType,
    /// GPT name (empty for MBR).
    pub name: String,
    /// MBR boot flag, or GPT's legacy-BIOS-bootable attribute.
    pub bootable: bool,
    /// GPT unique partition GUID.
    pub guid: Option<Guid>,
    /// GPT attributes.
    pub attributes: Option<GptAttributes>,
}

/// Which kind of table, with its disk identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Table {
    /// An MBR (also a hybrid one that has no valid GPT behind it).
    Mbr(Mbr),
    /// A GPT (the MBR in front of it is protective or hybrid).
    Gpt(Gpt),
}

/// The partition table of a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionTable {
    /// Logical sector size the table uses.
    pub sector_size: u32,
    /// The table as parsed.
    pub table: Table,
    /// Every partition, by number.
    pub partitions: Vec<Partition>,
}

impl PartitionTable {
    /// `mbr` or `gpt`.
    pub fn kind_name(&self) -> &'static str {
        match self.table {
            Table::Mbr(_) => "mbr",
            Table::Gpt(_) => "gpt",
        }
    }

    /// What is damaged but was worked around (e.g. a GPT read from its backup).
    pub fn warnings(&self) -> &[String] {
        match &self.table {
            Table::Mbr(_) => &[],
            Table::Gpt(g) => &g.warnings,
        }
    }

    /// The partition Linux would number `number`.
    pub fn partition(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }
}

/// Reads the partition table of `disk`, if it has one.
///
/// A GPT is looked for with 512- and 4096-byte logical sectors (in LBA 1,
/// or in the last LBA when the primary is damaged); a protective or hybrid
/// MBR defers to it. Otherwise an MBR with its logical partitions is read.
/// Broken tables (entries past the end of the disk, overlaps, EBR loops,
/// both GPT copies damaged) are errors naming the table and the offset.
///
/// ```
/// use disk_io::MemDisk;
/// assert!(partition::read(&MemDisk::new(1 << 20)).unwrap().is_none());
/// ```
pub fn read<D: ReadAt + ?Sized>(disk: &D) -> Result<Option<PartitionTable>> {
    let mut sector0 = [0u8; 512];
    let mbr = if disk.size() >= 512 {
        disk.read_at(0, &mut sector0)?;
        RawMbr::parse(&sector0)
    } else {
        None
    };
    // With a protective MBR a GPT must be there; without any MBR, a GPT
    // may still be (its protective MBR wiped).
    if mbr.as_ref().is_none_or(RawMbr::is_protective) {
        for sector_size in [512, 4096] {
            if let Some(gpt) = Gpt::read(disk, sector_size)? {
                return Ok(Some(from_gpt(gpt)));
            }
        }
        if mbr.as_ref().is_some_and(RawMbr::is_protective) {
            // Linux declines such an MBR too: its entries describe a GPT
            // disk (a protective or hybrid MBR), not partitions of their own.
            return Err(disk_io::Error::corrupt(
                "protective MBR (type 0xee) but no GPT header in LBA 1 or the last LBA",
                446,
            ));
        }
    }
    match Mbr::read(disk, 512)? {
        Some(mbr) => Ok(Some(from_mbr(mbr))),
        None => Ok(None),
    }
}

fn from_mbr(mbr: Mbr) -> PartitionTable {
    let partitions = mbr
        .partitions()
        .map(|p| Partition {
            number: p.number,
            start: p.first_lba * 512,
            size: p.sectors * 512,
            kind: PartitionType::Mbr(p.kind),
            name: String::new(),
            bootable: p.bootable,
            guid: None,
            attributes: None,
        })
        .collect();
    PartitionTable {
        sector_size: 512,
        table: Table::Mbr(mbr),
        partitions,
    }
}

fn from_gpt(gpt: Gpt) -> PartitionTable {
    let ss = u64::from(gpt.sector_size);
    let partitions = gpt
        .partitions
        .iter()
        .map(|p| Partition {
            number: p.number,
            start: p.first_lba * ss,
            size: p.sectors() * ss,
            kind: PartitionType::Gpt(p.type_guid),
            name: p.name.clone(),
            bootable: p.attributes.contains(GptAttributes::LEGACY_BIOS_BOOTABLE),
            guid: Some(p.unique_guid),
            attributes: Some(p.attributes),
        })
        .collect();
    PartitionTable {
        sector_size: gpt.sector_size,
        table: Table::Gpt(gpt),
        partitions,
    }
}
