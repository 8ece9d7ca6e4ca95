//! Writable disks held in memory.

use alloc::vec::Vec;

use crate::sync::Lock;
use crate::{Error, ReadAt, Result, WriteAt, check_range};

/// A fixed-size disk in memory, every byte initially zero.
///
/// With the `std` feature it is `Sync` and may be shared between threads;
/// without it, it is for one thread.
///
/// ```
/// use disk_io::{MemDisk, ReadAt, WriteAt};
/// let disk = MemDisk::new(1024);
/// disk.write_at(512, &[0xaa; 4]).unwrap();
/// let mut buf = [0u8; 4];
/// disk.read_at(512, &mut buf).unwrap();
/// assert_eq!(buf, [0xaa; 4]);
/// assert_eq!(disk.into_vec().len(), 1024);
/// ```
pub struct MemDisk {
    data: Lock<Vec<u8>>,
    size: u64,
}

impl MemDisk {
    /// A zero-filled disk of `size` bytes.
    pub fn new(size: usize) -> Self {
        MemDisk::from_vec(alloc::vec![0; size])
    }

    /// A disk holding `data`.
    pub fn from_vec(data: Vec<u8>) -> Self {
        let size = data.len() as u64;
        MemDisk {
            data: Lock::new(data),
            size,
        }
    }

    /// The disk's bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.data.into_inner()
    }

    /// A copy of the disk's bytes.
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        self.data.with_read(|d| Ok(d.clone()))
    }
}

/// Converts a checked in-range `offset..offset+len` to a slice range.
fn span(size: u64, offset: u64, len: usize) -> Result<core::ops::Range<usize>> {
    check_range(size, offset, len as u64)?;
    let start =
        usize::try_from(offset).map_err(|_| Error::out_of_range(offset, len as u64, size))?;
    Ok(start..start + len)
}

impl ReadAt for MemDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let range = span(self.size, offset, buf.len())?;
        self.data.with_read(|d| {
            let src = d
                .get(range)
                .ok_or_else(|| Error::out_of_range(offset, buf.len() as u64, self.size))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }
}

impl WriteAt for MemDisk {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let range = span(self.size, offset, buf.len())?;
        self.data.with_write(|d| {
            let dst = d
                .get_mut(range)
                .ok_or_else(|| Error::out_of_range(offset, buf.len() as u64, self.size))?;
            dst.copy_from_slice(buf);
            Ok(())
        })
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        let len =
            usize::try_from(length).map_err(|_| Error::out_of_range(offset, length, self.size))?;
        let range = span(self.size, offset, len)?;
        self.data.with_write(|d| {
            d.get_mut(range)
                .ok_or_else(|| Error::out_of_range(offset, length, self.size))?
                .fill(0);
            Ok(())
        })
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
