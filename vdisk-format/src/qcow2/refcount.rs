//! Cluster allocation and 16-bit refcounts for the qcow2 writer.
//!
//! Clusters are always taken at the end of the file and never reused, so
//! a crash between two metadata writes can only leak clusters: a cluster
//! gets its refcount before anything points to it, a new refcount block is
//! complete before the refcount table names it, and a grown refcount table
//! is complete before the header switches to it.
//!
//! That order is what the file sees; with `barriers` on it also holds
//! across a power loss: clusters are reserved in batches whose refcounts
//! are synced before any of them is used, new refcount blocks and tables
//! are synced before anything names them, and clusters are freed only
//! after the references they lose are synced. Unused reservations are
//! given back when the image is closed.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::{Error, FileDisk, ReadAt, Result, WriteAt};

use super::Lru;
use super::OFFSET_MASK;

/// Largest refcount table kept (qemu's limit too).
pub(crate) const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Memory the refcount block cache may use.
const REFBLOCK_CACHE_BYTES: u64 = 4 << 20;
/// Clusters reserved at once with barriers on, in bytes.
const RESERVE_BYTES: u64 = 4 << 20;
/// Deferred frees kept before they are synced and applied.
const MAX_PENDING: usize = 4096;

/// The refcount structures of an image open for writing.
pub(crate) struct Refcounts {
    cluster_bits: u32,
    /// File offset of the refcount table.
    pub table_offset: u64,
    /// The refcount table (host offsets of refcount blocks, 0 = none).
    pub table: Vec<u64>,
    /// First byte past the last allocated cluster (cluster aligned).
    pub end: u64,
    blocks: Lru<Vec<u16>>,
    max_blocks: usize,
    /// Sync metadata in dependency order (power-loss safety).
    barriers: bool,
    /// With barriers: `reserved_from..end` holds clusters with refcount 1
    /// that nothing uses yet.
    reserved_from: u64,
    /// With barriers: cluster ranges to free once references are synced.
    pending: Vec<(u64, u64)>,
}

impl Refcounts {
    /// The refcount state read from an image: table at `table_offset` of
    /// `table_clusters` clusters, allocation continuing at `end`.
    pub fn load(
        file: &FileDisk,
        cluster_bits: u32,
        table_offset: u64,
        table_clusters: u32,
        end: u64,
    ) -> Result<Self> {
        let cs = 1u64 << cluster_bits;
        let bytes = u64::from(table_clusters) * cs;
        if bytes == 0 || bytes > MAX_REFTABLE_BYTES || !table_offset.is_multiple_of(cs) {
            return Err(Error::corrupt(
                format!(
                    "qcow2 refcount table at {table_offset:#x} ({table_clusters} clusters) is empty, unaligned or larger than 8 MiB"
                ),
                48,
            ));
        }
        let raw = disk_io::read_vec(file, table_offset, bytes as usize)
            .map_err(|e| e.context("qcow2 refcount table"))?;
        let table = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(Refcounts::new(cluster_bits, table_offset, table, end))
    }

    /// Refcounts over an in-memory table.
    pub fn new(cluster_bits: u32, table_offset: u64, table: Vec<u64>, end: u64) -> Self {
        let cs = 1u64 << cluster_bits;
        Refcounts {
            cluster_bits,
            table_offset,
            table,
            end,
            blocks: Lru::default(),
            max_blocks: (REFBLOCK_CACHE_BYTES / cs).clamp(4, 256) as usize,
            barriers: false,
            reserved_from: end,
            pending: Vec::new(),
        }
    }

    fn cs(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Refcounts per block.
    fn per_block(&self) -> u64 {
        self.cs() / 2
    }

    /// Host offset of refcount block `index`, when it exists.
    fn block_offset(&self, index: u64) -> Option<u64> {
        let e = self.table.get(usize::try_from(index).ok()?).copied()? & OFFSET_MASK;
        (e != 0).then_some(e)
    }

    /// Runs `f` on refcount block `index` (loaded into the cache).
    fn with_block<R>(
        &mut self,
        file: &FileDisk,
        index: u64,
        f: impl FnOnce(&mut Vec<u16>) -> R,
    ) -> Result<(u64, R)> {
        let Some(offset) = self.block_offset(index) else {
            return Err(Error::corrupt(
                format!("qcow2 refcount block {index} missing"),
                self.table_offset + index * 8,
            ));
        };
        let cs = self.cs();
        if self.blocks.get(offset).is_none() {
            if offset < cs || !offset.is_multiple_of(cs) || offset.saturating_add(cs) > file.size()
            {
                return Err(Error::corrupt(
                    format!(
                        "qcow2 refcount block {index} at {offset:#x} is unaligned, in the header or past the end of the file"
                    ),
                    self.table_offset + index * 8,
                ));
            }
            let raw = disk_io::read_vec(file, offset, cs as usize)?;
            let block = raw
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes(c.try_into().unwrap_or([0; 2])))
                .collect();
            self.blocks.insert(offset, block, self.max_blocks);
        }
        let entry = self
            .blocks
            .get_mut(offset)
            .ok_or_else(|| Error::corrupt("qcow2 refcount block cache", offset))?;
        Ok((offset, f(entry)))
    }

    /// Applies `f` to the refcounts of `n` clusters from `first` (their
    /// blocks must exist) and writes the changed entries through.
    fn update(
        &mut self,
        file: &FileDisk,
        first: u64,
        n: u64,
        f: &dyn Fn(u16, u64) -> Result<u16>,
    ) -> Result<()> {
        let pb = self.per_block();
        let mut c = first;
        let end = first + n;
        while c < end {
            let index = c / pb;
            let from = (c % pb) as usize;
            let to = (end.min((index + 1) * pb) - index * pb) as usize;
            let (offset, bytes) = self.with_block(file, index, |b| {
                let mut bytes = Vec::with_capacity((to - from) * 2);
                for (i, r) in b
                    .get_mut(from..to)
                    .unwrap_or(&mut [])
                    .iter_mut()
                    .enumerate()
                {
                    *r = f(*r, c + i as u64)?;
                    bytes.extend_from_slice(&r.to_be_bytes());
                }
                Ok::<_, Error>(bytes)
            })?;
            file.write_at(offset + from as u64 * 2, &bytes?)?;
            c = index * pb + to as u64;
        }
        Ok(())
    }

    /// Adds `delta` (+1 or -1) to the refcounts of `n` clusters from
    /// `first`; returns the clusters whose refcount dropped to zero.
    pub fn add(&mut self, file: &FileDisk, first: u64, n: u64, delta: i32) -> Result<Vec<u64>> {
        let cs = self.cs();
        let freed = core::cell::RefCell::new(Vec::new());
        self.update(file, first, n, &|r, c| {
            let v = i32::from(r) + delta;
            let v = u16::try_from(v).map_err(|_| {
                Error::corrupt(
                    format!("qcow2 refcount of cluster at {:#x} would be {v}", c * cs),
                    c * cs,
                )
            })?;
            if v == 0 {
                freed.borrow_mut().push(c);
            }
            Ok(v)
        })?;
        Ok(freed.into_inner())
    }

    /// Ensures refcount blocks exist for `n` clusters at the end of the
    /// file, allocating blocks (and growing the table) as needed; returns
    /// the first of those clusters, which [`take`](Self::take) then takes.
    pub fn prepare(&mut self, file: &FileDisk, header_at: u64, n: u64) -> Result<u64> {
        let cs = self.cs();
        let pb = self.per_block();
        // Each round adds a block or grows the table; bounded.
        for _ in 0..64 {
            let first = self.end / cs;
            let last = first + n.max(1);
            let missing = (first / pb..=(last - 1) / pb).find(|&i| self.block_offset(i).is_none());
            let Some(index) = missing else {
                return Ok(first);
            };
            if (index as usize) < self.table.len() {
                self.new_block(file, index)?;
            } else {
                self.grow_table(file, header_at, (last - 1) / pb + 1)?;
            }
        }
        Err(Error::corrupt(
            "qcow2 refcount structures did not converge while allocating",
            self.table_offset,
        ))
    }

    /// Takes `n` clusters from `first` (returned by `prepare`): extends
    /// the file and sets their refcounts to 1.
    pub fn take(&mut self, file: &FileDisk, first: u64, n: u64) -> Result<u64> {
        let cs = self.cs();
        let end = (first + n) * cs;
        if end > file.size() {
            file.set_size(end)?;
        }
        self.update(file, first, n, &|_, _| Ok(1))?;
        self.end = self.end.max(end);
        Ok(first * cs)
    }

    /// Allocates `n` contiguous clusters at the end of the file.
    pub fn alloc(&mut self, file: &FileDisk, header_at: u64, n: u64) -> Result<u64> {
        let cs = self.cs();
        if !self.barriers {
            let first = self.prepare(file, header_at, n)?;
            return self.take(file, first, n);
        }
        if self.end - self.reserved_from >= n * cs {
            let at = self.reserved_from;
            self.reserved_from += n * cs;
            return Ok(at);
        }
        self.give_back(file)?;
        let batch = n.max(RESERVE_BYTES / cs);
        let first = self.prepare(file, header_at, batch)?;
        let at = self.take(file, first, batch)?;
        file.flush()?;
        self.reserved_from = at + n * cs;
        Ok(at)
    }

    /// Frees the unused reserved clusters and trims them off the file.
    fn give_back(&mut self, file: &FileDisk) -> Result<()> {
        let cs = self.cs();
        if self.reserved_from < self.end {
            let first = self.reserved_from / cs;
            self.add(file, first, (self.end - self.reserved_from) / cs, -1)?;
            if file.size() == self.end {
                file.set_size(self.reserved_from)?;
            }
            self.end = self.reserved_from;
        }
        self.reserved_from = self.end;
        Ok(())
    }

    /// Frees `n` clusters from `first` whose references are gone: at once
    /// without barriers, after the next sync with them.
    pub fn free(&mut self, file: &FileDisk, first: u64, n: u64) -> Result<()> {
        if !self.barriers {
            let freed = self.add(file, first, n, -1)?;
            punch(file, self.cs(), &freed);
            return Ok(());
        }
        self.pending.push((first, n));
        if self.pending.len() >= MAX_PENDING {
            self.sync(file)?;
        }
        Ok(())
    }

    /// Syncs the file, then applies the deferred frees.
    pub fn sync(&mut self, file: &FileDisk) -> Result<()> {
        file.flush()?;
        for (first, n) in core::mem::take(&mut self.pending) {
            let freed = self.add(file, first, n, -1)?;
            punch(file, self.cs(), &freed);
        }
        Ok(())
    }

    /// True when metadata is synced in dependency order.
    pub fn barriers(&self) -> bool {
        self.barriers
    }

    /// Turns barriers on or off (giving back a reservation first).
    pub fn set_barriers(&mut self, file: &FileDisk, on: bool) -> Result<()> {
        self.close(file)?;
        self.barriers = on;
        self.reserved_from = self.end;
        Ok(())
    }

    /// Applies deferred frees and gives back the reservation (on close).
    pub fn close(&mut self, file: &FileDisk) -> Result<()> {
        if self.barriers {
            self.sync(file)?;
            self.give_back(file)?;
        }
        Ok(())
    }

    /// A new refcount block `index` at the end of the file (describing
    /// itself when it covers its own cluster), named in the table last.
    fn new_block(&mut self, file: &FileDisk, index: u64) -> Result<()> {
        let cs = self.cs();
        let pb = self.per_block();
        let at = self.end;
        let cluster = at / cs;
        file.set_size(at + cs)?;
        self.end = at + cs;
        let mut block = vec![0u16; pb as usize];
        if cluster / pb == index {
            if let Some(r) = block.get_mut((cluster % pb) as usize) {
                *r = 1;
            }
        } else {
            self.update(file, cluster, 1, &|_, _| Ok(1))?;
        }
        let bytes: Vec<u8> = block.iter().flat_map(|r| r.to_be_bytes()).collect();
        file.write_at(at, &bytes)?;
        if self.barriers {
            file.flush()?;
        }
        file.write_at(self.table_offset + index * 8, &at.to_be_bytes())?;
        if let Some(e) = self.table.get_mut(index as usize) {
            *e = at;
        }
        self.blocks.insert(at, block, self.max_blocks);
        Ok(())
    }

    /// Moves the refcount table to a larger one at the end of the file
    /// holding at least `needed` entries: new blocks for the new clusters
    /// first, then the table, then the header points to it; the old table
    /// is freed last.
    fn grow_table(&mut self, file: &FileDisk, header_at: u64, needed: u64) -> Result<()> {
        let cs = self.cs();
        let pb = self.per_block();
        let per_cluster = cs / 8;
        let old_clusters = self.table.len() as u64 / per_cluster;
        let mut clusters = (old_clusters * 2).max((needed + 2).div_ceil(per_cluster));
        let start = self.end / cs;
        // New blocks follow the table; find how many the region needs.
        let (mut new_blocks, mut region_end);
        loop {
            new_blocks = Vec::new();
            for _ in 0..64 {
                region_end = start + clusters + new_blocks.len() as u64;
                let want: Vec<u64> = (start / pb..=(region_end - 1) / pb)
                    .filter(|&i| self.block_offset(i).is_none())
                    .collect();
                if want.len() == new_blocks.len() {
                    break;
                }
                new_blocks = want;
            }
            region_end = start + clusters + new_blocks.len() as u64;
            let max_index = new_blocks.last().copied().unwrap_or(0).max(needed);
            if clusters * cs > MAX_REFTABLE_BYTES {
                return Err(Error::unsupported(
                    "qcow2 image too large: its refcount table would exceed 8 MiB",
                ));
            }
            if max_index < clusters * per_cluster {
                break;
            }
            clusters *= 2;
        }
        file.set_size(region_end * cs)?;
        let mut table = self.table.clone();
        table.resize((clusters * per_cluster) as usize, 0);
        // Region clusters covered by existing blocks get their refcounts now.
        for index in start / pb..=(region_end - 1) / pb {
            if self.block_offset(index).is_some() {
                let from = (index * pb).max(start);
                let to = ((index + 1) * pb).min(region_end);
                self.update(file, from, to - from, &|_, _| Ok(1))?;
            }
        }
        let first_block = start + clusters;
        for (k, &index) in new_blocks.iter().enumerate() {
            let at = (first_block + k as u64) * cs;
            let mut block = vec![0u16; pb as usize];
            for c in (index * pb).max(start)..((index + 1) * pb).min(region_end) {
                if let Some(r) = block.get_mut((c - index * pb) as usize) {
                    *r = 1;
                }
            }
            let bytes: Vec<u8> = block.iter().flat_map(|r| r.to_be_bytes()).collect();
            file.write_at(at, &bytes)?;
            if let Some(e) = table.get_mut(index as usize) {
                *e = at;
            }
            self.blocks.insert(at, block, self.max_blocks);
        }
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        let table_at = start * cs;
        file.write_at(table_at, &bytes)?;
        if self.barriers {
            file.flush()?;
        }
        let ptr: Vec<u8> = table_at
            .to_be_bytes()
            .into_iter()
            .chain((clusters as u32).to_be_bytes())
            .collect();
        file.write_at(header_at, &ptr)?;
        let old_at = self.table_offset;
        self.table = table;
        self.table_offset = table_at;
        self.end = region_end * cs;
        self.free(file, old_at / cs, old_clusters)
    }
}

/// Releases the storage of freed clusters (best effort: they are never
/// reused, so a hole that could not be punched only costs space).
pub(crate) fn punch(file: &FileDisk, cs: u64, clusters: &[u64]) {
    for &c in clusters {
        let at = c * cs;
        if at + cs <= file.size() {
            let _ = file.write_zeroes(at, cs);
        }
    }
}
