//! Writing qcow2 images: creating them (version 2 or 3, any cluster size,
//! zlib or zstd, with a backing file) and a random-access writer over a
//! new or existing image.
//!
//! Clusters are allocated at the end of the file and never reused. Every
//! metadata update is written through in an order that keeps the image
//! consistent after a crash at any point (clusters may leak, nothing is
//! corrupted): refcounts before the references, data before the L2 entry
//! pointing to it, an L2 table before the L1 entry, a new refcount table
//! before the header pointer. Entries of clusters with refcount 1 carry
//! the COPIED flag.
//!
//! With `compress=on` every cluster is compressed on a pool of threads and
//! stored in guest order; the image must then be written front to back
//! (as `qemu-img convert -c` does).

use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use disk_io::sync::Lock;
use disk_io::{
    Allocation, Error, Extent, FileDisk, ReadAt, Result, WriteAt, check_range, clamp_query, is_zero,
};
use miniz_oxide::deflate::core::{
    CompressorOxide, TDEFLFlush, TDEFLStatus, compress, create_comp_flags_from_zip_params,
};

use super::create::Params;
use super::header::{MAX_L1_BYTES, incompatible};
use super::refcount::Refcounts;
use super::{
    COMPRESSED, Compression, Header, L2_CACHE_BYTES, Lru, OFFSET_MASK, ZERO, inflate, new_zstd,
    zstd_frame,
};
use crate::chain::{Backing, extend_run, layer_answer, read_parent};
#[cfg(test)]
use crate::compress::looks_random;
use crate::compress::{Ordered, incompressible, threads};
use crate::options::CreateOptions;

/// L1/L2 entry flag: the cluster's refcount is exactly 1.
const COPIED: u64 = 1 << 63;
/// Header offset of the refcount table offset and cluster count.
const HEADER_REFTABLE: u64 = 48;
/// Header offset of the L1 table offset.
const HEADER_L1: u64 = 40;
/// Header offset of the autoclear feature bits.
const HEADER_AUTOCLEAR: u64 = 88;
/// Memory for compressed clusters in flight (queued, being compressed,
/// waiting for their turn to be written).
const PIPELINE_BYTES: u64 = 64 << 20;

/// The fixed shape of an image.
struct Geometry {
    version: u32,
    cluster_bits: u32,
    size: u64,
    l1_offset: u64,
    compression: Compression,
}

impl Geometry {
    fn cs(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn l2_entries(&self) -> u64 {
        self.cs() / 8
    }
}

/// What an L2 entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Reads from the backing file (or zeros).
    Unallocated,
    /// Reads as zeros; may keep a preallocated host cluster.
    Zero(u64),
    /// Uncompressed data at a host offset; whether COPIED is set.
    Data(u64, bool),
    /// Compressed data: host offset and length.
    Compressed(u64, u64),
}

/// Metadata state, behind one lock.
struct State {
    l1: Vec<u64>,
    rc: Refcounts,
    l2: Lru<Vec<u64>>,
    max_l2: usize,
    /// The last decompressed cluster, by host offset.
    unpacked: Option<(u64, Vec<u8>)>,
}

/// A qcow2 image open for writing, through `&self` from any thread.
///
/// ```no_run
/// use disk_io::{ReadAt, WriteAt};
/// use vdisk_format::qcow2::{create::Params, write::Qcow2Writer};
/// let image = Qcow2Writer::create("new.qcow2".as_ref(), 1 << 30, &Params::default(), None)?;
/// image.write_at(4096, b"hello")?;
/// image.flush()?;
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct Qcow2Writer {
    file: FileDisk,
    backing: Option<Backing>,
    g: Geometry,
    state: Lock<State>,
    pipeline: Option<Mutex<Pipeline>>,
}

impl Qcow2Writer {
    /// Creates a new image at `path` (which must not exist) of `size`
    /// guest bytes; `backing` is the parent disk, given exactly when
    /// `params` names a backing file.
    pub fn create(
        path: &Path,
        size: u64,
        params: &Params,
        backing: Option<Backing>,
    ) -> Result<Self> {
        if params.backing_file.is_some() != backing.is_some() {
            return Err(Error::invalid_input(
                "qcow2 backing disk given without a backing file name, or the other way round",
            ));
        }
        let cs = params.cluster_size();
        let per_l1 = (cs / 8) * cs;
        let l1_size = size.div_ceil(per_l1);
        if l1_size * 8 > MAX_L1_BYTES {
            return Err(Error::invalid_input(format!(
                "a {size}-byte qcow2 image needs an L1 table over 32 MiB with {cs}-byte clusters"
            )));
        }
        let header = params.header_cluster(size, l1_size as u32)?;
        let file = FileDisk::create(path, 3 * cs)?;
        file.write_at(0, &header)?;
        // Cluster 1: the refcount table; cluster 2: its first block.
        file.write_at(cs, &(2 * cs).to_be_bytes())?;
        file.write_at(2 * cs, &[0, 1, 0, 1, 0, 1])?;
        let mut table = vec![0u64; (cs / 8) as usize];
        if let Some(e) = table.first_mut() {
            *e = 2 * cs;
        }
        let mut rc = Refcounts::new(params.cluster_bits, cs, table, 3 * cs);
        let l1_clusters = (l1_size * 8).div_ceil(cs).max(1);
        let l1_offset = rc.alloc(&file, HEADER_REFTABLE, l1_clusters)?;
        file.write_at(HEADER_L1, &l1_offset.to_be_bytes())?;
        let g = Geometry {
            version: params.version,
            cluster_bits: params.cluster_bits,
            size,
            l1_offset,
            compression: params.compression,
        };
        Ok(Qcow2Writer::assemble(
            file,
            backing,
            g,
            vec![0; l1_size as usize],
            rc,
            params.compress,
        ))
    }

    /// Opens the existing image in `file` (opened read-write) for writing;
    /// `backing` must be given exactly when the header names a backing
    /// file. Images with internal snapshots, extended L2 entries, refcounts
    /// other than 16 bits or the dirty bit are refused as `Unsupported`.
    /// Autoclear feature bits are cleared, as the specification asks of a
    /// writer that does not maintain what they guard; nothing else of the
    /// header changes.
    /// Metadata is written with barriers (see [`set_barriers`](Self::set_barriers)).
    pub fn open(file: FileDisk, backing: Option<Backing>) -> Result<Self> {
        let h = Header::read(&file)?;
        if h.backing_file.is_some() != backing.is_some() {
            return Err(Error::invalid_input(
                "qcow2 image opened without its backing file, or with one it does not name",
            ));
        }
        if h.nb_snapshots != 0 {
            return Err(Error::unsupported(
                "writing qcow2 images with internal snapshots",
            ));
        }
        if h.refcount_order != 4 {
            return Err(Error::unsupported(format!(
                "writing qcow2 images with {}-bit refcounts",
                1u32 << h.refcount_order
            )));
        }
        let refused = incompatible::DIRTY
            | incompatible::CORRUPT
            | incompatible::EXTENDED_L2
            | incompatible::EXTERNAL_DATA_FILE;
        if h.incompatible_features & refused != 0 {
            return Err(Error::unsupported(format!(
                "writing qcow2 images with incompatible features {:#x} (dirty, corrupt, external data file or extended L2)",
                h.incompatible_features & refused
            ))
            .at(72));
        }
        if h.version >= 3 && h.autoclear_features != 0 {
            // The specification: a writer clears the autoclear bits whose
            // structures it does not keep up to date (persistent bitmaps,
            // bit 0) before its first write. Every other header byte,
            // compatible bits and unknown extensions included, is kept.
            file.write_at(HEADER_AUTOCLEAR, &0u64.to_be_bytes())?;
            file.flush()?;
        }
        let cs = h.cluster_size();
        let raw = disk_io::read_vec(&file, h.l1_table_offset, h.l1_size as usize * 8)
            .map_err(|e| e.context("qcow2 L1 table"))?;
        let l1 = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let end = file.size().div_ceil(cs) * cs;
        let rc = Refcounts::load(
            &file,
            h.cluster_bits,
            h.refcount_table_offset,
            h.refcount_table_clusters,
            end,
        )?;
        let g = Geometry {
            version: h.version,
            cluster_bits: h.cluster_bits,
            size: h.size,
            l1_offset: h.l1_table_offset,
            compression: h.compression,
        };
        let mut rc = rc;
        rc.set_barriers(&file, true)?;
        Ok(Qcow2Writer::assemble(file, backing, g, l1, rc, false))
    }

    /// Whether metadata is synced in dependency order, so that a power
    /// loss (not only a crash of this process) leaves a consistent image:
    /// on for images opened with [`open`](Self::open), off for new ones
    /// (a conversion's output, as qemu-img's `unsafe` cache mode; leaves
    /// are ordered either way). Costs a sync per 4 MiB allocated and one
    /// per flush.
    pub fn set_barriers(&self, on: bool) -> Result<()> {
        self.state
            .with_write(|st| st.rc.set_barriers(&self.file, on))
    }

    fn assemble(
        file: FileDisk,
        backing: Option<Backing>,
        g: Geometry,
        l1: Vec<u64>,
        rc: Refcounts,
        compress: bool,
    ) -> Self {
        // Few enough tables that the linear cache lookup stays cheap.
        let max_l2 = (L2_CACHE_BYTES / g.cs()).clamp(4, 256) as usize;
        let pipeline = compress.then(|| Mutex::new(Pipeline::start(&g)));
        Qcow2Writer {
            file,
            backing,
            g,
            state: Lock::new(State {
                l1,
                rc,
                l2: Lru::default(),
                max_l2,
                unpacked: None,
            }),
            pipeline,
        }
    }

    /// The file holding the image.
    pub fn file(&self) -> &FileDisk {
        &self.file
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.g.cs()
    }

    /// Writes out everything still buffered (compressed clusters) without
    /// syncing; later writes must then start past the last cluster
    /// written when compressing.
    pub fn finish(&self) -> Result<()> {
        let Some(p) = &self.pipeline else {
            return Ok(());
        };
        let mut p = p.lock().unwrap_or_else(PoisonError::into_inner);
        self.state.with_write(|st| self.finish_pipeline(&mut p, st))
    }

    fn kind(&self, e: u64) -> Kind {
        let cb = self.g.cluster_bits;
        if e & COMPRESSED != 0 {
            let x = 62 - (cb - 8);
            let host = e & ((1u64 << x) - 1);
            let sectors = (e >> x) & ((1u64 << (cb - 8)) - 1);
            return Kind::Compressed(host, (sectors + 1) * 512 - (host & 511));
        }
        let host = e & OFFSET_MASK;
        if self.g.version >= 3 && e & ZERO != 0 {
            return Kind::Zero(host);
        }
        if host == 0 {
            Kind::Unallocated
        } else {
            Kind::Data(host, e & COPIED != 0)
        }
    }

    /// Host offset of the L2 table for L1 entry `l1i`; allocated (as a
    /// zero cluster, then named in the L1 table) when `create` is set.
    fn l2_table(&self, st: &mut State, l1i: u64, create: bool) -> Result<Option<u64>> {
        let cs = self.g.cs();
        let at = self.g.l1_offset + l1i * 8;
        let e =
            st.l1.get(l1i as usize).copied().ok_or_else(|| {
                Error::corrupt(format!("qcow2 L1 index {l1i} past the table"), at)
            })?;
        let off = e & OFFSET_MASK;
        if off != 0 {
            if !off.is_multiple_of(cs) || off.saturating_add(cs) > self.file.size() {
                return Err(Error::corrupt(
                    format!("qcow2 L1 entry {l1i} points to {off:#x}: unaligned or past the end"),
                    at,
                ));
            }
            if e & COPIED == 0 {
                return Err(Error::unsupported(format!(
                    "writing through a shared qcow2 L2 table (L1 entry {l1i} without COPIED)"
                ))
                .at(at));
            }
            return Ok(Some(off));
        }
        if !create {
            return Ok(None);
        }
        let off = st.rc.alloc(&self.file, HEADER_REFTABLE, 1)?;
        let e = off | COPIED;
        self.file.write_at(at, &e.to_be_bytes())?;
        if let Some(slot) = st.l1.get_mut(l1i as usize) {
            *slot = e;
        }
        st.l2
            .insert(off, vec![0; self.g.l2_entries() as usize], st.max_l2);
        Ok(Some(off))
    }

    /// The L2 table at `off`, loaded into the cache.
    fn l2_load<'s>(&self, st: &'s mut State, off: u64) -> Result<&'s mut Vec<u64>> {
        if st.l2.get(off).is_none() {
            let raw = disk_io::read_vec(&self.file, off, self.g.cs() as usize)
                .map_err(|e| e.context("qcow2 L2 table"))?;
            let t = raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            st.l2.insert(off, t, st.max_l2);
        }
        st.l2
            .get_mut(off)
            .ok_or_else(|| Error::corrupt("qcow2 L2 cache", off))
    }

    /// Writes `entries` from index `idx` of the L2 table at `off`.
    fn l2_put(&self, st: &mut State, off: u64, idx: u64, entries: &[u64]) -> Result<()> {
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.file.write_at(off + idx * 8, &bytes)?;
        let t = self.l2_load(st, off)?;
        if let Some(dst) = t.get_mut(idx as usize..idx as usize + entries.len()) {
            dst.copy_from_slice(entries);
        }
        Ok(())
    }

    /// The L2 entry of guest cluster `c` (0 when its table is missing).
    fn entry(&self, st: &mut State, c: u64) -> Result<u64> {
        let l2e = self.g.l2_entries();
        match self.l2_table(st, c / l2e, false)? {
            None => Ok(0),
            Some(off) => Ok(self
                .l2_load(st, off)?
                .get((c % l2e) as usize)
                .copied()
                .unwrap_or(0)),
        }
    }

    /// Refuses a data cluster that is unaligned, in the header cluster or
    /// past the end of the file (a damaged or hostile image).
    fn check_host(&self, host: u64, cluster: u64) -> Result<()> {
        let cs = self.g.cs();
        if host < cs || !host.is_multiple_of(cs) || host >= self.file.size() {
            return Err(Error::corrupt(
                format!(
                    "qcow2 L2 entry of guest cluster {cluster} points to {host:#x}: unaligned, in the header or past the end of the file"
                ),
                host,
            ));
        }
        Ok(())
    }

    /// Drops the references an old entry held (after the entry itself was
    /// replaced on disk); freed clusters are punched out of the file.
    fn release(&self, st: &mut State, old: Kind) -> Result<()> {
        let cs = self.g.cs();
        let (first, n) = match old {
            Kind::Data(host, _) | Kind::Zero(host) if host != 0 => (host / cs, 1),
            Kind::Compressed(host, len) => {
                let start = host & !511;
                let last = (start + len.div_ceil(512) * 512 - 1) / cs;
                (host / cs, last + 1 - host / cs)
            }
            _ => return Ok(()),
        };
        st.rc.free(&self.file, first, n)
    }

    /// Reads the guest bytes at `pos` (within one cluster whose entry is
    /// `kind`) into `buf`.
    fn read_unit(&self, st: &mut State, pos: u64, kind: Kind, buf: &mut [u8]) -> Result<()> {
        let cs = self.g.cs();
        let within = pos % cs;
        match kind {
            Kind::Unallocated => read_parent(self.backing.as_ref(), pos, buf),
            Kind::Zero(_) => {
                buf.fill(0);
                Ok(())
            }
            Kind::Data(host, _) => {
                self.check_host(host, pos / cs)?;
                let host = host + within;
                let avail = self.file.size().saturating_sub(host).min(buf.len() as u64) as usize;
                let (head, tail) = buf.split_at_mut(avail);
                self.file.read_at(host, head)?;
                tail.fill(0);
                Ok(())
            }
            Kind::Compressed(host, len) => {
                if st.unpacked.as_ref().is_none_or(|u| u.0 != host) {
                    let data = self.unpack(host, len)?;
                    st.unpacked = Some((host, data));
                }
                let src = st
                    .unpacked
                    .as_ref()
                    .and_then(|u| u.1.get(within as usize..within as usize + buf.len()))
                    .ok_or_else(|| Error::corrupt("qcow2 compressed cluster", host))?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }

    fn unpack(&self, host: u64, len: u64) -> Result<Vec<u8>> {
        let cs = self.g.cs() as usize;
        if host >= self.file.size() || len > 2 * cs as u64 + 512 {
            return Err(Error::corrupt(
                format!("qcow2 compressed cluster at {host:#x} ({len} bytes) past the end"),
                host,
            ));
        }
        let input = disk_io::read_vec(&self.file, host, len.min(self.file.size() - host) as usize)?;
        let mut out = vec![0u8; cs];
        let n = match self.g.compression {
            Compression::Zlib => inflate(&input, &mut out),
            Compression::Zstd => new_zstd().and_then(|mut d| zstd_frame(&mut d, &input, &mut out)),
        };
        if n != Some(cs) {
            return Err(Error::corrupt(
                format!("qcow2 compressed cluster at {host:#x} does not decompress to {cs} bytes"),
                host,
            ));
        }
        Ok(out)
    }

    /// Guest reads, with the state locked.
    fn read_locked(&self, st: &mut State, offset: u64, buf: &mut [u8]) -> Result<()> {
        let cs = self.g.cs();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let n = ((cs - pos % cs) as usize).min(buf.len() - done);
            let e = self.entry(st, pos / cs)?;
            let kind = self.kind(e);
            self.read_unit(
                st,
                pos,
                kind,
                buf.get_mut(done..done + n).unwrap_or(&mut []),
            )?;
            done += n;
        }
        Ok(())
    }

    /// Guest writes (uncompressed), with the state locked.
    fn write_locked(&self, st: &mut State, offset: u64, buf: &[u8]) -> Result<()> {
        let cs = self.g.cs();
        let l2e = self.g.l2_entries();
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let c = pos / cs;
            let l2 = self
                .l2_table(st, c / l2e, true)?
                .ok_or_else(|| Error::corrupt("qcow2 L2 table", pos))?;
            let table_end = ((c / l2e + 1) * l2e * cs).min(end);
            // Clusters of this table: fresh runs are allocated together.
            while pos < table_end {
                let c = pos / cs;
                let cstart = c * cs;
                let cend = (cstart + cs).min(self.g.size);
                let n = (table_end.min(cend)) - pos;
                let whole = pos == cstart && pos + n == cend;
                let e = self.entry(st, c)?;
                let kind = self.kind(e);
                let data = |from: u64, to: u64| {
                    buf.get((from - offset) as usize..(to - offset) as usize)
                        .unwrap_or(&[])
                };
                match kind {
                    Kind::Data(host, true) => {
                        self.check_host(host, c)?;
                        self.file
                            .write_at(host + (pos - cstart), data(pos, pos + n))?;
                        pos += n;
                    }
                    Kind::Zero(0) | Kind::Unallocated
                        if whole || matches!(kind, Kind::Zero(_)) || self.backing.is_none() =>
                    {
                        // A run of clusters that need no old content.
                        let mut run_end = pos + n;
                        let mut k = 1u64;
                        while run_end < table_end {
                            let next = run_end / cs;
                            let next_end = ((next + 1) * cs).min(self.g.size);
                            let covers = next_end <= table_end;
                            let ne = self.entry(st, next)?;
                            let fresh = match self.kind(ne) {
                                Kind::Zero(0) => true,
                                Kind::Unallocated => covers || self.backing.is_none(),
                                _ => false,
                            };
                            if !fresh {
                                break;
                            }
                            run_end = next_end.min(table_end);
                            k += 1;
                        }
                        let host = st.rc.alloc(&self.file, HEADER_REFTABLE, k)?;
                        self.file
                            .write_at(host + (pos - cstart), data(pos, run_end))?;
                        let entries: Vec<u64> = (0..k).map(|i| (host + i * cs) | COPIED).collect();
                        self.l2_put(st, l2, c % l2e, &entries)?;
                        pos = run_end;
                    }
                    _ => {
                        // Copy on write: old content, new bytes, new cluster.
                        let mut cluster = vec![0u8; (cend - cstart) as usize];
                        self.read_unit(st, cstart, kind, &mut cluster)?;
                        if let Some(dst) =
                            cluster.get_mut((pos - cstart) as usize..(pos - cstart + n) as usize)
                        {
                            dst.copy_from_slice(data(pos, pos + n));
                        }
                        let host = st.rc.alloc(&self.file, HEADER_REFTABLE, 1)?;
                        self.file.write_at(host, &cluster)?;
                        if st.rc.barriers() {
                            // The copied old content must be on disk
                            // before the entry stops pointing to it.
                            self.file.flush()?;
                        }
                        self.l2_put(st, l2, c % l2e, &[host | COPIED])?;
                        self.release(st, kind)?;
                        pos += n;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets whole clusters from `first` (`n` of them) to `zero` entries or
    /// to unallocated ones, releasing what they held.
    fn clear_clusters(&self, st: &mut State, first: u64, n: u64, zero: bool) -> Result<()> {
        let l2e = self.g.l2_entries();
        let mut c = first;
        let end = first + n;
        while c < end {
            let l1i = c / l2e;
            let stop = ((l1i + 1) * l2e).min(end);
            let need_table = zero && self.backing.is_some();
            let Some(l2) = self.l2_table(st, l1i, need_table)? else {
                // No table: everything here already reads as wanted.
                c = stop;
                continue;
            };
            let from = (c % l2e) as usize;
            let to = from + (stop - c) as usize;
            let old: Vec<u64> = self.l2_load(st, l2)?.get(from..to).unwrap_or(&[]).to_vec();
            let new: Vec<u64> = old
                .iter()
                .map(|&e| match (zero, self.kind(e)) {
                    (true, Kind::Zero(0)) => e,
                    (true, Kind::Unallocated) if self.backing.is_none() => e,
                    (true, _) => ZERO,
                    (false, _) => 0,
                })
                .collect();
            if new != old {
                self.l2_put(st, l2, from as u64, &new)?;
                for &e in &old {
                    self.release(st, self.kind(e))?;
                }
            }
            c = stop;
        }
        Ok(())
    }

    /// write_zeroes / discard of uncompressed images.
    fn zero_or_discard(&self, offset: u64, length: u64, discard: bool) -> Result<()> {
        check_range(self.g.size, offset, length)?;
        let cs = self.g.cs();
        let end = offset + length;
        // v2 images have no zero clusters: with a parent, zeros are data.
        let zero_entries = !discard && (self.g.version >= 3 || self.backing.is_some());
        let v2_parent_zero = !discard && self.g.version < 3 && self.backing.is_some();
        self.state.with_write(|st| {
            let mut pos = offset;
            while pos < end {
                let c = pos / cs;
                let cstart = c * cs;
                let cend = (cstart + cs).min(self.g.size);
                let whole_from = if pos == cstart { c } else { c + 1 };
                let whole_to = if end >= self.g.size {
                    end.div_ceil(cs)
                } else {
                    end / cs
                };
                if pos == cstart && whole_to > whole_from && !v2_parent_zero {
                    self.clear_clusters(st, whole_from, whole_to - whole_from, zero_entries)?;
                    pos = (whole_to * cs).min(end);
                    continue;
                }
                let n = cend.min(end) - pos;
                let kind = self.kind(self.entry(st, c)?);
                let already = match kind {
                    Kind::Zero(_) => !discard || self.backing.is_none(),
                    Kind::Unallocated => discard || self.backing.is_none(),
                    _ => false,
                };
                if !already {
                    let mut bytes = vec![0u8; n as usize];
                    if discard {
                        read_parent(self.backing.as_ref(), pos, &mut bytes)?;
                    }
                    self.write_locked(st, pos, &bytes)?;
                }
                pos += n;
            }
            Ok(())
        })
    }

    fn finish_pipeline(&self, p: &mut Pipeline, st: &mut State) -> Result<()> {
        if let Some((c, data)) = p.current.take() {
            p.floor = c + 1;
            self.submit(p, st, c, data)?;
        }
        self.drain(p, st)
    }

    /// Hands one whole cluster to the compressing threads; stores the
    /// clusters that are next in order.
    fn submit(&self, p: &mut Pipeline, st: &mut State, cluster: u64, data: Vec<u8>) -> Result<()> {
        if is_zero(&data) {
            return Ok(());
        }
        let Pipeline { pool, cpos, .. } = p;
        pool.submit(Job { cluster, data }, &mut |d| self.store(cpos, st, d))
    }

    /// Stores every cluster handed to the threads.
    fn drain(&self, p: &mut Pipeline, st: &mut State) -> Result<()> {
        let Pipeline { pool, cpos, .. } = p;
        pool.drain(&mut |d| self.store(cpos, st, d))
    }

    /// Stores one cluster: compressed bytes packed after the previous
    /// compressed cluster (spanning into the next host cluster when that
    /// is the next one allocated), or the plain cluster when compression
    /// saves nothing.
    fn store(&self, cpos: &mut u64, st: &mut State, d: Done) -> Result<()> {
        let cs = self.g.cs();
        let l2e = self.g.l2_entries();
        let l2 = self
            .l2_table(st, d.cluster / l2e, true)?
            .ok_or_else(|| Error::corrupt("qcow2 L2 table", d.cluster * cs))?;
        let idx = d.cluster % l2e;
        if self
            .l2_load(st, l2)?
            .get(idx as usize)
            .copied()
            .unwrap_or(0)
            != 0
        {
            return Err(Error::unsupported(format!(
                "rewriting cluster {} of a compressed qcow2 image",
                d.cluster
            )));
        }
        let Some(z) = d.packed else {
            let host = st.rc.alloc(&self.file, HEADER_REFTABLE, 1)?;
            self.file.write_at(host, &d.data)?;
            return self.l2_put(st, l2, idx, &[host | COPIED]);
        };
        let len = z.len() as u64;
        let room_end = cpos.div_ceil(cs) * cs;
        let mut host = None;
        if !cpos.is_multiple_of(cs) {
            if *cpos + len <= room_end {
                st.rc.add(&self.file, *cpos / cs, 1, 1)?;
                host = Some(*cpos);
            } else {
                let extra = (*cpos + len - room_end).div_ceil(cs);
                let first = st.rc.prepare(&self.file, HEADER_REFTABLE, extra)?;
                if first * cs == room_end {
                    st.rc.take(&self.file, first, extra)?;
                    st.rc.add(&self.file, *cpos / cs, 1, 1)?;
                    host = Some(*cpos);
                }
            }
        }
        let host = match host {
            Some(h) => h,
            None => st.rc.alloc(&self.file, HEADER_REFTABLE, len.div_ceil(cs))?,
        };
        self.file.write_at(host, &z)?;
        *cpos = host + len;
        let x = 62 - (self.g.cluster_bits - 8);
        let sectors = ((host + len - 1) >> 9) - (host >> 9);
        let entry = COMPRESSED | (sectors << x) | host;
        self.l2_put(st, l2, idx, &[entry])
    }

    fn write_compressed(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let Some(p) = &self.pipeline else {
            return Ok(());
        };
        let cs = self.g.cs();
        let mut p = p.lock().unwrap_or_else(PoisonError::into_inner);
        self.state.with_write(|st| {
            let mut done = 0usize;
            while done < buf.len() {
                let pos = offset + done as u64;
                let c = pos / cs;
                let within = (pos % cs) as usize;
                let n = (cs as usize - within).min(buf.len() - done);
                if c < p.floor {
                    return Err(Error::unsupported(format!(
                        "compressed qcow2 output is written front to back: write at {pos:#x} after a later cluster"
                    )));
                }
                if let Some((cur, _)) = &p.current {
                    if *cur != c {
                        self.finish_current(&mut p, st)?;
                    }
                }
                if p.current.is_none() {
                    p.current = Some((c, vec![0u8; cs as usize]));
                }
                if let Some((_, data)) = &mut p.current {
                    if let (Some(dst), Some(src)) =
                        (data.get_mut(within..within + n), buf.get(done..done + n))
                    {
                        dst.copy_from_slice(src);
                    }
                }
                let cluster_end = ((c + 1) * cs).min(self.g.size);
                if pos + n as u64 >= cluster_end {
                    self.finish_current(&mut p, st)?;
                }
                done += n;
            }
            Ok(())
        })
    }

    fn finish_current(&self, p: &mut Pipeline, st: &mut State) -> Result<()> {
        if let Some((c, data)) = p.current.take() {
            p.floor = c + 1;
            self.submit(p, st, c, data)?;
        }
        Ok(())
    }

    /// Zeros in a compressed image: only where nothing was written yet.
    fn zero_compressed(&self, offset: u64, length: u64) -> Result<()> {
        check_range(self.g.size, offset, length)?;
        let Some(p) = &self.pipeline else {
            return Ok(());
        };
        let cs = self.g.cs();
        let mut p = p.lock().unwrap_or_else(PoisonError::into_inner);
        if length == 0 {
            return Ok(());
        }
        if offset / cs < p.floor {
            return Err(Error::unsupported(format!(
                "compressed qcow2 output is written front to back: zeros at {offset:#x} after a later cluster"
            )));
        }
        if let Some((c, data)) = &mut p.current {
            let start = *c * cs;
            let from = offset.max(start);
            let to = (offset + length).min(start + cs);
            if from < to {
                data.get_mut((from - start) as usize..(to - start) as usize)
                    .unwrap_or(&mut [])
                    .fill(0);
            }
        }
        Ok(())
    }
}

impl ReadAt for Qcow2Writer {
    fn size(&self) -> u64 {
        self.g.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.g.size, offset, buf.len() as u64)?;
        let Some(p) = &self.pipeline else {
            return self
                .state
                .with_write(|st| self.read_locked(st, offset, buf));
        };
        let mut p = p.lock().unwrap_or_else(PoisonError::into_inner);
        self.state.with_write(|st| {
            self.drain(&mut p, st)?;
            self.read_locked(st, offset, buf)
        })?;
        // Bytes of the cluster still being filled.
        if let Some((c, data)) = &p.current {
            let start = *c * self.g.cs();
            let end = offset + buf.len() as u64;
            let from = offset.max(start);
            let to = end.min(start + self.g.cs());
            if from < to {
                if let (Some(dst), Some(src)) = (
                    buf.get_mut((from - offset) as usize..(to - offset) as usize),
                    data.get((from - start) as usize..(to - start) as usize),
                ) {
                    dst.copy_from_slice(src);
                }
            }
        }
        Ok(())
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.g.size, offset, length)?;
        let cs = self.g.cs();
        let end = offset + length;
        let state_at = |st: &mut State, pos: u64| -> Result<Allocation> {
            Ok(match self.kind(self.entry(st, pos / cs)?) {
                Kind::Unallocated => Allocation::Unallocated,
                Kind::Zero(_) => Allocation::Zero,
                _ => Allocation::Data,
            })
        };
        let (state, stop) = self.state.with_write(|st| {
            let state = state_at(st, offset)?;
            let first_end = ((offset / cs + 1) * cs).min(end);
            let stop = extend_run(first_end, end, state, |pos| {
                Ok(Some((state_at(st, pos)?, pos + cs)))
            })?;
            Ok((state, stop))
        })?;
        layer_answer(self.backing.as_ref(), offset, stop, state)
    }
}

impl WriteAt for Qcow2Writer {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(self.g.size, offset, buf.len() as u64)?;
        if self.pipeline.is_some() {
            return self.write_compressed(offset, buf);
        }
        self.state
            .with_write(|st| self.write_locked(st, offset, buf))
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        if self.pipeline.is_some() {
            return self.zero_compressed(offset, length);
        }
        self.zero_or_discard(offset, length, false)
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        if self.pipeline.is_some() {
            return self.zero_compressed(offset, length);
        }
        self.zero_or_discard(offset, length, true)
    }

    fn flush(&self) -> Result<()> {
        self.finish()?;
        self.state.with_write(|st| st.rc.sync(&self.file))
    }
}

impl crate::image::Finish for Qcow2Writer {
    fn finish(&self) -> Result<()> {
        Qcow2Writer::finish(self)
    }
}

impl Drop for Qcow2Writer {
    fn drop(&mut self) {
        // Best effort: callers that care call `finish` or `flush` first.
        let _ = self.finish();
        let _ = self.state.with_write(|st| st.rc.close(&self.file));
    }
}

/// A cluster to compress.
struct Job {
    cluster: u64,
    data: Vec<u8>,
}

/// A cluster compressed (`packed` is `None` when that saves nothing).
struct Done {
    cluster: u64,
    data: Vec<u8>,
    packed: Option<Vec<u8>>,
}

/// The compressing threads and the cluster being filled.
struct Pipeline {
    /// The cluster being filled.
    current: Option<(u64, Vec<u8>)>,
    /// Clusters below this one are final.
    floor: u64,
    /// Compresses on every core, results in cluster order.
    pool: Ordered<Job, Done>,
    /// First free byte after the last compressed cluster stored.
    cpos: u64,
}

impl Pipeline {
    fn start(g: &Geometry) -> Pipeline {
        let n = threads();
        let cs = g.cs();
        let max_in_flight = (PIPELINE_BYTES / cs).clamp(4, 4 * n as u64 + 16);
        let compression = g.compression;
        let pool = Ordered::start_with(
            n,
            max_in_flight,
            move || Packer::new(compression, cs),
            move |packer: &mut Packer, job: Job| {
                let packed = packer.pack(&job.data);
                Done {
                    cluster: job.cluster,
                    data: job.data,
                    packed,
                }
            },
        );
        Pipeline {
            current: None,
            floor: 0,
            pool,
            cpos: 0,
        }
    }
}

/// One compressing thread's state, reused from cluster to cluster (a
/// deflate compressor is ~300 KiB of tables to set up, a zstd context
/// more).
struct Packer {
    compression: Compression,
    cs: usize,
    /// Raw deflate, miniz level 2 (greedy parsing): with its 32 KiB window
    /// it compresses text smaller than qemu's zlib at level 6 with the
    /// 4 KiB window (`-12`) qemu uses, at less than half the time.
    deflate: CompressorOxide,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
}

impl Packer {
    fn new(compression: Compression, cs: u64) -> Packer {
        let cs = cs as usize;
        let flags = |level| create_comp_flags_from_zip_params(level, -15, 0);
        Packer {
            compression,
            cs,
            deflate: CompressorOxide::new(flags(2)),
            zstd: match compression {
                // Level 2, not qemu's 3: on 64 KiB inputs a third less
                // time for output under 1% larger (0.5% on text, the same
                // on random data).
                Compression::Zstd => zstd::bulk::Compressor::new(2).ok(),
                Compression::Zlib => None,
            },
            out: vec![0u8; cs],
        }
    }

    /// Compresses one cluster as qemu does (a raw deflate stream, or a
    /// zstd frame); `None` unless the result is smaller than the cluster.
    /// Random-looking clusters are given up on without deflating them
    /// (zstd gives up on them by itself, faster than the samples take).
    fn pack(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        if self.compression == Compression::Zlib && self.incompressible(data) {
            return None;
        }
        // Output space one byte short of the cluster: a stream that does
        // not fit saves nothing, and compressing it stops there.
        let room = self.cs.checked_sub(1)?;
        let out = self.out.get_mut(..room)?;
        let n = match self.compression {
            Compression::Zlib => {
                self.deflate.reset();
                let (status, used, n) = compress(&mut self.deflate, data, out, TDEFLFlush::Finish);
                (status == TDEFLStatus::Done && used == data.len()).then_some(n)?
            }
            Compression::Zstd => self.zstd.as_mut()?.compress_to_buffer(data, out).ok()?,
        };
        Some(out.get(..n)?.to_vec())
    }

    /// True when the cluster looks random (see
    /// [`crate::compress::incompressible`]).
    fn incompressible(&self, data: &[u8]) -> bool {
        incompressible(data)
    }
}

/// Creates a new qcow2 image at `path` as `-o` options say; a backing file
/// named there is found relative to the new image's directory and its
/// format detected from its content (and checked against `backing_fmt`).
pub fn create_image(path: &Path, size: u64, opts: &CreateOptions) -> Result<Qcow2Writer> {
    let mut params = Params::from_options(opts)?;
    let backing = match &params.backing_file {
        None => None,
        Some(name) => {
            let parent = crate::writable::open_parent_image(path, name)?;
            let found = parent.format();
            if let Some(want) = &params.backing_format {
                let want: crate::Format = want.parse()?;
                if want != found {
                    return Err(Error::invalid_input(format!(
                        "backing_fmt={want}, but backing file '{name}' holds {found}"
                    )));
                }
            }
            params.backing_format = Some(found.name().into());
            Some(Box::new(parent) as Backing)
        }
    };
    Qcow2Writer::create(path, size, &params, backing)
}

/// Opens the qcow2 image at `path` for writing, with its backing chain
/// (found relative to the image's directory).
pub fn open_path(path: &Path) -> Result<Qcow2Writer> {
    Ok(open_path_with_parent(path)?.0)
}

/// [`open_path`], also giving the parent's path as resolved from the child.
pub fn open_path_with_parent(path: &Path) -> Result<(Qcow2Writer, Option<std::path::PathBuf>)> {
    let file = FileDisk::open_rw(path)?;
    let header = Header::read(&file)?;
    let (backing, parent) = match &header.backing_file {
        None => (None, None),
        Some(name) => (
            Some(Box::new(crate::writable::open_parent_image(path, name)?) as Backing),
            Some(crate::writable::dir_of(path).join(name)),
        ),
    };
    Ok((Qcow2Writer::open(file, backing)?, parent))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn noise(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn random_samples_are_given_up_on() {
        assert!(looks_random(&noise(4096, 7)));
        // Text, a pattern, zeros: compressible.
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog. "
            .iter()
            .copied()
            .cycle()
            .take(4096)
            .collect();
        assert!(!looks_random(&text));
        assert!(!looks_random(&[0u8; 4096]));
        // Random bytes, but a 256-byte block repeated: LZ77 shrinks it.
        let block = noise(256, 9);
        let repeated: Vec<u8> = block.iter().copied().cycle().take(4096).collect();
        assert!(!looks_random(&repeated));
    }

    #[test]
    fn packer_stores_random_plain_and_compresses_the_rest() {
        for compression in [Compression::Zlib, Compression::Zstd] {
            let mut p = Packer::new(compression, 65536);
            assert!(p.pack(&noise(65536, 3)).is_none());
            // Random except one sample: compressed (the zeros shrink it).
            let mut mixed = noise(65536, 5);
            mixed[32768..32768 + 4096].fill(0);
            let z = p.pack(&mixed).unwrap();
            assert!(z.len() < 65536);
            let text: Vec<u8> = (0..65536u32).map(|i| b'a' + (i % 7) as u8).collect();
            let z = p.pack(&text).unwrap();
            let back = match compression {
                Compression::Zlib => miniz_oxide::inflate::decompress_to_vec(&z).unwrap(),
                Compression::Zstd => zstd::bulk::decompress(&z, 65536).unwrap(),
            };
            assert_eq!(back, text);
        }
    }
}
