//! Converting an image file into a new one, never leaving a half-written
//! destination under its final name.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::AtomicBool;

use std::sync::Arc;

use disk_io::{Error, ErrorKind, ReadAt, WriteAt};
use vdisk_format::{CreateOptions, Format, Image};

use crate::copy::{CopyOptions, CopyStats, Side, copy_sectors};
use crate::inspect::is_recognised;
use crate::logical::{LogicalReport, SharedWriteDisk, copy_planned, plan_logical};
use crate::used::{UsedFilter, used_layout};
use crate::volume::SharedDisk;

/// How much of the source a conversion carries over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Every guest sector (zeros and holes stay sparse).
    #[default]
    Sector,
    /// Only blocks the file systems inside mark as used.
    Used,
    /// Fresh file systems, file by file.
    Logical,
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "sector" => Ok(Mode::Sector),
            "used" => Ok(Mode::Used),
            "logical" => Ok(Mode::Logical),
            other => Err(Error::invalid_input(format!(
                "unknown mode '{other}' (expected sector, used or logical)"
            ))),
        }
    }
}

/// An error together with the file it concerns, printed `FILE: message`.
#[derive(Debug)]
pub struct PathError {
    /// The file the error is about, when it is about one.
    pub path: Option<PathBuf>,
    /// What went wrong, with the structure and offset.
    pub error: Error,
}

impl PathError {
    /// Ties `error` to `path`.
    pub fn new(path: impl Into<PathBuf>, error: Error) -> Self {
        PathError {
            path: Some(path.into()),
            error,
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}: {}", p.display(), self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<Error> for PathError {
    fn from(error: Error) -> Self {
        PathError { path: None, error }
    }
}

/// Opens an image for reading as a conversion source.
///
/// A raw file whose start matches no partition table, file system or other
/// known disk content is refused (it is most likely not a disk image at
/// all) unless `allow_unrecognised` is set. Tables are not parsed here: a
/// sector copy does not need a valid one.
pub fn open_source(path: &Path, allow_unrecognised: bool) -> Result<Image, PathError> {
    let at = |e: Error| PathError::new(path, e);
    let image = Image::open(path).map_err(at)?;
    if image.format() == Format::Raw && !allow_unrecognised && !is_recognised(&image).map_err(at)? {
        return Err(at(Error::new(
            ErrorKind::InvalidInput,
            "unrecognised content: no image header, partition table or file system signature",
        )
        .at(0)));
    }
    Ok(image)
}

/// How to convert.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvertOptions<'a> {
    /// Output format.
    pub format: Option<Format>,
    /// What to copy.
    pub mode: Mode,
    /// Guest size of the output; the source's when `None`.
    pub size: Option<u64>,
    /// Set to stop the conversion (the temporary output is removed).
    pub cancel: Option<&'a AtomicBool>,
    /// Accept raw sources whose content is not recognised.
    pub allow_unrecognised: bool,
    /// Make the output durable before it takes its final name: flush its
    /// data to stable storage, rename, then sync the directory. Without it
    /// the output is complete before the rename but may still sit in the
    /// page cache, as with `qemu-img convert` and `cp`, which never sync.
    pub sync: bool,
    /// Options of the output format (`-o KEY=VAL`); its defaults when `None`.
    pub create: Option<&'a CreateOptions>,
}

/// Converts the image at `src` into a new image at `dst`.
///
/// The output is written under a temporary name in `dst`'s directory and
/// renamed into place only when complete (and, with
/// [`ConvertOptions::sync`], durable); on any failure or cancellation the
/// temporary file is removed and `dst` is untouched. The source is opened
/// read-only.
pub fn convert(
    src: &Path,
    dst: &Path,
    opts: &ConvertOptions<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyStats, PathError> {
    Ok(convert_report(src, dst, opts, progress)?.0)
}

/// [`convert`], also saying, in logical mode, how each partition was
/// carried over.
pub fn convert_report(
    src: &Path,
    dst: &Path,
    opts: &ConvertOptions<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(CopyStats, Option<LogicalReport>), PathError> {
    let format = opts.format.unwrap_or(Format::Raw);
    let image = open_source(src, opts.allow_unrecognised)?;
    if opts.mode == Mode::Logical {
        return convert_logical(image, src, dst, format, opts, progress);
    }
    // Used mode reads the layout and the file systems' used maps before
    // anything is written, so a file system it cannot read leaves no
    // output behind.
    let layout = match opts.mode {
        Mode::Sector => None,
        Mode::Used => Some(used_layout(&image).map_err(|e| PathError::new(src, e))?),
        Mode::Logical => None,
    };
    let size = opts.size.unwrap_or(image.size());
    if size < image.size() {
        return Err(Error::invalid_input(format!(
            "--size {size} is smaller than the source's {} bytes: {} mode cannot shrink a disk",
            image.size(),
            if opts.mode == Mode::Used {
                "used"
            } else {
                "sector"
            }
        ))
        .into());
    }
    refuse_same_file(src, dst)?;

    let temp = TempOutput::new(dst)?;
    let defaults = CreateOptions::new();
    let create = opts.create.unwrap_or(&defaults);
    // The copy skips zeros, which a child would read from its parent.
    if create.get("backing_file").is_some() {
        return Err(Error::unsupported(
            "format option 'backing_file' for convert output (make the child with create --backing)",
        )
        .into());
    }
    let output = vdisk_format::create_output(&temp.path, format, size, create)
        .map_err(|e| PathError::new(dst, e))?;
    let out = &*output.disk;
    let copy_opts = CopyOptions {
        destination_is_zero: true,
        cancel: opts.cancel,
        // Compressed output is written front to back (compressing runs on
        // the output's own threads); the others take writes in any order.
        threads: if create.sequential() { 1 } else { 0 },
    };
    let copied = match &layout {
        None => copy_sectors(&image, out, &copy_opts, progress),
        Some(layout) => copy_sectors(&UsedFilter::new(&image, layout), out, &copy_opts, progress),
    };
    let stats = copied.map_err(|e| match e.side {
        Side::Source => PathError::new(src, e.error),
        Side::Destination => PathError::new(dst, e.error),
        Side::Neither => PathError::from(e.error),
    })?;
    // Compressed output holds its last clusters until finished.
    output.finish().map_err(|e| PathError::new(dst, e))?;
    if opts.sync {
        out.flush().map_err(|e| PathError::new(dst, e))?;
    }
    drop(output);
    temp.commit(opts.sync)?;
    Ok((stats, None))
}

/// Logical mode: the layout and fresh file systems, file by file (see
/// [`crate::logical`]); every fit is checked before the output exists.
fn convert_logical(
    image: Image,
    src: &Path,
    dst: &Path,
    format: Format,
    opts: &ConvertOptions<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(CopyStats, Option<LogicalReport>), PathError> {
    let size = opts.size.unwrap_or(image.size());
    refuse_same_file(src, dst)?;
    let defaults = CreateOptions::new();
    let create = opts.create.unwrap_or(&defaults);
    if create.sequential() || create.get("backing_file").is_some() {
        return Err(Error::unsupported(
            "logical mode into a compressed, stream-optimized or child output \
             (it writes out of order: convert logically into a sparse image, then convert that)",
        )
        .into());
    }
    let source: SharedDisk = Arc::new(image);
    let plan = plan_logical(Arc::clone(&source), size).map_err(|e| PathError::new(src, e))?;
    let temp = TempOutput::new(dst)?;
    let output = Arc::new(
        vdisk_format::create_output(&temp.path, format, size, create)
            .map_err(|e| PathError::new(dst, e))?,
    );
    let shared: SharedWriteDisk = Arc::new(SharedOutput(Arc::clone(&output)));
    let report =
        copy_planned(plan, shared, opts.cancel, progress).map_err(|e| PathError::new(dst, e))?;
    output.finish().map_err(|e| PathError::new(dst, e))?;
    if opts.sync {
        output.disk.flush().map_err(|e| PathError::new(dst, e))?;
    }
    drop(output);
    temp.commit(opts.sync)?;
    let bytes = report.units.iter().map(|u| u.bytes).sum();
    let stats = CopyStats {
        total: size,
        read: bytes,
        written: bytes,
        zero: 0,
    };
    Ok((stats, Some(report)))
}

/// An output shared by the file-system writers of a logical copy.
struct SharedOutput(Arc<vdisk_format::Output>);

impl ReadAt for SharedOutput {
    fn size(&self) -> u64 {
        self.0.disk.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> disk_io::Result<()> {
        self.0.disk.read_at(offset, buf)
    }

    fn allocation(&self, offset: u64, length: u64) -> disk_io::Result<disk_io::Extent> {
        self.0.disk.allocation(offset, length)
    }
}

impl WriteAt for SharedOutput {
    fn write_at(&self, offset: u64, buf: &[u8]) -> disk_io::Result<()> {
        self.0.disk.write_at(offset, buf)
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> disk_io::Result<()> {
        self.0.disk.write_zeroes(offset, length)
    }

    fn discard(&self, offset: u64, length: u64) -> disk_io::Result<()> {
        self.0.disk.discard(offset, length)
    }

    fn flush(&self) -> disk_io::Result<()> {
        self.0.disk.flush()
    }
}

/// Refuses to convert an image onto itself.
fn refuse_same_file(src: &Path, dst: &Path) -> Result<(), PathError> {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(a), Ok(b)) = (fs::metadata(src), fs::metadata(dst)) {
        if a.dev() == b.dev() && a.ino() == b.ino() {
            return Err(PathError::new(
                dst,
                Error::invalid_input("destination is the source image"),
            ));
        }
    }
    Ok(())
}

/// A destination under construction: a hidden temporary name beside the
/// final one, removed on drop unless committed.
struct TempOutput {
    path: PathBuf,
    dst: PathBuf,
    committed: bool,
}

impl TempOutput {
    fn new(dst: &Path) -> Result<Self, PathError> {
        let name = dst.file_name().ok_or_else(|| {
            PathError::new(dst, Error::invalid_input("destination has no file name"))
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".vdisk-tmp-{}", std::process::id()));
        let path = dst.with_file_name(temp_name);
        // A leftover from a killed run with the same pid would block create_new.
        let _ = fs::remove_file(&path);
        Ok(TempOutput {
            path,
            dst: dst.to_path_buf(),
            committed: false,
        })
    }

    fn commit(mut self, sync: bool) -> Result<(), PathError> {
        fs::rename(&self.path, &self.dst).map_err(|e| PathError::new(&self.dst, e.into()))?;
        self.committed = true;
        if sync {
            // Make the rename itself durable.
            let dir = match self.dst.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| PathError::new(&self.dst, e.into()))?;
        }
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}
