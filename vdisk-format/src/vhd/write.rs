//! Writing VHD images: creating fixed, dynamic and differencing disks, and
//! a random-access writer over new or existing dynamic and differencing
//! disks.
//!
//! A block is allocated on the first write into it, past the last one, its
//! data 4 KiB-aligned (the sector bitmap in the sector before it). The
//! steps keep the image readable after a crash at any point: the footer is
//! first written at the new end of the file, then the data, then the
//! sector bitmap, then the BAT entry (a crash before the entry leaves only
//! unused space). A write sets the bitmap bits of the sectors it touches;
//! the rest of a sector it covers only in part is filled from the parent
//! (zeros without one). `discard` of whole blocks drops their BAT entries
//! and punches the space out; of sectors in a differencing disk, clears
//! their bits so that they read from the parent again.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use std::path::{Path, PathBuf};

use disk_io::sync::Lock;
use disk_io::{
    Allocation, Error, Extent, FileDisk, ReadAt, Result, Window, WriteAt, check_range, clamp_query,
};

use super::bat::{self, UNUSED};
use super::create::{
    BAT_OFFSET, BLOCK_SIZE, HEADER_OFFSET, NewType, Params, ParentRecord, Shape, Subformat,
    footer_bytes, header_bytes, locator_data, new_unique_id, now, seal,
};
use super::dynamic_header::{self, DynamicHeader};
use super::{DiskType, Issue, Metadata, choose_footer, footer, parent_locator, vhd_mtime};
use crate::cache::Lru;
use crate::chain::{Backing, extend_run, layer_answer, read_parent};
use crate::options::CreateOptions;

/// Memory the sector bitmap cache may use.
const BITMAP_CACHE_BYTES: u64 = 1 << 20;
/// Alignment of block data in the file.
const DATA_ALIGN: u64 = 4096;

/// What the writer knows of the file, behind one lock.
struct State {
    /// The BAT, as on disk.
    bat: Vec<u32>,
    /// Where the footer is: the end of the used part of the file.
    end: u64,
    /// Sector bitmaps by block index, as on disk.
    bitmaps: Lru<Vec<u8>>,
    max_bitmaps: usize,
}

/// Where the guest bytes come from in a write.
#[derive(Clone, Copy)]
enum Src<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// Zeros.
    Zeros,
}

/// What one guest range maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// Not stored here.
    Absent,
    /// Stored at this host offset.
    Data(u64),
}

/// A dynamic or differencing VHD open for writing, through `&self` from
/// any thread.
///
/// ```no_run
/// use disk_io::WriteAt;
/// use vdisk_format::vhd::write::create_image;
/// let image = create_image("new.vhd".as_ref(), 1 << 30, &Default::default())?;
/// image.write_at(4096, b"hello")?;
/// image.flush()?;
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct VhdWriter {
    file: FileDisk,
    parent: Option<Backing>,
    size: u64,
    block: u64,
    bitmap_size: u64,
    bat_offset: u64,
    /// Blocks may not start before this (header, BAT).
    data_floor: u64,
    footer: Vec<u8>,
    barriers: bool,
    state: Lock<State>,
}

/// A VHD image being written: a fixed disk is its file up to the footer.
pub enum VhdImage {
    /// A fixed disk.
    Fixed(Window<FileDisk>),
    /// A dynamic or differencing disk.
    Sparse(VhdWriter),
}

impl VhdImage {
    /// The allocation unit: the block size of a sparse disk, a sector of a
    /// fixed one.
    pub fn unit(&self) -> u64 {
        match self {
            VhdImage::Fixed(_) => 512,
            VhdImage::Sparse(w) => w.block,
        }
    }
}

fn round512(n: u64) -> u64 {
    n.div_ceil(512) * 512
}

impl VhdWriter {
    fn assemble(
        file: FileDisk,
        parent: Option<Backing>,
        size: u64,
        header: &DynamicHeader,
        bat: Vec<u32>,
        end: u64,
        footer: Vec<u8>,
    ) -> VhdWriter {
        let bitmap_size = header.bitmap_size();
        let max_bitmaps = (BITMAP_CACHE_BYTES / bitmap_size).clamp(4, 256) as usize;
        let bat_end = header.table_offset + round512(bat.len() as u64 * 4);
        VhdWriter {
            file,
            parent,
            size,
            block: u64::from(header.block_size),
            bitmap_size,
            bat_offset: header.table_offset,
            data_floor: bat_end.max(header.offset + dynamic_header::SIZE as u64),
            footer,
            barriers: false,
            state: Lock::new(State {
                bat,
                end,
                bitmaps: Lru::default(),
                max_bitmaps,
            }),
        }
    }

    /// Opens the dynamic or differencing disk in `file` (opened
    /// read-write); `parent` must be given exactly for a differencing
    /// disk. Checksums must verify. Metadata is written with barriers: a
    /// sync before each new BAT entry and, in a differencing disk, before
    /// bitmap bits are set over data written, so that a power loss cannot
    /// expose data not yet on disk; a sync before space is released.
    pub fn open(file: FileDisk, parent: Option<Backing>) -> Result<VhdWriter> {
        let meta = Metadata::read(&file, &mut |i| match i {
            Issue::Damage(e) => Err(e),
            Issue::Note(_) => Ok(()),
        })?;
        VhdWriter::from_metadata(file, meta, parent)
    }

    fn from_metadata(file: FileDisk, meta: Metadata, parent: Option<Backing>) -> Result<Self> {
        let Some((header, bat)) = &meta.sparse else {
            return Err(Error::invalid_input(
                "vhd fixed disk: written as its file, not through the block writer",
            ));
        };
        let differencing = meta.footer.disk_type == DiskType::Differencing;
        if differencing != parent.is_some() {
            return Err(Error::invalid_input(
                "vhd differencing disk opened without its parent, or another disk with one",
            ));
        }
        let footer = disk_io::read_vec(&file, meta.footer.offset, footer::SIZE)?;
        let block = u64::from(header.block_size);
        let block_bytes = header.bitmap_size() + block;
        // The end of what the file uses: metadata, locators, blocks.
        let mut end = header.table_offset + round512(bat.entries.len() as u64 * 4);
        end = end.max(header.offset + dynamic_header::SIZE as u64);
        for l in &header.locators {
            end = end.max(
                l.data_offset
                    .saturating_add(round512(u64::from(l.data_length))),
            );
        }
        for &e in &bat.entries {
            if e != UNUSED {
                end = end.max(u64::from(e) * 512 + block_bytes);
            }
        }
        let end_footer = meta.footer.offset != 0;
        if end_footer {
            if end > meta.footer.offset {
                return Err(Error::corrupt(
                    format!(
                        "vhd block, BAT or parent locator reaches {end:#x}, past the footer at {:#x}",
                        meta.footer.offset
                    ),
                    header.offset,
                ));
            }
            end = meta.footer.offset;
        } else {
            end = end.max(round512(file.size()));
        }
        if end > file.size().saturating_add(1 << 40) {
            return Err(Error::corrupt(
                format!("vhd metadata reaches {end:#x}, far past the end of the file"),
                header.offset,
            ));
        }
        let size = meta.footer.virtual_size();
        let mut w =
            VhdWriter::assemble(file, parent, size, header, bat.entries.clone(), end, footer);
        w.barriers = true;
        if !end_footer || w.file.size() != end + footer::SIZE as u64 {
            // The footer at the end is missing or elsewhere: put it back.
            w.put_footer(end)?;
        }
        Ok(w)
    }

    /// Whether a sync orders each new BAT entry after its data (on for
    /// images opened with [`open`](Self::open), off for new ones: a
    /// conversion's output, which is not used before it is complete).
    pub fn set_barriers(&mut self, on: bool) {
        self.barriers = on;
    }

    /// The file holding the image.
    pub fn file(&self) -> &FileDisk {
        &self.file
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block
    }

    /// Makes the file end with the footer at `at`.
    fn put_footer(&self, at: u64) -> Result<()> {
        let len = at + footer::SIZE as u64;
        if self.file.size() != len {
            self.file.set_size(len)?;
        }
        self.file.write_at(at, &self.footer)
    }

    fn bat_entry(st: &State, index: u64) -> u32 {
        usize::try_from(index)
            .ok()
            .and_then(|i| st.bat.get(i).copied())
            .unwrap_or(UNUSED)
    }

    /// The host offset of the bitmap of an allocated block, checked to lie
    /// past the metadata and before the footer.
    fn block_at(&self, st: &State, index: u64, entry: u32) -> Result<u64> {
        let at = u64::from(entry) * 512;
        if at < self.data_floor || at + self.bitmap_size + self.block > st.end {
            return Err(Error::corrupt(
                format!(
                    "vhd BAT entry {index} points to a block at {at:#x}, inside the metadata or past the end of the file"
                ),
                self.bat_offset + index * 4,
            ));
        }
        Ok(at)
    }

    /// Runs `f` on the bitmap of allocated block `index` at `at`.
    fn with_bitmap<R>(
        &self,
        st: &mut State,
        index: u64,
        at: u64,
        f: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Result<R> {
        if st.bitmaps.get(index).is_none() {
            let bm = disk_io::read_vec(&self.file, at, self.bitmap_size as usize)?;
            let max = st.max_bitmaps;
            st.bitmaps.insert(index, bm, max);
        }
        let bm = st
            .bitmaps
            .get_mut(index)
            .ok_or_else(|| Error::corrupt("vhd sector bitmap cache", at))?;
        Ok(f(bm))
    }

    /// The mapping of guest offset `pos` and the range `start..end` it
    /// holds for (a `Data` host offset is `start`'s).
    fn unit_at(&self, st: &mut State, pos: u64) -> Result<(Unit, u64, u64)> {
        let index = pos / self.block;
        let bstart = index * self.block;
        let bend = (bstart + self.block).min(self.size);
        let entry = VhdWriter::bat_entry(st, index);
        if entry == UNUSED {
            return Ok((Unit::Absent, bstart, bend));
        }
        let at = self.block_at(st, index, entry)?;
        let data_at = at + self.bitmap_size;
        let sector = (pos - bstart) / 512;
        let sectors = (bend - bstart).div_ceil(512);
        let (set, run) = self.with_bitmap(st, index, at, |bm| {
            let set = bat::bit(bm, sector);
            (set, bat::run_end(bm, sector, sectors, set))
        })?;
        let start = bstart + sector * 512;
        let end = (bstart + run * 512).min(bend);
        let unit = if set {
            Unit::Data(data_at + sector * 512)
        } else {
            Unit::Absent
        };
        Ok((unit, start, end))
    }

    fn read_locked(&self, st: &mut State, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (unit, start, end) = self.unit_at(st, pos)?;
            let n = (end - pos).min((buf.len() - done) as u64) as usize;
            let out = buf.get_mut(done..done + n).unwrap_or(&mut []);
            match unit {
                Unit::Absent => read_parent(self.parent.as_ref(), pos, out)?,
                Unit::Data(host) => self.file.read_at(host + (pos - start), out)?,
            }
            done += n;
        }
        Ok(())
    }

    /// Writes the guest range `from..to` (inside block `index`) from
    /// `src`, allocating the block when it is not stored.
    fn write_block(&self, st: &mut State, index: u64, from: u64, to: u64, src: Src) -> Result<()> {
        let bstart = index * self.block;
        let s0 = (from - bstart) / 512;
        let s1 = (to - bstart).div_ceil(512);
        let entry = VhdWriter::bat_entry(st, index);
        let fresh = entry == UNUSED;
        if fresh && matches!(src, Src::Zeros) && self.parent.is_none() {
            return Ok(());
        }
        let (bitmap_at, old_end) = if fresh {
            let old_end = st.end;
            let data_at = (old_end + self.bitmap_size).div_ceil(DATA_ALIGN) * DATA_ALIGN;
            let bitmap_at = data_at - self.bitmap_size;
            if bitmap_at / 512 >= u64::from(UNUSED) {
                return Err(Error::unsupported(format!(
                    "vhd file past {:#x} bytes: a BAT entry cannot point there",
                    u64::from(UNUSED) * 512
                )));
            }
            // The footer goes to the new end first: the file always ends
            // with one.
            self.put_footer(data_at + self.block)?;
            (bitmap_at, Some(old_end))
        } else {
            (self.block_at(st, index, entry)?, None)
        };
        let data_at = bitmap_at + self.bitmap_size;
        match src {
            Src::Bytes(b) => self.file.write_at(data_at + (from - bstart), b)?,
            Src::Zeros if !fresh => self
                .file
                .write_zeroes(data_at + (from - bstart), to - from)?,
            Src::Zeros => {}
        }
        // Sectors covered in part: their other bytes as they read now
        // (from the parent, or zeros) when this layer does not hold them.
        let bm = if fresh {
            vec![0u8; self.bitmap_size as usize]
        } else {
            self.with_bitmap(st, index, bitmap_at, |bm| bm.clone())?
        };
        let mut edges: Vec<(u64, u64)> = Vec::new();
        if !from.is_multiple_of(512) && !bat::bit(&bm, s0) {
            edges.push((bstart + s0 * 512, from));
        }
        let last_end = (bstart + s1 * 512).min(self.size);
        if to < last_end && !bat::bit(&bm, s1 - 1) {
            edges.push((to, last_end));
        }
        for (a, b) in edges {
            if fresh && self.parent.is_none() {
                continue;
            }
            let mut fill = vec![0u8; (b - a) as usize];
            read_parent(self.parent.as_ref(), a, &mut fill)?;
            self.file.write_at(data_at + (a - bstart), &fill)?;
        }
        let mut new = bm;
        for s in s0..s1 {
            if let Some(byte) = new.get_mut((s / 8) as usize) {
                *byte |= 0x80 >> (s % 8);
            }
        }
        match old_end {
            Some(old_end) => {
                // Zeros over the old footer, then the bitmap.
                let mut page = vec![0u8; (bitmap_at - old_end) as usize];
                page.extend_from_slice(&new);
                self.file.write_at(old_end, &page)?;
                if self.barriers {
                    self.file.flush()?;
                }
                let e = (bitmap_at / 512) as u32;
                self.file
                    .write_at(self.bat_offset + index * 4, &e.to_be_bytes())?;
                if let Some(slot) = st.bat.get_mut(index as usize) {
                    *slot = e;
                }
                st.end = data_at + self.block;
                let max = st.max_bitmaps;
                st.bitmaps.insert(index, new, max);
            }
            None => {
                let changed = self.with_bitmap(st, index, bitmap_at, |bm| {
                    if *bm == new {
                        false
                    } else {
                        bm.clone_from(&new);
                        true
                    }
                })?;
                if changed {
                    // In a differencing disk a clear bit reads the parent:
                    // the data must be on disk before the bit that
                    // exposes it (in a dynamic disk the data area under a
                    // clear bit holds zeros, which is what it read).
                    if self.barriers && self.parent.is_some() {
                        self.file.flush()?;
                    }
                    self.file.write_at(bitmap_at, &new)?;
                }
            }
        }
        Ok(())
    }

    /// Writes `length` guest bytes at `offset` from `src`.
    fn write_locked(&self, st: &mut State, offset: u64, length: u64, src: Src) -> Result<()> {
        let end = offset + length;
        let mut pos = offset;
        while pos < end {
            let index = pos / self.block;
            let to = ((index + 1) * self.block).min(end);
            let part = match src {
                Src::Bytes(b) => Src::Bytes(
                    b.get((pos - offset) as usize..(to - offset) as usize)
                        .unwrap_or(&[]),
                ),
                Src::Zeros => Src::Zeros,
            };
            self.write_block(st, index, pos, to, part)?;
            pos = to;
        }
        Ok(())
    }

    /// Guest bytes written. Into a block already stored, the data goes to
    /// the file outside the lock (the bitmap update takes it), so that
    /// writers on several threads overlap; allocations, and sectors
    /// written in part whose rest must be filled, are done under the lock.
    fn write_bytes(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let index = pos / self.block;
            let bstart = index * self.block;
            let to = (bstart + self.block).min(end);
            let part = buf
                .get((pos - offset) as usize..(to - offset) as usize)
                .unwrap_or(&[]);
            let (s0, s1) = ((pos - bstart) / 512, (to - bstart).div_ceil(512));
            let last_end = (bstart + s1 * 512).min(self.size);
            let stored = self.state.with_write(|st| {
                let entry = VhdWriter::bat_entry(st, index);
                if entry == UNUSED {
                    return Ok(None);
                }
                let at = self.block_at(st, index, entry)?;
                let whole = self.with_bitmap(st, index, at, |bm| {
                    (pos.is_multiple_of(512) || bat::bit(bm, s0))
                        && (to >= last_end || bat::bit(bm, s1 - 1))
                })?;
                Ok(whole.then_some((entry, at)))
            })?;
            let Some((entry, at)) = stored else {
                self.state
                    .with_write(|st| self.write_block(st, index, pos, to, Src::Bytes(part)))?;
                pos = to;
                continue;
            };
            self.file
                .write_at(at + self.bitmap_size + (pos - bstart), part)?;
            self.state.with_write(|st| {
                if VhdWriter::bat_entry(st, index) != entry {
                    // Released meanwhile (a discard): written again.
                    return self.write_block(st, index, pos, to, Src::Bytes(part));
                }
                let new = self.with_bitmap(st, index, at, |bm| {
                    let old = bm.clone();
                    for s in s0..s1 {
                        if let Some(byte) = bm.get_mut((s / 8) as usize) {
                            *byte |= 0x80 >> (s % 8);
                        }
                    }
                    (*bm != old).then(|| bm.clone())
                })?;
                if let Some(new) = new {
                    if self.barriers && self.parent.is_some() {
                        self.file.flush()?;
                    }
                    self.file.write_at(at, &new)?;
                }
                Ok(())
            })?;
            pos = to;
        }
        Ok(())
    }

    /// Makes `offset..offset + length` read from the parent (zeros
    /// without one), releasing whole blocks.
    fn discard_locked(&self, st: &mut State, offset: u64, length: u64) -> Result<()> {
        let end = offset + length;
        let mut pos = offset;
        while pos < end {
            let index = pos / self.block;
            let bstart = index * self.block;
            let bend = (bstart + self.block).min(self.size);
            let to = bend.min(end);
            let entry = VhdWriter::bat_entry(st, index);
            if entry != UNUSED {
                let at = self.block_at(st, index, entry)?;
                if pos == bstart && to == bend {
                    self.file
                        .write_at(self.bat_offset + index * 4, &UNUSED.to_be_bytes())?;
                    if let Some(slot) = st.bat.get_mut(index as usize) {
                        *slot = UNUSED;
                    }
                    if self.barriers {
                        // The entry is gone before its data is.
                        self.file.flush()?;
                    }
                    // Never read while the entry is unused; replaced
                    // when the block is allocated again.
                    if let Some(bm) = st.bitmaps.get_mut(index) {
                        bm.clear();
                    }
                    self.file.write_zeroes(at, self.bitmap_size + self.block)?;
                } else if self.parent.is_none() {
                    self.write_block(st, index, pos, to, Src::Zeros)?;
                } else {
                    // Whole sectors: bits cleared; the ends of sectors
                    // covered in part get the parent's bytes.
                    let a = pos.div_ceil(512) * 512;
                    let b = (to / 512 * 512).max(a);
                    for (x, y) in [(pos, a.min(to)), (b.max(pos), to)] {
                        if x < y {
                            let mut fill = vec![0u8; (y - x) as usize];
                            read_parent(self.parent.as_ref(), x, &mut fill)?;
                            self.write_block(st, index, x, y, Src::Bytes(&fill))?;
                        }
                    }
                    if a < b {
                        let (s0, s1) = ((a - bstart) / 512, (b - bstart) / 512);
                        let new = self.with_bitmap(st, index, at, |bm| {
                            for s in s0..s1 {
                                if let Some(byte) = bm.get_mut((s / 8) as usize) {
                                    *byte &= !(0x80 >> (s % 8));
                                }
                            }
                            bm.clone()
                        })?;
                        self.file.write_at(at, &new)?;
                        if self.barriers {
                            self.file.flush()?;
                        }
                        self.file
                            .write_zeroes(at + self.bitmap_size + (a - bstart), b - a)?;
                    }
                }
            }
            pos = to;
        }
        Ok(())
    }
}

impl ReadAt for VhdWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.state
            .with_write(|st| self.read_locked(st, offset, buf))
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.size, offset, length)?;
        let end = offset + length;
        let absent = if self.parent.is_some() {
            Allocation::Unallocated
        } else {
            Allocation::Zero
        };
        let state_of = |u: Unit| match u {
            Unit::Absent => absent,
            Unit::Data(_) => Allocation::Data,
        };
        let (state, stop) = self.state.with_write(|st| {
            let (unit, _, first_end) = self.unit_at(st, offset)?;
            let state = state_of(unit);
            let stop = extend_run(first_end.min(end), end, state, |pos| {
                let (u, _, e) = self.unit_at(st, pos)?;
                Ok(Some((state_of(u), e)))
            })?;
            Ok((state, stop))
        })?;
        layer_answer(self.parent.as_ref(), offset, stop, state)
    }
}

impl WriteAt for VhdWriter {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.write_bytes(offset, buf)
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        check_range(self.size, offset, length)?;
        self.state
            .with_write(|st| self.write_locked(st, offset, length, Src::Zeros))
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        check_range(self.size, offset, length)?;
        self.state
            .with_write(|st| self.discard_locked(st, offset, length))
    }

    fn flush(&self) -> Result<()> {
        self.file.flush()
    }
}

impl ReadAt for VhdImage {
    fn size(&self) -> u64 {
        match self {
            VhdImage::Fixed(w) => w.size(),
            VhdImage::Sparse(w) => w.size(),
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self {
            VhdImage::Fixed(w) => w.read_at(offset, buf),
            VhdImage::Sparse(w) => w.read_at(offset, buf),
        }
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        match self {
            VhdImage::Fixed(w) => w.allocation(offset, length),
            VhdImage::Sparse(w) => w.allocation(offset, length),
        }
    }
}

impl WriteAt for VhdImage {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        match self {
            VhdImage::Fixed(w) => w.write_at(offset, buf),
            VhdImage::Sparse(w) => w.write_at(offset, buf),
        }
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        match self {
            VhdImage::Fixed(w) => w.write_zeroes(offset, length),
            VhdImage::Sparse(w) => w.write_zeroes(offset, length),
        }
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        match self {
            VhdImage::Fixed(w) => w.discard(offset, length),
            VhdImage::Sparse(w) => w.discard(offset, length),
        }
    }

    fn flush(&self) -> Result<()> {
        match self {
            VhdImage::Fixed(w) => w.flush(),
            VhdImage::Sparse(w) => w.flush(),
        }
    }
}

/// The parent record of a child at `child` naming `name`, whose parent
/// is the open image `parent`; locator data to be stored from `at`.
/// Returns the record and the locator data, padded to whole sectors.
fn parent_record(
    child: &Path,
    name: &str,
    parent: &crate::Image,
    at: u64,
) -> Result<(ParentRecord, Vec<u8>)> {
    if parent.format() != crate::Format::Vhd {
        return Err(Error::unsupported(format!(
            "a vhd differencing disk over a {} image (its parent must be a vhd)",
            parent.format()
        )));
    }
    let parent_footer = choose_footer(&**parent.file(), &mut |_| Ok(()))?;
    let timestamp = vhd_mtime(parent.file())?;
    let absolute: PathBuf = crate::writable::dir_of(child)
        .join(name)
        .canonicalize()
        .map_err(|e| Error::invalid_input(format!("backing file '{name}': {e}")))?;
    let mut paths: Vec<([u8; 4], String)> = Vec::new();
    // As Windows writes them: the absolute path, then the relative one.
    paths.push((*b"W2ku", absolute.to_string_lossy().into_owned()));
    if !Path::new(name).is_absolute() {
        let relative = if name.starts_with("./") || name.starts_with("../") {
            String::from(name)
        } else {
            format!("./{name}")
        };
        paths.push((*b"W2ru", relative));
    }
    let mut data = Vec::new();
    let mut locators = Vec::new();
    for (code, path) in paths {
        let mut bytes = locator_data(&path);
        let len = bytes.len() as u64;
        if len > u64::from(parent_locator::MAX_DATA) {
            return Err(Error::invalid_input(format!(
                "backing file path '{path}' too long for a vhd parent locator"
            )));
        }
        let space = round512(len).max(512);
        bytes.resize(space as usize, 0);
        // Data space in bytes, as Windows stores it (the specification
        // says sectors; readers accept both).
        locators.push((code, space as u32, len as u32, at + data.len() as u64));
        data.extend_from_slice(&bytes);
    }
    Ok((
        ParentRecord {
            unique_id: parent_footer.unique_id,
            timestamp,
            name: name.replace('/', "\\"),
            locators,
        },
        data,
    ))
}

/// Points the differencing disk at `path` to the parent `parent`, named
/// `name` (relative to the child's directory): parent unique id, time
/// stamp, unicode name and `W2ku`/`W2ru` locators, whose data goes to the
/// end of the file (the footer moved past it first; the header rewritten
/// last, then synced).
pub(crate) fn set_backing(path: &Path, name: &str, parent: &crate::Image) -> Result<()> {
    let w = open_path_with_parent(path)?.0;
    let VhdImage::Sparse(w) = w else {
        return Err(Error::invalid_input("a fixed vhd has no parent"));
    };
    if w.parent.is_none() {
        return Err(Error::invalid_input(
            "vhd dynamic disk: only differencing disks have a parent",
        ));
    }
    relink(&w, path, name, parent)
}

fn relink(w: &VhdWriter, path: &Path, name: &str, parent: &crate::Image) -> Result<()> {
    let header_at = be_u64_at(&w.footer, 16)?;
    w.state.with_write(|st| {
        let at = st.end;
        let (record, data) = parent_record(path, name, parent, at)?;
        let new_end = at + data.len() as u64;
        w.put_footer(new_end)?;
        w.file.write_at(at, &data)?;
        st.end = new_end;
        let mut h = disk_io::read_vec(&w.file, header_at, dynamic_header::SIZE)?;
        super::create::put_parent(&mut h, &record)?;
        seal(&mut h, 36);
        w.file.flush()?;
        w.file.write_at(header_at, &h)?;
        w.file.flush()
    })
}

/// Records the current modification time of the parent of the
/// differencing disk at `path` (after a commit wrote to the parent); the
/// parent is found as when the child is opened. Other disks are left as
/// they are.
pub(crate) fn refresh_parent_time(path: &Path) -> Result<()> {
    let file = FileDisk::open_rw(path)?;
    let meta = Metadata::read(&file, &mut |i| match i {
        Issue::Damage(e) => Err(e),
        Issue::Note(_) => Ok(()),
    })?;
    let (DiskType::Differencing, Some((header, _))) = (meta.footer.disk_type, &meta.sparse) else {
        return Ok(());
    };
    let names = parent_locator::candidates(&file, &header.locators, &header.parent_name);
    let dir = crate::writable::dir_of(path);
    let Some(name) = names.iter().find(|n| dir.join(n.as_str()).exists()) else {
        return Err(Error::invalid_input(format!(
            "vhd differencing disk: parent not found beside {} (tried {})",
            path.display(),
            names.join(", ")
        )));
    };
    let ts = vhd_mtime(&FileDisk::open(dir.join(name))?)?;
    let mut h = disk_io::read_vec(&file, header.offset, dynamic_header::SIZE)?;
    if let Some(d) = h.get_mut(56..60) {
        d.copy_from_slice(&ts.to_be_bytes());
    }
    seal(&mut h, 36);
    file.write_at(header.offset, &h)?;
    file.flush()
}

fn be_u64_at(b: &[u8], at: usize) -> Result<u64> {
    disk_io::bytes::be_u64(b, at).ok_or_else(|| Error::corrupt("vhd footer truncated", 0))
}

/// Creates a new VHD image at `path` (which must not exist) as `-o`
/// options say: fixed, dynamic, or a differencing disk over the
/// `backing_file` (found relative to the new image's directory; a VHD, whose
/// size the child takes: `size` must round to it).
pub fn create_image(path: &Path, size: u64, opts: &CreateOptions) -> Result<VhdImage> {
    let params = Params::from_options(opts)?;
    let id = new_unique_id();
    let time = now();
    let parent = match &params.backing_file {
        None => None,
        Some(name) => Some((
            name.clone(),
            crate::writable::open_parent_image(path, name)?,
        )),
    };
    let shape = match &parent {
        None => Shape::new(size, params.force_size)?,
        Some((name, p)) => {
            if p.format() != crate::Format::Vhd {
                return Err(Error::unsupported(format!(
                    "a vhd differencing disk over '{name}', a {} image (its parent must be a vhd)",
                    p.format()
                )));
            }
            let f = choose_footer(&**p.file(), &mut |_| Ok(()))?;
            let geometry = super::create::Geometry {
                cylinders: f.cylinders,
                heads: f.heads,
                sectors: f.sectors_per_track,
            };
            let psize = p.size();
            if size != psize && Shape::new(size, params.force_size)?.size != psize {
                return Err(Error::invalid_input(format!(
                    "a vhd differencing disk has its parent's size: {psize} bytes, not {size}"
                )));
            }
            Shape::of_parent(geometry, psize)
        }
    };
    if params.subformat == Subformat::Fixed {
        let footer = footer_bytes(&shape, NewType::Fixed, id, time);
        let file = FileDisk::create(path, shape.size + footer::SIZE as u64)?;
        file.write_at(shape.size, &footer)?;
        return Ok(VhdImage::Fixed(Window::new(file, 0, shape.size)?));
    }
    let kind = if parent.is_some() {
        NewType::Differencing
    } else {
        NewType::Dynamic
    };
    let entries = shape.size.div_ceil(u64::from(BLOCK_SIZE));
    let entries32 = u32::try_from(entries)
        .map_err(|_| Error::invalid_input("vhd BAT of more than 2^32 entries"))?;
    let footer = footer_bytes(&shape, kind, id, time);
    let header = header_bytes(BAT_OFFSET, entries32, BLOCK_SIZE, None)?;
    let end = BAT_OFFSET + round512(entries * 4);
    let file = FileDisk::create(path, end + footer::SIZE as u64)?;
    file.write_at(0, &footer)?;
    file.write_at(HEADER_OFFSET, &header)?;
    let bat_bytes = vec![0xffu8; round512(entries * 4) as usize];
    file.write_at(BAT_OFFSET, &bat_bytes)?;
    file.write_at(end, &footer)?;
    let parsed = DynamicHeader::read(&file, HEADER_OFFSET)?;
    let mut w = VhdWriter::assemble(
        file,
        None,
        shape.size,
        &parsed,
        vec![UNUSED; entries as usize],
        end,
        footer,
    );
    if let Some((name, p)) = parent {
        relink(&w, path, &name, &p)?;
        w.parent = Some(Box::new(p));
    }
    Ok(VhdImage::Sparse(w))
}

/// Opens the VHD image at `path` for writing, with its parent (found by
/// its locators or name, relative to the image's directory, and checked
/// against the child's record of it), and gives the parent's path.
pub fn open_path_with_parent(path: &Path) -> Result<(VhdImage, Option<PathBuf>)> {
    let file = FileDisk::open_rw(path)?;
    let meta = Metadata::read(&file, &mut |i| match i {
        Issue::Damage(e) => Err(e),
        Issue::Note(_) => Ok(()),
    })?;
    if meta.footer.disk_type == DiskType::Fixed {
        let size = meta.footer.virtual_size();
        if size > meta.footer.offset {
            return Err(Error::corrupt(
                format!(
                    "vhd fixed disk of {size} bytes in a file of {} bytes",
                    file.size()
                ),
                meta.footer.offset,
            ));
        }
        return Ok((VhdImage::Fixed(Window::new(file, 0, size)?), None));
    }
    let (parent, parent_path) = match (&meta.footer.disk_type, &meta.sparse) {
        (DiskType::Differencing, Some((header, _))) => {
            let (p, at) = find_parent(&file, path, header)?;
            (Some(p), Some(at))
        }
        _ => (None, None),
    };
    let w = VhdWriter::from_metadata(file, meta, parent)?;
    Ok((VhdImage::Sparse(w), parent_path))
}

/// Finds and opens the parent of the differencing disk in `file` at
/// `path`, checking its unique id and time stamp.
fn find_parent(file: &FileDisk, path: &Path, header: &DynamicHeader) -> Result<(Backing, PathBuf)> {
    let names = parent_locator::candidates(file, &header.locators, &header.parent_name);
    let dir = crate::writable::dir_of(path);
    let Some(name) = names.iter().find(|n| dir.join(n.as_str()).exists()) else {
        return Err(Error::invalid_input(format!(
            "vhd differencing disk: parent not found beside {} (tried {})",
            path.display(),
            names.join(", ")
        ))
        .at(header.offset + 64));
    };
    let parent = crate::writable::open_parent_image(path, name)?;
    let f = choose_footer(&**parent.file(), &mut |_| Ok(()))?;
    if f.unique_id != header.parent_unique_id {
        return Err(Error::corrupt(
            format!("vhd parent unique id in the dynamic header does not match {name}'s"),
            header.offset + 40,
        ));
    }
    let mtime = vhd_mtime(parent.file())?;
    if header.parent_timestamp != 0 && header.parent_timestamp != mtime {
        return Err(Error::corrupt(
            format!(
                "vhd parent time stamp {} in the dynamic header differs from {name}'s modification time ({mtime}): the parent changed since the child was made",
                header.parent_timestamp
            ),
            header.offset + 56,
        ));
    }
    Ok((Box::new(parent), dir.join(name)))
}
