//! Sector-mode copy: every guest byte carried over, driven by the source's
//! allocation map, with zero blocks detected and left as holes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use disk_io::{Allocation, Error, ErrorKind, Extents, ReadAt, Result, WriteAt, extents, is_zero};

/// Largest piece of the allocation map one worker takes at a time;
/// pieces are aligned to this size in the source.
pub const BATCH: u64 = 4 << 20;
/// Bytes per read and write: small enough that a chunk is still in the CPU
/// cache when it is scanned and written, large enough to keep syscalls few.
pub const CHUNK: usize = 256 << 10;
/// Granularity of zero detection.
pub const ZERO_BLOCK: usize = 4096;
/// Worker threads when [`CopyOptions::threads`] is 0: one reads while the
/// other writes.
pub const DEFAULT_THREADS: usize = 2;

/// How a copy behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyOptions<'a> {
    /// The destination is known to read as zeros everywhere (a freshly
    /// created image), so zero ranges need not be written at all.
    pub destination_is_zero: bool,
    /// Set from another thread (e.g. a Ctrl-C handler) to stop the copy;
    /// it then fails with [`ErrorKind::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
    /// Worker threads; 0 means [`DEFAULT_THREADS`]. With more than one,
    /// pieces reach the destination out of order: an output format that
    /// must be written sequentially asks for 1.
    pub threads: usize,
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

impl CopyStats {
    fn add(&mut self, other: &CopyStats) {
        self.read += other.read;
        self.written += other.written;
        self.zero += other.zero;
    }
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

fn cancel_error() -> CopyError {
    on(Side::Neither)(Error::new(ErrorKind::Cancelled, "copy interrupted"))
}

/// A piece of the source handed to one worker.
struct Piece {
    offset: u64,
    length: u64,
    data: bool,
}

/// The allocation map, handed out piece by piece to the workers.
struct Cursor<'a, S: ReadAt + ?Sized> {
    runs: Extents<'a, S>,
    /// What is left of the run being handed out.
    current: Option<(u64, u64, bool)>,
}

/// What the workers share.
struct Shared<'a, S: ReadAt + ?Sized> {
    cursor: Mutex<Cursor<'a, S>>,
    /// Guest bytes handled so far.
    done: AtomicU64,
    /// Raised when any worker fails: the others stop at their next piece.
    stop: AtomicBool,
    cancel: Option<&'a AtomicBool>,
}

impl<S: ReadAt + ?Sized> Shared<'_, S> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// The next piece: the rest of a zero run, or data up to the next
    /// [`BATCH`] boundary. `None` when the map is exhausted.
    fn next_piece(&self) -> Option<Result<Piece, CopyError>> {
        let mut c = self
            .cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some((offset, end, data)) = c.current {
                let stop = if data {
                    ((offset / BATCH + 1) * BATCH).min(end)
                } else {
                    end
                };
                c.current = (stop < end).then_some((stop, end, data));
                return Some(Ok(Piece {
                    offset,
                    length: stop - offset,
                    data,
                }));
            }
            match c.runs.next()? {
                // The guest view of a whole image: unallocated reads as zeros.
                Ok(run) => c.current = Some((run.offset, run.end(), run.state == Allocation::Data)),
                Err(e) => return Some(Err(on(Side::Source)(e))),
            }
        }
    }
}

/// Copies every byte of `src` to the same offset of `dst`.
///
/// Worker threads take pieces of the source's allocation map in turn and
/// copy each through a cache-sized buffer: read a chunk, find its zero
/// 4 KiB blocks, write the rest (zero ranges are skipped, or written as
/// zeros when the destination is not known to be zero). Memory stays at
/// one chunk per worker whatever the disk size. `progress(done, total)` is
/// called as pieces complete.
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
    D: WriteAt + Sync + ?Sized,
{
    let total = src.size();
    if dst.size() < total {
        return Err(on(Side::Neither)(Error::invalid_input(format!(
            "destination of {} bytes cannot hold a source of {total} bytes",
            dst.size()
        ))));
    }
    let threads = if opts.threads == 0 {
        DEFAULT_THREADS
    } else {
        opts.threads
    };
    let shared = Shared {
        cursor: Mutex::new(Cursor {
            runs: extents(src, 0, total),
            current: None,
        }),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        cancel: opts.cancel,
    };
    progress(0, total);
    let results = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| scope.spawn(|| worker(src, dst, opts, &shared, &mut |_| {})))
            .collect();
        let mut report = |done| progress(done, total);
        let mut results = vec![worker(src, dst, opts, &shared, &mut report)];
        for h in helpers {
            results.push(h.join().unwrap_or_else(|_| {
                Err(on(Side::Neither)(Error::new(
                    ErrorKind::Io,
                    "a copy thread panicked",
                )))
            }));
        }
        results
    });
    let mut stats = CopyStats {
        total,
        ..CopyStats::default()
    };
    let mut first_error: Option<CopyError> = None;
    for r in results {
        match r {
            Ok(s) => stats.add(&s),
            // Report the error that stopped the copy, not the stops it caused.
            Err(e) => match &first_error {
                Some(f) if f.side != Side::Neither || e.side == Side::Neither => {}
                _ => first_error = Some(e),
            },
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let done = shared.done.load(Ordering::Acquire);
    if done != total {
        return Err(cancel_error());
    }
    progress(done, total);
    Ok(stats)
}

/// One worker: copies pieces until the map is exhausted, a worker fails,
/// or the copy is cancelled.
fn worker<S, D>(
    src: &S,
    dst: &D,
    opts: &CopyOptions<'_>,
    shared: &Shared<'_, S>,
    report: &mut dyn FnMut(u64),
) -> Result<CopyStats, CopyError>
where
    S: ReadAt + ?Sized,
    D: WriteAt + ?Sized,
{
    let mut stats = CopyStats::default();
    let mut buf = vec![0u8; CHUNK];
    let result = (|| {
        loop {
            if shared.stopped() {
                return Err(cancel_error());
            }
            let Some(piece) = shared.next_piece() else {
                return Ok(());
            };
            let piece = piece?;
            if piece.data {
                let mut offset = piece.offset;
                let end = piece.offset + piece.length;
                while offset < end {
                    let n = (end - offset).min(CHUNK as u64) as usize;
                    let chunk = buf.get_mut(..n).unwrap_or(&mut []);
                    src.read_at(offset, chunk).map_err(on(Side::Source))?;
                    stats.read += n as u64;
                    write_nonzero(dst, offset, chunk, opts, &mut stats)
                        .map_err(on(Side::Destination))?;
                    offset += n as u64;
                }
            } else {
                if !opts.destination_is_zero {
                    dst.write_zeroes(piece.offset, piece.length)
                        .map_err(on(Side::Destination))?;
                }
                stats.zero += piece.length;
            }
            let done = shared.done.fetch_add(piece.length, Ordering::AcqRel) + piece.length;
            report(done);
        }
    })();
    if result.is_err() {
        shared.stop.store(true, Ordering::Relaxed);
    }
    result.map(|()| stats)
}

/// Writes the non-zero 4 KiB blocks of `buf` (the bytes at `offset`) as
/// maximal runs; zero runs are skipped or written as zeros.
fn write_nonzero<D: WriteAt + ?Sized>(
    dst: &D,
    offset: u64,
    buf: &[u8],
    opts: &CopyOptions<'_>,
    stats: &mut CopyStats,
) -> Result<()> {
    let mut run_start = 0usize;
    let mut run_zero: Option<bool> = None;
    let mut pos = 0usize;
    let mut flush_run = |start: usize, end: usize, zero: bool| -> Result<()> {
        let at = offset + start as u64;
        let len = (end - start) as u64;
        if zero {
            if !opts.destination_is_zero {
                dst.write_zeroes(at, len)?;
            }
            stats.zero += len;
        } else {
            dst.write_at(at, buf.get(start..end).unwrap_or(&[]))?;
            stats.written += len;
        }
        Ok(())
    };
    for block in buf.chunks(ZERO_BLOCK) {
        let zero = is_zero(block);
        if let Some(z) = run_zero {
            if z != zero {
                flush_run(run_start, pos, z)?;
                run_start = pos;
            }
        }
        run_zero = Some(zero);
        pos += block.len();
    }
    if let Some(z) = run_zero {
        flush_run(run_start, pos, z)?;
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
            let state = if mib.is_multiple_of(2) {
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
            ..Default::default()
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
            ..Default::default()
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

    /// A destination that fails every write at or past `fail_at`.
    struct FailingDst(MemDisk, u64);

    impl ReadAt for FailingDst {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.0.read_at(offset, buf)
        }
    }

    impl WriteAt for FailingDst {
        fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
            if offset + buf.len() as u64 > self.1 {
                return Err(Error::new(ErrorKind::Io, "test device full").at(offset));
            }
            self.0.write_at(offset, buf)
        }
        fn flush(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_failures_stop_every_thread() {
        // Many more pieces than threads: none may wait forever
        // for a buffer while the threads drain after the failure.
        let size = 64 << 20;
        let src = MemDisk::from_vec(vec![7u8; size]);
        for threads in [1, 2, 4] {
            let dst = FailingDst(MemDisk::new(size), 10 << 20);
            let opts = CopyOptions {
                threads,
                ..Default::default()
            };
            let err = copy_sectors(&src, &dst, &opts, &mut |_, _| {}).unwrap_err();
            assert_eq!(err.side, Side::Destination, "{threads} threads");
            assert_eq!(err.error.kind(), ErrorKind::Io);
        }
    }

    #[test]
    fn any_number_of_writers_gives_the_same_copy() {
        let size = 37 << 20;
        let src = pattern(size);
        for threads in [1, 2, 3, 8] {
            let dst = MemDisk::from_vec(vec![0xee; size]);
            let mut last = 0;
            let opts = CopyOptions {
                threads,
                ..Default::default()
            };
            let stats = copy_sectors(&src, &dst, &opts, &mut |done, total| {
                assert!(done >= last && done <= total);
                last = done;
            })
            .unwrap();
            assert_eq!(last, size as u64);
            assert_eq!(stats.written + stats.zero, size as u64, "{threads}");
            assert_eq!(
                src.to_vec().unwrap(),
                dst.to_vec().unwrap(),
                "{threads} threads"
            );
        }
    }
}
