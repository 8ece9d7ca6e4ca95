#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod allocation;
pub mod bytes;
pub mod crc;
mod error;
mod mem;
pub mod sync;
mod window;

#[cfg(feature = "std")]
mod adapter;
#[cfg(feature = "std")]
mod file;

pub use allocation::{Allocation, Extent, Extents, check_range, clamp_query, extents};
pub use error::{Error, ErrorKind, Result};
pub use mem::MemDisk;
pub use window::Window;

#[cfg(feature = "std")]
pub use adapter::{DiskCursor, IoDisk};
#[cfg(feature = "std")]
pub use file::FileDisk;

/// A disk read by position, like `pread`: one open disk can serve many
/// readers at once through `&self`.
pub trait ReadAt {
    /// Size of the disk in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the bytes at `offset`.
    ///
    /// Reads are exact: a read that would reach past [`size`](Self::size) is
    /// an [`ErrorKind::OutOfRange`] error and never a silent short read.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Describes the allocation state of the disk at `offset`.
    ///
    /// Answers with a run that starts at `offset` and is at most `length`
    /// bytes long (and never empty), whose bytes all share one state. It may
    /// be shorter than the true run; [`extents`] merges neighbours. Querying
    /// at or past the end, or with `length == 0`, is an error.
    ///
    /// The default says everything is data, which is always correct, merely
    /// slow for copies that could have skipped holes.
    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.size(), offset, length)?;
        Ok(Extent::new(offset, length, Allocation::Data))
    }
}

/// A disk written by position, like `pwrite`.
pub trait WriteAt: ReadAt {
    /// Writes all of `buf` at `offset`; writing past [`ReadAt::size`] is an error.
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()>;

    /// Makes `length` bytes at `offset` read as zeros. Implementations may
    /// deallocate the range (punch a hole) instead of writing zeros.
    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        check_range(self.size(), offset, length)?;
        let mut done = 0u64;
        while done < length {
            let n = (length - done).min(ZEROS.len() as u64);
            // n <= ZEROS.len(), so the conversion and the slice are in range.
            let chunk = ZEROS.get(..n as usize).unwrap_or(&[]);
            self.write_at(offset + done, chunk)?;
            done += n;
        }
        Ok(())
    }

    /// Declares that `length` bytes at `offset` are no longer needed.
    /// Afterwards the range reads as zeros (or, in an image with a backing
    /// parent, as the parent's data); storage may be released.
    ///
    /// The default writes zeros.
    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.write_zeroes(offset, length)
    }

    /// Makes every completed write durable.
    fn flush(&self) -> Result<()>;
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

macro_rules! forward_impls {
    ($($ptr:ty),*) => {$(
        impl<T: ReadAt + ?Sized> ReadAt for $ptr {
            fn size(&self) -> u64 {
                (**self).size()
            }
            fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
                (**self).read_at(offset, buf)
            }
            fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
                (**self).allocation(offset, length)
            }
        }
        impl<T: WriteAt + ?Sized> WriteAt for $ptr {
            fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
                (**self).write_at(offset, buf)
            }
            fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
                (**self).write_zeroes(offset, length)
            }
            fn discard(&self, offset: u64, length: u64) -> Result<()> {
                (**self).discard(offset, length)
            }
            fn flush(&self) -> Result<()> {
                (**self).flush()
            }
        }
    )*};
}

forward_impls!(
    &T,
    &mut T,
    alloc::boxed::Box<T>,
    alloc::rc::Rc<T>,
    alloc::sync::Arc<T>
);

/// A byte slice is a read-only disk (handy for tests and fuzzing).
impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| Error::out_of_range(offset, buf.len() as u64, self.size()))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A vector is a read-only disk; use [`MemDisk`] for a writable one.
impl ReadAt for alloc::vec::Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.as_slice().read_at(offset, buf)
    }
}

/// Reads `length` bytes at `offset` into a new vector.
///
/// `length` must come from a bounded source: callers that take it from
/// untrusted bytes check it against their own limit first.
pub fn read_vec<D: ReadAt + ?Sized>(
    disk: &D,
    offset: u64,
    length: usize,
) -> Result<alloc::vec::Vec<u8>> {
    check_range(disk.size(), offset, length as u64)?;
    let mut buf = alloc::vec![0u8; length];
    disk.read_at(offset, &mut buf)?;
    Ok(buf)
}

/// True when every byte of `buf` is zero; compares whole 16-byte words.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut words = buf.chunks_exact(16);
    let body = words
        .by_ref()
        .all(|w| u128::from_ne_bytes(w.try_into().unwrap_or([1; 16])) == 0);
    body && words.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_reads_are_exact() {
        let data: &[u8] = &[1, 2, 3, 4];
        let mut buf = [0u8; 2];
        data.read_at(2, &mut buf).unwrap();
        assert_eq!(buf, [3, 4]);
        let err = data.read_at(3, &mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfRange);
        assert_eq!(err.offset(), Some(3));
        assert!(data.read_at(u64::MAX, &mut buf).is_err());
    }

    #[test]
    fn zero_detection() {
        let mut buf = vec![0u8; 4096 + 7];
        assert!(is_zero(&buf));
        for i in [0, 15, 16, 4095, 4096, 4102] {
            buf[i] = 1;
            assert!(!is_zero(&buf), "byte {i}");
            buf[i] = 0;
        }
        assert!(is_zero(&[]));
    }

    #[test]
    fn default_allocation_rejects_bad_queries() {
        let data: &[u8] = &[0; 16];
        assert_eq!(
            data.allocation(4, 100).unwrap(),
            Extent::new(4, 12, Allocation::Data)
        );
        assert!(data.allocation(16, 1).is_err());
        assert!(data.allocation(0, 0).is_err());
    }
}
