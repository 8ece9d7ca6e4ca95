//! Logical comparison of two guest disks: the same partition layout and,
//! for each file system, the same files (what `vdisk compare --logical`
//! reports).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use disk_io::{Error, Result, Window};
use partition::PartitionTable;

use crate::compare::{Comparison, compare_sectors};
use crate::inspect::{GuestContent, inspect, probe_filesystem};
use crate::volume::{Entry, EntryKind, SharedDisk, Volume, open_volume, walk};

/// Which of the two compared disks something concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The first disk.
    A,
    /// The second disk.
    B,
}

/// An error while comparing, with the disk it came from.
#[derive(Debug)]
pub struct CompareError {
    /// The disk that could not be read.
    pub which: Which,
    /// What went wrong.
    pub error: Error,
}

impl fmt::Display for CompareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for CompareError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

fn on(which: Which) -> impl Fn(Error) -> CompareError {
    move |error| CompareError { which, error }
}

/// The outcome of [`compare_logical`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogicalComparison {
    /// Same layout, same files.
    Equal,
    /// The first difference found, described for a person.
    Differs(String),
}

/// Read size for file contents.
const CHUNK: usize = 1 << 20;

/// Compares `a` and `b` logically:
///
/// - both have a partition table of the same kind with the same partitions
///   (numbers and types; positions and sizes may differ), or both hold a
///   file system spanning the whole disk;
/// - each pair of partitions holds the same file-system type and the same
///   entries: paths, types, sizes (not of directories, whose size is an
///   artefact of their allocation), contents, symlink targets, times,
///   modes, owners, link counts, attributes, streams and extended
///   attributes; `inode` values may differ but must group hard links alike;
/// - a pair of partitions with no known file system, or two disks with no
///   table and no file system, compare sector by sector.
///
/// Stops at the first difference.
pub fn compare_logical(
    a: SharedDisk,
    b: SharedDisk,
) -> core::result::Result<LogicalComparison, CompareError> {
    let ca = inspect(&*a).map_err(on(Which::A))?;
    let cb = inspect(&*b).map_err(on(Which::B))?;
    match (ca, cb) {
        (GuestContent::Table(ta), GuestContent::Table(tb)) => compare_tables(&a, &ta, &b, &tb),
        (GuestContent::FileSystem(fa), GuestContent::FileSystem(fb)) => {
            if fa != fb {
                return Ok(differs(format!(
                    "whole-disk file systems differ: {} and {}",
                    fa.name(),
                    fb.name()
                )));
            }
            let va = open_volume(a, fa).map_err(on(Which::A))?;
            let vb = open_volume(b, fb).map_err(on(Which::B))?;
            Ok(
                compare_volumes(&*va, &*vb)?.map_or(LogicalComparison::Equal, |d| {
                    differs(format!("file system: {d}"))
                }),
            )
        }
        (
            x @ (GuestContent::Foreign(_) | GuestContent::Blank | GuestContent::Unrecognised),
            y @ (GuestContent::Foreign(_) | GuestContent::Blank | GuestContent::Unrecognised),
        ) if x == y => sectors(&*a, &*b, "disk", 0),
        (x, y) => Ok(differs(format!(
            "disk contents differ: {} and {}",
            describe(&x),
            describe(&y)
        ))),
    }
}

fn differs(s: String) -> LogicalComparison {
    LogicalComparison::Differs(s)
}

fn describe(c: &GuestContent) -> String {
    match c {
        GuestContent::Table(t) => format!("{} partition table", t.kind_name()),
        GuestContent::FileSystem(fs) => format!("whole-disk {}", fs.name()),
        GuestContent::Foreign(name) => format!("{name} content"),
        GuestContent::Blank => "a blank disk".into(),
        GuestContent::Unrecognised => "unrecognised content".into(),
    }
}

/// Sector comparison of two disks or partitions; `base` is the first
/// byte's offset on disk A, for the report.
fn sectors(
    a: &dyn disk_io::ReadAt,
    b: &dyn disk_io::ReadAt,
    what: &str,
    base: u64,
) -> core::result::Result<LogicalComparison, CompareError> {
    let failed = AtomicU8::new(0);
    let ta = Tagged {
        disk: a,
        side: 1,
        failed: &failed,
    };
    let tb = Tagged {
        disk: b,
        side: 2,
        failed: &failed,
    };
    let verdict = compare_sectors(&ta, &tb).map_err(|error| CompareError {
        which: if failed.load(Ordering::Relaxed) == 2 {
            Which::B
        } else {
            Which::A
        },
        error,
    })?;
    Ok(match verdict {
        Comparison::Equal => LogicalComparison::Equal,
        Comparison::DiffersAt(off) => differs(format!(
            "{what}: contents differ at byte {off} (disk offset {} of the first image)",
            base.saturating_add(off)
        )),
    })
}

/// A disk that notes in `failed` which side of a comparison it is when a
/// read or map query fails.
struct Tagged<'a> {
    disk: &'a dyn disk_io::ReadAt,
    side: u8,
    failed: &'a AtomicU8,
}

impl Tagged<'_> {
    fn note<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.failed.store(self.side, Ordering::Relaxed);
        }
        r
    }
}

impl disk_io::ReadAt for Tagged<'_> {
    fn size(&self) -> u64 {
        self.disk.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.note(self.disk.read_at(offset, buf))
    }

    fn allocation(&self, offset: u64, length: u64) -> Result<disk_io::Extent> {
        self.note(self.disk.allocation(offset, length))
    }
}

fn compare_tables(
    a: &SharedDisk,
    ta: &PartitionTable,
    b: &SharedDisk,
    tb: &PartitionTable,
) -> core::result::Result<LogicalComparison, CompareError> {
    if ta.kind_name() != tb.kind_name() {
        return Ok(differs(format!(
            "partition tables differ: {} and {}",
            ta.kind_name(),
            tb.kind_name()
        )));
    }
    let na: Vec<u32> = ta.partitions.iter().map(|p| p.number).collect();
    let nb: Vec<u32> = tb.partitions.iter().map(|p| p.number).collect();
    if na != nb {
        return Ok(differs(format!(
            "partition numbers differ: {na:?} and {nb:?}"
        )));
    }
    for (pa, pb) in ta.partitions.iter().zip(&tb.partitions) {
        let n = pa.number;
        if pa.kind != pb.kind {
            return Ok(differs(format!(
                "partition {n}: types differ: {} and {}",
                pa.kind, pb.kind
            )));
        }
        if pa.name != pb.name {
            return Ok(differs(format!(
                "partition {n}: names differ: {:?} and {:?}",
                pa.name, pb.name
            )));
        }
        if pa.kind.is_extended() {
            continue;
        }
        let wa: SharedDisk = Arc::new(
            Window::new(Arc::clone(a), pa.start, pa.size)
                .map_err(|e| on(Which::A)(e.context(format!("partition {n}"))))?,
        );
        let wb: SharedDisk = Arc::new(
            Window::new(Arc::clone(b), pb.start, pb.size)
                .map_err(|e| on(Which::B)(e.context(format!("partition {n}"))))?,
        );
        let fa = probe_filesystem(&*wa).map_err(on(Which::A))?;
        let fb = probe_filesystem(&*wb).map_err(on(Which::B))?;
        let verdict = match (fa, fb) {
            (None, None) => sectors(&*wa, &*wb, &format!("partition {n}"), pa.start)?,
            (Some(x), Some(y)) if x == y => {
                let ctx = |e: Error| e.context(format!("partition {n} ({})", x.name()));
                let va = open_volume(wa, x).map_err(|e| on(Which::A)(ctx(e)))?;
                let vb = open_volume(wb, y).map_err(|e| on(Which::B)(ctx(e)))?;
                compare_volumes(&*va, &*vb)
                    .map_err(|e| CompareError {
                        which: e.which,
                        error: ctx(e.error),
                    })?
                    .map_or(LogicalComparison::Equal, |d| {
                        differs(format!("partition {n} ({}): {d}", x.name()))
                    })
            }
            (x, y) => {
                let name =
                    |f: Option<crate::FileSystem>| f.map_or("no known file system", |f| f.name());
                differs(format!(
                    "partition {n}: file systems differ: {} and {}",
                    name(x),
                    name(y)
                ))
            }
        };
        if verdict != LogicalComparison::Equal {
            return Ok(verdict);
        }
    }
    Ok(LogicalComparison::Equal)
}

/// Every entry of `v` with its path, sorted by path bytes.
fn listing(v: &dyn Volume) -> Result<Vec<(String, Entry)>> {
    let root = v.root()?;
    let mut out = Vec::new();
    walk(v, &root, "", &mut |p, e| {
        out.push((p.to_owned(), e.clone()));
        Ok(())
    })?;
    out.sort_by(|x, y| x.0.as_bytes().cmp(y.0.as_bytes()));
    Ok(out)
}

/// The first difference between two volumes' trees, if any.
fn compare_volumes(
    a: &dyn Volume,
    b: &dyn Volume,
) -> core::result::Result<Option<String>, CompareError> {
    let la = listing(a).map_err(on(Which::A))?;
    let lb = listing(b).map_err(on(Which::B))?;
    // Hard-link grouping: inode of A <-> inode of B, both ways.
    let mut a_to_b: HashMap<u64, u64> = HashMap::new();
    let mut b_to_a: HashMap<u64, u64> = HashMap::new();
    let mut ia = la.iter().peekable();
    let mut ib = lb.iter().peekable();
    loop {
        let (pa, ea, pb, eb) = match (ia.peek(), ib.peek()) {
            (None, None) => return Ok(None),
            (Some((p, _)), None) => return Ok(Some(format!("{p}: only in the first image"))),
            (None, Some((p, _))) => return Ok(Some(format!("{p}: only in the second image"))),
            (Some((pa, ea)), Some((pb, eb))) => (pa, ea, pb, eb),
        };
        match pa.as_bytes().cmp(pb.as_bytes()) {
            std::cmp::Ordering::Less => {
                return Ok(Some(format!("{pa}: only in the first image")));
            }
            std::cmp::Ordering::Greater => {
                return Ok(Some(format!("{pb}: only in the second image")));
            }
            std::cmp::Ordering::Equal => {}
        }
        if let Some(d) = entry_difference(ea, eb) {
            return Ok(Some(format!("{pa}: {d}")));
        }
        let ba = *a_to_b.entry(ea.inode).or_insert(eb.inode);
        let ab = *b_to_a.entry(eb.inode).or_insert(ea.inode);
        if ba != eb.inode || ab != ea.inode {
            return Ok(Some(format!("{pa}: hard links group differently")));
        }
        if ea.kind == EntryKind::File {
            if let Some(at) = content_difference(a, ea, b, eb, None)? {
                return Ok(Some(format!("{pa}: contents differ at byte {at}")));
            }
            for s in &ea.streams {
                if let Some(at) = content_difference(a, ea, b, eb, Some(&s.name))? {
                    return Ok(Some(format!(
                        "{pa}: stream {}: contents differ at byte {at}",
                        s.name
                    )));
                }
            }
        }
        ia.next();
        ib.next();
    }
}

/// The first metadata field in which two entries at the same path differ.
fn entry_difference(a: &Entry, b: &Entry) -> Option<String> {
    fn field<T: PartialEq + fmt::Debug>(name: &str, x: &T, y: &T) -> Option<String> {
        (x != y).then(|| format!("{name} differs: {x:?} and {y:?}"))
    }
    field("type", &a.kind.name(), &b.kind.name())
        .or_else(|| {
            if a.kind == EntryKind::Dir {
                None
            } else {
                field("size", &a.size, &b.size)
            }
        })
        .or_else(|| field("symlink target", &a.target, &b.target))
        .or_else(|| field("mtime", &a.mtime, &b.mtime))
        .or_else(|| field("mode", &a.mode, &b.mode))
        .or_else(|| field("uid", &a.uid, &b.uid))
        .or_else(|| field("gid", &a.gid, &b.gid))
        .or_else(|| field("nlink", &a.nlink, &b.nlink))
        .or_else(|| field("attributes", &a.attrs, &b.attrs))
        .or_else(|| field("streams", &a.streams, &b.streams))
        .or_else(|| {
            let mut xa = a.xattrs.clone();
            let mut xb = b.xattrs.clone();
            xa.sort();
            xb.sort();
            let names = |x: &[(String, Vec<u8>)]| x.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
            if names(&xa) != names(&xb) {
                return field("extended attributes", &names(&xa), &names(&xb));
            }
            xa.iter()
                .zip(&xb)
                .find(|(p, q)| p.1 != q.1)
                .map(|(p, _)| format!("extended attribute {} differs", p.0))
        })
}

/// The first byte at which the data of two files (or of their streams
/// named `stream`) differ, if any.
fn content_difference(
    a: &dyn Volume,
    ea: &Entry,
    b: &dyn Volume,
    eb: &Entry,
    stream: Option<&str>,
) -> core::result::Result<Option<u64>, CompareError> {
    let mut buf_a = vec![0u8; CHUNK];
    let mut buf_b = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let na = fill(a, ea, stream, offset, &mut buf_a).map_err(on(Which::A))?;
        let nb = fill(b, eb, stream, offset, &mut buf_b).map_err(on(Which::B))?;
        let ca = buf_a.get(..na).unwrap_or(&[]);
        let cb = buf_b.get(..nb).unwrap_or(&[]);
        if let Some(i) = ca.iter().zip(cb).position(|(x, y)| x != y) {
            return Ok(Some(offset + i as u64));
        }
        if na != nb {
            return Ok(Some(offset + na.min(nb) as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += na as u64;
    }
}

/// Reads into `buf` until it is full or the data ends; returns the count.
fn fill(
    v: &dyn Volume,
    e: &Entry,
    stream: Option<&str>,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize> {
    let mut got = 0usize;
    while got < buf.len() {
        let rest = buf.get_mut(got..).unwrap_or(&mut []);
        let n = v.read(e, stream, offset + got as u64, rest)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}
