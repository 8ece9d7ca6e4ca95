//! Writing VDI images: creating dynamic and static images (header 1.1,
//! 1 MiB blocks) and a random-access writer over a new or existing one.
//!
//! A new image has its block map right after the header (at 0x200, as
//! qemu puts it) and its data area at the next MiB (as VirtualBox aligns
//! it). A write to a block the map does not hold yet allocates the next
//! block of the data area (position `blocks_allocated`, as qemu and
//! VirtualBox do): the block's bytes go into the file first (the rest of
//! the block reads as zeros), and the block map entries and the
//! `blocks_allocated` count follow at the next [`flush`](WriteAt::flush)
//! (or [`finish`](VdiWriter::finish)), in one write when the map follows
//! the header, so that a crash at any moment leaves an image `qemu-img
//! check` accepts. Writes into blocks already held go in place.
//!
//! Zeroing or discarding a whole block frees it when it is the last one of
//! the data area (the map entry becomes "zero" or "free" and the file is
//! shortened); other blocks stay where they are and their bytes become a
//! hole in the file. Header bytes the writer does not use are never
//! rewritten; only `blocks_allocated`, `uuid_modify` (renewed at the first
//! change of an existing image, as VirtualBox does) and the block map are.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use std::path::Path;

use disk_io::sync::Lock;
use disk_io::{
    Allocation, Error, Extent, FileDisk, ReadAt, Result, WriteAt, check_range, clamp_query, is_zero,
};

use super::block_map::{FREE, ZERO};
use super::header::{
    BLOCKS_ALLOCATED_AT, HEADER_LEN, Header, ImageType, MAX_BLOCKS, NewHeader, Uuid, uuid_at,
};
use crate::CheckReport;
use crate::chain::{extend_run, layer_answer};
use crate::options::CreateOptions;

/// Block size of new images (VirtualBox and qemu use no other).
pub const BLOCK_SIZE: u32 = 1 << 20;
/// Alignment of the data area of new images.
const DATA_ALIGN: u64 = 1 << 20;
/// Where new images keep their block map.
const NEW_BMAP: u64 = HEADER_LEN as u64;
/// Bytes of block map one dirty mark stands for.
const MAP_PAGE: usize = 4096;
/// Largest stretch of block map rewritten in one write (dirty pages
/// further apart are written separately).
const MAX_ONE_WRITE: usize = 1 << 20;
/// The file grows by at least this much at a time (one `ftruncate` per
/// block costs more than the write); the excess is cut at the next flush.
const GROW_AHEAD: u64 = 64 << 20;

/// How a new VDI image is made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// Every block allocated at creation (`static=on`): a "fixed" image.
    pub fixed: bool,
}

/// Option keys a VDI image takes.
pub const KEYS: [&str; 1] = ["static"];

impl Params {
    /// The parameters `-o` options ask for, checked.
    pub fn from_options(o: &CreateOptions) -> Result<Params> {
        o.only(&KEYS, "vdi")?;
        Ok(Params {
            fixed: o.flag("static", false)?,
        })
    }
}

/// The fixed shape of an image.
struct Geometry {
    disk_size: u64,
    block_size: u64,
    block_extra: u64,
    offset_bmap: u64,
    offset_data: u64,
    blocks: u32,
    fixed: bool,
}

impl Geometry {
    fn stride(&self) -> u64 {
        self.block_size + self.block_extra
    }

    /// File offset where stored block `position` starts (its extra data).
    fn slot(&self, position: u32) -> u64 {
        self.offset_data + u64::from(position) * self.stride()
    }

    /// File offset of the guest data of stored block `position`.
    fn data(&self, position: u32) -> u64 {
        self.slot(position) + self.block_extra
    }
}

/// Metadata state, behind one lock.
struct State {
    /// The file's first bytes: pre-header and header (up to the map).
    head: Vec<u8>,
    map: Vec<u32>,
    /// Blocks of the data area in use.
    allocated: u32,
    /// `blocks_allocated` as the file says.
    disk_allocated: u32,
    /// `blocks_allocated` or `uuid_modify` changed since the last write
    /// of the header.
    header_dirty: bool,
    /// Pages of the block map changed since they were last written.
    dirty_pages: BTreeSet<usize>,
    /// `uuid_modify` still has to be renewed before the first change.
    renew_uuid: bool,
    /// Sync the data before the metadata naming it.
    barriers: bool,
    /// File bytes from here on read as zeros (holes this writer made),
    /// past the blocks in use.
    zero_from: u64,
}

/// A VDI image (dynamic or static, header 1.1) open for writing, through
/// `&self` from any thread.
///
/// ```no_run
/// use disk_io::WriteAt;
/// use vdisk_format::vdi::write::{Params, VdiWriter};
/// let image = VdiWriter::create("new.vdi".as_ref(), 1 << 30, &Params::default())?;
/// image.write_at(4096, b"hello")?;
/// image.flush()?;
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct VdiWriter {
    file: FileDisk,
    g: Geometry,
    state: Lock<State>,
}

impl VdiWriter {
    /// Creates a new image at `path` (which must not exist) of `size`
    /// guest bytes, rounded up to whole sectors as qemu does.
    pub fn create(path: &Path, size: u64, params: &Params) -> Result<Self> {
        let bs = u64::from(BLOCK_SIZE);
        let disk_size = size
            .checked_next_multiple_of(512)
            .ok_or_else(|| Error::invalid_input(format!("vdi disk of {size} bytes")))?;
        let blocks = disk_size.div_ceil(bs);
        if blocks > u64::from(MAX_BLOCKS) {
            return Err(Error::invalid_input(format!(
                "a {size}-byte vdi image needs {blocks} blocks of 1 MiB (at most {MAX_BLOCKS})"
            )));
        }
        let blocks = blocks as u32;
        let offset_data = (NEW_BMAP + u64::from(blocks) * 4).next_multiple_of(DATA_ALIGN);
        let (image_type, map, allocated) = if params.fixed {
            (ImageType::Static, (0..blocks).collect(), blocks)
        } else {
            (ImageType::Dynamic, vec![FREE; blocks as usize], 0)
        };
        let head = NewHeader {
            image_type,
            offset_bmap: NEW_BMAP as u32,
            offset_data: offset_data as u32,
            disk_size,
            block_size: BLOCK_SIZE,
            blocks,
            blocks_allocated: allocated,
            uuid_create: random_uuid(),
            uuid_modify: random_uuid(),
        }
        .emit();
        let len = offset_data + u64::from(allocated) * bs;
        let file = FileDisk::create(path, len)?;
        let mut first: Vec<u8> = head.clone();
        first.extend(map.iter().flat_map(|e: &u32| e.to_le_bytes()));
        file.write_at(0, &first)?;
        let g = Geometry {
            disk_size,
            block_size: bs,
            block_extra: 0,
            offset_bmap: NEW_BMAP,
            offset_data,
            blocks,
            fixed: params.fixed,
        };
        let w = VdiWriter::assemble(file, g, head, map, allocated, false);
        w.state.with_write(|st| {
            st.zero_from = len;
            Ok(())
        })?;
        Ok(w)
    }

    /// Opens the existing dynamic or static image in `file` (opened
    /// read-write) for writing. Version 0 headers, differencing images and
    /// images `qemu-img check` would find corrupt are refused. Metadata
    /// is written with barriers (see [`set_barriers`](Self::set_barriers)).
    pub fn open(file: FileDisk) -> Result<Self> {
        let h = Header::read(&file)?;
        if h.major != 1 {
            return Err(Error::unsupported("writing vdi images with a version 0 header").at(0x44));
        }
        if h.image_type == ImageType::Differencing {
            return Err(Error::unsupported("writing vdi differencing images").at(0x4c));
        }
        let mut report = CheckReport::default();
        let map = super::BlockMap::read(&file, &h)?;
        map.check(&h, file.size(), &mut report);
        if report.errors != 0 {
            return Err(Error::corrupt(
                format!(
                    "vdi image has {} errors, not written to (first: {})",
                    report.errors,
                    report.messages.first().map(String::as_str).unwrap_or("")
                ),
                h.offset_bmap,
            ));
        }
        let head_len = h.offset_bmap.min(HEADER_LEN as u64) as usize;
        let head = disk_io::read_vec(&file, 0, head_len)?;
        let map: Vec<u32> = (0..map.len() as u64).map(|i| map.entry(i)).collect();
        let g = Geometry {
            disk_size: h.disk_size,
            block_size: u64::from(h.block_size),
            block_extra: u64::from(h.block_extra),
            offset_bmap: h.offset_bmap,
            offset_data: h.offset_data,
            blocks: h.blocks,
            fixed: h.image_type == ImageType::Static,
        };
        let zero_from = file.size();
        let w = VdiWriter::assemble(file, g, head, map, h.blocks_allocated, true);
        w.state.with_write(|st| {
            st.renew_uuid = true;
            st.zero_from = zero_from;
            Ok(())
        })?;
        Ok(w)
    }

    fn assemble(
        file: FileDisk,
        g: Geometry,
        head: Vec<u8>,
        map: Vec<u32>,
        allocated: u32,
        barriers: bool,
    ) -> Self {
        VdiWriter {
            file,
            g,
            state: Lock::new(State {
                head,
                map,
                allocated,
                disk_allocated: allocated,
                header_dirty: false,
                dirty_pages: BTreeSet::new(),
                renew_uuid: false,
                barriers,
                zero_from: 0,
            }),
        }
    }

    /// Whether the data is synced before the metadata that names it, so
    /// that a power loss (not only a crash of this process) leaves a
    /// consistent image: on for images opened with [`open`](Self::open),
    /// off for new ones (a conversion's output).
    pub fn set_barriers(&self, on: bool) -> Result<()> {
        self.state.with_write(|st| {
            st.barriers = on;
            Ok(())
        })
    }

    /// The file holding the image.
    pub fn file(&self) -> &FileDisk {
        &self.file
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.g.block_size
    }

    /// Writes the block map entries and header fields changed since the
    /// last time, without syncing: afterwards the file is a complete image.
    pub fn finish(&self) -> Result<()> {
        self.state.with_write(|st| self.write_metadata(st))
    }

    /// The stored position of guest block `index`, `None` when it is free
    /// or zero.
    fn position(&self, st: &State, index: u64) -> Result<Option<u32>> {
        let at = self.g.offset_bmap + index * 4;
        let e = usize::try_from(index)
            .ok()
            .and_then(|i| st.map.get(i))
            .copied()
            .ok_or_else(|| Error::corrupt(format!("vdi block {index} past the block map"), at))?;
        if e == FREE || e == ZERO {
            return Ok(None);
        }
        if e >= st.allocated {
            return Err(Error::corrupt(
                format!(
                    "vdi block map entry {index} at offset {at:#x}: block {e} beyond the {} allocated",
                    st.allocated
                ),
                at,
            ));
        }
        Ok(Some(e))
    }

    fn set_entry(&self, st: &mut State, index: u64, value: u32) {
        if let Some(e) = st.map.get_mut(index as usize) {
            *e = value;
            st.dirty_pages.insert(index as usize * 4 / MAP_PAGE);
        }
    }

    /// Before the first change of an existing image: a new `uuid_modify`.
    fn touch(&self, st: &mut State) {
        if st.renew_uuid {
            st.renew_uuid = false;
            let u = random_uuid();
            if let Some(dst) = st.head.get_mut(uuid_at::MODIFY..uuid_at::MODIFY + 16) {
                dst.copy_from_slice(&u.0);
                st.header_dirty = true;
            }
        }
    }

    /// Takes `n` blocks at the end of the data area; positions given back
    /// since the metadata was last written are first recorded as free, so
    /// that no stale entry on disk names a block being reused.
    fn allocate(&self, st: &mut State, n: u32) -> Result<u32> {
        if st.allocated < st.disk_allocated {
            self.write_metadata(st)?;
        }
        let first = st.allocated;
        match first.checked_add(n) {
            Some(end) if end <= self.g.blocks => {
                st.allocated = end;
                st.header_dirty = true;
                Ok(first)
            }
            _ => Err(Error::corrupt(
                format!(
                    "vdi image full: {} of {} blocks allocated",
                    st.allocated, self.g.blocks
                ),
                self.g.offset_bmap,
            )),
        }
    }

    /// Writes what changed of the block map and the header: the map first
    /// (after the data it names, with barriers), then the header; one
    /// write when the map follows the header and the change is compact.
    fn write_metadata(&self, st: &mut State) -> Result<()> {
        if !st.header_dirty && st.dirty_pages.is_empty() {
            return Ok(());
        }
        if st.barriers {
            self.file.flush()?;
        }
        if let Some(dst) = st
            .head
            .get_mut(BLOCKS_ALLOCATED_AT..BLOCKS_ALLOCATED_AT + 4)
        {
            dst.copy_from_slice(&st.allocated.to_le_bytes());
        }
        let map_len = st.map.len() * 4;
        let map_bytes = |from: usize, to: usize| -> Vec<u8> {
            st.map
                .get(from / 4..to / 4)
                .unwrap_or(&[])
                .iter()
                .flat_map(|e| e.to_le_bytes())
                .collect()
        };
        // Runs of dirty pages, merged while the stretch stays small.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &p in &st.dirty_pages {
            let (from, to) = (p * MAP_PAGE, ((p + 1) * MAP_PAGE).min(map_len));
            match runs.last_mut() {
                Some(last) if to - last.0 <= MAX_ONE_WRITE => last.1 = to,
                _ => runs.push((from, to)),
            }
        }
        let header_field = BLOCKS_ALLOCATED_AT;
        let header_end = uuid_at::MODIFY + 16;
        let contiguous = self.g.offset_bmap == st.head.len() as u64;
        let mut header_done = false;
        for (i, &(from, to)) in runs.iter().enumerate() {
            if i == 0 && st.header_dirty && contiguous && from <= MAX_ONE_WRITE {
                // Header fields and map in one write.
                let mut buf = st.head.get(header_field..).unwrap_or(&[]).to_vec();
                buf.extend(map_bytes(0, to));
                self.file.write_at(header_field as u64, &buf)?;
                header_done = true;
            } else {
                self.file
                    .write_at(self.g.offset_bmap + from as u64, &map_bytes(from, to))?;
            }
        }
        if st.header_dirty && !header_done {
            let bytes = st.head.get(header_field..header_end).unwrap_or(&[]);
            self.file.write_at(header_field as u64, bytes)?;
        }
        st.header_dirty = false;
        st.dirty_pages.clear();
        let shrunk = st.allocated < st.disk_allocated;
        st.disk_allocated = st.allocated;
        // The file ends with the last block in use: blocks given back
        // (once no entry on disk names them) and room grown ahead go.
        let end = self.g.slot(st.allocated);
        if self.file.size() > end && (shrunk || st.zero_from < self.file.size()) {
            if shrunk && st.barriers {
                self.file.flush()?;
            }
            self.file.set_size(end)?;
            st.zero_from = end;
        }
        Ok(())
    }

    /// Guest writes, with the state locked.
    fn write_locked(&self, st: &mut State, offset: u64, buf: &[u8]) -> Result<()> {
        let bs = self.g.block_size;
        let end = offset + buf.len() as u64;
        let data = |from: u64, to: u64| {
            buf.get((from - offset) as usize..(to - offset) as usize)
                .unwrap_or(&[])
        };
        let mut pos = offset;
        while pos < end {
            let index = pos / bs;
            let within = pos % bs;
            let n = (bs - within).min(end - pos);
            if let Some(p) = self.position(st, index)? {
                self.touch(st);
                self.file
                    .write_at(self.g.data(p) + within, data(pos, pos + n))?;
                pos += n;
                continue;
            }
            if is_zero(data(pos, pos + n)) {
                // Free and zero blocks read as zeros already.
                pos += n;
                continue;
            }
            self.touch(st);
            // A run of blocks the map does not hold, stored together
            // (one block at a time when blocks carry extra data).
            let mut run_end = pos + n;
            let mut count = 1u32;
            while run_end < end && self.g.block_extra == 0 {
                let next = run_end / bs;
                if self.position(st, next)?.is_some() {
                    break;
                }
                run_end = ((next + 1) * bs).min(end);
                count += 1;
            }
            let first = self.allocate(st, count)?;
            let slot = self.g.slot(first);
            let slots_end = self.g.slot(first + count);
            if slot >= st.zero_from {
                // Holes this writer made: the rest of the blocks reads as
                // zeros.
                if self.file.size() < slots_end {
                    let limit = self.g.slot(self.g.blocks).max(slots_end);
                    self.file
                        .set_size(slots_end.saturating_add(GROW_AHEAD).min(limit))?;
                }
                self.file
                    .write_at(self.g.data(first) + within, data(pos, run_end))?;
            } else {
                // Bytes left there (by an interrupted writer): whole
                // blocks, zero-filled.
                if self.file.size() < slots_end {
                    self.file.set_size(slots_end)?;
                }
                let mut at = pos;
                for i in 0..count {
                    let b = index + u64::from(i);
                    let bstart = b * bs;
                    let to = ((b + 1) * bs).min(run_end);
                    let mut block = vec![0u8; self.g.stride() as usize];
                    let off = (self.g.block_extra + (at - bstart)) as usize;
                    if let Some(dst) = block.get_mut(off..off + (to - at) as usize) {
                        dst.copy_from_slice(data(at, to));
                    }
                    self.file.write_at(self.g.slot(first + i), &block)?;
                    at = to;
                }
            }
            for i in 0..count {
                self.set_entry(st, index + u64::from(i), first + i);
            }
            pos = run_end;
        }
        Ok(())
    }

    /// write_zeroes and discard: whole blocks at the end of the data area
    /// are freed, the bytes of other held blocks punched out of the file.
    fn zero_or_discard(&self, offset: u64, length: u64, discard: bool) -> Result<()> {
        check_range(self.g.disk_size, offset, length)?;
        let bs = self.g.block_size;
        let end = offset + length;
        self.state.with_write(|st| {
            let mut pos = offset;
            while pos < end {
                let index = pos / bs;
                let within = pos % bs;
                let bend = ((index + 1) * bs).min(self.g.disk_size);
                let n = bend.min(end) - pos;
                if let Some(p) = self.position(st, index)? {
                    self.touch(st);
                    let whole = within == 0 && pos + n == bend;
                    if whole && !self.g.fixed && p + 1 == st.allocated {
                        self.set_entry(st, index, if discard { FREE } else { ZERO });
                        st.allocated = p;
                        // Its bytes stay in the file until it is cut.
                        st.zero_from = st.zero_from.max(self.g.slot(p + 1));
                        st.header_dirty = true;
                    } else {
                        self.file.write_zeroes(self.g.data(p) + within, n)?;
                    }
                }
                pos += n;
            }
            Ok(())
        })
    }
}

impl ReadAt for VdiWriter {
    fn size(&self) -> u64 {
        self.g.disk_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.g.disk_size, offset, buf.len() as u64)?;
        let bs = self.g.block_size;
        self.state.with_read(|st| {
            let mut done = 0usize;
            while done < buf.len() {
                let pos = offset + done as u64;
                let index = pos / bs;
                let within = pos % bs;
                let mut n = (bs - within).min((buf.len() - done) as u64) as usize;
                match self.position(st, index)? {
                    None => buf.get_mut(done..done + n).unwrap_or(&mut []).fill(0),
                    Some(p) => {
                        let host = self.g.data(p) + within;
                        // Blocks stored one after the other: one read.
                        let mut next = index + 1;
                        while done + n < buf.len() && self.g.block_extra == 0 {
                            match self.position(st, next)? {
                                Some(q) if self.g.data(q) == host + n as u64 => {
                                    n += bs.min((buf.len() - done - n) as u64) as usize;
                                    next += 1;
                                }
                                _ => break,
                            }
                        }
                        let out = buf.get_mut(done..done + n).unwrap_or(&mut []);
                        let avail =
                            self.file.size().saturating_sub(host).min(out.len() as u64) as usize;
                        let (head, tail) = out.split_at_mut(avail);
                        self.file.read_at(host, head)?;
                        tail.fill(0);
                    }
                }
                done += n;
            }
            Ok(())
        })
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.g.disk_size, offset, length)?;
        let bs = self.g.block_size;
        let end = offset + length;
        let stop_state = self.state.with_read(|st| {
            let state_of = |index: u64| -> Result<Allocation> {
                Ok(match self.position(st, index)? {
                    Some(_) => Allocation::Data,
                    None => Allocation::Zero,
                })
            };
            let index = offset / bs;
            let state = state_of(index)?;
            let stop = extend_run(((index + 1) * bs).min(end), end, state, |pos| {
                let index = pos / bs;
                Ok(Some((state_of(index)?, (index + 1) * bs)))
            })?;
            Ok((stop, state))
        })?;
        layer_answer(None, offset, stop_state.0, stop_state.1)
    }
}

impl WriteAt for VdiWriter {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(self.g.disk_size, offset, buf.len() as u64)?;
        self.state
            .with_write(|st| self.write_locked(st, offset, buf))
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        self.zero_or_discard(offset, length, false)
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.zero_or_discard(offset, length, true)
    }

    fn flush(&self) -> Result<()> {
        self.state.with_write(|st| {
            self.write_metadata(st)?;
            self.file.flush()
        })
    }
}

impl crate::image::Finish for VdiWriter {
    fn finish(&self) -> Result<()> {
        VdiWriter::finish(self)
    }
}

impl Drop for VdiWriter {
    fn drop(&mut self) {
        // Best effort: callers that care call `finish` or `flush` first.
        let _ = self.finish();
    }
}

/// A random (version 4) UUID, from the standard library's randomly keyed
/// hasher, the time and the process id.
fn random_uuid() -> Uuid {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut u = [0u8; 16];
    for (i, half) in u.chunks_exact_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(nanos);
        h.write_u64(count);
        h.write_u32(std::process::id());
        h.write_usize(i);
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    // RTUUID: version in the high nibble of byte 7, variant in byte 8.
    if let Some(b) = u.get_mut(7) {
        *b = (*b & 0x0f) | 0x40;
    }
    if let Some(b) = u.get_mut(8) {
        *b = (*b & 0x3f) | 0x80;
    }
    Uuid(u)
}

/// Creates a new VDI image at `path` as `-o` options say.
pub fn create_image(path: &Path, size: u64, opts: &CreateOptions) -> Result<VdiWriter> {
    VdiWriter::create(path, size, &Params::from_options(opts)?)
}

/// Opens the VDI image at `path` for writing.
pub fn open_path(path: &Path) -> Result<VdiWriter> {
    VdiWriter::open(FileDisk::open_rw(path)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use disk_io::bytes::le_u32;

    #[test]
    fn new_images_read_back() {
        let dir = tempfile::tempdir().unwrap();
        for fixed in [false, true] {
            let path = dir.path().join(format!("t-{fixed}.vdi"));
            let w = VdiWriter::create(&path, 5 << 20, &Params { fixed }).unwrap();
            w.write_at(1000, &[7u8; 3 << 20]).unwrap();
            w.write_zeroes(2 << 20, 4096).unwrap();
            w.flush().unwrap();
            drop(w);
            let file = FileDisk::open(&path).unwrap();
            let r = super::super::Vdi::open(file).unwrap();
            let mut buf = vec![0u8; 5 << 20];
            r.read_at(0, &mut buf).unwrap();
            let mut want = vec![0u8; 5 << 20];
            want[1000..1000 + (3 << 20)].fill(7);
            want[2 << 20..(2 << 20) + 4096].fill(0);
            assert!(buf == want, "fixed={fixed}");
            let report = super::super::check(&FileDisk::open(&path).unwrap()).unwrap();
            assert!(report.is_clean(), "{report:?}");
        }
    }

    #[test]
    fn headers_round_trip() {
        let h = NewHeader {
            image_type: ImageType::Static,
            offset_bmap: 0x200,
            offset_data: 0x10_0000,
            disk_size: 3 << 20,
            block_size: BLOCK_SIZE,
            blocks: 3,
            blocks_allocated: 3,
            uuid_create: random_uuid(),
            uuid_modify: random_uuid(),
        };
        let mut bytes = h.emit();
        bytes.resize(0x10_0000, 0);
        let file = disk_io::MemDisk::from_vec(bytes);
        let r = Header::read(&file).unwrap();
        assert_eq!(r.image_type, ImageType::Static);
        assert_eq!((r.offset_bmap, r.offset_data), (0x200, 0x10_0000));
        assert_eq!((r.disk_size, r.blocks, r.blocks_allocated), (3 << 20, 3, 3));
        assert_eq!(r.uuid_create, h.uuid_create);
        assert!(r.uuid_link.is_nil());
        assert_ne!(h.uuid_create, h.uuid_modify);
        assert_eq!(
            le_u32(&h.emit(), 0x40),
            Some(super::super::header::SIGNATURE)
        );
    }
}
