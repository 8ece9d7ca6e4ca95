//! Security descriptors: the self-relative `SECURITY_DESCRIPTOR` of a file,
//! found in `$Secure` (the `$SDS` stream, keyed through the `$SII` index by
//! the security id of `$STANDARD_INFORMATION`) or, on volumes older than
//! NTFS 3.0, in a `$SECURITY_DESCRIPTOR` attribute of the file itself.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use disk_io::bytes::{le_u16, le_u32, le_u64};
use disk_io::{Error, Result};

/// Largest security descriptor accepted (Windows caps ACLs at 64 KiB each).
pub const MAX_DESCRIPTOR: usize = 256 << 10;

/// The `SE_SELF_RELATIVE` control bit: offsets instead of pointers.
pub const SE_SELF_RELATIVE: u16 = 0x8000;

/// Bytes of the header of an `$SDS` entry (hash, id, offset, length) in
/// front of the descriptor it stores.
pub const SDS_HEADER: usize = 20;

/// A security identifier, e.g. `S-1-5-32-544`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sid {
    /// Revision (1).
    pub revision: u8,
    /// The 48-bit identifier authority.
    pub authority: u64,
    /// The sub-authorities (at most 15).
    pub sub_authorities: Vec<u32>,
}

impl Sid {
    /// Parses the SID at byte `at` of `bytes` (`position` is the volume
    /// offset of `bytes`, for errors).
    pub fn parse(bytes: &[u8], at: usize, position: u64) -> Result<Self> {
        let err = |m: String| Error::corrupt(alloc::format!("SID at byte {at}: {m}"), position);
        let revision = bytes
            .get(at)
            .copied()
            .ok_or_else(|| err("past the descriptor".into()))?;
        let count = usize::from(bytes.get(at + 1).copied().unwrap_or(0));
        if revision != 1 || count > 15 {
            return Err(err(alloc::format!(
                "revision {revision} with {count} sub-authorities (expected 1, <= 15)"
            )));
        }
        let auth = bytes
            .get(at + 2..at + 8)
            .ok_or_else(|| err("past the descriptor".into()))?;
        let authority = auth.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
        let mut sub_authorities = Vec::with_capacity(count);
        for i in 0..count {
            sub_authorities.push(le_u32(bytes, at + 8 + 4 * i).ok_or_else(|| {
                err(alloc::format!(
                    "{count} sub-authorities past the descriptor"
                ))
            })?);
        }
        Ok(Sid {
            revision,
            authority,
            sub_authorities,
        })
    }
}

impl fmt::Display for Sid {
    /// The string form, `S-1-5-21-...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S-{}-", self.revision)?;
        if self.authority >= 1 << 32 {
            write!(f, "{:#014x}", self.authority)?;
        } else {
            write!(f, "{}", self.authority)?;
        }
        for s in &self.sub_authorities {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

/// A self-relative security descriptor: its raw bytes and the parts a
/// listing needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityDescriptor {
    /// The descriptor as stored (self-relative), as Windows'
    /// `GetFileSecurity` and ntfs-3g's `system.ntfs_acl` return it.
    pub raw: Vec<u8>,
    /// Control flags (`SE_*`).
    pub control: u16,
    /// The owner, when present.
    pub owner: Option<Sid>,
    /// The primary group, when present.
    pub group: Option<Sid>,
    /// Byte offset of the DACL in `raw` (0: none).
    pub dacl_offset: u32,
    /// Byte offset of the SACL in `raw` (0: none).
    pub sacl_offset: u32,
}

impl SecurityDescriptor {
    /// Parses a self-relative descriptor read from volume offset `position`.
    pub fn parse(raw: Vec<u8>, position: u64) -> Result<Self> {
        let err = |m: String| Error::corrupt(alloc::format!("security descriptor: {m}"), position);
        if raw.len() < 20 || raw.len() > MAX_DESCRIPTOR {
            return Err(err(alloc::format!(
                "{} bytes (expected 20 to {MAX_DESCRIPTOR})",
                raw.len()
            )));
        }
        let revision = raw.first().copied().unwrap_or(0);
        let control = le_u16(&raw, 2).unwrap_or(0);
        if revision != 1 || control & SE_SELF_RELATIVE == 0 {
            return Err(err(alloc::format!(
                "revision {revision}, control {control:#06x} (expected 1, self-relative)"
            )));
        }
        let field = |at: usize| le_u32(&raw, at).unwrap_or(0);
        let (owner_off, group_off) = (field(4), field(8));
        let (sacl_offset, dacl_offset) = (field(12), field(16));
        for (what, off) in [
            ("owner", owner_off),
            ("group", group_off),
            ("SACL", sacl_offset),
            ("DACL", dacl_offset),
        ] {
            if off != 0 && (off < 20 || off as usize + 8 > raw.len()) {
                return Err(err(alloc::format!(
                    "{what} at byte {off} (expected 20..{})",
                    raw.len()
                )));
            }
        }
        let sid = |off: u32| -> Result<Option<Sid>> {
            match off {
                0 => Ok(None),
                o => Sid::parse(&raw, o as usize, position).map(Some),
            }
        };
        let owner = sid(owner_off)?;
        let group = sid(group_off)?;
        Ok(SecurityDescriptor {
            control,
            owner,
            group,
            dacl_offset,
            sacl_offset,
            raw,
        })
    }
}

/// An `$SII` index entry's data: where a descriptor lives in `$SDS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdsLocation {
    /// Hash of the descriptor.
    pub hash: u32,
    /// Security id.
    pub security_id: u32,
    /// Byte offset of the `$SDS` entry (its 20-byte header first).
    pub offset: u64,
    /// Bytes of the `$SDS` entry, header included.
    pub length: u32,
}

impl SdsLocation {
    /// Parses the 20-byte data of an `$SII` entry (or an `$SDS` entry header).
    pub fn parse(data: &[u8], position: u64) -> Result<Self> {
        let (Some(hash), Some(security_id), Some(offset), Some(length)) = (
            le_u32(data, 0),
            le_u32(data, 4),
            le_u64(data, 8),
            le_u32(data, 16),
        ) else {
            return Err(Error::corrupt(
                alloc::format!("$SII entry data of {} bytes (expected 20)", data.len()),
                position,
            ));
        };
        let loc = SdsLocation {
            hash,
            security_id,
            offset,
            length,
        };
        let len = loc.length as usize;
        if !(SDS_HEADER + 20..=SDS_HEADER + MAX_DESCRIPTOR).contains(&len) {
            return Err(Error::corrupt(
                alloc::format!(
                    "$SDS entry of security id {} with length {len} (expected {} to {})",
                    loc.security_id,
                    SDS_HEADER + 20,
                    SDS_HEADER + MAX_DESCRIPTOR
                ),
                position,
            ));
        }
        Ok(loc)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn parses_owner_and_group() {
        // Owner S-1-5-32-544 (Administrators), group S-1-5-21-1-2-3-513.
        let mut sd = alloc::vec![1u8, 0, 0x04, 0x80];
        sd.extend_from_slice(&20u32.to_le_bytes());
        sd.extend_from_slice(&36u32.to_le_bytes());
        sd.extend_from_slice(&0u32.to_le_bytes());
        sd.extend_from_slice(&0u32.to_le_bytes());
        sd.extend_from_slice(&[1, 2, 0, 0, 0, 0, 0, 5]);
        sd.extend_from_slice(&32u32.to_le_bytes());
        sd.extend_from_slice(&544u32.to_le_bytes());
        sd.extend_from_slice(&[1, 5, 0, 0, 0, 0, 0, 5]);
        for s in [21u32, 1, 2, 3, 513] {
            sd.extend_from_slice(&s.to_le_bytes());
        }
        let d = SecurityDescriptor::parse(sd.clone(), 0).unwrap();
        assert_eq!(d.owner.unwrap().to_string(), "S-1-5-32-544");
        assert_eq!(d.group.unwrap().to_string(), "S-1-5-21-1-2-3-513");
        // A group SID cut short is an error, not a panic.
        sd.truncate(50);
        assert!(SecurityDescriptor::parse(sd, 0).is_err());
    }
}
