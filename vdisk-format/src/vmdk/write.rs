//! Writing VMDK disks: creating monolithicSparse, monolithicFlat and
//! twoGbMaxExtentSparse disks (children too), and a random-access writer
//! over new or existing hosted sparse and flat extents.
//!
//! A write to a grain not yet stored in the extent allocates it at the
//! end of the extent file; a partial grain is filled from the parent (or
//! zeros) first. Every update is written through in an order that leaves
//! a consistent disk after a crash at any point (space may leak, nothing
//! is corrupted): grain data before the grain table entry pointing to it,
//! a new grain table before the directory entry, the primary table and
//! directory before their redundant copies. The first change after
//! opening gives the disk a new `CID`, as the specification asks, so that
//! children made on the old content no longer match it.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use std::path::{Path, PathBuf};

use disk_io::sync::Lock;
use disk_io::{
    Allocation, Error, Extent, FileDisk, ReadAt, Result, WriteAt, check_range, clamp_query,
};

use super::create::{
    DESCRIPTOR_SECTORS, Layout, Params, SPLIT_EXTENT, Subformat, extent_name, final_name, new_cid,
    set_descriptor_value,
};
use super::descriptor::{Descriptor, ExtentKind, MAX_DESCRIPTOR_FILE, NO_PARENT_CID};
use super::grain_table::{GTE_UNALLOCATED, GTE_ZEROED, read_directory, read_table};
use super::sparse_header::{GD_AT_END, SECTOR, SparseHeader, read_embedded_descriptor};
use crate::cache::Lru;
use crate::chain::{Backing, extend_run, layer_answer, read_parent};
use crate::{Detected, Image};

/// Memory the grain table cache may use (1 MiB).
const GT_CACHE_BYTES: usize = 1 << 20;

/// One extent file of a sparse extent, open for writing.
struct SparseOut {
    file: FileDisk,
    header: SparseHeader,
    /// Sectors of one grain table.
    gt_sectors: u64,
    /// First byte past the header, descriptor and directories: no grain
    /// may be written below it.
    meta_end: u64,
}

enum OutKind {
    Sparse(SparseOut),
    Flat { file: FileDisk, offset: u64 },
    Zero,
}

struct OutExtent {
    /// Guest offset of the extent's first byte.
    start: u64,
    /// Guest bytes of the extent.
    len: u64,
    kind: OutKind,
}

/// Mutable state of one sparse extent.
#[derive(Default)]
struct ExtState {
    gd: Vec<u32>,
    /// Redundant directory; empty when the extent keeps none.
    rgd: Vec<u32>,
    /// Next free byte of the file (sector aligned).
    end: u64,
}

struct State {
    ext: Vec<ExtState>,
    tables: Lru<Vec<u32>>,
    max_tables: usize,
    text: String,
    cid: Option<u32>,
    /// The CID was changed since the disk was opened.
    touched: bool,
}

/// Where the descriptor of a disk lives.
enum DescPlace {
    /// In the first sparse extent: byte offset and room.
    Embedded { at: u64, room: u64 },
    /// A descriptor file of its own.
    File(PathBuf),
}

/// What a grain table entry says, under the extent's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum G {
    Unallocated,
    Zero,
    Data(u64),
}

/// A VMDK disk open for writing, through `&self` from any thread.
///
/// ```no_run
/// use disk_io::{ReadAt, WriteAt};
/// use vdisk_format::vmdk::{create::Params, write::VmdkWriter};
/// let disk = VmdkWriter::create("new.vmdk".as_ref(), 1 << 30, &Params::default(), None)?;
/// disk.write_at(4096, b"hello")?;
/// disk.flush()?;
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct VmdkWriter {
    size: u64,
    backing: Option<Backing>,
    extents: Vec<OutExtent>,
    desc: DescPlace,
    state: Lock<State>,
}

impl VmdkWriter {
    /// Creates a new disk at `path` (nothing of it may exist) of `size`
    /// guest bytes (rounded up to whole sectors), laid out as qemu-img
    /// lays it out. `backing` is the parent, given exactly when `params`
    /// names a backing file; it must be a VMDK disk. streamOptimized disks
    /// are made by [`super::stream_write::StreamWriter`] instead.
    pub fn create(path: &Path, size: u64, params: &Params, backing: Option<Image>) -> Result<Self> {
        if params.backing_file.is_some() != backing.is_some() {
            return Err(Error::invalid_input(
                "vmdk backing disk given without a backing file name, or the other way round",
            ));
        }
        let capacity = size.div_ceil(SECTOR);
        if capacity > super::sparse_header::MAX_CAPACITY_SECTORS {
            return Err(Error::invalid_input(format!(
                "a vmdk disk of {size} bytes is too large"
            )));
        }
        let parent_cid = match &backing {
            None => NO_PARENT_CID,
            Some(parent) => {
                if parent.format() != crate::Format::Vmdk {
                    return Err(Error::unsupported(format!(
                        "a vmdk child of a {} parent (its parent must be a vmdk)",
                        parent.format()
                    )));
                }
                super::read_descriptor(&**parent.file())?
                    .cid
                    .unwrap_or(NO_PARENT_CID)
            }
        };
        let cid = new_cid(None);
        let name = final_name(path)?;
        let dir = crate::writable::dir_of(path);
        match params.subformat {
            Subformat::MonolithicSparse => {
                let line = format!("RW {capacity} SPARSE \"{name}\"\n");
                let text = params.descriptor(cid, parent_cid, capacity * SECTOR, &line);
                create_sparse_extent(path, capacity, params.zeroed_grain, Some(&text))?;
            }
            Subformat::TwoGbMaxExtentSparse => {
                let mut lines = String::new();
                let mut names = Vec::new();
                let mut left = capacity;
                let per = SPLIT_EXTENT / SECTOR;
                while left > 0 || names.is_empty() {
                    let n = left.min(per);
                    let ext = extent_name(&name, &format!("-s{:03}", names.len() + 1));
                    lines.push_str(&format!("RW {n} SPARSE \"{ext}\"\n"));
                    names.push((ext, n));
                    left -= n;
                }
                let text = params.descriptor(cid, parent_cid, capacity * SECTOR, &lines);
                write_new_file(path, text.as_bytes())?;
                for (ext, n) in &names {
                    create_sparse_extent(&dir.join(ext), *n, params.zeroed_grain, None)?;
                }
            }
            Subformat::MonolithicFlat => {
                let flat = extent_name(&name, "-flat");
                let line = format!("RW {capacity} FLAT \"{flat}\" 0\n");
                let text = params.descriptor(cid, parent_cid, capacity * SECTOR, &line);
                write_new_file(path, text.as_bytes())?;
                FileDisk::create(dir.join(&flat), capacity * SECTOR)?;
            }
            Subformat::StreamOptimized => {
                return Err(Error::invalid_input(
                    "streamOptimized vmdk disks are written by the stream writer",
                ));
            }
        }
        let (w, _) = open_with(path, backing.map(|b| Box::new(b) as Backing))?;
        // A new disk already has its own CID.
        w.state.with_write(|st| {
            st.touched = true;
            Ok(())
        })?;
        Ok(w)
    }

    /// The grain size of the first sparse extent (64 KiB for flat disks).
    pub fn cluster_size(&self) -> u64 {
        self.extents
            .iter()
            .find_map(|e| match &e.kind {
                OutKind::Sparse(s) => Some(s.header.grain_size()),
                _ => None,
            })
            .unwrap_or(64 << 10)
    }

    fn extent_at(&self, pos: u64) -> Result<(usize, &OutExtent)> {
        let i = self.extents.partition_point(|e| e.start + e.len <= pos);
        self.extents
            .get(i)
            .filter(|e| e.start <= pos)
            .map(|e| (i, e))
            .ok_or_else(|| Error::out_of_range(pos, 1, self.size))
    }

    /// Gives the disk a new CID before its first change.
    fn touch(&self, st: &mut State) -> Result<()> {
        if st.touched {
            return Ok(());
        }
        let cid = new_cid(st.cid);
        let text = set_descriptor_value(&st.text, "CID", &format!("{cid:08x}"), false, "version");
        self.store_descriptor(&text)?;
        st.text = text;
        st.cid = Some(cid);
        st.touched = true;
        Ok(())
    }

    fn store_descriptor(&self, text: &str) -> Result<()> {
        match &self.desc {
            DescPlace::Embedded { at, room } => {
                let Some(OutKind::Sparse(s)) = self.extents.first().map(|e| &e.kind) else {
                    return Err(Error::corrupt("vmdk embedded descriptor without extent", 0));
                };
                write_embedded(&s.file, *at, *room, text)
            }
            DescPlace::File(path) => replace_file(path, text.as_bytes()),
        }
    }

    /// The cache key of table `gt` of extent `e`.
    fn key(e: usize, gt: u64) -> u64 {
        ((e as u64) << 40) | gt
    }

    /// Loads table `gt` of extent `e` into the cache; false when the
    /// directory has none.
    fn load(&self, st: &mut State, e: usize, s: &SparseOut, gt: u64) -> Result<bool> {
        let key = Self::key(e, gt);
        if st.tables.get(key).is_some() {
            return Ok(true);
        }
        let sector = st
            .ext
            .get(e)
            .and_then(|x| x.gd.get(gt as usize))
            .copied()
            .unwrap_or(0);
        if sector == 0 {
            return Ok(false);
        }
        let t = read_table(&s.file, &s.header, sector, gt)?;
        let max = st.max_tables;
        st.tables.insert(key, t, max);
        Ok(true)
    }

    /// The entry of grain `g` of sparse extent `e`.
    fn gte(&self, st: &mut State, e: usize, s: &SparseOut, g: u64) -> Result<u32> {
        let per = u64::from(s.header.gtes_per_gt);
        if !self.load(st, e, s, g / per)? {
            return Ok(GTE_UNALLOCATED);
        }
        Ok(st
            .tables
            .get(Self::key(e, g / per))
            .and_then(|t| t.get((g % per) as usize).copied())
            .unwrap_or(0))
    }

    fn classify(s: &SparseOut, gte: u32) -> G {
        match gte {
            GTE_UNALLOCATED => G::Unallocated,
            GTE_ZEROED if s.header.zeroed_grain_gte() => G::Zero,
            sector => G::Data(u64::from(sector) * SECTOR),
        }
    }

    /// Checks that a stored grain lies past the extent's metadata, where
    /// writing it cannot overwrite anything else.
    fn check_host(s: &SparseOut, host: u64, g: u64) -> Result<()> {
        if host < s.meta_end || host >= s.file.size() {
            return Err(Error::corrupt(
                format!(
                    "vmdk grain {g} at {host:#x} lies inside the extent's metadata or past its end"
                ),
                host,
            ));
        }
        Ok(())
    }

    /// Makes sure table `gt` of extent `e` exists: allocates a zeroed one
    /// (and its redundant copy) at the end of the file, then points the
    /// directories to it.
    fn ensure_table(&self, st: &mut State, e: usize, s: &SparseOut, gt: u64) -> Result<()> {
        if self.load(st, e, s, gt)? {
            return Ok(());
        }
        let bytes = s.gt_sectors * SECTOR;
        let x = st
            .ext
            .get_mut(e)
            .ok_or_else(|| Error::corrupt("vmdk extent state", 0))?;
        if gt as usize >= x.gd.len() {
            return Err(Error::corrupt(
                format!("vmdk grain table {gt} past the grain directory"),
                0,
            ));
        }
        let redundant = !x.rgd.is_empty();
        let primary = x.end;
        let copy = primary + bytes;
        let new_end = if redundant { copy + bytes } else { copy };
        let to_sector = |b: u64| {
            u32::try_from(b / SECTOR)
                .map_err(|_| Error::unsupported("vmdk extent grows past 2 TiB of sectors"))
        };
        let (p_sector, c_sector) = (to_sector(primary)?, to_sector(copy)?);
        if s.file.size() < new_end {
            s.file.set_size(new_end)?;
        }
        x.end = new_end;
        let gd_at = s.header.gd_offset * SECTOR + gt * 4;
        s.file.write_at(gd_at, &p_sector.to_le_bytes())?;
        if let Some(g) = x.gd.get_mut(gt as usize) {
            *g = p_sector;
        }
        if redundant {
            let rgd_at = s.header.rgd_offset * SECTOR + gt * 4;
            s.file.write_at(rgd_at, &c_sector.to_le_bytes())?;
            if let Some(g) = x.rgd.get_mut(gt as usize) {
                *g = c_sector;
            }
        }
        let max = st.max_tables;
        st.tables.insert(
            Self::key(e, gt),
            vec![0u32; s.header.gtes_per_gt as usize],
            max,
        );
        Ok(())
    }

    /// Sets entries `first..` of table `gt` of extent `e` (which must be
    /// loaded) and writes them through, to the primary table then to the
    /// redundant one.
    fn set_entries(
        &self,
        st: &mut State,
        e: usize,
        s: &SparseOut,
        gt: u64,
        first: u64,
        entries: &[u32],
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let t = st
            .tables
            .get_mut(Self::key(e, gt))
            .ok_or_else(|| Error::corrupt("vmdk grain table not loaded", 0))?;
        let slot = t
            .get_mut(first as usize..first as usize + entries.len())
            .ok_or_else(|| Error::corrupt("vmdk grain table entries out of range", 0))?;
        slot.copy_from_slice(entries);
        let bytes: Vec<u8> = entries.iter().flat_map(|v| v.to_le_bytes()).collect();
        let x = st
            .ext
            .get(e)
            .ok_or_else(|| Error::corrupt("vmdk extent state", 0))?;
        for dir in [&x.gd, &x.rgd] {
            let sector = dir.get(gt as usize).copied().unwrap_or(0);
            if sector != 0 {
                s.file
                    .write_at(u64::from(sector) * SECTOR + first * 4, &bytes)?;
            }
        }
        Ok(())
    }

    /// Old content of grain `g` (starting at extent byte `gstart`) of
    /// extent `ext` into `buf`, for a grain that is not stored.
    fn old_content(&self, ext: &OutExtent, kind: G, gstart: u64, buf: &mut [u8]) -> Result<()> {
        match kind {
            G::Unallocated => {
                let guest = ext.start + gstart;
                let in_disk = self.size.saturating_sub(guest).min(buf.len() as u64) as usize;
                let (head, tail) = buf.split_at_mut(in_disk);
                read_parent(self.backing.as_ref(), guest, head)?;
                tail.fill(0);
                Ok(())
            }
            _ => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    /// Writes `data` at byte `local` of sparse extent `e`.
    fn write_sparse(
        &self,
        st: &mut State,
        e: usize,
        ext: &OutExtent,
        s: &SparseOut,
        local: u64,
        data: &[u8],
    ) -> Result<()> {
        let gs = s.header.grain_size();
        let per = u64::from(s.header.gtes_per_gt);
        let stop = local + data.len() as u64;
        let slice = |from: u64, to: u64| {
            data.get((from - local) as usize..(to - local) as usize)
                .unwrap_or(&[])
        };
        let mut p = local;
        while p < stop {
            let gt = p / gs / per;
            let gt_end = ((gt + 1) * per * gs).min(stop);
            self.ensure_table(st, e, s, gt)?;
            while p < gt_end {
                let g = p / gs;
                let gstart = g * gs;
                let gend = (gstart + gs).min(ext.len);
                let n = gend.min(gt_end) - p;
                let kind = Self::classify(s, self.gte(st, e, s, g)?);
                if let G::Data(host) = kind {
                    Self::check_host(s, host, g)?;
                    let at = host + (p - gstart);
                    let bytes = slice(p, p + n);
                    if at + n > s.file.size() {
                        s.file.set_size(at + n)?;
                    }
                    s.file.write_at(at, bytes)?;
                    p += n;
                    continue;
                }
                // A run of grains not stored here: allocated together.
                let mut k = 1u64;
                let mut run_end = p + n;
                while run_end < gt_end {
                    let next = run_end / gs;
                    if let G::Data(_) = Self::classify(s, self.gte(st, e, s, next)?) {
                        break;
                    }
                    run_end = ((next + 1) * gs).min(ext.len).min(gt_end);
                    k += 1;
                }
                let last_start = (g + k - 1) * gs;
                let last_kind = if k == 1 {
                    kind
                } else {
                    Self::classify(s, self.gte(st, e, s, g + k - 1)?)
                };
                let whole = p == gstart && run_end == gstart + k * gs;
                let mut owned;
                let bytes: &[u8] = if whole {
                    slice(p, run_end)
                } else {
                    owned = vec![0u8; (k * gs) as usize];
                    if p > gstart {
                        let head = owned.get_mut(..gs as usize).unwrap_or(&mut []);
                        self.old_content(ext, kind, gstart, head)?;
                    }
                    if run_end < last_start + gs {
                        let tail = owned
                            .get_mut((last_start - gstart) as usize..)
                            .unwrap_or(&mut []);
                        self.old_content(ext, last_kind, last_start, tail)?;
                    }
                    if let Some(dst) =
                        owned.get_mut((p - gstart) as usize..(run_end - gstart) as usize)
                    {
                        dst.copy_from_slice(slice(p, run_end));
                    }
                    &owned
                };
                let x = st
                    .ext
                    .get_mut(e)
                    .ok_or_else(|| Error::corrupt("vmdk extent state", 0))?;
                let host = x.end;
                let new_end = host + k * gs;
                if u32::try_from(new_end / SECTOR).is_err() {
                    return Err(Error::unsupported(
                        "vmdk extent grows past 2 TiB of sectors",
                    ));
                }
                x.end = new_end;
                if s.file.size() < new_end {
                    s.file.set_size(new_end)?;
                }
                s.file.write_at(host, bytes)?;
                let entries: Vec<u32> = (0..k).map(|i| ((host + i * gs) / SECTOR) as u32).collect();
                self.set_entries(st, e, s, gt, g % per, &entries)?;
                p = run_end;
            }
        }
        Ok(())
    }

    /// Guest writes with the state locked.
    fn write_locked(&self, st: &mut State, offset: u64, buf: &[u8]) -> Result<()> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let (i, ext) = self.extent_at(pos)?;
            let stop = (ext.start + ext.len).min(end);
            let data = buf
                .get((pos - offset) as usize..(stop - offset) as usize)
                .unwrap_or(&[]);
            let local = pos - ext.start;
            match &ext.kind {
                OutKind::Zero => {
                    return Err(Error::unsupported(format!(
                        "writing at {pos:#x}, in a vmdk ZERO extent"
                    )));
                }
                OutKind::Flat { file, offset } => file.write_at(offset + local, data)?,
                OutKind::Sparse(s) => self.write_sparse(st, i, ext, s, local, data)?,
            }
            pos = stop;
        }
        Ok(())
    }

    /// Zeros (`discard` false) or a return to the parent's content
    /// (`discard` true) of `length` bytes at `offset`.
    fn clear(&self, offset: u64, length: u64, discard: bool) -> Result<()> {
        check_range(self.size, offset, length)?;
        if length == 0 {
            return Ok(());
        }
        let end = offset + length;
        self.state.with_write(|st| {
            self.touch(st)?;
            let mut pos = offset;
            while pos < end {
                let (i, ext) = self.extent_at(pos)?;
                let stop = (ext.start + ext.len).min(end);
                let local = pos - ext.start;
                match &ext.kind {
                    OutKind::Zero => {}
                    OutKind::Flat { file, offset } => {
                        file.write_zeroes(offset + local, stop - pos)?;
                    }
                    OutKind::Sparse(s) => {
                        self.clear_sparse(st, i, ext, s, local, stop - ext.start, discard)?;
                    }
                }
                pos = stop;
            }
            if discard && offset == 0 && length == self.size {
                self.compact(st)?;
            }
            Ok(())
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn clear_sparse(
        &self,
        st: &mut State,
        e: usize,
        ext: &OutExtent,
        s: &SparseOut,
        from: u64,
        to: u64,
        discard: bool,
    ) -> Result<()> {
        let gs = s.header.grain_size();
        let per = u64::from(s.header.gtes_per_gt);
        let zero_flag = s.header.zeroed_grain_gte();
        let parent = self.backing.is_some();
        let mut p = from;
        while p < to {
            let gt = p / gs / per;
            let gt_end = ((gt + 1) * per * gs).min(to);
            if !self.load(st, e, s, gt)? {
                // No table: all of it reads from the parent (or zeros).
                if discard || !parent {
                    p = gt_end;
                    continue;
                }
                if zero_flag {
                    self.ensure_table(st, e, s, gt)?;
                }
            }
            // Whole grains become entries; the ends are written.
            let mut changes: Vec<(u64, u32)> = Vec::new();
            while p < gt_end {
                let g = p / gs;
                let gstart = g * gs;
                let gend = (gstart + gs).min(ext.len);
                let n = gend.min(gt_end) - p;
                let whole = p == gstart && n == gend - gstart;
                let gte = self.gte(st, e, s, g)?;
                let kind = Self::classify(s, gte);
                let target = if discard {
                    match kind {
                        G::Unallocated => None,
                        _ if whole => Some(GTE_UNALLOCATED),
                        _ => {
                            let mut bytes = vec![0u8; n as usize];
                            read_parent(self.backing.as_ref(), ext.start + p, &mut bytes)?;
                            self.write_sparse(st, e, ext, s, p, &bytes)?;
                            None
                        }
                    }
                } else {
                    match kind {
                        G::Zero => None,
                        G::Unallocated if !parent => None,
                        _ if whole && zero_flag => Some(GTE_ZEROED),
                        G::Data(host) => {
                            Self::check_host(s, host, g)?;
                            let at = host + (p - gstart);
                            let zeros = vec![0u8; n as usize];
                            s.file.write_at(at, &zeros)?;
                            None
                        }
                        G::Unallocated => {
                            let zeros = vec![0u8; n as usize];
                            self.write_sparse(st, e, ext, s, p, &zeros)?;
                            None
                        }
                    }
                };
                if let Some(v) = target {
                    if v != gte {
                        changes.push((g % per, v));
                    }
                }
                p += n;
            }
            // Runs of neighbouring entries are written at once.
            let mut i = 0;
            while let Some(&(first, _)) = changes.get(i) {
                let mut j = i + 1;
                while changes
                    .get(j)
                    .is_some_and(|&(idx, _)| idx == first + (j - i) as u64)
                {
                    j += 1;
                }
                let vals: Vec<u32> = changes
                    .get(i..j)
                    .unwrap_or(&[])
                    .iter()
                    .map(|c| c.1)
                    .collect();
                self.set_entries(st, e, s, gt, first, &vals)?;
                i = j;
            }
        }
        Ok(())
    }

    /// After the whole disk was discarded: gives the grains' space back by
    /// cutting each sparse extent file after its metadata.
    fn compact(&self, st: &mut State) -> Result<()> {
        for (e, ext) in self.extents.iter().enumerate() {
            let OutKind::Sparse(s) = &ext.kind else {
                continue;
            };
            let Some(x) = st.ext.get_mut(e) else { continue };
            let table = s.gt_sectors;
            let h = &s.header;
            let mut meta = h.overhead.max(1 + h.descriptor_offset + h.descriptor_size);
            let gd_sectors = (x.gd.len() as u64 * 4).div_ceil(SECTOR);
            meta = meta.max(h.gd_offset + gd_sectors);
            if !x.rgd.is_empty() {
                meta = meta.max(h.rgd_offset + gd_sectors);
            }
            for &t in x.gd.iter().chain(x.rgd.iter()) {
                if t != 0 {
                    meta = meta.max(u64::from(t) + table);
                }
            }
            let cut = meta * SECTOR;
            if cut < s.file.size() {
                s.file.flush()?;
                s.file.set_size(cut)?;
                x.end = cut;
            }
        }
        Ok(())
    }

    fn read_sparse(
        &self,
        st: &mut State,
        e: usize,
        ext: &OutExtent,
        s: &SparseOut,
        local: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let gs = s.header.grain_size();
        let mut done = 0usize;
        while done < buf.len() {
            let p = local + done as u64;
            let g = p / gs;
            let gstart = g * gs;
            let n = ((gstart + gs).min(ext.len) - p).min((buf.len() - done) as u64) as usize;
            let out = buf.get_mut(done..done + n).unwrap_or(&mut []);
            match Self::classify(s, self.gte(st, e, s, g)?) {
                G::Unallocated => read_parent(self.backing.as_ref(), ext.start + p, out)?,
                G::Zero => out.fill(0),
                G::Data(host) => {
                    let at = host + (p - gstart);
                    let avail = s.file.size().saturating_sub(at).min(n as u64) as usize;
                    let (head, tail) = out.split_at_mut(avail);
                    s.file.read_at(at, head)?;
                    tail.fill(0);
                }
            }
            done += n;
        }
        Ok(())
    }
}

impl ReadAt for VmdkWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let end = offset + buf.len() as u64;
        self.state.with_write(|st| {
            let mut pos = offset;
            while pos < end {
                let (i, ext) = self.extent_at(pos)?;
                let stop = (ext.start + ext.len).min(end);
                let out = buf
                    .get_mut((pos - offset) as usize..(stop - offset) as usize)
                    .unwrap_or(&mut []);
                let local = pos - ext.start;
                match &ext.kind {
                    OutKind::Zero => out.fill(0),
                    OutKind::Flat { file, offset } => {
                        let at = offset + local;
                        let avail = file.size().saturating_sub(at).min(out.len() as u64) as usize;
                        let (head, tail) = out.split_at_mut(avail);
                        file.read_at(at, head)?;
                        tail.fill(0);
                    }
                    OutKind::Sparse(s) => self.read_sparse(st, i, ext, s, local, out)?,
                }
                pos = stop;
            }
            Ok(())
        })
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.size, offset, length)?;
        let end = offset + length;
        // The state of the unit at `pos` and where the unit ends.
        let unit = |st: &mut State, pos: u64| -> Result<(Allocation, u64)> {
            let (i, ext) = self.extent_at(pos)?;
            let ext_end = ext.start + ext.len;
            Ok(match &ext.kind {
                OutKind::Zero => (Allocation::Zero, ext_end),
                OutKind::Flat { .. } => (Allocation::Data, ext_end),
                OutKind::Sparse(s) => {
                    let gs = s.header.grain_size();
                    let local = pos - ext.start;
                    let g = local / gs;
                    let state = match Self::classify(s, self.gte(st, i, s, g)?) {
                        G::Unallocated => Allocation::Unallocated,
                        G::Zero => Allocation::Zero,
                        G::Data(_) => Allocation::Data,
                    };
                    (state, (ext.start + (g + 1) * gs).min(ext_end))
                }
            })
        };
        let (state, stop) = self.state.with_write(|st| {
            let (state, first_end) = unit(st, offset)?;
            let stop = extend_run(first_end.min(end), end, state, |pos| {
                Ok(Some(unit(st, pos)?))
            })?;
            Ok((state, stop))
        })?;
        layer_answer(self.backing.as_ref(), offset, stop, state)
    }
}

impl WriteAt for VmdkWriter {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.state.with_write(|st| {
            self.touch(st)?;
            self.write_locked(st, offset, buf)
        })
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        self.clear(offset, length, false)
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.clear(offset, length, true)
    }

    fn flush(&self) -> Result<()> {
        for e in &self.extents {
            match &e.kind {
                OutKind::Sparse(s) => s.file.flush()?,
                OutKind::Flat { file, .. } => file.flush()?,
                OutKind::Zero => {}
            }
        }
        Ok(())
    }
}

/// Creates a new hosted sparse extent file of `capacity` sectors at `path`
/// laid out as qemu-img lays it out (grain tables preallocated, as holes),
/// with `descriptor` embedded when given.
fn create_sparse_extent(
    path: &Path,
    capacity: u64,
    zeroed_grain: bool,
    descriptor: Option<&str>,
) -> Result<()> {
    let l = Layout::new(capacity, false);
    let file = FileDisk::create(path, l.overhead * SECTOR)?;
    file.write_at(0, &l.header(zeroed_grain, false, l.gd_offset))?;
    if let Some(text) = descriptor {
        write_embedded(&file, SECTOR, DESCRIPTOR_SECTORS * SECTOR, text)?;
    }
    file.write_at(l.rgd_offset * SECTOR, &l.directory(l.rgd_offset))?;
    file.write_at(l.gd_offset * SECTOR, &l.directory(l.gd_offset))?;
    Ok(())
}

/// Writes descriptor `text` into the `room` bytes at `at` of a sparse
/// extent, zeros after it.
fn write_embedded(file: &FileDisk, at: u64, room: u64, text: &str) -> Result<()> {
    if text.len() as u64 > room {
        return Err(Error::unsupported(format!(
            "vmdk descriptor of {} bytes does not fit the {room} bytes embedded for it",
            text.len()
        )));
    }
    let mut bytes = vec![0u8; room as usize];
    if let Some(dst) = bytes.get_mut(..text.len()) {
        dst.copy_from_slice(text.as_bytes());
    }
    file.write_at(at, &bytes)
}

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

/// Replaces the file at `path` with `bytes` atomically: a temporary file
/// beside it, synced, renamed over it.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".vdisk-new");
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The descriptor of the VMDK file at `path` (opened as `file`): its
/// text, where it lives, and what detection found.
fn load_descriptor(path: &Path, file: &FileDisk) -> Result<(String, DescPlace, Detected)> {
    let detected = crate::detect(file)?;
    match detected {
        Detected::VmdkSparse => {
            let h = SparseHeader::read(file)?;
            let text = read_embedded_descriptor(file, &h)?.ok_or_else(|| {
                Error::unsupported("writing a vmdk sparse extent without an embedded descriptor")
            })?;
            let text = String::from_utf8(text)
                .map_err(|_| Error::corrupt("vmdk embedded descriptor is not UTF-8", 512))?;
            let (at, room) = h
                .descriptor_range()
                .ok_or_else(|| Error::corrupt("vmdk embedded descriptor", 28))?;
            Ok((text, DescPlace::Embedded { at, room }, detected))
        }
        Detected::VmdkDescriptor => {
            if file.size() > MAX_DESCRIPTOR_FILE {
                return Err(Error::unsupported(format!(
                    "vmdk descriptor file of {} bytes",
                    file.size()
                )));
            }
            let raw = disk_io::read_vec(file, 0, file.size() as usize)?;
            let text = String::from_utf8(raw)
                .map_err(|_| Error::corrupt("vmdk descriptor file is not UTF-8", 0))?;
            Ok((text, DescPlace::File(path.to_path_buf()), detected))
        }
        _ => Err(Error::unsupported(
            "writing this kind of vmdk file (only hosted sparse extents and descriptor files)",
        )),
    }
}

/// Opens a sparse extent file for writing.
fn open_sparse_out(file: FileDisk, name: &str) -> Result<(SparseOut, ExtState)> {
    let header = SparseHeader::read(&file)?;
    if header.compressed() || header.markers() || header.gd_offset == GD_AT_END {
        return Err(Error::unsupported(format!(
            "writing into the compressed (streamOptimized) vmdk extent '{name}': it is written once, front to back"
        )));
    }
    if header.flags & !super::sparse_header::flags::KNOWN != 0 {
        return Err(Error::unsupported(format!(
            "writing vmdk extent '{name}' with unknown flags {:#x}",
            header.flags
        ))
        .at(8));
    }
    let gd = read_directory(&file, &header, header.gd_offset, "grain directory")?;
    let rgd = if header.has_redundant() {
        read_directory(
            &file,
            &header,
            header.rgd_offset,
            "redundant grain directory",
        )?
    } else {
        Vec::new()
    };
    let gt_sectors = (u64::from(header.gtes_per_gt) * 4).div_ceil(SECTOR);
    let end = file.size().div_ceil(SECTOR) * SECTOR;
    let gd_sectors = (gd.len() as u64 * 4).div_ceil(SECTOR);
    let mut meta = header
        .overhead
        .max(
            header
                .descriptor_offset
                .saturating_add(header.descriptor_size),
        )
        .max(header.gd_offset.saturating_add(gd_sectors))
        .max(1);
    if !rgd.is_empty() {
        meta = meta.max(header.rgd_offset.saturating_add(gd_sectors));
    }
    let meta_end = meta.saturating_mul(SECTOR);
    Ok((
        SparseOut {
            file,
            header,
            gt_sectors,
            meta_end,
        },
        ExtState { gd, rgd, end },
    ))
}

/// Opens the VMDK disk at `path` for writing over `backing` (which must
/// be given exactly when it names a parent); also gives its parent's name.
fn open_with(path: &Path, backing: Option<Backing>) -> Result<(VmdkWriter, Option<String>)> {
    let file = FileDisk::open_rw(path)?;
    let (text, desc, detected) = load_descriptor(path, &file)?;
    let descriptor = Descriptor::parse(text.as_bytes(), 0)?;
    let dir = crate::writable::dir_of(path);
    let mut extents = Vec::new();
    let mut states = Vec::new();
    let mut start = 0u64;
    let mut file = Some(file);
    for (k, line) in descriptor.extents.iter().enumerate() {
        if line.sectors == 0 {
            continue;
        }
        let len = line
            .sectors
            .checked_mul(SECTOR)
            .filter(|_| line.sectors <= super::sparse_header::MAX_CAPACITY_SECTORS)
            .ok_or_else(|| Error::corrupt("vmdk extent too large", line.line_at))?;
        let name = line.file.clone().unwrap_or_default();
        let open = |name: &str| -> Result<FileDisk> {
            FileDisk::open_rw(dir.join(name))
                .map_err(|e| e.context(format!("vmdk extent '{name}'")))
        };
        let (kind, state) = match (&line.kind, detected) {
            (ExtentKind::Zero, _) => (OutKind::Zero, ExtState::default()),
            (ExtentKind::Sparse, Detected::VmdkSparse) if k == 0 => {
                let f = file
                    .take()
                    .ok_or_else(|| Error::corrupt("vmdk extent", line.line_at))?;
                let (s, st) = open_sparse_out(f, &name)?;
                (OutKind::Sparse(s), st)
            }
            (ExtentKind::Sparse, Detected::VmdkDescriptor) => {
                let (s, st) = open_sparse_out(open(&name)?, &name)?;
                (OutKind::Sparse(s), st)
            }
            (ExtentKind::Flat, Detected::VmdkDescriptor) => {
                let offset = line
                    .offset
                    .checked_mul(SECTOR)
                    .ok_or_else(|| Error::corrupt("vmdk flat extent offset", line.line_at))?;
                (
                    OutKind::Flat {
                        file: open(&name)?,
                        offset,
                    },
                    ExtState::default(),
                )
            }
            (other, _) => {
                return Err(Error::unsupported(format!(
                    "writing vmdk {} extent '{name}'",
                    other.as_str()
                ))
                .at(line.line_at));
            }
        };
        if let OutKind::Sparse(s) = &kind {
            if line.sectors > s.header.capacity {
                return Err(Error::corrupt(
                    format!(
                        "vmdk extent '{name}' of {} sectors is larger than its file's capacity of {} sectors",
                        line.sectors, s.header.capacity
                    ),
                    line.line_at,
                ));
            }
        }
        extents.push(OutExtent { start, len, kind });
        states.push(state);
        start = start
            .checked_add(len)
            .filter(|s| *s <= super::sparse_header::MAX_CAPACITY_SECTORS * SECTOR)
            .ok_or_else(|| Error::corrupt("vmdk disk too large", line.line_at))?;
    }
    if extents.is_empty() {
        return Err(Error::corrupt("vmdk descriptor names no extent", 0));
    }
    if let Some(OutKind::Flat { .. } | OutKind::Zero) = extents.first().map(|e| &e.kind) {
        if matches!(desc, DescPlace::Embedded { .. }) {
            return Err(Error::corrupt("vmdk embedded descriptor of a flat disk", 0));
        }
    }
    super::check_parent(&descriptor, backing.is_some())?;
    let table_bytes = extents
        .iter()
        .find_map(|e| match &e.kind {
            OutKind::Sparse(s) => Some(s.header.gtes_per_gt as usize * 4),
            _ => None,
        })
        .unwrap_or(2048)
        .max(1);
    let w = VmdkWriter {
        size: start,
        backing,
        extents,
        desc,
        state: Lock::new(State {
            ext: states,
            tables: Lru::default(),
            max_tables: (GT_CACHE_BYTES / table_bytes).max(4),
            text,
            cid: descriptor.cid,
            touched: false,
        }),
    };
    Ok((w, descriptor.parent_file_name_hint))
}

/// Creates a new VMDK disk at `path` as `-o` options say (a
/// streamOptimized one is made by [`super::stream_write::StreamWriter`]);
/// a backing file named there is found relative to the new disk's
/// directory.
pub fn create_image(path: &Path, size: u64, params: &Params) -> Result<VmdkWriter> {
    let backing = match &params.backing_file {
        None => None,
        Some(name) => Some(crate::writable::open_parent_image(path, name)?),
    };
    VmdkWriter::create(path, size, params, backing)
}

/// Opens the VMDK disk at `path` for writing, with its parent (found
/// relative to its directory); also gives the parent's path.
pub fn open_path_with_parent(path: &Path) -> Result<(VmdkWriter, Option<PathBuf>)> {
    let hint = {
        let file = FileDisk::open(path)?;
        super::read_descriptor(&file)?.parent_file_name_hint
    };
    let (backing, parent) = match &hint {
        None => (None, None),
        Some(name) => (
            Some(Box::new(crate::writable::open_parent_image(path, name)?) as Backing),
            Some(crate::writable::dir_of(path).join(name)),
        ),
    };
    let (w, _) = open_with(path, backing)?;
    Ok((w, parent))
}

/// Makes the VMDK disk at `path` name `name` as its parent, recording
/// `parent`'s CID as its `parentCID` (the rest of the descriptor kept).
pub fn set_backing(path: &Path, name: &str, parent: &Image) -> Result<()> {
    if parent.format() != crate::Format::Vmdk {
        return Err(Error::unsupported(format!(
            "a vmdk child of a {} parent (its parent must be a vmdk)",
            parent.format()
        )));
    }
    if name.is_empty() || name.contains(['"', '\n', '\0']) {
        return Err(Error::invalid_input(format!(
            "vmdk parent name '{name}': no quote or newline"
        )));
    }
    let cid = super::read_descriptor(&**parent.file())?
        .cid
        .unwrap_or(NO_PARENT_CID);
    let file = FileDisk::open_rw(path)?;
    let (text, place, _) = load_descriptor(path, &file)?;
    let text = set_descriptor_value(&text, "parentCID", &format!("{cid:08x}"), false, "CID");
    let text = set_descriptor_value(&text, "parentFileNameHint", name, true, "createType");
    match place {
        DescPlace::Embedded { at, room } => {
            write_embedded(&file, at, room, &text)?;
            file.flush()
        }
        DescPlace::File(p) => replace_file(&p, text.as_bytes()),
    }
}

/// Records in the VMDK child at `path` the current CID of the parent its
/// `parentFileNameHint` names (after the parent was written, by
/// `commit`), so that the chain still opens.
pub fn relink(path: &Path) -> Result<()> {
    let file = FileDisk::open_rw(path)?;
    let (text, place, _) = load_descriptor(path, &file)?;
    let Some(hint) = Descriptor::parse(text.as_bytes(), 0)?.parent_file_name_hint else {
        return Ok(());
    };
    let parent = crate::writable::dir_of(path).join(&hint);
    let cid = super::read_descriptor(&FileDisk::open(&parent)?)?
        .cid
        .unwrap_or(NO_PARENT_CID);
    let text = set_descriptor_value(&text, "parentCID", &format!("{cid:08x}"), false, "CID");
    match place {
        DescPlace::Embedded { at, room } => {
            write_embedded(&file, at, room, &text)?;
            file.flush()
        }
        DescPlace::File(p) => replace_file(&p, text.as_bytes()),
    }
}
