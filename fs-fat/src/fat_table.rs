//! The FAT of a volume open for writing, held in memory in its on-disk
//! encoding (12-bit packed, 16-bit or 32-bit entries whose top 4 bits are
//! kept), with a bitmap of changed 4 KiB blocks, the free count and the
//! next-free hint; chains checked for bounds and loops; contiguous
//! allocation.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::{Error, Result};

use crate::FatType;
use crate::boot_sector::BootSector;

/// Bytes of one dirty-tracking block of the FAT.
pub(crate) const FAT_BLOCK: usize = 4096;

/// The FAT, held in memory in its on-disk encoding.
pub(crate) struct FatTable {
    pub(crate) fat_type: FatType,
    pub(crate) bytes: Vec<u8>,
    pub(crate) dirty: Vec<u64>,
    /// Highest cluster number.
    pub(crate) last: u32,
    pub(crate) free: u32,
    pub(crate) next_free: u32,
}

impl FatTable {
    pub(crate) fn at(&self, c: u32) -> usize {
        let c = c as usize;
        match self.fat_type {
            FatType::Fat12 => c + c / 2,
            FatType::Fat16 => c * 2,
            FatType::Fat32 => c * 4,
        }
    }

    pub(crate) fn get(&self, c: u32) -> u32 {
        let at = self.at(c);
        let b = |i: usize| self.bytes.get(at + i).copied().map_or(0, u32::from);
        match self.fat_type {
            FatType::Fat12 => {
                let v = b(0) | b(1) << 8;
                if c % 2 == 1 { v >> 4 } else { v & 0xfff }
            }
            FatType::Fat16 => b(0) | b(1) << 8,
            FatType::Fat32 => (b(0) | b(1) << 8 | b(2) << 16 | b(3) << 24) & 0x0fff_ffff,
        }
    }

    pub(crate) fn set(&mut self, c: u32, v: u32) {
        let at = self.at(c);
        let width = if self.fat_type == FatType::Fat32 {
            4
        } else {
            2
        };
        let Some(slot) = self.bytes.get_mut(at..at + width) else {
            return;
        };
        let old = slot
            .iter()
            .rev()
            .fold(0u32, |acc, &b| acc << 8 | u32::from(b));
        let new = match self.fat_type {
            FatType::Fat12 if c % 2 == 1 => old & 0x000f | (v & 0xfff) << 4,
            FatType::Fat12 => old & 0xf000 | v & 0xfff,
            FatType::Fat16 => v & 0xffff,
            FatType::Fat32 => old & 0xf000_0000 | v & 0x0fff_ffff,
        };
        for (i, b) in slot.iter_mut().enumerate() {
            *b = (new >> (8 * i)) as u8;
        }
        for block in [at / FAT_BLOCK, (at + width - 1) / FAT_BLOCK] {
            if let Some(word) = self.dirty.get_mut(block / 64) {
                *word |= 1 << (block % 64);
            }
        }
    }

    pub(crate) fn eoc(&self) -> u32 {
        match self.fat_type {
            FatType::Fat12 => 0xfff,
            FatType::Fat16 => 0xffff,
            FatType::Fat32 => 0x0fff_ffff,
        }
    }

    pub(crate) fn is_free(&self, c: u32) -> bool {
        (2..=self.last).contains(&c) && self.get(c) == 0
    }

    pub(crate) fn entry_offset(&self, boot: &BootSector, c: u32) -> u64 {
        boot.fat_offset(boot.active_fat) + self.at(c) as u64
    }

    /// The cluster after `c`, `None` at the end of the chain.
    pub(crate) fn next(&self, boot: &BootSector, c: u32) -> Result<Option<u32>> {
        let v = self.get(c);
        let (bad, end) = match self.fat_type {
            FatType::Fat12 => (0xff7, 0xff8),
            FatType::Fat16 => (0xfff7, 0xfff8),
            FatType::Fat32 => (0x0fff_fff7, 0x0fff_fff8),
        };
        if v >= end {
            return Ok(None);
        }
        if (2..=self.last).contains(&v) {
            return Ok(Some(v));
        }
        let what = match v {
            0 => String::from("runs into a free cluster"),
            v if v == bad => String::from("runs into a bad cluster"),
            v => format!("points to cluster {v}, outside 2..={}", self.last),
        };
        Err(Error::corrupt(
            format!(
                "{} FAT entry of cluster {c}: the chain {what}",
                self.fat_type.name()
            ),
            self.entry_offset(boot, c),
        ))
    }

    /// Every cluster of the chain at `first`, checked for bounds and loops.
    pub(crate) fn chain(&self, boot: &BootSector, first: u32, limit: u64) -> Result<Vec<u32>> {
        if !(2..=self.last).contains(&first) {
            return Err(Error::corrupt(
                format!(
                    "cluster chain starts at cluster {first}, outside 2..={}",
                    self.last
                ),
                0,
            ));
        }
        let mut out = vec![first];
        let mut c = first;
        while let Some(n) = self.next(boot, c)? {
            if out.len() as u64 >= limit.min(u64::from(self.last)) {
                return Err(Error::corrupt(
                    format!(
                        "{} FAT entry of cluster {c}: the cluster chain from cluster {first} loops or is longer than {limit} clusters",
                        self.fat_type.name()
                    ),
                    self.entry_offset(boot, c),
                ));
            }
            out.push(n);
            c = n;
        }
        Ok(out)
    }

    /// The first free run of at least `want` clusters from the next-free
    /// hint, wrapping around once; else the longest run seen.
    pub(crate) fn find_run(&self, want: u32) -> Option<(u32, u32)> {
        let mut best: Option<(u32, u32)> = None;
        let start = if (2..=self.last).contains(&self.next_free) {
            self.next_free
        } else {
            2
        };
        for (lo, hi) in [(start, self.last), (2, start.saturating_sub(1))] {
            let mut c = lo;
            while c <= hi {
                if self.get(c) != 0 {
                    c += 1;
                    continue;
                }
                let run_start = c;
                while c <= hi && self.get(c) == 0 && c - run_start < want {
                    c += 1;
                }
                let len = c - run_start;
                if len >= want {
                    return Some((run_start, len));
                }
                if best.is_none_or(|b| len > b.1) {
                    best = Some((run_start, len));
                }
            }
        }
        best
    }

    /// Allocates `count` clusters chained after `prev` (or as a new
    /// chain), contiguous when possible; returns the first and last.
    pub(crate) fn allocate(&mut self, count: u32, prev: Option<u32>) -> Result<(u32, u32)> {
        if count == 0 || count > self.free {
            return Err(Error::invalid_input(format!(
                "FAT volume full: {count} clusters wanted, {} free",
                self.free
            )));
        }
        let mut left = count;
        let mut tail = prev;
        let mut first = None;
        let take =
            |table: &mut FatTable, c: u32, tail: &mut Option<u32>, first: &mut Option<u32>| {
                if let Some(t) = *tail {
                    table.set(t, c);
                }
                if first.is_none() {
                    *first = Some(c);
                }
                table.set(c, table.eoc());
                *tail = Some(c);
                table.free -= 1;
            };
        // Grow in place first.
        if let Some(p) = prev {
            let mut c = p.saturating_add(1);
            while left > 0 && self.is_free(c) {
                take(self, c, &mut tail, &mut first);
                left -= 1;
                c += 1;
            }
        }
        while left > 0 {
            let Some((start, len)) = self.find_run(left) else {
                break;
            };
            if len == 0 {
                break;
            }
            for c in start..start + len.min(left) {
                take(self, c, &mut tail, &mut first);
            }
            left -= len.min(left);
        }
        let (Some(first), Some(last)) = (first, tail) else {
            return Err(Error::invalid_input("FAT volume full"));
        };
        if left > 0 {
            return Err(Error::corrupt(
                "FAT free cluster count disagrees with the FAT",
                0,
            ));
        }
        self.next_free = if last >= self.last { 2 } else { last + 1 };
        Ok((first, last))
    }

    /// Frees the chain at `first` (already checked).
    pub(crate) fn free_chain(&mut self, clusters: &[u32]) {
        for &c in clusters {
            if self.get(c) != 0 {
                self.set(c, 0);
                self.free += 1;
            }
        }
    }
}
