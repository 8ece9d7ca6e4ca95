//! `$STANDARD_INFORMATION`: times and DOS attributes of a file.

use disk_io::bytes::{le_u32, le_u64};
use disk_io::{Error, Result};

/// DOS file attribute bits (`FILE_ATTRIBUTE_*`).
pub mod dos {
    /// Read-only.
    pub const READONLY: u32 = 0x0001;
    /// Hidden.
    pub const HIDDEN: u32 = 0x0002;
    /// System.
    pub const SYSTEM: u32 = 0x0004;
    /// Archive.
    pub const ARCHIVE: u32 = 0x0020;
    /// Sparse file.
    pub const SPARSE: u32 = 0x0200;
    /// Reparse point.
    pub const REPARSE_POINT: u32 = 0x0400;
    /// Compressed.
    pub const COMPRESSED: u32 = 0x0800;
    /// Encrypted.
    pub const ENCRYPTED: u32 = 0x4000;
    /// Directory (as used in `$FILE_NAME`: has an `$I30` index).
    pub const DIRECTORY: u32 = 0x1000_0000;
}

/// Seconds between 1601-01-01 and 1970-01-01.
const EPOCH_DIFF: i64 = 11_644_473_600;

/// Converts an NTFS time (100 ns ticks since 1601) to whole Unix seconds.
///
/// ```
/// assert_eq!(fs_ntfs::ntfs_time_to_unix(116_444_736_000_000_000), 0);
/// assert_eq!(fs_ntfs::ntfs_time_to_unix(0), -11_644_473_600);
/// ```
pub fn ntfs_time_to_unix(ticks: u64) -> i64 {
    (ticks / 10_000_000) as i64 - EPOCH_DIFF
}

/// The times and attributes of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandardInformation {
    /// Creation time, NTFS ticks.
    pub created: u64,
    /// Last data modification, NTFS ticks.
    pub modified: u64,
    /// Last MFT record change, NTFS ticks.
    pub mft_modified: u64,
    /// Last access, NTFS ticks.
    pub accessed: u64,
    /// DOS attributes ([`dos`]).
    pub attributes: u32,
    /// Key of the file's security descriptor in `$Secure` (NTFS 3.x: a
    /// 72-byte value; `None` in the 48-byte NTFS 1.x/2.x form).
    pub security_id: Option<u32>,
}

impl StandardInformation {
    /// Parses the value of a `$STANDARD_INFORMATION` attribute (at `position`).
    pub fn parse(value: &[u8], position: u64) -> Result<Self> {
        if value.len() < 0x24 {
            return Err(Error::corrupt(
                alloc::format!(
                    "$STANDARD_INFORMATION of {} bytes (expected >= 36)",
                    value.len()
                ),
                position,
            ));
        }
        Ok(StandardInformation {
            created: le_u64(value, 0).unwrap_or(0),
            modified: le_u64(value, 8).unwrap_or(0),
            mft_modified: le_u64(value, 0x10).unwrap_or(0),
            accessed: le_u64(value, 0x18).unwrap_or(0),
            attributes: le_u32(value, 0x20).unwrap_or(0),
            security_id: le_u32(value, 0x34).filter(|_| value.len() >= 0x48),
        })
    }

    /// Modification time in Unix seconds.
    pub fn mtime(&self) -> i64 {
        ntfs_time_to_unix(self.modified)
    }
}
