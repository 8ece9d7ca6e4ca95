//! Writing streamOptimized VMDK disks front to back, as VMware and OVF
//! tools expect them (VMware Virtual Disk Format 5.0, "Stream-Optimized
//! Compressed Sparse Extents"): a header whose grain directory offset is
//! `GD_AT_END`, the embedded descriptor, then every grain that is not all
//! zeros as a grain marker and its zlib data, each grain table behind a
//! grain table marker once its grains are written, the grain directory
//! behind its marker, the footer (the header again, with the real
//! directory offset) behind its marker, and the end-of-stream marker.
//!
//! Grains are compressed on every core ([`crate::compress::Ordered`]) and
//! stored in guest order; grains that will not compress are stored in
//! deflate's stored blocks without trying harder.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use disk_io::{Error, FileDisk, ReadAt, Result, WriteAt, check_range, is_zero};

use super::create::{DESCRIPTOR_SECTORS, GRAIN_SECTORS, GTES_PER_GT, Layout, Params, final_name};
use super::descriptor::NO_PARENT_CID;
use super::grain_table::read_u32_table;
use super::sparse_header::SECTOR;
use super::stream::{MARKER_FOOTER, MARKER_GD, MARKER_GT, read_compressed_grain};
use crate::compress::{Ordered, ZlibPacker, threads};

/// Memory for grains in flight (queued, being compressed, waiting for
/// their turn to be written).
const PIPELINE_BYTES: u64 = 64 << 20;
/// Output gathered before one write to the file.
const WRITE_CHUNK: usize = 4 << 20;
/// Grain size in bytes.
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;

/// Where compressed grains go: the file, through a write buffer, and the
/// tables that name them.
struct Sink {
    file: FileDisk,
    /// Bytes not yet written, to go at `out_at`.
    out: Vec<u8>,
    out_at: u64,
    /// Sector of each grain table written (0: none).
    gd: Vec<u32>,
    /// The grain table being filled: its index and entries.
    gt: Option<(u64, Vec<u32>)>,
}

impl Sink {
    fn pos(&self) -> u64 {
        self.out_at + self.out.len() as u64
    }

    fn sector(&self) -> Result<u32> {
        u32::try_from(self.pos() / SECTOR)
            .map_err(|_| Error::unsupported("streamOptimized vmdk output past 2 TiB"))
    }

    fn pad(&mut self) {
        let len = self.out.len().next_multiple_of(SECTOR as usize);
        self.out.resize(len, 0);
    }

    fn write_out(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let end = self.pos();
        if self.file.size() < end {
            self.file.set_size(end)?;
        }
        self.file.write_at(self.out_at, &self.out)?;
        self.out_at = end;
        self.out.clear();
        Ok(())
    }

    /// A metadata marker: `sectors` of metadata of `kind` follow.
    fn marker(&mut self, sectors: u64, kind: u32) {
        self.out.extend_from_slice(&sectors.to_le_bytes());
        self.out.extend_from_slice(&0u32.to_le_bytes());
        self.out.extend_from_slice(&kind.to_le_bytes());
        self.pad();
    }

    /// Stores one compressed grain behind its marker.
    fn store(&mut self, (grain, z): (u64, Vec<u8>)) -> Result<()> {
        let t = grain / GTES_PER_GT;
        if self.gt.as_ref().is_some_and(|(i, _)| *i != t) {
            self.close_table()?;
        }
        if self.gt.is_none() {
            self.gt = Some((t, vec![0u32; GTES_PER_GT as usize]));
        }
        let sector = self.sector()?;
        if let Some(e) = self
            .gt
            .as_mut()
            .and_then(|(_, table)| table.get_mut((grain % GTES_PER_GT) as usize))
        {
            *e = sector;
        }
        let size = u32::try_from(z.len())
            .map_err(|_| Error::corrupt("vmdk compressed grain too large", 0))?;
        self.out
            .extend_from_slice(&(grain * GRAIN_SECTORS).to_le_bytes());
        self.out.extend_from_slice(&size.to_le_bytes());
        self.out.extend_from_slice(&z);
        self.pad();
        if self.out.len() >= WRITE_CHUNK {
            self.write_out()?;
        }
        Ok(())
    }

    /// Writes the grain table being filled behind its marker.
    fn close_table(&mut self) -> Result<()> {
        let Some((t, table)) = self.gt.take() else {
            return Ok(());
        };
        let sectors = (GTES_PER_GT * 4).div_ceil(SECTOR);
        self.marker(sectors, MARKER_GT);
        let sector = self.sector()?;
        if let Some(e) = self.gd.get_mut(t as usize) {
            *e = sector;
        }
        self.out.extend(table.iter().flat_map(|v| v.to_le_bytes()));
        self.pad();
        Ok(())
    }
}

/// A grain by index: its bytes, or its compressed bytes.
type Grain = (u64, Vec<u8>);

struct Stream {
    /// The grain being filled: index and bytes.
    current: Option<(u64, Vec<u8>)>,
    /// Grains below this one are final.
    floor: u64,
    pipe: Option<Ordered<Grain, Grain>>,
    sink: Sink,
    layout: Layout,
    /// Zeroed-grain flag of the header (kept in the footer).
    zeroed: bool,
    finished: bool,
}

/// A streamOptimized VMDK disk being written front to back.
///
/// ```no_run
/// use disk_io::WriteAt;
/// use vdisk_format::vmdk::{create::Params, stream_write::StreamWriter};
/// let disk = StreamWriter::create("new.vmdk".as_ref(), 1 << 30, &Params::default())?;
/// disk.write_at(0, &[1u8; 65536])?;
/// disk.finish()?; // grain tables, directory, footer, end-of-stream marker
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct StreamWriter {
    size: u64,
    inner: Mutex<Stream>,
}

impl StreamWriter {
    /// Creates a new disk at `path` (which must not exist) of `size` guest
    /// bytes (rounded up to whole sectors).
    pub fn create(path: &Path, size: u64, params: &Params) -> Result<Self> {
        if params.backing_file.is_some() {
            return Err(Error::unsupported(
                "a backing file for a streamOptimized vmdk",
            ));
        }
        let capacity = size.div_ceil(SECTOR);
        if capacity > super::sparse_header::MAX_CAPACITY_SECTORS {
            return Err(Error::invalid_input(format!(
                "a vmdk disk of {size} bytes is too large"
            )));
        }
        let layout = Layout::new(capacity, true);
        let name = final_name(path)?;
        let line = format!("RW {capacity} SPARSE \"{name}\"\n");
        let text: String = params.descriptor(
            super::create::new_cid(None),
            NO_PARENT_CID,
            capacity * SECTOR,
            &line,
        );
        if text.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
            return Err(Error::invalid_input("vmdk descriptor too long"));
        }
        let file = FileDisk::create(path, layout.overhead * SECTOR)?;
        let mut head = layout.header(params.zeroed_grain, true, layout.gd_offset);
        head.extend_from_slice(text.as_bytes());
        head.resize(head.len().next_multiple_of(SECTOR as usize), 0);
        file.write_at(0, &head)?;
        let n = threads();
        let in_flight = (PIPELINE_BYTES / GRAIN).clamp(4, 4 * n as u64 + 16);
        let pipe = Ordered::start_with(
            n,
            in_flight,
            ZlibPacker::new,
            |p: &mut ZlibPacker, (grain, data): (u64, Vec<u8>)| (grain, p.pack(&data)),
        );
        Ok(StreamWriter {
            size: capacity * SECTOR,
            inner: Mutex::new(Stream {
                current: None,
                floor: 0,
                pipe: Some(pipe),
                sink: Sink {
                    file,
                    out: Vec::with_capacity(WRITE_CHUNK + 2 * GRAIN as usize),
                    out_at: layout.overhead * SECTOR,
                    gd: vec![0u32; layout.gt_count as usize],
                    gt: None,
                },
                layout,
                zeroed: params.zeroed_grain,
                finished: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stream> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Completes the stream: stores the last grains, then the last grain
    /// table, the grain directory, the footer and the end-of-stream marker.
    /// Later writes are refused.
    pub fn finish(&self) -> Result<()> {
        let mut st = self.lock();
        if st.finished {
            return Ok(());
        }
        submit_current(&mut st)?;
        let Stream {
            pipe,
            sink,
            layout,
            zeroed,
            ..
        } = &mut *st;
        if let Some(p) = pipe.as_mut() {
            p.drain(&mut |r| sink.store(r))?;
        }
        sink.close_table()?;
        sink.marker(layout.gd_sectors, MARKER_GD);
        let gd_sector = u64::from(sink.sector()?);
        let gd: Vec<u8> = sink.gd.iter().flat_map(|v| v.to_le_bytes()).collect();
        sink.out.extend_from_slice(&gd);
        sink.pad();
        sink.marker(1, MARKER_FOOTER);
        sink.out
            .extend_from_slice(&layout.header(*zeroed, true, gd_sector));
        // End-of-stream marker: a zero sector.
        sink.out.extend_from_slice(&[0u8; SECTOR as usize]);
        sink.write_out()?;
        st.pipe = None;
        st.finished = true;
        Ok(())
    }

    fn check_order(st: &Stream, grain: u64, pos: u64) -> Result<()> {
        if st.finished {
            return Err(Error::invalid_input(
                "streamOptimized vmdk output is already finished",
            ));
        }
        if grain < st.floor {
            return Err(Error::unsupported(format!(
                "streamOptimized vmdk output is written front to back: write at {pos:#x} after a later grain"
            )));
        }
        Ok(())
    }
}

/// Hands the grain being filled to the compressing threads (all-zero
/// grains are left out: they read as zeros).
fn submit_current(st: &mut Stream) -> Result<()> {
    let Some((g, data)) = st.current.take() else {
        return Ok(());
    };
    st.floor = g + 1;
    if is_zero(&data) {
        return Ok(());
    }
    let Stream { pipe, sink, .. } = st;
    match pipe.as_mut() {
        Some(p) => p.submit((g, data), &mut |r| sink.store(r)),
        None => Err(Error::invalid_input(
            "streamOptimized vmdk output is already finished",
        )),
    }
}

impl ReadAt for StreamWriter {
    fn size(&self) -> u64 {
        self.size
    }

    /// Reads what was written so far (waits for the grains in flight).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let mut st = self.lock();
        {
            let Stream { pipe, sink, .. } = &mut *st;
            if let Some(p) = pipe.as_mut() {
                p.drain(&mut |r| sink.store(r))?;
            }
            sink.write_out()?;
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let g = pos / GRAIN;
            let within = (pos % GRAIN) as usize;
            let n = (GRAIN as usize - within).min(buf.len() - done);
            let out = buf.get_mut(done..done + n).unwrap_or(&mut []);
            done += n;
            if let Some((c, data)) = &st.current {
                if *c == g {
                    out.copy_from_slice(data.get(within..within + n).unwrap_or(&[]));
                    continue;
                }
            }
            let t = g / GTES_PER_GT;
            let idx = (g % GTES_PER_GT) as usize;
            let sector = match &st.sink.gt {
                Some((i, table)) if *i == t => table.get(idx).copied().unwrap_or(0),
                _ => match st.sink.gd.get(t as usize).copied().unwrap_or(0) {
                    0 => 0,
                    s => read_u32_table(
                        &st.sink.file,
                        u64::from(s) * SECTOR,
                        GTES_PER_GT,
                        "grain table",
                    )?
                    .get(idx)
                    .copied()
                    .unwrap_or(0),
                },
            };
            if sector == 0 {
                out.fill(0);
                continue;
            }
            let data =
                read_compressed_grain(&st.sink.file, u64::from(sector) * SECTOR, GRAIN, true)?;
            out.copy_from_slice(data.get(within..within + n).ok_or_else(|| {
                Error::corrupt("vmdk grain inflates short", u64::from(sector) * SECTOR)
            })?);
        }
        Ok(())
    }
}

impl WriteAt for StreamWriter {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let mut st = self.lock();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let g = pos / GRAIN;
            let within = (pos % GRAIN) as usize;
            let n = (GRAIN as usize - within).min(buf.len() - done);
            StreamWriter::check_order(&st, g, pos)?;
            if st.current.as_ref().is_some_and(|(c, _)| *c != g) {
                submit_current(&mut st)?;
            }
            let (_, data) = st
                .current
                .get_or_insert_with(|| (g, vec![0u8; GRAIN as usize]));
            if let (Some(dst), Some(src)) =
                (data.get_mut(within..within + n), buf.get(done..done + n))
            {
                dst.copy_from_slice(src);
            }
            let grain_end = ((g + 1) * GRAIN).min(self.size);
            if pos + n as u64 >= grain_end {
                submit_current(&mut st)?;
            }
            done += n;
        }
        Ok(())
    }

    /// Zeros: only where nothing later was written yet.
    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        check_range(self.size, offset, length)?;
        if length == 0 {
            return Ok(());
        }
        let mut st = self.lock();
        StreamWriter::check_order(&st, offset / GRAIN, offset)?;
        if let Some((c, data)) = &mut st.current {
            let start = *c * GRAIN;
            let from = offset.max(start);
            let to = (offset + length).min(start + GRAIN);
            if from < to {
                data.get_mut((from - start) as usize..(to - start) as usize)
                    .unwrap_or(&mut [])
                    .fill(0);
            }
        }
        Ok(())
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.write_zeroes(offset, length)
    }

    /// Finishes the stream (see [`StreamWriter::finish`]) and syncs it.
    fn flush(&self) -> Result<()> {
        self.finish()?;
        self.lock().sink.file.flush()
    }
}

impl crate::image::Finish for StreamWriter {
    fn finish(&self) -> Result<()> {
        StreamWriter::finish(self)
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        // Best effort: callers that care call `finish` or `flush` first.
        let _ = self.finish();
    }
}
