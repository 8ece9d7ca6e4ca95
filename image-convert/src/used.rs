//! Used mode: which bytes of a disk its file systems need, and a view of
//! the disk that reads everything else as zeros.
//!
//! [`used_layout`] reads the partition table (or finds a file system
//! spanning the whole disk), opens each partition's file system and asks
//! its crate for the byte ranges a copy must keep: the used blocks of its
//! allocation bitmap plus the metadata outside it (the NTFS backup boot
//! sector, the ext boot block; ext backup superblocks and descriptors are
//! in the bitmaps). Bytes of a partition past the end of its file system
//! are kept too: they are not the file system's to call free. Tables,
//! gaps, extended-partition containers, partitions with no known file
//! system and partitions that overlap another are not filtered at all.
//!
//! [`UsedFilter`] turns a layout into a [`ReadAt`] whose allocation map
//! reports every dropped range as zeros, so that the sector copy
//! ([`copy_sectors`](crate::copy_sectors)) skips them unchanged.

use core::ops::Range;

use disk_io::{Allocation, Error, Extent, ReadAt, Result, Window, clamp_query};
use fs_ext::{ExtFs, Options};
use fs_fat::FatVolume;
use fs_ntfs::NtfsVolume;
use partition::Partition;

use crate::inspect::{FileSystem, GuestContent, inspect, probe_filesystem};

/// One file system whose free space used mode leaves out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilteredVolume {
    /// Partition number, `None` for a file system spanning the whole disk.
    pub number: Option<u32>,
    /// Its file system.
    pub fs: FileSystem,
    /// First byte of the partition on the disk.
    pub start: u64,
    /// Length of the partition in bytes.
    pub size: u64,
    /// Byte ranges of the disk (absolute, sorted, disjoint, inside the
    /// partition) that are copied; the rest of the partition is not.
    pub keep: Vec<Range<u64>>,
}

impl FilteredVolume {
    /// Bytes kept.
    pub fn kept_bytes(&self) -> u64 {
        self.keep.iter().map(|r| r.end - r.start).sum()
    }
}

/// What used mode copies of a disk: everything except the free space of
/// the file systems listed here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsedLayout {
    /// The file systems whose free space is left out, by start.
    pub volumes: Vec<FilteredVolume>,
}

impl UsedLayout {
    /// The ranges left out (read as zeros), absolute, sorted, disjoint.
    pub fn dropped(&self) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        for v in &self.volumes {
            let end = v.start.saturating_add(v.size);
            let mut at = v.start;
            for k in &v.keep {
                if k.start > at {
                    out.push(at..k.start);
                }
                at = at.max(k.end);
            }
            if at < end {
                out.push(at..end);
            }
        }
        out
    }
}

/// Reads the layout of `disk` and the used map of every file system on it
/// that this workspace reads (see the module documentation).
///
/// A file system that is recognised by its signature but whose used map
/// cannot be read (corrupt bitmap, unsupported feature) is an error naming
/// the partition: copying it with its free space dropped could lose data,
/// and sector mode copies it whole.
pub fn used_layout<D: ReadAt + ?Sized>(disk: &D) -> Result<UsedLayout> {
    let mut volumes = Vec::new();
    match inspect(disk)? {
        GuestContent::FileSystem(fs) => {
            let keep = keep_ranges(disk, fs, 0, disk.size())
                .map_err(|e| e.context(format!("whole-disk {} file system", fs.name())))?;
            volumes.push(FilteredVolume {
                number: None,
                fs,
                start: 0,
                size: disk.size(),
                keep,
            });
        }
        GuestContent::Table(table) => {
            let parts: Vec<&Partition> = table
                .partitions
                .iter()
                .filter(|p| !p.kind.is_extended() && p.size > 0)
                .collect();
            for p in &parts {
                let end = p.start.saturating_add(p.size);
                // Two file systems claiming the same bytes cannot both
                // decide what is free there: copy both whole.
                let overlaps = parts.iter().any(|q| {
                    q.number != p.number
                        && q.start < end
                        && p.start < q.start.saturating_add(q.size)
                });
                if overlaps || end > disk.size() {
                    continue;
                }
                let window = Window::new(disk, p.start, p.size)?;
                let Some(fs) = probe_filesystem(&window)? else {
                    continue;
                };
                let keep = keep_ranges(disk, fs, p.start, p.size).map_err(|e| {
                    e.context(format!(
                        "partition {} ({} at byte {})",
                        p.number,
                        fs.name(),
                        p.start
                    ))
                })?;
                volumes.push(FilteredVolume {
                    number: Some(p.number),
                    fs,
                    start: p.start,
                    size: p.size,
                    keep,
                });
            }
        }
        GuestContent::Foreign(_) | GuestContent::Blank | GuestContent::Unrecognised => {}
    }
    volumes.sort_by_key(|v| v.start);
    Ok(UsedLayout { volumes })
}

/// The absolute byte ranges of the partition at `start` (`size` bytes)
/// holding `fs` that a copy keeps.
fn keep_ranges<D: ReadAt + ?Sized>(
    disk: &D,
    fs: FileSystem,
    start: u64,
    size: u64,
) -> Result<Vec<Range<u64>>> {
    let window = Window::new(disk, start, size)?;
    let (mut ranges, fs_end) = match fs {
        FileSystem::Fat(_) => {
            let vol = FatVolume::open(&window)?;
            (vol.used_byte_ranges()?, vol.boot_sector().volume_bytes())
        }
        FileSystem::Ext(_) => {
            let ext = ExtFs::open(&window)?;
            let mut ranges = ext.used_byte_ranges()?;
            let bs = ext.block_size() as u64;
            let end = ext.superblock().blocks_count.saturating_mul(bs);
            if ext
                .superblock()
                .incompat
                .contains(fs_ext::superblock::Incompat::RECOVER)
            {
                // The journal is not replayed on the copy: keep what the
                // on-disk bitmaps mark as well as what the replayed ones do.
                let raw = ExtFs::open_with(
                    &window,
                    Options {
                        replay_journal: false,
                        ..Options::default()
                    },
                )?;
                ranges.extend(raw.used_byte_ranges()?);
            }
            (ranges, end)
        }
        FileSystem::Ntfs => {
            let vol = NtfsVolume::open(&window)?;
            let boot = vol.boot_sector();
            let end = boot
                .total_clusters()
                .saturating_mul(u64::from(vol.cluster_size()));
            (vol.used_byte_ranges()?, end)
        }
    };
    // Whatever lies past the file system's own end is not its to free.
    if fs_end < size {
        ranges.push(fs_end..size);
    }
    Ok(normalise(ranges, start, size))
}

/// Most kept ranges one file system may have: beyond it (a badly
/// fragmented volume), the smallest gaps are copied too, so that the map
/// stays within 16 MiB whatever the disk size.
pub const MAX_KEEP_RANGES: usize = 1 << 20;

/// Clips relative `ranges` to `0..size`, sorts and merges them, and moves
/// them to absolute offsets from `start`; at most [`MAX_KEEP_RANGES`]
/// come back.
fn normalise(ranges: Vec<Range<u64>>, start: u64, size: u64) -> Vec<Range<u64>> {
    let mut out = merge(ranges, start, size, 0);
    // Double the smallest gap worth keeping out until the map is small.
    let mut gap = 4096u64;
    while out.len() > MAX_KEEP_RANGES && gap < size {
        out = merge(out, 0, u64::MAX, gap);
        gap = gap.saturating_mul(2);
    }
    out
}

/// Clips, sorts, shifts by `start` and merges ranges closer than `gap`.
fn merge(mut ranges: Vec<Range<u64>>, start: u64, size: u64, gap: u64) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end && r.start < size);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        let s = start.saturating_add(r.start);
        let e = start.saturating_add(r.end.min(size));
        match out.last_mut() {
            Some(prev) if prev.end.saturating_add(gap) >= s => prev.end = prev.end.max(e),
            _ => out.push(s..e),
        }
    }
    out
}

/// A disk whose dropped ranges read as zeros and are reported as
/// [`Allocation::Zero`] by its allocation map: the source of a used-mode
/// copy.
pub struct UsedFilter<S> {
    inner: S,
    dropped: Vec<Range<u64>>,
}

impl<S: ReadAt> UsedFilter<S> {
    /// Filters `inner` by `layout` (made by [`used_layout`] from the same
    /// disk).
    pub fn new(inner: S, layout: &UsedLayout) -> Self {
        UsedFilter {
            inner,
            dropped: layout.dropped(),
        }
    }

    /// Bytes read as zeros that the disk underneath may hold as data.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped.iter().map(|r| r.end - r.start).sum()
    }

    /// The first dropped range ending after `offset`.
    fn next_dropped(&self, offset: u64) -> Option<&Range<u64>> {
        let i = self.dropped.partition_point(|r| r.end <= offset);
        self.dropped.get(i)
    }
}

impl<S: ReadAt> ReadAt for UsedFilter<S> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)?;
        let end = offset.saturating_add(buf.len() as u64);
        let first = self.dropped.partition_point(|r| r.end <= offset);
        for r in self.dropped.get(first..).unwrap_or(&[]) {
            if r.start >= end {
                break;
            }
            let s = (r.start.max(offset) - offset) as usize;
            let e = (r.end.min(end) - offset) as usize;
            if let Some(z) = buf.get_mut(s..e) {
                z.fill(0);
            }
        }
        Ok(())
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.size(), offset, length)?;
        match self.next_dropped(offset) {
            Some(r) if r.start <= offset => {
                let n = (r.end - offset).min(length);
                Ok(Extent::new(offset, n, Allocation::Zero))
            }
            Some(r) => {
                let n = (r.start - offset).min(length);
                let e = self.inner.allocation(offset, n)?;
                if e.offset != offset || e.length == 0 || e.length > n {
                    return Err(Error::corrupt(
                        "allocation map answered outside the query",
                        offset,
                    ));
                }
                Ok(e)
            }
            None => self.inner.allocation(offset, length),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use disk_io::{MemDisk, WriteAt, extents};

    #[test]
    fn dropped_ranges_read_as_zero_holes() {
        let disk = MemDisk::from_vec(vec![7u8; 1 << 20]);
        let layout = UsedLayout {
            volumes: vec![FilteredVolume {
                number: Some(1),
                fs: FileSystem::Ntfs,
                start: 4096,
                size: 65536,
                keep: vec![4096..8192, 20000..30000],
            }],
        };
        assert_eq!(layout.dropped(), vec![8192..20000, 30000..69632]);
        let f = UsedFilter::new(&disk, &layout);
        assert_eq!(f.dropped_bytes(), 11808 + 39632);
        let runs: Vec<_> = extents(&f, 0, u64::MAX)
            .map(|e| e.map(|e| (e.offset, e.length, e.state)))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            runs,
            vec![
                (0, 8192, Allocation::Data),
                (8192, 11808, Allocation::Zero),
                (20000, 10000, Allocation::Data),
                (30000, 39632, Allocation::Zero),
                (69632, (1 << 20) - 69632, Allocation::Data),
            ]
        );
        let mut buf = vec![1u8; 30000];
        f.read_at(5000, &mut buf).unwrap();
        assert!(buf[..3192].iter().all(|&b| b == 7));
        assert!(buf[3192..15000].iter().all(|&b| b == 0));
        assert!(buf[15000..25000].iter().all(|&b| b == 7));
        assert!(buf[25000..].iter().all(|&b| b == 0));
        disk.write_at(0, &[1]).unwrap();
    }

    #[test]
    fn normalise_clips_sorts_and_merges() {
        let r = normalise(vec![50..60, 0..10, 5..20, 90..200, 300..400], 1000, 100);
        assert_eq!(r, vec![1000..1020, 1050..1060, 1090..1100]);
    }

    #[test]
    fn fragmented_maps_are_coarsened() {
        let n = MAX_KEEP_RANGES as u64 * 2;
        let ranges: Vec<_> = (0..n).map(|i| i * 8192..i * 8192 + 4096).collect();
        let r = normalise(ranges, 0, n * 8192);
        assert!(r.len() <= MAX_KEEP_RANGES);
        assert_eq!(r.first().map(|r| r.start), Some(0));
        assert_eq!(r.last().map(|r| r.end), Some((n - 1) * 8192 + 4096));
    }

    #[test]
    fn blank_disk_has_nothing_to_filter() {
        let layout = used_layout(&MemDisk::new(1 << 20)).unwrap();
        assert!(layout.volumes.is_empty());
    }
}
