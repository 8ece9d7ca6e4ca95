//! Changing a qcow2 child's place in its backing chain: `commit` merges
//! what the child holds into its parent and empties the child; `rebase`
//! gives it another parent without changing what the guest reads.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use std::path::{Path, PathBuf};

use disk_io::bytes::be_u32;
use disk_io::{Allocation, Error, FileDisk, ReadAt, Result, WriteAt, extents};

use super::Header;
use super::header::MAX_BACKING_NAME;
use super::write::{Qcow2Writer, open_path};
use crate::chain::Backing;
use crate::raw::Raw;
use crate::{Detected, Format, Image, OpenOptions, detect};

/// Bytes copied per read and write.
const CHUNK: u64 = 1 << 20;
/// Header extension: backing file format name.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn open_image(path: &Path) -> Result<Image> {
    let opts = OpenOptions {
        allow_outside: true,
        ..Default::default()
    };
    Image::open_with(path, &opts)
}

/// The qcow2 child at `path` open for writing over its parent (read-only),
/// and the parent's path.
fn open_child(path: &Path) -> Result<(Qcow2Writer, PathBuf)> {
    let file = FileDisk::open_rw(path)?;
    if !matches!(detect(&file)?, Detected::Qcow { version: 2 | 3 }) {
        return Err(Error::unsupported(
            "only qcow2 children can be committed or rebased",
        ));
    }
    let header = Header::read(&file)?;
    let Some(name) = header.backing_file else {
        return Err(Error::invalid_input("the image has no backing file"));
    };
    let parent_path = dir_of(path).join(&name);
    let parent =
        open_image(&parent_path).map_err(|e| e.context(format!("backing file '{name}'")))?;
    let w = Qcow2Writer::open(file, Some(Box::new(parent) as Backing))?;
    Ok((w, parent_path))
}

/// Merges the clusters the qcow2 child at `path` holds (data and zeros)
/// into its parent (qcow2 or raw), makes the parent durable, then empties
/// the child so that it reads as its parent. Returns the bytes merged.
pub fn commit(path: &Path) -> Result<u64> {
    let (child, parent_path) = open_child(path)?;
    let parent_file = FileDisk::open(&parent_path)?;
    let parent: Box<dyn WriteAt> = match detect(&parent_file)? {
        Detected::Raw(_) => Box::new(Raw::new(FileDisk::open_rw(&parent_path)?)),
        Detected::Qcow { version: 2 | 3 } => Box::new(open_path(&parent_path)?),
        other => {
            return Err(Error::unsupported(format!(
                "committing into a {} parent",
                other.format()
            )));
        }
    };
    drop(parent_file);
    let size = child.size();
    let mut merged = 0u64;
    let mut buf = vec![0u8; CHUNK as usize];
    for run in extents(&child, 0, size) {
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
    drop(parent);
    child.discard(0, size)?;
    child.flush()?;
    Ok(merged)
}

/// Gives the qcow2 child at `path` the parent `new_backing` (a path as
/// stored in the child: relative to its directory), keeping the guest
/// contents: clusters the child does not hold and where the old and new
/// parents differ are copied into the child first; then the header names
/// the new parent and its detected format.
pub fn rebase(path: &Path, new_backing: &str) -> Result<()> {
    if new_backing.is_empty() || new_backing.len() > MAX_BACKING_NAME as usize {
        return Err(Error::invalid_input(format!(
            "backing file name of {} bytes (1 to {MAX_BACKING_NAME})",
            new_backing.len()
        )));
    }
    let (child, _) = open_child(path)?;
    let new_parent = open_image(&dir_of(path).join(new_backing))
        .map_err(|e| e.context(format!("new backing file '{new_backing}'")))?;
    let size = child.size();
    let cs = child.cluster_size();
    let mut old = vec![0u8; cs as usize];
    let mut new = vec![0u8; cs as usize];
    for run in extents(&child, 0, size) {
        let run = run?;
        if run.layer == 0 && run.state != Allocation::Unallocated {
            continue;
        }
        // Whole clusters (the child's allocation unit) inside the run.
        let mut at = run.offset;
        while at < run.end() {
            let n = (run.end() - at).min(cs - at % cs) as usize;
            let o = old.get_mut(..n).unwrap_or(&mut []);
            let w = new.get_mut(..n).unwrap_or(&mut []);
            child.read_at(at, o)?;
            read_clamped(&new_parent, at, w)?;
            if o != w {
                child.write_at(at, o)?;
            }
            at += n as u64;
        }
    }
    child.flush()?;
    let format = new_parent.format();
    drop(child);
    rewrite_backing(path, new_backing, format)
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

/// Rewrites the first cluster of the qcow2 image at `path` so that it
/// names `name` (of `format`) as its backing file, keeping its other
/// header extensions.
fn rewrite_backing(path: &Path, name: &str, format: Format) -> Result<()> {
    let file = FileDisk::open_rw(path)?;
    let h = Header::read(&file)?;
    let cs = h.cluster_size();
    let head = disk_io::read_vec(&file, 0, cs.min(file.size()) as usize)?;
    let hl = h.header_length as usize;
    let mut out: Vec<u8> = head.get(..hl).unwrap_or(&[]).to_vec();
    let mut at = hl;
    // Keep every extension but the backing format, in order.
    for _ in 0..64 {
        let (Some(kind), Some(len)) = (be_u32(&head, at), be_u32(&head, at + 4)) else {
            break;
        };
        if kind == 0 {
            break;
        }
        let padded = (len as usize).div_ceil(8) * 8;
        let Some(ext) = head.get(at..at + 8 + padded) else {
            return Err(Error::corrupt(
                "qcow2 header extension past the first cluster",
                at as u64,
            ));
        };
        if kind != EXT_BACKING_FORMAT {
            out.extend_from_slice(ext);
        }
        at += 8 + padded;
    }
    let fmt = format.name().as_bytes();
    out.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
    out.extend_from_slice(&(fmt.len() as u32).to_be_bytes());
    out.extend_from_slice(fmt);
    out.resize(out.len().div_ceil(8) * 8, 0);
    out.extend_from_slice(&[0; 8]);
    let name_at = out.len() as u64;
    out.extend_from_slice(name.as_bytes());
    if out.len() as u64 > cs {
        return Err(Error::invalid_input(format!(
            "qcow2 header with backing file name '{name}' does not fit in one {cs}-byte cluster"
        )));
    }
    let fields: Vec<u8> = name_at
        .to_be_bytes()
        .into_iter()
        .chain((name.len() as u32).to_be_bytes())
        .collect();
    if let Some(dst) = out.get_mut(8..20) {
        dst.copy_from_slice(&fields);
    }
    out.resize(head.len(), 0);
    file.write_at(0, &out)?;
    file.flush()?;
    Ok(())
}
