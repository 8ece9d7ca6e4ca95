//! Existing images open for writing, and the chain operations built on
//! them — `commit` and `rebase` — written once for every format: a format
//! that writes children only adds its arms to [`open_rw`] and
//! `set_backing`.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use std::path::{Path, PathBuf};

use disk_io::{Allocation, Error, FileDisk, ReadAt, Result, WriteAt, extents};

use crate::raw::Raw;
use crate::{Format, Image, OpenOptions, detect};

/// Bytes copied per read and write.
const CHUNK: u64 = 1 << 20;
/// Unit a raw image is compared in when it is rebased onto.
const RAW_UNIT: u64 = 64 << 10;

/// An existing image open for writing; its parents (if any) are open
/// read-only beneath it.
pub struct Writable {
    /// The guest disk: reads go through the chain, writes land in this
    /// image only. Its `allocation` reports layer 0 for what this image
    /// holds itself.
    pub disk: Box<dyn WriteAt + Send + Sync>,
    /// The image's format.
    pub format: Format,
    /// Path of the parent as resolved from this image, when it is a child.
    pub parent: Option<PathBuf>,
    /// Allocation unit: writes smaller than it cost a read of the rest.
    pub cluster_size: u64,
}

/// The directory an image's relative parent names are resolved against.
pub(crate) fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Opens a parent named by a child being written. Writing is an explicit
/// act of the user on this chain, so the parent may lie outside the
/// child's directory.
pub(crate) fn open_parent_image(child: &Path, name: &str) -> Result<Image> {
    let opts = OpenOptions {
        allow_outside: true,
        ..Default::default()
    };
    Image::open_with(dir_of(child).join(name), &opts)
        .map_err(|e| e.context(format!("backing file '{name}'")))
}

/// Opens the image at `path` for writing, whatever its format; parents are
/// opened read-only. Images a writer cannot update safely (streamOptimized
/// VMDK, VDI v0 or differencing, unknown incompatible features) are
/// `Unsupported` errors.
pub fn open_rw(path: impl AsRef<Path>) -> Result<Writable> {
    let path = path.as_ref();
    let format = {
        let file = FileDisk::open(path)?;
        detect(&file)?.format()
    };
    type Disk = Box<dyn WriteAt + Send + Sync>;
    let (disk, parent, cluster_size): (Disk, Option<PathBuf>, u64) = match format {
        Format::Raw => (Box::new(Raw::new(FileDisk::open_rw(path)?)), None, RAW_UNIT),
        Format::Qcow2 => {
            let (w, parent) = crate::qcow2::write::open_path_with_parent(path)?;
            let unit = w.cluster_size();
            (Box::new(w), parent, unit)
        }
        Format::Vmdk => {
            let (w, parent) = crate::vmdk::write::open_path_with_parent(path)?;
            let unit = w.cluster_size();
            (Box::new(w), parent, unit)
        }
        Format::Vhdx => {
            let (w, parent) = crate::vhdx::write::open_path_with_parent(path)?;
            let unit = w.block_size();
            (Box::new(w), parent, unit)
        }
        Format::Vdi => {
            let w = crate::vdi::write::open_path(path)?;
            let unit = w.block_size();
            (Box::new(w), None, unit)
        }
        Format::Vhd => {
            let (w, parent) = crate::vhd::write::open_path_with_parent(path)?;
            // Compared and copied in 64 KiB pieces by rebase; VHD itself
            // only reads the rest of sectors written in part.
            let unit = w.unit().min(64 << 10);
            (Box::new(w), parent, unit)
        }
    };
    Ok(Writable {
        disk,
        format,
        parent,
        cluster_size,
    })
}

/// Makes the child at `path` (of `format`) name `name` as its parent,
/// with whatever else its format records about the parent (format name,
/// identifiers, time stamps) taken from `parent`.
fn set_backing(path: &Path, format: Format, name: &str, parent: &Image) -> Result<()> {
    match format {
        Format::Qcow2 => crate::qcow2::commit::set_backing(path, name, parent.format()),
        Format::Vmdk => crate::vmdk::write::set_backing(path, name, parent),
        Format::Vhdx => crate::vhdx::write::set_backing(path, name),
        Format::Vhd => crate::vhd::write::set_backing(path, name, parent),
        other => Err(Error::unsupported(format!(
            "changing the parent of {other} images"
        ))),
    }
}

/// After its parent was written to, makes the child at `path` record the
/// parent's new identity, for formats that keep one (VHDX's
/// `parent_linkage`, VMDK's `parentCID`).
fn relink(path: &Path, format: Format) -> Result<()> {
    match format {
        Format::Vhdx => crate::vhdx::write::relink(path),
        Format::Vmdk => crate::vmdk::write::relink(path),
        // The parent's time stamp.
        Format::Vhd => crate::vhd::write::refresh_parent_time(path),
        _ => Ok(()),
    }
}

/// Merges what the child at `path` holds (data and zeros) into its parent,
/// makes the parent durable, then empties the child so that it reads as
/// its parent. Returns the bytes merged.
pub fn commit(path: impl AsRef<Path>) -> Result<u64> {
    let path = path.as_ref();
    let child_w = open_rw(path)?;
    let Some(parent_path) = child_w.parent.clone() else {
        return Err(Error::invalid_input("the image has no backing file"));
    };
    let parent_w = open_rw(&parent_path)
        .map_err(|e| e.context(format!("parent {}", parent_path.display())))?;
    let format = child_w.format;
    let (child, parent) = (&*child_w.disk, &*parent_w.disk);
    let size = child.size();
    let mut merged = 0u64;
    let mut buf = vec![0u8; CHUNK as usize];
    for run in extents(child, 0, size) {
        let run = run?;
        if run.layer != 0 || run.state == Allocation::Unallocated {
            continue;
        }
        if run.end() > parent.size() {
            return Err(Error::unsupported(format!(
                "committing data at {:#x} past the end of the {}-byte parent",
                run.offset,
                parent.size()
            )));
        }
        if run.state == Allocation::Zero {
            parent.write_zeroes(run.offset, run.length)?;
        } else {
            let mut at = run.offset;
            while at < run.end() {
                let n = (run.end() - at).min(CHUNK) as usize;
                let chunk = buf.get_mut(..n).unwrap_or(&mut []);
                child.read_at(at, chunk)?;
                parent.write_at(at, chunk)?;
                at += n as u64;
            }
        }
        merged += run.length;
    }
    parent.flush()?;
    child.discard(0, size)?;
    child.flush()?;
    drop(child_w);
    drop(parent_w);
    relink(path, format)?;
    Ok(merged)
}

/// Gives the child at `path` the parent `new_backing` (a path as stored in
/// the child: relative to its directory), keeping the guest contents:
/// units the child does not hold and where the old and new parents differ
/// are copied into the child first; then the child names the new parent.
pub fn rebase(path: impl AsRef<Path>, new_backing: &str) -> Result<()> {
    let path = path.as_ref();
    if new_backing.is_empty() {
        return Err(Error::invalid_input("empty backing file name"));
    }
    let child = open_rw(path)?;
    if child.parent.is_none() {
        return Err(Error::invalid_input("the image has no backing file"));
    }
    let new_parent = open_parent_image(path, new_backing)?;
    let (format, cs) = (child.format, child.cluster_size.max(512));
    let disk = &*child.disk;
    let size = disk.size();
    let unit = usize::try_from(cs).map_err(|_| Error::invalid_input("cluster size"))?;
    let mut old = vec![0u8; unit];
    let mut new = vec![0u8; unit];
    for run in extents(disk, 0, size) {
        let run = run?;
        if run.layer == 0 && run.state != Allocation::Unallocated {
            continue;
        }
        // Whole units (the child's allocation unit) inside the run.
        let mut at = run.offset;
        while at < run.end() {
            let n = (run.end() - at).min(cs - at % cs) as usize;
            let o = old.get_mut(..n).unwrap_or(&mut []);
            let w = new.get_mut(..n).unwrap_or(&mut []);
            disk.read_at(at, o)?;
            read_clamped(&new_parent, at, w)?;
            if o != w {
                disk.write_at(at, o)?;
            }
            at += n as u64;
        }
    }
    disk.flush()?;
    drop(child);
    set_backing(path, format, new_backing, &new_parent)
}

/// Reads `buf` at `pos` from `disk`, zeros past its end.
fn read_clamped(disk: &dyn ReadAt, pos: u64, buf: &mut [u8]) -> Result<()> {
    let avail = disk.size().saturating_sub(pos).min(buf.len() as u64) as usize;
    let (head, tail) = buf.split_at_mut(avail);
    if !head.is_empty() {
        disk.read_at(pos, head)?;
    }
    tail.fill(0);
    Ok(())
}
