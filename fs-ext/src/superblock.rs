//! The superblock: 1024 bytes at byte 1024 of the volume (copies at the
//! start of some groups), with the geometry and the feature flags.
//!
//! Features come in three sets. An unknown `COMPAT` feature changes
//! nothing for a reader; an unknown `RO_COMPAT` feature only forbids
//! writing; an unknown `INCOMPAT` feature means the volume cannot be read
//! correctly, so [`Superblock::parse`] refuses it by name.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use bitflags::bitflags;
use disk_io::bytes::{le_u16, le_u32};
use disk_io::{Error, Result};

use crate::checksum;

/// Byte offset of the primary superblock.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock in bytes.
pub const SUPERBLOCK_SIZE: usize = 1024;
/// `s_magic`.
pub const MAGIC: u16 = 0xef53;
/// Largest block size this reader accepts (64 KiB, as the kernel does).
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// Largest cluster size (bigalloc) accepted: 256 MiB.
pub const MAX_CLUSTER_BITS: u32 = 28;
/// Largest on-disk inode record accepted.
pub const MAX_INODE_SIZE: u16 = 4096;

bitflags! {
    /// `s_feature_compat`: a reader may ignore any of these.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Compat: u32 {
        /// Directory preallocation.
        const DIR_PREALLOC = 0x1;
        /// "imagic inodes" (AFS).
        const IMAGIC_INODES = 0x2;
        /// Has a journal (ext3).
        const HAS_JOURNAL = 0x4;
        /// Extended attributes.
        const EXT_ATTR = 0x8;
        /// Reserved GDT blocks for online growth (the resize inode).
        const RESIZE_INODE = 0x10;
        /// Hashed b-tree directories.
        const DIR_INDEX = 0x20;
        /// Lazy block groups (never used).
        const LAZY_BG = 0x40;
        /// Exclude inode (snapshots, never used).
        const EXCLUDE_INODE = 0x80;
        /// Exclude bitmap (snapshots).
        const EXCLUDE_BITMAP = 0x100;
        /// Superblock backups only in the two groups of `s_backup_bgs`.
        const SPARSE_SUPER2 = 0x200;
        /// Fast commits in the journal.
        const FAST_COMMIT = 0x400;
        /// Inode numbers never change (encryption with stable inodes).
        const STABLE_INODES = 0x800;
        /// The orphan file.
        const ORPHAN_FILE = 0x1000;
    }
}

bitflags! {
    /// `s_feature_incompat`: a reader that does not know one of these
    /// must not read the volume.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Incompat: u32 {
        /// Compression (never implemented by Linux).
        const COMPRESSION = 0x1;
        /// Directory entries record the file type.
        const FILETYPE = 0x2;
        /// The journal needs recovery.
        const RECOVER = 0x4;
        /// An external journal device.
        const JOURNAL_DEV = 0x8;
        /// Meta block groups.
        const META_BG = 0x10;
        /// Files use extent trees.
        const EXTENTS = 0x40;
        /// Block numbers above 2^32.
        const BIT64 = 0x80;
        /// Multiple mount protection.
        const MMP = 0x100;
        /// Flexible block groups.
        const FLEX_BG = 0x200;
        /// Large xattr values in their own inodes.
        const EA_INODE = 0x400;
        /// Data in directory entries (Lustre).
        const DIRDATA = 0x1000;
        /// The checksum seed is stored in the superblock.
        const CSUM_SEED = 0x2000;
        /// Directories over 2 GiB or with 3-level htrees.
        const LARGEDIR = 0x4000;
        /// Small files and directories inside the inode.
        const INLINE_DATA = 0x8000;
        /// Encrypted files and directories.
        const ENCRYPT = 0x10000;
        /// Case-insensitive directories.
        const CASEFOLD = 0x20000;
    }
}

bitflags! {
    /// `s_feature_ro_compat`: a reader may ignore these; a writer may not.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct RoCompat: u32 {
        /// Superblock backups only in groups 0, 1 and powers of 3, 5, 7.
        const SPARSE_SUPER = 0x1;
        /// Files over 2 GiB.
        const LARGE_FILE = 0x2;
        /// B-tree directories (never used).
        const BTREE_DIR = 0x4;
        /// `i_blocks` in file-system blocks for huge files.
        const HUGE_FILE = 0x8;
        /// Group descriptor checksums (crc16).
        const GDT_CSUM = 0x10;
        /// More than 65000 subdirectories.
        const DIR_NLINK = 0x20;
        /// Large inodes have `i_extra_isize` room.
        const EXTRA_ISIZE = 0x40;
        /// Snapshots.
        const HAS_SNAPSHOT = 0x80;
        /// Quota inodes.
        const QUOTA = 0x100;
        /// Allocation in clusters of several blocks.
        const BIGALLOC = 0x200;
        /// crc32c checksums on all metadata.
        const METADATA_CSUM = 0x400;
        /// Replicas (never used).
        const REPLICA = 0x800;
        /// Read-only volume.
        const READONLY = 0x1000;
        /// Project quotas.
        const PROJECT = 0x2000;
        /// Shared blocks (deduplicated images).
        const SHARED_BLOCKS = 0x4000;
        /// fs-verity files.
        const VERITY = 0x8000;
        /// The orphan file has entries.
        const ORPHAN_PRESENT = 0x10000;
    }
}

impl Incompat {
    /// The features this reader handles. Any other bit is refused.
    pub const SUPPORTED: Incompat = Incompat::FILETYPE
        .union(Incompat::RECOVER)
        .union(Incompat::META_BG)
        .union(Incompat::EXTENTS)
        .union(Incompat::BIT64)
        .union(Incompat::MMP)
        .union(Incompat::FLEX_BG)
        .union(Incompat::EA_INODE)
        .union(Incompat::CSUM_SEED)
        .union(Incompat::LARGEDIR)
        .union(Incompat::INLINE_DATA)
        .union(Incompat::ENCRYPT)
        .union(Incompat::CASEFOLD);
}

impl Compat {
    /// The features this reader makes use of; the rest are ignored.
    pub const SUPPORTED: Compat = Compat::HAS_JOURNAL
        .union(Compat::EXT_ATTR)
        .union(Compat::RESIZE_INODE)
        .union(Compat::DIR_INDEX)
        .union(Compat::SPARSE_SUPER2);
}

impl RoCompat {
    /// The features this reader makes use of; the rest do not matter for reading.
    pub const SUPPORTED: RoCompat = RoCompat::SPARSE_SUPER
        .union(RoCompat::LARGE_FILE)
        .union(RoCompat::HUGE_FILE)
        .union(RoCompat::GDT_CSUM)
        .union(RoCompat::DIR_NLINK)
        .union(RoCompat::EXTRA_ISIZE)
        .union(RoCompat::BIGALLOC)
        .union(RoCompat::METADATA_CSUM);
}

/// Names of `INCOMPAT` bits, as `mke2fs -O` spells them; unknown bits as hex.
pub fn incompat_names(bits: u32) -> String {
    let known: [(u32, &str); 16] = [
        (0x1, "compression"),
        (0x2, "filetype"),
        (0x4, "needs_recovery"),
        (0x8, "journal_dev"),
        (0x10, "meta_bg"),
        (0x40, "extent"),
        (0x80, "64bit"),
        (0x100, "mmp"),
        (0x200, "flex_bg"),
        (0x400, "ea_inode"),
        (0x1000, "dirdata"),
        (0x2000, "metadata_csum_seed"),
        (0x4000, "large_dir"),
        (0x8000, "inline_data"),
        (0x10000, "encrypt"),
        (0x20000, "casefold"),
    ];
    let mut names = Vec::new();
    let mut rest = bits;
    for (bit, name) in known {
        if bits & bit != 0 {
            names.push(String::from(name));
            rest &= !bit;
        }
    }
    let mut bit = 1u32;
    while bit != 0 {
        if rest & bit != 0 {
            names.push(format!("{bit:#x}"));
        }
        bit = bit.wrapping_shl(1);
    }
    names.join(", ")
}

/// The fields of a superblock this reader uses, validated.
#[derive(Clone, Debug)]
pub struct Superblock {
    /// The raw 1024 bytes.
    pub raw: Vec<u8>,
    /// Total inodes.
    pub inodes_count: u32,
    /// Total blocks.
    pub blocks_count: u64,
    /// Free blocks, as the superblock counts them.
    pub free_blocks_count: u64,
    /// First block of group 0 (1 with 1 KiB blocks, else 0).
    pub first_data_block: u32,
    /// log2 of the block size.
    pub block_bits: u32,
    /// log2 of the cluster size (equal to `block_bits` without bigalloc).
    pub cluster_bits: u32,
    /// Blocks in a group.
    pub blocks_per_group: u32,
    /// Clusters in a group.
    pub clusters_per_group: u32,
    /// Inodes in a group.
    pub inodes_per_group: u32,
    /// Last write time (seconds).
    pub wtime: u32,
    /// Revision level (0: old fixed-size inodes).
    pub rev_level: u32,
    /// First non-reserved inode.
    pub first_ino: u32,
    /// Size of an inode record.
    pub inode_size: u16,
    /// Compatible features.
    pub compat: Compat,
    /// Incompatible features.
    pub incompat: Incompat,
    /// Read-only-compatible features.
    pub ro_compat: RoCompat,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume label bytes (NUL-padded).
    pub volume_name: [u8; 16],
    /// Reserved GDT blocks after the descriptors (resize inode).
    pub reserved_gdt_blocks: u16,
    /// Journal inode number.
    pub journal_inum: u32,
    /// Size of a group descriptor (32, or `s_desc_size` with 64bit).
    pub desc_size: u16,
    /// First meta block group (meta_bg).
    pub first_meta_bg: u32,
    /// Minimum extra inode size.
    pub min_extra_isize: u16,
    /// log2 of groups per flex group.
    pub log_groups_per_flex: u8,
    /// Groups holding superblock backups with sparse_super2.
    pub backup_bgs: [u32; 2],
    /// Seed of all metadata checksums (crc32c of the UUID, or `s_checksum_seed`).
    pub csum_seed: u32,
    /// Default hash version of htree directories.
    pub def_hash_version: u8,
    /// The stored superblock checksum.
    pub checksum: u32,
}

fn field32(raw: &[u8], at: usize) -> u32 {
    le_u32(raw, at).unwrap_or(0)
}

fn field16(raw: &[u8], at: usize) -> u16 {
    le_u16(raw, at).unwrap_or(0)
}

impl Superblock {
    /// Parses and validates the 1024 superblock bytes read at `offset`.
    ///
    /// Refuses an unknown or unsupported `INCOMPAT` feature by name;
    /// ignores unknown `COMPAT` and `RO_COMPAT` features (reading is safe).
    pub fn parse(raw: &[u8], offset: u64) -> Result<Superblock> {
        let raw = raw
            .get(..SUPERBLOCK_SIZE)
            .ok_or_else(|| Error::corrupt("ext superblock is shorter than 1024 bytes", offset))?;
        let magic = field16(raw, 0x38);
        if magic != MAGIC {
            return Err(Error::corrupt(
                format!("ext superblock magic {magic:#06x} (expected 0xef53)"),
                offset + 0x38,
            ));
        }
        let incompat_bits = field32(raw, 0x60);
        let unsupported = incompat_bits & !Incompat::SUPPORTED.bits();
        if unsupported != 0 {
            return Err(Error::unsupported(format!(
                "ext incompatible feature(s) {} ({unsupported:#x})",
                incompat_names(unsupported)
            ))
            .at(offset + 0x60));
        }
        let incompat = Incompat::from_bits_retain(incompat_bits);
        let compat = Compat::from_bits_retain(field32(raw, 0x5c));
        let ro_compat = RoCompat::from_bits_retain(field32(raw, 0x64));
        let log_block = field32(raw, 0x18);
        if log_block > 6 {
            return Err(Error::corrupt(
                format!("ext s_log_block_size {log_block} (block size over 64 KiB)"),
                offset + 0x18,
            ));
        }
        let block_bits = 10 + log_block;
        let log_cluster = field32(raw, 0x1c);
        let cluster_bits = if ro_compat.contains(RoCompat::BIGALLOC) {
            let bits = log_cluster.saturating_add(10);
            if bits < block_bits || bits > MAX_CLUSTER_BITS {
                return Err(Error::corrupt(
                    format!("ext s_log_cluster_size {log_cluster} with {block_bits}-bit blocks"),
                    offset + 0x1c,
                ));
            }
            bits
        } else {
            block_bits
        };
        let bit64 = incompat.contains(Incompat::BIT64);
        let blocks_count = u64::from(field32(raw, 0x4))
            | if bit64 {
                u64::from(field32(raw, 0x150)) << 32
            } else {
                0
            };
        let free_blocks_count = u64::from(field32(raw, 0xc))
            | if bit64 {
                u64::from(field32(raw, 0x158)) << 32
            } else {
                0
            };
        let first_data_block = field32(raw, 0x14);
        let blocks_per_group = field32(raw, 0x20);
        let clusters_per_group = field32(raw, 0x24);
        let inodes_per_group = field32(raw, 0x28);
        let inodes_count = field32(raw, 0x0);
        let block_size = 1u32 << block_bits;
        // A group's block bitmap is one block: at most 8 bits per byte.
        let max_per_group = block_size.saturating_mul(8);
        let ratio = 1u32 << (cluster_bits - block_bits);
        let cpg = if ro_compat.contains(RoCompat::BIGALLOC) {
            clusters_per_group
        } else {
            blocks_per_group
        };
        if blocks_per_group == 0
            || cpg == 0
            || cpg > max_per_group
            || u64::from(cpg) * u64::from(ratio) != u64::from(blocks_per_group)
        {
            return Err(Error::corrupt(
                format!(
                    "ext blocks per group {blocks_per_group} / clusters per group {clusters_per_group}"
                ),
                offset + 0x20,
            ));
        }
        if inodes_per_group == 0 || inodes_per_group > max_per_group {
            return Err(Error::corrupt(
                format!("ext inodes per group {inodes_per_group}"),
                offset + 0x28,
            ));
        }
        if blocks_count <= u64::from(first_data_block) {
            return Err(Error::corrupt(
                format!("ext blocks count {blocks_count}"),
                offset + 0x4,
            ));
        }
        let rev_level = field32(raw, 0x4c);
        let (first_ino, inode_size) = if rev_level == 0 {
            (11, 128)
        } else {
            (field32(raw, 0x54), field16(raw, 0x58))
        };
        if !(128..=MAX_INODE_SIZE).contains(&inode_size)
            || !inode_size.is_power_of_two()
            || u32::from(inode_size) > block_size
        {
            return Err(Error::corrupt(
                format!("ext inode size {inode_size}"),
                offset + 0x58,
            ));
        }
        let desc_size = if bit64 {
            let d = field16(raw, 0xfe);
            if !(32..=1024).contains(&d) || !d.is_power_of_two() {
                return Err(Error::corrupt(
                    format!("ext group descriptor size {d}"),
                    offset + 0xfe,
                ));
            }
            d
        } else {
            32
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(raw.get(0x68..0x78).unwrap_or(&[0; 16]));
        let mut volume_name = [0u8; 16];
        volume_name.copy_from_slice(raw.get(0x78..0x88).unwrap_or(&[0; 16]));
        let csum_seed = if incompat.contains(Incompat::CSUM_SEED) {
            field32(raw, 0x270)
        } else {
            checksum::raw_crc32c(!0, &uuid)
        };
        Ok(Superblock {
            raw: raw.to_vec(),
            inodes_count,
            blocks_count,
            free_blocks_count,
            first_data_block,
            block_bits,
            cluster_bits,
            blocks_per_group,
            clusters_per_group: cpg,
            inodes_per_group,
            wtime: field32(raw, 0x30),
            rev_level,
            first_ino,
            inode_size,
            compat,
            incompat,
            ro_compat,
            uuid,
            volume_name,
            reserved_gdt_blocks: field16(raw, 0xce),
            journal_inum: field32(raw, 0xe0),
            desc_size,
            first_meta_bg: field32(raw, 0x104),
            min_extra_isize: field16(raw, 0x15c),
            log_groups_per_flex: raw.get(0x174).copied().unwrap_or(0),
            backup_bgs: [field32(raw, 0x24c), field32(raw, 0x250)],
            csum_seed,
            def_hash_version: raw.get(0xfc).copied().unwrap_or(0),
            checksum: field32(raw, 0x3fc),
        })
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        1 << self.block_bits
    }

    /// Blocks per cluster (1 without bigalloc).
    pub fn cluster_ratio(&self) -> u32 {
        1 << (self.cluster_bits - self.block_bits)
    }

    /// Number of block groups.
    pub fn group_count(&self) -> u64 {
        let data = self.blocks_count - u64::from(self.first_data_block);
        data.div_ceil(u64::from(self.blocks_per_group))
    }

    /// True when `metadata_csum` is on.
    pub fn has_metadata_csum(&self) -> bool {
        self.ro_compat.contains(RoCompat::METADATA_CSUM)
    }

    /// The volume label, without its NUL padding.
    pub fn label(&self) -> String {
        let end = self
            .volume_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.volume_name.len());
        String::from_utf8_lossy(self.volume_name.get(..end).unwrap_or(&[])).into_owned()
    }

    /// True when group `group` holds a superblock backup (and, without
    /// meta_bg, a copy of the descriptor table).
    pub fn group_has_super(&self, group: u64) -> bool {
        if group == 0 {
            return true;
        }
        if self.compat.contains(Compat::SPARSE_SUPER2) {
            return group == u64::from(self.backup_bgs[0])
                || group == u64::from(self.backup_bgs[1]);
        }
        if group <= 1 || !self.ro_compat.contains(RoCompat::SPARSE_SUPER) {
            return true;
        }
        if group & 1 == 0 {
            return false;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut n = base;
            while n < group {
                n = n.saturating_mul(base);
            }
            n == group
        })
    }

    /// The `metadata_csum` checksum of the superblock, computed.
    pub fn computed_checksum(&self) -> u32 {
        checksum::raw_crc32c(!0, self.raw.get(..0x3fc).unwrap_or(&[]))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// A minimal valid superblock: 1 KiB blocks, 8192 blocks, one group.
    fn raw() -> Vec<u8> {
        let mut b = alloc::vec![0u8; SUPERBLOCK_SIZE];
        b[0x0..0x4].copy_from_slice(&128u32.to_le_bytes());
        b[0x4..0x8].copy_from_slice(&8192u32.to_le_bytes());
        b[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
        b[0x20..0x24].copy_from_slice(&8192u32.to_le_bytes());
        b[0x24..0x28].copy_from_slice(&8192u32.to_le_bytes());
        b[0x28..0x2c].copy_from_slice(&128u32.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&MAGIC.to_le_bytes());
        b
    }

    #[test]
    fn unknown_incompat_is_refused_by_name() {
        let mut b = raw();
        b[0x60..0x64].copy_from_slice(&(0x1u32 | 0x80_0000).to_le_bytes());
        let err = Superblock::parse(&b, 1024).unwrap_err();
        assert_eq!(err.kind(), disk_io::ErrorKind::Unsupported);
        let msg = err.to_string();
        assert!(
            msg.contains("compression") && msg.contains("0x800000"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_compat_and_ro_compat_are_readable() {
        let mut b = raw();
        b[0x5c..0x60].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        b[0x64..0x68].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        let sb = Superblock::parse(&b, 1024).unwrap();
        assert_eq!(sb.block_size(), 1024);
        assert_eq!(sb.group_count(), 1);
        assert!(!RoCompat::SUPPORTED.contains(sb.ro_compat));
    }

    #[test]
    fn geometry_is_bounded() {
        for (at, value) in [
            (0x18, 7u32),
            (0x20, 0),
            (0x20, 9000),
            (0x28, 0),
            (0x28, 1 << 20),
        ] {
            let mut b = raw();
            b[at..at + 4].copy_from_slice(&value.to_le_bytes());
            assert!(
                Superblock::parse(&b, 1024).is_err(),
                "field {at:#x} = {value}"
            );
        }
        let mut b = raw();
        b[0x4c..0x50].copy_from_slice(&1u32.to_le_bytes());
        b[0x58..0x5a].copy_from_slice(&100u16.to_le_bytes());
        assert!(Superblock::parse(&b, 1024).is_err(), "inode size 100");
    }

    #[test]
    fn sparse_super_backups() {
        let mut b = raw();
        b[0x64..0x68].copy_from_slice(&RoCompat::SPARSE_SUPER.bits().to_le_bytes());
        let sb = Superblock::parse(&b, 1024).unwrap();
        let with: Vec<u64> = (0..60).filter(|&g| sb.group_has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }
}
