//! A FAT volume opened for reading: directories, lookups, file data and
//! the map of used clusters.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;

use disk_io::sync::Lock;
use disk_io::{Error, ReadAt, Result};

use crate::FatType;
use crate::boot_sector::{BootSector, FsInfo};
use crate::dir::{self, DirLocation};
use crate::dir_entry::{Attributes, DirEntry};
use crate::fat::Fat;

/// Deepest directory nesting [`FatVolume::walk`] follows.
pub const MAX_DEPTH: usize = 256;
/// Files whose cluster runs stay cached.
const RUN_CACHE_FILES: usize = 8;

/// Most checkpoints kept for one file (256 KiB).
pub const MAX_CHECKPOINTS: u64 = 65_536;

/// Every `stride`-th cluster of a file's chain, from the first.
struct ChainIndex {
    stride: u32,
    points: Vec<u32>,
}

type Index = Arc<ChainIndex>;

struct RunCache {
    files: Vec<(u32, u32, u64, Index)>,
    clock: u64,
}

/// A FAT12, FAT16 or FAT32 volume read from `D`.
pub struct FatVolume<D: ReadAt> {
    disk: D,
    boot: BootSector,
    fat: Fat,
    runs: Lock<RunCache>,
}

/// The clusters in use: every cluster whose FAT entry is not free
/// (allocated, end of chain or bad), as `fsck.fat` counts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedClusters {
    ranges: Vec<Range<u32>>,
}

impl UsedClusters {
    /// Increasing, non-adjacent ranges of used cluster numbers.
    pub fn ranges(&self) -> &[Range<u32>] {
        &self.ranges
    }

    /// Number of used clusters.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|r| u64::from(r.end - r.start)).sum()
    }

    /// True when `cluster` is in use.
    pub fn contains(&self, cluster: u32) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= cluster);
        self.ranges.get(i).is_some_and(|r| r.contains(&cluster))
    }
}

impl<D: ReadAt> FatVolume<D> {
    /// Opens the FAT volume that starts at byte 0 of `disk`.
    pub fn open(disk: D) -> Result<Self> {
        let boot = BootSector::read(&disk)?;
        let fat = Fat::new(&boot);
        Ok(FatVolume {
            disk,
            boot,
            fat,
            runs: Lock::new(RunCache {
                files: Vec::new(),
                clock: 0,
            }),
        })
    }

    /// The disk underneath.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// The parsed boot sector.
    pub fn boot_sector(&self) -> &BootSector {
        &self.boot
    }

    /// FAT12, FAT16 or FAT32.
    pub fn fat_type(&self) -> FatType {
        self.boot.fat_type
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u32 {
        self.boot.cluster_size()
    }

    /// Number of data clusters (numbered from 2).
    pub fn cluster_count(&self) -> u32 {
        self.boot.cluster_count
    }

    /// Volume serial number.
    pub fn serial(&self) -> Option<u32> {
        self.boot.serial
    }

    /// The volume label: the root directory's label entry (what Windows
    /// and `mlabel` show), else the boot sector's, else `None`.
    pub fn label(&self) -> Result<Option<String>> {
        let root = dir::read(&self.disk, &self.boot, &self.fat, self.root_location())?;
        Ok(root
            .label
            .filter(|l| !l.is_empty())
            .or_else(|| self.boot.bpb_label.clone()))
    }

    /// The FAT32 FSInfo sector's free-space hints.
    pub fn fs_info(&self) -> Result<Option<FsInfo>> {
        FsInfo::read(&self.disk, &self.boot)
    }

    /// The FAT32 backup boot sector, parsed, when the BPB names one.
    pub fn backup_boot_sector(&self) -> Result<Option<BootSector>> {
        let sector = self.boot.backup_boot_sector;
        if self.boot.fat_type != FatType::Fat32 || sector == 0 || sector == 0xffff {
            return Ok(None);
        }
        if sector >= self.boot.reserved_sectors {
            return Err(Error::corrupt(
                format!(
                    "FAT boot sector field BPB_BkBootSec (byte 50) is sector {sector}, outside the {} reserved sectors",
                    self.boot.reserved_sectors
                ),
                50,
            ));
        }
        let offset = u64::from(sector) * u64::from(self.boot.bytes_per_sector);
        BootSector::read_at(&self.disk, offset).map(Some)
    }

    fn root_location(&self) -> DirLocation {
        DirLocation::of_cluster(&self.boot, 0)
    }

    /// The root directory as an entry (name `""`, first cluster 0).
    pub fn root(&self) -> DirEntry {
        DirEntry {
            name: String::new(),
            short_name: String::new(),
            has_long_name: false,
            attributes: Attributes::DIRECTORY,
            first_cluster: 0,
            size: 0,
            created: None,
            modified: None,
            accessed: None,
            offset: 0,
        }
    }

    /// The entries of directory `dir` (without `.`, `..` and the label).
    pub fn read_dir(&self, dir: &DirEntry) -> Result<Vec<DirEntry>> {
        if !dir.is_dir() {
            return Err(Error::invalid_input(format!(
                "{}: not a directory",
                dir.name
            )));
        }
        self.check_first_cluster(dir)?;
        self.read_dir_at(dir.first_cluster)
    }

    /// The entries of the directory starting at `cluster` (0: the root).
    pub fn read_dir_at(&self, cluster: u32) -> Result<Vec<DirEntry>> {
        let location = DirLocation::of_cluster(&self.boot, cluster);
        Ok(dir::read(&self.disk, &self.boot, &self.fat, location)?.entries)
    }

    fn check_first_cluster(&self, entry: &DirEntry) -> Result<()> {
        let c = entry.first_cluster;
        if c != 0 && !(2..=self.fat.last_cluster()).contains(&c) {
            return Err(Error::corrupt(
                format!(
                    "directory entry '{}': first cluster {c} outside 2..={}",
                    entry.name,
                    self.fat.last_cluster()
                ),
                entry.offset,
            ));
        }
        Ok(())
    }

    /// The entry called `name` in `dir`, compared without regard to case
    /// (Unicode simple lowercase), against the long and the 8.3 name.
    pub fn lookup(&self, dir: &DirEntry, name: &str) -> Result<Option<DirEntry>> {
        Ok(self
            .read_dir(dir)?
            .into_iter()
            .find(|e| same_name(&e.name, name) || same_name(&e.short_name, name)))
    }

    /// The entry called `name` in the directory starting at `cluster` (0:
    /// the root), compared as [`lookup`](Self::lookup) does.
    pub fn lookup_at(&self, cluster: u32, name: &str) -> Result<Option<DirEntry>> {
        Ok(self
            .read_dir_at(cluster)?
            .into_iter()
            .find(|e| same_name(&e.name, name) || same_name(&e.short_name, name)))
    }

    /// The identity of the directory starting at `cluster`: 0 for the
    /// root (also when a FAT32 entry names the root's own cluster), else
    /// the cluster.
    pub fn dir_key(&self, cluster: u32) -> u32 {
        match DirLocation::of_cluster(&self.boot, cluster) {
            DirLocation::FixedRoot => 0,
            DirLocation::Chain(c) if c == self.boot.root_cluster => 0,
            DirLocation::Chain(c) => c,
        }
    }

    /// The entry at the `/`-separated `path` from the root.
    pub fn open_path(&self, path: &str) -> Result<DirEntry> {
        let mut entry = self.root();
        for (depth, part) in path.split('/').filter(|p| !p.is_empty()).enumerate() {
            if depth >= MAX_DEPTH {
                return Err(Error::invalid_input(format!(
                    "{path}: deeper than {MAX_DEPTH} levels"
                )));
            }
            entry = self.lookup(&entry, part)?.ok_or_else(|| {
                Error::invalid_input(format!("{path}: no such file or directory"))
            })?;
        }
        Ok(entry)
    }

    /// Reads file data at `offset` into `buf`; returns the bytes read, 0
    /// at or past the end of the file.
    pub fn read_file(&self, file: &DirEntry, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if file.is_dir() {
            return Err(Error::invalid_input(format!(
                "{}: is a directory",
                file.name
            )));
        }
        self.check_first_cluster(file)?;
        self.read_chain(file.first_cluster, file.size, offset, buf)
            .map_err(|e| {
                e.context(format!(
                    "file '{}' (entry at offset {:#x})",
                    file.name, file.offset
                ))
            })
    }

    /// Reads `size` bytes of data stored in the chain starting at
    /// `first_cluster` (0 with size 0: an empty file), at `offset`.
    /// Contiguous clusters are read in one request.
    pub fn read_chain(
        &self,
        first_cluster: u32,
        size: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let size = u64::from(size);
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        if first_cluster == 0 {
            return Err(Error::corrupt(
                format!("a file of {size} bytes has no first cluster"),
                0,
            ));
        }
        let index = self.chain_index(first_cluster, size)?;
        let cs = u64::from(self.cluster_size());
        let want = buf
            .len()
            .min(usize::try_from(size - offset).unwrap_or(usize::MAX));
        let end = offset + want as u64;
        // Start from the checkpoint at or before the first cluster wanted.
        let first_idx = offset / cs;
        let point = first_idx / u64::from(index.stride);
        let mut idx = point * u64::from(index.stride);
        let mut cluster = usize::try_from(point)
            .ok()
            .and_then(|p| index.points.get(p).copied())
            .ok_or_else(|| Error::corrupt("cluster chain index", 0))?;
        while idx < first_idx {
            cluster = self.next_of(cluster)?;
            idx += 1;
        }
        let mut pos = offset;
        while pos < end {
            let (run_idx, run_cluster) = (idx, cluster);
            let mut run_len = 1u64;
            while (run_idx + run_len) * cs < end {
                cluster = self.next_of(cluster)?;
                idx += 1;
                if u64::from(cluster) != u64::from(run_cluster) + run_len {
                    break;
                }
                run_len += 1;
            }
            let run_end = ((run_idx + run_len) * cs).min(end);
            let disk_at =
                self.boot.cluster_offset(run_cluster).ok_or_else(|| {
                    Error::corrupt(format!("cluster {run_cluster} out of range"), 0)
                })? + (pos - run_idx * cs);
            let chunk = usize::try_from(pos - offset)
                .ok()
                .zip(usize::try_from(run_end - offset).ok())
                .and_then(|(a, b)| buf.get_mut(a..b))
                .ok_or_else(|| Error::invalid_input("read buffer"))?;
            self.disk.read_at(disk_at, chunk)?;
            pos = run_end;
        }
        Ok(want)
    }

    /// The next cluster of a chain already checked by [`chain_index`].
    fn next_of(&self, cluster: u32) -> Result<u32> {
        self.fat.next(&self.disk, cluster)?.ok_or_else(|| {
            Error::corrupt(
                format!("cluster chain ends early at cluster {cluster}"),
                self.fat.entry_offset(cluster),
            )
        })
    }

    /// Checkpoints into the chain at `first` holding `size` bytes: the
    /// whole chain is checked once (bounds, loops, enough clusters) and
    /// every `stride`-th cluster of the file is remembered, at most
    /// [`MAX_CHECKPOINTS`] per file, for a few files.
    fn chain_index(&self, first: u32, size: u64) -> Result<Index> {
        let found = self.runs.with_write(|cache| {
            cache.clock += 1;
            let clock = cache.clock;
            Ok(cache
                .files
                .iter_mut()
                .find(|f| f.0 == first && u64::from(f.1) == size)
                .map(|f| {
                    f.2 = clock;
                    Arc::clone(&f.3)
                }))
        })?;
        if let Some(index) = found {
            return Ok(index);
        }
        let cs = u64::from(self.cluster_size());
        let needed = size.div_ceil(cs);
        let stride = u32::try_from(needed.div_ceil(MAX_CHECKPOINTS).max(1))
            .map_err(|_| Error::invalid_input("file too large"))?;
        let mut points = Vec::new();
        let mut have = 0u64;
        for cluster in self.fat.chain(&self.disk, first) {
            let cluster = cluster?;
            if have < needed && have.is_multiple_of(u64::from(stride)) {
                points.push(cluster);
            }
            have += 1;
        }
        if have < needed {
            return Err(Error::corrupt(
                format!(
                    "cluster chain at cluster {first} holds {have} clusters, the size {size} needs {needed}"
                ),
                self.fat.entry_offset(first),
            ));
        }
        let index = Arc::new(ChainIndex { stride, points });
        let size32 = u32::try_from(size).unwrap_or(u32::MAX);
        self.runs.with_write(|cache| {
            if cache.files.len() >= RUN_CACHE_FILES {
                if let Some(i) =
                    (0..cache.files.len()).min_by_key(|&i| cache.files.get(i).map_or(0, |f| f.2))
                {
                    cache.files.swap_remove(i);
                }
            }
            let clock = cache.clock;
            cache.files.push((first, size32, clock, Arc::clone(&index)));
            Ok(())
        })?;
        Ok(index)
    }

    /// The clusters of the chain starting at `first`, in order, checked
    /// for bounds and loops as file reads check them.
    pub fn chain(&self, first: u32) -> crate::fat::Chain<'_, D> {
        self.fat.chain(&self.disk, first)
    }

    /// The clusters whose FAT entry is not free, as `fsck.fat` counts them.
    pub fn used_clusters(&self) -> Result<UsedClusters> {
        Ok(UsedClusters {
            ranges: self.fat.used_ranges(&self.disk)?,
        })
    }

    /// Byte ranges of the volume a copy must keep: the reserved area,
    /// FATs and root directory, then every used cluster.
    pub fn used_byte_ranges(&self) -> Result<Vec<Range<u64>>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        out.push(0..self.boot.data_offset());
        let cs = u64::from(self.cluster_size());
        for r in self.used_clusters()?.ranges() {
            let (Some(start), Some(last)) = (
                self.boot.cluster_offset(r.start),
                self.boot.cluster_offset(r.end - 1),
            ) else {
                continue;
            };
            let range = start..last + cs;
            match out.last_mut() {
                Some(prev) if prev.end == range.start => prev.end = range.end,
                _ => out.push(range),
            }
        }
        Ok(out)
    }

    /// Visits every entry below the root, depth first, with its
    /// `/`-separated path. A directory reached twice (a cycle, or two
    /// entries sharing one directory) or nesting past [`MAX_DEPTH`] is an
    /// error naming the entry and its offset.
    pub fn walk(&self, visit: &mut dyn FnMut(&str, &DirEntry) -> Result<()>) -> Result<()> {
        let mut seen = BTreeSet::new();
        seen.insert(self.dir_key(0));
        let root = self.root();
        self.walk_in(&root, "", 0, &mut seen, visit)
    }

    fn walk_in(
        &self,
        dir: &DirEntry,
        prefix: &str,
        depth: usize,
        seen: &mut BTreeSet<u32>,
        visit: &mut dyn FnMut(&str, &DirEntry) -> Result<()>,
    ) -> Result<()> {
        for entry in self.read_dir(dir)? {
            let path = format!("{prefix}/{}", entry.name);
            visit(&path, &entry)?;
            if entry.is_dir() {
                if !seen.insert(self.dir_key(entry.first_cluster)) {
                    return Err(Error::corrupt(
                        format!(
                            "directory entry {path}: its directory (cluster {}) was already reached on another path (a directory cycle or cross-link)",
                            entry.first_cluster
                        ),
                        entry.offset,
                    ));
                }
                if depth + 1 >= MAX_DEPTH {
                    return Err(Error::corrupt(
                        format!("directory {path} nested deeper than {MAX_DEPTH} levels"),
                        entry.offset,
                    ));
                }
                self.walk_in(&entry, &path, depth + 1, seen, visit)?;
            }
        }
        Ok(())
    }
}

/// Compares two names the way FAT does: without regard to case.
fn same_name(a: &str, b: &str) -> bool {
    let mut x = a.chars().flat_map(char::to_lowercase);
    let mut y = b.chars().flat_map(char::to_lowercase);
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (p, q) if p == q => {}
            _ => return false,
        }
    }
}
