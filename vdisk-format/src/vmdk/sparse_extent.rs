//! One hosted sparse extent (monolithicSparse, twoGbMaxExtentSparse,
//! streamOptimized, or a hosted-format VMFSSPARSE delta): the guest bytes
//! of its grains, through the grain directory and a bounded cache of grain
//! tables and decompressed grains.

use alloc::format;
use alloc::vec::Vec;

use disk_io::sync::Lock;
use disk_io::{Error, ReadAt, Result};

use super::grain_table::{Grain, grain_of, read_directory, read_table};
use super::sparse_header::{GD_AT_END, SECTOR, SparseHeader};
use super::stream::{read_compressed_grain, read_footer};
use crate::cache::Lru;

/// Memory the grain table cache may use (1 MiB: 512 tables of 512
/// entries, 16 GiB of guest in 64 KiB grains).
const GT_CACHE_BYTES: usize = 1 << 20;
/// Decompressed grains kept (reads smaller than a grain would otherwise
/// inflate one grain many times).
const GRAIN_CACHE: usize = 8;

#[derive(Default)]
struct Caches {
    tables: Lru<Vec<u32>>,
    grains: Lru<Vec<u8>>,
}

/// A hosted sparse extent read from `D`.
pub struct SparseExtent<D> {
    file: D,
    header: SparseHeader,
    /// Grain directory: sector of each grain table.
    gd: Vec<u32>,
    caches: Lock<Caches>,
    max_tables: usize,
}

impl<D: ReadAt> SparseExtent<D> {
    /// Opens the extent in `file`: header (and footer, for a stream whose
    /// header defers the grain directory to it) and grain directory.
    pub fn open(file: D) -> Result<Self> {
        let mut header = SparseHeader::read(&file)?;
        if header.gd_offset == GD_AT_END {
            header = read_footer(&file)?;
        }
        let gd = read_directory(&file, &header, header.gd_offset, "grain directory")?;
        let table_bytes = (header.gtes_per_gt as usize).saturating_mul(4).max(1);
        Ok(SparseExtent {
            file,
            max_tables: (GT_CACHE_BYTES / table_bytes).max(4),
            header,
            gd,
            caches: Lock::new(Caches::default()),
        })
    }

    /// The header in force (the footer's, for a stream).
    pub fn header(&self) -> &SparseHeader {
        &self.header
    }

    /// The file holding the extent.
    pub fn file(&self) -> &D {
        &self.file
    }

    /// Guest bytes of the extent.
    pub fn size(&self) -> u64 {
        self.header.capacity * SECTOR
    }

    /// The grain holding extent byte `pos`, and the extent range
    /// `start..end` the answer holds for (a grain, or all a missing grain
    /// table covers).
    pub fn grain_at(&self, pos: u64) -> Result<(Grain, u64, u64)> {
        let h = &self.header;
        let size = self.size();
        let gs = h.grain_size();
        let grain = pos / gs;
        let per = u64::from(h.gtes_per_gt);
        let gt_index = grain / per;
        let gde = self.gd.get(gt_index as usize).copied().unwrap_or(0);
        if gde == 0 {
            let span = h.gt_coverage();
            let start = gt_index * span;
            return Ok((Grain::Unallocated, start, (start + span).min(size)));
        }
        let entry = (grain % per) as usize;
        let hit = self.caches.with_write(|c| {
            Ok(c.tables
                .get(u64::from(gde))
                .map(|t| t.get(entry).copied().unwrap_or(0)))
        })?;
        let gte = match hit {
            Some(gte) => gte,
            None => {
                let table = read_table(&self.file, h, gde, gt_index)?;
                let gte = table.get(entry).copied().unwrap_or(0);
                let max = self.max_tables;
                self.caches.with_write(|c| {
                    c.tables.insert(u64::from(gde), table, max);
                    Ok(())
                })?;
                gte
            }
        };
        let start = grain * gs;
        let end = (start + gs).min(size);
        let g = grain_of(h, gte);
        if let Grain::Data(host) | Grain::Compressed(host) = g {
            if host >= self.file.size() {
                return Err(Error::corrupt(
                    format!(
                        "vmdk grain table {gt_index} entry {entry} points to {host:#x}, past the end of the file ({} bytes)",
                        self.file.size()
                    ),
                    u64::from(gde) * SECTOR + entry as u64 * 4,
                ));
            }
        }
        Ok((g, start, end))
    }

    /// Reads stored grain bytes at `host`; the part of a grain past the
    /// end of the file reads as zeros.
    pub fn read_host(&self, host: u64, buf: &mut [u8]) -> Result<()> {
        let available = self.file.size().saturating_sub(host).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(available);
        self.file.read_at(host, head)?;
        tail.fill(0);
        Ok(())
    }

    /// Copies `out.len()` bytes from byte `skip` of the compressed grain at
    /// `host`.
    pub fn read_compressed(&self, host: u64, skip: usize, out: &mut [u8]) -> Result<()> {
        let copy = |data: &Vec<u8>, out: &mut [u8]| -> Result<()> {
            let src = skip
                .checked_add(out.len())
                .and_then(|end| data.get(skip..end))
                .ok_or_else(|| {
                    Error::corrupt(
                        format!(
                            "vmdk compressed grain at {host:#x} inflates to {} bytes, short of a grain",
                            data.len()
                        ),
                        host,
                    )
                })?;
            out.copy_from_slice(src);
            Ok(())
        };
        let done = self.caches.with_write(|c| match c.grains.get(host) {
            Some(data) => copy(data, out).map(|()| true),
            None => Ok(false),
        })?;
        if done {
            return Ok(());
        }
        let data = read_compressed_grain(
            &self.file,
            host,
            self.header.grain_size(),
            self.header.markers(),
        )?;
        copy(&data, out)?;
        self.caches.with_write(|c| {
            c.grains.insert(host, data, GRAIN_CACHE);
            Ok(())
        })
    }
}
