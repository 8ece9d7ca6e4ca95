//! Allocation maps: which byte ranges of a disk hold data, which are known
//! to read as zeros, and which are not stored at this layer at all.

use crate::{Error, ReadAt, Result};

/// The state of a byte range of a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Allocation {
    /// Stored data (which may still happen to be zeros).
    Data,
    /// Known to read as zeros without being stored (a hole, a zero cluster).
    Zero,
    /// Not stored at this layer: reads fall through to the parent of a
    /// copy-on-write chain, or read as zeros when there is no parent.
    Unallocated,
}

impl Allocation {
    /// True when the range is guaranteed to read as zeros.
    ///
    /// `Unallocated` counts as zero only for an image without a parent;
    /// the caller says whether there is one.
    pub fn reads_as_zero(self, has_parent: bool) -> bool {
        match self {
            Allocation::Data => false,
            Allocation::Zero => true,
            Allocation::Unallocated => !has_parent,
        }
    }
}

/// A run of bytes in one allocation state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Extent {
    /// First byte of the run.
    pub offset: u64,
    /// Length of the run in bytes; never zero.
    pub length: u64,
    /// State of every byte of the run.
    pub state: Allocation,
    /// Which layer of a chain answers for the run: 0 for the disk itself,
    /// `n` for its `n`-th backing parent.
    pub layer: u32,
}

impl Extent {
    /// A run at layer 0.
    pub const fn new(offset: u64, length: u64, state: Allocation) -> Self {
        Extent {
            offset,
            length,
            state,
            layer: 0,
        }
    }

    /// One past the last byte of the run.
    pub const fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// Checks that `length` bytes at `offset` lie inside a disk of `size` bytes.
pub fn check_range(size: u64, offset: u64, length: u64) -> Result<()> {
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::out_of_range(offset, length, size)),
    }
}

/// Checks the arguments of [`ReadAt::allocation`] and returns the longest
/// length an answer may have: `min(length, size - offset)`.
pub fn clamp_query(size: u64, offset: u64, length: u64) -> Result<u64> {
    if length == 0 || offset >= size {
        return Err(Error::out_of_range(offset, length, size));
    }
    Ok(length.min(size - offset))
}

/// Iterator over the allocation map of a byte range, merging neighbouring
/// runs of the same state and layer. Made by [`extents`].
pub struct Extents<'a, D: ReadAt + ?Sized> {
    disk: &'a D,
    offset: u64,
    end: u64,
    /// Something fetched but not yet returned: a run that differs from the
    /// one just returned, or an error to report after it.
    pending: Option<Result<Extent>>,
    done: bool,
}

/// Walks the allocation map of `length` bytes at `offset` (clamped to the
/// disk size), yielding maximal runs. After an error the iterator ends.
///
/// ```
/// use disk_io::{extents, Allocation, MemDisk};
/// let disk = MemDisk::new(8192);
/// let runs: Vec<_> = extents(&disk, 0, u64::MAX).collect::<Result<_, _>>().unwrap();
/// assert_eq!(runs.len(), 1);
/// assert_eq!(runs[0].state, Allocation::Data);
/// assert_eq!(runs[0].length, 8192);
/// ```
pub fn extents<D: ReadAt + ?Sized>(disk: &D, offset: u64, length: u64) -> Extents<'_, D> {
    let end = offset.saturating_add(length).min(disk.size());
    Extents {
        disk,
        offset,
        end,
        pending: None,
        done: false,
    }
}

impl<D: ReadAt + ?Sized> Extents<'_, D> {
    fn fetch(&mut self) -> Option<Result<Extent>> {
        if self.offset >= self.end {
            return None;
        }
        let want = self.end - self.offset;
        let got = match self.disk.allocation(self.offset, want) {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        // Trust nothing: an implementation must answer for `offset` with a
        // non-empty run inside the query.
        if got.offset != self.offset || got.length == 0 || got.length > want {
            return Some(Err(Error::new(
                crate::ErrorKind::Corrupt,
                alloc::format!(
                    "allocation map answered {:#x}+{:#x} for a query at {:#x}+{:#x}",
                    got.offset,
                    got.length,
                    self.offset,
                    want
                ),
            )
            .at(self.offset)));
        }
        self.offset += got.length;
        Some(Ok(got))
    }
}

impl<D: ReadAt + ?Sized> Iterator for Extents<'_, D> {
    type Item = Result<Extent>;

    fn next(&mut self) -> Option<Result<Extent>> {
        if self.done {
            return None;
        }
        let first = match self.pending.take() {
            Some(item) => item,
            None => self.fetch()?,
        };
        let mut run = match first {
            Ok(run) => run,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        loop {
            match self.fetch() {
                None => return Some(Ok(run)),
                Some(Ok(next)) if next.state == run.state && next.layer == run.layer => {
                    run.length += next.length;
                }
                other => {
                    self.pending = other;
                    return Some(Ok(run));
                }
            }
        }
    }
}
