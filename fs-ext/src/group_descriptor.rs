//! Block group descriptors: where each group's bitmaps and inode table
//! are, its free counts and its `*_UNINIT` flags.
//!
//! 32 bytes each, or `s_desc_size` (64) with the `64bit` feature, packed in
//! the blocks after the superblock. With `meta_bg`, groups from
//! `s_first_meta_bg × descriptors-per-block` on keep their descriptor
//! block in the first group of their meta group (backups in the second
//! and last).

use alloc::format;

use bitflags::bitflags;
use disk_io::bytes::{le_u16, le_u32};
use disk_io::{Error, Result};

use crate::checksum;
use crate::superblock::{Incompat, RoCompat, Superblock};

bitflags! {
    /// `bg_flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct GroupFlags: u16 {
        /// The inode table and bitmap are not initialised.
        const INODE_UNINIT = 0x1;
        /// The block bitmap is not initialised: compute it.
        const BLOCK_UNINIT = 0x2;
        /// The inode table is zeroed.
        const INODE_ZEROED = 0x4;
    }
}

/// One group descriptor, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupDescriptor {
    /// Block of the block bitmap.
    pub block_bitmap: u64,
    /// Block of the inode bitmap.
    pub inode_bitmap: u64,
    /// First block of the inode table.
    pub inode_table: u64,
    /// Free blocks (clusters) in the group.
    pub free_blocks: u32,
    /// Free inodes in the group.
    pub free_inodes: u32,
    /// Flags.
    pub flags: GroupFlags,
    /// Inodes at the end of the table never used (with checksums on).
    pub itable_unused: u32,
    /// Stored checksum of the block bitmap (`metadata_csum`).
    pub block_bitmap_csum: u32,
    /// Stored checksum of the inode bitmap (`metadata_csum`).
    pub inode_bitmap_csum: u32,
    /// Stored descriptor checksum.
    pub checksum: u16,
}

impl GroupDescriptor {
    /// Decodes descriptor bytes (`desc_size` of them).
    pub fn parse(raw: &[u8], sb: &Superblock) -> GroupDescriptor {
        let lo = |at| u64::from(le_u32(raw, at).unwrap_or(0));
        let lo16 = |at| u32::from(le_u16(raw, at).unwrap_or(0));
        let big = sb.incompat.contains(Incompat::BIT64) && sb.desc_size >= 64;
        let hi = |at| if big { lo(at) } else { 0 };
        let hi16 = |at| if big { lo16(at) } else { 0 };
        GroupDescriptor {
            block_bitmap: lo(0x0) | hi(0x20) << 32,
            inode_bitmap: lo(0x4) | hi(0x24) << 32,
            inode_table: lo(0x8) | hi(0x28) << 32,
            free_blocks: lo16(0xc) | hi16(0x2c) << 16,
            free_inodes: lo16(0xe) | hi16(0x2e) << 16,
            flags: GroupFlags::from_bits_retain(le_u16(raw, 0x12).unwrap_or(0)),
            itable_unused: lo16(0x1c) | hi16(0x32) << 16,
            block_bitmap_csum: lo16(0x18) | hi16(0x38) << 16,
            inode_bitmap_csum: lo16(0x1a) | hi16(0x3a) << 16,
            checksum: le_u16(raw, 0x1e).unwrap_or(0),
        }
    }

    /// True when the group uses the `*_UNINIT` flags at all: they are only
    /// meaningful with `gdt_csum` or `metadata_csum`.
    pub fn flags_valid(sb: &Superblock) -> bool {
        sb.ro_compat
            .intersects(RoCompat::GDT_CSUM | RoCompat::METADATA_CSUM)
    }

    /// The checksum this descriptor should carry, or `None` when the volume
    /// has no descriptor checksums.
    pub fn computed_checksum(raw: &[u8], group: u32, sb: &Superblock) -> Option<u16> {
        let size = usize::from(sb.desc_size).min(raw.len());
        let raw = raw.get(..size)?;
        let head = raw.get(..0x1e)?;
        let tail = raw.get(0x20..).unwrap_or(&[]);
        if sb.has_metadata_csum() {
            let c = checksum::raw_crc32c(sb.csum_seed, &group.to_le_bytes());
            let c = checksum::raw_crc32c(c, head);
            let c = checksum::raw_crc32c(c, &[0, 0]);
            let c = checksum::raw_crc32c(c, tail);
            Some((c & 0xffff) as u16)
        } else if sb.ro_compat.contains(RoCompat::GDT_CSUM) {
            let c = checksum::crc16(0xffff, &sb.uuid);
            let c = checksum::crc16(c, &group.to_le_bytes());
            let c = checksum::crc16(c, head);
            Some(checksum::crc16(c, tail))
        } else {
            None
        }
    }
}

/// Descriptors that fit in one block.
pub fn descs_per_block(sb: &Superblock) -> u64 {
    u64::from(sb.block_size() / u32::from(sb.desc_size))
}

/// The byte offset of group `group`'s descriptor (primary copy).
pub fn descriptor_offset(sb: &Superblock, group: u64) -> Result<u64> {
    let per_block = descs_per_block(sb);
    let bs = u64::from(sb.block_size());
    let index_in_block = group % per_block;
    let desc_block_no = group / per_block;
    let block = if sb.incompat.contains(Incompat::META_BG)
        && desc_block_no >= u64::from(sb.first_meta_bg)
    {
        // The descriptor block sits in the first group of its meta group,
        // after that group's superblock backup if it has one.
        let first_group = desc_block_no
            .checked_mul(per_block)
            .ok_or_else(|| Error::corrupt("ext meta_bg group number", 1024))?;
        let start = group_first_block(sb, first_group);
        // 1 KiB blocks with group 0 starting at block 0 (bigalloc): the
        // superblock is block 1, so group 0's descriptors move one on.
        let extra =
            u64::from(sb.block_size() == 1024 && first_group == 0 && sb.first_data_block == 0);
        start + u64::from(sb.group_has_super(first_group)) + extra
    } else {
        // The block after the one holding the superblock.
        crate::superblock::SUPERBLOCK_OFFSET / u64::from(sb.block_size()) + 1 + desc_block_no
    };
    let offset = block
        .checked_mul(bs)
        .and_then(|o| o.checked_add(index_in_block * u64::from(sb.desc_size)))
        .ok_or_else(|| Error::corrupt(format!("ext group descriptor {group} location"), 1024))?;
    Ok(offset)
}

/// First block of group `group`.
pub fn group_first_block(sb: &Superblock, group: u64) -> u64 {
    u64::from(sb.first_data_block) + group * u64::from(sb.blocks_per_group)
}

/// Number of blocks holding the superblock backup and descriptor blocks
/// (with reserved GDT blocks) at the start of group `group`.
pub fn group_overhead_blocks(sb: &Superblock, group: u64) -> u64 {
    let per_block = descs_per_block(sb);
    let has_super = sb.group_has_super(group);
    let mut n = u64::from(has_super);
    if sb.incompat.contains(Incompat::META_BG) {
        let meta_group = group / per_block;
        if meta_group < u64::from(sb.first_meta_bg) {
            if has_super {
                n += u64::from(sb.first_meta_bg) + u64::from(sb.reserved_gdt_blocks);
            }
        } else {
            let index = group % per_block;
            if index == 0 || index == 1 || index == per_block - 1 {
                n += 1;
            }
        }
    } else if has_super {
        n += sb.group_count().div_ceil(per_block) + u64::from(sb.reserved_gdt_blocks);
    }
    n
}
