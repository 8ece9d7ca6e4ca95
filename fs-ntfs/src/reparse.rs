//! `$REPARSE_POINT`: symbolic-link and junction targets.

use alloc::string::String;
use disk_io::bytes::{le_u16, le_u32};
use disk_io::{Error, Result};

use crate::attribute::{utf16, utf16_string};

/// Reparse tag of a symbolic link.
pub const TAG_SYMLINK: u32 = 0xa000_000c;
/// Reparse tag of a junction (mount point).
pub const TAG_MOUNT_POINT: u32 = 0xa000_0003;

/// Reparse tag of a file compressed by the Windows Overlay Filter
/// (CompactOS): its data is in the `WofCompressedData` stream.
pub const TAG_WOF: u32 = 0x8000_0017;
/// Reparse tag of a file whose data Windows deduplication moved into a
/// chunk store.
pub const TAG_DEDUP: u32 = 0x8000_0013;

/// What a reparse point says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reparse {
    /// A symbolic link to `target`; `relative` when it is relative to the link's directory.
    Symlink {
        /// The print name (or substitute name when there is none).
        target: String,
        /// Relative link.
        relative: bool,
    },
    /// A junction to `target`.
    Junction {
        /// The print name (or substitute name when there is none).
        target: String,
    },
    /// Any other tag (deduplication, cloud files, WSL, …).
    Other {
        /// The tag.
        tag: u32,
    },
}

/// Parses a `$REPARSE_POINT` value (at `position`).
pub fn parse_reparse(value: &[u8], position: u64) -> Result<Reparse> {
    let err = |what: String| Error::corrupt(alloc::format!("$REPARSE_POINT: {what}"), position);
    let tag = le_u32(value, 0).ok_or_else(|| err("shorter than 8 bytes".into()))?;
    let data_len = usize::from(le_u16(value, 4).unwrap_or(0));
    let data = value.get(8..8 + data_len).ok_or_else(|| {
        err(alloc::format!(
            "{data_len} data bytes in a value of {}",
            value.len()
        ))
    })?;
    let (buffer_at, relative) = match tag {
        TAG_SYMLINK => (12, le_u32(data, 8).unwrap_or(0) & 1 != 0),
        TAG_MOUNT_POINT => (8, false),
        _ => return Ok(Reparse::Other { tag }),
    };
    let field = |at: usize| usize::from(le_u16(data, at).unwrap_or(0));
    let name = |off: usize, len: usize| -> Result<String> {
        let s = data
            .get(buffer_at + off..buffer_at + off + len)
            .ok_or_else(|| {
                err(alloc::format!(
                    "path of {len} bytes at {off} runs past the data"
                ))
            })?;
        Ok(utf16_string(&utf16(s)))
    };
    let mut target = name(field(4), field(6))?;
    if target.is_empty() {
        target = name(field(0), field(2))?;
        // A substitute name of an absolute link is an NT path: \??\C:\...
        if let Some(rest) = target.strip_prefix("\\??\\") {
            target = String::from(rest);
        }
    }
    Ok(match tag {
        TAG_SYMLINK => Reparse::Symlink { target, relative },
        _ => Reparse::Junction { target },
    })
}
