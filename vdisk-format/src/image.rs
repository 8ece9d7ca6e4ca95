//! Opening image files by path.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use std::path::Path;
use std::sync::Arc;

use disk_io::{Error, Extent, FileDisk, ReadAt, Result, WriteAt};

use crate::qcow2::Qcow2;
use crate::raw::Raw;
use crate::{Detected, Format, detect};

/// One parent in a backing chain, as `vdisk info` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackingFile {
    /// Path as found in the child (relative to the child's directory).
    pub path: String,
    /// Detected format of the parent.
    pub format: Format,
}

/// What `vdisk info` says about the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// Container format.
    pub format: Format,
    /// Variant within the format (e.g. `monolithicSparse`), when it has any.
    pub subformat: Option<String>,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// Bytes of host storage the image files occupy.
    pub allocated_bytes: u64,
    /// Allocation unit of the format, when it has one.
    pub cluster_size: Option<u64>,
    /// Parents, nearest first.
    pub backing_chain: Vec<BackingFile>,
}

/// An image file opened read-only, seen as its guest disk.
///
/// ```no_run
/// use disk_io::ReadAt;
/// let image = vdisk_format::Image::open("disk.img")?;
/// println!("{} of {} bytes", image.format(), image.size());
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct Image {
    detected: Detected,
    file: Arc<FileDisk>,
    guest: Box<dyn ReadAt + Send + Sync>,
    cluster_size: Option<u64>,
}

impl Image {
    /// Opens the file at `path` read-only and detects its format from its
    /// content. Formats that are recognised but not read yet are
    /// [`disk_io::ErrorKind::Unsupported`] errors that name the format.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = Arc::new(FileDisk::open(path)?);
        let detected = detect(&*file)?;
        let mut cluster_size = None;
        let guest: Box<dyn ReadAt + Send + Sync> = match detected {
            Detected::Raw(_) => Box::new(Raw::new(Arc::clone(&file))),
            Detected::Qcow { version: 1 } => return Err(not_read_yet("legacy qcow (version 1)")),
            Detected::Qcow { .. } => {
                let q = Qcow2::open(Arc::clone(&file))?;
                cluster_size = Some(q.header().cluster_size());
                Box::new(q)
            }
            other => return Err(not_read_yet(other.format().name())),
        };
        Ok(Image {
            detected,
            file,
            guest,
            cluster_size,
        })
    }

    /// The container format.
    pub fn format(&self) -> Format {
        self.detected.format()
    }

    /// What detection found.
    pub fn detected(&self) -> Detected {
        self.detected
    }

    /// Facts about the container for `vdisk info`.
    pub fn info(&self) -> Result<ImageInfo> {
        Ok(ImageInfo {
            format: self.format(),
            subformat: None,
            virtual_size: self.guest.size(),
            allocated_bytes: self.file.allocated_bytes()?,
            cluster_size: self.cluster_size,
            backing_chain: Vec::new(),
        })
    }
}

fn not_read_yet(what: &str) -> Error {
    Error::unsupported(alloc::format!(
        "{what} image: this format is detected but not read yet"
    ))
}

impl ReadAt for Image {
    fn size(&self) -> u64 {
        self.guest.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.guest.read_at(offset, buf)
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        self.guest.allocation(offset, length)
    }
}

/// Creates a new image of `format` at `path` holding `size` zero bytes,
/// writable through the returned handle. Fails if `path` exists.
///
/// Only raw is written yet; other formats are `Unsupported` errors.
pub fn create(
    path: impl AsRef<Path>,
    format: Format,
    size: u64,
) -> Result<Box<dyn WriteAt + Send + Sync>> {
    match format {
        Format::Raw => Ok(Box::new(Raw::new(FileDisk::create(path, size)?))),
        other => Err(Error::unsupported(alloc::format!(
            "writing {other} images: this format is not written yet"
        ))),
    }
}
