//! Entry points for the fuzz targets (also replayed by `cargo test`).
//!
//! An NTFS volume is megabytes of mostly zeros while a fuzz input should
//! stay under 32 KiB, so [`ntfs_read`] also accepts a *packed* volume: the
//! magic `NTFSPACK`, the volume size (u64 LE), then chunks of a sector
//! number (u32 LE), a sector count (u16 LE) and that many 512-byte sectors.
//! Sectors not in a chunk read as zeros. [`pack`] makes one from the
//! sectors a walk reads (`examples/ntfs-pack.rs`, `fuzz/make-ntfs-seeds.sh`).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use disk_io::sync::Lock;
use disk_io::{Error, ReadAt, Result};

use crate::attribute::types;
use crate::volume::{NtfsVolume, records};

/// Magic of a packed volume.
pub const PACK_MAGIC: &[u8; 8] = b"NTFSPACK";
const SECTOR: u64 = 512;

/// Opens `data` (a volume or a packed volume) as NTFS and walks
/// everything, bounded: the directory tree from the root (at most 2,000
/// files, 16 levels), every `$DATA` stream of every file (the first
/// 64 KiB), link targets and the used-cluster map. Errors are fine; panics
/// and hangs are bugs.
pub fn ntfs_read(data: &[u8]) {
    match Packed::parse(data) {
        Some(packed) => walk(&packed),
        None => walk(data),
    }
}

/// Walks `disk` as [`ntfs_read`] does.
pub fn walk<D: ReadAt + ?Sized>(disk: &D) {
    let Ok(vol) = NtfsVolume::open(disk) else {
        return;
    };
    // The map of a huge (sparse, packed) volume takes long to scan.
    if vol.boot_sector().total_clusters() <= 1 << 24 {
        let _ = vol.used_clusters();
    }
    let mut budget = 2000usize;
    let mut stack: Vec<(u64, usize)> = alloc::vec![(records::ROOT, 0)];
    let mut buf = alloc::vec![0u8; 64 << 10];
    while let Some((number, depth)) = stack.pop() {
        if budget == 0 {
            break;
        }
        budget -= 1;
        let Ok(file) = vol.file(number) else {
            continue;
        };
        let _ = file.name();
        let _ = file.link_count();
        let _ = file.standard_information();
        let _ = vol.link_target(&file);
        for a in file.attributes.iter().filter(|a| a.ty == types::DATA) {
            if let Ok(Some(s)) = file.stream(types::DATA, &a.name) {
                let _ = vol.read_stream(&s, 0, &mut buf);
            }
        }
        if file.is_directory() && depth < 16 {
            if let Ok(entries) = vol.read_dir(&file) {
                let _ = vol.find(&file, "X");
                for (child, _) in entries {
                    if child >= records::FIRST_USER && child != number && stack.len() < 4096 {
                        stack.push((child, depth + 1));
                    }
                }
            }
        }
    }
}

/// A packed volume: sparse sectors over a virtual size; a disk.
pub struct Packed<'a> {
    size: u64,
    sectors: BTreeMap<u64, &'a [u8]>,
}

impl<'a> Packed<'a> {
    /// Parses a packed volume; `None` when `data` does not start with
    /// [`PACK_MAGIC`].
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let rest = data.strip_prefix(&PACK_MAGIC[..])?;
        let size = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) % (1 << 40);
        let mut rest = rest.get(8..)?;
        let mut sectors = BTreeMap::new();
        while rest.len() >= 6 {
            let first = u64::from(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?));
            let count = usize::from(u16::from_le_bytes(rest.get(4..6)?.try_into().ok()?));
            rest = rest.get(6..)?;
            for i in 0..count {
                let Some(s) = rest.get(..SECTOR as usize) else {
                    break;
                };
                sectors.insert(first + i as u64, s);
                rest = rest.get(SECTOR as usize..)?;
            }
        }
        Some(Packed { size, sectors })
    }
}

impl ReadAt for Packed<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        disk_io::check_range(self.size, offset, buf.len() as u64)?;
        buf.fill(0);
        let end = offset + buf.len() as u64;
        let first = offset / SECTOR;
        for (&n, s) in self.sectors.range(first..end.div_ceil(SECTOR)) {
            let at = n * SECTOR;
            let from = offset.max(at);
            let to = end.min(at + SECTOR);
            if let (Some(dst), Some(src)) = (
                buf.get_mut((from - offset) as usize..(to - offset) as usize),
                s.get((from - at) as usize..(to - at) as usize),
            ) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }
}

/// Records the sectors read through it.
struct Traced<'a, D: ReadAt + ?Sized> {
    disk: &'a D,
    /// Sectors in the order they were first read.
    read: Lock<(Vec<u64>, BTreeMap<u64, ()>)>,
    max_read: usize,
}

impl<D: ReadAt + ?Sized> ReadAt for Traced<'_, D> {
    fn size(&self) -> u64 {
        self.disk.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.disk.read_at(offset, buf)?;
        if buf.len() <= self.max_read {
            self.read.with_write(|r| {
                let end = offset + buf.len() as u64;
                for s in offset / SECTOR..end.div_ceil(SECTOR) {
                    if r.1.insert(s, ()).is_none() {
                        r.0.push(s);
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// Packs the sectors of `disk` that a [`walk`] reads, in the order it
/// first reads them, up to `limit` bytes of output (reads larger than
/// `max_read` bytes, like `$UpCase`, are left out; all-zero sectors too).
pub fn pack<D: ReadAt + ?Sized>(disk: &D, max_read: usize, limit: usize) -> Result<Vec<u8>> {
    let traced = Traced {
        disk,
        read: Lock::new((Vec::new(), BTreeMap::new())),
        max_read,
    };
    walk(&traced);
    let (read, _) = traced.read.into_inner();
    let mut out = Vec::from(&PACK_MAGIC[..]);
    out.extend_from_slice(&disk.size().to_le_bytes());
    let mut sector = [0u8; SECTOR as usize];
    // First read first: the boot sector, $MFT, the root, then deeper.
    for n in read {
        if out.len() + 6 + sector.len() > limit {
            break;
        }
        disk.read_at(n * SECTOR, &mut sector)?;
        if disk_io::is_zero(&sector) {
            continue;
        }
        let n = u32::try_from(n).map_err(|_| Error::invalid_input("volume too large to pack"))?;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&sector);
    }
    Ok(out)
}
