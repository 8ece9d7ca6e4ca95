//! `$ATTRIBUTE_LIST`: where the attributes of a file that does not fit in
//! one FILE record live (its base record and extension records).

use alloc::vec::Vec;
use disk_io::bytes::{le_u16, le_u32, le_u64};
use disk_io::{Error, Result};

use crate::attribute::utf16;
use crate::record::REFERENCE_MASK;

/// One entry of an attribute list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeListEntry {
    /// Attribute type code.
    pub ty: u32,
    /// Attribute name, UTF-16.
    pub name: Vec<u16>,
    /// First VCN of this extent (0 for resident attributes).
    pub start_vcn: u64,
    /// The FILE record holding the attribute (record number).
    pub record: u64,
    /// The attribute id inside that record.
    pub id: u16,
}

/// Most entries accepted in one attribute list.
pub const MAX_ENTRIES: usize = 65536;

/// Parses the value of an `$ATTRIBUTE_LIST` attribute (at `position`).
pub fn parse_attribute_list(value: &[u8], position: u64) -> Result<Vec<AttributeListEntry>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 0x1a <= value.len() {
        let err = |what: alloc::string::String| {
            Error::corrupt(
                alloc::format!("$ATTRIBUTE_LIST entry at byte {at}: {what}"),
                position + at as u64,
            )
        };
        let ty = le_u32(value, at).unwrap_or(0);
        let len = usize::from(le_u16(value, at + 4).unwrap_or(0));
        if len < 0x1a || at + len > value.len() {
            return Err(err(alloc::format!(
                "length {len} (expected 26..={})",
                value.len() - at
            )));
        }
        let name_len = usize::from(value.get(at + 6).copied().unwrap_or(0));
        let name_off = usize::from(value.get(at + 7).copied().unwrap_or(0));
        let name = if name_len == 0 {
            Vec::new()
        } else {
            utf16(
                value
                    .get(at + name_off..at + name_off + 2 * name_len)
                    .filter(|_| name_off + 2 * name_len <= len)
                    .ok_or_else(|| {
                        err(alloc::format!(
                            "name of {name_len} characters at {name_off} runs past the entry"
                        ))
                    })?,
            )
        };
        if out.len() >= MAX_ENTRIES {
            return Err(err(alloc::format!("more than {MAX_ENTRIES} entries")));
        }
        out.push(AttributeListEntry {
            ty,
            name,
            start_vcn: le_u64(value, at + 8).unwrap_or(0),
            record: le_u64(value, at + 0x10).unwrap_or(0) & REFERENCE_MASK,
            id: le_u16(value, at + 0x18).unwrap_or(0),
        });
        at += len;
    }
    Ok(out)
}
