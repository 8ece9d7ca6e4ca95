//! `vdisk check` for qcow2: the refcounts every cluster should have,
//! computed from the metadata that references it (header, L1 and L2
//! tables of the active image and of every internal snapshot, data and
//! compressed clusters, the snapshot table, the refcount table and blocks,
//! persistent bitmaps), compared with the refcounts stored in the image,
//! and the COPIED flag of the active tables checked against them.
//!
//! Findings are classified as `qemu-img check` classifies them: a stored
//! refcount below the number of references is an error (the cluster could
//! be freed while in use), one above it a leak (space nothing uses).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::bytes::{be_u16, be_u32, be_u64};
use disk_io::{Error, ReadAt, Result};

use super::header::{Header, MAX_L1_BYTES};
use crate::CheckReport;

/// Offset bits of L1 and standard L2 entries (9..55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L1 and L2 entries: the cluster's refcount is exactly 1.
const COPIED: u64 = 1 << 63;
/// L2 entry: the cluster is compressed.
const COMPRESSED: u64 = 1 << 62;
/// Standard L2 entry: the cluster reads as zeros.
const ZERO: u64 = 1;
/// Reserved bits of an L1 entry.
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// Reserved bits of a standard (uncompressed) L2 entry.
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;
/// Offset bits of a refcount table entry; the rest are reserved.
const REFTABLE_OFFSET_MASK: u64 = !0x1ff;
/// Largest refcount table qemu accepts (8 MiB).
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Most internal snapshots qemu accepts.
const MAX_SNAPSHOTS: u32 = 65536;
/// Largest snapshot table qemu accepts (64 MiB).
const MAX_SNAPSHOT_TABLE_BYTES: u64 = 64 << 20;
/// Largest extra data of a snapshot table entry qemu accepts.
const MAX_SNAPSHOT_EXTRA: u32 = 1024;
/// Largest bitmap directory qemu accepts (64 MiB).
const MAX_BITMAP_DIRECTORY_BYTES: u64 = 64 << 20;
/// Most persistent bitmaps qemu accepts.
const MAX_BITMAPS: u32 = 65535;
/// Header extension: persistent dirty bitmaps.
const EXT_BITMAPS: u32 = 0x2385_2875;
/// Autoclear bit: the bitmaps extension is consistent.
const AUTOCLEAR_BITMAPS: u64 = 1;
/// Most clusters a check counts references for (the expected refcounts
/// take four bytes each): 64 GiB of 4 KiB clusters, 1 TiB of 64 KiB ones.
pub const MAX_CHECK_CLUSTERS: u64 = 1 << 24;

/// The expected refcount of every cluster of the file, counted as the
/// metadata is walked.
struct Counter {
    cluster_bits: u32,
    file_size: u64,
    /// One more than the file's clusters: the last cluster may be only
    /// partly written, and a reference to it may reach past the end.
    expected: Vec<u32>,
}

impl Counter {
    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Counts one reference to every cluster `size` bytes at `offset`
    /// touch. A reference reaching a whole cluster or more past the end of
    /// the file is an error and is not counted (as qemu does).
    fn add(&mut self, report: &mut CheckReport, offset: u64, size: u64, what: &str) {
        if size == 0 {
            return;
        }
        let cs = self.cluster_size();
        let end = match offset.checked_add(size) {
            Some(end) if end < self.file_size.saturating_add(cs) => end,
            _ => {
                report.error(format!(
                    "ERROR {what} at offset {offset:#x} ({size:#x} bytes) reaches past the end of the file ({:#x} bytes)",
                    self.file_size
                ));
                return;
            }
        };
        for cluster in offset >> self.cluster_bits..=(end - 1) >> self.cluster_bits {
            if let Some(n) = self.expected.get_mut(cluster as usize) {
                *n = n.saturating_add(1);
            }
        }
    }

    fn get(&self, cluster: u64) -> u32 {
        self.expected.get(cluster as usize).copied().unwrap_or(0)
    }
}

/// The refcounts stored in the image: its refcount table and the blocks
/// that cover the file.
struct Stored {
    cluster_bits: u32,
    refcount_order: u32,
    table: Vec<u64>,
    /// Refcount blocks by table index, those that could be read.
    blocks: BTreeMap<u64, Vec<u8>>,
}

impl Stored {
    /// Refcounts per refcount block.
    fn per_block(&self) -> u64 {
        (1u64 << (self.cluster_bits + 3)) >> self.refcount_order
    }

    /// The stored refcount of `cluster`; `None` when its refcount block
    /// cannot be read (unaligned or outside the file: reported already).
    fn get(&self, cluster: u64) -> Option<u64> {
        let per = self.per_block();
        let index = cluster / per;
        let entry = self.table.get(index as usize).copied().unwrap_or(0) & REFTABLE_OFFSET_MASK;
        if entry == 0 {
            return Some(0);
        }
        let block = self.blocks.get(&index)?;
        let i = cluster % per;
        let value = match self.refcount_order {
            0..=2 => {
                let bits = 1u64 << self.refcount_order;
                let byte = u64::from(*block.get((i * bits / 8) as usize)?);
                (byte >> (i * bits % 8)) & ((1 << bits) - 1)
            }
            3 => u64::from(*block.get(i as usize)?),
            4 => u64::from(be_u16(block, (i * 2) as usize)?),
            5 => u64::from(be_u32(block, (i * 4) as usize)?),
            _ => be_u64(block, (i * 8) as usize)?,
        };
        Some(value)
    }
}

/// Reads `count` big-endian 64-bit entries at `offset`; the caller has
/// bounded `count` by the file size.
fn read_entries<D: ReadAt + ?Sized>(file: &D, offset: u64, count: u64) -> Result<Vec<u64>> {
    let bytes = disk_io::read_vec(file, offset, (count * 8) as usize)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

/// True when `len` bytes at `offset` lie inside a file of `size` bytes.
fn inside(offset: u64, len: u64, size: u64) -> bool {
    offset.checked_add(len).is_some_and(|end| end <= size)
}

/// Checks the qcow2 image in `file`: see the module documentation. An
/// error means the header or the refcount table could not be read at all.
pub fn check<D: ReadAt + ?Sized>(file: &D) -> Result<CheckReport> {
    let header = Header::read(file)?;
    let head = disk_io::read_vec(file, 0, file.size().min(header.cluster_size()) as usize)?;
    let mut report = CheckReport::default();
    let cs = header.cluster_size();
    let file_size = file.size();
    let file_clusters = file_size.div_ceil(cs);
    if file_clusters >= MAX_CHECK_CLUSTERS {
        return Err(Error::unsupported(format!(
            "checking a qcow2 file of {file_clusters} clusters (more than {MAX_CHECK_CLUSTERS})"
        )));
    }
    let mut counter = Counter {
        cluster_bits: header.cluster_bits,
        file_size,
        expected: vec![0; (file_clusters + 1) as usize],
    };
    let walker = Walker {
        file,
        header: &header,
    };

    // The header cluster, then the active L1 table and everything under it.
    counter.add(&mut report, 0, cs, "qcow2 header");
    walker.l1(
        &mut counter,
        &mut report,
        header.l1_table_offset,
        header.l1_size,
        "active",
    );

    // Internal snapshots: their L1 tables, and the snapshot table itself.
    let snapshots_offset = be_u64(&head, 64).unwrap_or(0);
    let (snapshots, table_size) = walker.snapshots(&mut report, snapshots_offset);
    for s in &snapshots {
        let name = format!("snapshot {} ({})", s.id, s.name);
        if !s.l1_offset.is_multiple_of(cs) {
            report.error(format!(
                "ERROR {name} L1 table at offset {:#x} is not cluster aligned; snapshot table entry corrupted",
                s.l1_offset
            ));
            continue;
        }
        if u64::from(s.l1_size) * 8 > MAX_L1_BYTES {
            report.error(format!(
                "ERROR {name} L1 table of {} entries is too large; snapshot table entry corrupted",
                s.l1_size
            ));
            continue;
        }
        walker.l1(&mut counter, &mut report, s.l1_offset, s.l1_size, &name);
    }
    counter.add(
        &mut report,
        snapshots_offset,
        table_size,
        "qcow2 snapshot table",
    );

    // The refcount table.
    let rt_offset = header.refcount_table_offset;
    let rt_bytes = u64::from(header.refcount_table_clusters) * cs;
    if !rt_offset.is_multiple_of(cs)
        || rt_bytes > MAX_REFTABLE_BYTES
        || !inside(rt_offset, rt_bytes, file_size)
    {
        return Err(Error::corrupt(
            format!(
                "qcow2 refcount table at {rt_offset:#x} ({rt_bytes} bytes) is unaligned, too large or past the end of the file"
            ),
            48,
        ));
    }
    counter.add(&mut report, rt_offset, rt_bytes, "qcow2 refcount table");

    walker.bitmaps(&mut counter, &mut report, &head);

    // The refcount blocks: each must be referenced exactly once.
    let mut stored = Stored {
        cluster_bits: header.cluster_bits,
        refcount_order: header.refcount_order,
        table: read_entries(file, rt_offset, rt_bytes / 8)?,
        blocks: BTreeMap::new(),
    };
    for (i, &entry) in stored.table.iter().enumerate() {
        let offset = entry & REFTABLE_OFFSET_MASK;
        let at = rt_offset + i as u64 * 8;
        if entry & !REFTABLE_OFFSET_MASK != 0 {
            report.error(format!(
                "ERROR refcount table entry {i} at offset {at:#x} has reserved bits set"
            ));
            continue;
        }
        if offset == 0 {
            continue;
        }
        if !offset.is_multiple_of(cs) {
            report.error(format!(
                "ERROR refcount block {i} at offset {offset:#x} is not cluster aligned; refcount table entry corrupted"
            ));
            continue;
        }
        if !inside(offset, cs, file_size) {
            report.error(format!(
                "ERROR refcount block {i} at offset {offset:#x} is outside image"
            ));
            continue;
        }
        counter.add(&mut report, offset, cs, "qcow2 refcount block");
        let n = counter.get(offset >> header.cluster_bits);
        if n != 1 {
            report.error(format!(
                "ERROR refcount block {i} at offset {offset:#x} refcount={n}"
            ));
        }
        // Only the blocks that describe clusters of the file are kept.
        if (i as u64).saturating_mul(stored.per_block()) < file_clusters + 1 {
            stored
                .blocks
                .insert(i as u64, disk_io::read_vec(file, offset, cs as usize)?);
        }
    }

    // Stored against expected, cluster by cluster. The cluster just past
    // the end counts only if something references it.
    let last = if counter.get(file_clusters) > 0 {
        file_clusters + 1
    } else {
        file_clusters
    };
    for cluster in 0..last {
        let Some(have) = stored.get(cluster) else {
            continue;
        };
        let want = u64::from(counter.get(cluster));
        let offset = cluster << header.cluster_bits;
        if have < want {
            report.error(format!(
                "ERROR cluster {cluster} (offset {offset:#x}) refcount={have} reference={want}"
            ));
        } else if have > want {
            report.leaks(
                1,
                format!(
                    "Leaked cluster {cluster} (offset {offset:#x}) refcount={have} reference={want}"
                ),
            );
        }
    }

    walker.copied_flags(&stored, &mut report);
    Ok(report)
}

/// One internal snapshot's L1 table, as its table entry names it.
struct Snapshot {
    l1_offset: u64,
    l1_size: u32,
    id: alloc::string::String,
    name: alloc::string::String,
}

/// Walks the tables of one image.
struct Walker<'a, D: ?Sized> {
    file: &'a D,
    header: &'a Header,
}

impl<D: ReadAt + ?Sized> Walker<'_, D> {
    /// Counts the L1 table of `l1_size` entries at `offset`, its L2 tables
    /// and the clusters they map.
    fn l1(
        &self,
        counter: &mut Counter,
        report: &mut CheckReport,
        offset: u64,
        l1_size: u32,
        which: &str,
    ) {
        let h = self.header;
        let cs = h.cluster_size();
        let bytes = u64::from(l1_size) * 8;
        counter.add(report, offset, bytes, &format!("qcow2 {which} L1 table"));
        if !inside(offset, bytes, self.file.size()) {
            return;
        }
        let Ok(l1) = read_entries(self.file, offset, u64::from(l1_size)) else {
            report.error(format!(
                "ERROR {which} L1 table at offset {offset:#x} cannot be read"
            ));
            return;
        };
        for (i, &entry) in l1.iter().enumerate() {
            if entry == 0 {
                continue;
            }
            if entry & L1_RESERVED != 0 {
                report.error(format!(
                    "ERROR {which} L1 entry {i} at offset {:#x} has reserved bits set: {entry:#x}",
                    offset + i as u64 * 8
                ));
            }
            let l2 = entry & OFFSET_MASK;
            counter.add(report, l2, cs, &format!("L2 table of {which} L1 entry {i}"));
            if !l2.is_multiple_of(cs) {
                report.error(format!(
                    "ERROR l2_offset={l2:#x}: Table is not cluster aligned; {which} L1 entry {i} corrupted"
                ));
                continue;
            }
            if !inside(l2, cs, self.file.size()) {
                if l2.saturating_add(cs) < self.file.size().saturating_add(cs) {
                    report.error(format!(
                        "ERROR L2 table at offset {l2:#x} ({which} L1 entry {i}) is cut off by the end of the file"
                    ));
                }
                continue;
            }
            match read_entries(self.file, l2, cs / 8) {
                Ok(table) => self.l2(counter, report, l2, &table),
                Err(_) => report.error(format!("ERROR L2 table at offset {l2:#x} cannot be read")),
            }
        }
    }

    /// Counts the clusters one L2 table (at `l2`) maps.
    fn l2(&self, counter: &mut Counter, report: &mut CheckReport, l2: u64, table: &[u64]) {
        let h = self.header;
        let cs = h.cluster_size();
        let extended = h.extended_l2();
        let step = if extended { 2 } else { 1 };
        for (j, pair) in table.chunks(step).enumerate() {
            let entry = pair.first().copied().unwrap_or(0);
            let bitmap = if extended {
                pair.get(1).copied().unwrap_or(0)
            } else {
                0
            };
            let at = l2 + j as u64 * h.l2_entry_size();
            if entry & COMPRESSED != 0 {
                if entry & COPIED != 0 {
                    report.error(format!(
                        "ERROR compressed cluster L2 entry at offset {at:#x}: the copied flag must never be set for compressed clusters"
                    ));
                }
                if bitmap != 0 {
                    report.error(format!(
                        "ERROR compressed cluster L2 entry at offset {at:#x} with non-zero subcluster allocation bitmap {bitmap:#x}"
                    ));
                }
                let x = 62 - (h.cluster_bits - 8);
                let host = entry & ((1u64 << x) - 1);
                let sectors = (entry >> x) & ((1u64 << (h.cluster_bits - 8)) - 1);
                let len = (sectors + 1) * 512 - (host & 511);
                counter.add(
                    report,
                    host,
                    len,
                    &format!("compressed cluster of L2 entry at {at:#x}"),
                );
                continue;
            }
            if entry & L2_RESERVED != 0 {
                report.error(format!(
                    "ERROR L2 entry at offset {at:#x} has reserved bits set: {entry:#x}"
                ));
            }
            let host = entry & OFFSET_MASK;
            let zero = !extended && entry & ZERO != 0;
            if host == 0 {
                if !zero && bitmap & 0xffff_ffff != 0 {
                    report.error(format!(
                        "ERROR unallocated cluster L2 entry at offset {at:#x} has a non-zero subcluster allocation bitmap"
                    ));
                }
                continue;
            }
            if (bitmap >> 32) & bitmap != 0 {
                report.error(format!(
                    "ERROR L2 entry at offset {at:#x}: subclusters both allocated and zero ({bitmap:#x})"
                ));
            }
            if !host.is_multiple_of(cs) {
                report.error(format!(
                    "ERROR offset={host:#x}: Data cluster is not properly aligned; L2 entry at offset {at:#x} corrupted"
                ));
            }
            // Clusters of an external data file are not refcounted.
            if !h.has_data_file() {
                counter.add(
                    report,
                    host & !(cs - 1),
                    cs,
                    &format!("data cluster of L2 entry at {at:#x}"),
                );
            }
        }
    }

    /// Parses the snapshot table at `offset` (bounded by the file and
    /// qemu's limits); its snapshots and its size in bytes.
    fn snapshots(&self, report: &mut CheckReport, offset: u64) -> (Vec<Snapshot>, u64) {
        let count = self.header.nb_snapshots;
        let mut out = Vec::new();
        if count == 0 {
            return (out, 0);
        }
        if count > MAX_SNAPSHOTS || !offset.is_multiple_of(self.header.cluster_size()) {
            report.error(format!(
                "ERROR snapshot table at offset {offset:#x} ({count} snapshots) is unaligned or too large"
            ));
            return (out, 0);
        }
        let mut at = offset;
        for n in 0..count {
            let Ok(fixed) = disk_io::read_vec(self.file, at, 40) else {
                report.error(format!(
                    "ERROR snapshot table entry {n} at offset {at:#x} is past the end of the file"
                ));
                break;
            };
            let l1_offset = be_u64(&fixed, 0).unwrap_or(0);
            let l1_size = be_u32(&fixed, 8).unwrap_or(0);
            let id_len = u64::from(be_u16(&fixed, 12).unwrap_or(0));
            let name_len = u64::from(be_u16(&fixed, 14).unwrap_or(0));
            let extra = be_u32(&fixed, 36).unwrap_or(0);
            if extra > MAX_SNAPSHOT_EXTRA {
                report.error(format!(
                    "ERROR snapshot table entry {n} at offset {at:#x}: extra data of {extra} bytes"
                ));
                break;
            }
            let names_at = at + 40 + u64::from(extra);
            let names = disk_io::read_vec(self.file, names_at, (id_len + name_len) as usize);
            let Ok(names) = names else {
                report.error(format!(
                    "ERROR snapshot table entry {n} at offset {at:#x} is past the end of the file"
                ));
                break;
            };
            let (id, name) = names.split_at(id_len as usize);
            out.push(Snapshot {
                l1_offset,
                l1_size,
                id: alloc::string::String::from_utf8_lossy(id).into_owned(),
                name: alloc::string::String::from_utf8_lossy(name).into_owned(),
            });
            at = (names_at + id_len + name_len).next_multiple_of(8);
            if at - offset > MAX_SNAPSHOT_TABLE_BYTES {
                report.error(format!(
                    "ERROR snapshot table at offset {offset:#x} is larger than {MAX_SNAPSHOT_TABLE_BYTES} bytes"
                ));
                break;
            }
        }
        (out, at - offset)
    }

    /// Counts the persistent bitmaps: their directory, tables and data.
    fn bitmaps(&self, counter: &mut Counter, report: &mut CheckReport, head: &[u8]) {
        let h = self.header;
        if h.version < 3 || h.autoclear_features & AUTOCLEAR_BITMAPS == 0 {
            return;
        }
        let cs = h.cluster_size();
        let mut at = h.header_length as usize;
        let mut ext = None;
        for _ in 0..64 {
            let (Some(kind), Some(len)) = (be_u32(head, at), be_u32(head, at + 4)) else {
                break;
            };
            if kind == 0 {
                break;
            }
            if kind == EXT_BITMAPS {
                ext = head.get(at + 8..at + 8 + len as usize);
                break;
            }
            at += 8 + (len as usize).div_ceil(8) * 8;
        }
        let Some(ext) = ext else {
            return;
        };
        let count = be_u32(ext, 0).unwrap_or(0);
        let dir_size = be_u64(ext, 8).unwrap_or(0);
        let dir_offset = be_u64(ext, 16).unwrap_or(0);
        counter.add(report, dir_offset, dir_size, "qcow2 bitmap directory");
        if count > MAX_BITMAPS
            || dir_size > MAX_BITMAP_DIRECTORY_BYTES
            || !inside(dir_offset, dir_size, self.file.size())
        {
            report.error(format!(
                "ERROR bitmap directory at offset {dir_offset:#x} ({dir_size} bytes, {count} bitmaps) is too large or past the end of the file"
            ));
            return;
        }
        let Ok(dir) = disk_io::read_vec(self.file, dir_offset, dir_size as usize) else {
            return;
        };
        let mut pos = 0usize;
        for n in 0..count {
            let (Some(table_offset), Some(table_size), Some(name_len), Some(extra)) = (
                be_u64(&dir, pos),
                be_u32(&dir, pos + 8),
                be_u16(&dir, pos + 18),
                be_u32(&dir, pos + 20),
            ) else {
                report.error(format!(
                    "ERROR bitmap directory entry {n} at offset {:#x} is cut off",
                    dir_offset + pos as u64
                ));
                return;
            };
            let entries = u64::from(table_size);
            counter.add(
                report,
                table_offset,
                entries * 8,
                &format!("qcow2 bitmap table {n}"),
            );
            if inside(table_offset, entries * 8, self.file.size()) {
                if let Ok(table) = read_entries(self.file, table_offset, entries) {
                    for e in table {
                        let data = e & OFFSET_MASK;
                        if data != 0 {
                            counter.add(report, data, cs, &format!("qcow2 bitmap {n} data"));
                        }
                    }
                }
            }
            let next = pos
                .checked_add(24 + extra as usize + usize::from(name_len))
                .and_then(|p| p.checked_next_multiple_of(8));
            let Some(next) = next else {
                return;
            };
            pos = next;
        }
    }

    /// The COPIED flag of the active L1 and L2 entries must be set exactly
    /// when the stored refcount of the cluster they point to is 1.
    fn copied_flags(&self, stored: &Stored, report: &mut CheckReport) {
        let h = self.header;
        let cs = h.cluster_size();
        let Ok(l1) = read_entries(self.file, h.l1_table_offset, u64::from(h.l1_size)) else {
            return;
        };
        let step = if h.extended_l2() { 2 } else { 1 };
        for (i, &l1e) in l1.iter().enumerate() {
            let l2 = l1e & OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            if let Some(refcount) = stored.get(l2 >> h.cluster_bits) {
                if (refcount == 1) != (l1e & COPIED != 0) {
                    report.error(format!(
                        "ERROR OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={l1e:#x} refcount={refcount}"
                    ));
                }
            }
            if !l2.is_multiple_of(cs) || !inside(l2, cs, self.file.size()) {
                continue;
            }
            let Ok(table) = read_entries(self.file, l2, cs / 8) else {
                continue;
            };
            for pair in table.chunks(step) {
                let entry = pair.first().copied().unwrap_or(0);
                let host = entry & OFFSET_MASK;
                if entry & COMPRESSED != 0 || host == 0 || h.has_data_file() {
                    continue;
                }
                let Some(refcount) = stored.get(host >> h.cluster_bits) else {
                    continue;
                };
                if (refcount == 1) != (entry & COPIED != 0) {
                    report.error(format!(
                        "ERROR OFLAG_COPIED data cluster: l2_entry={entry:#x} refcount={refcount}"
                    ));
                }
            }
        }
    }
}
