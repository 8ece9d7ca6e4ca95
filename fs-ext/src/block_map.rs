//! ext2/ext3 block maps: `i_block` holds 12 direct block numbers, then
//! one single-, one double- and one triple-indirect block number. A zero
//! number is a hole (at any level).

use alloc::format;
use alloc::vec::Vec;

use disk_io::bytes::le_u32;
use disk_io::{Error, Result};

/// Direct pointers in `i_block`.
pub const DIRECT: u64 = 12;

/// A run found by [`lookup`]: `len` blocks starting at the logical block
/// asked for, either all holes (`physical == None`) or physically
/// contiguous from `physical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First physical block, or `None` for a hole.
    pub physical: Option<u64>,
    /// Blocks in the run (at least 1).
    pub len: u64,
}

/// Where the map lives and how to read its blocks.
pub struct Context<'a> {
    /// The inode.
    pub ino: u32,
    /// Block size.
    pub block_size: usize,
    /// Reads a metadata block.
    pub read_block: &'a dyn Fn(u64) -> Result<Vec<u8>>,
    /// Blocks in the volume.
    pub blocks_count: u64,
    /// Byte offset of the inode's `i_block`, for messages.
    pub i_block_offset: u64,
}

fn ptr(bytes: &[u8], i: u64) -> u64 {
    usize::try_from(i)
        .ok()
        .and_then(|i| i.checked_mul(4))
        .and_then(|at| le_u32(bytes, at))
        .map_or(0, u64::from)
}

/// Longest run from index `i` of the pointer array `ptrs` (with `count`
/// entries), capped at `max`.
fn run_in(ptrs: &[u8], i: u64, count: u64, max: u64) -> Run {
    let first = ptr(ptrs, i);
    let mut len = 1;
    while len < max && i + len < count {
        let p = ptr(ptrs, i + len);
        let continues = if first == 0 { p == 0 } else { p == first + len };
        if !continues {
            break;
        }
        len += 1;
    }
    Run {
        physical: (first != 0).then_some(first),
        len,
    }
}

/// Maps logical block `block`; `max` caps the run length asked for.
pub fn lookup(ctx: &Context<'_>, i_block: &[u8], block: u64, max: u64) -> Result<Run> {
    let per = (ctx.block_size / 4) as u64;
    if block < DIRECT {
        return check(ctx, run_in(i_block, block, DIRECT, max), block);
    }
    let mut rel = block - DIRECT;
    // Levels: 1 (single), 2 (double), 3 (triple indirect).
    let mut span = per;
    for level in 1u32..=3 {
        if rel < span {
            let top = ptr(i_block, DIRECT + u64::from(level) - 1);
            return descend(ctx, top, level, rel, span / per, max, block);
        }
        rel -= span;
        span = span.saturating_mul(per);
    }
    Err(Error::corrupt(
        format!(
            "inode {}: logical block {block} is beyond the block map",
            ctx.ino
        ),
        ctx.i_block_offset,
    ))
}

fn descend(
    ctx: &Context<'_>,
    mut node: u64,
    level: u32,
    mut rel: u64,
    mut child_span: u64,
    max: u64,
    block: u64,
) -> Result<Run> {
    let per = (ctx.block_size / 4) as u64;
    for _ in 0..level {
        if node == 0 {
            // A hole covering the rest of this subtree.
            let left = child_span.saturating_mul(per) - rel;
            return Ok(Run {
                physical: None,
                len: left.min(max).max(1),
            });
        }
        if node >= ctx.blocks_count {
            return Err(Error::corrupt(
                format!(
                    "inode {}: indirect block {node} (for logical block {block}) is outside the volume",
                    ctx.ino
                ),
                ctx.i_block_offset,
            ));
        }
        let data = (ctx.read_block)(node)?;
        let index = rel / child_span;
        if child_span == 1 {
            return check(ctx, run_in(&data, index, per, max), block);
        }
        node = ptr(&data, index);
        rel %= child_span;
        child_span /= per;
    }
    Err(Error::corrupt(
        format!("inode {}: block map walk for block {block}", ctx.ino),
        ctx.i_block_offset,
    ))
}

fn check(ctx: &Context<'_>, run: Run, block: u64) -> Result<Run> {
    if let Some(p) = run.physical {
        if p.saturating_add(run.len) > ctx.blocks_count {
            return Err(Error::corrupt(
                format!(
                    "inode {}: logical block {block} maps to block {p}, outside the volume",
                    ctx.ino
                ),
                ctx.i_block_offset,
            ));
        }
    }
    Ok(run)
}

/// Visits every metadata (indirect) block and every data run of the map,
/// up to `blocks` logical blocks. Used by the fuzzing walk.
pub fn indirect_blocks(
    ctx: &Context<'_>,
    i_block: &[u8],
    out: &mut Vec<u64>,
    limit: usize,
) -> Result<()> {
    for level in 1u32..=3 {
        let top = ptr(i_block, DIRECT + u64::from(level) - 1);
        collect(ctx, top, level, out, limit)?;
    }
    Ok(())
}

fn collect(
    ctx: &Context<'_>,
    node: u64,
    level: u32,
    out: &mut Vec<u64>,
    limit: usize,
) -> Result<()> {
    if node == 0 || level == 0 {
        return Ok(());
    }
    if node >= ctx.blocks_count || out.len() >= limit {
        return Err(Error::corrupt(
            format!("inode {}: indirect block {node}", ctx.ino),
            ctx.i_block_offset,
        ));
    }
    out.push(node);
    if level > 1 {
        let data = (ctx.read_block)(node)?;
        for i in 0..(ctx.block_size / 4) as u64 {
            collect(ctx, ptr(&data, i), level - 1, out, limit)?;
        }
    }
    Ok(())
}
