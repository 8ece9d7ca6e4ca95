//! Converting an image file into a new one, never leaving a half-written
//! destination under its final name.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::AtomicBool;

use disk_io::{Error, ErrorKind, ReadAt};
use vdisk_format::{CreateOptions, Format, Image};

use crate::copy::{CopyOptions, CopyStats, Side, copy_sectors};
use crate::inspect::is_recognised;
use crate::used::{UsedFilter, used_layout};

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
    let format = opts.format.unwrap_or(Format::Raw);
    let image = open_source(src, opts.allow_unrecognised)?;
    // Used mode reads the layout and the file systems' used maps before
    // anything is written, so a file system it cannot read leaves no
    // output behind.
    let layout = match opts.mode {
        Mode::Sector => None,
        Mode::Used => Some(used_layout(&image).map_err(|e| PathError::new(src, e))?),
        Mode::Logical => {
            return Err(Error::unsupported(
                "conversion mode 'logical': no file-system writer is wired into the pipeline yet",
            )
            .into());
        }
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
    Ok(stats)
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
