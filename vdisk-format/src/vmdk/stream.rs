//! streamOptimized extents: markers before every grain and every metadata
//! block, and the footer (a copy of the header whose grain directory
//! offset is real) that closes the stream, followed by the end-of-stream
//! marker.
//!
//! ```text
//! grain marker:    u64 lba | u32 size (> 0) | size bytes of zlib data
//! metadata marker: u64 sectors | u32 0 | u32 type | padding to 512 bytes
//! ```

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::bytes::{le_u32, le_u64};
use disk_io::{Error, ReadAt, Result};

use super::sparse_header::{SECTOR, SparseHeader};

/// Metadata marker type: end of stream.
pub const MARKER_EOS: u32 = 0;
/// Metadata marker type: a grain table follows.
pub const MARKER_GT: u32 = 1;
/// Metadata marker type: a grain directory follows.
pub const MARKER_GD: u32 = 2;
/// Metadata marker type: the footer follows.
pub const MARKER_FOOTER: u32 = 3;
/// Bytes of a grain marker before the compressed data.
pub const GRAIN_MARKER_LEN: u64 = 12;

/// A grain marker: which guest sector the grain holds and how many
/// compressed bytes follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrainMarker {
    /// Guest sector of the grain's first byte.
    pub lba: u64,
    /// Bytes of compressed data after the marker.
    pub size: u32,
}

impl GrainMarker {
    /// Reads the grain marker at byte `at` of `file`.
    pub fn read<D: ReadAt + ?Sized>(file: &D, at: u64) -> Result<GrainMarker> {
        let mut raw = [0u8; GRAIN_MARKER_LEN as usize];
        if at
            .checked_add(GRAIN_MARKER_LEN)
            .is_none_or(|end| end > file.size())
        {
            return Err(Error::corrupt(
                format!("vmdk grain marker at {at:#x} lies past the end of the file"),
                at,
            ));
        }
        file.read_at(at, &mut raw)?;
        Ok(GrainMarker {
            lba: le_u64(&raw, 0).unwrap_or(0),
            size: le_u32(&raw, 8).unwrap_or(0),
        })
    }
}

/// Reads the footer of a streamOptimized extent whose header says its
/// grain directory is at the end: footer marker, footer (a header) and
/// end-of-stream marker in the last three sectors of the file.
pub fn read_footer<D: ReadAt + ?Sized>(file: &D) -> Result<SparseHeader> {
    let size = file.size();
    let start = size
        .checked_sub(3 * SECTOR)
        .filter(|s| *s >= SECTOR)
        .ok_or_else(|| {
            Error::corrupt(
                "vmdk streamOptimized footer: the file is too short to hold one",
                0,
            )
        })?;
    let tail = disk_io::read_vec(file, start, 3 * SECTOR as usize)?;
    let marker_type = le_u32(&tail, 12).unwrap_or(u32::MAX);
    let marker_size = le_u32(&tail, 8).unwrap_or(u32::MAX);
    if marker_size != 0 || marker_type != MARKER_FOOTER {
        return Err(Error::corrupt(
            "vmdk streamOptimized footer marker missing (header says the grain directory is at the end)",
            start,
        ));
    }
    let eos = start + 2 * SECTOR;
    if le_u32(&tail, 2 * SECTOR as usize + 12) != Some(MARKER_EOS)
        || le_u32(&tail, 2 * SECTOR as usize + 8) != Some(0)
    {
        return Err(Error::corrupt(
            "vmdk streamOptimized end-of-stream marker missing after the footer",
            eos,
        ));
    }
    let footer = tail
        .get(SECTOR as usize..2 * SECTOR as usize)
        .unwrap_or(&[]);
    let h = SparseHeader::parse(footer, start + SECTOR)?;
    if h.gd_offset == super::sparse_header::GD_AT_END {
        return Err(Error::corrupt(
            "vmdk streamOptimized footer names no grain directory",
            start + SECTOR + 56,
        ));
    }
    Ok(h)
}

/// Inflates one compressed grain (zlib, or raw deflate when the zlib
/// header is absent) into a buffer of at most `grain_size` bytes; the
/// number of bytes produced, or `None` when the data is not deflate.
pub fn inflate_grain(input: &[u8], out: &mut [u8]) -> Option<usize> {
    use miniz_oxide::inflate::TINFLStatus;
    use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
    let zlib = match (input.first(), input.get(1)) {
        (Some(&cmf), Some(&flg)) => {
            cmf & 0x0f == 8 && (u16::from(cmf) << 8 | u16::from(flg)).is_multiple_of(31)
        }
        _ => false,
    };
    let mut flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    if zlib {
        flags |= inflate_flags::TINFL_FLAG_PARSE_ZLIB_HEADER;
    }
    let mut state = alloc::boxed::Box::new(DecompressorOxide::new());
    let (status, _, written) = decompress(&mut state, input, out, 0, flags);
    match status {
        TINFLStatus::Done | TINFLStatus::HasMoreOutput => Some(written),
        // Truncated input still gives what it holds; the caller checks length.
        TINFLStatus::NeedsMoreInput => Some(written),
        _ => None,
    }
}

/// Reads and decompresses the grain at byte `at` (its marker when
/// `markers`, else its compressed bytes) of `file`: the grain's bytes
/// (at most `grain_size`).
pub fn read_compressed_grain<D: ReadAt + ?Sized>(
    file: &D,
    at: u64,
    grain_size: u64,
    markers: bool,
) -> Result<Vec<u8>> {
    let file_size = file.size();
    // Incompressible data grows a little under deflate.
    let limit = grain_size * 2 + 1024;
    let (data_at, len) = if markers {
        let m = GrainMarker::read(file, at)?;
        if m.size == 0 || u64::from(m.size) > limit {
            return Err(Error::corrupt(
                format!(
                    "vmdk grain marker at {at:#x} says {} compressed bytes (expected 1 to {limit})",
                    m.size
                ),
                at + 8,
            ));
        }
        (at + GRAIN_MARKER_LEN, u64::from(m.size))
    } else {
        (at, limit)
    };
    if data_at >= file_size {
        return Err(Error::corrupt(
            format!("vmdk compressed grain at {at:#x} lies past the end of the file"),
            at,
        ));
    }
    let len = len.min(file_size - data_at);
    let input = disk_io::read_vec(file, data_at, len as usize)?;
    let mut out = vec![0u8; grain_size as usize];
    let n = inflate_grain(&input, &mut out).ok_or_else(|| {
        Error::corrupt(
            format!("vmdk compressed grain at {at:#x} does not inflate"),
            at,
        )
    })?;
    out.truncate(n);
    Ok(out)
}
