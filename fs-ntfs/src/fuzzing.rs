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

use crate::attribute::{Value, parse_attributes, types};
use crate::file::File;
use crate::index::{IndexBlocks, search_index, walk_index};
use crate::volume::{NtfsVolume, records};

/// Magic of a packed volume.
pub const PACK_MAGIC: &[u8; 8] = b"NTFSPACK";
const SECTOR: u64 = 512;

/// Opens `data` (a volume or a packed volume) as NTFS and walks
/// everything, bounded: the directory tree from the root (at most 2,000
/// files, 16 levels), every `$DATA` stream of every file (the first
/// 64 KiB), link targets, security descriptors, the attribute export (the
/// first 64 KiB of clusters of each non-resident attribute) and the
/// used-cluster map. Errors are fine; panics and hangs are bugs.
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
        let _ = vol.security_descriptor(&file);
        if let Ok(attributes) = vol.export_attributes(&file) {
            for a in attributes.iter().filter(|a| !a.is_resident()) {
                // The first 64 KiB of clusters of each, then stop.
                let mut left = 64usize << 10;
                let _ = vol.export_data(a, &mut |_, bytes| {
                    left = left.saturating_sub(bytes.len());
                    if left == 0 {
                        return Err(Error::invalid_input("enough"));
                    }
                    Ok(())
                });
            }
        }
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

/// Parses `data` as an NTFS boot sector (the first 512 bytes matter).
pub fn ntfs_boot(data: &[u8]) {
    if let Ok(b) = crate::BootSector::parse(data) {
        let _ = (b.total_clusters(), b.volume_size());
    }
}

/// Parses `data` as one FILE record (its length rounded down to 512
/// bytes, at most 64 KiB): fixups, attributes, run lists, names, standard
/// information, streams, attribute lists, reparse points and security
/// descriptors held resident in it.
pub fn ntfs_mft_record(data: &[u8]) {
    let len = (data.len() / 512 * 512).min(64 << 10);
    let Some(bytes) = data.get(..len) else {
        return;
    };
    let Ok(record) = crate::FileRecord::parse(bytes.to_vec(), 42, 0x4000) else {
        return;
    };
    let Ok(attributes) = parse_attributes(&record, 1 << 32) else {
        return;
    };
    let file = File {
        number: record.number,
        sequence: record.sequence,
        flags: record.flags,
        attributes,
    };
    let _ = file.file_names();
    let _ = file.name();
    let _ = file.link_count();
    let _ = file.standard_information();
    let _ = file.named_streams();
    let _ = (file.data_size(), file.reparse_tag(), file.is_encrypted());
    for a in &file.attributes {
        let _ = file.stream(a.ty, &a.name);
        let Value::Resident(v) = &a.value else {
            continue;
        };
        let _ = match a.ty {
            types::ATTRIBUTE_LIST => crate::parse_attribute_list(v, a.position).map(|_| ()),
            types::REPARSE_POINT => crate::parse_reparse(v, a.position).map(|_| ()),
            types::SECURITY_DESCRIPTOR => {
                crate::SecurityDescriptor::parse(v.clone(), a.position).map(|_| ())
            }
            types::INDEX_ROOT => crate::IndexRoot::parse(v, a.position).map(|_| ()),
            _ => Ok(()),
        };
    }
}

/// Decodes `data` as a run list (the first byte, when there is one, picks
/// the starting VCN), then looks a few VCNs up.
pub fn ntfs_run_list(data: &[u8]) {
    let start = u64::from(data.first().copied().unwrap_or(0) & 0x0f);
    if let Ok(runs) = crate::decode_run_list(data.get(1..).unwrap_or_default(), 0, start, 1 << 40) {
        for vcn in [0, start, start + 1, 1 << 20, u64::MAX] {
            let _ = crate::find_run(&runs, vcn);
        }
    }
}

/// Index records of an index allocation, `size` bytes each, back to back.
struct FuzzBlocks<'a> {
    data: &'a [u8],
    size: usize,
}

impl IndexBlocks for FuzzBlocks<'_> {
    fn block(&self, vcn: u64) -> Result<(Vec<u8>, u64)> {
        usize::try_from(vcn)
            .ok()
            .and_then(|v| v.checked_mul(self.size))
            .and_then(|at| Some((self.data.get(at..at.checked_add(self.size)?)?, at)))
            .map(|(b, at)| (b.to_vec(), at as u64))
            .ok_or_else(|| Error::corrupt("VCN past the index allocation", 0))
    }
}

/// Walks and searches an index whose allocation is `data`: INDX records
/// (with fixups) of 4 KiB (or 512 bytes for inputs under 4 KiB) back to
/// back, reached from a root whose only entry points at VCN 0. Keys are
/// parsed as `$FILE_NAME`s and entry data as `$SII` data.
pub fn ntfs_index_buffer(data: &[u8]) {
    let size = if data.len() >= 4096 { 4096u32 } else { 512 };
    // $INDEX_ROOT: indexed type, collation, record size, clusters per
    // record; node header; one last entry with a child pointer (VCN 0).
    let mut root = alloc::vec![0u8; 0x10 + 0x10 + 0x18];
    let mut put = |at: usize, v: &[u8]| {
        if let Some(d) = root.get_mut(at..at + v.len()) {
            d.copy_from_slice(v);
        }
    };
    put(0, &types::FILE_NAME.to_le_bytes());
    put(4, &1u32.to_le_bytes());
    put(8, &size.to_le_bytes());
    put(0x10, &0x10u32.to_le_bytes());
    put(0x14, &0x28u32.to_le_bytes());
    put(0x18, &0x28u32.to_le_bytes());
    put(0x1c, &1u32.to_le_bytes());
    put(0x20 + 8, &0x18u16.to_le_bytes());
    put(0x20 + 12, &3u32.to_le_bytes());
    let blocks = FuzzBlocks {
        data,
        size: size as usize,
    };
    let mut count = 0usize;
    let _ = walk_index(&root, 0, Some(&blocks), &mut |e| {
        let _ = crate::FileName::parse(&e.key, e.position);
        let _ = crate::SdsLocation::parse(&e.data, e.position);
        count += 1;
        Ok(count < 100_000)
    });
    let _ = search_index(&root, 0, Some(&blocks), &mut |e| {
        Ok(match crate::FileName::parse(&e.key, e.position) {
            Ok(n) => n.name.as_slice().cmp(&[0x4d_u16][..]),
            Err(_) => core::cmp::Ordering::Less,
        })
    });
}

/// Decompresses `data` as one LZNT1 compression unit: the first byte
/// gives the unit's size (its low four bits plus one, in 4 KiB chunks),
/// the rest is the stored data.
pub fn ntfs_lznt1(data: &[u8]) {
    let chunks = usize::from(data.first().copied().unwrap_or(0) % 16) + 1;
    let mut out = alloc::vec![0u8; chunks * crate::lznt1::CHUNK_SIZE];
    let _ = crate::lznt1_decompress(data.get(1..).unwrap_or_default(), 0, &mut out);
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
