//! Creation parameters of a new VHD and the bytes of its footer and
//! dynamic disk header, laid out as Microsoft's Virtual Hard Disk Image
//! Format Specification gives them and sized as qemu-img sizes them.
//!
//! The guest size: without `force_size`, the CHS geometry of the
//! specification's algorithm for the smallest sector count at or above the
//! requested size, and the guest is the geometry's sectors (what Virtual PC
//! and qemu read); with `force_size` (Azure's rule: the exact size, the
//! geometry the largest CHS can express) the requested size itself.
//! The creator application is `qemu`, or `qem2` with `force_size`: the
//! marks that make qemu (and this crate's reader) use the CHS geometry or
//! the current-size field respectively, so every reader agrees on the size.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::{Error, Result};

use super::footer::{self, MAX_GEOMETRY_SECTORS, checksum};
use crate::options::CreateOptions;

/// Block size of new dynamic and differencing disks (qemu's and Hyper-V's
/// 2 MiB; qemu has no option for it).
pub const BLOCK_SIZE: u32 = 2 << 20;
/// Largest guest size in sectors (2040 GiB), as qemu allows.
pub const MAX_SECTORS: u64 = 0xff00_0000;
/// Offset of the dynamic disk header in new images.
pub const HEADER_OFFSET: u64 = 512;
/// Offset of the BAT in new images.
pub const BAT_OFFSET: u64 = HEADER_OFFSET + super::dynamic_header::SIZE as u64;
/// Option keys a VHD image takes (`preallocation=off` only).
pub const KEYS: [&str; 5] = [
    "subformat",
    "force_size",
    "backing_file",
    "backing_fmt",
    "preallocation",
];

/// Fixed or dynamic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subformat {
    /// Blocks allocated on demand (the default).
    Dynamic,
    /// The whole guest disk stored, then the footer.
    Fixed,
}

/// How a new VHD image is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Fixed or dynamic (a child is always a differencing disk).
    pub subformat: Subformat,
    /// Keep the exact size asked for (a whole number of sectors), as Azure
    /// requires, instead of rounding it up to a CHS geometry.
    pub force_size: bool,
    /// Parent file name, relative to the child's directory.
    pub backing_file: Option<String>,
}

impl Params {
    /// The parameters `-o` options ask for, checked.
    pub fn from_options(o: &CreateOptions) -> Result<Params> {
        o.only(&KEYS, "vhd")?;
        let subformat = match o.get("subformat") {
            None | Some("dynamic") => Subformat::Dynamic,
            Some("fixed") => Subformat::Fixed,
            Some(v) => {
                return Err(Error::invalid_input(format!(
                    "format option subformat={v}: expected dynamic or fixed"
                )));
            }
        };
        match o.get("preallocation") {
            None | Some("off") => {}
            Some(v) => {
                return Err(Error::unsupported(format!(
                    "format option preallocation={v} for vhd images (only off)"
                )));
            }
        }
        let force_size = o.flag("force_size", false)?;
        let backing_file = match o.get("backing_file") {
            None => None,
            Some("") => return Err(Error::invalid_input("empty backing file name")),
            Some(name) => Some(String::from(name)),
        };
        match o.get("backing_fmt") {
            None | Some("vpc" | "vhd") => {}
            Some(v) => {
                return Err(Error::invalid_input(format!(
                    "format option backing_fmt={v}: a vhd differencing disk's parent is a vhd"
                )));
            }
        }
        if o.get("backing_fmt").is_some() && backing_file.is_none() {
            return Err(Error::invalid_input(
                "format option backing_fmt without backing_file",
            ));
        }
        if backing_file.is_some() && subformat == Subformat::Fixed {
            return Err(Error::invalid_input(
                "a vhd with a backing file is a differencing disk, not subformat=fixed",
            ));
        }
        Ok(Params {
            subformat,
            force_size,
            backing_file,
        })
    }
}

/// A CHS geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors: u8,
}

impl Geometry {
    /// The largest geometry: 65535 cylinders, 16 heads, 255 sectors.
    pub const MAX: Geometry = Geometry {
        cylinders: 65535,
        heads: 16,
        sectors: 255,
    };

    /// Sectors the geometry addresses.
    pub fn total(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors)
    }

    /// The geometry the specification's algorithm (appendix "CHS
    /// calculation") gives `total_sectors`: 17, 31, 63 then 255 sectors
    /// per track, at most 16 heads, cylinders rounded down.
    pub fn for_sectors(total_sectors: u64) -> Geometry {
        let total = total_sectors.min(MAX_GEOMETRY_SECTORS);
        let (sectors, heads, cyl_heads) = if total >= 65535 * 16 * 63 {
            (255u64, 16u64, total / 255)
        } else {
            let mut spt = 17u64;
            let mut cyl_heads = total / spt;
            let mut heads = cyl_heads.div_ceil(1024).max(4);
            if cyl_heads >= heads * 1024 || heads > 16 {
                spt = 31;
                heads = 16;
                cyl_heads = total / spt;
            }
            if cyl_heads >= heads * 1024 {
                spt = 63;
                heads = 16;
                cyl_heads = total / spt;
            }
            (spt, heads, cyl_heads)
        };
        Geometry {
            cylinders: u16::try_from(cyl_heads / heads).unwrap_or(u16::MAX),
            heads: heads as u8,
            sectors: sectors as u8,
        }
    }
}

/// The size and geometry of a new image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Geometry of the footer.
    pub geometry: Geometry,
    /// Guest size in bytes (the footer's original and current size).
    pub size: u64,
    /// The creator application: `qem2` when the size is exact, `qemu`
    /// when it is the geometry's.
    pub creator: [u8; 4],
}

impl Shape {
    /// The shape qemu-img gives a new image of `size` bytes: rounded up to
    /// a whole sector, then (unless `force_size`) up to the first CHS
    /// geometry that holds it; past the largest geometry, the exact size
    /// with that geometry. At most 2040 GiB.
    pub fn new(size: u64, force_size: bool) -> Result<Shape> {
        let sectors = size.div_ceil(512);
        let too_big = || {
            Error::invalid_input(format!(
                "a {size}-byte vhd is larger than the format's 2040 GiB"
            ))
        };
        if sectors > MAX_SECTORS {
            return Err(too_big());
        }
        if force_size {
            return Ok(Shape {
                geometry: Geometry::MAX,
                size: sectors * 512,
                creator: *b"qem2",
            });
        }
        // The geometry of a few sectors more is tried until one holds the
        // disk; it always does within a track of 255 sectors on 16 heads.
        let want = sectors.min(MAX_GEOMETRY_SECTORS);
        let geometry = (0..=16 * 255 * 2)
            .map(|i| Geometry::for_sectors(want + i))
            .find(|g| g.total() >= want)
            .ok_or_else(too_big)?;
        let total = if geometry.total() == MAX_GEOMETRY_SECTORS {
            sectors
        } else {
            geometry.total()
        };
        Ok(Shape {
            geometry,
            size: total * 512,
            creator: *b"qemu",
        })
    }

    /// The shape of a differencing disk over a parent whose footer says
    /// `geometry` and `size` (its guest size as read): the same, with the
    /// creator that makes every reader see the parent's size.
    pub fn of_parent(geometry: Geometry, size: u64) -> Shape {
        let creator = if geometry.total() * 512 == size && geometry != Geometry::MAX {
            *b"qemu"
        } else {
            *b"qem2"
        };
        Shape {
            geometry,
            size,
            creator,
        }
    }
}

/// Seconds since the VHD epoch (2000-01-01 UTC) now.
pub fn now() -> u32 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    unix.saturating_sub(footer::VHD_EPOCH) as u32
}

/// A new random unique id (version 4 UUID), from the standard library's
/// randomly keyed hasher: no extra dependency for 16 bytes.
pub fn new_unique_id() -> [u8; 16] {
    use core::hash::{BuildHasher, Hasher};
    let mut id = [0u8; 16];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for (i, half) in id.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_usize(i);
        half.copy_from_slice(&h.finish().to_be_bytes());
    }
    if let Some(b) = id.get_mut(6) {
        *b = (*b & 0x0f) | 0x40;
    }
    if let Some(b) = id.get_mut(8) {
        *b = (*b & 0x3f) | 0x80;
    }
    id
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    if let Some(d) = b.get_mut(at..at + 4) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    if let Some(d) = b.get_mut(at..at + 8) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

/// The disk type field of a footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewType {
    /// 2.
    Fixed,
    /// 3.
    Dynamic,
    /// 4.
    Differencing,
}

/// The footer of a new image: features 2 (the reserved bit the
/// specification requires), version 1.0, creator version 5.3 on `Wi2k`
/// (as qemu writes them), the shape, type, unique id and checksum.
pub fn footer_bytes(shape: &Shape, kind: NewType, unique_id: [u8; 16], timestamp: u32) -> Vec<u8> {
    let mut f = vec![0u8; footer::SIZE];
    if let Some(d) = f.get_mut(..8) {
        d.copy_from_slice(footer::COOKIE);
    }
    put32(&mut f, 8, 2);
    put32(&mut f, 12, 0x0001_0000);
    let data_offset = match kind {
        NewType::Fixed => u64::MAX,
        _ => HEADER_OFFSET,
    };
    put64(&mut f, 16, data_offset);
    put32(&mut f, 24, timestamp);
    if let Some(d) = f.get_mut(28..32) {
        d.copy_from_slice(&shape.creator);
    }
    put32(&mut f, 32, 0x0005_0003);
    if let Some(d) = f.get_mut(36..40) {
        d.copy_from_slice(b"Wi2k");
    }
    put64(&mut f, 40, shape.size);
    put64(&mut f, 48, shape.size);
    if let Some(d) = f.get_mut(56..58) {
        d.copy_from_slice(&shape.geometry.cylinders.to_be_bytes());
    }
    if let Some(d) = f.get_mut(58..60) {
        d.copy_from_slice(&[shape.geometry.heads, shape.geometry.sectors]);
    }
    let t = match kind {
        NewType::Fixed => 2,
        NewType::Dynamic => 3,
        NewType::Differencing => 4,
    };
    put32(&mut f, 60, t);
    if let Some(d) = f.get_mut(68..84) {
        d.copy_from_slice(&unique_id);
    }
    seal(&mut f, 64);
    f
}

/// Stores the checksum of `bytes` in its field at `at`.
pub fn seal(bytes: &mut [u8], at: usize) {
    put32(bytes, at, 0);
    let c = checksum(bytes, at);
    put32(bytes, at, c);
}

/// What a differencing disk records of its parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentRecord {
    /// The parent's unique id (its footer's).
    pub unique_id: [u8; 16],
    /// The parent's modification time, seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// The parent's file name (the header's parent unicode name).
    pub name: String,
    /// Locator entries: platform code, data space, data length, offset.
    pub locators: Vec<([u8; 4], u32, u32, u64)>,
}

/// Fills the parent fields of the 1024-byte header `h`: unique id, time
/// stamp, unicode name (UTF-16 big-endian, at most 256 units) and the
/// eight locator entries (the given ones first, the rest cleared).
pub fn put_parent(h: &mut [u8], p: &ParentRecord) -> Result<()> {
    if let Some(d) = h.get_mut(40..56) {
        d.copy_from_slice(&p.unique_id);
    }
    put32(h, 56, p.timestamp);
    let units: Vec<u16> = p.name.encode_utf16().collect();
    if units.len() > 256 {
        return Err(Error::invalid_input(format!(
            "vhd parent name '{}' is longer than 256 UTF-16 units",
            p.name
        )));
    }
    if let Some(d) = h.get_mut(64..576) {
        d.fill(0);
    }
    for (i, u) in units.iter().enumerate() {
        if let Some(d) = h.get_mut(64 + 2 * i..66 + 2 * i) {
            d.copy_from_slice(&u.to_be_bytes());
        }
    }
    if p.locators.len() > super::dynamic_header::LOCATORS {
        return Err(Error::invalid_input("more than 8 vhd parent locators"));
    }
    if let Some(d) = h.get_mut(576..576 + 24 * 8) {
        d.fill(0);
    }
    for (i, (code, space, len, at)) in p.locators.iter().enumerate() {
        let e = 576 + 24 * i;
        if let Some(d) = h.get_mut(e..e + 4) {
            d.copy_from_slice(code);
        }
        put32(h, e + 4, *space);
        put32(h, e + 8, *len);
        put64(h, e + 16, *at);
    }
    Ok(())
}

/// The dynamic disk header of a new image: no next structure, the BAT at
/// `table_offset` with `entries` entries of `block_size`-byte blocks,
/// version 1.0, the parent's record for a differencing disk.
pub fn header_bytes(
    table_offset: u64,
    entries: u32,
    block_size: u32,
    parent: Option<&ParentRecord>,
) -> Result<Vec<u8>> {
    let mut h = vec![0u8; super::dynamic_header::SIZE];
    if let Some(d) = h.get_mut(..8) {
        d.copy_from_slice(super::dynamic_header::COOKIE);
    }
    put64(&mut h, 8, u64::MAX);
    put64(&mut h, 16, table_offset);
    put32(&mut h, 24, 0x0001_0000);
    put32(&mut h, 28, entries);
    put32(&mut h, 32, block_size);
    if let Some(p) = parent {
        put_parent(&mut h, p)?;
    }
    seal(&mut h, 36);
    Ok(h)
}

/// The platform data of a `W2ru`/`W2ku` locator: `path` with `\`
/// separators, UTF-16 little-endian, no terminator.
pub fn locator_data(path: &str) -> Vec<u8> {
    path.replace('/', "\\")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn geometry_rounds_up_as_qemu() {
        // 16 MiB: 482 x 4 x 17 (qemu-img shows 16781312 bytes).
        let s = Shape::new(16 << 20, false).unwrap();
        assert_eq!(
            s.geometry,
            Geometry {
                cylinders: 482,
                heads: 4,
                sectors: 17
            }
        );
        assert_eq!(s.size, 16_781_312);
        let s = Shape::new(16 << 20, true).unwrap();
        assert_eq!(
            (s.size, s.geometry, &s.creator),
            (16 << 20, Geometry::MAX, b"qem2")
        );
        let s = Shape::new(3 << 40, false);
        assert!(s.is_err());
        let s = Shape::new(1 << 40, false).unwrap();
        assert_eq!((s.size, s.geometry), (1 << 40, Geometry::MAX));
    }

    #[test]
    fn footer_and_header_verify() {
        let s = Shape::new(100 << 20, false).unwrap();
        let f = footer_bytes(&s, NewType::Dynamic, [7; 16], 5);
        let parsed = super::super::Footer::parse(&f, 0).unwrap();
        assert!(parsed.checksum_ok());
        assert_eq!(parsed.virtual_size(), s.size);
        let p = ParentRecord {
            unique_id: [1; 16],
            timestamp: 9,
            name: "base.vhd".into(),
            locators: vec![(*b"W2ru", 512, 24, 4096)],
        };
        let h = header_bytes(BAT_OFFSET, 50, BLOCK_SIZE, Some(&p)).unwrap();
        let parsed = super::super::DynamicHeader::read(&h[..], 0).unwrap();
        assert!(parsed.checksum_ok());
        assert_eq!(parsed.parent_name, "base.vhd");
        assert_eq!(parsed.locators.len(), 1);
        assert_eq!(parsed.parent_timestamp, 9);
    }
}
