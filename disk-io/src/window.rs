//! A byte range of a parent disk seen as a disk of its own (a partition).

use crate::{Extent, ReadAt, Result, WriteAt, check_range, clamp_query};

/// `length` bytes of a parent disk starting at `start`, addressed from 0.
///
/// ```
/// use disk_io::{MemDisk, ReadAt, Window, WriteAt};
/// let disk = MemDisk::new(4096);
/// let part = Window::new(&disk, 1024, 2048).unwrap();
/// part.write_at(0, b"hello").unwrap();
/// let mut buf = [0u8; 5];
/// disk.read_at(1024, &mut buf).unwrap();
/// assert_eq!(&buf, b"hello");
/// assert!(part.write_at(2047, b"xy").is_err()); // cannot spill past its end
/// ```
#[derive(Clone, Debug)]
pub struct Window<D> {
    parent: D,
    start: u64,
    length: u64,
}

impl<D: ReadAt> Window<D> {
    /// A window of `length` bytes at `start`, which must lie inside `parent`.
    pub fn new(parent: D, start: u64, length: u64) -> Result<Self> {
        check_range(parent.size(), start, length)?;
        Ok(Window {
            parent,
            start,
            length,
        })
    }

    /// Offset of the window in its parent.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The parent disk.
    pub fn parent(&self) -> &D {
        &self.parent
    }

    /// Gives the parent back.
    pub fn into_parent(self) -> D {
        self.parent
    }
}

impl<D: ReadAt> ReadAt for Window<D> {
    fn size(&self) -> u64 {
        self.length
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.length, offset, buf.len() as u64)?;
        self.parent.read_at(self.start + offset, buf)
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.length, offset, length)?;
        let mut e = self.parent.allocation(self.start + offset, length)?;
        e.offset = offset;
        e.length = e.length.min(length);
        Ok(e)
    }
}

impl<D: WriteAt> WriteAt for Window<D> {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(self.length, offset, buf.len() as u64)?;
        self.parent.write_at(self.start + offset, buf)
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        check_range(self.length, offset, length)?;
        self.parent.write_zeroes(self.start + offset, length)
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        check_range(self.length, offset, length)?;
        self.parent.discard(self.start + offset, length)
    }

    fn flush(&self) -> Result<()> {
        self.parent.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Allocation, MemDisk};

    #[test]
    fn bounds() {
        let disk = MemDisk::new(100);
        assert!(Window::new(&disk, 50, 51).is_err());
        assert!(Window::new(&disk, u64::MAX, 2).is_err());
        let w = Window::new(&disk, 50, 50).unwrap();
        assert_eq!(w.size(), 50);
        assert!(w.read_at(u64::MAX - 1, &mut [0; 4]).is_err());
        assert_eq!(
            w.allocation(10, 1000).unwrap(),
            Extent::new(10, 40, Allocation::Data)
        );
        assert!(w.write_zeroes(49, 2).is_err());
    }
}
