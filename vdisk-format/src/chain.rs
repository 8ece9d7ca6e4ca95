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

/// Most neighbouring units (clusters, grains, blocks) one allocation query
/// merges: it bounds the work of one call, whatever the image holds.
pub(crate) const MAX_MERGE: u32 = 4096;

/// Extends a run of `state` that has reached `pos` over the units that
/// follow, while they share its state: `unit(p)` gives the state of the
/// unit at `p` and where that unit ends, or `None` where the run must stop
/// whatever the state. Stops at `end` or after [`MAX_MERGE`] units, and
/// returns where the run ends.
pub(crate) fn extend_run(
    mut pos: u64,
    end: u64,
    state: Allocation,
    mut unit: impl FnMut(u64) -> Result<Option<(Allocation, u64)>>,
) -> Result<u64> {
    let mut steps = 0;
    while pos < end && steps < MAX_MERGE {
        match unit(pos)? {
            Some((s, unit_end)) if s == state => pos = unit_end.min(end),
            _ => break,
        }
        steps += 1;
    }
    Ok(pos)
}

/// A layer's answer for a run of `state` from `offset` to `stop`: its own,
/// or, where the layer does not hold the run, its parent's one layer down.
pub(crate) fn layer_answer(
    parent: Option<&Backing>,
    offset: u64,
    stop: u64,
    state: Allocation,
) -> Result<Extent> {
    if state == Allocation::Unallocated {
        return parent_allocation(parent, offset, stop - offset);
    }
    Ok(Extent::new(offset, stop - offset, state))
}
