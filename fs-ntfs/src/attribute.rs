//! Attribute records inside FILE records: resident and non-resident
//! headers, names and flags. Parsed attributes own their bytes, so an
//! attribute found through `$ATTRIBUTE_LIST` in an extension record lives
//! as long as the caller needs it.

use alloc::string::String;
use alloc::vec::Vec;
use disk_io::bytes::{le_u16, le_u32, le_u64};
use disk_io::{Error, Result};

use crate::record::FileRecord;
use crate::run_list::{Run, decode_run_list};

/// Attribute type codes.
pub mod types {
    /// `$STANDARD_INFORMATION`.
    pub const STANDARD_INFORMATION: u32 = 0x10;
    /// `$ATTRIBUTE_LIST`.
    pub const ATTRIBUTE_LIST: u32 = 0x20;
    /// `$FILE_NAME`.
    pub const FILE_NAME: u32 = 0x30;
    /// `$SECURITY_DESCRIPTOR` (NTFS 1.x/2.x; since 3.0 in `$Secure`).
    pub const SECURITY_DESCRIPTOR: u32 = 0x50;
    /// `$VOLUME_NAME`.
    pub const VOLUME_NAME: u32 = 0x60;
    /// `$VOLUME_INFORMATION`.
    pub const VOLUME_INFORMATION: u32 = 0x70;
    /// `$DATA`.
    pub const DATA: u32 = 0x80;
    /// `$INDEX_ROOT`.
    pub const INDEX_ROOT: u32 = 0x90;
    /// `$INDEX_ALLOCATION`.
    pub const INDEX_ALLOCATION: u32 = 0xa0;
    /// `$BITMAP`.
    pub const BITMAP: u32 = 0xb0;
    /// `$REPARSE_POINT`.
    pub const REPARSE_POINT: u32 = 0xc0;
    /// End marker of the attribute sequence.
    pub const END: u32 = 0xffff_ffff;
}

/// Attribute flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AttributeFlags(pub u16);

impl AttributeFlags {
    /// Compressed (LZNT1).
    pub fn compressed(self) -> bool {
        self.0 & 0x00ff != 0
    }
    /// Encrypted (EFS).
    pub fn encrypted(self) -> bool {
        self.0 & 0x4000 != 0
    }
    /// Sparse.
    pub fn sparse(self) -> bool {
        self.0 & 0x8000 != 0
    }
}

/// Where the value of an attribute lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Inside the FILE record.
    Resident(Vec<u8>),
    /// In clusters described by a run list.
    NonResident(NonResident),
}

/// The header fields and runs of a non-resident attribute (one extent of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonResident {
    /// First VCN described by this extent.
    pub start_vcn: u64,
    /// Last VCN described by this extent.
    pub last_vcn: u64,
    /// Compression unit, log2 of clusters (0: not compressed).
    pub compression_unit: u8,
    /// Allocated bytes (first extent only).
    pub allocated_size: u64,
    /// Logical size in bytes (first extent only).
    pub data_size: u64,
    /// Initialised bytes; past them reads are zeros (first extent only).
    pub initialized_size: u64,
    /// The runs of this extent.
    pub runs: Vec<Run>,
}

/// One attribute record, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Type code ([`types`]).
    pub ty: u32,
    /// Name (empty for the unnamed attribute), UTF-16 code units.
    pub name: Vec<u16>,
    /// Flags.
    pub flags: AttributeFlags,
    /// Attribute id, unique inside its FILE record.
    pub id: u16,
    /// The record the attribute was found in.
    pub record: u64,
    /// Byte offset of the attribute record on the volume.
    pub position: u64,
    /// The value or its runs.
    pub value: Value,
}

impl Attribute {
    /// The name as a string (invalid UTF-16 as U+FFFD).
    pub fn name_string(&self) -> String {
        char::decode_utf16(self.name.iter().copied())
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }

    /// Resident value bytes, or `None` for a non-resident attribute.
    pub fn resident(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Resident(v) => Some(v),
            Value::NonResident(_) => None,
        }
    }
}

/// Parses every attribute record of `record`, in order, up to the end
/// marker. `total_clusters` bounds the runs.
pub fn parse_attributes(record: &FileRecord, total_clusters: u64) -> Result<Vec<Attribute>> {
    let bytes = &record.bytes;
    let mut out = Vec::new();
    let mut at = record.first_attribute;
    let end = record.used_size;
    loop {
        let pos = record.position + at as u64;
        let err = |what: String| {
            Error::corrupt(
                alloc::format!(
                    "MFT record {} attribute at byte {at}: {what}",
                    record.number
                ),
                pos,
            )
        };
        let ty = le_u32(bytes, at).ok_or_else(|| err("runs past the record".into()))?;
        if ty == types::END {
            break;
        }
        let length = le_u32(bytes, at + 4).unwrap_or(0) as usize;
        if length < 0x18 || !length.is_multiple_of(8) || at + length > end {
            return Err(err(alloc::format!(
                "length {length} (expected a multiple of 8, >= 24, inside the {end} used bytes)"
            )));
        }
        let Some(a) = bytes.get(at..at + length) else {
            return Err(err("runs past the record".into()));
        };
        let non_resident = a.get(8).copied().unwrap_or(0);
        let name_len = usize::from(a.get(9).copied().unwrap_or(0));
        let name_off = usize::from(le_u16(a, 0x0a).unwrap_or(0));
        let flags = AttributeFlags(le_u16(a, 0x0c).unwrap_or(0));
        let id = le_u16(a, 0x0e).unwrap_or(0);
        let name = if name_len == 0 {
            Vec::new()
        } else {
            utf16(a.get(name_off..name_off + 2 * name_len).ok_or_else(|| {
                err(alloc::format!(
                    "name of {name_len} characters at {name_off} runs past the attribute"
                ))
            })?)
        };
        let value = match non_resident {
            0 => {
                let vlen = le_u32(a, 0x10).unwrap_or(0) as usize;
                let voff = usize::from(le_u16(a, 0x14).unwrap_or(0));
                let v = a.get(voff..voff.saturating_add(vlen)).ok_or_else(|| {
                    err(alloc::format!(
                        "resident value of {vlen} bytes at {voff} runs past the attribute"
                    ))
                })?;
                Value::Resident(v.to_vec())
            }
            1 => {
                if length < 0x40 {
                    return Err(err(alloc::format!(
                        "non-resident header of {length} bytes (expected >= 64)"
                    )));
                }
                let start_vcn = le_u64(a, 0x10).unwrap_or(0);
                let last_vcn = le_u64(a, 0x18).unwrap_or(0);
                let runs_off = usize::from(le_u16(a, 0x20).unwrap_or(0));
                let compression_unit = a.get(0x22).copied().unwrap_or(0);
                let allocated_size = le_u64(a, 0x28).unwrap_or(0);
                let data_size = le_u64(a, 0x30).unwrap_or(0);
                let initialized_size = le_u64(a, 0x38).unwrap_or(0);
                if compression_unit > 16 {
                    return Err(err(alloc::format!(
                        "compression unit 2^{compression_unit} clusters (expected <= 2^16)"
                    )));
                }
                let run_bytes =
                    a.get(runs_off..)
                        .filter(|_| runs_off >= 0x40)
                        .ok_or_else(|| {
                            err(alloc::format!(
                                "run list offset {runs_off} (expected 64..{length})"
                            ))
                        })?;
                let runs =
                    decode_run_list(run_bytes, pos + runs_off as u64, start_vcn, total_clusters)
                        .map_err(|e| e.context(alloc::format!("MFT record {}", record.number)))?;
                Value::NonResident(NonResident {
                    start_vcn,
                    last_vcn,
                    compression_unit,
                    allocated_size,
                    data_size,
                    initialized_size,
                    runs,
                })
            }
            other => {
                return Err(err(alloc::format!(
                    "non-resident flag {other} (expected 0 or 1)"
                )));
            }
        };
        out.push(Attribute {
            ty,
            name,
            flags,
            id,
            record: record.number,
            position: pos,
            value,
        });
        at += length;
    }
    Ok(out)
}

/// UTF-16LE code units of `bytes` (an odd last byte is dropped).
pub fn utf16(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .collect()
}

/// A UTF-16 name as a string (invalid sequences as U+FFFD).
pub fn utf16_string(units: &[u16]) -> String {
    char::decode_utf16(units.iter().copied())
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}
