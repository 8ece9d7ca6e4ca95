//! Opening image files by path.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use disk_io::{Error, Extent, FileDisk, ReadAt, Result, WriteAt};

use crate::chain::Backing;
use crate::raw::Raw;
use crate::{CheckReport, Detected, Format, detect};

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
    /// Read images whose checksums do not verify, or whose parent is not
    /// the one they were made on (identity or timestamp mismatch): each
    /// such finding becomes a line of [`Image::warnings`] instead of an
    /// error. Off by default.
    pub allow_damaged: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            allow_outside: false,
            max_depth: 64,
            allow_damaged: false,
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
    path: PathBuf,
    detected: Detected,
    file: Arc<FileDisk>,
    guest: Backing,
    subformat: Option<String>,
    cluster_size: Option<u64>,
    extra_allocated: u64,
    chain: Vec<BackingFile>,
    warnings: Vec<String>,
}

/// What a format's opener makes of one image file: its guest disk (over
/// its parent, when it has one) and the facts `info` shows.
pub(crate) struct Layer {
    /// The guest disk.
    pub guest: Backing,
    /// Variant within the format, as qemu-img names it.
    pub subformat: Option<String>,
    /// Allocation unit (cluster, grain, block).
    pub cluster_size: Option<u64>,
    /// Host bytes of the image's other files (VMDK extents), counted in
    /// `info`'s allocated bytes as qemu-img counts them.
    pub extra_allocated: u64,
}

/// What a format's opener may ask of the caller while it opens one image:
/// the path policy for files named inside it (backing files, extents),
/// opening its parent, and whether damage is an error or a warning.
pub(crate) struct OpenContext<'a> {
    path: &'a Path,
    opts: &'a OpenOptions,
    seen: &'a mut Vec<(u64, u64)>,
    chain: Vec<BackingFile>,
    warnings: Vec<String>,
}

#[allow(dead_code, reason = "the format openers use these as they land")]
impl OpenContext<'_> {
    /// The image being opened.
    pub fn path(&self) -> &Path {
        self.path
    }

    /// The caller's options.
    pub fn options(&self) -> &OpenOptions {
        self.opts
    }

    /// Where the file `name`, named inside the image being opened (a
    /// backing file, an extent), is under the path policy: relative to the
    /// image's directory and inside it unless allowed. `what` names the
    /// reference in messages (`backing file`, `extent`).
    pub fn resolve(&self, name: &str, what: &str) -> Result<PathBuf> {
        resolve_named(self.path, name, what, self.opts)
    }

    /// Opens the parent named `name` inside the image (resolved by
    /// [`resolve`](Self::resolve)), checks that its detected format is
    /// `expect` when the child says, and records it in the chain.
    pub fn open_parent(&mut self, name: &str, expect: Option<Format>) -> Result<Image> {
        let path = self.resolve(name, "backing file")?;
        self.open_parent_at(&path, name, expect)
    }

    /// Opens the parent at `path` (already resolved by the format, e.g.
    /// found by identity among the image's neighbours); `name` is what
    /// `info` shows for it.
    pub fn open_parent_at(
        &mut self,
        path: &Path,
        name: &str,
        expect: Option<Format>,
    ) -> Result<Image> {
        let parent = Image::open_layer(path, self.opts, self.seen)
            .map_err(|e| e.context(format!("backing file {}", path.display())))?;
        if let Some(want) = expect {
            if parent.format() != want {
                return Err(Error::corrupt(
                    format!(
                        "backing format '{want}' named in {}, but {} holds {}",
                        self.path.display(),
                        path.display(),
                        parent.format()
                    ),
                    0,
                ));
            }
        }
        self.chain.push(BackingFile {
            path: name.into(),
            format: parent.format(),
        });
        self.chain.extend(parent.chain.iter().cloned());
        for w in &parent.warnings {
            self.warnings.push(format!("{}: {w}", path.display()));
        }
        Ok(parent)
    }

    /// Notes something the caller should know but that is no damage (a
    /// backup copy of a structure used in place of the primary one).
    pub fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }

    /// Reports damage that a careful reader may still read past (a
    /// checksum that does not verify, a parent that changed): an error,
    /// unless the caller allowed damaged images, then a warning.
    pub fn damaged(&mut self, err: Error) -> Result<()> {
        if self.opts.allow_damaged {
            self.warnings.push(err.to_string());
            Ok(())
        } else {
            Err(err)
        }
    }
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
        let mut ctx = OpenContext {
            path,
            opts,
            seen,
            chain: Vec::new(),
            warnings: Vec::new(),
        };
        let layer = open_format(detected, &file, &mut ctx)?;
        Ok(Image {
            path: path.to_path_buf(),
            detected,
            file,
            guest: layer.guest,
            subformat: layer.subformat,
            cluster_size: layer.cluster_size,
            extra_allocated: layer.extra_allocated,
            chain: ctx.chain,
            warnings: ctx.warnings,
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

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image's own file (not its parents').
    pub fn file(&self) -> &Arc<FileDisk> {
        &self.file
    }

    /// Damage read past because [`OpenOptions::allow_damaged`] was set,
    /// this image's and its parents', one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The guest disk, to stack under a child as its parent.
    pub fn into_guest(self) -> Backing {
        self.guest
    }

    /// Checks the container's own metadata (not its parents'), as
    /// `vdisk check` does: see [`check`].
    pub fn check(&self) -> Result<CheckReport> {
        check_file(
            self.detected,
            &self.file,
            &self.path,
            &OpenOptions::default(),
        )
    }

    /// Facts about the container for `vdisk info`.
    pub fn info(&self) -> Result<ImageInfo> {
        Ok(ImageInfo {
            format: self.format(),
            subformat: self.subformat.clone(),
            virtual_size: self.guest.size(),
            allocated_bytes: self
                .file
                .allocated_bytes()?
                .saturating_add(self.extra_allocated),
            cluster_size: self.cluster_size,
            backing_chain: self.chain.clone(),
        })
    }
}

/// Opens one image file of a detected format: the dispatch every format
/// adds its arm to.
fn open_format(
    detected: Detected,
    file: &Arc<FileDisk>,
    ctx: &mut OpenContext<'_>,
) -> Result<Layer> {
    match detected {
        Detected::Raw(_) => Ok(Layer {
            guest: Box::new(Raw::new(Arc::clone(file))),
            subformat: None,
            cluster_size: None,
            extra_allocated: 0,
        }),
        Detected::Qcow { version: 1 } => Err(Error::unsupported(
            "legacy qcow (version 1) image: only qcow2 (versions 2 and 3) is read",
        )),
        Detected::Qcow { .. } => crate::qcow2::open_layer(Arc::clone(file), ctx),
        Detected::Vdi => crate::vdi::open_layer(Arc::clone(file), ctx),
        Detected::Vhd { .. } => crate::vhd::open_layer(Arc::clone(file), ctx),
        Detected::Vhdx => crate::vhdx::open_layer(Arc::clone(file), ctx),
        Detected::VmdkSparse | Detected::VmdkDescriptor | Detected::VmdkCowd => {
            crate::vmdk::open_layer(Arc::clone(file), detected, ctx)
        }
    }
}

/// Checks the container metadata of one image file of a detected format
/// (at `path`, whose neighbours, e.g. VMDK extents, are found under `opts`).
fn check_file(
    detected: Detected,
    file: &FileDisk,
    path: &Path,
    opts: &OpenOptions,
) -> Result<CheckReport> {
    match detected {
        Detected::Raw(_) => Ok(CheckReport::default()),
        Detected::Qcow { version: 2 | 3 } => crate::qcow2::check::check(file),
        Detected::Vdi => crate::vdi::check(file),
        Detected::Vhd { .. } => crate::vhd::check::check_file(file),
        Detected::Vhdx => crate::vhdx::check(file),
        Detected::VmdkSparse | Detected::VmdkDescriptor | Detected::VmdkCowd => {
            crate::vmdk::check_layer(detected, file, path, opts)
        }
        other => Err(Error::unsupported(format!(
            "checking {} images is not implemented yet",
            other.format()
        ))),
    }
}

/// Opens the file at `path` and checks its container metadata (not its
/// parents'): qcow2 refcounts and leaks, VMDK grain directories, VHD and
/// VHDX checksums and BAT bounds, VDI block maps. An error means the
/// header itself could not be read; everything found past it is in the
/// report.
pub fn check(path: impl AsRef<Path>) -> Result<CheckReport> {
    let path = path.as_ref();
    let file = FileDisk::open(path)?;
    let detected = detect(&file)?;
    check_file(detected, &file, path, &OpenOptions::default())
}

/// Where the file `name`, named inside the image at `child`, is: relative
/// to the child's directory, and inside it unless allowed. `what` names
/// the reference (`backing file`, `extent`) in messages.
pub(crate) fn resolve_named(
    child: &Path,
    name: &str,
    what: &str,
    opts: &OpenOptions,
) -> Result<PathBuf> {
    let dir = match child.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let named = Path::new(name);
    if named.is_absolute() && !opts.allow_outside {
        return Err(Error::invalid_input(format!(
            "{what} '{name}' is an absolute path; refused unless allowed explicitly"
        )));
    }
    let joined = dir.join(named);
    let real = joined.canonicalize().map_err(|e| {
        Error::invalid_input(format!("{what} '{name}' ({}): {e}", joined.display()))
    })?;
    let real_dir = dir.canonicalize()?;
    if !real.starts_with(&real_dir) && !opts.allow_outside {
        return Err(Error::invalid_input(format!(
            "{what} '{name}' resolves to {}, outside the image's directory; refused unless allowed explicitly",
            real.display()
        )));
    }
    Ok(real)
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
/// Every format is written; options a format does not know are
/// `Unsupported` errors naming the key.
pub fn create(
    path: impl AsRef<Path>,
    format: Format,
    size: u64,
) -> Result<Box<dyn WriteAt + Send + Sync>> {
    create_with(path, format, size, &crate::CreateOptions::new())
}

/// [`create`] with format options (`-o KEY=VAL`): unknown keys are
/// `Unsupported` errors naming the key. A qcow2 image with
/// `compress=on` must be written front to back; its last clusters are
/// stored by `flush` or when it is dropped (errors then lost: use
/// [`create_output`] to see them).
pub fn create_with(
    path: impl AsRef<Path>,
    format: Format,
    size: u64,
    opts: &crate::CreateOptions,
) -> Result<Box<dyn WriteAt + Send + Sync>> {
    Ok(create_output(path, format, size, opts)?.disk)
}

/// A new image being written, with what completes it.
pub struct Output {
    /// The guest disk of the new image.
    pub disk: Box<dyn WriteAt + Send + Sync>,
    finisher: Option<Arc<dyn Finish + Send + Sync>>,
}

/// What a format does once the last guest byte has been written: store
/// buffered (compressed) clusters, write a footer or end-of-stream marker.
pub(crate) trait Finish {
    /// Completes the image without syncing it; called once, after the
    /// last write.
    fn finish(&self) -> Result<()>;
}

impl Output {
    /// An output with nothing to complete but flushing.
    pub(crate) fn plain(disk: Box<dyn WriteAt + Send + Sync>) -> Self {
        Output {
            disk,
            finisher: None,
        }
    }

    /// An output whose format completes it with `finisher` (usually the
    /// same writer as `disk`).
    pub(crate) fn finished_by(
        disk: Box<dyn WriteAt + Send + Sync>,
        finisher: Arc<dyn Finish + Send + Sync>,
    ) -> Self {
        Output {
            disk,
            finisher: Some(finisher),
        }
    }

    /// Stores what the image still buffers (compressed clusters, footers),
    /// without syncing: after it, the file is a complete image.
    pub fn finish(&self) -> Result<()> {
        match &self.finisher {
            Some(f) => f.finish(),
            None => Ok(()),
        }
    }
}

/// [`create_with`], keeping the means to [`Output::finish`] the image.
pub fn create_output(
    path: impl AsRef<Path>,
    format: Format,
    size: u64,
    opts: &crate::CreateOptions,
) -> Result<Output> {
    match format {
        Format::Raw => {
            opts.only(&[], "raw")?;
            Ok(Output::plain(Box::new(Raw::new(FileDisk::create(
                path, size,
            )?))))
        }
        Format::Qcow2 => {
            let q = Arc::new(crate::qcow2::write::create_image(
                path.as_ref(),
                size,
                opts,
            )?);
            Ok(Output::finished_by(Box::new(Arc::clone(&q)), q))
        }
        Format::Vmdk => crate::vmdk::create_output(path.as_ref(), size, opts),
        Format::Vhdx => {
            let v = Arc::new(crate::vhdx::write::create_image(path.as_ref(), size, opts)?);
            Ok(Output::finished_by(Box::new(Arc::clone(&v)), v))
        }
        Format::Vdi => {
            let v = Arc::new(crate::vdi::write::create_image(path.as_ref(), size, opts)?);
            Ok(Output::finished_by(Box::new(Arc::clone(&v)), v))
        }
        Format::Vhd => Ok(Output::plain(Box::new(crate::vhd::write::create_image(
            path.as_ref(),
            size,
            opts,
        )?))),
    }
}
