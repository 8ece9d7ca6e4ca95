//! `$FILE_NAME`: a name of a file in its parent directory (also the key of
//! `$I30` index entries).

use alloc::string::String;
use alloc::vec::Vec;
use disk_io::bytes::{le_u32, le_u64};
use disk_io::{Error, Result};

use crate::attribute::{utf16, utf16_string};
use crate::record::REFERENCE_MASK;

/// The namespace of a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// Case-sensitive, any character but `/` and NUL.
    Posix,
    /// Windows long name.
    Win32,
    /// 8.3 short name.
    Dos,
    /// A name valid both as long and short name.
    Win32AndDos,
}

impl Namespace {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Namespace::Posix,
            1 => Namespace::Win32,
            2 => Namespace::Dos,
            3 => Namespace::Win32AndDos,
            _ => return None,
        })
    }

    /// True for names a directory listing shows (everything but DOS-only short names).
    pub fn is_long(self) -> bool {
        self != Namespace::Dos
    }
}

/// One `$FILE_NAME` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileName {
    /// Record number of the parent directory.
    pub parent: u64,
    /// Modification time (NTFS ticks) as of the last name update.
    pub modified: u64,
    /// Data size as of the last name update.
    pub data_size: u64,
    /// DOS attributes as of the last name update.
    pub attributes: u32,
    /// Reparse tag when the file is a reparse point.
    pub reparse_tag: u32,
    /// Namespace.
    pub namespace: Namespace,
    /// The name, UTF-16.
    pub name: Vec<u16>,
}

impl FileName {
    /// Parses a `$FILE_NAME` value (at `position`).
    pub fn parse(value: &[u8], position: u64) -> Result<Self> {
        let len = usize::from(value.get(0x40).copied().unwrap_or(0));
        let ns = value.get(0x41).copied().unwrap_or(0xff);
        let err = |what: String| Error::corrupt(alloc::format!("$FILE_NAME: {what}"), position);
        let name = value.get(0x42..0x42 + 2 * len).ok_or_else(|| {
            err(alloc::format!(
                "name of {len} characters in {} bytes",
                value.len()
            ))
        })?;
        let namespace = Namespace::from_u8(ns)
            .ok_or_else(|| err(alloc::format!("namespace {ns} (expected 0 to 3)")))?;
        if len == 0 {
            return Err(err("empty name".into()));
        }
        Ok(FileName {
            parent: le_u64(value, 0).unwrap_or(0) & REFERENCE_MASK,
            modified: le_u64(value, 0x10).unwrap_or(0),
            data_size: le_u64(value, 0x30).unwrap_or(0),
            attributes: le_u32(value, 0x38).unwrap_or(0),
            reparse_tag: le_u32(value, 0x3c).unwrap_or(0),
            namespace,
            name: utf16(name),
        })
    }

    /// The name as a string (invalid UTF-16 as U+FFFD).
    pub fn name_string(&self) -> String {
        utf16_string(&self.name)
    }
}
