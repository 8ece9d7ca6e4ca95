//! Extended attributes: in the inode after `i_extra_isize` (a 4-byte magic,
//! then entries, values at offsets from the first entry) and in one
//! external block (`i_file_acl`: a 32-byte header, entries, values at
//! offsets from the block start). A value may live in an inode of its own
//! (`ea_inode`): the entry then names that inode and the value size.

use alloc::format;
use alloc::vec::Vec;

use disk_io::bytes::{le_u16, le_u32};
use disk_io::{Error, Result};

/// Magic of the in-inode area and of xattr blocks.
pub const MAGIC: u32 = 0xea02_0000;
/// Most entries accepted in one area.
pub const MAX_ENTRIES: usize = 4096;

/// Where an attribute's value is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// The bytes, stored with the entry.
    Inline(Vec<u8>),
    /// In the data of inode `ino` (`size` bytes): `ea_inode`.
    Inode {
        /// The inode holding the value.
        ino: u32,
        /// Value length.
        size: u32,
    },
}

/// One attribute with its full name (`user.x`, `security.selinux`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    /// Name with the namespace prefix.
    pub name: Vec<u8>,
    /// The value.
    pub value: Value,
}

/// The prefix of name index `index`; `None` for unknown indexes.
pub fn prefix(index: u8) -> Option<&'static str> {
    Some(match index {
        0 => "",
        1 => "user.",
        2 => "system.posix_acl_access",
        3 => "system.posix_acl_default",
        4 => "trusted.",
        6 => "security.",
        7 => "system.",
        8 => "system.richacl",
        _ => return None,
    })
}

/// Parses the entries in `area` starting at `first`; values are at
/// `value_base + e_value_offs` inside `area`. `offset` is the volume
/// offset of `area`, for messages.
pub fn parse_entries(
    area: &[u8],
    first: usize,
    value_base: usize,
    what: &dyn core::fmt::Display,
    offset: u64,
    out: &mut Vec<Xattr>,
) -> Result<()> {
    let mut at = first;
    let mut n = 0usize;
    loop {
        // The list ends with four zero bytes (or at the end of the area).
        match le_u32(area, at) {
            None | Some(0) => return Ok(()),
            Some(_) => {}
        }
        n += 1;
        if n > MAX_ENTRIES {
            return Err(Error::corrupt(
                format!("{what}: more than {MAX_ENTRIES} xattr entries"),
                offset + at as u64,
            ));
        }
        let name_len = usize::from(area.get(at).copied().unwrap_or(0));
        let index = area.get(at + 1).copied().unwrap_or(0);
        let value_offs = usize::from(le_u16(area, at + 2).unwrap_or(0));
        let value_inum = le_u32(area, at + 4).unwrap_or(0);
        let value_size = le_u32(area, at + 8).unwrap_or(0);
        let name = area.get(at + 16..at + 16 + name_len).ok_or_else(|| {
            Error::corrupt(
                format!("{what}: xattr entry name runs past its area"),
                offset + at as u64,
            )
        })?;
        let mut full = Vec::new();
        match prefix(index) {
            Some(p) => full.extend_from_slice(p.as_bytes()),
            None => full.extend_from_slice(format!("index{index}.").as_bytes()),
        }
        full.extend_from_slice(name);
        let value = if value_inum != 0 {
            Value::Inode {
                ino: value_inum,
                size: value_size,
            }
        } else {
            let start = value_base.saturating_add(value_offs);
            let end = usize::try_from(value_size)
                .ok()
                .and_then(|n| start.checked_add(n))
                .unwrap_or(usize::MAX);
            let bytes = area
                .get(start..end)
                .ok_or_else(|| {
                    Error::corrupt(
                        format!(
                            "{what}: xattr value of {value_size} bytes at {value_offs} runs past its area"
                        ),
                        offset + at as u64,
                    )
                })?;
            Value::Inline(bytes.to_vec())
        };
        out.push(Xattr { name: full, value });
        at += (16 + name_len).next_multiple_of(4);
    }
}

/// Parses the in-inode area (`Inode::xattr_area`).
pub fn parse_ibody(area: &[u8], ino: u32, offset: u64, out: &mut Vec<Xattr>) -> Result<()> {
    if le_u32(area, 0) != Some(MAGIC) {
        return Ok(());
    }
    let body = area.get(4..).unwrap_or(&[]);
    parse_entries(body, 0, 0, &format_args!("inode {ino}"), offset + 4, out)
}

/// Parses an xattr block (header checked).
pub fn parse_block(block: &[u8], ino: u32, offset: u64, out: &mut Vec<Xattr>) -> Result<()> {
    let magic = le_u32(block, 0).unwrap_or(0);
    if magic != MAGIC {
        return Err(Error::corrupt(
            format!("inode {ino}: xattr block magic {magic:#010x}"),
            offset,
        ));
    }
    let blocks = le_u32(block, 8).unwrap_or(0);
    if blocks != 1 {
        return Err(Error::corrupt(
            format!("inode {ino}: xattr block spans {blocks} blocks"),
            offset + 8,
        ));
    }
    parse_entries(
        block,
        32,
        0,
        &format_args!("inode {ino} xattr block"),
        offset,
        out,
    )
}
