//! Logical conversion: the destination gets the source's partition layout
//! (rescaled to its size) and, in each partition whose file system has a
//! writer, a freshly formatted file system filled file by file through the
//! file-system crates; every other partition is copied sector by sector.
//!
//! A file system joins logical mode by implementing [`FsWriter`] (format a
//! fresh volume, say how much it holds) and [`Builder`] (create
//! directories, files, links) and adding itself to [`WRITERS`]; the
//! pipeline does not change.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use disk_io::{Error, ErrorKind, ReadAt, Result, Window, WriteAt};
use partition::{Layout, Rescale};

use crate::copy::{CopyOptions, copy_sectors};
use crate::inspect::{FileSystem, GuestContent, inspect, probe_filesystem};
use crate::volume::{Entry, EntryKind, Identity, SharedDisk, Volume, open_volume, walk};

/// A destination disk shared by the pipeline and a file-system writer.
pub type SharedWriteDisk = Arc<dyn WriteAt + Send + Sync>;

/// How a fresh file system is made: the source's identity, fitted to the
/// destination partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormatSpec {
    /// The source volume's type, label, serial, UUID and cluster size; a
    /// writer keeps the cluster size only where the new size allows it.
    pub identity: Identity,
    /// Bytes of the new volume.
    pub size: u64,
    /// First sector of the partition on its disk (FAT and NTFS record it
    /// as "hidden sectors"); 0 for a whole-disk file system.
    pub first_sector: u64,
}

/// A freshly formatted file system being filled. Handles are the
/// builder's own; the root is [`Builder::root`].
pub trait Builder {
    /// Handle of the root directory.
    fn root(&self) -> u64;

    /// Creates directory `entry.name` in `parent` with the metadata of
    /// `entry` the file system keeps; returns its handle.
    fn mkdir(&mut self, parent: u64, entry: &Entry) -> Result<u64>;

    /// Creates file `entry.name` in `parent` holding `entry.size` bytes
    /// read from `data`, with the metadata of `entry`; returns its handle.
    fn file(&mut self, parent: u64, entry: &Entry, data: &mut dyn Read) -> Result<u64>;

    /// Creates symbolic link `entry.name` (target `entry.target`).
    fn symlink(&mut self, parent: u64, entry: &Entry) -> Result<u64> {
        let _ = (parent, entry);
        Err(Error::unsupported("symbolic links on this file system"))
    }

    /// Adds the name `entry.name` in `parent` for the existing file
    /// `existing` (a hard link).
    fn hard_link(&mut self, parent: u64, entry: &Entry, existing: u64) -> Result<()> {
        let _ = (parent, entry, existing);
        Err(Error::unsupported("hard links on this file system"))
    }

    /// Writes named stream `name` of file `file`.
    fn stream(&mut self, file: u64, name: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        let _ = (file, name, size, data);
        Err(Error::unsupported("named streams on this file system"))
    }

    /// Gives directory `dir` the times of `entry`, once its children are
    /// in (creating them changed its modification time).
    fn finish_dir(&mut self, dir: u64, entry: &Entry) -> Result<()> {
        let _ = (dir, entry);
        Ok(())
    }

    /// Writes what is still buffered (allocation tables, free counts) and
    /// flushes.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Room on a volume that has not been made yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Bytes of file and directory data the volume holds.
    pub bytes: u64,
    /// Its allocation unit (cluster or block) in bytes.
    pub unit: u64,
}

/// A file system that logical mode can create.
pub trait FsWriter: Sync {
    /// True when this writer makes file systems of type `fs`.
    fn handles(&self, fs: FileSystem) -> bool;

    /// The room a volume made by `spec` offers, worked out without
    /// writing anything; an error when `spec` cannot be formatted at all
    /// (too small, too large for the type).
    fn capacity(&self, spec: &FormatSpec) -> Result<Capacity>;

    /// Bytes that `entry` takes on a volume whose allocation unit is
    /// `unit`: by default its data and streams rounded up to units, one
    /// unit for a directory.
    fn footprint(&self, unit: u64, entry: &Entry) -> u64 {
        let unit = unit.max(1);
        let round = |n: u64| n.div_ceil(unit).saturating_mul(unit);
        match entry.kind {
            EntryKind::Dir => unit,
            EntryKind::File => entry.streams.iter().fold(round(entry.size), |acc, s| {
                acc.saturating_add(round(s.size))
            }),
            _ => 0,
        }
    }

    /// Formats `disk` (exactly the new volume) by `spec` and opens it for
    /// filling.
    fn format(&self, disk: SharedWriteDisk, spec: &FormatSpec) -> Result<Box<dyn Builder>>;
}

mod fat;

/// Every file-system writer logical mode knows.
pub static WRITERS: &[&dyn FsWriter] = &[&fat::FatFsWriter];

/// The writer for `fs`, if one exists.
pub fn writer_for(fs: FileSystem) -> Option<&'static dyn FsWriter> {
    WRITERS.iter().copied().find(|w| w.handles(fs))
}

/// How one partition (or the whole disk) was carried over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitReport {
    /// Partition number, `None` for a whole-disk file system or content.
    pub number: Option<u32>,
    /// File system found there (`fat32`, …), if any.
    pub fs_name: Option<&'static str>,
    /// True when the file system was made afresh and filled file by file;
    /// false when the partition was copied sector by sector.
    pub logical: bool,
    /// Files and directories created (logical only).
    pub entries: u64,
    /// Bytes of file data copied (logical) or written (sector copy).
    pub bytes: u64,
}

/// What a logical conversion did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogicalReport {
    /// The table written (`mbr`, `gpt`), or `None`.
    pub table: Option<&'static str>,
    /// Per partition, in order.
    pub units: Vec<UnitReport>,
}

/// One piece of the source and where it goes.
struct Unit {
    number: Option<u32>,
    src: SharedDisk,
    dst_start: u64,
    dst_len: u64,
    plan: Plan,
}

enum Plan {
    /// Format afresh and copy the tree.
    Logical {
        volume: Box<dyn Volume>,
        writer: &'static dyn FsWriter,
        spec: FormatSpec,
    },
    /// Copy sector by sector, with why (for the report).
    Sectors { fs_name: Option<&'static str> },
}

/// Converts `src` into `dst` (empty, of the destination's size) logically.
/// Every check — layout fits, each file system's files fit its new
/// partition, partitions copied by sector do not shrink — runs before the
/// first byte is written.
pub fn copy_logical(
    src: SharedDisk,
    dst: SharedWriteDisk,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<LogicalReport> {
    let (src_size, dst_size) = (src.size(), dst.size());
    let mut report = LogicalReport::default();
    let mut layout_out = None;
    let mut units = Vec::new();
    match inspect(&*src)? {
        GuestContent::Table(table) => {
            let layout = Layout::from_table(&table);
            let new = if dst_size == src_size {
                layout.clone()
            } else {
                layout.rescale(src_size, dst_size, Rescale::Proportional)?
            };
            let ss = u64::from(layout.sector_size);
            for p in layout.partitions.iter().filter(|p| !p.is_extended()) {
                let Some(q) = new.partitions.iter().find(|q| q.number == p.number) else {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!("partition {} lost when rescaling the layout", p.number),
                    ));
                };
                let window: SharedDisk = Arc::new(Window::new(
                    Arc::clone(&src),
                    p.first_lba * ss,
                    p.sectors * ss,
                )?);
                units.push(plan_unit(
                    Some(p.number),
                    window,
                    q.first_lba * ss,
                    q.sectors * ss,
                    q.first_lba,
                )?);
            }
            report.table = Some(match layout.table {
                partition::TableType::Mbr => "mbr",
                partition::TableType::Gpt => "gpt",
            });
            layout_out = Some(new);
        }
        GuestContent::FileSystem(_) => {
            units.push(plan_unit(None, Arc::clone(&src), 0, dst_size, 0)?);
        }
        _ => {
            units.push(Unit {
                number: None,
                src: Arc::clone(&src),
                dst_start: 0,
                dst_len: dst_size,
                plan: Plan::Sectors { fs_name: None },
            });
        }
    }
    for u in &units {
        check_fits(u)?;
    }

    // Nothing has been written so far.
    if let Some(layout) = &layout_out {
        partition::write::write(&*dst, layout)?;
    }
    let total: u64 = units.iter().map(|u| u.src.size()).sum();
    let mut done_before = 0u64;
    for u in units {
        let base = done_before;
        let mut unit_progress = |done: u64, _: u64| progress(base + done, total);
        let part_len = u.src.size();
        let out: SharedWriteDisk = Arc::new(Window::new(Arc::clone(&dst), u.dst_start, u.dst_len)?);
        let r = match u.plan {
            Plan::Logical {
                volume,
                writer,
                spec,
            } => {
                let builder = writer.format(out, &spec)?;
                let (entries, bytes) =
                    fill(&*volume, builder, cancel, &mut unit_progress, part_len)?;
                UnitReport {
                    number: u.number,
                    fs_name: Some(spec.identity.fs_name),
                    logical: true,
                    entries,
                    bytes,
                }
            }
            Plan::Sectors { fs_name } => {
                let opts = CopyOptions {
                    destination_is_zero: true,
                    cancel,
                    threads: 0,
                };
                let stats =
                    copy_sectors(&*u.src, &*out, &opts, &mut unit_progress).map_err(|e| e.error)?;
                UnitReport {
                    number: u.number,
                    fs_name,
                    logical: false,
                    entries: 0,
                    bytes: stats.written,
                }
            }
        };
        report.units.push(r);
        done_before += part_len;
    }
    dst.flush()?;
    Ok(report)
}

/// Decides how to carry one partition over.
fn plan_unit(
    number: Option<u32>,
    src: SharedDisk,
    dst_start: u64,
    dst_len: u64,
    first_sector: u64,
) -> Result<Unit> {
    let plan = match probe_filesystem(&*src)? {
        None => Plan::Sectors { fs_name: None },
        Some(fs) => match writer_for(fs) {
            None => Plan::Sectors {
                fs_name: Some(fs.name()),
            },
            Some(writer) => {
                let volume = open_volume(Arc::clone(&src), fs)?;
                let spec = FormatSpec {
                    identity: volume.identity(),
                    size: dst_len,
                    first_sector,
                };
                Plan::Logical {
                    volume,
                    writer,
                    spec,
                }
            }
        },
    };
    Ok(Unit {
        number,
        src,
        dst_start,
        dst_len,
        plan,
    })
}

fn unit_name(u: &Unit) -> String {
    match u.number {
        Some(n) => format!("partition {n}"),
        None => "the disk".to_string(),
    }
}

/// Refuses, before anything is written, a unit whose content cannot fit
/// its new place.
fn check_fits(u: &Unit) -> Result<()> {
    match &u.plan {
        Plan::Sectors { fs_name } => {
            if u.dst_len < u.src.size() {
                let what = match fs_name {
                    Some(fs) => format!("{fs}, which logical mode cannot write yet"),
                    None => "no file system this tool writes".to_string(),
                };
                return Err(Error::invalid_input(format!(
                    "{} ({what}) would shrink from {} to {} bytes: it can only be copied sector by sector",
                    unit_name(u),
                    u.src.size(),
                    u.dst_len
                )));
            }
            Ok(())
        }
        Plan::Logical {
            volume,
            writer,
            spec,
        } => {
            let capacity = writer.capacity(spec).map_err(|e| {
                e.context(format!(
                    "{}: a {} of {} bytes",
                    unit_name(u),
                    spec.identity.fs_name,
                    spec.size
                ))
            })?;
            let mut need = 0u64;
            let root = volume.root()?;
            walk(&**volume, &root, "", &mut |_, e| {
                need = need.saturating_add(writer.footprint(capacity.unit, e));
                Ok(())
            })?;
            let capacity = capacity.bytes;
            if need > capacity {
                return Err(Error::invalid_input(format!(
                    "{}: the files need {need} bytes but a {}-byte {} holds {capacity}: refused before writing anything",
                    unit_name(u),
                    spec.size,
                    spec.identity.fs_name
                )));
            }
            Ok(())
        }
    }
}

/// Reads a file (or one of its streams) from a volume as `std::io::Read`.
struct FileReader<'a> {
    volume: &'a dyn Volume,
    entry: &'a Entry,
    stream: Option<&'a str>,
    at: u64,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self
            .volume
            .read(self.entry, self.stream, self.at, buf)
            .map_err(std::io::Error::other)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Copies the tree of `volume` into `builder`; returns the entries made
/// and the file bytes copied.
fn fill(
    volume: &dyn Volume,
    mut builder: Box<dyn Builder>,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(u64, u64),
    total: u64,
) -> Result<(u64, u64)> {
    let root = volume.root()?;
    let mut copier = Copier {
        volume,
        builder: &mut *builder,
        cancel,
        links: std::collections::HashMap::new(),
        entries: 0,
        bytes: 0,
        progress,
        total,
    };
    let broot = copier.builder.root();
    copier.dir(&root, broot, 0)?;
    copier.builder.finish_dir(broot, &root)?;
    let (entries, bytes) = (copier.entries, copier.bytes);
    builder.finish()?;
    Ok((entries, bytes))
}

struct Copier<'a> {
    volume: &'a dyn Volume,
    builder: &'a mut dyn Builder,
    cancel: Option<&'a AtomicBool>,
    /// Source identity → new handle, for files with several names.
    links: std::collections::HashMap<u64, u64>,
    entries: u64,
    bytes: u64,
    progress: &'a mut dyn FnMut(u64, u64),
    total: u64,
}

impl Copier<'_> {
    fn dir(&mut self, dir: &Entry, handle: u64, depth: usize) -> Result<()> {
        if depth > crate::volume::MAX_DEPTH {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "directory '{}' nested deeper than {} levels",
                    dir.name,
                    crate::volume::MAX_DEPTH
                ),
            ));
        }
        for e in self.volume.list(dir)? {
            if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Error::new(ErrorKind::Cancelled, "conversion cancelled"));
            }
            self.entries += 1;
            match e.kind {
                EntryKind::Dir => {
                    let h = self.builder.mkdir(handle, &e)?;
                    self.dir(&e, h, depth + 1)?;
                    self.builder.finish_dir(h, &e)?;
                }
                EntryKind::Symlink => {
                    self.builder.symlink(handle, &e)?;
                }
                EntryKind::File => {
                    if e.nlink.is_some_and(|n| n > 1) {
                        if let Some(&existing) = self.links.get(&e.inode) {
                            self.builder.hard_link(handle, &e, existing)?;
                            continue;
                        }
                    }
                    let mut data = FileReader {
                        volume: self.volume,
                        entry: &e,
                        stream: None,
                        at: 0,
                    };
                    let h = self.builder.file(handle, &e, &mut data)?;
                    for s in &e.streams {
                        let mut data = FileReader {
                            volume: self.volume,
                            entry: &e,
                            stream: Some(&s.name),
                            at: 0,
                        };
                        self.builder.stream(h, &s.name, s.size, &mut data)?;
                    }
                    if e.nlink.is_some_and(|n| n > 1) {
                        self.links.insert(e.inode, h);
                    }
                    self.bytes += e.size;
                    (self.progress)(self.bytes.min(self.total), self.total);
                }
                EntryKind::Other => {
                    return Err(Error::unsupported(format!(
                        "copying special file '{}' (device, fifo or socket) in logical mode",
                        e.name
                    )));
                }
            }
        }
        Ok(())
    }
}
