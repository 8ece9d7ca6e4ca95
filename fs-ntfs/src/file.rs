//! A file: its base FILE record and the attributes gathered from it and
//! from its extension records, owned.

use alloc::string::String;
use alloc::vec::Vec;
use disk_io::{Error, Result};

use crate::attribute::{Attribute, AttributeFlags, Value, types, utf16_string};
use crate::file_name::{FileName, Namespace};
use crate::record::RecordFlags;
use crate::run_list::Run;
use crate::standard_information::StandardInformation;

/// A file (or directory) of the volume with all its attributes.
#[derive(Clone, Debug)]
pub struct File {
    /// MFT record number of the base record.
    pub number: u64,
    /// Sequence number of the base record.
    pub sequence: u16,
    /// Flags of the base record.
    pub flags: RecordFlags,
    /// Every attribute, from the base and extension records.
    pub attributes: Vec<Attribute>,
}

/// Where a stream's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamData {
    /// In the FILE record.
    Resident(Vec<u8>),
    /// In clusters; the runs of all extents, sorted by VCN.
    Runs(Vec<Run>),
}

/// An attribute value as one byte stream (all extents merged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// Attribute type.
    pub ty: u32,
    /// Attribute name, UTF-16 (empty for the unnamed stream).
    pub name: Vec<u16>,
    /// Logical size in bytes.
    pub size: u64,
    /// Bytes initialised; the rest reads as zeros.
    pub initialized_size: u64,
    /// Log2 of clusters per compression unit (0: not compressed).
    pub compression_unit: u8,
    /// Flags of the first extent.
    pub flags: AttributeFlags,
    /// Position of the first extent's attribute record on the volume.
    pub position: u64,
    /// The MFT record holding the first extent's attribute record.
    pub record: u64,
    /// Resident bytes or runs.
    pub data: StreamData,
}

impl File {
    /// True when the record is in use.
    pub fn in_use(&self) -> bool {
        self.flags.in_use()
    }

    /// True for a directory.
    pub fn is_directory(&self) -> bool {
        self.flags.is_directory()
    }

    /// The `$STANDARD_INFORMATION`, when present and valid.
    pub fn standard_information(&self) -> Result<Option<StandardInformation>> {
        match self
            .attributes
            .iter()
            .find(|a| a.ty == types::STANDARD_INFORMATION)
        {
            Some(a) => Ok(Some(StandardInformation::parse(
                a.resident().ok_or_else(|| {
                    Error::corrupt("non-resident $STANDARD_INFORMATION", a.position)
                })?,
                a.position,
            )?)),
            None => Ok(None),
        }
    }

    /// Every `$FILE_NAME` of the file (several for hard links, plus DOS names).
    pub fn file_names(&self) -> Result<Vec<FileName>> {
        let mut out = Vec::new();
        for a in self.attributes.iter().filter(|a| a.ty == types::FILE_NAME) {
            let v = a
                .resident()
                .ok_or_else(|| Error::corrupt("non-resident $FILE_NAME", a.position))?;
            out.push(FileName::parse(v, a.position)?);
        }
        Ok(out)
    }

    /// The file's preferred name: a Win32 or POSIX name over a DOS one.
    pub fn name(&self) -> Result<Option<FileName>> {
        let names = self.file_names()?;
        let long = names.iter().position(|n| n.namespace.is_long());
        Ok(match long {
            Some(i) => names.into_iter().nth(i),
            None => names.into_iter().next(),
        })
    }

    /// Number of hard links as ntfs-3g counts them: the `$FILE_NAME`
    /// attributes that are not DOS-only short names.
    pub fn link_count(&self) -> Result<u64> {
        Ok(self
            .file_names()?
            .iter()
            .filter(|n| n.namespace != Namespace::Dos)
            .count() as u64)
    }

    /// The attribute of type `ty` and `name` as one stream, merging its
    /// extents; `None` when the file has no such attribute.
    pub fn stream(&self, ty: u32, name: &[u16]) -> Result<Option<Stream>> {
        let mut parts: Vec<&Attribute> = self
            .attributes
            .iter()
            .filter(|a| a.ty == ty && a.name == name)
            .collect();
        let Some(first) = parts.first().copied() else {
            return Ok(None);
        };
        if let Value::Resident(v) = &first.value {
            return Ok(Some(Stream {
                ty,
                name: name.to_vec(),
                size: v.len() as u64,
                initialized_size: v.len() as u64,
                compression_unit: 0,
                flags: first.flags,
                position: first.position,
                record: first.record,
                data: StreamData::Resident(v.clone()),
            }));
        }
        parts.sort_by_key(|a| match &a.value {
            Value::NonResident(n) => n.start_vcn,
            Value::Resident(_) => u64::MAX,
        });
        let mut runs: Vec<Run> = Vec::new();
        let mut head = None;
        let mut next_vcn = 0u64;
        for a in &parts {
            let Value::NonResident(n) = &a.value else {
                return Err(Error::corrupt(
                    alloc::format!(
                        "attribute {:#x} mixes resident and non-resident extents",
                        ty
                    ),
                    a.position,
                ));
            };
            if n.start_vcn != next_vcn {
                return Err(Error::corrupt(
                    alloc::format!(
                        "attribute {ty:#x} \"{}\" of file {}: extent starts at VCN {} (expected {next_vcn})",
                        utf16_string(name),
                        self.number,
                        n.start_vcn
                    ),
                    a.position,
                ));
            }
            if head.is_none() {
                head = Some((n, a));
            }
            runs.extend_from_slice(&n.runs);
            next_vcn = runs.last().map_or(next_vcn, |r| r.vcn + r.length);
            if next_vcn <= n.last_vcn && !n.runs.is_empty() {
                return Err(Error::corrupt(
                    alloc::format!(
                        "attribute {ty:#x}: runs end at VCN {next_vcn}, before the last VCN {}",
                        n.last_vcn
                    ),
                    a.position,
                ));
            }
        }
        let Some((n, a)) = head else {
            return Ok(None);
        };
        Ok(Some(Stream {
            ty,
            name: name.to_vec(),
            size: n.data_size,
            initialized_size: n.initialized_size.min(n.data_size),
            compression_unit: if a.flags.compressed() {
                n.compression_unit
            } else {
                0
            },
            flags: a.flags,
            position: a.position,
            record: a.record,
            data: StreamData::Runs(runs),
        }))
    }

    /// The names and sizes of the named `$DATA` streams.
    pub fn named_streams(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Vec::new();
        for a in self
            .attributes
            .iter()
            .filter(|a| a.ty == types::DATA && !a.name.is_empty())
        {
            let size = match &a.value {
                Value::Resident(v) => v.len() as u64,
                Value::NonResident(n) if n.start_vcn == 0 => n.data_size,
                Value::NonResident(_) => continue,
            };
            out.push((a.name_string(), size));
        }
        out
    }

    /// The size of the unnamed `$DATA` stream (0 when there is none).
    pub fn data_size(&self) -> u64 {
        self.attributes
            .iter()
            .filter(|a| a.ty == types::DATA && a.name.is_empty())
            .find_map(|a| match &a.value {
                Value::Resident(v) => Some(v.len() as u64),
                Value::NonResident(n) if n.start_vcn == 0 => Some(n.data_size),
                Value::NonResident(_) => None,
            })
            .unwrap_or(0)
    }

    /// The reparse tag of the file, when it is a reparse point.
    pub fn reparse_tag(&self) -> Option<u32> {
        let a = self
            .attributes
            .iter()
            .find(|a| a.ty == types::REPARSE_POINT)?;
        match &a.value {
            Value::Resident(v) => disk_io::bytes::le_u32(v, 0),
            Value::NonResident(_) => self
                .file_names()
                .ok()?
                .first()
                .map(|n| n.reparse_tag)
                .filter(|t| *t != 0),
        }
    }

    /// True when the unnamed `$DATA` stream is encrypted (EFS).
    pub fn is_encrypted(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| a.ty == types::DATA && a.flags.encrypted())
    }
}
