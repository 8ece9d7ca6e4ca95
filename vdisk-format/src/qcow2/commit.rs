//! Changing the parent a qcow2 child names. The chain operations
//! themselves (commit, rebase) are format-independent: see
//! [`crate::writable`].

use alloc::format;
use alloc::vec::Vec;
use std::path::Path;

use disk_io::bytes::be_u32;
use disk_io::{Error, FileDisk, ReadAt, Result, WriteAt};

use super::Header;
use super::header::MAX_BACKING_NAME;
use crate::Format;

/// Header extension: backing file format name.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;

/// Rewrites the first cluster of the qcow2 image at `path` so that it
/// names `name` (of `format`) as its backing file, keeping its other
/// header extensions.
pub(crate) fn set_backing(path: &Path, name: &str, format: Format) -> Result<()> {
    if name.is_empty() || name.len() > MAX_BACKING_NAME as usize {
        return Err(Error::invalid_input(format!(
            "backing file name of {} bytes (1 to {MAX_BACKING_NAME})",
            name.len()
        )));
    }
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
