//! Writing tables: an MBR with its EBR chain, or a protective MBR with both
//! copies of a GPT; and repairing a GPT from its surviving copy.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::crc::crc32;
use disk_io::{Error, Result, WriteAt};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromZeros, IntoBytes};

use crate::gpt::{self, Gpt, GptHeader, RawHeader};
use crate::layout::{DEFAULT_ALIGNMENT, Layout, PartitionSpec, TableType};
use crate::mbr::{PROTECTIVE_TYPE, RawEntry, RawMbr};
use crate::table::PartitionType;

/// Heads and sectors per track of the geometry fdisk assumes for disks
/// that report none.
const HEADS: u64 = 255;
const SECTORS: u64 = 63;

/// The CHS bytes (head, sector with cylinder bits 8-9, cylinder bits 0-7)
/// of `lba`, as fdisk computes them: geometry 255/63, and addresses past
/// cylinder 1023 clamped to (1023, 254, 63), i.e. `fe ff ff`.
///
/// ```
/// assert_eq!(partition::write::chs(0), [0x00, 0x01, 0x00]);
/// assert_eq!(partition::write::chs(2048), [0x20, 0x21, 0x00]);
/// assert_eq!(partition::write::chs(1 << 30), [0xfe, 0xff, 0xff]);
/// ```
pub fn chs(lba: u64) -> [u8; 3] {
    let lba = lba.min(HEADS * SECTORS * 1024 - 1);
    let cylinder = lba / (HEADS * SECTORS);
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    [
        head as u8,
        (sector as u8) | (((cylinder >> 2) & 0xc0) as u8),
        cylinder as u8,
    ]
}

fn mbr_entry(bootable: bool, kind: u8, first: u64, sectors: u64) -> RawEntry {
    RawEntry {
        status: if bootable { 0x80 } else { 0 },
        chs_first: chs(first),
        kind,
        chs_last: chs(first + sectors.max(1) - 1),
        first_lba: U32::new(first as u32),
        sectors: U32::new(sectors.min(u64::from(u32::MAX)) as u32),
    }
}

/// Where the EBR of each logical partition goes: the first at the start of
/// the extended partition, each next one at the first aligned sector after
/// the previous logical partition if that leaves room, else in the sector
/// just before its partition. Fails when a logical partition leaves the
/// extended one or has no free sector before it.
pub(crate) fn ebr_positions(ext: &PartitionSpec, logical: &[&PartitionSpec]) -> Result<Vec<u64>> {
    let align = DEFAULT_ALIGNMENT / 512;
    let mut lower = ext.first_lba;
    let mut positions = Vec::with_capacity(logical.len());
    for (i, l) in logical.iter().enumerate() {
        if l.first_lba < ext.first_lba || l.end_lba() > ext.end_lba() {
            return Err(Error::invalid_input(format!(
                "logical partition {} lies outside extended partition {}",
                l.number, ext.number
            )));
        }
        let ebr = if i == 0 {
            ext.first_lba
        } else {
            let aligned = lower.div_ceil(align) * align;
            if aligned < l.first_lba {
                aligned
            } else {
                l.first_lba.saturating_sub(1)
            }
        };
        if ebr < lower || ebr >= l.first_lba {
            return Err(Error::invalid_input(format!(
                "logical partition {}: no free sector before it for its EBR (logical partitions go in ascending order)",
                l.number
            )));
        }
        positions.push(ebr);
        lower = l.end_lba();
    }
    Ok(positions)
}

/// Writes `layout` to `disk`: the MBR and EBRs, or the protective MBR and
/// both GPT copies. Checks the layout first; nothing is written if it does
/// not fit.
///
/// ```
/// use disk_io::MemDisk;
/// use partition::{Layout, PartitionType, TableType, DEFAULT_ALIGNMENT};
/// let disk = MemDisk::new(16 << 20);
/// let mut layout = Layout::new(TableType::Mbr, 512);
/// layout.push(16 << 20, Some(4 << 20), PartitionType::Mbr(0x83), DEFAULT_ALIGNMENT)?;
/// layout.push(16 << 20, None, PartitionType::Mbr(0x07), DEFAULT_ALIGNMENT)?;
/// partition::write::write(&disk, &layout)?;
/// let table = partition::read(&disk)?.unwrap();
/// assert_eq!(Layout::from_table(&table).partitions, layout.partitions);
/// # Ok::<(), disk_io::Error>(())
/// ```
pub fn write<D: WriteAt + ?Sized>(disk: &D, layout: &Layout) -> Result<()> {
    layout.validate(disk.size())?;
    match layout.table {
        TableType::Mbr => write_mbr(disk, layout),
        TableType::Gpt => write_gpt(disk, layout),
    }
}

fn write_mbr<D: WriteAt + ?Sized>(disk: &D, layout: &Layout) -> Result<()> {
    if layout.sector_size != 512 {
        return Err(Error::unsupported("MBR tables with 4096-byte sectors"));
    }
    let mut mbr = RawMbr::new_zeroed();
    if let Some(code) = &layout.boot_code {
        mbr.boot_code = **code;
    }
    mbr.disk_signature = U32::new(layout.disk_signature);
    mbr.signature = [0x55, 0xaa];
    let mut extended = None;
    for p in layout.partitions.iter().filter(|p| !p.is_logical()) {
        let PartitionType::Mbr(kind) = p.kind else {
            continue;
        };
        let slot = mbr.entries.get_mut(p.number as usize - 1).ok_or_else(|| {
            Error::invalid_input(format!(
                "MBR partition number {} is not a slot 1-4",
                p.number
            ))
        })?;
        *slot = mbr_entry(p.bootable, kind, p.first_lba, p.sectors);
        if p.is_extended() {
            extended = Some(p);
        }
    }
    wipe_gpt_signatures(disk, 512)?;
    if let Some(ext) = extended {
        let logical = layout.logical();
        let positions = ebr_positions(ext, &logical)?;
        if logical.is_empty() {
            let mut ebr = RawMbr::new_zeroed();
            ebr.signature = [0x55, 0xaa];
            disk.write_at(ext.first_lba * 512, ebr.as_bytes())?;
        }
        for (i, (l, &at)) in logical.iter().zip(&positions).enumerate() {
            let PartitionType::Mbr(kind) = l.kind else {
                continue;
            };
            let mut ebr = RawMbr::new_zeroed();
            ebr.signature = [0x55, 0xaa];
            let mut data = mbr_entry(l.bootable, kind, l.first_lba, l.sectors);
            data.first_lba = U32::new((l.first_lba - at) as u32);
            ebr.entries[0] = data;
            if let (Some(next), Some(&next_at)) = (logical.get(i + 1), positions.get(i + 1)) {
                let mut link = mbr_entry(false, 0x05, next_at, next.end_lba() - next_at);
                link.first_lba = U32::new((next_at - ext.first_lba) as u32);
                ebr.entries[1] = link;
            }
            disk.write_at(at * 512, ebr.as_bytes())?;
        }
    }
    disk.write_at(0, mbr.as_bytes())
}

/// Clears stale GPT headers so that no tool mistakes an MBR disk for GPT.
fn wipe_gpt_signatures<D: WriteAt + ?Sized>(disk: &D, ss: u64) -> Result<()> {
    let sectors = disk.size() / ss;
    for lba in [1, sectors.saturating_sub(1)] {
        if lba == 0 || lba >= sectors {
            continue;
        }
        let mut sig = [0u8; 8];
        disk.read_at(lba * ss, &mut sig)?;
        if sig == gpt::SIGNATURE {
            disk.write_zeroes(lba * ss, ss)?;
        }
    }
    Ok(())
}

fn write_gpt<D: WriteAt + ?Sized>(disk: &D, layout: &Layout) -> Result<()> {
    let ss = u64::from(layout.sector_size);
    let last = disk.size() / ss - 1;
    let array_sectors = layout.gpt_array_sectors();
    let mut array = vec![0u8; (array_sectors * ss) as usize];
    for p in &layout.partitions {
        let PartitionType::Gpt(type_guid) = p.kind else {
            continue;
        };
        let mut e = gpt::RawEntry::new_zeroed();
        e.type_guid = type_guid;
        e.unique_guid = p.guid;
        e.first_lba = U64::new(p.first_lba);
        e.last_lba = U64::new(p.end_lba() - 1);
        e.attributes = U64::new(p.attributes.bits());
        for (slot, unit) in e.name.iter_mut().zip(p.name.encode_utf16()) {
            *slot = U16::new(unit);
        }
        let at = (p.number as usize - 1) * 128;
        if let Some(dst) = array.get_mut(at..at + 128) {
            dst.copy_from_slice(e.as_bytes());
        }
    }
    let used = u64::from(layout.gpt_entries) as usize * 128;
    let entries_crc32 = crc32(array.get(..used).unwrap_or(&[]));
    let header = GptHeader {
        revision: gpt::REVISION_1_0,
        header_size: gpt::HEADER_SIZE,
        my_lba: 1,
        alternate_lba: last,
        first_usable_lba: layout.first_usable(),
        last_usable_lba: layout.usable_end(last + 1) - 1,
        disk_guid: layout.disk_guid,
        entries_lba: 2,
        num_entries: layout.gpt_entries,
        entry_size: 128,
        entries_crc32,
    };
    write_gpt_copies(disk, layout.sector_size, &header, &array, true, true)?;
    write_protective_mbr(disk, layout, last)
}

fn write_protective_mbr<D: WriteAt + ?Sized>(disk: &D, layout: &Layout, last: u64) -> Result<()> {
    let mut mbr = RawMbr::new_zeroed();
    if let Some(code) = &layout.boot_code {
        mbr.boot_code = **code;
    }
    mbr.disk_signature = U32::new(layout.disk_signature);
    mbr.signature = [0x55, 0xaa];
    mbr.entries[0] = mbr_entry(false, PROTECTIVE_TYPE, 1, last.min(u64::from(u32::MAX)));
    disk.write_at(0, mbr.as_bytes())
}

/// The header sector of `h` with its CRC.
fn header_sector(h: &GptHeader, sector_size: u32) -> Vec<u8> {
    let mut raw = RawHeader::new_zeroed();
    raw.signature = gpt::SIGNATURE;
    raw.revision = U32::new(h.revision);
    raw.header_size = U32::new(gpt::HEADER_SIZE);
    raw.my_lba = U64::new(h.my_lba);
    raw.alternate_lba = U64::new(h.alternate_lba);
    raw.first_usable_lba = U64::new(h.first_usable_lba);
    raw.last_usable_lba = U64::new(h.last_usable_lba);
    raw.disk_guid = h.disk_guid;
    raw.entries_lba = U64::new(h.entries_lba);
    raw.num_entries = U32::new(h.num_entries);
    raw.entry_size = U32::new(h.entry_size);
    raw.entries_crc32 = U32::new(h.entries_crc32);
    raw.header_crc32 = U32::new(crc32(raw.as_bytes()));
    let mut sector = vec![0u8; sector_size as usize];
    if let Some(dst) = sector.get_mut(..raw.as_bytes().len()) {
        dst.copy_from_slice(raw.as_bytes());
    }
    sector
}

/// Writes the primary (LBA 1, array at `h.entries_lba`) and/or the backup
/// (last LBA, array just before it) from one header and array. The array
/// goes before the header that vouches for it.
fn write_gpt_copies<D: WriteAt + ?Sized>(
    disk: &D,
    sector_size: u32,
    primary: &GptHeader,
    array: &[u8],
    write_primary: bool,
    write_backup: bool,
) -> Result<()> {
    let ss = u64::from(sector_size);
    let array_sectors = (array.len() as u64).div_ceil(ss);
    if write_backup {
        let mut backup = *primary;
        backup.my_lba = primary.alternate_lba;
        backup.alternate_lba = primary.my_lba;
        backup.entries_lba = primary.alternate_lba - array_sectors;
        disk.write_at(backup.entries_lba * ss, array)?;
        disk.write_at(backup.my_lba * ss, &header_sector(&backup, sector_size))?;
    }
    if write_primary {
        disk.write_at(primary.entries_lba * ss, array)?;
        disk.write_at(primary.my_lba * ss, &header_sector(primary, sector_size))?;
    }
    Ok(())
}

/// Repairs the GPT of `disk` (logical sectors of `sector_size` bytes) from
/// its surviving copy: rewrites a damaged primary or backup, and moves the
/// backup to the last LBA when the disk has grown (the usable area then
/// ends just before the new backup array). Returns what it did, one
/// sentence per action; empty when nothing needed repair.
pub fn repair_gpt<D: WriteAt + ?Sized>(disk: &D, sector_size: u32) -> Result<Vec<String>> {
    let gpt =
        Gpt::read(disk, sector_size)?.ok_or_else(|| Error::invalid_input("no GPT to repair"))?;
    let ss = u64::from(sector_size);
    let last = disk.size() / ss - 1;
    let array_bytes = u64::from(gpt.header.num_entries) * u64::from(gpt.header.entry_size);
    let array_sectors = array_bytes.div_ceil(ss);
    // The entry array of the copy in use, padded to whole sectors.
    let mut array = disk_io::read_vec(
        disk,
        gpt.header.entries_lba * ss,
        (array_sectors * ss) as usize,
    )?;
    if let Some(pad) = array.get_mut(array_bytes as usize..) {
        pad.fill(0);
    }
    // Where the backup is now: the copy in use names it, or is it.
    let backup_at = if gpt.header.my_lba == 1 {
        gpt.header.alternate_lba
    } else {
        gpt.header.my_lba
    };
    let mut primary = GptHeader {
        my_lba: 1,
        alternate_lba: last,
        entries_lba: 2,
        ..gpt.header
    };
    let mut actions = Vec::new();
    let mut rewrite_primary = !gpt.primary_valid;
    let mut rewrite_backup = !gpt.backup_valid;
    if backup_at != last {
        // As `sgdisk -e`: the usable area now ends before the new backup array.
        primary.last_usable_lba = last - array_sectors - 1;
        let in_use = gpt.partitions.iter().map(|p| p.last_lba).max().unwrap_or(0);
        if in_use > primary.last_usable_lba {
            return Err(Error::invalid_input(format!(
                "the disk is too small for its partitions: data reaches LBA {in_use}, the backup GPT needs LBA {} on",
                primary.last_usable_lba + 1
            )));
        }
        actions.push(format!(
            "moved the backup GPT from LBA {backup_at} to the last LBA {last}"
        ));
        rewrite_primary = true;
        rewrite_backup = true;
    }
    if !gpt.primary_valid {
        actions.push(String::from(
            "rewrote the damaged primary GPT from the backup",
        ));
    }
    if !gpt.backup_valid {
        actions.push(String::from(
            "rewrote the damaged backup GPT from the primary",
        ));
    }
    if primary.entries_lba + array_sectors > primary.first_usable_lba {
        return Err(Error::corrupt(
            "GPT entry array would overlap the usable area",
            ss,
        ));
    }
    write_gpt_copies(
        disk,
        sector_size,
        &primary,
        &array,
        rewrite_primary,
        rewrite_backup,
    )?;
    Ok(actions)
}
