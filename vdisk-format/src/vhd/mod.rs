//! VHD (Microsoft Virtual Hard Disk, qemu's `vpc`): fixed, dynamic and
//! differencing disks, after Microsoft's Virtual Hard Disk Image Format
//! Specification.
//!
//! - Fixed: the guest disk, then the [footer](footer).
//! - Dynamic: a footer copy at offset 0, the [dynamic disk
//!   header](dynamic_header), the [BAT](bat) and blocks, each a sector
//!   bitmap followed by the block's data; the footer again at the end.
//! - Differencing: a dynamic disk over a parent VHD, found through the
//!   header's [parent locators](parent_locator); a sector whose bitmap bit
//!   is clear (or whose block is not stored) reads from the parent.
//!
//! Writing: [`create`] sizes new images as qemu-img does (CHS rounding,
//! or the exact size with `force_size`), [`write`](mod@write) creates them and writes
//! dynamic and differencing disks with random access.
//!
//! The guest size follows qemu's rule (see [`Footer::virtual_size`]).
//! Checksums that do not verify are errors unless the caller reads
//! damaged images ([`Vhd::open_damaged`]); the footer at the end is
//! preferred, and its copy at offset 0 used (with a warning) when the end
//! one is missing or does not verify.

pub mod bat;
pub mod check;
#[cfg(feature = "std")]
pub mod create;
pub mod dynamic_header;
pub mod footer;
pub mod parent_locator;
#[cfg(feature = "std")]
pub mod write;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use disk_io::sync::Lock;
use disk_io::{Allocation, Error, Extent, ReadAt, Result, check_range, clamp_query};

pub use bat::Bat;
pub use dynamic_header::DynamicHeader;
pub use footer::{DiskType, Footer};

pub use crate::chain::Backing;
use crate::chain::{extend_run, layer_answer, read_parent};

/// Memory the sector bitmap cache may use.
const BITMAP_CACHE_BYTES: u64 = 1 << 20;

/// Something found while opening that a careful reader may read past.
pub(crate) enum Issue {
    /// Damage: an error unless damaged images are allowed.
    Damage(Error),
    /// A note for the warnings (the footer copy used in place of the end
    /// one, copies that differ).
    Note(String),
}

/// The metadata of one VHD file, checked.
pub(crate) struct Metadata {
    pub footer: Footer,
    pub sparse: Option<(DynamicHeader, Bat)>,
}

impl Metadata {
    /// Reads the footer (the end one, else the copy at offset 0), and for
    /// dynamic and differencing disks the header and BAT; checksum
    /// mismatches and footer fallbacks go to `issue`.
    pub fn read<D: ReadAt + ?Sized>(
        file: &D,
        issue: &mut dyn FnMut(Issue) -> Result<()>,
    ) -> Result<Metadata> {
        let footer = choose_footer(file, issue)?;
        if footer.disk_type == DiskType::Fixed {
            return Ok(Metadata {
                footer,
                sparse: None,
            });
        }
        let header = DynamicHeader::read(file, footer.data_offset)?;
        if !header.checksum_ok() {
            issue(Issue::Damage(Error::corrupt(
                format!(
                    "vhd dynamic disk header checksum {:#010x} does not match its bytes ({:#010x})",
                    header.checksum, header.computed_checksum
                ),
                header.offset + 36,
            )))?;
        }
        let bat = Bat::read(file, &header)?;
        let covered = u64::from(header.max_table_entries) * u64::from(header.block_size);
        let size = footer.virtual_size();
        if covered < size {
            return Err(Error::corrupt(
                format!(
                    "vhd BAT of {} entries of {}-byte blocks covers {covered} bytes of a {size}-byte disk",
                    header.max_table_entries, header.block_size
                ),
                header.offset + 28,
            ));
        }
        Ok(Metadata {
            footer,
            sparse: Some((header, bat)),
        })
    }
}

/// The footer to use: the one at the end when it verifies, else the copy
/// at offset 0 when that one does (noted), else whichever is there (its
/// checksum reported as damage).
pub(crate) fn choose_footer<D: ReadAt + ?Sized>(
    file: &D,
    issue: &mut dyn FnMut(Issue) -> Result<()>,
) -> Result<Footer> {
    let size = file.size();
    let Some(end_at) = size.checked_sub(footer::SIZE as u64) else {
        return Err(Error::corrupt(
            format!("vhd file of {size} bytes is shorter than its 512-byte footer"),
            0,
        ));
    };
    let end = Footer::read_at(file, end_at);
    let copy = if end_at >= footer::SIZE as u64 {
        Footer::read_at(file, 0)
    } else {
        Ok(None)
    };
    let bad_sum = |f: &Footer| {
        Error::corrupt(
            format!(
                "vhd footer checksum {:#010x} does not match its bytes ({:#010x})",
                f.checksum, f.computed_checksum
            ),
            f.offset + 64,
        )
    };
    match (end, copy) {
        (Ok(Some(e)), copy) if e.checksum_ok() => {
            if e.disk_type != DiskType::Fixed {
                match copy {
                    Ok(Some(c)) if c.checksum_ok() && !same(&c, &e) => issue(Issue::Note(
                        "vhd footer copy at offset 0 differs from the footer at the end; using the end one".into(),
                    ))?,
                    Ok(Some(c)) if !c.checksum_ok() => issue(Issue::Note(format!(
                        "{}; using the footer at the end",
                        bad_sum(&c)
                    )))?,
                    Ok(None) | Err(_) => issue(Issue::Note(
                        "vhd footer copy at offset 0 is missing; using the footer at the end".into(),
                    ))?,
                    _ => {}
                }
            }
            Ok(e)
        }
        (end, Ok(Some(c))) if c.checksum_ok() && c.disk_type != DiskType::Fixed => {
            let why = match end {
                Ok(Some(e)) => format!("{}", bad_sum(&e)),
                Ok(None) => format!("no vhd footer at the end of the file ({end_at:#x})"),
                Err(e) => format!("{e}"),
            };
            issue(Issue::Note(format!(
                "{why}; using the footer copy at offset 0"
            )))?;
            Ok(c)
        }
        (Ok(Some(e)), _) => {
            issue(Issue::Damage(bad_sum(&e)))?;
            Ok(e)
        }
        (_, Ok(Some(c))) if c.checksum_ok() => Err(Error::corrupt(
            "vhd footer at offset 0 says fixed disk, but a fixed disk's only footer is at the end, and none is there",
            end_at,
        )),
        (_, Ok(Some(c))) => {
            issue(Issue::Damage(bad_sum(&c)))?;
            Ok(c)
        }
        (Err(e), _) => Err(e),
        (Ok(None), Err(e)) => Err(e),
        (Ok(None), Ok(None)) => Err(Error::corrupt(
            "vhd footer: no 'conectix' cookie at the end of the file nor at offset 0",
            end_at,
        )),
    }
}

/// Footers that agree in every field but where they were read.
fn same(a: &Footer, b: &Footer) -> bool {
    Footer {
        offset: b.offset,
        ..a.clone()
    } == *b
}

/// What one guest range maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// Not stored here: from the parent, or zeros without one.
    Absent,
    /// Stored at this host offset.
    Data(u64),
}

/// Sector bitmaps by block index (with their last use); the least
/// recently used goes first.
#[derive(Default)]
struct Bitmaps {
    entries: BTreeMap<u64, (Vec<u8>, u64)>,
    tick: u64,
}

/// A VHD image read from `D`.
///
/// ```no_run
/// use disk_io::{FileDisk, ReadAt};
/// let image = vdisk_format::vhd::Vhd::open(FileDisk::open("disk.vhd")?)?;
/// let mut mbr = [0u8; 512];
/// image.read_at(0, &mut mbr)?;
/// # Ok::<(), disk_io::Error>(())
/// ```
pub struct Vhd<D> {
    file: D,
    footer: Footer,
    sparse: Option<(DynamicHeader, Bat)>,
    size: u64,
    parent: Option<Backing>,
    warnings: Vec<String>,
    bitmaps: Lock<Bitmaps>,
    max_bitmaps: usize,
}

impl<D: ReadAt> Vhd<D> {
    /// Opens the fixed or dynamic VHD stored in `file`; a differencing
    /// disk must be opened with its parent ([`Vhd::with_parent`]).
    /// Checksums that do not verify are errors.
    pub fn open(file: D) -> Result<Self> {
        Vhd::with_parent(file, None)
    }

    /// Opens the VHD stored in `file` over `parent`, which must be given
    /// exactly for a differencing disk (finding and checking it is the
    /// caller's policy, see `Image::open`).
    pub fn with_parent(file: D, parent: Option<Backing>) -> Result<Self> {
        let meta = Metadata::read(&file, &mut |i| match i {
            Issue::Damage(e) => Err(e),
            Issue::Note(_) => Ok(()),
        })?;
        Vhd::from_metadata(file, meta, parent, Vec::new())
    }

    /// Opens the VHD stored in `file` over `parent` even when its
    /// checksums do not verify: each finding becomes a line of
    /// [`Vhd::warnings`].
    pub fn open_damaged(file: D, parent: Option<Backing>) -> Result<Self> {
        let mut warnings = Vec::new();
        let meta = Metadata::read(&file, &mut |i| {
            warnings.push(match i {
                Issue::Damage(e) => format!("{e}"),
                Issue::Note(n) => n,
            });
            Ok(())
        })?;
        Vhd::from_metadata(file, meta, parent, warnings)
    }

    pub(crate) fn from_metadata(
        file: D,
        meta: Metadata,
        parent: Option<Backing>,
        warnings: Vec<String>,
    ) -> Result<Self> {
        let differencing = meta.footer.disk_type == DiskType::Differencing;
        match (differencing, &parent, &meta.sparse) {
            (true, None, Some((h, _))) => {
                return Err(Error::invalid_input(format!(
                    "vhd differencing disk with parent '{}': open it with its parent",
                    h.parent_name
                ))
                .at(h.offset + 64));
            }
            (false, Some(_), _) => {
                return Err(Error::invalid_input(
                    "vhd image is not a differencing disk, but a parent was given",
                ));
            }
            _ => {}
        }
        let bitmap_size = meta.sparse.as_ref().map_or(512, |(h, _)| h.bitmap_size());
        let max_bitmaps = (BITMAP_CACHE_BYTES / bitmap_size).clamp(4, 2048) as usize;
        Ok(Vhd {
            size: meta.footer.virtual_size(),
            file,
            footer: meta.footer,
            sparse: meta.sparse,
            parent,
            warnings,
            bitmaps: Lock::new(Bitmaps::default()),
            max_bitmaps,
        })
    }

    /// The footer in use.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The dynamic disk header (dynamic and differencing disks).
    pub fn dynamic_header(&self) -> Option<&DynamicHeader> {
        self.sparse.as_ref().map(|(h, _)| h)
    }

    /// The file holding the image.
    pub fn file(&self) -> &D {
        &self.file
    }

    /// What was read past while opening (see [`Vhd::open_damaged`]).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The mapping of guest offset `pos` (inside the disk), and the guest
    /// range `start..end` it holds for (a `Data` host offset is `start`'s): a run of sectors of one bitmap
    /// state, a whole block not stored, or the rest of a fixed disk.
    fn unit_at(&self, pos: u64) -> Result<(Unit, u64, u64)> {
        let Some((header, bat)) = &self.sparse else {
            return Ok((Unit::Data(pos), pos, self.size));
        };
        let bs = u64::from(header.block_size);
        let index = pos / bs;
        let block_start = index * bs;
        let block_end = block_start.saturating_add(bs).min(self.size);
        let entry = bat.get(index);
        if entry == bat::UNUSED {
            return Ok((Unit::Absent, block_start, block_end));
        }
        let bitmap_at = u64::from(entry) * 512;
        let bitmap_size = header.bitmap_size();
        let data_at = bitmap_at + bitmap_size;
        if data_at > self.file.size() {
            return Err(Error::corrupt(
                format!(
                    "vhd BAT entry {index} points to a block at {bitmap_at:#x}, past the end of the file"
                ),
                bat.entry_offset(index),
            ));
        }
        let sector = (pos - block_start) / 512;
        let sectors = (block_end - block_start).div_ceil(512);
        let (set, run) = self.with_bitmap(index, bitmap_at, bitmap_size, |bm| {
            let set = bat::bit(bm, sector);
            (set, bat::run_end(bm, sector, sectors, set))
        })?;
        let start = block_start + sector * 512;
        let end = (block_start + run * 512).min(block_end);
        let unit = if set {
            Unit::Data(data_at + sector * 512)
        } else {
            Unit::Absent
        };
        Ok((unit, start, end))
    }

    /// Runs `f` on the sector bitmap of block `index`, read through the
    /// cache.
    fn with_bitmap<R>(&self, index: u64, at: u64, size: u64, f: impl Fn(&[u8]) -> R) -> Result<R> {
        let hit = self.bitmaps.with_write(|c| {
            c.tick += 1;
            let tick = c.tick;
            Ok(c.entries.get_mut(&index).map(|e| {
                e.1 = tick;
                f(&e.0)
            }))
        })?;
        if let Some(r) = hit {
            return Ok(r);
        }
        let bitmap = disk_io::read_vec(&self.file, at, size as usize)?;
        let r = f(&bitmap);
        let max = self.max_bitmaps;
        self.bitmaps.with_write(|c| {
            if c.entries.len() >= max {
                if let Some(lru) = c.entries.iter().min_by_key(|e| (e.1).1).map(|e| *e.0) {
                    c.entries.remove(&lru);
                }
            }
            c.tick += 1;
            let tick = c.tick;
            c.entries.insert(index, (bitmap, tick));
            Ok(())
        })?;
        Ok(r)
    }

    /// Reads host bytes; what lies past the end of the file (a block cut
    /// short, a fixed disk shorter than its footer says) reads as zeros.
    fn read_host(&self, host: u64, buf: &mut [u8]) -> Result<()> {
        let limit = match self.sparse {
            None => self.file.size().saturating_sub(footer::SIZE as u64),
            Some(_) => self.file.size(),
        };
        let available = limit.saturating_sub(host).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(available);
        if !head.is_empty() {
            self.file.read_at(host, head)?;
        }
        tail.fill(0);
        Ok(())
    }

    /// How a range not stored here reads: from the parent (differencing),
    /// as zeros otherwise.
    fn absent_state(&self) -> Allocation {
        if self.parent.is_some() {
            Allocation::Unallocated
        } else {
            Allocation::Zero
        }
    }
}

impl<D: ReadAt> ReadAt for Vhd<D> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (unit, start, end) = self.unit_at(pos)?;
            let n = (end - pos).min((buf.len() - done) as u64) as usize;
            let out = buf.get_mut(done..done + n).unwrap_or(&mut []);
            match unit {
                Unit::Absent => read_parent(self.parent.as_ref(), pos, out)?,
                Unit::Data(host) => self.read_host(host + (pos - start), out)?,
            }
            done += n;
        }
        Ok(())
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<Extent> {
        let length = clamp_query(self.size, offset, length)?;
        let end = offset + length;
        if self.sparse.is_none() {
            // A fixed disk is its file: the file's own map (holes of a
            // sparse file read as zeros), zeros past its data.
            let data_end = self.file.size().saturating_sub(footer::SIZE as u64);
            if offset >= data_end {
                return Ok(Extent::new(offset, length, Allocation::Zero));
            }
            let e = self
                .file
                .allocation(offset, length.min(data_end - offset))?;
            return Ok(Extent::new(offset, e.length, e.state));
        }
        let state_of = |u: Unit| match u {
            Unit::Absent => self.absent_state(),
            Unit::Data(_) => Allocation::Data,
        };
        let (unit, _, first_end) = self.unit_at(offset)?;
        let state = state_of(unit);
        let stop = extend_run(first_end.min(end), end, state, |pos| {
            let (u, _, e) = self.unit_at(pos)?;
            Ok(Some((state_of(u), e)))
        })?;
        layer_answer(self.parent.as_ref(), offset, stop, state)
    }
}

/// Seconds since the VHD epoch (2000-01-01 UTC) of a file's modification
/// time, as the parent time stamp of a differencing disk records it.
#[cfg(feature = "std")]
pub(crate) fn vhd_mtime(file: &disk_io::FileDisk) -> Result<u32> {
    let modified = file.file().metadata()?.modified()?;
    let unix = modified
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(unix.saturating_sub(footer::VHD_EPOCH) as u32)
}

/// Opens a VHD image file for `Image`: its parent (differencing disks)
/// through the caller's path policy, found by the parent locators or the
/// parent name, and checked against the child's record of it.
#[cfg(feature = "std")]
pub(crate) fn open_layer(
    file: alloc::sync::Arc<disk_io::FileDisk>,
    ctx: &mut crate::image::OpenContext<'_>,
) -> Result<crate::image::Layer> {
    let meta = Metadata::read(&*file, &mut |i| match i {
        Issue::Damage(e) => ctx.damaged(e),
        Issue::Note(n) => {
            ctx.warn(n);
            Ok(())
        }
    })?;
    let subformat = Some(meta.footer.disk_type.name().into());
    let cluster_size = meta.sparse.as_ref().map(|(h, _)| u64::from(h.block_size));
    let parent = match (&meta.footer.disk_type, &meta.sparse) {
        (DiskType::Differencing, Some((header, _))) => Some(open_parent(&file, header, ctx)?),
        _ => None,
    };
    let vhd = Vhd::from_metadata(file, meta, parent, Vec::new())?;
    Ok(crate::image::Layer {
        guest: alloc::boxed::Box::new(vhd),
        subformat,
        cluster_size,
        extra_allocated: 0,
    })
}

/// Finds, opens and checks the parent of a differencing disk.
#[cfg(feature = "std")]
fn open_parent(
    file: &disk_io::FileDisk,
    header: &DynamicHeader,
    ctx: &mut crate::image::OpenContext<'_>,
) -> Result<Backing> {
    let names = parent_locator::candidates(file, &header.locators, &header.parent_name);
    let dir = match ctx.path().parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    // The first name that exists is the parent; opening it applies the
    // path policy (a name leading outside the directory is refused, not
    // skipped).
    let Some(name) = names
        .iter()
        .find(|n| dir.join(n.as_str()).exists())
        .cloned()
    else {
        return Err(Error::invalid_input(format!(
            "vhd differencing disk: parent not found beside {} (tried {})",
            ctx.path().display(),
            if names.is_empty() {
                "no name: no parent locator nor parent name".into()
            } else {
                names.join(", ")
            }
        ))
        .at(header.offset + 64));
    };
    let parent = ctx.open_parent(&name, Some(crate::Format::Vhd))?;
    let mut issues = Vec::new();
    let parent_footer = choose_footer(&**parent.file(), &mut |_| Ok(()))?;
    if parent_footer.unique_id != header.parent_unique_id {
        issues.push(Error::corrupt(
            format!(
                "vhd parent unique id {} in the dynamic header does not match {}'s ({})",
                uuid(&header.parent_unique_id),
                name,
                uuid(&parent_footer.unique_id)
            ),
            header.offset + 40,
        ));
    }
    let mtime = vhd_mtime(parent.file())?;
    if header.parent_timestamp != 0 && header.parent_timestamp != mtime {
        issues.push(Error::corrupt(
            format!(
                "vhd parent time stamp {} in the dynamic header differs from {name}'s modification time ({mtime}): the parent changed since the child was made",
                header.parent_timestamp
            ),
            header.offset + 56,
        ));
    }
    for e in issues {
        ctx.damaged(e)?;
    }
    Ok(parent.into_guest())
}

/// A unique id as text (the byte order the footer stores).
#[cfg(feature = "std")]
fn uuid(id: &[u8; 16]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let part = |r: core::ops::Range<usize>| hex.get(r).unwrap_or("");
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}
