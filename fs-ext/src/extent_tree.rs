//! Extent trees: `i_block` holds a 12-byte header and up to four entries;
//! deeper levels live in blocks of their own. Index entries point down,
//! leaf entries map a run of logical blocks to physical blocks. An entry
//! longer than 32768 blocks is *uninitialized*: allocated, reads as zeros.
//!
//! Lookups descend from the root, checking every header's magic, that
//! entry counts fit, that depths go down by exactly one level and that
//! the tree is at most [`MAX_DEPTH`] deep, so a hostile tree cannot loop.

use alloc::format;
use alloc::vec::Vec;

use disk_io::bytes::{le_u16, le_u32};
use disk_io::{Error, Result};

/// `eh_magic`.
pub const MAGIC: u16 = 0xf30a;
/// Deepest tree accepted (the kernel's limit is 5).
pub const MAX_DEPTH: u16 = 5;
/// Length value above which an extent is uninitialized.
pub const INIT_MAX_LEN: u16 = 32768;

/// A tree header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Valid entries.
    pub entries: u16,
    /// Room for entries.
    pub max: u16,
    /// Levels below (0: entries are leaves).
    pub depth: u16,
}

/// A leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First logical block.
    pub logical: u32,
    /// Blocks covered.
    pub len: u32,
    /// First physical block.
    pub physical: u64,
    /// Allocated but not written: reads as zeros.
    pub uninit: bool,
}

/// What a lookup found at a logical block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Mapped by this extent (which contains the block).
    Mapped(Extent),
    /// A hole, up to the next mapped block (`None`: to the end of the file).
    Hole(Option<u32>),
}

/// Checks a tree block's tail checksum (block bytes, block number, header).
pub type CheckBlock<'a> = dyn Fn(&[u8], u64, &Header) -> Result<()> + 'a;

/// Where a node came from, for error messages and checksums.
pub struct Context<'a> {
    /// The inode the tree belongs to.
    pub ino: u32,
    /// Block size.
    pub block_size: usize,
    /// Reads a metadata block (through the journal and cache), verifying
    /// the extent-block checksum as the caller's policy says.
    pub read_block: &'a dyn Fn(u64) -> Result<Vec<u8>>,
    /// Checks a tree block's tail checksum; `Err` when it must be refused.
    pub check_block: &'a CheckBlock<'a>,
    /// Blocks in the volume (pointers past it are corrupt).
    pub blocks_count: u64,
}

fn header(node: &[u8], ino: u32, offset: u64, room: usize) -> Result<Header> {
    let magic = le_u16(node, 0).unwrap_or(0);
    if magic != MAGIC {
        return Err(Error::corrupt(
            format!("inode {ino}: extent header magic {magic:#06x} (expected 0xf30a)"),
            offset,
        ));
    }
    let h = Header {
        entries: le_u16(node, 2).unwrap_or(0),
        max: le_u16(node, 4).unwrap_or(0),
        depth: le_u16(node, 6).unwrap_or(0),
    };
    if h.entries > h.max || usize::from(h.max) > room || h.depth > MAX_DEPTH {
        return Err(Error::corrupt(
            format!(
                "inode {ino}: extent header entries {} max {} depth {}",
                h.entries, h.max, h.depth
            ),
            offset,
        ));
    }
    Ok(h)
}

fn entry(node: &[u8], i: u16) -> &[u8] {
    let at = 12 + usize::from(i) * 12;
    node.get(at..at + 12).unwrap_or(&[])
}

fn leaf(e: &[u8]) -> Extent {
    let raw_len = le_u16(e, 4).unwrap_or(0);
    let (len, uninit) = if raw_len > INIT_MAX_LEN {
        (raw_len - INIT_MAX_LEN, true)
    } else {
        (raw_len, false)
    };
    Extent {
        logical: le_u32(e, 0).unwrap_or(0),
        len: u32::from(len),
        physical: u64::from(le_u32(e, 8).unwrap_or(0)) | u64::from(le_u16(e, 6).unwrap_or(0)) << 32,
        uninit,
    }
}

/// Finds logical block `block` in the tree whose root is `i_block`.
/// `root_offset` is the byte offset of `i_block` (for messages).
pub fn lookup(ctx: &Context<'_>, i_block: &[u8], root_offset: u64, block: u32) -> Result<Lookup> {
    let mut node: Vec<u8> = i_block.to_vec();
    let mut offset = root_offset;
    let mut h = header(&node, ctx.ino, offset, (node.len().saturating_sub(12)) / 12)?;
    // The first block that a later sibling at some level maps: the upper
    // bound of a hole found in a leaf.
    let mut next_bound: Option<u32> = None;
    loop {
        if h.depth == 0 {
            let mut hole_end = next_bound;
            for i in 0..h.entries {
                let e = leaf(entry(&node, i));
                if e.len == 0 {
                    continue;
                }
                let end = u64::from(e.logical) + u64::from(e.len);
                if block < e.logical {
                    hole_end = Some(e.logical);
                    break;
                }
                if u64::from(block) < end {
                    if e.physical.saturating_add(u64::from(e.len)) > ctx.blocks_count {
                        return Err(Error::corrupt(
                            format!(
                                "inode {}: extent at logical block {} points past the volume (block {})",
                                ctx.ino, e.logical, e.physical
                            ),
                            offset + 12 + u64::from(i) * 12,
                        ));
                    }
                    return Ok(Lookup::Mapped(e));
                }
            }
            return Ok(Lookup::Hole(hole_end));
        }
        // The last index entry whose first block is <= block.
        let mut chosen: Option<u16> = None;
        for i in 0..h.entries {
            let first = le_u32(entry(&node, i), 0).unwrap_or(0);
            if first <= block {
                chosen = Some(i);
            } else {
                next_bound = Some(match next_bound {
                    Some(b) => b.min(first),
                    None => first,
                });
                break;
            }
        }
        let Some(i) = chosen else {
            // Before the first mapped block.
            let first = if h.entries > 0 {
                Some(le_u32(entry(&node, 0), 0).unwrap_or(0))
            } else {
                next_bound
            };
            return Ok(Lookup::Hole(first));
        };
        let e = entry(&node, i);
        let child =
            u64::from(le_u32(e, 4).unwrap_or(0)) | u64::from(le_u16(e, 8).unwrap_or(0)) << 32;
        if child == 0 || child >= ctx.blocks_count {
            return Err(Error::corrupt(
                format!(
                    "inode {}: extent index entry {i} points to block {child}, outside the volume",
                    ctx.ino
                ),
                offset + 12 + u64::from(i) * 12,
            ));
        }
        let child_offset = child * ctx.block_size as u64;
        let data = (ctx.read_block)(child)?;
        let ch = header(&data, ctx.ino, child_offset, (ctx.block_size - 12) / 12)?;
        if ch.depth + 1 != h.depth {
            return Err(Error::corrupt(
                format!(
                    "inode {}: extent block {child} has depth {} under depth {}",
                    ctx.ino, ch.depth, h.depth
                ),
                child_offset,
            ));
        }
        (ctx.check_block)(&data, child, &ch)?;
        node = data;
        offset = child_offset;
        h = ch;
    }
}

/// Visits every leaf extent of the tree in order, with the tree blocks
/// themselves (`on_node`). Bounded by depth and by `max_nodes`.
pub fn walk(
    ctx: &Context<'_>,
    i_block: &[u8],
    root_offset: u64,
    max_nodes: usize,
    on_extent: &mut dyn FnMut(Extent) -> Result<()>,
    on_node: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<()> {
    let root = header(
        i_block,
        ctx.ino,
        root_offset,
        (i_block.len().saturating_sub(12)) / 12,
    )?;
    let mut budget = max_nodes;
    walk_node(
        ctx,
        i_block,
        root_offset,
        root,
        &mut budget,
        on_extent,
        on_node,
    )
}

fn walk_node(
    ctx: &Context<'_>,
    node: &[u8],
    offset: u64,
    h: Header,
    budget: &mut usize,
    on_extent: &mut dyn FnMut(Extent) -> Result<()>,
    on_node: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<()> {
    for i in 0..h.entries {
        let e = entry(node, i);
        if h.depth == 0 {
            on_extent(leaf(e))?;
            continue;
        }
        let child =
            u64::from(le_u32(e, 4).unwrap_or(0)) | u64::from(le_u16(e, 8).unwrap_or(0)) << 32;
        if child == 0 || child >= ctx.blocks_count {
            return Err(Error::corrupt(
                format!(
                    "inode {}: extent index entry {i} points to block {child}, outside the volume",
                    ctx.ino
                ),
                offset + 12 + u64::from(i) * 12,
            ));
        }
        *budget = budget.checked_sub(1).ok_or_else(|| {
            Error::corrupt(
                format!("inode {}: extent tree has too many blocks", ctx.ino),
                offset,
            )
        })?;
        let child_offset = child * ctx.block_size as u64;
        let data = (ctx.read_block)(child)?;
        let ch = header(&data, ctx.ino, child_offset, (ctx.block_size - 12) / 12)?;
        if ch.depth + 1 != h.depth {
            return Err(Error::corrupt(
                format!(
                    "inode {}: extent block {child} has depth {} under depth {}",
                    ctx.ino, ch.depth, h.depth
                ),
                child_offset,
            ));
        }
        (ctx.check_block)(&data, child, &ch)?;
        on_node(child)?;
        walk_node(ctx, &data, child_offset, ch, budget, on_extent, on_node)?;
    }
    Ok(())
}
