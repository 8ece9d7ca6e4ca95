//! What a partition table should hold, independent of its bytes: built
//! from scratch, taken from a table read off a disk, or rescaled to a new
//! disk size. [`crate::write`] turns it into bytes.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use disk_io::{Error, Result};

use crate::Guid;
use crate::gpt::GptAttributes;
use crate::table::{PartitionTable, PartitionType, Table};

/// Default alignment of new partitions: 1 MiB, as fdisk and Windows align.
pub const DEFAULT_ALIGNMENT: u64 = 1 << 20;

/// Which table type a layout is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableType {
    /// MBR, with an extended partition for numbers 5 and up.
    Mbr,
    /// GPT behind a protective MBR.
    Gpt,
}

/// One partition of a layout, in sectors of the layout's sector size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Linux number: MBR 1-4 for primary slots (the extended partition is
    /// one of them), 5 and up for logical partitions in chain order; GPT
    /// entry index + 1.
    pub number: u32,
    /// First sector.
    pub first_lba: u64,
    /// Length in sectors (at least 1).
    pub sectors: u64,
    /// Type byte (MBR) or type GUID (GPT).
    pub kind: PartitionType,
    /// GPT name (at most 36 UTF-16 units); ignored for MBR.
    pub name: String,
    /// GPT unique partition GUID; ignored for MBR.
    pub guid: Guid,
    /// GPT attribute bits; ignored for MBR.
    pub attributes: GptAttributes,
    /// MBR boot flag; ignored for GPT.
    pub bootable: bool,
}

impl PartitionSpec {
    /// A partition with no name, zero GUID, no attributes, not bootable.
    pub fn new(number: u32, first_lba: u64, sectors: u64, kind: PartitionType) -> Self {
        PartitionSpec {
            number,
            first_lba,
            sectors,
            kind,
            name: String::new(),
            guid: Guid::ZERO,
            attributes: GptAttributes::empty(),
            bootable: false,
        }
    }

    /// One past the last sector.
    pub fn end_lba(&self) -> u64 {
        self.first_lba.saturating_add(self.sectors)
    }

    /// True for an MBR extended partition.
    pub fn is_extended(&self) -> bool {
        self.kind.is_extended()
    }

    /// True for an MBR logical partition.
    pub fn is_logical(&self) -> bool {
        self.number >= 5
    }
}

/// A whole table to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// MBR or GPT.
    pub table: TableType,
    /// Logical sector size, 512 or 4096.
    pub sector_size: u32,
    /// MBR disk signature (also written into a GPT's protective MBR).
    pub disk_signature: u32,
    /// GPT disk GUID.
    pub disk_guid: Guid,
    /// GPT entry count (128 unless a table said otherwise).
    pub gpt_entries: u32,
    /// Boot code of the MBR; zeros when `None`.
    pub boot_code: Option<Box<[u8; 440]>>,
    /// The partitions, by number.
    pub partitions: Vec<PartitionSpec>,
}

/// How [`Layout::rescale`] fits a layout to a new disk size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rescale {
    /// Every partition keeps its place and size; fails if one no longer fits.
    KeepSizes,
    /// Every partition keeps its place and size except the one that ends
    /// last, which grows or shrinks so that the free space after it stays
    /// what it was (its extended partition follows a logical one).
    ResizeLast,
    /// Starts and sizes scale with the disk, starts aligned.
    Proportional,
}

impl Layout {
    /// An empty layout.
    pub fn new(table: TableType, sector_size: u32) -> Self {
        Layout {
            table,
            sector_size,
            disk_signature: 0,
            disk_guid: Guid::ZERO,
            gpt_entries: 128,
            boot_code: None,
            partitions: Vec::new(),
        }
    }

    /// The layout of a table read from a disk: the same type, identifiers,
    /// boot code, partitions, names, GUIDs and attributes.
    pub fn from_table(t: &PartitionTable) -> Self {
        let ss = u64::from(t.sector_size);
        let mut layout = match &t.table {
            Table::Mbr(m) => {
                let mut l = Layout::new(TableType::Mbr, t.sector_size);
                l.disk_signature = m.disk_signature;
                l.boot_code = Some(m.boot_code.clone());
                l
            }
            Table::Gpt(g) => {
                let mut l = Layout::new(TableType::Gpt, t.sector_size);
                l.disk_guid = g.header.disk_guid;
                l.gpt_entries = g.header.num_entries;
                l
            }
        };
        layout.partitions = t
            .partitions
            .iter()
            .map(|p| PartitionSpec {
                number: p.number,
                first_lba: p.start / ss,
                sectors: p.size / ss,
                kind: p.kind,
                name: p.name.clone(),
                guid: p.guid.unwrap_or(Guid::ZERO),
                attributes: p.attributes.unwrap_or(GptAttributes::empty()),
                // GPT keeps its boot flag in the attributes.
                bootable: p.bootable && matches!(p.kind, PartitionType::Mbr(_)),
            })
            .collect();
        layout
    }

    /// The first sector partitions may use on a disk of `disk_sectors`.
    pub fn first_usable(&self) -> u64 {
        match self.table {
            TableType::Mbr => 1,
            TableType::Gpt => 2 + self.gpt_array_sectors(),
        }
    }

    /// One past the last sector partitions may use.
    pub fn usable_end(&self, disk_sectors: u64) -> u64 {
        match self.table {
            TableType::Mbr => disk_sectors.min(1 << 32),
            TableType::Gpt => disk_sectors.saturating_sub(1 + self.gpt_array_sectors()),
        }
    }

    /// Sectors one GPT entry array takes.
    pub fn gpt_array_sectors(&self) -> u64 {
        (u64::from(self.gpt_entries) * 128).div_ceil(u64::from(self.sector_size.max(1)))
    }

    /// Appends a partition of `bytes` (or the rest of the disk when `None`)
    /// at the next `alignment`-aligned sector after the last partition,
    /// numbered after the others (MBR: the next free primary slot).
    /// Returns its number.
    pub fn push(
        &mut self,
        disk_size: u64,
        bytes: Option<u64>,
        kind: PartitionType,
        alignment: u64,
    ) -> Result<u32> {
        let ss = u64::from(self.sector_size);
        let align = (alignment / ss).max(1);
        let after = self
            .partitions
            .iter()
            .filter(|p| !p.is_logical())
            .map(PartitionSpec::end_lba)
            .max()
            .unwrap_or(0)
            .max(self.first_usable());
        let first = after.div_ceil(align) * align;
        let end = self.usable_end(disk_size / ss);
        let sectors = match bytes {
            Some(b) => b.div_ceil(ss),
            None => end.saturating_sub(first),
        };
        if sectors == 0 || first.saturating_add(sectors) > end {
            return Err(Error::invalid_input(format!(
                "no room for a partition of {} sectors at sector {first} (usable space ends at {end})",
                sectors
            )));
        }
        let number = match self.table {
            TableType::Gpt => self.partitions.iter().map(|p| p.number).max().unwrap_or(0) + 1,
            TableType::Mbr => (1..=4)
                .find(|n| !self.partitions.iter().any(|p| p.number == *n))
                .ok_or_else(|| Error::invalid_input("all four MBR primary slots are in use"))?,
        };
        self.partitions
            .push(PartitionSpec::new(number, first, sectors, kind));
        Ok(number)
    }

    /// Fits the layout to a disk of `new_size` bytes (it was made for
    /// `old_size`). Fails, before anything is written, when the
    /// partitions cannot fit.
    pub fn rescale(&self, old_size: u64, new_size: u64, how: Rescale) -> Result<Layout> {
        let ss = u64::from(self.sector_size);
        let (old_end, new_end) = (
            self.usable_end(old_size / ss),
            self.usable_end(new_size / ss),
        );
        let mut out = self.clone();
        match how {
            Rescale::KeepSizes => {}
            Rescale::ResizeLast => {
                let tail = old_end.saturating_sub(
                    self.partitions
                        .iter()
                        .map(PartitionSpec::end_lba)
                        .max()
                        .unwrap_or(0),
                );
                let target_end = new_end.saturating_sub(tail);
                let Some(last) = out
                    .partitions
                    .iter()
                    .filter(|p| !p.is_extended())
                    .max_by_key(|p| p.end_lba())
                else {
                    return Ok(out);
                };
                let (last_number, old_last_end) = (last.number, last.end_lba());
                for p in out.partitions.iter_mut() {
                    // The last partition, and an extended partition that ends with it.
                    if p.number == last_number
                        || (p.is_extended() && p.end_lba() == old_last_end && last_number >= 5)
                    {
                        if target_end <= p.first_lba {
                            return Err(Error::invalid_input(format!(
                                "partition {} cannot shrink to fit a disk of {new_size} bytes",
                                p.number
                            )));
                        }
                        p.sectors = target_end - p.first_lba;
                    }
                }
            }
            Rescale::Proportional => {
                let align = (DEFAULT_ALIGNMENT / ss).max(1);
                let first_usable = self.first_usable();
                let scale = |lba: u64| -> u64 {
                    let span = old_end.saturating_sub(first_usable).max(1);
                    let rel = u128::from(lba.saturating_sub(first_usable))
                        * u128::from(new_end.saturating_sub(first_usable))
                        / u128::from(span);
                    first_usable + rel as u64
                };
                for p in out.partitions.iter_mut() {
                    let first = scale(p.first_lba).div_ceil(align) * align;
                    let end = (scale(p.end_lba()) / align * align).min(new_end);
                    // Keep a logical partition's first sector one past an
                    // aligned EBR position.
                    let first = if p.is_logical() { first + 1 } else { first };
                    if end <= first {
                        return Err(Error::invalid_input(format!(
                            "partition {} becomes empty when scaled to {new_size} bytes",
                            p.number
                        )));
                    }
                    p.first_lba = first;
                    p.sectors = end - first;
                }
            }
        }
        out.validate(new_size)?;
        Ok(out)
    }

    /// Checks the layout against a disk of `disk_size` bytes: sector size,
    /// numbering, bounds, overlaps, MBR limits and room for every EBR.
    pub fn validate(&self, disk_size: u64) -> Result<()> {
        if !matches!(self.sector_size, 512 | 4096) {
            return Err(Error::invalid_input(format!(
                "sector size {} (expected 512 or 4096)",
                self.sector_size
            )));
        }
        let ss = u64::from(self.sector_size);
        let sectors = disk_size / ss;
        let (first_usable, end) = (self.first_usable(), self.usable_end(sectors));
        let mut numbers: Vec<u32> = self.partitions.iter().map(|p| p.number).collect();
        numbers.sort_unstable();
        if numbers.windows(2).any(|w| matches!(w, [a, b] if a == b)) {
            return Err(Error::invalid_input("two partitions share a number"));
        }
        let bad = |p: &PartitionSpec, why: &str| {
            Err(Error::invalid_input(format!(
                "partition {}: {why}",
                p.number
            )))
        };
        for p in &self.partitions {
            if p.number == 0 || p.sectors == 0 {
                return bad(p, "number and size must not be 0");
            }
            if p.first_lba < first_usable || p.end_lba() > end {
                return Err(Error::invalid_input(format!(
                    "partition {}: sectors {}..{} outside the usable sectors {first_usable}..{end}",
                    p.number,
                    p.first_lba,
                    p.end_lba()
                )));
            }
            match (self.table, p.kind) {
                (TableType::Mbr, PartitionType::Mbr(0)) => {
                    return bad(p, "MBR type 0 marks an empty entry");
                }
                (TableType::Mbr, PartitionType::Mbr(_)) => {
                    if p.first_lba > u64::from(u32::MAX) || p.sectors > u64::from(u32::MAX) {
                        return bad(p, "beyond what an MBR can address (2^32 sectors)");
                    }
                    if p.number > 4 && p.is_extended() {
                        return bad(p, "a logical partition cannot be extended");
                    }
                }
                (TableType::Gpt, PartitionType::Gpt(g)) => {
                    if g.is_zero() {
                        return bad(p, "the zero type GUID marks an unused GPT entry");
                    }
                    if p.number > self.gpt_entries {
                        return bad(p, "number past the GPT entry count");
                    }
                    if p.name.encode_utf16().count() > 36 {
                        return bad(p, "GPT names hold at most 36 UTF-16 units");
                    }
                }
                _ => return bad(p, "type does not match the table type"),
            }
        }
        let top: Vec<&PartitionSpec> = self.partitions.iter().filter(|p| !p.is_logical()).collect();
        check_disjoint(&top)?;
        if self.table == TableType::Mbr {
            let extended: Vec<&&PartitionSpec> = top.iter().filter(|p| p.is_extended()).collect();
            let logical = self.logical();
            match (extended.as_slice(), logical.is_empty()) {
                ([], true) | ([_], _) => {}
                ([], false) => {
                    return Err(Error::invalid_input(
                        "logical partitions need an extended partition",
                    ));
                }
                _ => return Err(Error::invalid_input("more than one extended partition")),
            }
            if let [ext] = extended.as_slice() {
                crate::write::ebr_positions(ext, &logical)?;
            }
        }
        Ok(())
    }

    /// The logical partitions in chain (number) order.
    pub fn logical(&self) -> Vec<&PartitionSpec> {
        let mut l: Vec<&PartitionSpec> =
            self.partitions.iter().filter(|p| p.is_logical()).collect();
        l.sort_by_key(|p| p.number);
        l
    }
}

fn check_disjoint(parts: &[&PartitionSpec]) -> Result<()> {
    let mut sorted = parts.to_vec();
    sorted.sort_by_key(|p| p.first_lba);
    for pair in sorted.windows(2) {
        if let [a, b] = pair {
            if b.first_lba < a.end_lba() {
                return Err(Error::invalid_input(format!(
                    "partitions {} and {} overlap",
                    a.number, b.number
                )));
            }
        }
    }
    Ok(())
}
