//! Bridges between positional disks and `std::io::{Read, Write, Seek}`.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Mutex;

use crate::{Error, ReadAt, Result, WriteAt, check_range};

/// A `Read + Seek` stream (and optionally `Write`) used as a positional disk.
///
/// Each access seeks and reads under a mutex, so the disk is shared safely
/// but serially.
///
/// ```
/// use disk_io::{IoDisk, ReadAt};
/// let disk = IoDisk::new(std::io::Cursor::new(vec![7u8; 100])).unwrap();
/// let mut buf = [0u8; 3];
/// disk.read_at(97, &mut buf).unwrap();
/// assert_eq!(buf, [7; 3]);
/// assert!(disk.read_at(98, &mut buf).is_err());
/// ```
pub struct IoDisk<S> {
    stream: Mutex<S>,
    size: u64,
}

impl<S: Seek> IoDisk<S> {
    /// Wraps `stream`; its size is where it ends now.
    pub fn new(mut stream: S) -> Result<Self> {
        let size = stream.seek(SeekFrom::End(0))?;
        Ok(IoDisk {
            stream: Mutex::new(stream),
            size,
        })
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> S {
        self.stream
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with<R>(&self, offset: u64, f: impl FnOnce(&mut S) -> io::Result<R>) -> Result<R> {
        let mut s = self
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.seek(SeekFrom::Start(offset))
            .and_then(|_| f(&mut s))
            .map_err(|e| Error::io(e, Some(offset)))
    }
}

impl<S: Read + Seek> ReadAt for IoDisk<S> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.with(offset, |s| s.read_exact(buf))
    }
}

impl<S: Read + Write + Seek> WriteAt for IoDisk<S> {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.with(offset, |s| s.write_all(buf))
    }

    fn flush(&self) -> Result<()> {
        self.with(0, |s| s.flush())
    }
}

/// A positional disk used as a `Read + Seek` (and `Write`) stream.
///
/// Reads stop at the end of the disk (a short read, then 0), as files do;
/// writes past the end fail.
///
/// ```
/// use std::io::{Read, Seek, SeekFrom};
/// use disk_io::DiskCursor;
/// let mut c = DiskCursor::new(vec![1u8, 2, 3, 4]);
/// c.seek(SeekFrom::End(-2)).unwrap();
/// let mut rest = Vec::new();
/// c.read_to_end(&mut rest).unwrap();
/// assert_eq!(rest, [3, 4]);
/// ```
pub struct DiskCursor<D> {
    disk: D,
    pos: u64,
}

impl<D: ReadAt> DiskCursor<D> {
    /// A cursor at offset 0 of `disk`.
    pub fn new(disk: D) -> Self {
        DiskCursor { disk, pos: 0 }
    }

    /// Gives the disk back.
    pub fn into_inner(self) -> D {
        self.disk
    }
}

impl<D: ReadAt> Read for DiskCursor<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.disk.size().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        let dst = buf.get_mut(..n).unwrap_or(&mut []);
        self.disk.read_at(self.pos, dst)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: ReadAt> Seek for DiskCursor<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.disk.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let new = new.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before start or past u64")
        })?;
        self.pos = new;
        Ok(new)
    }
}

impl<D: WriteAt> Write for DiskCursor<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.disk.write_at(self.pos, buf)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(self.disk.flush()?)
    }
}
