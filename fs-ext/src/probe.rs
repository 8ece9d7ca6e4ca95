//! Recognising ext2/3/4 from the superblock, the way blkid names them:
//! by the journal and by which feature flags are set.

use disk_io::bytes::{le_u16, le_u32};
use disk_io::{ReadAt, Result};

/// Which generation of ext a volume's features make it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExtVersion {
    /// No journal, only features ext2 knows.
    Ext2,
    /// A journal, and only features ext3 knows.
    Ext3,
    /// Any feature newer than ext3 (extents, 64bit, flex_bg, …).
    Ext4,
}

impl ExtVersion {
    /// `ext2`, `ext3` or `ext4`.
    pub const fn name(self) -> &'static str {
        match self {
            ExtVersion::Ext2 => "ext2",
            ExtVersion::Ext3 => "ext3",
            ExtVersion::Ext4 => "ext4",
        }
    }
}

/// Byte offset of the primary superblock.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
const MAGIC: u16 = 0xef53;
const S_MAGIC: usize = 0x38;
const S_FEATURE_COMPAT: usize = 0x5c;
const S_FEATURE_INCOMPAT: usize = 0x60;
const S_FEATURE_RO_COMPAT: usize = 0x64;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_BTREE_DIR: u32 = 0x4;

const EXT2_INCOMPAT: u32 = INCOMPAT_FILETYPE | INCOMPAT_META_BG;
const EXT3_INCOMPAT: u32 = EXT2_INCOMPAT | INCOMPAT_RECOVER;
const EXT23_RO_COMPAT: u32 = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;

/// Says whether `volume` holds an ext file system and which generation.
///
/// `Ok(None)` means "not ext" (no superblock magic, or an external journal
/// device, which holds no files). Only I/O failures are errors.
///
/// ```
/// use fs_ext::{probe, ExtVersion};
/// let mut disk = vec![0u8; 4096];
/// disk[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
/// assert_eq!(probe(&disk[..]).unwrap(), Some(ExtVersion::Ext2));
/// disk[1024 + 0x60] = 0x40; // INCOMPAT_EXTENTS
/// assert_eq!(probe(&disk[..]).unwrap(), Some(ExtVersion::Ext4));
/// ```
pub fn probe<D: ReadAt + ?Sized>(volume: &D) -> Result<Option<ExtVersion>> {
    if volume.size() < SUPERBLOCK_OFFSET + 1024 {
        return Ok(None);
    }
    let mut sb = [0u8; 0x68];
    volume.read_at(SUPERBLOCK_OFFSET, &mut sb)?;
    if le_u16(&sb, S_MAGIC) != Some(MAGIC) {
        return Ok(None);
    }
    let (Some(compat), Some(incompat), Some(ro_compat)) = (
        le_u32(&sb, S_FEATURE_COMPAT),
        le_u32(&sb, S_FEATURE_INCOMPAT),
        le_u32(&sb, S_FEATURE_RO_COMPAT),
    ) else {
        return Ok(None);
    };
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return Ok(None);
    }
    let journal = compat & COMPAT_HAS_JOURNAL != 0;
    let old_ro = ro_compat & !EXT23_RO_COMPAT == 0;
    Ok(Some(
        if !journal && old_ro && incompat & !EXT2_INCOMPAT == 0 {
            ExtVersion::Ext2
        } else if journal && old_ro && incompat & !EXT3_INCOMPAT == 0 {
            ExtVersion::Ext3
        } else {
            ExtVersion::Ext4
        },
    ))
}
