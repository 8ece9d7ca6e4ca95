//! Writing VHDX files: creating them (dynamic, fixed or differencing) and
//! a random-access writer over a new or existing file.
//!
//! - Payload blocks are allocated at the end of the file on first write
//!   (the rest of a new block is a hole, reading as zeros) and never
//!   reused. A write into a block a differencing file does not hold
//!   stores only the sectors written and marks them in the sector bitmap
//!   (PARTIALLY_PRESENT); the other sectors stay the parent's.
//! - Metadata (BAT entries, sector bitmaps, metadata items) changes in
//!   memory and goes to the file through the log, as the specification
//!   lays it out: payload data and file size made durable, one log entry
//!   written and made durable, the sectors written in place and made
//!   durable, then the entry retired (its first sector zeroed). After a
//!   crash in the middle, the log holds one valid entry that any VHDX
//!   reader replays (this crate's in memory; qemu in place when it opens
//!   the file for writing, e.g. `qemu-img check -r all`; qemu refuses to
//!   open such a file read-only).
//! - The first change after opening updates both headers (sequence
//!   number, new FileWriteGuid and DataWriteGuid, and a LogGuid naming the
//!   log of this session); closing ([`VhdxWriter::finish`], or dropping
//!   the writer) clears the LogGuid again. Header bytes this code does not
//!   know are carried over unchanged.
//! - An existing file whose log holds entries is replayed in place when
//!   it is opened, before anything else is written.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use disk_io::bytes::le_u32;
use disk_io::sync::Lock;
use disk_io::{
    Allocation, Error, Extent, FileDisk, ReadAt, Result, WriteAt, check_range, clamp_query,
};

use super::bat::{self, Geometry, PayloadState, SB_BLOCK_PRESENT};
use super::create::{self, Layout, MIB, Params, items, put, seal};
use super::header::{self, Guid, Headers};
use super::metadata::ParentLocator;
use super::region_table::{self, Region};
use super::{HEADER_SECTION, Vhdx, parent_name};
use crate::chain::{Backing, extend_run, layer_answer, read_parent};
use crate::options::CreateOptions;

/// Log and metadata sectors are 4 KiB.
const SECTOR: u64 = 4096;
/// Payload entry states as stored.
const NOT_PRESENT: u64 = 0;
const ZERO: u64 = 2;
const FULLY_PRESENT: u64 = 6;
const PARTIALLY_PRESENT: u64 = 7;
/// Most metadata sectors kept in memory before they go through the log.
const MAX_PENDING: usize = 1024;
/// Most sectors one log entry carries (bounds its buffer).
const MAX_ENTRY_SECTORS: u64 = 1024;

/// Metadata state, behind one lock.
struct State {
    bat: Vec<u64>,
    /// The current header's 4 KiB as stored (unknown bytes kept).
    header: Vec<u8>,
    /// Which copy holds the current header.
    header_copy: usize,
    sequence: u64,
    /// First free byte (1 MiB aligned) for new blocks.
    end: u64,
    /// BAT sectors (index within the BAT region) changed in memory.
    dirty_bat: BTreeSet<u64>,
    /// Other metadata sectors changed in memory, by file offset.
    staged: BTreeMap<u64, Vec<u8>>,
    /// The session's LogGuid, once the headers name it.
    session: Option<Guid>,
    /// Sequence number of the next log entry.
    log_sequence: u64,
}

/// A VHDX file open for writing, through `&self` from any thread.
///
/// ```no_run
/// use disk_io::{ReadAt, WriteAt};
/// use vdisk_format::vhdx::{create::Params, write::VhdxWriter};
/// let image = VhdxWriter::create("new.vhdx".as_ref(), 1 << 30, &Params::default(), None)?;
/// image.write_at(4096, b"hello")?;
/// image.flush()?;
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct VhdxWriter {
    file: FileDisk,
    parent: Option<Backing>,
    size: u64,
    g: Geometry,
    /// Logical sector size.
    ss: u64,
    fixed: bool,
    has_parent: bool,
    bat_offset: u64,
    metadata: Region,
    log_offset: u64,
    log_length: u64,
    state: Lock<State>,
    /// Test hook: stop every log cycle after its entry is durable.
    crash_after_log: AtomicBool,
}

/// What a block's entry says, for writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    /// Not in the file: the parent's, or zeros.
    Absent,
    /// Reads as zeros (ZERO, UNMAPPED, UNDEFINED).
    Zero,
    /// Every sector at this offset.
    Full(u64),
    /// Sectors in the bitmap at this offset, the others the parent's.
    Partial(u64),
}

impl VhdxWriter {
    /// Creates a new file at `path` (which must not exist) of `size`
    /// guest bytes (rounded up to a whole sector); `parent` is the parent
    /// disk of a differencing file, given with `locator` exactly when
    /// `params` names a backing file.
    pub fn create(
        path: &Path,
        size: u64,
        params: &Params,
        parent: Option<(Backing, ParentLocator)>,
    ) -> Result<Self> {
        if params.backing_file.is_some() != parent.is_some() {
            return Err(Error::invalid_input(
                "vhdx parent disk given without a backing file name, or the other way round",
            ));
        }
        let ss = u64::from(create::SECTOR_SIZE);
        let size = size
            .checked_next_multiple_of(ss)
            .filter(|&s| s <= super::metadata::MAX_VIRTUAL_SIZE)
            .ok_or_else(|| {
                Error::invalid_input(format!("vhdx virtual size {size} (at most 64 TiB)"))
            })?;
        let block_size = params.block_size_for(size);
        let has_parent = parent.is_some();
        let m = create::metadata(size, block_size, params.fixed, has_parent);
        let g = Geometry::new(&m);
        let layout = Layout::new(&g, params.log_size);
        let locator = match &parent {
            Some((_, l)) => Some(create::locator_item(l)?),
            None => None,
        };
        let payload = layout.payload_offset;
        let file_len = if params.fixed {
            payload + g.data_blocks * block_size
        } else {
            payload
        };
        let file = FileDisk::create(path, file_len)?;
        file.write_at(0, &create::file_identifier())?;
        let (fw, dw) = (create::random_guid(), create::random_guid());
        let zero = Guid::default();
        for (copy, at) in header::OFFSETS.iter().enumerate() {
            file.write_at(*at, &create::header(copy as u64, fw, dw, zero, &layout))?;
        }
        let rt = create::region_table(&layout);
        for at in region_table::OFFSETS {
            file.write_at(at, &rt)?;
        }
        file.write_at(
            layout.metadata_offset,
            &create::metadata_region(&m, create::random_guid(), locator.as_deref()),
        )?;
        let mut table = vec![0u64; g.entries as usize];
        for b in 0..g.data_blocks {
            let e = if params.fixed {
                (payload + b * block_size) | FULLY_PRESENT
            } else if params.block_state_zero && !has_parent {
                ZERO
            } else {
                NOT_PRESENT
            };
            if let Some(slot) = table.get_mut(g.payload_index(b) as usize) {
                *slot = e;
            }
        }
        let raw: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        file.write_at(layout.bat_offset, &raw)?;
        let header = create::header(1, fw, dw, zero, &layout);
        let state = State {
            bat: table,
            header,
            header_copy: 1,
            sequence: 1,
            end: file_len.next_multiple_of(MIB),
            dirty_bat: BTreeSet::new(),
            staged: BTreeMap::new(),
            session: None,
            log_sequence: 1,
        };
        Ok(VhdxWriter {
            file,
            parent: parent.map(|(p, _)| p),
            size,
            g,
            ss,
            fixed: params.fixed,
            has_parent,
            bat_offset: layout.bat_offset,
            metadata: Region {
                guid: region_table::METADATA_GUID,
                file_offset: layout.metadata_offset,
                length: MIB as u32,
                required: true,
            },
            log_offset: layout.log_offset,
            log_length: layout.log_length,
            state: Lock::new(state),
            crash_after_log: AtomicBool::new(false),
        })
    }

    /// Opens the existing file in `file` (opened read-write) for writing;
    /// `parent` must be given exactly when it is a differencing file. A
    /// log holding entries is replayed into the file first.
    pub fn open(file: FileDisk, parent: Option<Backing>) -> Result<Self> {
        let v = Vhdx::load(file)?;
        if v.metadata.has_parent != parent.is_some() {
            return Err(Error::invalid_input(
                "vhdx file opened without its parent, or with one it does not name",
            ));
        }
        let Vhdx {
            file,
            header: h,
            metadata: m,
            geometry: g,
            bat_region,
            bat: table,
            replay,
            regions,
            ..
        } = v;
        let metadata = regions.find(region_table::METADATA_GUID, "metadata")?;
        let raw_header = disk_io::read_vec(&file, h.offset(), header::SIZE)?;
        let file_size = match &replay {
            Some(r) if r.entries > 0 => file
                .size()
                .max(r.last_file_offset)
                .max(r.overlay.data_end()),
            _ => file.size(),
        };
        let mut end = file_size
            .max(h.log_offset.saturating_add(u64::from(h.log_length)))
            .max(HEADER_SECTION);
        for r in &regions.entries {
            end = end.max(r.end());
        }
        for (i, &e) in table.iter().enumerate() {
            let len = if g.is_bitmap_index(i as u64) {
                MIB
            } else {
                g.block_size
            };
            if matches!(e & 7, FULLY_PRESENT | PARTIALLY_PRESENT) {
                let host = bat::entry_offset(e);
                let stop = host.saturating_add(len);
                // New blocks go at the end: one named past it would alias them.
                if host < HEADER_SECTION || stop > file_size {
                    return Err(Error::corrupt(
                        format!(
                            "vhdx BAT entry {i} points to {host:#x}: inside the header section or past the end of the {file_size}-byte file"
                        ),
                        bat_region.file_offset + 8 * i as u64,
                    ));
                }
                end = end.max(stop);
            }
        }
        let end = end.checked_next_multiple_of(MIB).unwrap_or(end);
        let w = VhdxWriter {
            file,
            parent,
            size: m.virtual_size,
            g,
            ss: u64::from(m.logical_sector_size),
            fixed: m.leave_blocks_allocated,
            has_parent: m.has_parent,
            bat_offset: bat_region.file_offset,
            metadata,
            log_offset: h.log_offset,
            log_length: u64::from(h.log_length),
            state: Lock::new(State {
                bat: table,
                header: raw_header,
                header_copy: h.copy,
                sequence: h.sequence_number,
                end,
                dirty_bat: BTreeSet::new(),
                staged: BTreeMap::new(),
                session: None,
                log_sequence: 1,
            }),
            crash_after_log: AtomicBool::new(false),
        };
        if let Some(r) = replay {
            // Replay in place what the in-memory reader already applied.
            if r.entries > 0 {
                let need = r.last_file_offset.max(r.overlay.data_end());
                if need > w.file.size() {
                    w.file.set_size(need)?;
                }
                for (start, stop, data) in r.overlay.pieces() {
                    match data {
                        Some(d) => w.file.write_at(start, d)?,
                        None => w.file.write_zeroes(start, stop - start)?,
                    }
                }
                w.file.flush()?;
            }
            w.state
                .with_write(|st| w.write_headers(st, Guid::default(), false))?;
        }
        Ok(w)
    }

    /// The file holding the image.
    pub fn file(&self) -> &FileDisk {
        &self.file
    }

    /// Payload block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.g.block_size
    }

    /// Test hook: from now on, every metadata update stops once its log
    /// entry is durable (nothing applied in place, the writer's drop does
    /// nothing): the file is left as a crash would leave it.
    #[doc(hidden)]
    pub fn crash_after_log(&self) {
        self.crash_after_log.store(true, Ordering::Release);
    }

    /// Writes both headers in turn (each with the next sequence number),
    /// naming `log`; `new_ids` also gives the file new FileWriteGuid and
    /// DataWriteGuid values.
    fn write_headers(&self, st: &mut State, log: Guid, new_ids: bool) -> Result<()> {
        let mut h = st.header.clone();
        if new_ids {
            put(&mut h, 16, &create::random_guid().0);
            put(&mut h, 32, &create::random_guid().0);
        }
        put(&mut h, 48, &log.0);
        for _ in 0..2 {
            let seq = st
                .sequence
                .checked_add(1)
                .ok_or_else(|| Error::corrupt("vhdx header sequence number overflows", 0))?;
            let copy = 1 - st.header_copy.min(1);
            put(&mut h, 8, &seq.to_le_bytes());
            seal(&mut h);
            let at = header::OFFSETS.get(copy).copied().unwrap_or(0);
            self.file.write_at(at, &h)?;
            self.file.flush()?;
            st.sequence = seq;
            st.header_copy = copy;
        }
        st.header = h;
        Ok(())
    }

    /// Starts a session of changes on the first change: new identities
    /// and the log named in the headers.
    fn begin(&self, st: &mut State) -> Result<()> {
        if st.session.is_some() {
            return Ok(());
        }
        let log = create::random_guid();
        self.write_headers(st, log, true)?;
        st.session = Some(log);
        Ok(())
    }

    /// Sets BAT entry `index`.
    fn set_entry(&self, st: &mut State, index: u64, value: u64) -> Result<()> {
        let slot = st.bat.get_mut(index as usize).ok_or_else(|| {
            Error::corrupt(
                format!("vhdx BAT entry {index} past the end of the table"),
                self.bat_offset + index * 8,
            )
        })?;
        *slot = value;
        st.dirty_bat.insert(index * 8 / SECTOR);
        if st.dirty_bat.len() + st.staged.len() >= MAX_PENDING {
            self.sync(st)?;
        }
        Ok(())
    }

    fn entry(&self, st: &State, index: u64) -> Result<u64> {
        st.bat.get(index as usize).copied().ok_or_else(|| {
            Error::corrupt(
                format!("vhdx BAT entry {index} past the end of the table"),
                self.bat_offset + index * 8,
            )
        })
    }

    /// Checks that `len` bytes at `host`, named by BAT entry `index`, are
    /// past the header section and inside the file.
    fn check_host(&self, host: u64, index: u64, len: u64) -> Result<u64> {
        if host < HEADER_SECTION || host.checked_add(len).is_none_or(|e| e > self.file.size()) {
            return Err(Error::corrupt(
                format!(
                    "vhdx BAT entry {index} points to {host:#x}: inside the header section or past the end of the {}-byte file",
                    self.file.size()
                ),
                self.bat_offset + index * 8,
            ));
        }
        Ok(host)
    }

    /// The state of payload block `block`.
    fn block(&self, st: &State, block: u64) -> Result<Block> {
        let index = self.g.payload_index(block);
        let e = self.entry(st, index)?;
        let host = bat::entry_offset(e);
        let state = PayloadState::from_entry(e).ok_or_else(|| {
            Error::corrupt(
                format!("vhdx BAT entry {index} (block {block}) has the reserved state 4"),
                self.bat_offset + index * 8,
            )
        })?;
        Ok(match state {
            PayloadState::NotPresent => Block::Absent,
            PayloadState::Undefined | PayloadState::Zero | PayloadState::Unmapped => Block::Zero,
            PayloadState::FullyPresent => {
                Block::Full(self.check_host(host, index, self.g.block_size)?)
            }
            PayloadState::PartiallyPresent => {
                if !self.has_parent {
                    return Err(Error::corrupt(
                        format!(
                            "vhdx BAT entry {index}: block {block} partially present in a file without a parent"
                        ),
                        self.bat_offset + index * 8,
                    ));
                }
                Block::Partial(self.check_host(host, index, self.g.block_size)?)
            }
        })
    }

    /// Allocates `len` bytes at the end of the file.
    fn allocate(&self, st: &mut State, len: u64) -> Result<u64> {
        let host = st.end;
        let end = host
            .checked_add(len)
            .ok_or_else(|| Error::invalid_input("vhdx file would exceed 2^64 bytes"))?;
        self.file.set_size(end)?;
        st.end = end;
        Ok(host)
    }

    /// Releases the storage of a block no entry names any more.
    fn release(&self, host: u64) -> Result<()> {
        self.file.write_zeroes(host, self.g.block_size)
    }

    // ---- sector bitmaps (differencing files) ----

    /// File offset of the sector bitmap block of `block`'s chunk,
    /// allocated when `create` is set and it has none.
    fn bitmap_block(&self, st: &mut State, block: u64, create: bool) -> Result<Option<u64>> {
        let index = self.g.bitmap_index(block / self.g.chunk_ratio);
        let e = self.entry(st, index)?;
        if e & 7 == SB_BLOCK_PRESENT {
            return Ok(Some(self.check_host(bat::entry_offset(e), index, MIB)?));
        }
        if !create {
            return Ok(None);
        }
        let host = self.allocate(st, MIB)?;
        self.set_entry(st, index, host | SB_BLOCK_PRESENT)?;
        Ok(Some(host))
    }

    /// The 4 KiB metadata sector at `at`, as last changed.
    fn sector(&self, st: &State, at: u64) -> Result<Vec<u8>> {
        if let Some(s) = st.staged.get(&at) {
            return Ok(s.clone());
        }
        let mut s = vec![0u8; SECTOR as usize];
        self.file.read_at(at, &mut s)?;
        Ok(s)
    }

    /// Where bit `sector` of `block` is: the file offset of its bitmap
    /// sector, the byte within it and the bit.
    fn bit_at(&self, bitmap: u64, block: u64, sector: u64) -> (u64, usize, u8) {
        let per_block = self.g.block_size / self.ss;
        let bit = (block % self.g.chunk_ratio) * per_block + sector;
        let byte = bit / 8;
        (
            bitmap + byte / SECTOR * SECTOR,
            (byte % SECTOR) as usize,
            (bit % 8) as u8,
        )
    }

    /// From sector `first` of `block`: whether it is present and where
    /// the run of sectors with the same bit ends (at most `last`).
    fn bit_run(&self, st: &State, block: u64, first: u64, last: u64) -> Result<(bool, u64)> {
        let Some(bitmap) = self.bitmap_block_ro(st, block)? else {
            return Ok((false, last));
        };
        let mut cached: Option<(u64, Vec<u8>)> = None;
        let mut get = |s: u64| -> Result<bool> {
            let (at, byte, bit) = self.bit_at(bitmap, block, s);
            if cached.as_ref().is_none_or(|c| c.0 != at) {
                cached = Some((at, self.sector(st, at)?));
            }
            Ok(cached
                .as_ref()
                .and_then(|c| c.1.get(byte))
                .is_some_and(|b| b >> bit & 1 != 0))
        };
        let present = get(first)?;
        let mut s = first + 1;
        while s < last && get(s)? == present {
            s += 1;
        }
        Ok((present, s))
    }

    fn bitmap_block_ro(&self, st: &State, block: u64) -> Result<Option<u64>> {
        let index = self.g.bitmap_index(block / self.g.chunk_ratio);
        let e = self.entry(st, index)?;
        if e & 7 == SB_BLOCK_PRESENT {
            Ok(Some(self.check_host(bat::entry_offset(e), index, MIB)?))
        } else {
            Ok(None)
        }
    }

    /// Sets (or clears) the bits of sectors `from..to` of `block`.
    fn set_bits(&self, st: &mut State, block: u64, from: u64, to: u64, on: bool) -> Result<()> {
        let bitmap = self
            .bitmap_block(st, block, true)?
            .ok_or_else(|| Error::corrupt("vhdx sector bitmap", 0))?;
        let mut s = from;
        while s < to {
            let (at, _, _) = self.bit_at(bitmap, block, s);
            let mut sector = self.sector(st, at)?;
            while s < to {
                let (a, byte, bit) = self.bit_at(bitmap, block, s);
                if a != at {
                    break;
                }
                if let Some(b) = sector.get_mut(byte) {
                    if on {
                        *b |= 1 << bit;
                    } else {
                        *b &= !(1 << bit);
                    }
                }
                s += 1;
            }
            st.staged.insert(at, sector);
        }
        if st.dirty_bat.len() + st.staged.len() >= MAX_PENDING {
            self.sync(st)?;
        }
        Ok(())
    }

    // ---- the log ----

    /// Sectors per log entry: data sectors plus descriptor sectors must
    /// fit in the log.
    fn entry_capacity(&self) -> u64 {
        let sectors = (self.log_length / SECTOR).min(MAX_ENTRY_SECTORS + 2);
        let mut n = sectors.saturating_sub(1);
        while n > 0 && (64 + 32 * n).div_ceil(SECTOR) + n > sectors {
            n -= 1;
        }
        n.min(MAX_ENTRY_SECTORS)
    }

    /// Makes everything written so far durable: payload data, then the
    /// changed metadata through the log.
    fn sync(&self, st: &mut State) -> Result<()> {
        let mut sectors: Vec<(u64, Vec<u8>)> = Vec::new();
        for &s in &st.dirty_bat {
            let first = (s * SECTOR / 8) as usize;
            let mut bytes = vec![0u8; SECTOR as usize];
            for (i, e) in st
                .bat
                .iter()
                .skip(first)
                .take((SECTOR / 8) as usize)
                .enumerate()
            {
                put(&mut bytes, i * 8, &e.to_le_bytes());
            }
            sectors.push((self.bat_offset + s * SECTOR, bytes));
        }
        for (&at, s) in &st.staged {
            sectors.push((at, s.clone()));
        }
        self.file.flush()?;
        if sectors.is_empty() {
            return Ok(());
        }
        sectors.sort_unstable_by_key(|s| s.0);
        self.begin(st)?;
        let log = st.session.unwrap_or_default();
        let per_entry = self.entry_capacity().max(1) as usize;
        for chunk in sectors.chunks(per_entry) {
            let entry = self.log_entry(chunk, st.log_sequence, log);
            self.file.write_at(self.log_offset, &entry)?;
            self.file.flush()?;
            st.log_sequence += 1;
            if self.crash_after_log.load(Ordering::Acquire) {
                return Ok(());
            }
            for (at, bytes) in chunk {
                self.file.write_at(*at, bytes)?;
            }
            self.file.flush()?;
        }
        // Applied and durable: retire the entry so that no reader replays it.
        self.file
            .write_at(self.log_offset, &[0u8; SECTOR as usize])?;
        st.dirty_bat.clear();
        st.staged.clear();
        Ok(())
    }

    /// A log entry writing `sectors` (file offset, 4 KiB), the whole
    /// active sequence on its own (its tail is itself, at log offset 0).
    fn log_entry(&self, sectors: &[(u64, Vec<u8>)], sequence: u64, log: Guid) -> Vec<u8> {
        let n = sectors.len() as u64;
        let desc = (64 + 32 * n).div_ceil(SECTOR);
        let len = (desc + n) * SECTOR;
        let mut e = vec![0u8; len as usize];
        let file_size = self.file.size();
        put(&mut e, 0, b"loge");
        put(&mut e, 8, &(len as u32).to_le_bytes());
        put(&mut e, 12, &0u32.to_le_bytes());
        put(&mut e, 16, &sequence.to_le_bytes());
        put(&mut e, 24, &(n as u32).to_le_bytes());
        put(&mut e, 32, &log.0);
        put(&mut e, 48, &file_size.to_le_bytes());
        put(&mut e, 56, &file_size.to_le_bytes());
        for (i, (at, bytes)) in sectors.iter().enumerate() {
            let d = 64 + 32 * i;
            put(&mut e, d, b"desc");
            put(&mut e, d + 4, bytes.get(4092..4096).unwrap_or(&[0; 4]));
            put(&mut e, d + 8, bytes.get(..8).unwrap_or(&[0; 8]));
            put(&mut e, d + 16, &at.to_le_bytes());
            put(&mut e, d + 24, &sequence.to_le_bytes());
            let s = ((desc + i as u64) * SECTOR) as usize;
            put(&mut e, s, b"data");
            put(&mut e, s + 4, &((sequence >> 32) as u32).to_le_bytes());
            put(&mut e, s + 8, bytes.get(8..4092).unwrap_or(&[]));
            put(&mut e, s + 4092, &(sequence as u32).to_le_bytes());
        }
        seal(&mut e);
        e
    }

    /// Makes everything durable and ends the session of changes: the
    /// headers name no log. Later changes start a new session.
    pub fn finish(&self) -> Result<()> {
        if self.crash_after_log.load(Ordering::Acquire) {
            return Ok(());
        }
        self.state.with_write(|st| {
            self.sync(st)?;
            if st.session.take().is_some() {
                self.write_headers(st, Guid::default(), false)?;
            }
            Ok(())
        })
    }

    // ---- guest reads ----

    fn read_locked(&self, st: &State, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.g.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / bs;
            let bstart = block * bs;
            let bend = (bstart + bs).min(self.size);
            let n = ((bend - pos) as usize).min(buf.len() - done);
            let dst = buf.get_mut(done..done + n).unwrap_or(&mut []);
            match self.block(st, block)? {
                Block::Absent => read_parent(self.parent.as_ref(), pos, dst)?,
                Block::Zero => dst.fill(0),
                Block::Full(host) => self.file.read_at(host + (pos - bstart), dst)?,
                Block::Partial(host) => {
                    let mut at = 0usize;
                    while at < n {
                        let p = pos + at as u64;
                        let first = (p - bstart) / self.ss;
                        let last = (bend - bstart).div_ceil(self.ss);
                        let (present, stop) = self.bit_run(st, block, first, last)?;
                        let m =
                            ((bstart + stop * self.ss).min(bend) - p).min((n - at) as u64) as usize;
                        let d = dst.get_mut(at..at + m).unwrap_or(&mut []);
                        if present {
                            self.file.read_at(host + (p - bstart), d)?;
                        } else {
                            read_parent(self.parent.as_ref(), p, d)?;
                        }
                        at += m;
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    // ---- guest writes ----

    /// Writes `data` at `pos`, inside one block, into a block whose other
    /// sectors follow the sector bitmap: edge sectors are completed from
    /// what they read now, then the sectors are marked present.
    fn write_sectors(
        &self,
        st: &mut State,
        block: u64,
        host: u64,
        pos: u64,
        data: &[u8],
    ) -> Result<()> {
        let bstart = block * self.g.block_size;
        let ss = self.ss;
        let end = pos + data.len() as u64;
        let a = pos / ss * ss;
        let b = end.div_ceil(ss) * ss;
        if a == pos && b == end {
            self.file.write_at(host + (pos - bstart), data)?;
        } else {
            let mut buf = vec![0u8; (b - a) as usize];
            if a != pos {
                self.read_locked(st, a, buf.get_mut(..ss as usize).unwrap_or(&mut []))?;
            }
            if b != end {
                let at = (b - ss - a) as usize;
                self.read_locked(st, b - ss, buf.get_mut(at..).unwrap_or(&mut []))?;
            }
            if let Some(dst) = buf.get_mut((pos - a) as usize..(end - a) as usize) {
                dst.copy_from_slice(data);
            }
            self.file.write_at(host + (a - bstart), &buf)?;
        }
        self.set_bits(st, block, (a - bstart) / ss, (b - bstart) / ss, true)
    }

    /// Prepares a write of `data` at `pos` inside one block; returns the
    /// file offset to write it to, or `None` when it was written here.
    fn prepare(&self, st: &mut State, pos: u64, data: &[u8]) -> Result<Option<u64>> {
        let bs = self.g.block_size;
        let block = pos / bs;
        let bstart = block * bs;
        let bend = (bstart + bs).min(self.size);
        let whole = pos == bstart && pos + data.len() as u64 == bend;
        let index = self.g.payload_index(block);
        match self.block(st, block)? {
            Block::Full(host) => Ok(Some(host + (pos - bstart))),
            Block::Partial(host) => {
                self.begin(st)?;
                self.write_sectors(st, block, host, pos, data)?;
                Ok(None)
            }
            Block::Absent if self.parent.is_some() && !whole => {
                self.begin(st)?;
                let host = self.allocate(st, bs)?;
                // Bits of an earlier use of the block are stale.
                let sectors = bs / self.ss;
                self.set_bits(st, block, 0, sectors, false)?;
                self.set_entry(st, index, host | PARTIALLY_PRESENT)?;
                self.write_sectors(st, block, host, pos, data)?;
                Ok(None)
            }
            Block::Absent | Block::Zero => {
                self.begin(st)?;
                let host = self.allocate(st, bs)?;
                self.set_entry(st, index, host | FULLY_PRESENT)?;
                Ok(Some(host + (pos - bstart)))
            }
        }
    }

    /// Zeros (`discard` false) or discards `length` bytes at `offset`.
    fn zero_or_discard(&self, offset: u64, length: u64, discard: bool) -> Result<()> {
        check_range(self.size, offset, length)?;
        let bs = self.g.block_size;
        let end = offset + length;
        let mut pos = offset;
        while pos < end {
            let block = pos / bs;
            let bstart = block * bs;
            let bend = (bstart + bs).min(self.size);
            let n = bend.min(end) - pos;
            let whole = pos == bstart && pos + n == bend;
            let index = self.g.payload_index(block);
            self.state.with_write(|st| {
                let b = self.block(st, block)?;
                match b {
                    Block::Zero if !discard || self.parent.is_none() => {}
                    Block::Absent if self.parent.is_none() => {}
                    Block::Full(host) if self.fixed => {
                        self.begin(st)?;
                        self.file.write_zeroes(host + (pos - bstart), n)?;
                    }
                    _ if whole => {
                        self.begin(st)?;
                        let state = if discard && self.parent.is_some() {
                            NOT_PRESENT
                        } else {
                            ZERO
                        };
                        self.set_entry(st, index, state)?;
                        if let Block::Full(host) | Block::Partial(host) = b {
                            self.release(host)?;
                        }
                    }
                    Block::Full(host) if !discard || self.parent.is_none() => {
                        self.begin(st)?;
                        self.file.write_zeroes(host + (pos - bstart), n)?;
                    }
                    Block::Full(host) => {
                        // Partly back to the parent: the block follows
                        // the bitmap from now on.
                        self.begin(st)?;
                        self.set_bits(st, block, 0, bs / self.ss, true)?;
                        self.set_entry(st, index, host | PARTIALLY_PRESENT)?;
                        self.unmark(st, block, pos, n)?;
                    }
                    Block::Partial(_) if discard => self.unmark(st, block, pos, n)?,
                    _ => {
                        // Zeros over the parent's sectors.
                        self.begin(st)?;
                        let zeros = vec![0u8; n.min(MIB) as usize];
                        let mut at = pos;
                        while at < pos + n {
                            let m = (pos + n - at).min(MIB) as usize;
                            let chunk = zeros.get(..m).unwrap_or(&[]);
                            if let Some(host) = self.prepare(st, at, chunk)? {
                                self.file.write_at(host, chunk)?;
                            }
                            at += m as u64;
                        }
                    }
                }
                Ok(())
            })?;
            pos += n;
        }
        Ok(())
    }

    /// Clears the bitmap bits of the whole sectors of `pos..pos + n` in
    /// `block` (they read as the parent's again).
    fn unmark(&self, st: &mut State, block: u64, pos: u64, n: u64) -> Result<()> {
        let bstart = block * self.g.block_size;
        let from = (pos - bstart).div_ceil(self.ss);
        let to = (pos + n - bstart) / self.ss;
        if from < to {
            self.begin(st)?;
            self.set_bits(st, block, from, to, false)?;
        }
        Ok(())
    }

    /// Replaces the parent locator of a differencing file with one that
    /// holds `entries` (through the log, like every metadata change).
    pub fn set_locator(&self, locator: &ParentLocator) -> Result<()> {
        if !self.has_parent {
            return Err(Error::invalid_input(
                "vhdx file has no parent locator: it is not a differencing file",
            ));
        }
        let item = create::locator_item(locator)?;
        let base = self.metadata.file_offset;
        self.state.with_write(|st| {
            let table = {
                let mut t = Vec::with_capacity(16 * SECTOR as usize);
                for i in 0..16 {
                    t.extend(self.sector(st, base + i * SECTOR)?);
                }
                t
            };
            let count = u64::from(disk_io::bytes::le_u16(&table, 10).unwrap_or(0)).min(2047);
            let mut slot = None;
            let mut free = 64u64 << 10;
            for i in 0..count {
                let e = (32 + 32 * i) as usize;
                let off = u64::from(le_u32(&table, e + 16).unwrap_or(0));
                let len = u64::from(le_u32(&table, e + 20).unwrap_or(0));
                if Guid::at(&table, e) == items::PARENT_LOCATOR {
                    slot = Some((i, off, len));
                } else {
                    free = free.max(off + len);
                }
            }
            let Some((i, old_off, old_len)) = slot else {
                return Err(Error::corrupt(
                    "vhdx differencing file has no parent locator item",
                    base,
                ));
            };
            let len = item.len() as u64;
            let at = if len <= old_len {
                old_off
            } else {
                free.max(old_off + old_len).next_multiple_of(SECTOR)
            };
            if at + len > u64::from(self.metadata.length) {
                return Err(Error::unsupported(format!(
                    "vhdx parent locator of {len} bytes does not fit in the metadata region"
                )));
            }
            self.begin(st)?;
            let e = 32 + 32 * i;
            let mut entry_bytes = [0u8; 8];
            put(&mut entry_bytes, 0, &(at as u32).to_le_bytes());
            put(&mut entry_bytes, 4, &(len as u32).to_le_bytes());
            self.stage_bytes(st, base + e + 16, &entry_bytes)?;
            let mut padded = item.clone();
            if len < old_len && at == old_off {
                padded.resize(old_len as usize, 0);
            }
            self.stage_bytes(st, base + at, &padded)?;
            self.sync(st)
        })
    }

    /// Stages `bytes` at file offset `at` (metadata written through the log).
    fn stage_bytes(&self, st: &mut State, at: u64, bytes: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < bytes.len() {
            let p = at + done as u64;
            let s = p / SECTOR * SECTOR;
            let mut sector = self.sector(st, s)?;
            let within = (p - s) as usize;
            let n = (SECTOR as usize - within).min(bytes.len() - done);
            if let (Some(dst), Some(src)) = (
                sector.get_mut(within..within + n),
                bytes.get(done..done + n),
            ) {
                dst.copy_from_slice(src);
            }
            st.staged.insert(s, sector);
            done += n;
        }
        Ok(())
    }
}

impl ReadAt for VhdxWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.state.with_read(|st| self.read_locked(st, offset, buf))
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.size, offset, length)?;
        let end = offset + length;
        let bs = self.g.block_size;
        let (state, stop) = self.state.with_read(|st| {
            let unit = |pos: u64| -> Result<(Allocation, u64)> {
                let block = pos / bs;
                let bstart = block * bs;
                let bend = (bstart + bs).min(self.size);
                Ok(match self.block(st, block)? {
                    Block::Absent => (Allocation::Unallocated, bend),
                    Block::Zero => (Allocation::Zero, bend),
                    Block::Full(_) => (Allocation::Data, bend),
                    Block::Partial(_) => {
                        let first = (pos - bstart) / self.ss;
                        let last = (bend - bstart).div_ceil(self.ss);
                        let (present, s) = self.bit_run(st, block, first, last)?;
                        let run_end = (bstart + s * self.ss).min(bend);
                        if present {
                            (Allocation::Data, run_end)
                        } else {
                            (Allocation::Unallocated, run_end)
                        }
                    }
                })
            };
            let (state, first_end) = unit(offset)?;
            let stop = extend_run(first_end.min(end), end, state, |p| Ok(Some(unit(p)?)))?;
            Ok((state, stop))
        })?;
        layer_answer(self.parent.as_ref(), offset, stop, state)
    }
}

impl WriteAt for VhdxWriter {
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let bs = self.g.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let n = ((bs - pos % bs) as usize).min(buf.len() - done);
            let data = buf.get(done..done + n).unwrap_or(&[]);
            let target = self.state.with_write(|st| self.prepare(st, pos, data))?;
            if let Some(host) = target {
                self.file.write_at(host, data)?;
            }
            done += n;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        self.zero_or_discard(offset, length, false)
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.zero_or_discard(offset, length, true)
    }

    fn flush(&self) -> Result<()> {
        self.state.with_write(|st| self.sync(st))
    }
}

impl crate::image::Finish for VhdxWriter {
    fn finish(&self) -> Result<()> {
        VhdxWriter::finish(self)
    }
}

impl Drop for VhdxWriter {
    fn drop(&mut self) {
        // Best effort: callers that care call `finish` first.
        let _ = self.finish();
    }
}

/// The DataWriteGuid of the VHDX file at `path` (what a child's
/// `parent_linkage` records).
fn data_write_guid(file: &FileDisk) -> Result<Guid> {
    Ok(Headers::read(file).current()?.data_write_guid)
}

/// The parent locator of a child naming `name` (relative to the child's
/// directory) for the parent file `parent_path` (of identity `guid`).
fn locator_for(name: &str, parent_path: &Path, guid: Guid) -> ParentLocator {
    let win = |s: &str| s.replace('/', "\\");
    let mut entries = vec![
        ("parent_linkage".into(), format!("{guid}")),
        ("relative_path".into(), win(name)),
    ];
    if let Ok(abs) = parent_path.canonicalize() {
        entries.push(("absolute_win32_path".into(), win(&abs.to_string_lossy())));
    }
    ParentLocator { entries }
}

/// Opens the parent `name` of the child at `child` as a guest disk, with
/// the locator a child made on it now records.
fn open_parent(child: &Path, name: &str) -> Result<(Backing, ParentLocator)> {
    let image = crate::writable::open_parent_image(child, name)?;
    if image.format() != crate::Format::Vhdx {
        return Err(Error::unsupported(format!(
            "a vhdx differencing file's parent must be a vhdx file; '{name}' is {}",
            image.format()
        )));
    }
    let guid = data_write_guid(image.file())?;
    let path = crate::writable::dir_of(child).join(name);
    let locator = locator_for(name, &path, guid);
    Ok((Box::new(image) as Backing, locator))
}

/// Creates a new VHDX file at `path` as `-o` options say; a backing file
/// named there is found relative to the new file's directory.
pub fn create_image(path: &Path, size: u64, opts: &CreateOptions) -> Result<VhdxWriter> {
    let params = Params::from_options(opts)?;
    let parent = match &params.backing_file {
        None => None,
        Some(name) => Some(open_parent(path, name)?),
    };
    VhdxWriter::create(path, size, &params, parent)
}

/// Where the parent of the VHDX file in `file` (at `path`) is, when it is
/// a differencing file: the name its locator gives, resolved beside it.
fn parent_of(path: &Path, file: &FileDisk) -> Result<Option<(String, PathBuf)>> {
    let v = Vhdx::load(file)?;
    if !v.metadata.has_parent {
        return Ok(None);
    }
    let locator = v.metadata.parent_locator.clone().unwrap_or_default();
    let dir = crate::writable::dir_of(path);
    let name = parent_name(&locator, |n| dir.join(n).exists())?;
    let resolved = dir.join(&name);
    Ok(Some((name, resolved)))
}

/// Opens the VHDX file at `path` for writing, with its parent (found by
/// its locator, relative to the file's directory); also gives the
/// parent's path.
pub fn open_path_with_parent(path: &Path) -> Result<(VhdxWriter, Option<PathBuf>)> {
    let file = FileDisk::open_rw(path)?;
    let (parent, parent_path) = match parent_of(path, &file)? {
        None => (None, None),
        Some((name, resolved)) => (
            Some(Box::new(crate::writable::open_parent_image(path, &name)?) as Backing),
            Some(resolved),
        ),
    };
    Ok((VhdxWriter::open(file, parent)?, parent_path))
}

/// Makes the differencing file at `path` name `name` (relative to its
/// directory) as its parent, recording the parent's current identity.
pub(crate) fn set_backing(path: &Path, name: &str) -> Result<()> {
    let (_, locator) = open_parent(path, name)?;
    let (w, _) = open_path_with_parent_named(path, name)?;
    w.set_locator(&locator)?;
    w.finish()
}

/// Opens the file at `path` with the parent `name` (not the one it names).
fn open_path_with_parent_named(path: &Path, name: &str) -> Result<(VhdxWriter, PathBuf)> {
    let file = FileDisk::open_rw(path)?;
    let parent = Box::new(crate::writable::open_parent_image(path, name)?) as Backing;
    Ok((
        VhdxWriter::open(file, Some(parent))?,
        crate::writable::dir_of(path).join(name),
    ))
}

/// Makes the differencing file at `path` record its parent's current
/// identity (after the parent was written to, e.g. by a commit).
pub(crate) fn relink(path: &Path) -> Result<()> {
    let file = FileDisk::open(path)?;
    let Some((name, _)) = parent_of(path, &file)? else {
        return Ok(());
    };
    let v = Vhdx::load(&file)?;
    let mut locator = v.metadata.parent_locator.clone().unwrap_or_default();
    drop(file);
    let (_, fresh) = open_parent(path, &name)?;
    let guid = fresh.get("parent_linkage").unwrap_or_default().to_string();
    locator
        .entries
        .retain(|(k, _)| k != "parent_linkage" && k != "parent_linkage2");
    locator.entries.insert(0, ("parent_linkage".into(), guid));
    let (w, _) = open_path_with_parent(path)?;
    w.set_locator(&locator)?;
    w.finish()
}
