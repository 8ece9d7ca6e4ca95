//! VHDX (Microsoft's VHDX Format Specification v1.0): the guest disk
//! through the block allocation table, for fixed, dynamic and differencing
//! files.
//!
//! - Both headers are read; the current one is the valid copy with the
//!   higher sequence number. One bad copy is tolerated (see
//!   [`Vhdx::damage`]); both bad is an error.
//! - A dirty log (non-zero LogGuid) is replayed in memory only: the active
//!   sequence's sector writes and zeroed ranges form an overlay that every
//!   later read of the file goes through. The file is never written.
//! - Payload block states: FULLY_PRESENT is data; ZERO, UNDEFINED and
//!   UNMAPPED read as zeros; NOT_PRESENT is unallocated (the parent's in
//!   a differencing file, zeros otherwise); PARTIALLY_PRESENT follows the
//!   sector bitmap (set: this file, clear: the parent).
//!
//! A differencing file is opened with its parent disk given by the caller
//! ([`Vhdx::with_parent`]); finding it (parent locator) and checking its
//! identity (DataWriteGuid against `parent_linkage`) is done by `Image`.

pub mod bat;
#[cfg(feature = "std")]
pub mod create;
pub mod file_identifier;
pub mod header;
pub mod log;
pub mod metadata;
pub mod region_table;
#[cfg(feature = "std")]
pub mod write;

use alloc::format;
use alloc::vec::Vec;

use disk_io::sync::Lock;
use disk_io::{Allocation, Error, Extent, ReadAt, Result, check_range, clamp_query};

pub use bat::{Geometry, PayloadState};
pub use file_identifier::FileIdentifier;
pub use header::{Guid, Header, Headers};
pub use log::{Overlay, Replay};
pub use metadata::{Metadata, ParentLocator};
pub use region_table::{Region, RegionTable};

pub use crate::chain::Backing;
use crate::chain::{extend_run, layer_answer, read_parent};
use crate::check::CheckReport;

/// Bytes of the header section at the start of the file.
const HEADER_SECTION: u64 = 1 << 20;
/// Sector bitmap slices kept.
const BITMAP_CACHE: usize = 16;

/// What one guest range maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// Not in this file: the parent's, or zeros without one.
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// Stored at this file offset (of the start of the range).
    Data(u64),
}

impl Unit {
    fn allocation(self) -> Allocation {
        match self {
            Unit::Unallocated => Allocation::Unallocated,
            Unit::Zero => Allocation::Zero,
            Unit::Data(_) => Allocation::Data,
        }
    }
}

/// A VHDX image read from `D`.
///
/// ```no_run
/// use disk_io::{FileDisk, ReadAt};
/// let image = vdisk_format::vhdx::Vhdx::open(FileDisk::open("disk.vhdx")?)?;
/// let mut mbr = [0u8; 512];
/// image.read_at(0, &mut mbr)?;
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct Vhdx<D> {
    file: D,
    parent: Option<Backing>,
    header: Header,
    regions: RegionTable,
    metadata: Metadata,
    geometry: Geometry,
    bat_region: Region,
    bat: Vec<u64>,
    replay: Option<Replay>,
    /// Size of the file after log replay.
    file_size: u64,
    damage: Vec<Error>,
    /// Sector bitmap slices of one payload block each, by file offset.
    bitmaps: Lock<Vec<(u64, Vec<u8>)>>,
}

/// Reads `buf` at `offset` of `file` as it is after log replay: bytes
/// past the real end (up to `size`) are zeros unless the log wrote them.
fn read_replayed<D: ReadAt + ?Sized>(
    file: &D,
    overlay: Option<&Overlay>,
    size: u64,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    check_range(size, offset, buf.len() as u64)?;
    let real = file.size().saturating_sub(offset).min(buf.len() as u64) as usize;
    let (head, tail) = buf.split_at_mut(real);
    if !head.is_empty() {
        file.read_at(offset, head)?;
    }
    tail.fill(0);
    if let Some(o) = overlay {
        o.apply(offset, buf);
    }
    Ok(())
}

impl<D: ReadAt> Vhdx<D> {
    /// Opens the VHDX file `file`, which must not be a differencing file.
    pub fn open(file: D) -> Result<Self> {
        Vhdx::with_parent(file, None)
    }

    /// Opens the VHDX file `file` over `parent`, which must be given
    /// exactly when the file is a differencing file.
    pub fn with_parent(file: D, parent: Option<Backing>) -> Result<Self> {
        let mut v = Vhdx::load(file)?;
        match (v.metadata.has_parent, &parent) {
            (true, None) => {
                return Err(Error::invalid_input(
                    "vhdx differencing file: open it with its parent",
                ));
            }
            (false, Some(_)) => {
                return Err(Error::invalid_input(
                    "vhdx file has no parent, but a parent was given",
                ));
            }
            _ => {}
        }
        v.parent = parent;
        Ok(v)
    }

    /// Reads every structure up to the BAT, without a parent.
    fn load(file: D) -> Result<Self> {
        FileIdentifier::read(&file)?;
        let headers = Headers::read(&file);
        let header = headers.current()?.clone();
        let mut damage: Vec<Error> = headers.damage().map(clone_error).into_iter().collect();
        let replay = log::replay(&file, &header)?;
        let file_size = match &replay {
            Some(r) => file
                .size()
                .max(r.last_file_offset)
                .max(r.overlay.data_end()),
            None => file.size(),
        };
        let overlay = replay.as_ref().map(|r| &r.overlay);
        let read =
            |offset: u64, buf: &mut [u8]| read_replayed(&file, overlay, file_size, offset, buf);
        let (regions, bad_copy) = region_table::read(&read)?;
        damage.extend(bad_copy);
        let bat_region = regions.find(region_table::BAT_GUID, "BAT")?;
        let meta_region = regions.find(region_table::METADATA_GUID, "metadata")?;
        for r in [bat_region, meta_region] {
            if r.end() > file_size {
                return Err(Error::corrupt(
                    format!(
                        "vhdx region {} at {:#x} ({} bytes) ends past the end of the {file_size}-byte file",
                        r.guid, r.file_offset, r.length
                    ),
                    region_table::OFFSETS
                        .get(regions.copy)
                        .copied()
                        .unwrap_or(0),
                ));
            }
        }
        let metadata = metadata::read(&read, meta_region)?;
        let geometry = Geometry::new(&metadata);
        let bat = bat::read(&read, bat_region, &geometry, file_size, file.size())?;
        Ok(Vhdx {
            file,
            parent: None,
            header,
            regions,
            metadata,
            geometry,
            bat_region,
            bat,
            replay,
            file_size,
            damage,
            bitmaps: Lock::new(Vec::new()),
        })
    }

    /// The current header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The region table in use.
    pub fn regions(&self) -> &RegionTable {
        &self.regions
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// How the BAT is laid out.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The BAT entries (after log replay).
    pub fn bat(&self) -> &[u64] {
        &self.bat
    }

    /// What the log replay did, when the header named a log.
    pub fn replay(&self) -> Option<&Replay> {
        self.replay.as_ref()
    }

    /// Damage read past: an invalid header copy, an invalid first region
    /// table copy.
    pub fn damage(&self) -> &[Error] {
        &self.damage
    }

    /// The file holding the image.
    pub fn file(&self) -> &D {
        &self.file
    }

    /// The parent disk of a differencing file.
    pub fn parent(&self) -> Option<&Backing> {
        self.parent.as_ref()
    }

    /// `qemu-img`-style variant name: `differencing`, `fixed` (blocks are
    /// left allocated) or `dynamic`.
    pub fn subformat(&self) -> &'static str {
        if self.metadata.has_parent {
            "differencing"
        } else if self.metadata.leave_blocks_allocated {
            "fixed"
        } else {
            "dynamic"
        }
    }

    /// Reads the file as it is after log replay.
    fn read_file(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        read_replayed(
            &self.file,
            self.replay.as_ref().map(|r| &r.overlay),
            self.file_size,
            offset,
            buf,
        )
    }

    /// File offset of BAT entry `index`.
    fn entry_at(&self, index: u64) -> u64 {
        self.bat_region.file_offset + index * 8
    }

    fn entry(&self, index: u64) -> Result<u64> {
        self.bat.get(index as usize).copied().ok_or_else(|| {
            Error::corrupt(
                format!("vhdx BAT entry {index} past the end of the table"),
                self.entry_at(index),
            )
        })
    }

    /// Checks the file offset of a present block of `len` bytes.
    fn check_host(&self, host: u64, index: u64, len: u64) -> Result<()> {
        if host < HEADER_SECTION || host.checked_add(len).is_none_or(|e| e > self.file_size) {
            return Err(Error::corrupt(
                format!(
                    "vhdx BAT entry {index} points to {host:#x}: inside the header section or past the end of the {}-byte file",
                    self.file_size
                ),
                self.entry_at(index),
            ));
        }
        Ok(())
    }

    /// The sector bitmap bits of payload block `block` (one bit per
    /// logical sector, bit 0 of byte 0 first).
    fn bitmap(&self, block: u64) -> Result<Vec<u8>> {
        let g = &self.geometry;
        let chunk = block / g.chunk_ratio;
        let index = g.bitmap_index(chunk);
        let entry = self.entry(index)?;
        if entry & 7 != bat::SB_BLOCK_PRESENT {
            return Err(Error::corrupt(
                format!(
                    "vhdx BAT entry {index}: sector bitmap block not present, but payload block {block} is partially present"
                ),
                self.entry_at(index),
            ));
        }
        let host = bat::entry_offset(entry);
        self.check_host(host, index, 1 << 20)?;
        let sectors_per_block = g.block_size / u64::from(self.metadata.logical_sector_size);
        let at = host + (block % g.chunk_ratio) * sectors_per_block / 8;
        let len = (sectors_per_block / 8) as usize;
        let hit = self
            .bitmaps
            .with_read(|c| Ok(c.iter().find(|(k, _)| *k == at).map(|(_, v)| v.clone())))?;
        if let Some(b) = hit {
            return Ok(b);
        }
        let mut bits = alloc::vec![0u8; len];
        self.read_file(at, &mut bits)
            .map_err(|e| e.context(format!("vhdx sector bitmap of block {block}")))?;
        self.bitmaps.with_write(|c| {
            if c.len() >= BITMAP_CACHE {
                c.remove(0);
            }
            c.push((at, bits.clone()));
            Ok(())
        })?;
        Ok(bits)
    }

    /// The mapping of guest offset `pos` and the guest range `start..end`
    /// it holds for (a block, or a run of sectors of a partially present
    /// block), clamped to the disk size.
    fn unit_at(&self, pos: u64) -> Result<(Unit, u64, u64)> {
        let g = &self.geometry;
        let size = self.metadata.virtual_size;
        let block = pos / g.block_size;
        let index = g.payload_index(block);
        let entry = self.entry(index)?;
        let start = block * g.block_size;
        let end = (start + g.block_size).min(size);
        let state = PayloadState::from_entry(entry).ok_or_else(|| {
            Error::corrupt(
                format!("vhdx BAT entry {index} (block {block}) has the reserved state 4"),
                self.entry_at(index),
            )
        })?;
        let host = bat::entry_offset(entry);
        match state {
            PayloadState::NotPresent => Ok((Unit::Unallocated, start, end)),
            PayloadState::Undefined | PayloadState::Zero | PayloadState::Unmapped => {
                Ok((Unit::Zero, start, end))
            }
            PayloadState::FullyPresent => {
                self.check_host(host, index, end - start)?;
                Ok((Unit::Data(host), start, end))
            }
            PayloadState::PartiallyPresent => {
                if self.parent.is_none() && !self.metadata.has_parent {
                    return Err(Error::corrupt(
                        format!(
                            "vhdx BAT entry {index}: block {block} partially present in a file without a parent"
                        ),
                        self.entry_at(index),
                    ));
                }
                self.check_host(host, index, end - start)?;
                let bits = self.bitmap(block)?;
                let ss = u64::from(self.metadata.logical_sector_size);
                let bit = |s: u64| {
                    bits.get((s / 8) as usize)
                        .is_some_and(|b| b >> (s % 8) & 1 != 0)
                };
                let first = (pos - start) / ss;
                let present = bit(first);
                let last = (end - start).div_ceil(ss);
                let mut s = first + 1;
                while s < last && bit(s) == present {
                    s += 1;
                }
                let (run_start, run_end) = (start + first * ss, (start + s * ss).min(end));
                if present {
                    Ok((Unit::Data(host + first * ss), run_start, run_end))
                } else {
                    Ok((Unit::Unallocated, run_start, run_end))
                }
            }
        }
    }
}

/// A copy of an error (kind, message, offset).
fn clone_error(e: &Error) -> Error {
    let c = Error::new(e.kind(), alloc::string::String::from(e.message()));
    match e.offset() {
        Some(o) => c.at(o),
        None => c,
    }
}

impl<D: ReadAt> ReadAt for Vhdx<D> {
    fn size(&self) -> u64 {
        self.metadata.virtual_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (unit, start, end) = self.unit_at(pos)?;
            let mut n = (end - pos).min((buf.len() - done) as u64) as usize;
            match unit {
                Unit::Zero => buf.get_mut(done..done + n).unwrap_or(&mut []).fill(0),
                Unit::Unallocated => read_parent(
                    self.parent.as_ref(),
                    pos,
                    buf.get_mut(done..done + n).unwrap_or(&mut []),
                )?,
                Unit::Data(host) => {
                    let host = host + (pos - start);
                    // Coalesce blocks that follow each other in the file too.
                    while done + n < buf.len() {
                        let next = pos + n as u64;
                        match self.unit_at(next)? {
                            (Unit::Data(h), s, e) if s == next && h == host + n as u64 => {
                                n += (e - next).min((buf.len() - done - n) as u64) as usize;
                            }
                            _ => break,
                        }
                    }
                    self.read_file(host, buf.get_mut(done..done + n).unwrap_or(&mut []))?;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.size(), offset, length)?;
        let end = offset + length;
        let (unit, _, first_end) = self.unit_at(offset)?;
        let state = unit.allocation();
        let stop = extend_run(first_end.min(end), end, state, |pos| {
            let (u, _, e) = self.unit_at(pos)?;
            Ok(Some((u.allocation(), e)))
        })?;
        layer_answer(self.parent.as_ref(), offset, stop, state)
    }
}

/// Checks the container metadata of the VHDX file `file`: header, region
/// table and log checksums, the metadata, and every BAT entry (state
/// valid for the file type, block inside the file and past the header
/// section, no two blocks or structures overlapping). A log that still
/// needs replaying is reported as a message, not an error: the file is
/// consistent once it is replayed (readers here do so in memory; qemu
/// replays it in place on `qemu-img check -r all`).
pub fn check<D: ReadAt + ?Sized>(file: &D) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    FileIdentifier::read(file)?;
    let headers = Headers::read(file);
    for h in headers.copies.iter() {
        if let Err(e) = h {
            report.error(format!("{e}"));
        }
    }
    let header = match headers.current() {
        Ok(h) => h,
        Err(e) => {
            // Both copies valid, but neither current (equal sequence numbers).
            if report.errors == 0 {
                report.error(format!("{e}"));
            }
            return Ok(report);
        }
    };
    let replay = match log::replay(file, header) {
        Ok(r) => r,
        Err(e) => {
            report.error(format!("{e}"));
            return Ok(report);
        }
    };
    if let Some(r) = &replay {
        note(
            &mut report,
            if r.entries > 0 {
                format!(
                    "vhdx log at {:#x} holds {} entries to replay (head sequence {}): the file was not closed cleanly; it reads as replayed, and `qemu-img check -r all` replays it in place",
                    header.log_offset, r.entries, r.head_sequence
                )
            } else {
                format!(
                    "vhdx header {} names log {} but the log holds no active sequence: nothing to replay",
                    header.copy + 1,
                    header.log_guid
                )
            },
        );
    }
    let overlay = replay.as_ref().map(|r| &r.overlay);
    let file_size = match &replay {
        Some(r) => file
            .size()
            .max(r.last_file_offset)
            .max(r.overlay.data_end()),
        None => file.size(),
    };
    let read = |offset: u64, buf: &mut [u8]| read_replayed(file, overlay, file_size, offset, buf);
    for copy in 0..2 {
        if let Err(e) = RegionTable::read_copy(&read, copy) {
            report.error(format!("{e}"));
        }
    }
    let loaded = (|| {
        let (regions, _) = region_table::read(&read)?;
        let bat_region = regions.find(region_table::BAT_GUID, "BAT")?;
        let meta_region = regions.find(region_table::METADATA_GUID, "metadata")?;
        let metadata = metadata::read(&read, meta_region)?;
        let geometry = Geometry::new(&metadata);
        let bat = bat::read(&read, bat_region, &geometry, file_size, file.size())?;
        Ok::<_, Error>((regions, bat_region, metadata, geometry, bat))
    })();
    let (regions, bat_region, metadata, geometry, bat) = match loaded {
        Ok(l) => l,
        Err(e) => {
            report.error(format!("{e}"));
            return Ok(report);
        }
    };
    // (start, end, what) of everything that occupies the file.
    let mut used: Vec<(u64, u64, alloc::string::String)> = alloc::vec![
        (0, HEADER_SECTION, "header section".into()),
        (
            header.log_offset,
            header.log_offset + u64::from(header.log_length),
            "log".into()
        ),
    ];
    for r in &regions.entries {
        used.push((r.file_offset, r.end(), format!("region {}", r.guid)));
    }
    let has_parent = metadata.has_parent;
    for (index, &entry) in bat.iter().enumerate() {
        let index = index as u64;
        let at = bat_region.file_offset + index * 8;
        let host = bat::entry_offset(entry);
        let len = if geometry.is_bitmap_index(index) {
            match entry & 7 {
                bat::SB_BLOCK_NOT_PRESENT => continue,
                bat::SB_BLOCK_PRESENT if has_parent => 1 << 20,
                s => {
                    report.error(format!(
                        "vhdx BAT entry {index} at offset {at:#x}: sector bitmap state {s} is not valid in a {} file",
                        if has_parent { "differencing" } else { "non-differencing" }
                    ));
                    continue;
                }
            }
        } else {
            match PayloadState::from_entry(entry) {
                None => {
                    report.error(format!(
                        "vhdx BAT entry {index} at offset {at:#x}: reserved payload state 4"
                    ));
                    continue;
                }
                Some(PayloadState::PartiallyPresent) if !has_parent => {
                    report.error(format!(
                        "vhdx BAT entry {index} at offset {at:#x}: partially present block in a file without a parent"
                    ));
                    continue;
                }
                Some(PayloadState::FullyPresent | PayloadState::PartiallyPresent) => {
                    geometry.block_size
                }
                Some(_) => continue,
            }
        };
        if host < HEADER_SECTION || host.checked_add(len).is_none_or(|e| e > file_size) {
            report.error(format!(
                "vhdx BAT entry {index} at offset {at:#x} points to {host:#x}: inside the header section or past the end of the {file_size}-byte file"
            ));
            continue;
        }
        used.push((host, host + len, format!("block of BAT entry {index}")));
    }
    used.sort_unstable_by_key(|u| u.0);
    let mut reach: Option<(u64, usize)> = None;
    for (i, (start, end, what)) in used.iter().enumerate() {
        if let Some((r_end, r)) = reach {
            if *start < r_end {
                let other = used.get(r).map(|u| u.2.as_str()).unwrap_or("");
                report.error(format!("vhdx {what} at {start:#x} overlaps {other}"));
            }
        }
        if reach.is_none_or(|(r_end, _)| *end > r_end) {
            reach = Some((*end, i));
        }
    }
    Ok(report)
}

/// Adds an informational line to a report (neither error nor leak).
fn note(report: &mut CheckReport, message: alloc::string::String) {
    if report.messages.len() < crate::check::MAX_MESSAGES {
        report.messages.push(message);
    }
}

/// The parent's name under the locator: `relative_path` (backslashes made
/// slashes) when `exists` says it is there, else the file name of
/// `relative_path`, `absolute_win32_path` or `volume_path` beside the child
/// (files moved together keep their names); `relative_path` itself when
/// none is there, so the error names what the file asked for.
#[cfg(feature = "std")]
fn parent_name(
    locator: &ParentLocator,
    exists: impl Fn(&str) -> bool,
) -> Result<alloc::string::String> {
    let paths: Vec<alloc::string::String> = ["relative_path", "absolute_win32_path", "volume_path"]
        .iter()
        .filter_map(|k| locator.get(k))
        .map(|p| p.replace('\\', "/"))
        .collect();
    let Some(first) = paths.first() else {
        return Err(Error::unsupported(
            "vhdx parent locator names no relative_path, absolute_win32_path or volume_path",
        ));
    };
    let relative = locator.get("relative_path").map(|p| p.replace('\\', "/"));
    let base = |p: &str| p.rsplit('/').next().map(alloc::string::String::from);
    let candidates = relative.iter().cloned().chain(
        paths
            .iter()
            .filter_map(|p| base(p))
            .filter(|b| !b.is_empty()),
    );
    for c in candidates {
        if exists(&c) {
            return Ok(c);
        }
    }
    Ok(relative.unwrap_or_else(|| first.clone()))
}

/// Opens a VHDX file for `Image`: a differencing file's parent through
/// the caller's policy (the locator's `relative_path`), checked against
/// the `parent_linkage` the child records.
#[cfg(feature = "std")]
pub(crate) fn open_layer(
    file: alloc::sync::Arc<disk_io::FileDisk>,
    ctx: &mut crate::image::OpenContext<'_>,
) -> Result<crate::image::Layer> {
    let mut v = Vhdx::load(file)?;
    if v.metadata.has_parent {
        let locator = v.metadata.parent_locator.clone().unwrap_or_default();
        let name = parent_name(&locator, |n| ctx.resolve(n, "backing file").is_ok())?;
        let parent = ctx.open_parent(&name, Some(crate::Format::Vhdx))?;
        let parent_guid = Headers::read(&**parent.file())
            .current()
            .map(|h| h.data_write_guid)?;
        let linked = [locator.parent_linkage(), locator.parent_linkage2()];
        if !linked.contains(&Some(parent_guid)) {
            ctx.damaged(Error::corrupt(
                format!(
                    "vhdx parent {name}: its DataWriteGuid {parent_guid} is not the parent_linkage {} this file was made on",
                    locator.get("parent_linkage").unwrap_or("(none)")
                ),
                0,
            ))?;
        }
        v.parent = Some(parent.into_guest());
    }
    let cluster_size = Some(v.geometry.block_size);
    let subformat = Some(v.subformat().into());
    Ok(crate::image::Layer {
        guest: alloc::boxed::Box::new(v),
        subformat,
        cluster_size,
        extra_allocated: 0,
    })
}
