//! The VDI pre-header and header, version 1.1 (VirtualBox's `VDIHEADER1`,
//! as qemu's block/vdi.c writes it). All fields are little-endian.
//!
//! ```text
//! 0x000  text[64]            "<<< ... Disk Image >>>\n"
//! 0x040  signature  u32      0xbeda107f
//! 0x044  version    u32      major << 16 | minor (0x00010001)
//! 0x048  header_size u32     0x180 (v1), 0x190 (v1 plus LCHS geometry)
//! 0x04c  image_type u32      1 dynamic, 2 static, 3 undo, 4 differencing
//! 0x050  image_flags u32
//! 0x054  comment[256]
//! 0x154  offset_bmap u32     file offset of the block map
//! 0x158  offset_data u32     file offset of block 0
//! 0x15c  legacy geometry     cylinders, heads, sectors, sector_size (u32 each)
//! 0x16c  unused u32
//! 0x170  disk_size u64       guest size in bytes
//! 0x178  block_size u32
//! 0x17c  block_extra u32     bytes before each block's data
//! 0x180  blocks u32          entries of the block map
//! 0x184  blocks_allocated u32
//! 0x188  uuid_create         this image
//! 0x198  uuid_modify         changed on every modification
//! 0x1a8  uuid_link           parent's uuid_create (differencing images)
//! 0x1b8  uuid_parent_modify  parent's uuid_modify when this child was made
//! ```

use alloc::format;
use alloc::string::String;

use disk_io::bytes::{le_u32, le_u64};
use disk_io::{Error, ReadAt, Result};

/// `0xbeda107f` at offset 0x40.
pub const SIGNATURE: u32 = 0xbeda_107f;
/// Offset of the signature.
pub const SIGNATURE_OFFSET: u64 = 0x40;
/// Bytes of pre-header and header read.
pub const HEADER_LEN: usize = 0x200;
/// Size of a version 1 header (from `header_size` on).
pub const HEADER1_SIZE: u32 = 0x180;
/// Largest block size accepted (VirtualBox and qemu use 1 MiB).
pub const MAX_BLOCK_SIZE: u32 = 1 << 30;
/// Most block map entries accepted (256 MiB of map, 64 TiB of 1 MiB blocks).
pub const MAX_BLOCKS: u32 = 1 << 26;
/// Offsets of the four UUIDs.
pub mod uuid_at {
    /// This image's identity.
    pub const CREATE: usize = 0x188;
    /// Changed on every modification of the image.
    pub const MODIFY: usize = 0x198;
    /// The parent's `CREATE` (differencing images).
    pub const LINK: usize = 0x1a8;
    /// The parent's `MODIFY` when the child was made.
    pub const PARENT_MODIFY: usize = 0x1b8;
}

/// A VDI UUID, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// True for the all-zero UUID (no parent).
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Reads the UUID at `at` of the header bytes `head`.
    pub fn at(head: &[u8], at: usize) -> Uuid {
        let mut u = [0u8; 16];
        if let Some(b) = head.get(at..at + 16) {
            u.copy_from_slice(b);
        }
        Uuid(u)
    }
}

impl core::fmt::Display for Uuid {
    /// RTUUID layout: the first three fields little-endian.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in b.iter().skip(10) {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

/// The image type field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageType {
    /// Blocks allocated on first write (VirtualBox "normal").
    Dynamic,
    /// Every block allocated at creation (VirtualBox "fixed").
    Static,
    /// Blocks not held here are read from the parent.
    Differencing,
}

impl ImageType {
    /// The name `vdisk info` shows as the subformat.
    pub fn name(self) -> &'static str {
        match self {
            ImageType::Dynamic => "dynamic",
            ImageType::Static => "static",
            ImageType::Differencing => "differencing",
        }
    }
}

/// The header fields this reader uses, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Image type.
    pub image_type: ImageType,
    /// Comment, up to the first NUL.
    pub comment: String,
    /// File offset of the block map.
    pub offset_bmap: u64,
    /// File offset of block 0 (its extra data first).
    pub offset_data: u64,
    /// Guest size in bytes.
    pub disk_size: u64,
    /// Bytes of guest data per block.
    pub block_size: u32,
    /// Bytes before each block's data.
    pub block_extra: u32,
    /// Entries of the block map.
    pub blocks: u32,
    /// Blocks allocated, as the header says.
    pub blocks_allocated: u32,
    /// This image.
    pub uuid_create: Uuid,
    /// Last modification.
    pub uuid_modify: Uuid,
    /// Parent's `uuid_create` (differencing images).
    pub uuid_link: Uuid,
    /// Parent's `uuid_modify` when this child was made.
    pub uuid_parent_modify: Uuid,
}

impl Header {
    /// File offset of block map entry `index`.
    pub fn map_entry_offset(&self, index: u64) -> u64 {
        self.offset_bmap + index * 4
    }

    /// Bytes one block takes in the file (extra data and guest data).
    pub fn block_stride(&self) -> u64 {
        u64::from(self.block_size) + u64::from(self.block_extra)
    }

    /// File offset of the guest data of the block stored at position
    /// `stored` of the data area.
    pub fn block_data_offset(&self, stored: u32) -> Option<u64> {
        self.block_stride()
            .checked_mul(u64::from(stored))?
            .checked_add(self.offset_data)?
            .checked_add(u64::from(self.block_extra))
    }

    /// Reads and checks the pre-header and header of `file`: the block map
    /// must lie inside the file and the blocks must cover the disk.
    pub fn read<D: ReadAt + ?Sized>(file: &D) -> Result<Header> {
        let file_size = file.size();
        let head = disk_io::read_vec(file, 0, file_size.min(HEADER_LEN as u64) as usize)?;
        let field = |at: usize, name: &str| {
            le_u32(&head, at).ok_or_else(|| {
                Error::corrupt(format!("vdi header truncated before {name}"), at as u64)
            })
        };
        if field(0x40, "signature")? != SIGNATURE {
            return Err(Error::corrupt("vdi pre-header: bad signature", 0x40));
        }
        let version = field(0x44, "version")?;
        let (major, minor) = (version >> 16, version & 0xffff);
        if major == 0 {
            return Err(Error::unsupported(format!(
                "vdi header version 0.{minor} (VirtualBox 1.x images)"
            ))
            .at(0x44));
        }
        if major != 1 {
            return Err(Error::unsupported(format!("vdi header version {major}.{minor}")).at(0x44));
        }
        let header_size = field(0x48, "header_size")?;
        if header_size < HEADER1_SIZE {
            return Err(Error::corrupt(
                format!("vdi header: header_size {header_size:#x} < {HEADER1_SIZE:#x}"),
                0x48,
            ));
        }
        let image_type = match field(0x4c, "image_type")? {
            1 => ImageType::Dynamic,
            2 => ImageType::Static,
            4 => ImageType::Differencing,
            3 => return Err(Error::unsupported("vdi undo image (image type 3)").at(0x4c)),
            t => {
                return Err(Error::corrupt(format!("vdi header: image type {t}"), 0x4c));
            }
        };
        let comment = head.get(0x54..0x154).unwrap_or(&[]);
        let comment = comment
            .get(
                ..comment
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(comment.len()),
            )
            .unwrap_or(&[]);
        let sector_size = field(0x168, "sector_size")?;
        if sector_size != 512 {
            return Err(Error::unsupported(format!("vdi sector size {sector_size}")).at(0x168));
        }
        let disk_size = le_u64(&head, 0x170)
            .ok_or_else(|| Error::corrupt("vdi header truncated before disk_size", 0x170))?;
        let block_size = field(0x178, "block_size")?;
        if block_size == 0 || block_size % 512 != 0 || block_size > MAX_BLOCK_SIZE {
            return Err(Error::corrupt(
                format!("vdi header: block size {block_size} (a multiple of 512 up to 1 GiB)"),
                0x178,
            ));
        }
        let block_extra = field(0x17c, "block_extra")?;
        if block_extra > MAX_BLOCK_SIZE {
            return Err(Error::corrupt(
                format!("vdi header: block extra data of {block_extra} bytes"),
                0x17c,
            ));
        }
        let blocks = field(0x180, "blocks")?;
        if blocks > MAX_BLOCKS {
            return Err(Error::unsupported(format!(
                "vdi image of {blocks} blocks (at most {MAX_BLOCKS})"
            ))
            .at(0x180));
        }
        if u64::from(blocks) * u64::from(block_size) < disk_size {
            return Err(Error::corrupt(
                format!(
                    "vdi header: {blocks} blocks of {block_size} bytes cannot hold a {disk_size}-byte disk"
                ),
                0x180,
            ));
        }
        let offset_bmap = u64::from(field(0x154, "offset_bmap")?);
        let offset_data = u64::from(field(0x158, "offset_data")?);
        let map_end = offset_bmap + u64::from(blocks) * 4;
        if offset_bmap < 0x48 + u64::from(HEADER1_SIZE) || map_end > file_size {
            return Err(Error::corrupt(
                format!(
                    "vdi block map at {offset_bmap:#x} ({blocks} entries) overlaps the header or runs past the end of the file ({file_size:#x} bytes)"
                ),
                0x154,
            ));
        }
        if offset_data < map_end {
            return Err(Error::corrupt(
                format!(
                    "vdi data area at {offset_data:#x} overlaps the block map (ends at {map_end:#x})"
                ),
                0x158,
            ));
        }
        Ok(Header {
            image_type,
            comment: String::from_utf8_lossy(comment).into_owned(),
            offset_bmap,
            offset_data,
            disk_size,
            block_size,
            block_extra,
            blocks,
            blocks_allocated: field(0x184, "blocks_allocated")?,
            uuid_create: Uuid::at(&head, uuid_at::CREATE),
            uuid_modify: Uuid::at(&head, uuid_at::MODIFY),
            uuid_link: Uuid::at(&head, uuid_at::LINK),
            uuid_parent_modify: Uuid::at(&head, uuid_at::PARENT_MODIFY),
        })
    }
}
