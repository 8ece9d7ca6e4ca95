//! The file allocation table (specification section 4): 12-bit packed,
//! 16-bit or 32-bit (28 bits used) entries, cluster chains with bounds
//! checks and cycle detection, a bounded cache of FAT blocks and the map of
//! used clusters.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use disk_io::sync::Lock;
use disk_io::{Error, ErrorKind, ReadAt, Result};

use crate::FatType;
use crate::boot_sector::BootSector;

/// What a FAT entry says about the cluster it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatEntry {
    /// The cluster is free.
    Free,
    /// The chain continues at this cluster (not yet range-checked).
    Next(u32),
    /// The cluster is marked bad.
    Bad,
    /// The chain ends here.
    End,
}

/// Bytes of one cached FAT block.
const BLOCK: u64 = 4096;
/// FAT blocks kept in memory (256 KiB).
const CACHE_BLOCKS: usize = 64;

struct Cache {
    blocks: Vec<(u64, u64, Vec<u8>)>,
    clock: u64,
}

/// One FAT of a volume, read through a small cache.
pub struct Fat {
    fat_type: FatType,
    offset: u64,
    bytes: u64,
    cluster_count: u32,
    cache: Lock<Cache>,
}

impl Fat {
    /// The active FAT of the volume `boot` describes.
    pub fn new(boot: &BootSector) -> Self {
        Fat {
            fat_type: boot.fat_type,
            offset: boot.fat_offset(boot.active_fat),
            bytes: boot.fat_bytes(),
            cluster_count: boot.cluster_count,
            cache: Lock::new(Cache {
                blocks: Vec::new(),
                clock: 0,
            }),
        }
    }

    /// The highest valid cluster number.
    pub fn last_cluster(&self) -> u32 {
        self.cluster_count + 1
    }

    /// Byte offset (in the volume) of the FAT entry of `cluster`.
    pub fn entry_offset(&self, cluster: u32) -> u64 {
        let c = u64::from(cluster);
        self.offset
            + match self.fat_type {
                FatType::Fat12 => c + c / 2,
                FatType::Fat16 => c * 2,
                FatType::Fat32 => c * 4,
            }
    }

    /// Copies FAT bytes at `at` into `out`; the range lies in one block.
    fn read_in_block<D: ReadAt + ?Sized>(&self, disk: &D, at: u64, out: &mut [u8]) -> Result<()> {
        let rel = at - self.offset;
        let block = rel / BLOCK;
        let within = (rel % BLOCK) as usize;
        let copy = |buf: &[u8], out: &mut [u8]| -> Result<()> {
            let src = buf
                .get(within..within + out.len())
                .ok_or_else(|| short(at))?;
            out.copy_from_slice(src);
            Ok(())
        };
        self.cache.with_write(|cache| {
            cache.clock += 1;
            let clock = cache.clock;
            // Most lookups hit the block used last: it is kept at the end.
            if let Some(i) = cache.blocks.iter().rposition(|b| b.0 == block) {
                let last = cache.blocks.len() - 1;
                cache.blocks.swap(i, last);
                if let Some(entry) = cache.blocks.last_mut() {
                    entry.1 = clock;
                    return copy(&entry.2, out);
                }
            }
            let start = block * BLOCK;
            let len = BLOCK.min(self.bytes - start) as usize;
            let mut buf = vec![0u8; len];
            disk.read_at(self.offset + start, &mut buf).map_err(|e| {
                e.context(format!("FAT block at offset {:#x}", self.offset + start))
            })?;
            copy(&buf, out)?;
            if cache.blocks.len() >= CACHE_BLOCKS {
                if let Some(oldest) =
                    (0..cache.blocks.len()).min_by_key(|&i| cache.blocks.get(i).map_or(0, |b| b.1))
                {
                    cache.blocks.swap_remove(oldest);
                }
            }
            cache.blocks.push((block, clock, buf));
            Ok(())
        })
    }

    /// The raw value of the FAT entry of `cluster` (0 to the last cluster).
    pub fn raw_entry<D: ReadAt + ?Sized>(&self, disk: &D, cluster: u32) -> Result<u32> {
        if cluster > self.last_cluster() {
            return Err(Error::invalid_input(format!(
                "cluster {cluster} is past the last cluster {}",
                self.last_cluster()
            )));
        }
        let at = self.entry_offset(cluster);
        let width = match self.fat_type {
            FatType::Fat12 | FatType::Fat16 => 2,
            FatType::Fat32 => 4,
        };
        let mut raw = [0u8; 4];
        let out = raw.get_mut(..width).unwrap_or(&mut []);
        let rel = at - self.offset;
        if rel % BLOCK + width as u64 <= BLOCK {
            self.read_in_block(disk, at, out)?;
        } else {
            // A packed 12-bit entry straddling two blocks.
            for (i, b) in out.iter_mut().enumerate() {
                self.read_in_block(disk, at + i as u64, core::slice::from_mut(b))?;
            }
        }
        let v = u32::from_le_bytes(raw);
        Ok(match self.fat_type {
            FatType::Fat12 if cluster % 2 == 1 => v >> 4,
            FatType::Fat12 => v & 0xfff,
            FatType::Fat16 => v,
            FatType::Fat32 => v & 0x0fff_ffff,
        })
    }

    /// Classifies a raw entry value.
    pub fn classify(&self, value: u32) -> FatEntry {
        let (bad, end) = match self.fat_type {
            FatType::Fat12 => (0xff7, 0xff8),
            FatType::Fat16 => (0xfff7, 0xfff8),
            FatType::Fat32 => (0x0fff_fff7, 0x0fff_fff8),
        };
        match value {
            0 => FatEntry::Free,
            v if v >= end => FatEntry::End,
            v if v == bad => FatEntry::Bad,
            v => FatEntry::Next(v),
        }
    }

    /// The entry of `cluster`.
    pub fn entry<D: ReadAt + ?Sized>(&self, disk: &D, cluster: u32) -> Result<FatEntry> {
        Ok(self.classify(self.raw_entry(disk, cluster)?))
    }

    /// The cluster after `cluster` in its chain, `None` at the end; any
    /// other entry (free, bad, reserved, past the last cluster) is an
    /// error naming the entry and its offset.
    pub fn next<D: ReadAt + ?Sized>(&self, disk: &D, cluster: u32) -> Result<Option<u32>> {
        let at = self.entry_offset(cluster);
        let name = self.fat_type.name();
        match self.entry(disk, cluster)? {
            FatEntry::End => Ok(None),
            FatEntry::Next(n) if (2..=self.last_cluster()).contains(&n) => Ok(Some(n)),
            FatEntry::Next(n) => Err(Error::corrupt(
                format!(
                    "{name} FAT entry of cluster {cluster}: the chain points to cluster {n}, past the last cluster {}",
                    self.last_cluster()
                ),
                at,
            )),
            FatEntry::Free => Err(Error::corrupt(
                format!(
                    "{name} FAT entry of cluster {cluster}: the chain runs into a free cluster"
                ),
                at,
            )),
            FatEntry::Bad => Err(Error::corrupt(
                format!("{name} FAT entry of cluster {cluster}: the chain runs into a bad cluster"),
                at,
            )),
        }
    }

    /// Follows the chain starting at `first`, with bounds checks and cycle
    /// detection.
    pub fn chain<'a, D: ReadAt + ?Sized>(&'a self, disk: &'a D, first: u32) -> Chain<'a, D> {
        Chain {
            fat: self,
            disk,
            next: Some(first),
            started: false,
            steps: 0,
            tortoise: first,
            power: 1,
            lambda: 0,
        }
    }

    /// Runs of used clusters (any non-free FAT entry: allocated, bad or
    /// end of chain), as ranges of cluster numbers in increasing order;
    /// what `fsck.fat` counts as used.
    pub fn used_ranges<D: ReadAt + ?Sized>(&self, disk: &D) -> Result<Vec<Range<u32>>> {
        let mut ranges: Vec<Range<u32>> = Vec::new();
        let last = self.last_cluster();
        // Read the FAT in big chunks straight from the disk, not the cache.
        const CHUNK_ENTRIES: u32 = 16 * 1024;
        let mut first = 2u32;
        while first <= last {
            let end = first.saturating_add(CHUNK_ENTRIES).min(last + 1);
            let start_at = self.entry_offset(first);
            let end_at = self.entry_offset(end - 1)
                + if self.fat_type == FatType::Fat32 {
                    4
                } else {
                    2
                };
            let len = usize::try_from(end_at - start_at)
                .map_err(|_| Error::invalid_input("FAT chunk too large"))?;
            let mut buf = vec![0u8; len];
            disk.read_at(start_at, &mut buf)
                .map_err(|e| e.context(format!("{} FAT", self.fat_type.name())))?;
            for c in first..end {
                let rel = (self.entry_offset(c) - start_at) as usize;
                let b = |i: usize| buf.get(rel + i).copied().map_or(0, u32::from);
                let value = match self.fat_type {
                    FatType::Fat12 => {
                        let v = b(0) | b(1) << 8;
                        if c % 2 == 1 { v >> 4 } else { v & 0xfff }
                    }
                    FatType::Fat16 => b(0) | b(1) << 8,
                    FatType::Fat32 => (b(0) | b(1) << 8 | b(2) << 16 | b(3) << 24) & 0x0fff_ffff,
                };
                if value != 0 {
                    match ranges.last_mut() {
                        Some(r) if r.end == c => r.end = c + 1,
                        _ => ranges.push(c..c + 1),
                    }
                }
            }
            first = end;
        }
        Ok(ranges)
    }
}

fn short(at: u64) -> Error {
    Error::corrupt("FAT block shorter than expected", at)
}

/// The clusters of one chain, in order. Yields an error (and then stops)
/// on a bad link or a cycle; a cycle is found by Brent's algorithm within
/// a few passes over it, whatever the volume's size.
pub struct Chain<'a, D: ReadAt + ?Sized> {
    fat: &'a Fat,
    disk: &'a D,
    next: Option<u32>,
    started: bool,
    steps: u64,
    tortoise: u32,
    power: u64,
    lambda: u64,
}

impl<D: ReadAt + ?Sized> Chain<'_, D> {
    fn step(&mut self) -> Result<Option<u32>> {
        let Some(current) = self.next else {
            return Ok(None);
        };
        if !self.started {
            self.started = true;
            if !(2..=self.fat.last_cluster()).contains(&current) {
                self.next = None;
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "cluster chain starts at cluster {current}, outside 2..={}",
                        self.fat.last_cluster()
                    ),
                ));
            }
            return Ok(Some(current));
        }
        let next = self.fat.next(self.disk, current)?;
        self.steps += 1;
        if let Some(n) = next {
            // Brent: the tortoise jumps to the hare at powers of two.
            if n == self.tortoise || self.steps > u64::from(self.fat.cluster_count) {
                return Err(Error::corrupt(
                    format!(
                        "{} FAT entry of cluster {current}: the cluster chain loops back to cluster {n}",
                        self.fat.fat_type.name()
                    ),
                    self.fat.entry_offset(current),
                ));
            }
            self.lambda += 1;
            if self.lambda == self.power {
                self.tortoise = n;
                self.power *= 2;
                self.lambda = 0;
            }
        }
        self.next = next;
        Ok(next)
    }
}

impl<D: ReadAt + ?Sized> Iterator for Chain<'_, D> {
    type Item = Result<u32>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => {
                self.next = None;
                Some(Err(e))
            }
        }
    }
}
