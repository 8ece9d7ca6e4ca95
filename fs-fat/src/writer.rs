//! A FAT volume open for writing: create directories and files (long
//! names, unique 8.3 aliases), write, extend, truncate and delete files,
//! set attributes and times.
//!
//! The whole FAT lives in memory (its on-disk bytes: at most 1 GiB for the
//! largest FAT32, usually a few MiB) with a bitmap of changed 4 KiB blocks;
//! directories are cached whole (at most 2 MiB each) in a bounded cache.
//! File data goes straight to the disk, one request per run of contiguous
//! clusters. [`FatWriter::flush`] writes the changed directory clusters,
//! the changed FAT blocks to every FAT copy, and on FAT32 the FSInfo free
//! count and next-free hint, then flushes the disk. Nothing reaches the
//! FAT on disk before a flush: dropping the writer without one loses the
//! changes since the last.
//!
//! Allocation is contiguous whenever the volume allows it: a file grows
//! into the clusters that follow its last one, new chains start at the
//! first run of free clusters long enough (from the next-free hint), and
//! a size hint given at creation reserves the whole run at once (what is
//! not written is released when the file is closed: when another file is
//! written or created, or at the next flush).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::{Error, Result, WriteAt};

use crate::FatType;
use crate::boot_sector::BootSector;
use crate::dir::MAX_DIR_BYTES;
use crate::dir_entry::{Attributes, DELETED, ENTRY_SIZE, ShortEntry, Slot, Timestamp, unix_to_dos};
use crate::fat_table::{FAT_BLOCK, FatTable};
use crate::format::{FormatOptions, format};
use crate::long_name::{self, LongNameBuilder};
use crate::short_name;

/// Directories kept in the cache.
const DIR_CACHE: usize = 64;
/// Bytes of directories kept in the cache.
const DIR_CACHE_BYTES: usize = 32 << 20;
/// Slot number of the root (which has no entry).
const ROOT_SLOT: u32 = u32::MAX;
/// Largest file size FAT can record.
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// A file or directory of a [`FatWriter`]'s volume: where its entry is.
/// It stays valid until the entry is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// The directory holding the entry (its first cluster; 0: the root).
    parent: u32,
    /// Index of the short entry in that directory (`ROOT_SLOT`: the root).
    slot: u32,
    /// A directory's first cluster (0 for the root and for files).
    cluster: u32,
    dir: bool,
}

impl Node {
    /// True for a directory (the root included).
    pub fn is_dir(&self) -> bool {
        self.dir
    }

    /// True for the root directory.
    pub fn is_root(&self) -> bool {
        self.slot == ROOT_SLOT
    }

    /// A directory's first cluster (0 for the root and for files); the
    /// `first_cluster` a reader's `DirEntry` shows for it.
    pub fn cluster(&self) -> u32 {
        self.cluster
    }
}

/// Times of an entry; `None` leaves a time as it is (at creation: the
/// writer's [default time](FatWriter::set_default_time)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileTimes {
    /// Creation time (kept to 10 ms).
    pub created: Option<Timestamp>,
    /// Last modification (kept to 2 s, rounded down).
    pub modified: Option<Timestamp>,
    /// Last access (kept as a date).
    pub accessed: Option<Timestamp>,
}

/// What [`FatWriter::entry`] tells about a file or directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The 8.3 entry as stored.
    pub short: ShortEntry,
    /// Size in bytes (0 for directories).
    pub size: u32,
    /// First cluster (0: none).
    pub first_cluster: u32,
}

/// One directory, cached whole.
struct DirBuf {
    /// Its clusters (empty for the fixed FAT12/16 root).
    clusters: Vec<u32>,
    bytes: Vec<u8>,
    /// Changed byte range (empty when clean).
    dirty: (usize, usize),
    /// Folded names (long and 8.3) to the slot of their short entry.
    names: BTreeMap<String, u32>,
    /// 8.3 names in use.
    shorts: BTreeSet<[u8; 11]>,
    /// Slot of a short entry to (first slot of its long name, folded long
    /// name).
    entries: BTreeMap<u32, (u32, Option<String>)>,
    /// Lowest slot that may be free.
    first_free: usize,
    used: u64,
}

impl DirBuf {
    fn slots(&self) -> usize {
        self.bytes.len() / ENTRY_SIZE
    }

    fn slot(&self, i: usize) -> Option<&[u8]> {
        self.bytes.get(i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE)
    }

    fn is_free(&self, i: usize) -> bool {
        matches!(
            self.slot(i).and_then(|s| s.first()),
            Some(&0) | Some(&DELETED)
        )
    }

    fn put(&mut self, i: usize, raw: &[u8; ENTRY_SIZE]) {
        let at = i * ENTRY_SIZE;
        if let Some(dst) = self.bytes.get_mut(at..at + ENTRY_SIZE) {
            dst.copy_from_slice(raw);
            self.mark(at, at + ENTRY_SIZE);
        }
    }

    fn mark(&mut self, lo: usize, hi: usize) {
        if self.dirty.0 >= self.dirty.1 {
            self.dirty = (lo, hi);
        } else {
            self.dirty = (self.dirty.0.min(lo), self.dirty.1.max(hi));
        }
    }

    fn short(&self, i: usize) -> Option<ShortEntry> {
        match Slot::parse(self.slot(i)?)? {
            Slot::Short(s) => Some(s),
            _ => None,
        }
    }

    /// Indexes the entries (after loading).
    fn index(&mut self) {
        let mut names = LongNameBuilder::new();
        let mut lfn_start = 0u32;
        let mut end = self.slots();
        for i in 0..self.slots() {
            let Some(slot) = self.slot(i).and_then(Slot::parse) else {
                break;
            };
            match slot {
                Slot::End => {
                    end = i;
                    break;
                }
                Slot::Deleted => names.reset(),
                Slot::LongName(piece) => {
                    if piece.last {
                        lfn_start = i as u32;
                    }
                    names.push(&piece);
                }
                Slot::Short(short) => {
                    let long = names.finish(short.checksum());
                    if short.is_volume_label() {
                        // No file may share the label's 11 bytes.
                        self.shorts.insert(short.name);
                        continue;
                    }
                    if short.attributes.contains(Attributes::VOLUME_ID) || short.is_dot() {
                        continue;
                    }
                    let slot = i as u32;
                    let start = if long.is_some() { lfn_start } else { slot };
                    let key = long.as_deref().map(fold);
                    if let Some(k) = &key {
                        self.names.insert(k.clone(), slot);
                    }
                    self.names.insert(fold(&short.display_name()), slot);
                    self.shorts.insert(short.name);
                    self.entries.insert(slot, (start, key));
                }
            }
        }
        // Past the end marker every slot must read as free: a new entry
        // there moves the marker.
        let from = end * ENTRY_SIZE;
        if self
            .bytes
            .get(from..)
            .is_some_and(|rest| rest.iter().any(|&b| b != 0))
        {
            let len = self.bytes.len();
            if let Some(rest) = self.bytes.get_mut(from..) {
                rest.fill(0);
            }
            self.mark(from, len);
        }
        self.first_free = (0..self.slots())
            .find(|&i| self.is_free(i))
            .unwrap_or(self.slots());
    }
}

/// Folds a name for case-insensitive comparison (Unicode lowercase), as
/// the reader's lookups compare.
pub(crate) fn fold(name: &str) -> String {
    name.chars().flat_map(char::to_lowercase).collect()
}

/// A file being written: its chain, and a position in it.
#[derive(Clone, Copy, Debug)]
struct OpenFile {
    node: Node,
    first: u32,
    last: u32,
    count: u32,
    size: u32,
    pos: (u32, u32),
}

/// A FAT12, FAT16 or FAT32 volume open for writing on `D`.
///
/// ```
/// use disk_io::MemDisk;
/// use fs_fat::{Attributes, FatVolume, FatWriter, FileTimes, FormatOptions};
///
/// let disk = MemDisk::new(1_474_560);
/// let mut w = FatWriter::format(&disk, &FormatOptions::default())?;
/// let root = w.root();
/// let docs = w.create_dir(root, "My documents", &FileTimes::default(), Attributes::empty())?;
/// let f = w.create_file(docs, "naïve 日本.txt", &FileTimes::default(), Attributes::ARCHIVE, 5)?;
/// w.write(f, 0, b"hello")?;
/// w.flush()?;
///
/// let v = FatVolume::open(&disk)?;
/// let e = v.open_path("my documents/NAÏVE 日本.TXT")?;
/// let mut buf = [0u8; 5];
/// v.read_file(&e, 0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct FatWriter<D: WriteAt> {
    disk: D,
    boot: BootSector,
    fat: FatTable,
    dirs: BTreeMap<u32, DirBuf>,
    dir_bytes: usize,
    clock: u64,
    current: Option<OpenFile>,
    now: Timestamp,
    /// File data on its way to the disk, and a spare buffer.
    pending: Option<Pending>,
    spare: Option<Vec<u8>>,
}

/// A run of file data not yet written.
struct Pending {
    at: u64,
    buf: Vec<u8>,
    /// Zeros may be padded up to here (slack past the end of a file).
    slack_end: u64,
}

/// Most bytes of file data gathered into one write.
const PENDING_MAX: usize = 4 << 20;

impl<D: WriteAt> FatWriter<D> {
    /// Formats `disk` with `opts` (see [`format()`](crate::format())) and opens it.
    pub fn format(disk: D, opts: &FormatOptions) -> Result<Self> {
        format(&disk, opts)?;
        let mut w = Self::open(disk)?;
        w.now = opts.time;
        Ok(w)
    }

    /// Opens the FAT volume at byte 0 of `disk` for writing: reads the
    /// boot sector and the whole active FAT, and counts the free clusters
    /// (the FSInfo hint is not trusted).
    pub fn open(disk: D) -> Result<Self> {
        let boot = BootSector::read(&disk)?;
        if boot.volume_bytes() > disk.size() {
            return Err(Error::corrupt(
                format!(
                    "FAT boot sector: the volume of {} bytes is larger than its disk ({} bytes)",
                    boot.volume_bytes(),
                    disk.size()
                ),
                19,
            ));
        }
        let entries = u64::from(boot.cluster_count) + 2;
        let len = match boot.fat_type {
            FatType::Fat12 => (entries * 3).div_ceil(2),
            FatType::Fat16 => entries * 2,
            FatType::Fat32 => entries * 4,
        };
        let len = usize::try_from(len).map_err(|_| Error::unsupported("FAT too large"))?;
        let mut bytes = vec![0u8; len];
        disk.read_at(boot.fat_offset(boot.active_fat), &mut bytes)
            .map_err(|e| e.context("FAT"))?;
        let blocks = len.div_ceil(FAT_BLOCK);
        let mut fat = FatTable {
            fat_type: boot.fat_type,
            bytes,
            dirty: vec![0; blocks.div_ceil(64)],
            last: boot.cluster_count + 1,
            free: 0,
            next_free: 2,
        };
        fat.free = (2..=fat.last).filter(|&c| fat.get(c) == 0).count() as u32;
        if let Ok(Some(info)) = crate::FsInfo::read(&disk, &boot) {
            if let Some(n) = info.next_free.filter(|n| (2..=fat.last).contains(n)) {
                fat.next_free = n;
            }
        }
        Ok(FatWriter {
            disk,
            boot,
            fat,
            dirs: BTreeMap::new(),
            dir_bytes: 0,
            clock: 0,
            current: None,
            pending: None,
            spare: None,
            now: Timestamp {
                seconds: crate::dir_entry::DOS_EPOCH,
                nanoseconds: 0,
            },
        })
    }

    /// The time given to entries created without one.
    pub fn set_default_time(&mut self, now: Timestamp) {
        self.now = now;
    }

    /// The boot sector.
    pub fn boot_sector(&self) -> &BootSector {
        &self.boot
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u32 {
        self.boot.cluster_size()
    }

    /// Free clusters.
    pub fn free_clusters(&self) -> u32 {
        self.fat.free
    }

    /// The disk underneath (changes since the last flush may not be on
    /// it yet).
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// The root directory.
    pub fn root(&self) -> Node {
        Node {
            parent: 0,
            slot: ROOT_SLOT,
            cluster: 0,
            dir: true,
        }
    }

    // ---- directories -------------------------------------------------

    /// Loads directory `key` (0: the root) into the cache.
    fn load(&mut self, key: u32) -> Result<()> {
        self.clock += 1;
        let clock = self.clock;
        if let Some(d) = self.dirs.get_mut(&key) {
            d.used = clock;
            return Ok(());
        }
        let cs = u64::from(self.boot.cluster_size());
        let (clusters, bytes) = if key == 0 && self.boot.fat_type != FatType::Fat32 {
            let len = usize::try_from(self.boot.root_dir_bytes())
                .map_err(|_| Error::unsupported("root directory too large"))?;
            let mut bytes = vec![0u8; len];
            self.disk
                .read_at(self.boot.root_dir_offset(), &mut bytes)
                .map_err(|e| e.context("FAT root directory"))?;
            (Vec::new(), bytes)
        } else {
            let first = if key == 0 {
                self.boot.root_cluster
            } else {
                key
            };
            let clusters = self
                .fat
                .chain(&self.boot, first, MAX_DIR_BYTES.div_ceil(cs))
                .map_err(|e| e.context(format!("directory at cluster {first}")))?;
            let len = usize::try_from(clusters.len() as u64 * cs)
                .map_err(|_| Error::unsupported("directory too large"))?;
            let mut bytes = vec![0u8; len];
            let cs_us = cs as usize;
            for (i, &c) in clusters.iter().enumerate() {
                let at = self.cluster_offset(c)?;
                let dst = bytes
                    .get_mut(i * cs_us..(i + 1) * cs_us)
                    .ok_or_else(|| Error::invalid_input("directory buffer"))?;
                self.disk
                    .read_at(at, dst)
                    .map_err(|e| e.context(format!("directory cluster {c}")))?;
            }
            (clusters, bytes)
        };
        let mut d = DirBuf {
            clusters,
            bytes,
            dirty: (0, 0),
            names: BTreeMap::new(),
            shorts: BTreeSet::new(),
            entries: BTreeMap::new(),
            first_free: 0,
            used: clock,
        };
        d.index();
        self.insert_dir(key, d)
    }

    fn insert_dir(&mut self, key: u32, d: DirBuf) -> Result<()> {
        self.dir_bytes += d.bytes.len();
        self.dirs.insert(key, d);
        while self.dirs.len() > DIR_CACHE || self.dir_bytes > DIR_CACHE_BYTES {
            let victim = self
                .dirs
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, d)| d.used)
                .map(|(k, _)| *k);
            let Some(v) = victim else { break };
            self.write_dir(v)?;
            if let Some(d) = self.dirs.remove(&v) {
                self.dir_bytes -= d.bytes.len();
            }
        }
        Ok(())
    }

    fn dir(&mut self, key: u32) -> Result<&mut DirBuf> {
        self.load(key)?;
        self.dirs
            .get_mut(&key)
            .ok_or_else(|| Error::invalid_input("directory cache"))
    }

    fn cluster_offset(&self, c: u32) -> Result<u64> {
        self.boot
            .cluster_offset(c)
            .ok_or_else(|| Error::corrupt(format!("cluster {c} outside the volume"), 0))
    }

    /// Writes the changed part of a cached directory.
    fn write_dir(&mut self, key: u32) -> Result<()> {
        if self.dirs.get(&key).is_some_and(|d| d.dirty.0 < d.dirty.1) {
            self.flush_data()?;
        }
        let cs = self.boot.cluster_size() as usize;
        let root_at = self.boot.root_dir_offset();
        let data_at = self.boot.data_offset();
        let Some(d) = self.dirs.get_mut(&key) else {
            return Ok(());
        };
        let (lo, hi) = d.dirty;
        if lo >= hi {
            return Ok(());
        }
        if d.clusters.is_empty() {
            let part = d.bytes.get(lo..hi).unwrap_or(&[]);
            self.disk.write_at(root_at + lo as u64, part)?;
        } else {
            let (first, last) = (lo / cs, (hi - 1) / cs);
            let mut i = first;
            while i <= last {
                let start = i;
                while i < last
                    && d.clusters.get(i + 1).copied()
                        == d.clusters.get(i).map(|c| c.wrapping_add(1))
                {
                    i += 1;
                }
                let c = d.clusters.get(start).copied().unwrap_or(0);
                let at = data_at + u64::from(c.wrapping_sub(2)) * cs as u64;
                let part = d.bytes.get(start * cs..(i + 1) * cs).unwrap_or(&[]);
                self.disk.write_at(at, part)?;
                i += 1;
            }
        }
        d.dirty = (0, 0);
        Ok(())
    }

    /// The live short entry at `node`, checked against it.
    fn short_of(&mut self, node: Node) -> Result<ShortEntry> {
        if node.is_root() {
            return Err(Error::invalid_input("the FAT root directory has no entry"));
        }
        let d = self.dir(node.parent)?;
        let short = d
            .entries
            .contains_key(&node.slot)
            .then(|| d.short(node.slot as usize))
            .flatten();
        let fat32 = self.boot.fat_type == FatType::Fat32;
        match short {
            Some(s)
                if s.attributes.contains(Attributes::DIRECTORY) == node.dir
                    && (!node.dir || s.first_cluster(fat32) == node.cluster) =>
            {
                Ok(s)
            }
            _ => Err(Error::invalid_input(format!(
                "FAT node {node:?} no longer names an entry (removed?)"
            ))),
        }
    }

    fn put_short(&mut self, node: Node, short: &ShortEntry) -> Result<()> {
        let d = self.dir(node.parent)?;
        d.put(node.slot as usize, &short.to_bytes());
        Ok(())
    }

    fn dir_key(&self, node: Node) -> Result<u32> {
        if !node.dir {
            return Err(Error::invalid_input("not a directory"));
        }
        Ok(node.cluster)
    }

    /// Finds `need` consecutive free slots in directory `key`, growing it
    /// by a cluster at a time (not the fixed root).
    fn find_slots(&mut self, key: u32, need: usize) -> Result<usize> {
        let cs = self.boot.cluster_size() as usize;
        loop {
            let d = self.dir(key)?;
            let slots = d.slots();
            let mut i = d.first_free;
            let mut run = 0;
            let mut start = i;
            while i < slots {
                if d.is_free(i) {
                    if run == 0 {
                        start = i;
                    }
                    run += 1;
                    if run == need {
                        return Ok(start);
                    }
                } else {
                    run = 0;
                }
                i += 1;
            }
            // Grow.
            if d.clusters.is_empty() {
                return Err(Error::invalid_input(format!(
                    "FAT root directory full ({slots} entries)"
                )));
            }
            if (d.bytes.len() + cs) as u64 > MAX_DIR_BYTES {
                return Err(Error::invalid_input(format!(
                    "FAT directory full ({} entries, the most a directory holds)",
                    MAX_DIR_BYTES / ENTRY_SIZE as u64
                )));
            }
            let last = d.clusters.last().copied();
            let (c, _) = self.fat.allocate(1, last)?;
            let d = self.dir(key)?;
            let old = d.bytes.len();
            d.clusters.push(c);
            d.bytes.resize(old + cs, 0);
            d.mark(old, old + cs);
            self.dir_bytes += cs;
        }
    }

    fn stamp(&self, t: Option<Timestamp>) -> (u16, u16, u8) {
        unix_to_dos(t.unwrap_or(self.now))
    }

    /// Adds an entry called `name` to directory `parent`.
    fn add_entry(&mut self, parent: Node, name: &str, mut short: ShortEntry) -> Result<Node> {
        let key = self.dir_key(parent)?;
        let units = short_name::validate(name)?;
        let folded = fold(name);
        let d = self.dir(key)?;
        if d.names.contains_key(&folded) {
            return Err(Error::invalid_input(format!(
                "FAT directory entry '{name}' already exists"
            )));
        }
        let fits = short_name::exact(name).filter(|(n, _)| !d.shorts.contains(n));
        let (name11, flags, long) = match fits {
            Some((n, f)) => (n, f, false),
            None => {
                let (basis, exact) = short_name::basis(name);
                let mut chosen = None;
                if exact && !d.shorts.contains(&basis) {
                    chosen = Some(basis);
                } else {
                    for n in 1..=1_000_000u32 {
                        let a = short_name::alias(&basis, &units, n);
                        if !d.shorts.contains(&a) {
                            chosen = Some(a);
                            break;
                        }
                    }
                }
                let n = chosen.ok_or_else(|| {
                    Error::invalid_input(format!("FAT: no free 8.3 alias for '{name}'"))
                })?;
                (n, 0, true)
            }
        };
        short.name = name11;
        short.nt_flags = flags;
        let pieces = if long {
            long_name::encode(&units, short.checksum())
                .ok_or_else(|| Error::invalid_input("FAT long name"))?
        } else {
            Vec::new()
        };
        let start = self.find_slots(key, pieces.len() + 1)?;
        let d = self.dir(key)?;
        for (i, p) in pieces.iter().enumerate() {
            d.put(start + i, p);
        }
        let slot = start + pieces.len();
        d.put(slot, &short.to_bytes());
        let slot32 = slot as u32;
        if long {
            d.names.insert(folded.clone(), slot32);
        }
        d.names.insert(fold(&short.display_name()), slot32);
        d.shorts.insert(name11);
        d.entries
            .insert(slot32, (start as u32, long.then_some(folded)));
        if d.first_free == start {
            let mut i = slot + 1;
            while i < d.slots() && !d.is_free(i) {
                i += 1;
            }
            d.first_free = i;
        }
        let fat32 = self.boot.fat_type == FatType::Fat32;
        let is_dir = short.attributes.contains(Attributes::DIRECTORY);
        Ok(Node {
            parent: key,
            slot: slot32,
            cluster: if is_dir {
                short.first_cluster(fat32)
            } else {
                0
            },
            dir: is_dir,
        })
    }

    fn new_short(&self, attributes: Attributes, times: &FileTimes) -> ShortEntry {
        let (cd, ct, tenth) = self.stamp(times.created);
        let (wd, wt, _) = self.stamp(times.modified);
        let (ad, _, _) = self.stamp(times.accessed);
        ShortEntry {
            name: [b' '; 11],
            attributes: attributes - Attributes::VOLUME_ID,
            nt_flags: 0,
            create_time_tenth: tenth,
            create_time: ct,
            create_date: cd,
            access_date: ad,
            cluster_high: 0,
            write_time: wt,
            write_date: wd,
            cluster_low: 0,
            size: 0,
        }
    }

    /// Creates the directory `name` in `parent` (with its `.` and `..`
    /// entries); `attributes` gets [`Attributes::DIRECTORY`] added.
    pub fn create_dir(
        &mut self,
        parent: Node,
        name: &str,
        times: &FileTimes,
        attributes: Attributes,
    ) -> Result<Node> {
        let parent_key = self.dir_key(parent)?;
        short_name::validate(name)?;
        self.close_current()?;
        let mut short = self.new_short(attributes | Attributes::DIRECTORY, times);
        let (c, _) = self.fat.allocate(1, None)?;
        short.set_first_cluster(c);
        let node = match self.add_entry(parent, name, short) {
            Ok(n) => n,
            Err(e) => {
                self.fat.free_chain(&[c]);
                return Err(e);
            }
        };
        let cs = self.boot.cluster_size() as usize;
        let mut bytes = vec![0u8; cs];
        let mut dot = short;
        dot.name = *b".          ";
        dot.nt_flags = 0;
        let mut dotdot = dot;
        dotdot.name = *b"..         ";
        dotdot.set_first_cluster(parent_key);
        for (i, e) in [dot, dotdot].iter().enumerate() {
            if let Some(dst) = bytes.get_mut(i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE) {
                dst.copy_from_slice(&e.to_bytes());
            }
        }
        let d = DirBuf {
            clusters: vec![c],
            bytes,
            dirty: (0, cs),
            names: BTreeMap::new(),
            shorts: BTreeSet::new(),
            entries: BTreeMap::new(),
            first_free: 2,
            used: self.clock,
        };
        self.insert_dir(c, d)?;
        Ok(node)
    }

    /// Creates the empty file `name` in `parent`. A `size_hint` (bytes,
    /// 0: none) reserves that many bytes of contiguous clusters for the
    /// writes to come; the unused part is released when the file closes.
    pub fn create_file(
        &mut self,
        parent: Node,
        name: &str,
        times: &FileTimes,
        attributes: Attributes,
        size_hint: u64,
    ) -> Result<Node> {
        self.close_current()?;
        let short = self.new_short(attributes - Attributes::DIRECTORY, times);
        let node = self.add_entry(parent, name, short)?;
        let cs = u64::from(self.boot.cluster_size());
        let want = size_hint.min(MAX_FILE_SIZE).div_ceil(cs);
        let mut open = OpenFile {
            node,
            first: 0,
            last: 0,
            count: 0,
            size: 0,
            pos: (0, 0),
        };
        if want > 0 && want <= u64::from(self.fat.free) {
            let (first, last) = self.fat.allocate(want as u32, None)?;
            open.first = first;
            open.last = last;
            open.count = want as u32;
            open.pos = (0, first);
            let mut s = self.short_of(node)?;
            s.set_first_cluster(first);
            self.put_short(node, &s)?;
        }
        self.current = Some(open);
        Ok(node)
    }

    /// The entry called `name` in directory `dir` (compared without case,
    /// against long and 8.3 names).
    pub fn lookup(&mut self, dir: Node, name: &str) -> Result<Option<Node>> {
        let key = self.dir_key(dir)?;
        let fat32 = self.boot.fat_type == FatType::Fat32;
        let d = self.dir(key)?;
        let Some(&slot) = d.names.get(&fold(name)) else {
            return Ok(None);
        };
        let Some(s) = d.short(slot as usize) else {
            return Ok(None);
        };
        let is_dir = s.attributes.contains(Attributes::DIRECTORY);
        Ok(Some(Node {
            parent: key,
            slot,
            cluster: if is_dir { s.first_cluster(fat32) } else { 0 },
            dir: is_dir,
        }))
    }

    /// The entry at the `/`-separated `path` from the root.
    pub fn open_path(&mut self, path: &str) -> Result<Node> {
        let mut node = self.root();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !node.dir {
                return Err(Error::invalid_input(format!("{path}: not a directory")));
            }
            node = self.lookup(node, part)?.ok_or_else(|| {
                Error::invalid_input(format!("{path}: no such file or directory"))
            })?;
        }
        Ok(node)
    }

    /// The names and nodes of directory `dir`'s entries, in storage order.
    pub fn read_dir(&mut self, dir: Node) -> Result<Vec<(String, Node)>> {
        let key = self.dir_key(dir)?;
        let fat32 = self.boot.fat_type == FatType::Fat32;
        let d = self.dir(key)?;
        let mut out = Vec::new();
        let mut names = LongNameBuilder::new();
        for i in 0..d.slots() {
            match d.slot(i).and_then(Slot::parse) {
                None | Some(Slot::End) => break,
                Some(Slot::Deleted) => names.reset(),
                Some(Slot::LongName(p)) => names.push(&p),
                Some(Slot::Short(s)) => {
                    let long = names.finish(s.checksum());
                    if !d.entries.contains_key(&(i as u32)) {
                        continue;
                    }
                    let is_dir = s.attributes.contains(Attributes::DIRECTORY);
                    out.push((
                        long.unwrap_or_else(|| s.display_name()),
                        Node {
                            parent: key,
                            slot: i as u32,
                            cluster: if is_dir { s.first_cluster(fat32) } else { 0 },
                            dir: is_dir,
                        },
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The stored entry of `node` (not the root).
    pub fn entry(&mut self, node: Node) -> Result<EntryInfo> {
        let short = self.short_of(node)?;
        let fat32 = self.boot.fat_type == FatType::Fat32;
        let mut info = EntryInfo {
            short,
            size: short.size,
            first_cluster: short.first_cluster(fat32),
        };
        if node.dir {
            info.size = 0;
        }
        Ok(info)
    }

    /// Sets the times given (`None` keeps one). The root has no times:
    /// setting them is a no-op.
    pub fn set_times(&mut self, node: Node, times: &FileTimes) -> Result<()> {
        if node.is_root() {
            return Ok(());
        }
        let mut s = self.short_of(node)?;
        if let Some(t) = times.created {
            let (d, tm, tenth) = unix_to_dos(t);
            (s.create_date, s.create_time, s.create_time_tenth) = (d, tm, tenth);
        }
        if let Some(t) = times.modified {
            (s.write_date, s.write_time, _) = unix_to_dos(t);
        }
        if let Some(t) = times.accessed {
            (s.access_date, _, _) = unix_to_dos(t);
        }
        self.put_short(node, &s)
    }

    /// Sets the attributes read-only, hidden, system and archive; the
    /// directory and volume-label bits keep what the entry is.
    pub fn set_attributes(&mut self, node: Node, attributes: Attributes) -> Result<()> {
        if node.is_root() {
            return Err(Error::invalid_input(
                "the FAT root directory has no attributes",
            ));
        }
        let mut s = self.short_of(node)?;
        let keep = Attributes::DIRECTORY;
        s.attributes = (s.attributes & keep) | (attributes - keep - Attributes::VOLUME_ID);
        self.put_short(node, &s)
    }

    /// Removes a file, or an empty directory, and frees its clusters.
    pub fn remove(&mut self, node: Node) -> Result<()> {
        let s = self.short_of(node)?;
        let fat32 = self.boot.fat_type == FatType::Fat32;
        let first = s.first_cluster(fat32);
        let cs = u64::from(self.boot.cluster_size());
        if node.dir {
            let d = self.dir(node.cluster)?;
            if !d.entries.is_empty() {
                return Err(Error::invalid_input("FAT directory not empty"));
            }
            if let Some(d) = self.dirs.remove(&node.cluster) {
                self.dir_bytes -= d.bytes.len();
            }
        }
        if self.current.is_some_and(|c| c.node == node) {
            self.current = None;
        }
        if first != 0 {
            let limit = MAX_FILE_SIZE.div_ceil(cs) + 1;
            let chain = self.fat.chain(&self.boot, first, limit)?;
            self.fat.free_chain(&chain);
        }
        let d = self.dir(node.parent)?;
        let (start, key) = d
            .entries
            .remove(&node.slot)
            .ok_or_else(|| Error::invalid_input("FAT entry vanished"))?;
        if let Some(k) = key {
            d.names.remove(&k);
        }
        d.names.remove(&fold(&s.display_name()));
        d.shorts.remove(&s.name);
        for i in start..=node.slot {
            let at = i as usize * ENTRY_SIZE;
            if let Some(b) = d.bytes.get_mut(at) {
                *b = DELETED;
            }
            d.mark(at, at + 1);
        }
        d.first_free = d.first_free.min(start as usize);
        Ok(())
    }

    // ---- file data ---------------------------------------------------

    /// Makes `node` the open file (closing any other).
    fn open_file(&mut self, node: Node) -> Result<OpenFile> {
        if let Some(c) = self.current.filter(|c| c.node == node) {
            return Ok(c);
        }
        if node.dir {
            return Err(Error::invalid_input("FAT: is a directory"));
        }
        self.close_current()?;
        let s = self.short_of(node)?;
        let fat32 = self.boot.fat_type == FatType::Fat32;
        let first = s.first_cluster(fat32);
        let cs = u64::from(self.boot.cluster_size());
        let mut open = OpenFile {
            node,
            first,
            last: 0,
            count: 0,
            size: s.size,
            pos: (0, first),
        };
        if first != 0 {
            let chain = self
                .fat
                .chain(&self.boot, first, MAX_FILE_SIZE.div_ceil(cs) + 1)?;
            open.count = chain.len() as u32;
            open.last = chain.last().copied().unwrap_or(first);
        }
        if u64::from(open.count) < u64::from(s.size).div_ceil(cs) {
            return Err(Error::corrupt(
                format!(
                    "file of {} bytes: its cluster chain from cluster {first} holds only {} clusters",
                    s.size, open.count
                ),
                0,
            ));
        }
        self.current = Some(open);
        Ok(open)
    }

    /// Releases clusters past the open file's size.
    fn trim(&mut self, f: &mut OpenFile) -> Result<()> {
        let cs = u64::from(self.boot.cluster_size());
        let keep = u64::from(f.size).div_ceil(cs) as u32;
        if f.count <= keep {
            return Ok(());
        }
        let limit = u64::from(f.count) + 1;
        let chain = self.fat.chain(&self.boot, f.first, limit)?;
        let split = keep as usize;
        self.fat.free_chain(chain.get(split..).unwrap_or(&[]));
        if keep == 0 {
            f.first = 0;
            f.last = 0;
            let mut s = self.short_of(f.node)?;
            s.set_first_cluster(0);
            self.put_short(f.node, &s)?;
        } else if let Some(&last) = chain.get(split - 1) {
            self.fat.set(last, self.fat.eoc());
            f.last = last;
        }
        f.count = keep;
        f.pos = (0, f.first);
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(mut f) = self.current.take() {
            self.trim(&mut f)?;
        }
        Ok(())
    }

    /// Grows the open file's chain to `clusters`.
    fn grow(&mut self, f: &mut OpenFile, clusters: u32) -> Result<()> {
        if f.count >= clusters {
            return Ok(());
        }
        let add = clusters - f.count;
        let prev = (f.count > 0).then_some(f.last);
        let (first, last) = self.fat.allocate(add, prev)?;
        if f.count == 0 {
            f.first = first;
            f.pos = (0, first);
            let mut s = self.short_of(f.node)?;
            s.set_first_cluster(first);
            self.put_short(f.node, &s)?;
        }
        f.last = last;
        f.count = clusters;
        Ok(())
    }

    /// The disk pieces of the file range `[start, start+len)` (within
    /// its chain): (disk offset, offset in the range, length), one per
    /// run of contiguous clusters.
    fn segments(
        &mut self,
        f: &mut OpenFile,
        start: u64,
        len: u64,
    ) -> Result<Vec<(u64, usize, usize)>> {
        let cs = u64::from(self.boot.cluster_size());
        let end = start + len;
        let mut pos = start;
        let mut idx = (start / cs) as u32;
        let mut out = Vec::new();
        if f.pos.0 > idx || f.pos.1 == 0 {
            f.pos = (0, f.first);
        }
        while f.pos.0 < idx {
            let n = self.fat.next(&self.boot, f.pos.1)?.ok_or_else(|| {
                Error::corrupt(
                    format!("cluster chain ends early at cluster {}", f.pos.1),
                    0,
                )
            })?;
            f.pos = (f.pos.0 + 1, n);
        }
        while pos < end {
            let run_first = f.pos.1;
            let mut run_len = 1u64;
            while (u64::from(idx) + run_len) * cs < end {
                let n = self
                    .fat
                    .next(&self.boot, f.pos.1)?
                    .ok_or_else(|| Error::corrupt("cluster chain ends early", 0))?;
                f.pos = (f.pos.0 + 1, n);
                if u64::from(n) != u64::from(run_first) + run_len {
                    break;
                }
                run_len += 1;
            }
            let run_end = ((u64::from(idx) + run_len) * cs).min(end);
            let at = self.cluster_offset(run_first)? + (pos - u64::from(idx) * cs);
            out.push((at, (pos - start) as usize, (run_end - pos) as usize));
            pos = run_end;
            idx += run_len as u32;
        }
        Ok(out)
    }

    /// Queues file data for the disk: appended to the pending run when it
    /// continues it (the gap, if any, being the slack past the end of the
    /// file written last, padded with zeros), else after writing the
    /// pending run out. `slack_end`: how far past this data zeros may be
    /// padded (the end of its cluster when it ends its file).
    fn stage(&mut self, at: u64, bytes: &[u8], slack_end: u64) -> Result<()> {
        if let Some(p) = self.pending.as_mut() {
            let end = p.at + p.buf.len() as u64;
            let grown = (at.saturating_sub(end) as usize).saturating_add(bytes.len());
            if at >= end && at <= p.slack_end && p.buf.len() + grown <= PENDING_MAX {
                let gap = (at - end) as usize;
                p.buf.resize(p.buf.len() + gap, 0);
                p.buf.extend_from_slice(bytes);
                p.slack_end = slack_end.max(at + bytes.len() as u64);
                return Ok(());
            }
        }
        self.flush_data()?;
        if bytes.len() >= PENDING_MAX {
            return self.disk.write_at(at, bytes);
        }
        let mut buf = self.spare.take().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        self.pending = Some(Pending {
            at,
            buf,
            slack_end: slack_end.max(at + bytes.len() as u64),
        });
        Ok(())
    }

    /// Writes the pending file data out.
    fn flush_data(&mut self) -> Result<()> {
        if let Some(p) = self.pending.take() {
            self.disk.write_at(p.at, &p.buf)?;
            self.spare = Some(p.buf);
        }
        Ok(())
    }

    /// Sets the size of the open file (updating the entry).
    fn set_size(&mut self, f: &mut OpenFile, size: u32) -> Result<()> {
        f.size = size;
        let mut s = self.short_of(f.node)?;
        s.size = size;
        self.put_short(f.node, &s)
    }

    /// Zeros `[from, to)` of the open file, growing its chain.
    fn zero_fill(&mut self, f: &mut OpenFile, from: u64, to: u64) -> Result<()> {
        let cs = u64::from(self.boot.cluster_size());
        self.grow(f, to.div_ceil(cs) as u32)?;
        self.flush_data()?;
        for (at, _, n) in self.segments(f, from, to - from)? {
            self.disk.write_zeroes(at, n as u64)?;
        }
        Ok(())
    }

    /// Writes `data` at `offset` of file `node`, growing it (a gap past
    /// the old end reads as zeros). Times are left alone.
    pub fn write(&mut self, node: Node, offset: u64, data: &[u8]) -> Result<()> {
        let mut f = self.open_file(node)?;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or_else(|| {
                Error::invalid_input("FAT files end before 4 GiB (the size is 32 bits)")
            })?;
        let result = (|| {
            let size = u64::from(f.size);
            if offset > size {
                self.zero_fill(&mut f, size, offset)?;
            }
            let cs = u64::from(self.boot.cluster_size());
            self.grow(&mut f, end.div_ceil(cs) as u32)?;
            if !data.is_empty() {
                let segments = self.segments(&mut f, offset, data.len() as u64)?;
                let last = segments.len().saturating_sub(1);
                let data_at = self.boot.data_offset();
                for (i, (at, from, n)) in segments.into_iter().enumerate() {
                    let part = data
                        .get(from..from + n)
                        .ok_or_else(|| Error::invalid_input("write buffer"))?;
                    let stop = at + n as u64;
                    // Past the end of the file, the rest of its cluster
                    // is slack that may be padded.
                    let slack = if i == last && end >= size {
                        data_at + (stop - data_at).div_ceil(cs) * cs
                    } else {
                        stop
                    };
                    self.stage(at, part, slack)?;
                }
            }
            if end > size {
                self.set_size(&mut f, end as u32)?;
            }
            Ok(())
        })();
        self.current = Some(f);
        result
    }

    /// Reads file data at `offset` into `buf`; returns the bytes read (0
    /// at or past the end).
    pub fn read(&mut self, node: Node, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut f = self.open_file(node)?;
        let size = u64::from(f.size);
        if offset >= size {
            return Ok(0);
        }
        let n = (size - offset).min(buf.len() as u64) as usize;
        let out = buf.get_mut(..n).unwrap_or(&mut []);
        let result = (|| {
            self.flush_data()?;
            for (at, from, len) in self.segments(&mut f, offset, n as u64)? {
                let part = out
                    .get_mut(from..from + len)
                    .ok_or_else(|| Error::invalid_input("read buffer"))?;
                self.disk.read_at(at, part)?;
            }
            Ok(())
        })();
        self.current = Some(f);
        result.map(|()| n)
    }

    /// Truncates or extends (with zeros) file `node` to `len` bytes.
    pub fn set_len(&mut self, node: Node, len: u64) -> Result<()> {
        if len > MAX_FILE_SIZE {
            return Err(Error::invalid_input(
                "FAT files end before 4 GiB (the size is 32 bits)",
            ));
        }
        let mut f = self.open_file(node)?;
        let result = (|| {
            let size = u64::from(f.size);
            if len > size {
                self.zero_fill(&mut f, size, len)?;
            }
            self.set_size(&mut f, len as u32)?;
            if len < size {
                self.trim(&mut f)?;
            }
            Ok(())
        })();
        self.current = Some(f);
        result
    }

    // ---- flushing ----------------------------------------------------

    /// Writes every change to the disk: directories, FAT copies, FSInfo.
    pub fn flush(&mut self) -> Result<()> {
        self.close_current()?;
        self.flush_data()?;
        let keys: Vec<u32> = self.dirs.keys().copied().collect();
        for k in keys {
            self.write_dir(k)?;
        }
        // Changed FAT blocks, coalesced, to every FAT (only the active
        // one when mirroring is off).
        let mirrored = !self.fat_mirroring_off();
        let blocks = self.fat.bytes.len().div_ceil(FAT_BLOCK);
        let dirty = |fat: &FatTable, b: usize| {
            fat.dirty
                .get(b / 64)
                .is_some_and(|w| w & (1 << (b % 64)) != 0)
        };
        let mut b = 0;
        while b < blocks {
            if !dirty(&self.fat, b) {
                b += 1;
                continue;
            }
            let start = b;
            while b < blocks && dirty(&self.fat, b) {
                b += 1;
            }
            let lo = start * FAT_BLOCK;
            let hi = (b * FAT_BLOCK).min(self.fat.bytes.len());
            let part = self.fat.bytes.get(lo..hi).unwrap_or(&[]);
            for n in 0..self.boot.fats {
                if mirrored || n == self.boot.active_fat {
                    self.disk
                        .write_at(self.boot.fat_offset(n) + lo as u64, part)?;
                }
            }
        }
        self.fat.dirty.fill(0);
        self.write_fs_info()?;
        self.disk.flush()
    }

    fn fat_mirroring_off(&self) -> bool {
        if self.boot.fat_type != FatType::Fat32 {
            return false;
        }
        let mut b = [0u8; 2];
        self.disk.read_at(40, &mut b).is_ok() && b.first().is_some_and(|f| f & 0x80 != 0)
    }

    fn write_fs_info(&mut self) -> Result<()> {
        if self.boot.fat_type != FatType::Fat32 {
            return Ok(());
        }
        match crate::FsInfo::read(&self.disk, &self.boot) {
            Ok(Some(_)) => {}
            // No FSInfo, or one with bad signatures: leave it alone.
            _ => return Ok(()),
        }
        let at = u64::from(self.boot.fs_info_sector) * u64::from(self.boot.bytes_per_sector);
        let mut fields = [0u8; 8];
        fields
            .get_mut(..4)
            .unwrap_or(&mut [])
            .copy_from_slice(&self.fat.free.to_le_bytes());
        fields
            .get_mut(4..)
            .unwrap_or(&mut [])
            .copy_from_slice(&self.fat.next_free.to_le_bytes());
        self.disk.write_at(at + 488, &fields)
    }

    /// Flushes and returns the disk.
    pub fn into_inner(mut self) -> Result<D> {
        self.flush()?;
        Ok(self.disk)
    }
}
