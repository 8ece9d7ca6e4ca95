//! Sector-by-sector comparison of two guest disks.

use disk_io::{Allocation, ReadAt, Result, is_zero};

use crate::copy::BATCH;

/// The outcome of [`compare_sectors`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// Same contents (a size difference is allowed when the larger disk's
    /// extra bytes are all zeros, as `qemu-img compare` allows it).
    Equal,
    /// The first byte offset where the contents differ.
    DiffersAt(u64),
}

/// Compares the guest contents of `a` and `b`, skipping ranges that both
/// allocation maps say read as zeros.
///
/// ```
/// use disk_io::{MemDisk, WriteAt};
/// use image_convert::{compare_sectors, Comparison};
/// let a = MemDisk::new(1 << 20);
/// let b = MemDisk::new(2 << 20);
/// assert_eq!(compare_sectors(&a, &b)?, Comparison::Equal);
/// b.write_at(5000, &[1])?;
/// assert_eq!(compare_sectors(&a, &b)?, Comparison::DiffersAt(5000));
/// # Ok::<(), disk_io::Error>(())
/// ```
pub fn compare_sectors<A, B>(a: &A, b: &B) -> Result<Comparison>
where
    A: ReadAt + ?Sized,
    B: ReadAt + ?Sized,
{
    let common = a.size().min(b.size());
    let mut buf_a = vec![0u8; BATCH as usize];
    let mut buf_b = vec![0u8; BATCH as usize];
    let mut offset = 0u64;
    while offset < common {
        let want = (common - offset).min(BATCH);
        let ea = a.allocation(offset, want)?;
        let eb = b.allocation(offset, want)?;
        let len = ea.length.min(eb.length).min(want);
        let zero_a = ea.state != Allocation::Data;
        let zero_b = eb.state != Allocation::Data;
        if !(zero_a && zero_b) {
            // len <= BATCH, the buffers' length.
            let n = len as usize;
            let ra = buf_a.get_mut(..n).unwrap_or(&mut []);
            let rb = buf_b.get_mut(..n).unwrap_or(&mut []);
            read_or_zero(a, offset, ra, zero_a)?;
            read_or_zero(b, offset, rb, zero_b)?;
            if let Some(i) = ra.iter().zip(rb.iter()).position(|(x, y)| x != y) {
                return Ok(Comparison::DiffersAt(offset + i as u64));
            }
        }
        offset += len;
    }
    // The tail of the larger disk must read as zeros.
    let tail = if a.size() > b.size() {
        first_nonzero(a, common, &mut buf_a)?
    } else {
        first_nonzero(b, common, &mut buf_a)?
    };
    Ok(tail.map_or(Comparison::Equal, Comparison::DiffersAt))
}

fn read_or_zero<D: ReadAt + ?Sized>(
    disk: &D,
    offset: u64,
    buf: &mut [u8],
    zero: bool,
) -> Result<()> {
    if zero {
        buf.fill(0);
        Ok(())
    } else {
        disk.read_at(offset, buf)
    }
}

/// The first non-zero byte of `disk` at or after `from`, if any.
fn first_nonzero<D: ReadAt + ?Sized>(disk: &D, from: u64, buf: &mut [u8]) -> Result<Option<u64>> {
    let mut offset = from;
    while offset < disk.size() {
        let want = (disk.size() - offset).min(buf.len() as u64);
        let e = disk.allocation(offset, want)?;
        if e.state == Allocation::Data {
            let chunk = buf.get_mut(..e.length as usize).unwrap_or(&mut []);
            disk.read_at(offset, chunk)?;
            if !is_zero(chunk) {
                let i = chunk.iter().position(|&b| b != 0).unwrap_or(0);
                return Ok(Some(offset + i as u64));
            }
        }
        offset += e.length;
    }
    Ok(None)
}
