//! LZNT1, the compression of NTFS compressed attributes: a compression
//! unit (16 clusters) is a sequence of chunks, each 4 KiB once
//! decompressed, stored either raw or as LZ77 tokens.

use disk_io::{Error, Result};

/// Uncompressed size of one chunk.
pub const CHUNK_SIZE: usize = 4096;

/// Decompresses `input` (the stored clusters of one compression unit, at
/// byte `position` on the volume) into `out`, whose length is the unit's
/// uncompressed size; the bytes past the last chunk are zero-filled.
/// Returns how many bytes the chunks produced.
///
/// ```
/// // One compressed chunk: literal "abc", then a copy of 6 bytes from 3 back.
/// let data = [0x05, 0xb0, 0x08, b'a', b'b', b'c', 0x03, 0x20];
/// let mut out = [0u8; 16];
/// assert_eq!(fs_ntfs::lznt1_decompress(&data, 0, &mut out).unwrap(), 9);
/// assert_eq!(&out[..9], b"abcabcabc");
/// ```
pub fn lznt1_decompress(input: &[u8], position: u64, out: &mut [u8]) -> Result<usize> {
    let mut inp = 0usize;
    let mut outp = 0usize;
    let mut data_end = 0usize;
    while outp < out.len() {
        let header = match (input.get(inp), input.get(inp + 1)) {
            (Some(&a), Some(&b)) => u16::from_le_bytes([a, b]),
            _ => break,
        };
        if header == 0 {
            break;
        }
        let chunk_at = inp;
        let err = |what: alloc::string::String| {
            Error::corrupt(
                alloc::format!("LZNT1 chunk at byte {chunk_at}: {what}"),
                position + chunk_at as u64,
            )
        };
        let len = usize::from(header & 0x0fff) + 1;
        let data = input.get(inp + 2..inp + 2 + len).ok_or_else(|| {
            err(alloc::format!(
                "{len} bytes but only {} left",
                input.len() - inp - 2
            ))
        })?;
        let chunk_end = (outp + CHUNK_SIZE).min(out.len());
        let Some(dst) = out.get_mut(outp..chunk_end) else {
            break;
        };
        let produced = if header & 0x8000 == 0 {
            let n = len.min(dst.len());
            dst.get_mut(..n)
                .unwrap_or_default()
                .copy_from_slice(data.get(..n).unwrap_or_default());
            n
        } else {
            decompress_chunk(data, dst).map_err(err)?
        };
        outp += produced;
        data_end = outp;
        // A chunk shorter than 4 KiB ends the stream's data (only the last
        // one may be); the rest reads as zeros.
        if produced < CHUNK_SIZE {
            if let Some(rest) = out.get_mut(outp..chunk_end) {
                rest.fill(0);
            }
            outp = chunk_end;
        }
        inp += 2 + len;
    }
    if let Some(rest) = out.get_mut(outp..) {
        rest.fill(0);
    }
    Ok(data_end)
}

/// Decompresses one chunk's tokens into `dst` (at most 4 KiB).
fn decompress_chunk(
    data: &[u8],
    dst: &mut [u8],
) -> core::result::Result<usize, alloc::string::String> {
    let mut i = 0usize;
    let mut o = 0usize;
    while let Some(&flags) = data.get(i) {
        i += 1;
        for bit in 0..8 {
            if i >= data.len() || o >= dst.len() {
                return Ok(o);
            }
            if flags & (1 << bit) == 0 {
                if let (Some(d), Some(s)) = (dst.get_mut(o), data.get(i)) {
                    *d = *s;
                }
                i += 1;
                o += 1;
            } else {
                let token = match (data.get(i), data.get(i + 1)) {
                    (Some(&a), Some(&b)) => u16::from_le_bytes([a, b]),
                    _ => return Err(alloc::format!("token at byte {i} cut short")),
                };
                i += 2;
                let mut length_bits = 12u32;
                let mut p = o.saturating_sub(1);
                while p >= 0x10 {
                    length_bits -= 1;
                    p >>= 1;
                }
                let offset = usize::from(token >> length_bits) + 1;
                let length = usize::from(token & ((1u16 << length_bits) - 1)) + 3;
                if offset > o {
                    return Err(alloc::format!(
                        "back-reference {offset} bytes back at output byte {o}"
                    ));
                }
                for _ in 0..length {
                    if o >= dst.len() {
                        break;
                    }
                    let b = dst.get(o - offset).copied().unwrap_or(0);
                    if let Some(d) = dst.get_mut(o) {
                        *d = b;
                    }
                    o += 1;
                }
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn raw_chunks_and_bad_references() {
        // An uncompressed chunk is 4096 bytes copied as they are.
        let mut data = alloc::vec![0xff, 0x3f];
        data.extend((0..4096).map(|i| i as u8));
        let mut out = alloc::vec![1u8; 8192];
        assert_eq!(lznt1_decompress(&data, 0, &mut out).unwrap(), 4096);
        assert_eq!(out[4095], 0xff);
        assert!(out[4096..].iter().all(|b| *b == 0));
        // A back-reference before the start of the chunk.
        let bad = [0x03, 0xb0, 0x01, 0x00, 0x50];
        let e = lznt1_decompress(&bad, 0x1000, &mut out).unwrap_err();
        assert_eq!(e.offset(), Some(0x1000));
        // A chunk longer than the input.
        assert!(lznt1_decompress(&[0x10, 0xb0, 0x00], 0, &mut out).is_err());
    }
}
