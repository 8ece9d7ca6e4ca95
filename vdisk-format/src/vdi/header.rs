//! The VDI pre-header and header, version 1.1 (VirtualBox's `VDIHEADER1`,
//! as qemu's block/vdi.c writes it) and version 0 (the first VirtualBox
//! releases: see [`V0_MAP`]). All fields are little-endian.
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
use alloc::vec::Vec;

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
/// Offset of `blocks_allocated` in a version 1 header.
pub const BLOCKS_ALLOCATED_AT: usize = 0x184;
/// The pre-header text VirtualBox writes (qemu writes its own name; only
/// the signature is checked by either).
pub const TEXT: &[u8] = b"<<< Oracle VM VirtualBox Disk Image >>>\n";
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

    /// The value of the `image_type` field.
    pub fn code(self) -> u32 {
        match self {
            ImageType::Dynamic => 1,
            ImageType::Static => 2,
            ImageType::Differencing => 4,
        }
    }
}

/// The fields of a new version 1.1 header; [`NewHeader::emit`] lays it
/// out as VirtualBox and qemu do (no comment, no legacy geometry, 512-byte
/// sectors, no block extra data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewHeader {
    /// Image type.
    pub image_type: ImageType,
    /// File offset of the block map.
    pub offset_bmap: u32,
    /// File offset of block 0.
    pub offset_data: u32,
    /// Guest size in bytes.
    pub disk_size: u64,
    /// Bytes of guest data per block.
    pub block_size: u32,
    /// Entries of the block map.
    pub blocks: u32,
    /// Blocks allocated.
    pub blocks_allocated: u32,
    /// This image.
    pub uuid_create: Uuid,
    /// Last modification.
    pub uuid_modify: Uuid,
}

impl NewHeader {
    /// The pre-header and header, [`HEADER_LEN`] bytes.
    pub fn emit(&self) -> Vec<u8> {
        let mut h = alloc::vec![0u8; HEADER_LEN];
        let mut put = |at: usize, bytes: &[u8]| {
            if let Some(dst) = h.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        };
        put(0, TEXT);
        put(0x40, &SIGNATURE.to_le_bytes());
        put(0x44, &0x0001_0001u32.to_le_bytes());
        put(0x48, &HEADER1_SIZE.to_le_bytes());
        put(0x4c, &self.image_type.code().to_le_bytes());
        put(0x154, &self.offset_bmap.to_le_bytes());
        put(0x158, &self.offset_data.to_le_bytes());
        put(0x168, &512u32.to_le_bytes());
        put(0x170, &self.disk_size.to_le_bytes());
        put(0x178, &self.block_size.to_le_bytes());
        put(0x180, &self.blocks.to_le_bytes());
        put(BLOCKS_ALLOCATED_AT, &self.blocks_allocated.to_le_bytes());
        put(uuid_at::CREATE, &self.uuid_create.0);
        put(uuid_at::MODIFY, &self.uuid_modify.0);
        h
    }
}

/// The header fields this reader uses, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Major header version (0 or 1).
    pub major: u32,
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

    /// Reads and checks the pre-header and header of `file` (version 1.x,
    /// or the version 0 header of the first VirtualBox releases): the block
    /// map must lie inside the file and the blocks must cover the disk.
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
        let at = match major {
            0 => &V0,
            1 => &V1,
            _ => {
                return Err(
                    Error::unsupported(format!("vdi header version {major}.{minor}")).at(0x44),
                );
            }
        };
        if major == 1 {
            let header_size = field(0x48, "header_size")?;
            if header_size < HEADER1_SIZE {
                return Err(Error::corrupt(
                    format!("vdi header: header_size {header_size:#x} < {HEADER1_SIZE:#x}"),
                    0x48,
                ));
            }
        }
        let image_type = match field(at.image_type, "image_type")? {
            1 => ImageType::Dynamic,
            2 => ImageType::Static,
            4 => ImageType::Differencing,
            3 => {
                return Err(
                    Error::unsupported("vdi undo image (image type 3)").at(at.image_type as u64)
                );
            }
            t => {
                return Err(Error::corrupt(
                    format!("vdi header: image type {t}"),
                    at.image_type as u64,
                ));
            }
        };
        let comment = head.get(at.comment..at.comment + 256).unwrap_or(&[]);
        let comment = comment
            .get(
                ..comment
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(comment.len()),
            )
            .unwrap_or(&[]);
        if let Some(sector_at) = at.sector_size {
            let sector_size = field(sector_at, "sector_size")?;
            if sector_size != 512 {
                return Err(Error::unsupported(format!("vdi sector size {sector_size}"))
                    .at(sector_at as u64));
            }
        }
        let disk_size = le_u64(&head, at.disk_size).ok_or_else(|| {
            Error::corrupt("vdi header truncated before disk_size", at.disk_size as u64)
        })?;
        let block_size = field(at.block_size, "block_size")?;
        if block_size == 0 || block_size % 512 != 0 || block_size > MAX_BLOCK_SIZE {
            return Err(Error::corrupt(
                format!("vdi header: block size {block_size} (a multiple of 512 up to 1 GiB)"),
                at.block_size as u64,
            ));
        }
        let block_extra = match at.block_extra {
            Some(extra_at) => field(extra_at, "block_extra")?,
            None => 0,
        };
        if block_extra > MAX_BLOCK_SIZE {
            return Err(Error::corrupt(
                format!("vdi header: block extra data of {block_extra} bytes"),
                at.block_extra.unwrap_or(0) as u64,
            ));
        }
        let blocks = field(at.blocks, "blocks")?;
        if blocks > MAX_BLOCKS {
            return Err(Error::unsupported(format!(
                "vdi image of {blocks} blocks (at most {MAX_BLOCKS})"
            ))
            .at(at.blocks as u64));
        }
        if u64::from(blocks) * u64::from(block_size) < disk_size {
            return Err(Error::corrupt(
                format!(
                    "vdi header: {blocks} blocks of {block_size} bytes cannot hold a {disk_size}-byte disk"
                ),
                at.blocks as u64,
            ));
        }
        // Version 0 keeps the block map right after the header and the
        // data right after the map.
        let map_len = u64::from(blocks) * 4;
        let (offset_bmap, offset_data) = match (at.offset_bmap, at.offset_data) {
            (Some(bmap_at), Some(data_at)) => (
                u64::from(field(bmap_at, "offset_bmap")?),
                u64::from(field(data_at, "offset_data")?),
            ),
            _ => (V0_MAP, V0_MAP + map_len),
        };
        let map_end = offset_bmap + map_len;
        let field_at = at.offset_bmap.unwrap_or(0x44) as u64;
        if offset_bmap < at.end || map_end > file_size {
            return Err(Error::corrupt(
                format!(
                    "vdi block map at {offset_bmap:#x} ({blocks} entries) overlaps the header or runs past the end of the file ({file_size:#x} bytes)"
                ),
                field_at,
            ));
        }
        if offset_data < map_end {
            return Err(Error::corrupt(
                format!(
                    "vdi data area at {offset_data:#x} overlaps the block map (ends at {map_end:#x})"
                ),
                at.offset_data.unwrap_or(0x44) as u64,
            ));
        }
        Ok(Header {
            major,
            image_type,
            comment: String::from_utf8_lossy(comment).into_owned(),
            offset_bmap,
            offset_data,
            disk_size,
            block_size,
            block_extra,
            blocks,
            blocks_allocated: field(at.blocks_allocated, "blocks_allocated")?,
            uuid_create: Uuid::at(&head, at.create),
            uuid_modify: Uuid::at(&head, at.modify),
            uuid_link: Uuid::at(&head, at.link),
            uuid_parent_modify: at
                .parent_modify
                .map(|p| Uuid::at(&head, p))
                .unwrap_or_default(),
        })
    }

    /// File offset of `uuid_link` (in messages).
    pub fn link_offset(&self) -> u64 {
        self.layout().link as u64
    }

    /// File offset of `blocks_allocated` (in messages).
    pub fn blocks_allocated_offset(&self) -> u64 {
        self.layout().blocks_allocated as u64
    }

    /// File offset of `uuid_parent_modify` (version 1 only; in messages).
    pub fn parent_modify_offset(&self) -> u64 {
        self.layout().parent_modify.unwrap_or(0x44) as u64
    }

    fn layout(&self) -> &'static Layout {
        if self.major == 0 { &V0 } else { &V1 }
    }
}

/// The identity of the VDI whose first bytes are `head` (either header
/// version): its `uuid_create` and `uuid_modify`, or `None` when `head`
/// is no VDI header.
pub fn identity(head: &[u8]) -> Option<(Uuid, Uuid)> {
    if le_u32(head, SIGNATURE_OFFSET as usize)? != SIGNATURE {
        return None;
    }
    let at = match le_u32(head, 0x44)? >> 16 {
        0 => &V0,
        1 => &V1,
        _ => return None,
    };
    if head.len() < at.end as usize {
        return None;
    }
    Some((Uuid::at(head, at.create), Uuid::at(head, at.modify)))
}

/// Where each header field lies in one header version.
pub(crate) struct Layout {
    image_type: usize,
    comment: usize,
    sector_size: Option<usize>,
    offset_bmap: Option<usize>,
    offset_data: Option<usize>,
    disk_size: usize,
    block_size: usize,
    block_extra: Option<usize>,
    blocks: usize,
    blocks_allocated: usize,
    create: usize,
    modify: usize,
    link: usize,
    parent_modify: Option<usize>,
    /// One past the header.
    end: u64,
}

/// Version 1.x (`VDIHEADER1`; see the module documentation).
static V1: Layout = Layout {
    image_type: 0x4c,
    comment: 0x54,
    sector_size: Some(0x168),
    offset_bmap: Some(0x154),
    offset_data: Some(0x158),
    disk_size: 0x170,
    block_size: 0x178,
    block_extra: Some(0x17c),
    blocks: 0x180,
    blocks_allocated: 0x184,
    create: uuid_at::CREATE,
    modify: uuid_at::MODIFY,
    link: uuid_at::LINK,
    parent_modify: Some(uuid_at::PARENT_MODIFY),
    end: 0x48 + HEADER1_SIZE as u64,
};

/// Version 0 (`VDIHEADER0`, packed): type 0x48, flags 0x4c, comment
/// 0x50, legacy geometry 0x150, disk size 0x160, block size 0x168, blocks
/// 0x16c, allocated 0x170, uuid_create 0x174, uuid_modify 0x184, uuid_link
/// 0x194; no block extra data, no `uuid_parent_modify`.
static V0: Layout = Layout {
    image_type: 0x48,
    comment: 0x50,
    sector_size: None,
    offset_bmap: None,
    offset_data: None,
    disk_size: 0x160,
    block_size: 0x168,
    block_extra: None,
    blocks: 0x16c,
    blocks_allocated: 0x170,
    create: 0x174,
    modify: 0x184,
    link: 0x194,
    parent_modify: None,
    end: V0_MAP,
};

/// Where a version 0 image keeps its block map: right after the
/// pre-header (72 bytes) and the version 0 header (348 bytes).
pub const V0_MAP: u64 = 0x1a4;
