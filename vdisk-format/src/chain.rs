//! What every format with a copy-on-write parent shares: reading what a
//! layer does not hold from the parent, and answering the allocation map
//! for it one layer down.

use alloc::boxed::Box;

use disk_io::{Allocation, Extent, ReadAt, Result};

/// A parent disk of a copy-on-write chain.
pub type Backing = Box<dyn ReadAt + Send + Sync>;

/// Reads guest bytes that this layer does not hold: from `parent` where it
/// has them, zeros past its end (a parent may be smaller than its child)
/// and everywhere when there is no parent.
pub fn read_parent(parent: Option<&Backing>, pos: u64, buf: &mut [u8]) -> Result<()> {
    let available = match parent {
        Some(p) => p.size().saturating_sub(pos).min(buf.len() as u64) as usize,
        None => 0,
    };
    let (head, tail) = buf.split_at_mut(available);
    if let Some(p) = parent {
        if !head.is_empty() {
            p.read_at(pos, head)?;
        }
    }
    tail.fill(0);
    Ok(())
}

/// The allocation map of `length` bytes at `offset` that this layer does
/// not hold: the parent's answer one layer down (`layer + 1`), or
/// `Unallocated` at this layer without a parent or past its end.
pub fn parent_allocation(parent: Option<&Backing>, offset: u64, length: u64) -> Result<Extent> {
    if let Some(p) = parent {
        if offset < p.size() {
            let mut e = p.allocation(offset, length.min(p.size() - offset))?;
            e.offset = offset;
            e.layer = e.layer.saturating_add(1);
            return Ok(e);
        }
    }
    Ok(Extent::new(offset, length, Allocation::Unallocated))
}
