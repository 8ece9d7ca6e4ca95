//! What the compressing writers share (streamOptimized VMDK, and the
//! design of compressed qcow2): a pool of threads that compresses units in
//! parallel and hands the results back in the order they were given, with
//! a bound on the units in flight; and deflate helpers that give up early
//! on data that will not compress.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use disk_io::{Error, ErrorKind, Result};

/// Threads that run one function over jobs and give the results back in
/// submission order. At most `max_in_flight` jobs are queued, running or
/// waiting for their turn, which bounds memory whatever the input size.
pub(crate) struct Ordered<J, R> {
    jobs: Option<SyncSender<(u64, J)>>,
    done: Receiver<(u64, R)>,
    workers: Vec<JoinHandle<()>>,
    sent: u64,
    taken: u64,
    max_in_flight: u64,
    waiting: BTreeMap<u64, R>,
}

/// Threads a compressing writer uses: every core (at most 64).
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 64)
}

impl<J: Send + 'static, R: Send + 'static> Ordered<J, R> {
    /// Starts `threads` threads running `work`.
    #[cfg(test)]
    pub(crate) fn start(
        threads: usize,
        max_in_flight: u64,
        work: impl Fn(J) -> R + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(
            threads,
            max_in_flight,
            || (),
            move |_: &mut (), job| work(job),
        )
    }

    /// [`Ordered::start`] with state of each thread's own, made by `make`
    /// when the thread starts (a compressor's tables, reused from job to
    /// job).
    pub(crate) fn start_with<S: 'static>(
        threads: usize,
        max_in_flight: u64,
        make: impl Fn() -> S + Send + Sync + 'static,
        work: impl Fn(&mut S, J) -> R + Send + Sync + 'static,
    ) -> Self {
        let threads = threads.max(1);
        let make = Arc::new(make);
        let (jobs, job_rx) = sync_channel::<(u64, J)>(threads * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done) = channel::<(u64, R)>();
        let work = Arc::new(work);
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let tx = done_tx.clone();
                let work = Arc::clone(&work);
                let make = Arc::clone(&make);
                std::thread::spawn(move || {
                    let mut state = make();
                    loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
                            rx.recv()
                        };
                        let Ok((seq, job)) = job else { break };
                        if tx.send((seq, work(&mut state, job))).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        Ordered {
            jobs: Some(jobs),
            done,
            workers,
            sent: 0,
            taken: 0,
            max_in_flight: max_in_flight.max(1),
            waiting: BTreeMap::new(),
        }
    }

    fn stopped() -> Error {
        Error::new(ErrorKind::Io, "compression threads stopped")
    }

    /// Hands `job` to the threads; first waits while too many are in
    /// flight. Every result that is next in order is given to `sink`.
    pub(crate) fn submit(&mut self, job: J, sink: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        while self.sent - self.taken >= self.max_in_flight {
            self.wait_one(sink)?;
        }
        self.jobs
            .as_ref()
            .and_then(|j| j.send((self.sent, job)).ok())
            .ok_or_else(Self::stopped)?;
        self.sent += 1;
        while let Ok((seq, r)) = self.done.try_recv() {
            self.waiting.insert(seq, r);
        }
        self.deliver(sink)
    }

    /// Waits for every job given so far and gives the results to `sink`.
    pub(crate) fn drain(&mut self, sink: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        while self.taken < self.sent {
            self.wait_one(sink)?;
        }
        Ok(())
    }

    fn wait_one(&mut self, sink: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        let (seq, r) = self.done.recv().map_err(|_| Self::stopped())?;
        self.waiting.insert(seq, r);
        self.deliver(sink)
    }

    fn deliver(&mut self, sink: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        while let Some(r) = self.waiting.remove(&self.taken) {
            self.taken += 1;
            sink(r)?;
        }
        Ok(())
    }
}

impl<J, R> Drop for Ordered<J, R> {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Bytes sampled at each of three places of a unit to judge whether it
/// will compress.
const SAMPLE: usize = 4096;

/// True when `data` (at least 16 KiB) will almost surely not compress:
/// three samples of it (start, middle, end) all look random (see
/// [`looks_random`]). Units of random or already compressed data are then
/// stored without spending a full compression on them.
pub(crate) fn incompressible(data: &[u8]) -> bool {
    if data.len() < 4 * SAMPLE {
        return false;
    }
    let mid = data.len() / 2;
    [0, mid, data.len() - SAMPLE]
        .iter()
        .all(|&at| data.get(at..at + SAMPLE).is_some_and(looks_random))
}

/// Whether deflate could not shrink `sample` by even 2%: its bytes are
/// evenly spread (an order-0 entropy code would need more than 98% of its
/// size) and under 2% of it repeats an earlier 4-byte sequence (what LZ77
/// matches would replace). Costs a few microseconds per 4 KiB, no
/// allocation.
pub(crate) fn looks_random(sample: &[u8]) -> bool {
    let n = sample.len();
    if n < 64 {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in sample {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    let total = n as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| f64::from(c) * (total / f64::from(c)).log2())
        .sum();
    if bits < 0.98 * 8.0 * total {
        return false;
    }
    // The last 4-byte sequence seen at each hash, with bit 32 set (0:
    // none yet).
    let mut seen = [0u64; 4096];
    let mut repeated = 0usize;
    let mut i = 0usize;
    while let Some(w) = sample
        .get(i..i + 4)
        .and_then(|w| <[u8; 4]>::try_from(w).ok())
    {
        let v = u32::from_le_bytes(w);
        let key = u64::from(v) | 1 << 32;
        let h = (v.wrapping_mul(0x9e37_79b1) >> 20) as usize;
        let mut step = 1;
        if let Some(slot) = seen.get_mut(h) {
            if *slot == key {
                repeated += 4;
                step = 4;
            }
            *slot = key;
        }
        i += step;
    }
    repeated * 50 < n
}

/// Makes zlib streams (RFC 1950): deflate at the default level, as zlib's
/// `compress()` makes them, or stored blocks when the data will not
/// compress (see [`incompressible`]). The compressor is kept from call to
/// call: setting up deflate's tables costs about as much as compressing a
/// 64 KiB grain of text, so each compressing thread keeps one.
pub(crate) struct ZlibPacker {
    deflate: miniz_oxide::deflate::core::CompressorOxide,
}

impl ZlibPacker {
    /// A compressor at the default level (6) with a 32 KiB window.
    pub(crate) fn new() -> Self {
        use miniz_oxide::deflate::core::{CompressorOxide, create_comp_flags_from_zip_params};
        ZlibPacker {
            deflate: CompressorOxide::new(create_comp_flags_from_zip_params(6, 15, 0)),
        }
    }

    /// The zlib stream of `data`.
    pub(crate) fn pack(&mut self, data: &[u8]) -> Vec<u8> {
        use miniz_oxide::deflate::core::{TDEFLFlush, TDEFLStatus, compress};
        if incompressible(data) {
            return miniz_oxide::deflate::compress_to_vec_zlib(data, 0);
        }
        // Room for the worst case of deflate (stored blocks) plus the
        // zlib header and checksum.
        let mut out = alloc::vec![0u8; data.len() + data.len() / 16 + 64];
        self.deflate.reset();
        let (status, used, n) = compress(&mut self.deflate, data, &mut out, TDEFLFlush::Finish);
        if status != TDEFLStatus::Done || used != data.len() {
            return miniz_oxide::deflate::compress_to_vec_zlib(data, 6);
        }
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order() {
        let mut p = Ordered::start(3, 5, |x: u64| {
            if x.is_multiple_of(3) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            x * 2
        });
        let mut got = Vec::new();
        for i in 0..100u64 {
            p.submit(i, &mut |r| {
                got.push(r);
                Ok(())
            })
            .unwrap_or_default();
        }
        p.drain(&mut |r| {
            got.push(r);
            Ok(())
        })
        .unwrap_or_default();
        assert_eq!(got, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn zlib_packer_matches_a_fresh_compressor() {
        let text: Vec<u8> = b"grain of text, compressed again and again. "
            .iter()
            .copied()
            .cycle()
            .take(65536)
            .collect();
        let mut p = ZlibPacker::new();
        for _ in 0..3 {
            assert_eq!(
                p.pack(&text),
                miniz_oxide::deflate::compress_to_vec_zlib(&text, 6)
            );
        }
    }

    #[test]
    fn zlib_round_trips_and_stores_noise() {
        let text: Vec<u8> = (0..65536u32)
            .map(|i| b"abcde fgh "[(i % 10) as usize])
            .collect();
        let mut state = 0x1234_5678_9abc_def0u64;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert!(!incompressible(&text));
        assert!(incompressible(&noise));
        for data in [&text, &noise] {
            let z = ZlibPacker::new().pack(data);
            let back = miniz_oxide::inflate::decompress_to_vec_zlib(&z).unwrap_or_default();
            assert_eq!(&back, data);
        }
        assert!(ZlibPacker::new().pack(&noise).len() < 65536 + 64);
    }
}
