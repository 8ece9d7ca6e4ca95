//! The VDI block map: one little-endian `u32` per block of the guest disk,
//! the block's position in the data area, or one of two markers.

use alloc::format;
use alloc::vec::Vec;

use disk_io::{Error, ReadAt, Result};

use super::header::Header;
use crate::CheckReport;

/// Block map entry: the block is not allocated (parent, or zeros).
pub const FREE: u32 = 0xffff_ffff;
/// Block map entry: the block reads as zeros.
pub const ZERO: u32 = 0xffff_fffe;

/// What one guest block maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// Not held by this image.
    Free,
    /// Reads as zeros.
    Zero,
    /// Guest data at this file offset.
    Data(u64),
}

/// The block map of one image, checked against its header and file size
/// as it is looked up.
#[derive(Clone, Debug)]
pub struct BlockMap {
    entries: Vec<u32>,
}

impl BlockMap {
    /// Reads the block map `header` describes (inside the file: checked by
    /// [`Header::read`]).
    pub fn read<D: ReadAt + ?Sized>(file: &D, header: &Header) -> Result<BlockMap> {
        let bytes = disk_io::read_vec(file, header.offset_bmap, header.blocks as usize * 4)
            .map_err(|e| e.context("vdi block map"))?;
        let entries = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0xff; 4])))
            .collect();
        Ok(BlockMap { entries })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The raw entry for guest block `index` (`FREE` past the map).
    pub fn entry(&self, index: u64) -> u32 {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
            .copied()
            .unwrap_or(FREE)
    }

    /// Where guest block `index` is: its data must start inside the
    /// `file_size`-byte file and its position lie inside the data area.
    pub fn lookup(&self, header: &Header, file_size: u64, index: u64) -> Result<Block> {
        let entry = self.entry(index);
        match entry {
            FREE => return Ok(Block::Free),
            ZERO => return Ok(Block::Zero),
            _ => {}
        }
        let at = header.map_entry_offset(index);
        if entry >= header.blocks {
            return Err(Error::corrupt(
                format!(
                    "vdi block map entry {index} at offset {at:#x}: block position {entry} beyond the {} blocks of the image",
                    header.blocks
                ),
                at,
            ));
        }
        match header.block_data_offset(entry) {
            Some(offset) if offset < file_size => Ok(Block::Data(offset)),
            _ => Err(Error::corrupt(
                format!(
                    "vdi block map entry {index} at offset {at:#x}: block {entry} lies past the end of the file ({file_size:#x} bytes)"
                ),
                at,
            )),
        }
    }

    /// The block map's part of `vdisk check`: entries beyond the data area
    /// or past the end of the file, blocks used twice, and the allocated
    /// count against the header's (as `qemu-img check` counts them).
    pub fn check(&self, header: &Header, file_size: u64, report: &mut CheckReport) {
        // Which guest block uses each stored position, FREE when none.
        let mut owner = alloc::vec![FREE; self.entries.len()];
        let mut allocated: u64 = 0;
        for (index, &entry) in self.entries.iter().enumerate() {
            if entry == FREE || entry == ZERO {
                continue;
            }
            let at = header.map_entry_offset(index as u64);
            let Some(slot) = owner.get_mut(entry as usize) else {
                report.error(format!(
                    "ERROR: block map entry {index} at offset {at:#x}: block index too large, is {entry}"
                ));
                continue;
            };
            allocated += 1;
            if *slot != FREE {
                report.error(format!(
                    "ERROR: block map entry {index} at offset {at:#x}: block {entry} also used by guest block {}",
                    *slot
                ));
                continue;
            }
            *slot = index as u32;
            let end = header
                .block_data_offset(entry)
                .and_then(|o| o.checked_add(u64::from(header.block_size)));
            if end.is_none_or(|end| end > file_size) {
                report.error(format!(
                    "ERROR: block map entry {index} at offset {at:#x}: block {entry} runs past the end of the file ({file_size:#x} bytes)"
                ));
            }
        }
        if allocated != u64::from(header.blocks_allocated) {
            report.error(format!(
                "ERROR: allocated blocks mismatch, is {allocated}, should be {} (header at offset {:#x})",
                header.blocks_allocated,
                header.blocks_allocated_offset()
            ));
        }
    }
}
