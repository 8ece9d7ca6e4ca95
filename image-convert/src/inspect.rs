//! What a guest disk holds at its start: a partition table, a whole-disk
//! file system, something recognised but not handled, or nothing known.

use disk_io::{ReadAt, Result};
use fs_ext::ExtVersion;
use fs_fat::FatType;
use partition::PartitionTable;
use vdisk_format::{Detected, RawContent, probe_raw_content};

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestContent {
    /// A partition table.
    Table(PartitionTable),
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

/// Looks at `disk` and says what it holds: its partition table (read in
/// full, so a broken table is an error naming it and the offset), else a
/// whole-disk file system, else other recognised content.
///
/// ```
/// use disk_io::MemDisk;
/// use image_convert::{inspect, GuestContent};
/// assert_eq!(inspect(&MemDisk::new(1 << 20))?, GuestContent::Blank);
/// # Ok::<(), disk_io::Error>(())
/// ```
pub fn inspect<D: ReadAt + ?Sized>(disk: &D) -> Result<GuestContent> {
    if let Some(table) = partition::read(disk)? {
        return Ok(GuestContent::Table(table));
    }
    if let Some(fs) = probe_filesystem(disk)? {
        return Ok(GuestContent::FileSystem(fs));
    }
    if let Some(name) = probe_foreign(disk)? {
        return Ok(GuestContent::Foreign(name));
    }
    Ok(match raw_content(disk)? {
        RawContent::Blank => GuestContent::Blank,
        _ => GuestContent::Unrecognised,
    })
}

/// A cheap check that `disk` holds something a disk holds (a table
/// signature, a file system, other known content, or zeros), without
/// parsing any table: a conversion source need not have a valid table.
pub fn is_recognised<D: ReadAt + ?Sized>(disk: &D) -> Result<bool> {
    Ok(raw_content(disk)? != RawContent::Other
        || probe_filesystem(disk)?.is_some()
        || probe_foreign(disk)?.is_some())
}

fn raw_content<D: ReadAt + ?Sized>(disk: &D) -> Result<RawContent> {
    Ok(match probe_raw_content(disk)? {
        Detected::Raw(raw) => raw,
        _ => RawContent::Other,
    })
}

/// Which of the workspace's file systems `volume` holds, by signature.
pub fn probe_filesystem<D: ReadAt + ?Sized>(volume: &D) -> Result<Option<FileSystem>> {
    if let Some(t) = fs_fat::probe(volume)? {
        return Ok(Some(FileSystem::Fat(t)));
    }
    if fs_ntfs::probe(volume)? {
        return Ok(Some(FileSystem::Ntfs));
    }
    Ok(fs_ext::probe(volume)?.map(FileSystem::Ext))
}

fn probe_foreign<D: ReadAt + ?Sized>(disk: &D) -> Result<Option<&'static str>> {
    for &(name, offset, magic) in FOREIGN {
        let mut buf = [0u8; 16];
        let buf = buf.get_mut(..magic.len()).unwrap_or(&mut []);
        if offset + magic.len() as u64 <= disk.size() {
            disk.read_at(offset, buf)?;
            if buf == magic {
                return Ok(Some(name));
            }
        }
    }
    Ok(None)
}

/// Fuzzing entry point shared by the `inspect` fuzz target and the corpus
/// replay test: inspects any bytes as a guest disk. Must never panic.
pub fn fuzz_inspect(data: &[u8]) {
    let _ = inspect(data);
    let _ = is_recognised(data);
    // Used mode's view of the same bytes: the file systems' used maps,
    // and the filtered allocation map a used-mode copy walks.
    if let Ok(layout) = crate::used::used_layout(data) {
        let filter = crate::used::UsedFilter::new(data, &layout);
        for run in disk_io::extents(&filter, 0, u64::MAX).take(1 << 16) {
            if run.is_err() {
                break;
            }
        }
    }
}
