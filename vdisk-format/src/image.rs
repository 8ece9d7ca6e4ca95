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
    /// Bytes of host storage the image's own file occupies (as qemu-img
    /// info's "disk size"; parents not counted).
    pub allocated_bytes: u64,
    /// Allocation unit of the format, when it has one.
    pub cluster_size: Option<u64>,
    /// Parents, nearest first.
    pub backing_chain: Vec<BackingFile>,
}

/// How [`Image::open_with`] treats backing files named inside images.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// Follow backing paths that are absolute or resolve (through `..` or
    /// symbolic links) outside the directory of the image naming them.
    /// Off by default: an image from a stranger must not make us open
    /// arbitrary files.
    pub allow_outside: bool,
    /// Longest chain followed (the image itself and its parents).
    pub max_depth: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            allow_outside: false,
            max_depth: 64,
        }
    }
}

/// An image file opened read-only, seen as its guest disk (through its
/// whole backing chain).
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
    chain: Vec<BackingFile>,
}

impl Image {
    /// Opens the file at `path` read-only with the default [`OpenOptions`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Image::open_with(path, &OpenOptions::default())
    }

    /// Opens the file at `path` read-only, detects its format from its
    /// content, and opens its backing chain under `opts`: parents are
    /// found relative to the directory of the image that names them, must
    /// stay inside it unless allowed, must not repeat (a cycle), and the
    /// chain may be at most `max_depth` deep. A parent's format is detected
    /// from its content too, and must be what the child says it is.
    /// Formats that are recognised but not read yet are
    /// [`disk_io::ErrorKind::Unsupported`] errors that name the format.
    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Self> {
        let mut seen = Vec::new();
        Image::open_layer(path.as_ref(), opts, &mut seen)
    }

    fn open_layer(path: &Path, opts: &OpenOptions, seen: &mut Vec<(u64, u64)>) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let file = Arc::new(FileDisk::open(path)?);
        let meta = file.file().metadata()?;
        if seen.contains(&(meta.dev(), meta.ino())) {
            return Err(Error::corrupt(
                alloc::format!("backing chain loops back to {}", path.display()),
                0,
            ));
        }
        if seen.len() >= opts.max_depth {
            return Err(Error::unsupported(alloc::format!(
                "backing chain deeper than {} images",
                opts.max_depth
            )));
        }
        seen.push((meta.dev(), meta.ino()));
        let detected = detect(&*file)?;
        let mut cluster_size = None;
        let mut chain = Vec::new();
        let guest: Box<dyn ReadAt + Send + Sync> = match detected {
            Detected::Raw(_) => Box::new(Raw::new(Arc::clone(&file))),
            Detected::Qcow { version: 1 } => return Err(not_read_yet("legacy qcow (version 1)")),
            Detected::Qcow { .. } => {
                let header = crate::qcow2::Header::read(&*file)?;
                let backing = match &header.backing_file {
                    None => None,
                    Some(name) => {
                        let parent_path = resolve_backing(path, name, opts)?;
                        let parent = Image::open_layer(&parent_path, opts, seen).map_err(|e| {
                            e.context(alloc::format!("backing file {}", parent_path.display()))
                        })?;
                        if let Some(fmt) = &header.backing_format {
                            let named: Result<Format> = fmt.parse();
                            if named.ok() != Some(parent.format()) {
                                return Err(Error::corrupt(
                                    alloc::format!(
                                        "backing format '{fmt}' named in the header, but {} holds {}",
                                        parent_path.display(),
                                        parent.format()
                                    ),
                                    header.header_length.into(),
                                ));
                            }
                        }
                        chain.push(BackingFile {
                            path: name.clone(),
                            format: parent.format(),
                        });
                        chain.extend(parent.chain.iter().cloned());
                        Some(parent.guest)
                    }
                };
                let q = Qcow2::with_backing(Arc::clone(&file), backing)?;
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
            chain,
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
            backing_chain: self.chain.clone(),
        })
    }
}

/// Where the backing file `name`, named inside the image at `child`, is:
/// relative to the child's directory, and inside it unless allowed.
fn resolve_backing(child: &Path, name: &str, opts: &OpenOptions) -> Result<std::path::PathBuf> {
    let dir = match child.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let named = Path::new(name);
    if named.is_absolute() && !opts.allow_outside {
        return Err(Error::invalid_input(alloc::format!(
            "backing file '{name}' is an absolute path; refused unless allowed explicitly"
        )));
    }
    let joined = dir.join(named);
    let real = joined.canonicalize().map_err(|e| {
        Error::invalid_input(alloc::format!(
            "backing file '{name}' ({}): {e}",
            joined.display()
        ))
    })?;
    let real_dir = dir.canonicalize()?;
    if !real.starts_with(&real_dir) && !opts.allow_outside {
        return Err(Error::invalid_input(alloc::format!(
            "backing file '{name}' resolves to {}, outside the image's directory; refused unless allowed explicitly",
            real.display()
        )));
    }
    Ok(real)
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
