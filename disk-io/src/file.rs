//! Disks backed by a `std::fs::File`: regular files and block devices.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{
    Allocation, Error, ErrorKind, Extent, ReadAt, Result, WriteAt, check_range, clamp_query,
};

/// A disk backed by a file or a block device.
///
/// For regular files the allocation map comes from `SEEK_DATA`/`SEEK_HOLE`
/// (holes read as [`Allocation::Zero`]) and [`WriteAt::write_zeroes`]
/// punches holes where the file system supports it.
///
/// ```no_run
/// use disk_io::{FileDisk, ReadAt};
/// let disk = FileDisk::open("disk.raw")?;
/// let mut mbr = [0u8; 512];
/// disk.read_at(0, &mut mbr)?;
/// # Ok::<(), disk_io::Error>(())
/// ```
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    size: AtomicU64,
    writable: bool,
    regular: bool,
}

impl FileDisk {
    /// Opens `path` read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        FileDisk::from_file(File::open(path)?, false)
    }

    /// Opens `path` for reading and writing.
    pub fn open_rw(path: impl AsRef<Path>) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        FileDisk::from_file(file, true)
    }

    /// Creates a new file of `size` bytes (entirely a hole) at `path`;
    /// fails if something already exists there.
    pub fn create(path: impl AsRef<Path>, size: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(size)?;
        FileDisk::from_file(file, true)
    }

    /// Wraps an open file; `writable` must match how it was opened.
    ///
    /// Directories and other non-disk file types are refused.
    pub fn from_file(file: File, writable: bool) -> Result<Self> {
        let meta = file.metadata()?;
        let ft = meta.file_type();
        let (size, regular) = if ft.is_file() {
            (meta.len(), true)
        } else if ft.is_block_device() {
            use std::io::Seek;
            let size = (&file).seek(std::io::SeekFrom::End(0))?;
            (size, false)
        } else if ft.is_dir() {
            return Err(Error::invalid_input("is a directory, not a disk image"));
        } else {
            return Err(Error::invalid_input(
                "is neither a regular file nor a block device",
            ));
        };
        Ok(FileDisk {
            file,
            size: AtomicU64::new(size),
            writable,
            regular,
        })
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Bytes of storage the file occupies (`st_blocks * 512`), the size
    /// `du` reports.
    pub fn allocated_bytes(&self) -> Result<u64> {
        Ok(self.file.metadata()?.blocks().saturating_mul(512))
    }

    /// Changes the size of a regular file (new bytes read as zeros).
    pub fn set_size(&self, size: u64) -> Result<()> {
        self.check_writable()?;
        if !self.regular {
            return Err(Error::unsupported("resizing a block device"));
        }
        self.file.set_len(size)?;
        self.size.store(size, Ordering::Release);
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::ReadOnly,
                "write to a disk opened read-only",
            ))
        }
    }

    /// `SEEK_DATA`/`SEEK_HOLE` from `offset`; `None` when the file system
    /// cannot tell.
    #[cfg(unix)]
    fn seek_allocation(&self, offset: u64, length: u64) -> Option<Extent> {
        use rustix::fs::{SeekFrom, seek};
        use rustix::io::Errno;
        let end = offset + length;
        match seek(&self.file, SeekFrom::Data(offset)) {
            Ok(data) if data <= offset => {
                let hole = seek(&self.file, SeekFrom::Hole(offset)).ok()?;
                let stop = hole.clamp(offset + 1, end);
                Some(Extent::new(offset, stop - offset, Allocation::Data))
            }
            Ok(data) => Some(Extent::new(
                offset,
                data.min(end) - offset,
                Allocation::Zero,
            )),
            // No data at or after `offset`: the rest is one hole.
            Err(Errno::NXIO) => Some(Extent::new(offset, length, Allocation::Zero)),
            Err(_) => None,
        }
    }

    #[cfg(not(unix))]
    fn seek_allocation(&self, _offset: u64, _length: u64) -> Option<Extent> {
        None
    }

    #[cfg(unix)]
    fn punch_hole(&self, offset: u64, length: u64) -> bool {
        use rustix::fs::{FallocateFlags, fallocate};
        self.regular
            && fallocate(
                &self.file,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                offset,
                length,
            )
            .is_ok()
    }

    #[cfg(not(unix))]
    fn punch_hole(&self, _offset: u64, _length: u64) -> bool {
        false
    }
}

impl ReadAt for FileDisk {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                // The file shrank under us.
                Error::new(
                    ErrorKind::OutOfRange,
                    "file ended early (truncated while open?)",
                )
                .at(offset)
            } else {
                Error::io(e, Some(offset))
            }
        })
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.size(), offset, length)?;
        if self.regular {
            if let Some(e) = self.seek_allocation(offset, length) {
                return Ok(e);
            }
        }
        Ok(Extent::new(offset, length, Allocation::Data))
    }
}

impl WriteAt for FileDisk {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        check_range(self.size(), offset, buf.len() as u64)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io(e, Some(offset)))
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        self.check_writable()?;
        check_range(self.size(), offset, length)?;
        if length == 0 || self.punch_hole(offset, length) {
            return Ok(());
        }
        // No hole punching here (block device, old file system): write them.
        let zeros = vec![0u8; length.min(1 << 20) as usize];
        let mut done = 0;
        while done < length {
            let n = (length - done).min(zeros.len() as u64) as usize;
            self.write_at(offset + done, zeros.get(..n).unwrap_or(&[]))?;
            done += n as u64;
        }
        Ok(())
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.write_zeroes(offset, length)
    }

    fn flush(&self) -> Result<()> {
        self.check_writable()?;
        self.file.sync_data()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extents;

    #[test]
    fn holes_are_zero_runs_and_zero_writes_punch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        let disk = FileDisk::create(&path, 64 << 20).unwrap();
        disk.write_at(8 << 20, &vec![0xab; 1 << 20]).unwrap();
        let runs: Vec<_> = extents(&disk, 0, u64::MAX).collect::<Result<_>>().unwrap();
        // Every file system we run on supports SEEK_DATA; tmpfs and ext4 do.
        let data: u64 = runs
            .iter()
            .filter(|e| e.state == Allocation::Data)
            .map(|e| e.length)
            .sum();
        assert!((1 << 20..8 << 20).contains(&data), "{runs:?}");
        assert_eq!(runs.iter().map(|e| e.length).sum::<u64>(), 64 << 20);
        let before = disk.allocated_bytes().unwrap();
        disk.write_zeroes(8 << 20, 1 << 20).unwrap();
        assert!(disk.allocated_bytes().unwrap() < before);
        let mut buf = vec![1u8; 4096];
        disk.read_at(8 << 20, &mut buf).unwrap();
        assert!(crate::is_zero(&buf));
        assert!(disk.write_at((64 << 20) - 1, &[0, 0]).is_err());
    }

    #[test]
    fn refuses_directories_and_read_only_writes() {
        let dir = tempfile::tempdir().unwrap();
        let e = FileDisk::open(dir.path()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let path = dir.path().join("ro");
        std::fs::write(&path, [0u8; 512]).unwrap();
        let disk = FileDisk::open(&path).unwrap();
        assert_eq!(
            disk.write_at(0, &[1]).unwrap_err().kind(),
            ErrorKind::ReadOnly
        );
    }
}
