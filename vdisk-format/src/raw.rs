//! The raw format: the file is the guest disk, byte for byte.
//!
//! Reading and writing pass straight through; the allocation map is the
//! file's own (holes of a sparse file read as zeros).

use disk_io::{Extent, ReadAt, Result, WriteAt};

/// A raw image over any disk.
///
/// ```
/// use disk_io::{MemDisk, ReadAt, WriteAt};
/// use vdisk_format::raw::Raw;
/// let image = Raw::new(MemDisk::new(1 << 20));
/// image.write_at(4096, b"data")?;
/// assert_eq!(image.size(), 1 << 20);
/// # Ok::<(), disk_io::Error>(())
/// ```
#[derive(Debug)]
pub struct Raw<D> {
    disk: D,
}

impl<D> Raw<D> {
    /// The raw image stored in `disk`.
    pub fn new(disk: D) -> Self {
        Raw { disk }
    }

    /// The underlying disk.
    pub fn get_ref(&self) -> &D {
        &self.disk
    }

    /// Gives the underlying disk back.
    pub fn into_inner(self) -> D {
        self.disk
    }
}

impl<D: ReadAt> ReadAt for Raw<D> {
    fn size(&self) -> u64 {
        self.disk.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.disk.read_at(offset, buf)
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        self.disk.allocation(offset, length)
    }
}

impl<D: WriteAt> WriteAt for Raw<D> {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.disk.write_at(offset, buf)
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        self.disk.write_zeroes(offset, length)
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.disk.discard(offset, length)
    }

    fn flush(&self) -> Result<()> {
        self.disk.flush()
    }
}
