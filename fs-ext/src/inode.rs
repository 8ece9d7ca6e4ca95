//! Inodes: 128 bytes of the original layout, plus `i_extra_isize` bytes of
//! extensions (nanoseconds, epoch bits, creation time, checksum high half)
//! and in-inode extended attributes up to `s_inode_size`.

use alloc::vec::Vec;

use bitflags::bitflags;
use disk_io::bytes::{le_u16, le_u32};

use crate::superblock::{RoCompat, Superblock};

/// The root directory's inode number.
pub const ROOT_INO: u32 = 2;
/// Inode numbers at or below this are reserved on old file systems.
pub const GOOD_OLD_FIRST_INO: u32 = 11;
/// Size of the original inode layout.
pub const GOOD_OLD_INODE_SIZE: usize = 128;
/// Bytes of `i_block`.
pub const I_BLOCK_SIZE: usize = 60;

bitflags! {
    /// `i_flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct InodeFlags: u32 {
        /// Secure deletion.
        const SECRM = 0x1;
        /// Undelete.
        const UNRM = 0x2;
        /// Compressed (unused).
        const COMPR = 0x4;
        /// Synchronous updates.
        const SYNC = 0x8;
        /// Immutable.
        const IMMUTABLE = 0x10;
        /// Append only.
        const APPEND = 0x20;
        /// Not dumped.
        const NODUMP = 0x40;
        /// No atime updates.
        const NOATIME = 0x80;
        /// Encrypted.
        const ENCRYPT = 0x800;
        /// Hashed (htree) directory.
        const INDEX = 0x1000;
        /// AFS magic directory.
        const IMAGIC = 0x2000;
        /// Journalled data.
        const JOURNAL_DATA = 0x4000;
        /// No tail merging.
        const NOTAIL = 0x8000;
        /// Synchronous directory updates.
        const DIRSYNC = 0x10000;
        /// Top of a directory hierarchy.
        const TOPDIR = 0x20000;
        /// `i_blocks` in file-system blocks (huge_file).
        const HUGE_FILE = 0x40000;
        /// Data mapped by an extent tree.
        const EXTENTS = 0x80000;
        /// fs-verity.
        const VERITY = 0x100000;
        /// Holds a large xattr value (ea_inode).
        const EA_INODE = 0x200000;
        /// Data inside the inode.
        const INLINE_DATA = 0x10000000;
        /// Project id inherited.
        const PROJINHERIT = 0x20000000;
        /// Case-insensitive directory.
        const CASEFOLD = 0x40000000;
    }
}

/// File type from the mode's upper bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Regular file.
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// FIFO.
    Fifo,
    /// Socket.
    Socket,
    /// A mode with no valid type.
    Unknown,
}

impl FileType {
    /// The type of mode bits `mode`.
    pub fn from_mode(mode: u16) -> FileType {
        match mode & 0xf000 {
            0x8000 => FileType::Regular,
            0x4000 => FileType::Directory,
            0xa000 => FileType::Symlink,
            0x2000 => FileType::CharDevice,
            0x6000 => FileType::BlockDevice,
            0x1000 => FileType::Fifo,
            0xc000 => FileType::Socket,
            _ => FileType::Unknown,
        }
    }

    /// The type of a directory entry's file type byte.
    pub fn from_dirent(t: u8) -> FileType {
        match t {
            1 => FileType::Regular,
            2 => FileType::Directory,
            3 => FileType::CharDevice,
            4 => FileType::BlockDevice,
            5 => FileType::Fifo,
            6 => FileType::Socket,
            7 => FileType::Symlink,
            _ => FileType::Unknown,
        }
    }
}

/// A timestamp: seconds since the Unix epoch and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    /// Seconds (may be negative or past 2038 with the extra epoch bits).
    pub secs: i64,
    /// Nanoseconds (0 on 128-byte inodes).
    pub nanos: u32,
}

impl Timestamp {
    fn decode(base: u32, extra: Option<u32>) -> Timestamp {
        let mut secs = i64::from(base as i32);
        let mut nanos = 0;
        if let Some(extra) = extra {
            secs += i64::from(extra & 3) << 32;
            nanos = (extra >> 2).min(999_999_999);
        }
        Timestamp { secs, nanos }
    }
}

/// An inode, decoded.
#[derive(Clone, Debug)]
pub struct Inode {
    /// Inode number.
    pub ino: u32,
    /// Mode bits with the file type.
    pub mode: u16,
    /// Owner (32 bits with the high half).
    pub uid: u32,
    /// Group (32 bits with the high half).
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Access time.
    pub atime: Timestamp,
    /// Change time.
    pub ctime: Timestamp,
    /// Modification time.
    pub mtime: Timestamp,
    /// Creation time (large inodes only).
    pub crtime: Option<Timestamp>,
    /// Deletion time.
    pub dtime: u32,
    /// Hard links.
    pub links_count: u16,
    /// Allocated 512-byte sectors (or blocks with huge_file).
    pub blocks: u64,
    /// Flags.
    pub flags: InodeFlags,
    /// `i_block`: block map, extent tree root, inline data or fast symlink.
    pub i_block: [u8; I_BLOCK_SIZE],
    /// Generation (NFS, and the inode checksum seed).
    pub generation: u32,
    /// Extended attribute block.
    pub file_acl: u64,
    /// `i_extra_isize` (0 on 128-byte inodes).
    pub extra_isize: u16,
    /// Stored checksum (the low 16 bits only on 128-byte inodes).
    pub checksum: u32,
    /// The whole on-disk record (for in-inode xattrs and checksums).
    pub raw: Vec<u8>,
}

impl Inode {
    /// Decodes the record `raw` of inode `ino` (at least 128 bytes).
    /// Returns `None` when `raw` is too short or `i_extra_isize` does not
    /// fit the record.
    pub fn parse(ino: u32, raw: &[u8], sb: &Superblock) -> Option<Inode> {
        if raw.len() < GOOD_OLD_INODE_SIZE {
            return None;
        }
        let u16_at = |at| le_u16(raw, at).unwrap_or(0);
        let u32_at = |at| le_u32(raw, at).unwrap_or(0);
        let extra_isize = if raw.len() > GOOD_OLD_INODE_SIZE {
            u16_at(0x80)
        } else {
            0
        };
        if GOOD_OLD_INODE_SIZE + usize::from(extra_isize) > raw.len() || extra_isize % 4 != 0 {
            return None;
        }
        let has = |field_end: usize| GOOD_OLD_INODE_SIZE + usize::from(extra_isize) >= field_end;
        let extra = |at: usize| has(at + 4).then(|| u32_at(at));
        let mode = u16_at(0x0);
        let flags = InodeFlags::from_bits_retain(u32_at(0x20));
        let blocks_lo = u64::from(u32_at(0x1c));
        let blocks_hi = u64::from(u16_at(0x74));
        let mut blocks = blocks_lo | blocks_hi << 32;
        if sb.ro_compat.contains(RoCompat::HUGE_FILE) && flags.contains(InodeFlags::HUGE_FILE) {
            blocks = blocks.saturating_mul(u64::from(sb.block_size() / 512));
        }
        let mut i_block = [0u8; I_BLOCK_SIZE];
        i_block.copy_from_slice(raw.get(0x28..0x28 + I_BLOCK_SIZE)?);
        let checksum_lo = u32::from(u16_at(0x7c));
        let checksum = if has(0x84) {
            checksum_lo | u32::from(u16_at(0x82)) << 16
        } else {
            checksum_lo
        };
        let size = u64::from(u32_at(0x4)) | u64::from(u32_at(0x6c)) << 32;
        Some(Inode {
            ino,
            mode,
            uid: u32::from(u16_at(0x2)) | u32::from(u16_at(0x78)) << 16,
            gid: u32::from(u16_at(0x18)) | u32::from(u16_at(0x7a)) << 16,
            size,
            atime: Timestamp::decode(u32_at(0x8), extra(0x8c)),
            ctime: Timestamp::decode(u32_at(0xc), extra(0x84)),
            mtime: Timestamp::decode(u32_at(0x10), extra(0x88)),
            crtime: extra(0x90).map(|t| Timestamp::decode(t, extra(0x94))),
            dtime: u32_at(0x14),
            links_count: u16_at(0x1a),
            blocks,
            flags,
            i_block,
            generation: u32_at(0x64),
            file_acl: u64::from(u32_at(0x68)) | u64::from(u16_at(0x76)) << 32,
            extra_isize,
            checksum,
            raw: raw.to_vec(),
        })
    }

    /// The file type.
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(self.mode)
    }

    /// True when the inode's data is inline (in `i_block` and `system.data`).
    pub fn has_inline_data(&self) -> bool {
        self.flags.contains(InodeFlags::INLINE_DATA)
    }

    /// True for a symlink whose target lives in `i_block`.
    pub fn is_fast_symlink(&self, sb: &Superblock) -> bool {
        if self.file_type() != FileType::Symlink || self.has_inline_data() {
            return false;
        }
        if self.flags.contains(InodeFlags::EA_INODE) {
            return self.size > 0 && self.size < I_BLOCK_SIZE as u64;
        }
        let ea_sectors = if self.file_acl != 0 {
            u64::from(sb.block_size() << (sb.cluster_bits - sb.block_bits)) / 512
        } else {
            0
        };
        self.blocks.saturating_sub(ea_sectors) == 0 && self.size < I_BLOCK_SIZE as u64
    }

    /// The `metadata_csum` checksum the record should carry.
    pub fn computed_checksum(&self, sb: &Superblock) -> u32 {
        let seed = crate::checksum::inode_seed(sb.csum_seed, self.ino, self.generation);
        let raw = &self.raw;
        // Usual record sizes: one pass over a copy with the checksum
        // fields zeroed (the CRC runs eight bytes at a time; the pieces
        // below would leave odd tails).
        let mut copy = [0u8; 1024];
        let has_hi = raw.len() > GOOD_OLD_INODE_SIZE && usize::from(self.extra_isize) >= 4;
        if raw.len() >= 0x84 {
            if let Some(buf) = copy.get_mut(..raw.len()) {
                buf.copy_from_slice(raw);
                buf.get_mut(0x7c..0x7e).unwrap_or(&mut []).fill(0);
                if has_hi {
                    buf.get_mut(0x82..0x84).unwrap_or(&mut []).fill(0);
                }
                return crate::checksum::raw_crc32c(seed, buf);
            }
        }
        let mut c = crate::checksum::raw_crc32c(seed, raw.get(..0x7c).unwrap_or(&[]));
        c = crate::checksum::raw_crc32c(c, &[0, 0]);
        if raw.len() > GOOD_OLD_INODE_SIZE {
            c = crate::checksum::raw_crc32c(c, raw.get(0x7e..0x82).unwrap_or(&[]));
            let has_hi = usize::from(self.extra_isize) >= 4;
            if has_hi {
                c = crate::checksum::raw_crc32c(c, &[0, 0]);
                c = crate::checksum::raw_crc32c(c, raw.get(0x84..).unwrap_or(&[]));
            } else {
                c = crate::checksum::raw_crc32c(c, raw.get(0x82..).unwrap_or(&[]));
            }
            c
        } else {
            c = crate::checksum::raw_crc32c(c, raw.get(0x7e..0x80).unwrap_or(&[]));
            c & 0xffff
        }
    }

    /// The in-inode extended attribute area (after `i_extra_isize`), if any.
    pub fn xattr_area(&self) -> &[u8] {
        let start = GOOD_OLD_INODE_SIZE + usize::from(self.extra_isize);
        self.raw.get(start..).unwrap_or(&[])
    }
}
