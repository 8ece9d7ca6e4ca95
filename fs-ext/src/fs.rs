//! An ext2/3/4 volume opened for reading: the superblock, the group
//! descriptors, the journal replay map, and every read going through them.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::sync::Lock;
use disk_io::{Error, ErrorKind, ReadAt, Result};

use crate::block_map;
use crate::checksum::{self, Mismatch};
use crate::dir::{self, DirEntry};
use crate::extent_tree::{self, Lookup};
use crate::group_descriptor::{self, GroupDescriptor, GroupFlags};
use crate::inode::{FileType, I_BLOCK_SIZE, Inode, InodeFlags, ROOT_INO};
use crate::journal::{self, Replay};
use crate::superblock::{Compat, Incompat, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock};
use crate::xattr::{self, Value, Xattr};

/// What [`ExtFs::walk`] calls for each entry: its path, directory entry and inode.
pub type Visitor<'a> = dyn FnMut(&[u8], &DirEntry, &Inode) -> Result<()> + 'a;

/// Most live entries accepted in one directory.
pub const MAX_DIR_ENTRIES: usize = 1 << 20;
/// Longest symlink target read (PATH_MAX).
pub const MAX_SYMLINK: u64 = 4096;
/// Largest xattr value read from an `ea_inode`.
pub const MAX_XATTR_VALUE: u64 = 1 << 20;
/// Most groups accepted (2^21: 256 TiB with 4 KiB blocks), so the
/// descriptor table and the used-block bookkeeping stay under ~100 MiB.
pub const MAX_GROUPS: u64 = 1 << 21;
/// Most mismatches remembered when checksums are not enforced.
pub const MAX_MISMATCHES: usize = 1000;
/// Most blocks in the metadata cache.
const CACHE_BLOCKS: usize = 64;
/// Inode-table blocks read at once: a directory's inodes are mostly
/// neighbours, so one read serves the next few hundred inode lookups.
const INODE_CHUNK_BLOCKS: u64 = 16;
/// Inode-table chunks kept (at most 8 × 16 blocks of 64 KiB: 8 MiB).
const INODE_CHUNKS: usize = 8;

/// What to do with a `metadata_csum` checksum that does not match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChecksumPolicy {
    /// Refuse the structure: an error naming it.
    #[default]
    Enforce,
    /// Read it anyway and remember the mismatch ([`ExtFs::mismatches`]).
    ReadAnyway,
    /// Do not compute checksums at all.
    Skip,
}

/// How to open a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Checksum handling.
    pub checksums: ChecksumPolicy,
    /// Replay the journal in memory when the volume needs recovery
    /// (without it, such a volume is read as it is on disk).
    pub replay_journal: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            checksums: ChecksumPolicy::Enforce,
            replay_journal: true,
        }
    }
}

/// A run of data blocks of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First physical block, or `None` for a hole or uninitialized extent.
    pub physical: Option<u64>,
    /// Blocks in the run.
    pub len: u64,
}

struct Cache {
    blocks: Vec<(u64, Vec<u8>)>,
    next: usize,
}

/// Chunks of inode tables, by first block, replaced round robin.
struct InodeCache {
    chunks: Vec<(u64, Vec<u8>)>,
    next: usize,
}

/// An ext2/3/4 volume on a disk, read-only.
pub struct ExtFs<D> {
    disk: D,
    sb: Superblock,
    groups: Vec<GroupDescriptor>,
    options: Options,
    replay: Replay,
    journal: Option<Inode>,
    mismatches: Lock<Vec<Mismatch>>,
    cache: Lock<Cache>,
    inodes: Lock<InodeCache>,
}

impl<D: ReadAt> ExtFs<D> {
    /// Opens the volume with default options (checksums enforced, journal
    /// replayed in memory).
    pub fn open(disk: D) -> Result<Self> {
        Self::open_with(disk, Options::default())
    }

    /// Opens the volume with `options`.
    pub fn open_with(disk: D, options: Options) -> Result<Self> {
        let sb = read_superblock(&disk)?;
        let mut fs = ExtFs {
            disk,
            sb,
            groups: Vec::new(),
            options,
            replay: Replay::default(),
            journal: None,
            mismatches: Lock::new(Vec::new()),
            cache: Lock::new(Cache {
                blocks: Vec::new(),
                next: 0,
            }),
            inodes: Lock::new(InodeCache {
                chunks: Vec::new(),
                next: 0,
            }),
        };
        fs.check_superblock_csum()?;
        fs.load_groups()?;
        if fs.sb.incompat.contains(Incompat::RECOVER) && options.replay_journal {
            fs.load_journal()?;
            if !fs.replay.blocks.is_empty() {
                // The superblock and descriptors may be in the journal too.
                let mut raw = vec![0u8; SUPERBLOCK_SIZE];
                fs.read_bytes(SUPERBLOCK_OFFSET, &mut raw)?;
                fs.sb = Superblock::parse(&raw, SUPERBLOCK_OFFSET)?;
                fs.groups.clear();
                fs.cache_clear()?;
                fs.load_groups()?;
            }
        }
        Ok(fs)
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The group descriptors.
    pub fn groups(&self) -> &[GroupDescriptor] {
        &self.groups
    }

    /// The underlying disk.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Blocks the journal replay redirects (empty when none).
    pub fn replayed_blocks(&self) -> usize {
        self.replay.blocks.len()
    }

    /// Committed transactions found in the journal.
    pub fn replayed_transactions(&self) -> u32 {
        self.replay.transactions
    }

    /// Journal checksum failures seen while scanning: logged blocks not
    /// replayed, and torn commits that ended the log.
    pub fn journal_checksum_failures(&self) -> (u32, u32) {
        (self.replay.bad_blocks, self.replay.bad_commits)
    }

    /// Checksum mismatches seen so far under [`ChecksumPolicy::ReadAnyway`].
    pub fn mismatches(&self) -> Vec<Mismatch> {
        self.mismatches
            .with_read(|m| Ok(m.clone()))
            .unwrap_or_default()
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> usize {
        self.sb.block_size() as usize
    }

    fn bs(&self) -> u64 {
        u64::from(self.sb.block_size())
    }

    fn cache_clear(&self) -> Result<()> {
        self.inodes.with_write(|c| {
            c.chunks.clear();
            Ok(())
        })?;
        self.cache.with_write(|c| {
            c.blocks.clear();
            Ok(())
        })
    }

    // ---- checksums -------------------------------------------------------

    fn csum_on(&self) -> bool {
        self.sb.has_metadata_csum() && self.options.checksums != ChecksumPolicy::Skip
    }

    fn mismatch(&self, what: String, offset: u64, stored: u32, computed: u32) -> Result<()> {
        match self.options.checksums {
            ChecksumPolicy::Enforce => Err(Error::corrupt(
                format!("{what}: checksum {stored:#x} does not match {computed:#x}"),
                offset,
            )),
            ChecksumPolicy::ReadAnyway => self.mismatches.with_write(|m| {
                if m.len() < MAX_MISMATCHES {
                    m.push(Mismatch {
                        what,
                        offset,
                        stored,
                        computed,
                    });
                }
                Ok(())
            }),
            ChecksumPolicy::Skip => Ok(()),
        }
    }

    fn check_superblock_csum(&self) -> Result<()> {
        if !self.csum_on() {
            return Ok(());
        }
        let computed = self.sb.computed_checksum();
        if computed != self.sb.checksum {
            self.mismatch(
                String::from("ext superblock"),
                SUPERBLOCK_OFFSET + 0x3fc,
                self.sb.checksum,
                computed,
            )?;
        }
        Ok(())
    }

    // ---- raw reads -------------------------------------------------------

    /// Reads `buf.len()` bytes at volume byte `offset`, as the volume would
    /// read after a journal replay.
    pub fn read_bytes(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let bs = self.bs();
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| Error::out_of_range(offset, buf.len() as u64, self.disk.size()))?;
        let first = offset / bs;
        let last = (end - 1) / bs;
        if self.replay.blocks.range(first..=last).next().is_none() {
            return self.disk.read_at(offset, buf);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / bs;
            let within = (pos % bs) as usize;
            let n = (bs as usize - within).min(buf.len() - done);
            let dst = buf
                .get_mut(done..done + n)
                .ok_or_else(|| Error::invalid_input("read buffer"))?;
            if let Some(r) = self.replay.blocks.get(&block).copied() {
                let data = self.journal_block(r)?;
                dst.copy_from_slice(data.get(within..within + n).unwrap_or(&[]));
            } else {
                self.disk.read_at(pos, dst)?;
            }
            done += n;
        }
        Ok(())
    }

    fn journal_block(&self, r: journal::Replayed) -> Result<Vec<u8>> {
        let Some(j) = &self.journal else {
            return Err(Error::corrupt("journal replay without a journal", 0));
        };
        let run = self.map_raw(j, r.journal_block, 1, true)?;
        let physical = run.physical.ok_or_else(|| {
            Error::corrupt(format!("journal block {} is a hole", r.journal_block), 0)
        })?;
        let mut data = vec![0u8; self.block_size()];
        self.disk.read_at(physical * self.bs(), &mut data)?;
        if r.escaped {
            journal::unescape(&mut data);
        }
        Ok(data)
    }

    /// Reads block `block` (through the journal replay map).
    pub fn read_block(&self, block: u64) -> Result<Vec<u8>> {
        self.read_block_as(block, false)
    }

    fn read_block_as(&self, block: u64, raw: bool) -> Result<Vec<u8>> {
        if block >= self.sb.blocks_count {
            return Err(Error::corrupt(
                format!(
                    "block {block} is past the end of the volume ({} blocks)",
                    self.sb.blocks_count
                ),
                0,
            ));
        }
        let mut data = vec![0u8; self.block_size()];
        if raw {
            self.disk.read_at(block * self.bs(), &mut data)?;
        } else {
            self.read_bytes(block * self.bs(), &mut data)?;
        }
        Ok(data)
    }

    /// A metadata block, through the small cache.
    fn meta_block(&self, block: u64) -> Result<Vec<u8>> {
        let hit = self.cache.with_read(|c| {
            Ok(c.blocks
                .iter()
                .find(|(b, _)| *b == block)
                .map(|(_, d)| d.clone()))
        })?;
        if let Some(d) = hit {
            return Ok(d);
        }
        let data = self.read_block(block)?;
        self.cache.with_write(|c| {
            if c.blocks.len() < CACHE_BLOCKS {
                c.blocks.push((block, data.clone()));
            } else {
                let i = c.next % CACHE_BLOCKS;
                if let Some(slot) = c.blocks.get_mut(i) {
                    *slot = (block, data.clone());
                }
                c.next = i + 1;
            }
            Ok(())
        })?;
        Ok(data)
    }

    // ---- groups ----------------------------------------------------------

    fn load_groups(&mut self) -> Result<()> {
        let count = self.sb.group_count();
        if count > MAX_GROUPS {
            return Err(Error::unsupported(format!(
                "ext volume with {count} block groups"
            )));
        }
        if u64::from(self.sb.inodes_count) > count * u64::from(self.sb.inodes_per_group) {
            return Err(Error::corrupt(
                format!(
                    "ext inodes count {} exceeds {count} groups of {}",
                    self.sb.inodes_count, self.sb.inodes_per_group
                ),
                SUPERBLOCK_OFFSET,
            ));
        }
        let desc_size = usize::from(self.sb.desc_size);
        let mut groups = Vec::new();
        let mut block_cache: Option<(u64, Vec<u8>)> = None;
        for g in 0..count {
            let offset = group_descriptor::descriptor_offset(&self.sb, g)?;
            let block = offset / self.bs();
            let within = (offset % self.bs()) as usize;
            let data = match &block_cache {
                Some((b, d)) if *b == block => d,
                _ => {
                    let mut d = vec![0u8; self.block_size()];
                    self.read_bytes(block * self.bs(), &mut d)
                        .map_err(|e| e.context(format!("ext group descriptor {g}")))?;
                    &block_cache.insert((block, d)).1
                }
            };
            let raw = data.get(within..within + desc_size).unwrap_or(&[]);
            let gd = GroupDescriptor::parse(raw, &self.sb);
            if self.options.checksums != ChecksumPolicy::Skip {
                if let Some(c) = GroupDescriptor::computed_checksum(raw, g as u32, &self.sb) {
                    if c != gd.checksum {
                        self.mismatch(
                            format!("ext group descriptor {g}"),
                            offset,
                            u32::from(gd.checksum),
                            u32::from(c),
                        )?;
                    }
                }
            }
            groups.push(gd);
        }
        self.groups = groups;
        Ok(())
    }

    fn group(&self, g: u64) -> Result<&GroupDescriptor> {
        usize::try_from(g)
            .ok()
            .and_then(|i| self.groups.get(i))
            .ok_or_else(|| Error::corrupt(format!("ext block group {g} does not exist"), 0))
    }

    fn uninit(&self, gd: &GroupDescriptor, flag: GroupFlags) -> bool {
        GroupDescriptor::flags_valid(&self.sb) && gd.flags.contains(flag)
    }

    // ---- journal ---------------------------------------------------------

    fn load_journal(&mut self) -> Result<()> {
        if !self.sb.compat.contains(Compat::HAS_JOURNAL) || self.sb.journal_inum == 0 {
            return Err(Error::unsupported(
                "ext volume needs recovery from an external journal",
            ));
        }
        let ino = self.sb.journal_inum;
        let j = self
            .read_inode_as(ino, true)
            .map_err(|e| e.context("ext journal"))?;
        let bs = self.bs();
        let blocks = j.size / bs;
        let first = self.map_raw(&j, 0, 1, true)?;
        let offset = first.physical.unwrap_or(0) * bs;
        let read = |n: u64| -> Result<Vec<u8>> {
            let run = self.map_raw(&j, n, 1, true)?;
            let p = run.physical.ok_or_else(|| {
                Error::corrupt(format!("inode {ino}: journal block {n} is a hole"), offset)
            })?;
            self.read_block_as(p, true)
        };
        let replay = journal::scan(&read, blocks, self.block_size(), offset)?;
        self.replay = replay;
        self.journal = Some(j);
        Ok(())
    }

    // ---- inodes ----------------------------------------------------------

    /// Reads inode `ino`.
    pub fn inode(&self, ino: u32) -> Result<Inode> {
        self.read_inode_as(ino, false)
    }

    /// Byte offset of inode `ino`'s record.
    pub fn inode_offset(&self, ino: u32) -> Result<u64> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(Error::corrupt(
                format!(
                    "inode {ino} is out of range (the volume has {} inodes)",
                    self.sb.inodes_count
                ),
                SUPERBLOCK_OFFSET,
            ));
        }
        let ipg = u64::from(self.sb.inodes_per_group);
        let index = u64::from(ino - 1);
        let gd = self.group(index / ipg)?;
        let gd_offset = group_descriptor::descriptor_offset(&self.sb, index / ipg).unwrap_or(0);
        if self.uninit(gd, GroupFlags::INODE_UNINIT) {
            return Err(Error::corrupt(
                format!("inode {ino} is in a group whose inode table is not initialised"),
                gd_offset,
            ));
        }
        let isz = u64::from(self.sb.inode_size);
        let table_blocks = (ipg * isz).div_ceil(self.bs());
        if gd.inode_table == 0
            || gd
                .inode_table
                .checked_add(table_blocks)
                .is_none_or(|end| end > self.sb.blocks_count)
        {
            return Err(Error::corrupt(
                format!(
                    "inode {ino}: inode table at block {} of group {} is outside the volume",
                    gd.inode_table,
                    index / ipg
                ),
                gd_offset + 0x8,
            ));
        }
        Ok(gd.inode_table * self.bs() + (index % ipg) * isz)
    }

    fn read_inode_as(&self, ino: u32, raw: bool) -> Result<Inode> {
        let offset = self.inode_offset(ino)?;
        let isz = usize::from(self.sb.inode_size);
        let mut rec = vec![0u8; isz];
        if raw {
            self.disk.read_at(offset, &mut rec)?;
        } else {
            self.inode_record(ino, offset, &mut rec)?;
        }
        let inode = Inode::parse(ino, &rec, &self.sb).ok_or_else(|| {
            Error::corrupt(
                format!("inode {ino}: i_extra_isize does not fit the {isz}-byte record"),
                offset + 0x80,
            )
        })?;
        if self.csum_on() && !raw {
            let computed = inode.computed_checksum(&self.sb);
            if computed != inode.checksum {
                self.mismatch(format!("inode {ino}"), offset, inode.checksum, computed)?;
            }
        }
        Ok(inode)
    }

    /// Copies the record of inode `ino` (at byte `offset`, checked by
    /// [`Self::inode_offset`]) out of the inode-table chunk holding it,
    /// reading the chunk when it is not cached.
    fn inode_record(&self, ino: u32, offset: u64, rec: &mut [u8]) -> Result<()> {
        let bs = self.bs();
        let ipg = u64::from(self.sb.inodes_per_group);
        let group = u64::from(ino - 1) / ipg;
        let table = self.group(group)?.inode_table;
        let table_blocks = (ipg * u64::from(self.sb.inode_size)).div_ceil(bs);
        let block_in_table = (offset / bs).saturating_sub(table);
        let first = block_in_table / INODE_CHUNK_BLOCKS * INODE_CHUNK_BLOCKS;
        let start = table + first;
        let blocks = INODE_CHUNK_BLOCKS
            .min(table_blocks.saturating_sub(first))
            .max(1);
        let within = offset.saturating_sub(start * bs) as usize;
        let copy = |chunk: &[u8], rec: &mut [u8]| -> Result<()> {
            let src = chunk
                .get(within..within + rec.len())
                .ok_or_else(|| Error::corrupt(format!("inode {ino} record"), offset))?;
            rec.copy_from_slice(src);
            Ok(())
        };
        let hit = self
            .inodes
            .with_read(|c| match c.chunks.iter().find(|(b, _)| *b == start) {
                Some((_, chunk)) => copy(chunk, rec).map(|()| true),
                None => Ok(false),
            })?;
        if hit {
            return Ok(());
        }
        let mut chunk = vec![0u8; (blocks * bs) as usize];
        self.read_bytes(start * bs, &mut chunk)
            .map_err(|e| e.context(format!("inode table of group {group}")))?;
        copy(&chunk, rec)?;
        self.inodes.with_write(|c| {
            if c.chunks.len() < INODE_CHUNKS {
                c.chunks.push((start, chunk));
            } else {
                let i = c.next % INODE_CHUNKS;
                if let Some(slot) = c.chunks.get_mut(i) {
                    *slot = (start, chunk);
                }
                c.next = i + 1;
            }
            Ok(())
        })
    }

    // ---- block mapping ---------------------------------------------------

    /// Maps logical block `block` of `inode` to a run of at most `max` blocks.
    pub fn map(&self, inode: &Inode, block: u64, max: u64) -> Result<Run> {
        self.map_raw(inode, block, max, false)
    }

    fn read_for(&self, raw: bool) -> impl Fn(u64) -> Result<Vec<u8>> + '_ {
        move |b| {
            if raw {
                self.read_block_as(b, true)
            } else {
                self.meta_block(b)
            }
        }
    }

    fn extent_check(
        &self,
        inode: &Inode,
    ) -> impl Fn(&[u8], u64, &extent_tree::Header) -> Result<()> + '_ {
        let seed = checksum::inode_seed(self.sb.csum_seed, inode.ino, inode.generation);
        let ino = inode.ino;
        move |data: &[u8], block: u64, h: &extent_tree::Header| {
            if !self.csum_on() {
                return Ok(());
            }
            let end = 12 + usize::from(h.max) * 12;
            let stored = disk_io::bytes::le_u32(data, end).unwrap_or(0);
            let computed = checksum::raw_crc32c(seed, data.get(..end).unwrap_or(&[]));
            if stored != computed {
                self.mismatch(
                    format!("inode {ino}: extent tree block {block}"),
                    block * self.bs(),
                    stored,
                    computed,
                )?;
            }
            Ok(())
        }
    }

    fn map_raw(&self, inode: &Inode, block: u64, max: u64, raw: bool) -> Result<Run> {
        let max = max.max(1);
        let read = self.read_for(raw);
        let i_block_offset = self.inode_offset(inode.ino).map_or(0, |o| o + 0x28);
        if inode.flags.contains(InodeFlags::EXTENTS) {
            let Ok(lb) = u32::try_from(block) else {
                return Ok(Run {
                    physical: None,
                    len: max,
                });
            };
            let check = self.extent_check(inode);
            let ctx = extent_tree::Context {
                ino: inode.ino,
                block_size: self.block_size(),
                read_block: &read,
                check_block: &check,
                blocks_count: self.sb.blocks_count,
            };
            match extent_tree::lookup(&ctx, &inode.i_block, i_block_offset, lb)? {
                Lookup::Mapped(e) => {
                    let skip = u64::from(lb - e.logical);
                    let len = (u64::from(e.len) - skip).min(max);
                    Ok(Run {
                        physical: (!e.uninit).then_some(e.physical + skip),
                        len,
                    })
                }
                Lookup::Hole(next) => Ok(Run {
                    physical: None,
                    len: next.map_or(max, |n| u64::from(n - lb).min(max)).max(1),
                }),
            }
        } else {
            let ctx = block_map::Context {
                ino: inode.ino,
                block_size: self.block_size(),
                read_block: &read,
                blocks_count: self.sb.blocks_count,
                i_block_offset,
            };
            let r = block_map::lookup(&ctx, &inode.i_block, block, max)?;
            Ok(Run {
                physical: r.physical,
                len: r.len,
            })
        }
    }

    // ---- file data -------------------------------------------------------

    /// Reads the data of `inode` at `offset` into `buf`; returns the bytes
    /// read (0 at or past the end). Holes and uninitialized extents read as
    /// zeros; inline data comes from `i_block` and `system.data`.
    pub fn read(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= inode.size || buf.is_empty() {
            return Ok(0);
        }
        if inode.flags.contains(InodeFlags::ENCRYPT) {
            return Err(Error::unsupported(format!(
                "inode {}: encrypted file",
                inode.ino
            )));
        }
        let want = (inode.size - offset).min(buf.len() as u64) as usize;
        let buf = buf.get_mut(..want).unwrap_or(&mut []);
        if inode.has_inline_data() {
            let data = self.inline_data(inode)?;
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let src = data.get(start..).unwrap_or(&[]);
            let n = src.len().min(buf.len());
            buf.get_mut(..n)
                .unwrap_or(&mut [])
                .copy_from_slice(src.get(..n).unwrap_or(&[]));
            buf.get_mut(n..).unwrap_or(&mut []).fill(0);
            return Ok(want);
        }
        if inode.file_type() == FileType::Symlink && inode.is_fast_symlink(&self.sb) {
            let src = inode.i_block.get(offset as usize..).unwrap_or(&[]);
            let n = src.len().min(buf.len());
            buf.get_mut(..n)
                .unwrap_or(&mut [])
                .copy_from_slice(src.get(..n).unwrap_or(&[]));
            return Ok(n);
        }
        let bs = self.bs();
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            let lb = pos / bs;
            let within = pos % bs;
            let left = (want - done) as u64;
            let blocks = (within + left).div_ceil(bs);
            let run = self.map(inode, lb, blocks)?;
            let n = (run.len * bs - within).min(left) as usize;
            let dst = buf
                .get_mut(done..done + n)
                .ok_or_else(|| Error::invalid_input("read buffer"))?;
            match run.physical {
                Some(p) => self.read_bytes(p * bs + within, dst).map_err(|e| {
                    e.context(format!("inode {}: data at file offset {pos}", inode.ino))
                })?,
                None => dst.fill(0),
            }
            done += n;
        }
        Ok(want)
    }

    /// The whole data of `inode`, when it is at most `max` bytes long.
    pub fn read_all(&self, inode: &Inode, max: u64) -> Result<Vec<u8>> {
        if inode.size > max {
            return Err(Error::corrupt(
                format!(
                    "inode {}: size {} is over the {max}-byte limit",
                    inode.ino, inode.size
                ),
                0,
            ));
        }
        let mut data = vec![0u8; inode.size as usize];
        let n = self.read(inode, 0, &mut data)?;
        data.truncate(n);
        Ok(data)
    }

    /// The inline data of an `INLINE_DATA` inode: `i_block` then the
    /// `system.data` attribute, cut to `i_size`.
    pub fn inline_data(&self, inode: &Inode) -> Result<Vec<u8>> {
        let mut data = inode.i_block.to_vec();
        let mut attrs = Vec::new();
        let offset = self.inode_offset(inode.ino)?;
        xattr::parse_ibody(
            inode.xattr_area(),
            inode.ino,
            offset + 128 + u64::from(inode.extra_isize),
            &mut attrs,
        )?;
        if let Some(a) = attrs.into_iter().find(|a| a.name == b"system.data") {
            if let Value::Inline(v) = a.value {
                data.extend_from_slice(&v);
            }
        }
        if (data.len() as u64) < inode.size {
            return Err(Error::corrupt(
                format!(
                    "inode {}: inline data holds {} bytes, the inode says {}",
                    inode.ino,
                    data.len(),
                    inode.size
                ),
                offset,
            ));
        }
        data.truncate(inode.size as usize);
        Ok(data)
    }

    /// The target of symlink `inode` (fast, slow or inline).
    pub fn read_link(&self, inode: &Inode) -> Result<Vec<u8>> {
        if inode.file_type() != FileType::Symlink {
            return Err(Error::invalid_input(format!(
                "inode {} is not a symlink",
                inode.ino
            )));
        }
        if inode.size > MAX_SYMLINK {
            return Err(Error::corrupt(
                format!("inode {}: symlink of {} bytes", inode.ino, inode.size),
                self.inode_offset(inode.ino)? + 4,
            ));
        }
        if inode.is_fast_symlink(&self.sb) {
            return Ok(inode
                .i_block
                .get(..inode.size as usize)
                .unwrap_or(&[])
                .to_vec());
        }
        self.read_all(inode, MAX_SYMLINK)
    }

    // ---- directories -----------------------------------------------------

    /// The entries of directory `inode`, without `.` and `..`.
    pub fn read_dir(&self, inode: &Inode) -> Result<Vec<DirEntry>> {
        if inode.file_type() != FileType::Directory {
            return Err(Error::invalid_input(format!(
                "inode {} is not a directory",
                inode.ino
            )));
        }
        let filetype = self.sb.incompat.contains(Incompat::FILETYPE);
        let bs = self.block_size();
        let mut out = Vec::new();
        if inode.has_inline_data() {
            let offset = self.inode_offset(inode.ino)?;
            let body = inode.i_block.get(4..I_BLOCK_SIZE).unwrap_or(&[]);
            dir::parse_entries(
                body,
                inode.ino,
                offset + 0x2c,
                filetype,
                bs,
                &mut out,
                MAX_DIR_ENTRIES,
            )?;
            let mut attrs = Vec::new();
            xattr::parse_ibody(inode.xattr_area(), inode.ino, offset + 128, &mut attrs)?;
            if let Some(a) = attrs.into_iter().find(|a| a.name == b"system.data") {
                if let Value::Inline(v) = a.value {
                    dir::parse_entries(
                        &v,
                        inode.ino,
                        offset + 128,
                        filetype,
                        bs,
                        &mut out,
                        MAX_DIR_ENTRIES,
                    )?;
                }
            }
            return Ok(out);
        }
        let blocks = inode.size.div_ceil(self.bs());
        if blocks > self.sb.blocks_count {
            return Err(Error::corrupt(
                format!(
                    "inode {}: directory of {} bytes is larger than the volume",
                    inode.ino, inode.size
                ),
                self.inode_offset(inode.ino)? + 4,
            ));
        }
        let indexed =
            inode.flags.contains(InodeFlags::INDEX) && self.sb.compat.contains(Compat::DIR_INDEX);
        if indexed {
            self.check_htree(inode, blocks)?;
        }
        let seed = checksum::inode_seed(self.sb.csum_seed, inode.ino, inode.generation);
        let mut dir_blocks = BTreeSet::new();
        let mut lb = 0u64;
        while lb < blocks {
            let run = self.map(inode, lb, blocks - lb)?;
            let Some(p) = run.physical else {
                lb += run.len;
                continue;
            };
            for i in 0..run.len {
                let block = p + i;
                let offset = block * self.bs();
                // A block listed twice would let a small image pose as a
                // huge directory: each block is read once.
                if !dir_blocks.insert(block) {
                    return Err(Error::corrupt(
                        format!(
                            "inode {}: directory block {} maps to block {block}, already used by this directory",
                            inode.ino,
                            lb + i
                        ),
                        offset,
                    ));
                }
                let data = self.read_block(block)?;
                let first_len = disk_io::bytes::le_u16(&data, 4).unwrap_or(0);
                let spanning_empty = disk_io::bytes::le_u32(&data, 0) == Some(0)
                    && (usize::from(first_len) == bs || (bs >= 65536 && first_len == 0));
                let is_dx = indexed && (lb + i == 0 || spanning_empty);
                let mut body: &[u8] = &data;
                if is_dx {
                    // Index blocks carry a dx tail, checked by check_htree.
                } else if self.csum_on() && dir::has_tail(&data) {
                    let end = bs - dir::TAIL_SIZE;
                    let stored = disk_io::bytes::le_u32(&data, end + 8).unwrap_or(0);
                    let computed = checksum::raw_crc32c(seed, data.get(..end).unwrap_or(&[]));
                    if stored != computed {
                        self.mismatch(
                            format!("inode {}: directory block {}", inode.ino, lb + i),
                            offset,
                            stored,
                            computed,
                        )?;
                    }
                    body = data.get(..end).unwrap_or(&[]);
                } else if self.csum_on() && !is_dx && !spanning_empty {
                    self.mismatch(
                        format!(
                            "inode {}: directory block {} has no checksum tail",
                            inode.ino,
                            lb + i
                        ),
                        offset,
                        0,
                        0,
                    )?;
                }
                if is_dx && lb + i != 0 {
                    continue;
                }
                dir::parse_entries(
                    body,
                    inode.ino,
                    offset,
                    filetype,
                    bs,
                    &mut out,
                    MAX_DIR_ENTRIES,
                )
                .map_err(|e| e.context(format!("directory block {}", lb + i)))?;
            }
            lb += run.len;
        }
        out.retain(|e| e.name != b"." && e.name != b"..");
        Ok(out)
    }

    /// Validates the htree of `inode`: the root, every index node, every
    /// reference inside the directory, no block reached twice.
    fn check_htree(&self, inode: &Inode, blocks: u64) -> Result<()> {
        let csum = self.csum_on();
        let largedir = self.sb.incompat.contains(Incompat::LARGEDIR);
        let root_block = self.dir_block(inode, 0)?;
        let (root, children) =
            dir::parse_dx_root(&root_block.1, inode.ino, root_block.0, largedir, csum)?;
        self.check_dx_csum(inode, &root_block.1, 0x20, root_block.0)?;
        let mut seen = BTreeSet::new();
        seen.insert(0u32);
        let mut level: Vec<u32> = children;
        for depth in 0..=root.indirect_levels {
            let leaf_level = depth == root.indirect_levels;
            let mut next = Vec::new();
            for b in level {
                if u64::from(b) >= blocks || !seen.insert(b) {
                    return Err(Error::corrupt(
                        format!(
                            "inode {}: htree points to directory block {b} twice or past the end ({blocks} blocks): a loop",
                            inode.ino
                        ),
                        root_block.0,
                    ));
                }
                if !leaf_level {
                    let (offset, data) = self.dir_block(inode, u64::from(b))?;
                    next.extend(dir::parse_dx_node(&data, inode.ino, offset, csum)?);
                    self.check_dx_csum(inode, &data, 8, offset)?;
                }
            }
            level = next;
        }
        Ok(())
    }

    /// Verifies the `dx_tail` checksum of an htree node whose count/limit
    /// header is at `count_offset`.
    fn check_dx_csum(
        &self,
        inode: &Inode,
        block: &[u8],
        count_offset: usize,
        offset: u64,
    ) -> Result<()> {
        if !self.csum_on() {
            return Ok(());
        }
        let limit = usize::from(disk_io::bytes::le_u16(block, count_offset).unwrap_or(0));
        let count = usize::from(disk_io::bytes::le_u16(block, count_offset + 2).unwrap_or(0));
        let tail = count_offset + limit * 8;
        let seed = checksum::inode_seed(self.sb.csum_seed, inode.ino, inode.generation);
        let c = checksum::raw_crc32c(seed, block.get(..count_offset + count * 8).unwrap_or(&[]));
        let c = checksum::raw_crc32c(c, block.get(tail..tail + 4).unwrap_or(&[]));
        let computed = checksum::raw_crc32c(c, &[0; 4]);
        let stored = disk_io::bytes::le_u32(block, tail + 4).unwrap_or(0);
        if stored != computed {
            self.mismatch(
                format!("inode {}: htree node", inode.ino),
                offset,
                stored,
                computed,
            )?;
        }
        Ok(())
    }

    fn dir_block(&self, inode: &Inode, lb: u64) -> Result<(u64, Vec<u8>)> {
        let run = self.map(inode, lb, 1)?;
        let p = run.physical.ok_or_else(|| {
            Error::corrupt(
                format!("inode {}: directory block {lb} is a hole", inode.ino),
                0,
            )
        })?;
        Ok((p * self.bs(), self.read_block(p)?))
    }

    /// Finds `name` in directory `inode`.
    pub fn lookup(&self, inode: &Inode, name: &[u8]) -> Result<Option<DirEntry>> {
        Ok(self.read_dir(inode)?.into_iter().find(|e| e.name == name))
    }

    /// The root directory's inode.
    pub fn root(&self) -> Result<Inode> {
        self.inode(ROOT_INO)
    }

    /// Resolves a `/`-separated path from the root (symlinks not followed).
    pub fn resolve(&self, path: &str) -> Result<Inode> {
        let mut inode = self.root()?;
        for (depth, part) in path.split('/').filter(|p| !p.is_empty()).enumerate() {
            if depth > 4096 {
                return Err(Error::invalid_input("path too deep"));
            }
            let e = self.lookup(&inode, part.as_bytes())?.ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("{path}: no such file or directory"),
                )
            })?;
            inode = self.inode(e.inode)?;
        }
        Ok(inode)
    }

    // ---- xattrs ----------------------------------------------------------

    /// The extended attributes of `inode` (in-inode first, then the block),
    /// `ea_inode` values read in. `system.data` (inline data) is included.
    pub fn xattrs(&self, inode: &Inode) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut attrs: Vec<Xattr> = Vec::new();
        let offset = self.inode_offset(inode.ino)?;
        xattr::parse_ibody(
            inode.xattr_area(),
            inode.ino,
            offset + 128 + u64::from(inode.extra_isize),
            &mut attrs,
        )?;
        if inode.file_acl != 0 {
            let block = inode.file_acl;
            let data = self.read_block(block)?;
            if self.csum_on() {
                let c = checksum::raw_crc32c(self.sb.csum_seed, &block.to_le_bytes());
                let c = checksum::raw_crc32c(c, data.get(..0x10).unwrap_or(&[]));
                let c = checksum::raw_crc32c(c, &[0; 4]);
                let c = checksum::raw_crc32c(c, data.get(0x14..).unwrap_or(&[]));
                let stored = disk_io::bytes::le_u32(&data, 0x10).unwrap_or(0);
                if c != stored {
                    self.mismatch(
                        format!("inode {}: xattr block {block}", inode.ino),
                        block * self.bs(),
                        stored,
                        c,
                    )?;
                }
            }
            xattr::parse_block(&data, inode.ino, block * self.bs(), &mut attrs)?;
        }
        let mut out = Vec::with_capacity(attrs.len());
        for a in attrs {
            let value = match a.value {
                Value::Inline(v) => v,
                Value::Inode { ino, size } => {
                    let vi = self.inode(ino)?;
                    if !vi.flags.contains(InodeFlags::EA_INODE) || vi.size < u64::from(size) {
                        return Err(Error::corrupt(
                            format!(
                                "inode {}: xattr value inode {ino} is not an EA inode of {size} bytes",
                                inode.ino
                            ),
                            offset,
                        ));
                    }
                    let mut v = self.read_all(&vi, MAX_XATTR_VALUE)?;
                    v.truncate(size as usize);
                    v
                }
            };
            out.push((a.name, value));
        }
        Ok(out)
    }

    // ---- used blocks -----------------------------------------------------

    /// The blocks in use, as sorted, merged `(first block, count)` runs,
    /// from the block bitmaps; a `BLOCK_UNINIT` group's bitmap is computed
    /// (its superblock backup, descriptor blocks and whatever group
    /// metadata lives in it), as the kernel and e2fsprogs compute it.
    pub fn used_blocks(&self) -> Result<Vec<(u64, u64)>> {
        let sb = &self.sb;
        let ratio = u64::from(sb.cluster_ratio());
        let bpg = u64::from(sb.blocks_per_group);
        let cpg = u64::from(sb.clusters_per_group);
        let fdb = u64::from(sb.first_data_block);
        // Metadata ranges of every group, for BLOCK_UNINIT groups.
        let mut meta: Vec<(u64, u64)> = Vec::new();
        let itable_blocks =
            (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(self.bs());
        for gd in &self.groups {
            meta.push((gd.block_bitmap, 1));
            meta.push((gd.inode_bitmap, 1));
            meta.push((gd.inode_table, itable_blocks));
        }
        meta.sort_unstable();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut push = |start: u64, len: u64| {
            if len == 0 {
                return;
            }
            if let Some(last) = runs.last_mut() {
                if last.0 + last.1 >= start {
                    let end = (start + len).max(last.0 + last.1);
                    last.1 = end - last.0;
                    return;
                }
            }
            runs.push((start, len));
        };
        for (g, gd) in self.groups.iter().enumerate() {
            let g = g as u64;
            let start = fdb + g * bpg;
            let end = (start + bpg).min(sb.blocks_count);
            if start >= end {
                break;
            }
            if self.uninit(gd, GroupFlags::BLOCK_UNINIT) {
                // Rounded to clusters, as the bitmap would be.
                let mut marks: Vec<(u64, u64)> = Vec::new();
                let overhead = group_descriptor::group_overhead_blocks(sb, g);
                marks.push((start, overhead.min(end - start)));
                let first = meta.partition_point(|&(b, len)| b.saturating_add(len) <= start);
                for &(b, len) in meta.get(first..).unwrap_or(&[]) {
                    if b >= end {
                        break;
                    }
                    let s = b.max(start);
                    let e = b.saturating_add(len).min(end);
                    if s < e {
                        marks.push((s, e - s));
                    }
                }
                marks.sort_unstable();
                for (s, len) in marks {
                    let cs = (s - start) / ratio * ratio + start;
                    let ce = ((s + len - start).div_ceil(ratio) * ratio + start).min(end);
                    push(cs, ce - cs);
                }
                continue;
            }
            if gd.block_bitmap == 0 || gd.block_bitmap >= sb.blocks_count {
                return Err(Error::corrupt(
                    format!(
                        "ext group {g}: block bitmap at block {} is outside the volume",
                        gd.block_bitmap
                    ),
                    0,
                ));
            }
            let bitmap = self.read_block(gd.block_bitmap)?;
            self.check_bitmap(
                &bitmap,
                g,
                gd.block_bitmap,
                gd.block_bitmap_csum,
                cpg,
                "block",
            )?;
            let clusters = (end - start).div_ceil(ratio).min(cpg);
            let mut c = 0u64;
            while c < clusters {
                let byte = bitmap.get((c / 8) as usize).copied().unwrap_or(0);
                if byte == 0 && c.is_multiple_of(8) {
                    c += 8;
                    continue;
                }
                if byte & (1 << (c % 8)) != 0 {
                    let b = start + c * ratio;
                    push(b, ratio.min(end - b));
                }
                c += 1;
            }
        }
        Ok(runs)
    }

    /// Byte ranges of the volume a copy must keep, sorted and merged: the
    /// blocks of [`used_blocks`](Self::used_blocks) (which include every
    /// backup superblock and group descriptor block, also in
    /// `BLOCK_UNINIT` groups), plus the blocks before `s_first_data_block`
    /// (the boot block of a 1 KiB-block volume), which belong to no group.
    pub fn used_byte_ranges(&self) -> Result<Vec<core::ops::Range<u64>>> {
        let bs = self.bs();
        let mut out: Vec<core::ops::Range<u64>> = Vec::new();
        let fdb = u64::from(self.sb.first_data_block);
        if fdb > 0 {
            out.push(0..fdb.saturating_mul(bs));
        }
        for (start, len) in self.used_blocks()? {
            let s = start.saturating_mul(bs);
            let e = start.saturating_add(len).saturating_mul(bs);
            match out.last_mut() {
                Some(prev) if prev.end >= s => prev.end = prev.end.max(e),
                _ => out.push(s..e),
            }
        }
        Ok(out)
    }

    /// Verifies the `metadata_csum` checksum of one bitmap (`bits` bits).
    fn check_bitmap(
        &self,
        bitmap: &[u8],
        group: u64,
        block: u64,
        stored: u32,
        bits: u64,
        what: &str,
    ) -> Result<()> {
        if !self.csum_on() {
            return Ok(());
        }
        let len = usize::try_from(bits / 8).unwrap_or(usize::MAX);
        let computed = checksum::raw_crc32c(self.sb.csum_seed, bitmap.get(..len).unwrap_or(bitmap));
        let (stored, computed) = if self.sb.desc_size >= 64 {
            (stored, computed)
        } else {
            (stored & 0xffff, computed & 0xffff)
        };
        if stored != computed {
            self.mismatch(
                format!("ext group {group} {what} bitmap"),
                block * self.bs(),
                stored,
                computed,
            )?;
        }
        Ok(())
    }

    /// Reads every initialised block and inode bitmap and verifies its
    /// `metadata_csum` checksum (mismatches follow the checksum policy).
    pub fn verify_bitmaps(&self) -> Result<()> {
        let cpg = u64::from(self.sb.clusters_per_group);
        let ipg = u64::from(self.sb.inodes_per_group);
        for (g, gd) in self.groups.iter().enumerate() {
            let g = g as u64;
            if !self.uninit(gd, GroupFlags::BLOCK_UNINIT) {
                let bitmap = self.read_block(gd.block_bitmap)?;
                self.check_bitmap(
                    &bitmap,
                    g,
                    gd.block_bitmap,
                    gd.block_bitmap_csum,
                    cpg,
                    "block",
                )?;
            }
            if !self.uninit(gd, GroupFlags::INODE_UNINIT) {
                let bitmap = self.read_block(gd.inode_bitmap)?;
                self.check_bitmap(
                    &bitmap,
                    g,
                    gd.inode_bitmap,
                    gd.inode_bitmap_csum,
                    ipg,
                    "inode",
                )?;
            }
        }
        Ok(())
    }

    /// Walks every directory from the root, calling `visit` with each
    /// entry's path, entry and inode. Directories reached twice (a cycle or
    /// a hard-linked directory) and nesting over `max_depth` are errors.
    pub fn walk(&self, max_depth: usize, visit: &mut Visitor<'_>) -> Result<()> {
        let root = self.root()?;
        let mut seen = BTreeMap::new();
        seen.insert(root.ino, ());
        let mut path = Vec::new();
        self.walk_in(&root, &mut path, 0, max_depth, &mut seen, visit)
    }

    fn walk_in(
        &self,
        dir: &Inode,
        path: &mut Vec<u8>,
        depth: usize,
        max_depth: usize,
        seen: &mut BTreeMap<u32, ()>,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        if depth >= max_depth {
            return Err(Error::corrupt(
                format!(
                    "inode {}: directories nested deeper than {max_depth}",
                    dir.ino
                ),
                0,
            ));
        }
        for e in self.read_dir(dir)? {
            let inode = self.inode(e.inode)?;
            let len = path.len();
            path.push(b'/');
            path.extend_from_slice(&e.name);
            visit(path, &e, &inode)?;
            if inode.file_type() == FileType::Directory {
                if seen.insert(inode.ino, ()).is_some() {
                    return Err(Error::corrupt(
                        format!(
                            "inode {}: directory {} is reached twice (a directory cycle)",
                            inode.ino,
                            String::from_utf8_lossy(path)
                        ),
                        self.inode_offset(inode.ino)?,
                    ));
                }
                self.walk_in(&inode, path, depth + 1, max_depth, seen, visit)?;
            }
            path.truncate(len);
        }
        Ok(())
    }
}

fn read_superblock<D: ReadAt>(disk: &D) -> Result<Superblock> {
    let mut raw = vec![0u8; SUPERBLOCK_SIZE];
    disk.read_at(SUPERBLOCK_OFFSET, &mut raw)
        .map_err(|e| e.context("ext superblock"))?;
    let sb = Superblock::parse(&raw, SUPERBLOCK_OFFSET)?;
    if sb
        .blocks_count
        .checked_mul(u64::from(sb.block_size()))
        .is_none()
    {
        return Err(Error::corrupt(
            format!("ext blocks count {}", sb.blocks_count),
            SUPERBLOCK_OFFSET + 4,
        ));
    }
    Ok(sb)
}
