//! What a guest disk holds at its start: a partition table, a whole-disk
//! file system, something recognised but not handled, or nothing known.

use disk_io::{ReadAt, Result};
use fs_ext::ExtVersion;
use fs_fat::FatType;
use vdisk_format::{Detected, RawContent, probe_raw_content};

/// A partition table type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// Master boot record.
    Mbr,
    /// GUID partition table with its logical sector size.
    Gpt {
        /// 512 or 4096.
        sector_size: u32,
    },
}

impl TableKind {
    /// `mbr` or `gpt`.
    pub const fn name(self) -> &'static str {
        match self {
            TableKind::Mbr => "mbr",
            TableKind::Gpt { .. } => "gpt",
        }
    }
}

/// A file system the workspace has a crate for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileSystem {
    /// FAT12/16/32.
    Fat(FatType),
    /// ext2/3/4.
    Ext(ExtVersion),
    /// NTFS.
    Ntfs,
}

impl FileSystem {
    /// The name `vdisk info` prints (`fat32`, `ext4`, `ntfs`, …).
    pub const fn name(self) -> &'static str {
        match self {
            FileSystem::Fat(t) => t.name(),
            FileSystem::Ext(v) => v.name(),
            FileSystem::Ntfs => "ntfs",
        }
    }
}

/// What a guest disk starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestContent {
    /// A partition table.
    Table(TableKind),
    /// A file system spanning the whole disk.
    FileSystem(FileSystem),
    /// Something recognised by its signature that no crate here reads
    /// (`iso9660`, `luks`, `lvm2`, `swap`, `xfs`, `btrfs`, `exfat`, `squashfs`).
    Foreign(&'static str),
    /// The first 64 KiB are zeros: an empty disk.
    Blank,
    /// None of the above.
    Unrecognised,
}

/// Signatures of contents that are not ours to read but are certainly disks.
const FOREIGN: &[(&str, u64, &[u8])] = &[
    ("luks", 0, b"LUKS\xba\xbe"),
    ("xfs", 0, b"XFSB"),
    ("squashfs", 0, b"hsqs"),
    ("exfat", 3, b"EXFAT   "),
    ("lvm2", 512, b"LABELONE"),
    ("swap", 4086, b"SWAPSPACE2"),
    ("swap", 4086, b"SWAP-SPACE"),
    ("iso9660", 0x8001, b"CD001"),
    ("btrfs", 0x1_0040, b"_BHRfS_M"),
];

/// Looks at the start of `disk` and says what it holds.
///
/// ```
/// use disk_io::MemDisk;
/// use image_convert::{inspect, GuestContent};
/// assert_eq!(inspect(&MemDisk::new(1 << 20))?, GuestContent::Blank);
/// # Ok::<(), disk_io::Error>(())
/// ```
pub fn inspect<D: ReadAt + ?Sized>(disk: &D) -> Result<GuestContent> {
    let raw = match probe_raw_content(disk)? {
        Detected::Raw(raw) => raw,
        _ => RawContent::Other,
    };
    match raw {
        RawContent::Gpt { sector_size } => {
            return Ok(GuestContent::Table(TableKind::Gpt { sector_size }));
        }
        RawContent::Mbr => return Ok(GuestContent::Table(TableKind::Mbr)),
        RawContent::Blank => return Ok(GuestContent::Blank),
        RawContent::Other => {}
    }
    if let Some(t) = fs_fat::probe(disk)? {
        return Ok(GuestContent::FileSystem(FileSystem::Fat(t)));
    }
    if fs_ntfs::probe(disk)? {
        return Ok(GuestContent::FileSystem(FileSystem::Ntfs));
    }
    if let Some(v) = fs_ext::probe(disk)? {
        return Ok(GuestContent::FileSystem(FileSystem::Ext(v)));
    }
    for &(name, offset, magic) in FOREIGN {
        let mut buf = [0u8; 16];
        let buf = buf.get_mut(..magic.len()).unwrap_or(&mut []);
        if offset + magic.len() as u64 <= disk.size() {
            disk.read_at(offset, buf)?;
            if buf == magic {
                return Ok(GuestContent::Foreign(name));
            }
        }
    }
    Ok(GuestContent::Unrecognised)
}

/// Fuzzing entry point shared by the `inspect` fuzz target and the corpus
/// replay test: inspects any bytes as a guest disk. Must never panic.
pub fn fuzz_inspect(data: &[u8]) {
    let _ = inspect(data);
}
