//! The hard disk footer: the 512-byte record every VHD ends with (and
//! dynamic and differencing disks also start with). All fields are
//! big-endian.
//!
//! Layout (Microsoft's Virtual Hard Disk Image Format Specification):
//! cookie `conectix` (0), features (8), file format version (12), data
//! offset (16), time stamp (24), creator application (28), creator version
//! (32), creator host OS (36), original size (40), current size (48), disk
//! geometry (56: cylinders u16, heads u8, sectors per track u8), disk type
//! (60), checksum (64), unique id (68, 16 bytes), saved state (84).

use alloc::format;

use disk_io::bytes::{be_u16, be_u32, be_u64};
use disk_io::{Error, ReadAt, Result};

/// `conectix`.
pub const COOKIE: &[u8; 8] = b"conectix";
/// Size of the footer.
pub const SIZE: usize = 512;
/// Offset of the checksum field.
const CHECKSUM_AT: usize = 64;
/// Largest CHS geometry (65535 cylinders, 16 heads, 255 sectors): images
/// this big keep their exact size in the current-size field.
pub const MAX_GEOMETRY_SECTORS: u64 = 65535 * 16 * 255;
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00 UTC).
pub const VHD_EPOCH: u64 = 946_684_800;

/// The disk type field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskType {
    /// The guest disk is the file, followed by the footer.
    Fixed,
    /// Blocks allocated on demand through the BAT.
    Dynamic,
    /// A dynamic disk over a parent.
    Differencing,
}

impl DiskType {
    /// The name `info` shows as the subformat.
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// The footer fields this reader uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Where in the file the footer was read.
    pub offset: u64,
    /// Offset of the dynamic disk header (all ones for fixed disks).
    pub data_offset: u64,
    /// Creation time, seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// Creator application (`vpc `, `qemu`, `qem2`, `win `, `d2v `...).
    pub creator_app: [u8; 4],
    /// Current size of the disk in bytes, as the creator wrote it.
    pub current_size: u64,
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
    /// Fixed, dynamic or differencing.
    pub disk_type: DiskType,
    /// The stored checksum.
    pub checksum: u32,
    /// The checksum the bytes add up to.
    pub computed_checksum: u32,
    /// Unique id of the disk; a differencing child names its parent by it.
    pub unique_id: [u8; 16],
}

/// The one's complement of the byte sum of `bytes`, skipping the four
/// bytes of the checksum field at `checksum_at` (the VHD checksum of the
/// footer and of the dynamic disk header).
pub fn checksum(bytes: &[u8], checksum_at: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(checksum_at..checksum_at + 4).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    !sum
}

impl Footer {
    /// True when the stored checksum matches the bytes.
    pub fn checksum_ok(&self) -> bool {
        self.checksum == self.computed_checksum
    }

    /// Parses the footer bytes `b` read at `offset` of the file; the
    /// checksum is not judged here (see [`Footer::checksum_ok`]).
    pub fn parse(b: &[u8], offset: u64) -> Result<Footer> {
        let truncated = || Error::corrupt("vhd footer truncated", offset);
        if b.get(..8) != Some(&COOKIE[..]) {
            return Err(Error::corrupt("vhd footer: no 'conectix' cookie", offset));
        }
        let field = |at: usize| be_u32(b, at).ok_or_else(truncated);
        let disk_type = match field(60)? {
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            other => {
                return Err(Error::corrupt(
                    format!(
                        "vhd footer: disk type {other} is not fixed (2), dynamic (3) or differencing (4)"
                    ),
                    offset + 60,
                ));
            }
        };
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(b.get(28..32).ok_or_else(truncated)?);
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(b.get(68..84).ok_or_else(truncated)?);
        let geometry = b.get(56..60).ok_or_else(truncated)?;
        Ok(Footer {
            offset,
            data_offset: be_u64(b, 16).ok_or_else(truncated)?,
            timestamp: field(24)?,
            creator_app,
            current_size: be_u64(b, 48).ok_or_else(truncated)?,
            cylinders: be_u16(geometry, 0).ok_or_else(truncated)?,
            heads: geometry.get(2).copied().unwrap_or(0),
            sectors_per_track: geometry.get(3).copied().unwrap_or(0),
            disk_type,
            checksum: field(CHECKSUM_AT)?,
            computed_checksum: checksum(b.get(..SIZE).ok_or_else(truncated)?, CHECKSUM_AT),
            unique_id,
        })
    }

    /// Reads the footer at `offset` of `file`, when there is one (the
    /// cookie is there); `None` when the cookie is not.
    pub fn read_at<D: ReadAt + ?Sized>(file: &D, offset: u64) -> Result<Option<Footer>> {
        if offset
            .checked_add(SIZE as u64)
            .is_none_or(|e| e > file.size())
        {
            return Ok(None);
        }
        let mut b = [0u8; SIZE];
        file.read_at(offset, &mut b)?;
        if b.get(..8) != Some(&COOKIE[..]) {
            return Ok(None);
        }
        Footer::parse(&b, offset).map(Some)
    }

    /// Sectors of the CHS geometry.
    pub fn geometry_sectors(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }

    /// The guest size in bytes as qemu computes it: Virtual PC and qemu
    /// before `qem2` (`vpc `, `qemu` and unknown creators) size a disk by
    /// its CHS geometry; Hyper-V (`win `), Disk2vhd (`d2v `), XenServer
    /// (`tap\0`), XenConverter (`CTXS`) and qemu with `force_size`
    /// (`qem2`) by the current-size field, as does any disk whose geometry
    /// is the largest CHS can express (the field then holds more).
    pub fn virtual_size(&self) -> u64 {
        let exact = matches!(
            &self.creator_app,
            b"win " | b"qem2" | b"d2v " | b"CTXS" | b"tap\0"
        );
        let chs = self.geometry_sectors();
        if exact || chs == MAX_GEOMETRY_SECTORS {
            self.current_size / 512 * 512
        } else {
            chs * 512
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn footer(creator: &[u8; 4], size: u64, chs: (u16, u8, u8)) -> [u8; SIZE] {
        let mut b = [0u8; SIZE];
        b[..8].copy_from_slice(COOKIE);
        b[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
        b[28..32].copy_from_slice(creator);
        b[40..48].copy_from_slice(&size.to_be_bytes());
        b[48..56].copy_from_slice(&size.to_be_bytes());
        b[56..58].copy_from_slice(&chs.0.to_be_bytes());
        b[58] = chs.1;
        b[59] = chs.2;
        b[60..64].copy_from_slice(&2u32.to_be_bytes());
        let c = checksum(&b, CHECKSUM_AT);
        b[64..68].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn size_rule_follows_the_creator() {
        let chs = (20, 16, 63);
        let f = Footer::parse(&footer(b"qemu", 11 << 20, chs), 0).unwrap();
        assert!(f.checksum_ok());
        assert_eq!(f.virtual_size(), 20 * 16 * 63 * 512);
        let f = Footer::parse(&footer(b"win ", 11 << 20, chs), 0).unwrap();
        assert_eq!(f.virtual_size(), 11 << 20);
        let f = Footer::parse(&footer(b"vpc ", 1 << 42, (65535, 16, 255)), 0).unwrap();
        assert_eq!(f.virtual_size(), 1 << 42);
        let mut bad = footer(b"qemu", 1 << 20, chs);
        bad[100] ^= 1;
        assert!(!Footer::parse(&bad, 0).unwrap().checksum_ok());
        bad[60..64].copy_from_slice(&7u32.to_be_bytes());
        assert!(Footer::parse(&bad, 0).is_err());
    }
}
