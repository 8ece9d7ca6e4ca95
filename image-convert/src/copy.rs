//! Sector-mode copy: every guest byte carried over, driven by the source's
//! allocation map, with zero blocks detected and left as holes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use disk_io::{Allocation, Error, ErrorKind, ReadAt, Result, WriteAt, extents, is_zero};

/// Bytes moved per batch; batches are aligned to this size in the source.
pub const BATCH: u64 = 4 << 20;
/// Granularity of zero detection.
pub const ZERO_BLOCK: usize = 4096;
/// Batches in flight between the reading and the writing thread (bounds memory).
const IN_FLIGHT: usize = 4;

/// How a copy behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyOptions<'a> {
    /// The destination is known to read as zeros everywhere (a freshly
    /// created image), so zero ranges need not be written at all.
    pub destination_is_zero: bool,
    /// Set from another thread (e.g. a Ctrl-C handler) to stop the copy;
    /// it then fails with [`ErrorKind::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
}

/// What a copy did, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Guest bytes covered (the source size).
    pub total: u64,
    /// Bytes read from the source (its data ranges).
    pub read: u64,
    /// Bytes written to the destination as data.
    pub written: u64,
    /// Bytes that were zero (holes, zero clusters, zero blocks) and were
    /// either skipped or written as zeros.
    pub zero: u64,
}

/// Which disk of a copy an error concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Reading the source failed.
    Source,
    /// Writing the destination failed.
    Destination,
    /// Neither: the copy was cancelled or its arguments were wrong.
    Neither,
}

/// A copy error and the disk it concerns.
#[derive(Debug)]
pub struct CopyError {
    /// Which disk failed.
    pub side: Side,
    /// What went wrong.
    pub error: Error,
}

impl From<CopyError> for Error {
    fn from(e: CopyError) -> Self {
        e.error
    }
}

impl core::fmt::Display for CopyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for CopyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

fn on(side: Side) -> impl Fn(Error) -> CopyError {
    move |error| CopyError { side, error }
}

/// One batch of source data on its way to the writer.
struct Batch {
    offset: u64,
    buf: Vec<u8>,
}

enum Job {
    /// Data read from the source.
    Data(Batch),
    /// A range that reads as zeros.
    Zero { offset: u64, length: u64 },
}

/// Copies every byte of `src` to the same offset of `dst`.
///
/// Reading runs on its own thread, overlapping with zero detection and
/// writing on the calling thread; at most a few batches are in flight, so
/// memory stays bounded whatever the disk size. `progress(done, total)` is
/// called after each batch.
///
/// ```
/// use disk_io::{MemDisk, ReadAt, WriteAt};
/// use image_convert::{copy_sectors, CopyOptions};
/// let src = MemDisk::new(1 << 20);
/// src.write_at(8192, b"payload")?;
/// let dst = MemDisk::new(1 << 20);
/// let opts = CopyOptions { destination_is_zero: true, ..Default::default() };
/// let stats = copy_sectors(&src, &dst, &opts, &mut |_, _| {})?;
/// assert_eq!(stats.written, 4096); // one non-zero 4 KiB block
/// assert_eq!(src.to_vec()?, dst.to_vec()?);
/// # Ok::<(), disk_io::Error>(())
/// ```
pub fn copy_sectors<S, D>(
    src: &S,
    dst: &D,
    opts: &CopyOptions<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyStats, CopyError>
where
    S: ReadAt + Sync + ?Sized,
    D: WriteAt + ?Sized,
{
    let total = src.size();
    if dst.size() < total {
        return Err(on(Side::Neither)(Error::invalid_input(format!(
            "destination of {} bytes cannot hold a source of {total} bytes",
            dst.size()
        ))));
    }
    let (job_tx, job_rx) = sync_channel::<Result<Job>>(IN_FLIGHT);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
    std::thread::scope(|scope| {
        scope.spawn(|| read_side(src, opts.cancel, job_tx, free_rx));
        write_side(dst, total, opts, job_rx, free_tx, progress)
    })
}

fn cancelled(cancel: Option<&AtomicBool>) -> bool {
    cancel.is_some_and(|c| c.load(Ordering::Relaxed))
}

fn cancel_error() -> Error {
    Error::new(ErrorKind::Cancelled, "copy interrupted")
}

/// Walks the allocation map and reads data ranges in aligned batches.
/// Stops when the writer hangs up (it failed) or on the first error.
fn read_side<S: ReadAt + ?Sized>(
    src: &S,
    cancel: Option<&AtomicBool>,
    jobs: SyncSender<Result<Job>>,
    free: Receiver<Vec<u8>>,
) {
    let mut allocated = 0usize;
    for run in extents(src, 0, src.size()) {
        let run = match run {
            Ok(run) => run,
            Err(e) => {
                let _ = jobs.send(Err(e));
                return;
            }
        };
        if run.state != Allocation::Data {
            // The guest view of a whole image: unallocated reads as zeros.
            if jobs
                .send(Ok(Job::Zero {
                    offset: run.offset,
                    length: run.length,
                }))
                .is_err()
            {
                return;
            }
            continue;
        }
        let mut offset = run.offset;
        while offset < run.end() {
            if cancelled(cancel) {
                let _ = jobs.send(Err(cancel_error()));
                return;
            }
            let next_boundary = (offset / BATCH + 1) * BATCH;
            let len = (next_boundary.min(run.end()) - offset) as usize;
            // Reuse a returned buffer, or allocate while under the cap.
            let mut buf = match free.try_recv() {
                Ok(buf) => buf,
                Err(_) if allocated < IN_FLIGHT + 1 => {
                    allocated += 1;
                    Vec::with_capacity(BATCH as usize)
                }
                Err(_) => match free.recv() {
                    Ok(buf) => buf,
                    Err(_) => return,
                },
            };
            buf.resize(len, 0);
            let job = src
                .read_at(offset, &mut buf)
                .map(|()| Job::Data(Batch { offset, buf }));
            let failed = job.is_err();
            if jobs.send(job).is_err() || failed {
                return;
            }
            offset += len as u64;
        }
    }
}

fn write_side<D: WriteAt + ?Sized>(
    dst: &D,
    total: u64,
    opts: &CopyOptions<'_>,
    jobs: Receiver<Result<Job>>,
    free: SyncSender<Vec<u8>>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyStats, CopyError> {
    let cancel = || on(Side::Neither)(cancel_error());
    let mut stats = CopyStats {
        total,
        ..CopyStats::default()
    };
    let mut done = 0u64;
    progress(0, total);
    // `jobs` ends when the reader is finished (or has sent its error).
    for job in jobs {
        if cancelled(opts.cancel) {
            return Err(cancel());
        }
        let job = job.map_err(|e| {
            let side = if e.kind() == ErrorKind::Cancelled {
                Side::Neither
            } else {
                Side::Source
            };
            on(side)(e)
        })?;
        match job {
            Job::Zero { offset, length } => {
                if !opts.destination_is_zero {
                    dst.write_zeroes(offset, length)
                        .map_err(on(Side::Destination))?;
                }
                stats.zero += length;
                done += length;
            }
            Job::Data(batch) => {
                stats.read += batch.buf.len() as u64;
                write_batch(dst, &batch, opts, &mut stats).map_err(on(Side::Destination))?;
                done += batch.buf.len() as u64;
                // The reader may have finished already; then the buffer just drops.
                let _ = free.try_send(batch.buf);
            }
        }
        progress(done, total);
    }
    if done != total {
        // The reader stopped early without an error: only cancellation does that.
        return Err(cancel());
    }
    Ok(stats)
}

/// Writes the non-zero 4 KiB blocks of a batch as maximal runs.
fn write_batch<D: WriteAt + ?Sized>(
    dst: &D,
    batch: &Batch,
    opts: &CopyOptions<'_>,
    stats: &mut CopyStats,
) -> Result<()> {
    let mut run_start = 0usize;
    let mut run_zero: Option<bool> = None;
    let mut pos = 0usize;
    let flush_run = |start: usize, end: usize, zero: bool, stats: &mut CopyStats| -> Result<()> {
        let offset = batch.offset + start as u64;
        let len = (end - start) as u64;
        if zero {
            if !opts.destination_is_zero {
                dst.write_zeroes(offset, len)?;
            }
            stats.zero += len;
        } else {
            dst.write_at(offset, batch.buf.get(start..end).unwrap_or(&[]))?;
            stats.written += len;
        }
        Ok(())
    };
    for block in batch.buf.chunks(ZERO_BLOCK) {
        let zero = is_zero(block);
        match run_zero {
            Some(z) if z != zero => {
                flush_run(run_start, pos, z, stats)?;
                run_start = pos;
            }
            _ => {}
        }
        run_zero = Some(zero);
        pos += block.len();
    }
    if let Some(z) = run_zero {
        flush_run(run_start, pos, z, stats)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use disk_io::{Extent, MemDisk, clamp_query};

    /// A memory disk whose allocation map marks every other MiB as a hole.
    struct Striped(MemDisk);

    impl ReadAt for Striped {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.0.read_at(offset, buf)
        }
        fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
            let length = clamp_query(self.size(), offset, length)?;
            let mib = offset >> 20;
            let end = ((mib + 1) << 20).min(offset + length);
            let state = if mib % 2 == 0 {
                Allocation::Data
            } else {
                Allocation::Zero
            };
            Ok(Extent::new(offset, end - offset, state))
        }
    }

    fn pattern(size: usize) -> MemDisk {
        let disk = MemDisk::new(size);
        for (i, off) in (0..size).step_by(3 << 20 | 4096).enumerate() {
            disk.write_at(off as u64, &[i as u8 + 1; 5000]).unwrap();
        }
        disk
    }

    #[test]
    fn copies_into_zero_and_dirty_destinations() {
        let size = 21 << 20;
        let src = pattern(size);
        // Dirty destination: every byte must be overwritten, zeros included.
        let dst = MemDisk::from_vec(vec![0xee; size]);
        let stats = copy_sectors(&src, &dst, &CopyOptions::default(), &mut |_, _| {}).unwrap();
        assert_eq!(src.to_vec().unwrap(), dst.to_vec().unwrap());
        assert_eq!(stats.total, size as u64);
        assert_eq!(stats.written + stats.zero, size as u64);
        assert!(stats.written < (size / 100) as u64, "{stats:?}");
    }

    #[test]
    fn holes_are_not_read() {
        let size = 8 << 20;
        let inner = MemDisk::new(size);
        inner.write_at(0, &[1; 100]).unwrap();
        let src = Striped(inner);
        let dst = MemDisk::new(size);
        let opts = CopyOptions {
            destination_is_zero: true,
            cancel: None,
        };
        let mut calls = 0;
        let stats = copy_sectors(&src, &dst, &opts, &mut |done, total| {
            assert!(done <= total);
            calls += 1;
        })
        .unwrap();
        assert_eq!(stats.read, 4 << 20);
        assert_eq!(stats.written, 4096);
        assert!(calls > 1);
        assert_eq!(src.0.to_vec().unwrap(), dst.to_vec().unwrap());
    }

    #[test]
    fn cancel_and_small_destination() {
        let src = pattern(8 << 20);
        let stop = AtomicBool::new(true);
        let opts = CopyOptions {
            destination_is_zero: true,
            cancel: Some(&stop),
        };
        let err = copy_sectors(&src, &MemDisk::new(8 << 20), &opts, &mut |_, _| {}).unwrap_err();
        assert_eq!(err.error.kind(), ErrorKind::Cancelled);
        assert_eq!(err.side, Side::Neither);
        let err = copy_sectors(
            &src,
            &MemDisk::new(1 << 20),
            &CopyOptions::default(),
            &mut |_, _| {},
        )
        .unwrap_err();
        assert_eq!(err.error.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn read_errors_surface() {
        struct Failing;
        impl ReadAt for Failing {
            fn size(&self) -> u64 {
                16 << 20
            }
            fn read_at(&self, offset: u64, _: &mut [u8]) -> Result<()> {
                Err(Error::corrupt("test structure", offset))
            }
        }
        let err = copy_sectors(
            &Failing,
            &MemDisk::new(16 << 20),
            &CopyOptions::default(),
            &mut |_, _| {},
        )
        .unwrap_err();
        assert_eq!(err.side, Side::Source);
        assert_eq!(err.error.kind(), ErrorKind::Corrupt);
        assert_eq!(err.error.offset(), Some(0));
    }
}
