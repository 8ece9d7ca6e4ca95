//! `vdisk ls`, `cat` and `manifest`: file systems inside images, through
//! image-convert's `Volume`.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use disk_io::{Error, ErrorKind};
use image_convert::volume::{Entry, EntryKind, SharedDisk, Volume, open_filesystem, resolve, walk};
use image_convert::{PathError, open_source};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Read size for file contents.
const CHUNK: usize = 1 << 20;

/// One line of `ls --json` and `manifest`, field names fixed by the contract.
#[derive(Serialize)]
struct EntryJson<'a> {
    path: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nlink: Option<u64>,
    inode: u64,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    attrs: &'a [&'static str],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    streams: Vec<StreamJson<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    xattrs: BTreeMap<&'a str, String>,
}

#[derive(Serialize)]
struct StreamJson<'a> {
    name: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

/// Opens the file system of `image` that `part` addresses.
fn open(image: &Path, part: Option<u32>) -> Result<Box<dyn Volume>, PathError> {
    let disk: SharedDisk = Arc::new(open_source(image, false)?);
    open_filesystem(disk, part).map_err(|e| PathError::new(image, e))
}

/// `vdisk ls`.
pub fn ls(
    image: &Path,
    part: Option<u32>,
    path: Option<&str>,
    recursive: bool,
    json: bool,
) -> Result<(), PathError> {
    let at = |e| PathError::new(image, e);
    let volume = open(image, part)?;
    let path = path.unwrap_or("/");
    let start = resolve(&*volume, path).map_err(at)?;
    let prefix = path.trim_end_matches('/');
    let prefix = if prefix.is_empty() || prefix.starts_with('/') {
        prefix.to_owned()
    } else {
        format!("/{prefix}")
    };
    // Each line is rendered as soon as its entry is seen, into one buffer
    // (no entry kept, no allocation per line), then the lines are written
    // in byte order of their paths.
    let mut lines = Lines::default();
    let mut render = |p: &str, e: &Entry| -> disk_io::Result<()> {
        let start = lines.text.len();
        let written = if json {
            write_json(&mut lines.text, p, e, None)
        } else {
            write_human(&mut lines.text, p, e)
        };
        written.map_err(|err| Error::io(err, None))?;
        lines.push(start, p);
        Ok(())
    };
    if start.kind != EntryKind::Dir {
        render(&prefix, &start).map_err(at)?;
    } else if recursive {
        walk(&*volume, &start, &prefix, &mut render).map_err(at)?;
    } else {
        let mut path = String::new();
        for e in volume.list(&start).map_err(at)? {
            path.clear();
            path.push_str(&prefix);
            path.push('/');
            path.push_str(&e.name);
            render(&path, &e).map_err(at)?;
        }
    }
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    for line in lines.sorted() {
        if quiet_on_closed_pipe(out.write_all(line)).map_err(at)? {
            return Ok(());
        }
    }
    quiet_on_closed_pipe(out.flush()).map_err(at)?;
    Ok(())
}

/// Output lines rendered into one buffer, their paths (the sort key) into
/// another.
#[derive(Default)]
struct Lines {
    text: Vec<u8>,
    paths: Vec<u8>,
    /// Line start and end in `text`, path start and end in `paths`.
    index: Vec<[usize; 4]>,
}

impl Lines {
    /// Records the line that starts at `start` and runs to the end of
    /// `text`, showing `path`.
    fn push(&mut self, start: usize, path: &str) {
        let p = self.paths.len();
        self.paths.extend_from_slice(path.as_bytes());
        self.index
            .push([start, self.text.len(), p, self.paths.len()]);
    }

    /// The lines, in byte order of their paths (stable: equal paths keep
    /// the order they were seen in).
    fn sorted(&mut self) -> impl Iterator<Item = &[u8]> {
        let paths = &self.paths;
        let key = |x: &[usize; 4]| paths.get(x[2]..x[3]).unwrap_or(&[]);
        self.index.sort_by(|x, y| key(x).cmp(key(y)));
        let text = &self.text;
        self.index
            .iter()
            .map(move |x| text.get(x[0]..x[1]).unwrap_or(&[]))
    }
}

/// `vdisk cat`.
pub fn cat(
    image: &Path,
    part: Option<u32>,
    path: &str,
    stream: Option<&str>,
) -> Result<(), PathError> {
    let at = |e| PathError::new(image, e);
    let volume = open(image, part)?;
    let entry = resolve(&*volume, path).map_err(at)?;
    if entry.kind == EntryKind::Dir {
        return Err(at(Error::invalid_input(format!("{path}: is a directory"))));
    }
    let mut out = io::stdout().lock();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = volume.read(&entry, stream, offset, &mut buf).map_err(at)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or(&[]);
        if quiet_on_closed_pipe(out.write_all(chunk)).map_err(at)? {
            return Ok(());
        }
        offset += n as u64;
    }
    quiet_on_closed_pipe(out.flush()).map_err(at)?;
    Ok(())
}

/// `vdisk manifest`.
pub fn manifest(image: &Path, part: Option<u32>) -> Result<(), PathError> {
    let at = |e| PathError::new(image, e);
    let volume = open(image, part)?;
    let root = volume.root().map_err(at)?;
    let mut entries = Vec::new();
    walk(&*volume, &root, "", &mut |p, e| {
        entries.push((p.to_owned(), e.clone()));
        Ok(())
    })
    .map_err(at)?;
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = BufWriter::new(io::stdout().lock());
    for (p, e) in &entries {
        let written = write_json(&mut out, p, e, Some(&*volume));
        if quiet_on_closed_pipe(written).map_err(at)? {
            return Ok(());
        }
    }
    quiet_on_closed_pipe(out.flush()).map_err(at)?;
    Ok(())
}

/// SHA-256 of the data of `entry` (or of its named `stream`), hex.
pub fn sha256(volume: &dyn Volume, entry: &Entry, stream: Option<&str>) -> disk_io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = volume.read(entry, stream, offset, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or(&[]));
        offset += n as u64;
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One JSON line; with a volume, files and streams get their SHA-256.
fn write_json(
    out: &mut impl Write,
    path: &str,
    e: &Entry,
    hash_with: Option<&dyn Volume>,
) -> io::Result<()> {
    let hashing = |stream| -> io::Result<Option<String>> {
        match hash_with {
            Some(v) if e.kind == EntryKind::File => sha256(v, e, stream)
                .map(Some)
                .map_err(|err| io::Error::other(err.context(format!("reading {path}")))),
            _ => Ok(None),
        }
    };
    let mut streams = Vec::new();
    for s in &e.streams {
        streams.push(StreamJson {
            name: &s.name,
            size: s.size,
            sha256: hashing(Some(&s.name))?,
        });
    }
    let line = EntryJson {
        path,
        kind: e.kind.name(),
        size: e.size,
        sha256: hashing(None)?,
        target: e.target.as_deref(),
        mtime: e.mtime,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        nlink: e.nlink,
        inode: e.inode,
        attrs: &e.attrs,
        streams,
        xattrs: e
            .xattrs
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    base64::engine::general_purpose::STANDARD.encode(v),
                )
            })
            .collect(),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

/// One human line: type, size, mtime, path (and a symlink's target), as
/// `{kind} {size:>12} {mtime:>11} {path}[ -> {target}]`, without going
/// through `format!` (a `ls -r` of 100,000 files spends its time here).
fn write_human(out: &mut Vec<u8>, path: &str, e: &Entry) -> io::Result<()> {
    let kind = match e.kind {
        EntryKind::File => b'-',
        EntryKind::Dir => b'd',
        EntryKind::Symlink => b'l',
        EntryKind::Other => b'?',
    };
    out.push(kind);
    out.push(b' ');
    let mut digits = [0u8; 24];
    push_padded(out, decimal(&mut digits, false, e.size), 12);
    out.push(b' ');
    match e.mtime {
        Some(t) => push_padded(out, decimal(&mut digits, t < 0, t.unsigned_abs()), 11),
        None => push_padded(out, b"-", 11),
    }
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    if let Some(t) = &e.target {
        out.extend_from_slice(b" -> ");
        out.extend_from_slice(t.as_bytes());
    }
    out.push(b'\n');
    Ok(())
}

/// `value` in decimal (with a minus sign when `negative`), at the end of `buf`.
fn decimal(buf: &mut [u8; 24], negative: bool, mut value: u64) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(d) = buf.get_mut(at) {
            *d = b'0' + (value % 10) as u8;
        }
        value /= 10;
        if value == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        if let Some(d) = buf.get_mut(at) {
            *d = b'-';
        }
    }
    buf.get(at..).unwrap_or(&[])
}

/// `text` right-aligned in `width` columns (longer text is not cut).
fn push_padded(out: &mut Vec<u8>, text: &[u8], width: usize) {
    out.resize(out.len() + width.saturating_sub(text.len()), b' ');
    out.extend_from_slice(text);
}

/// `Ok(true)` when the reader of our output went away (`| head`): stop
/// quietly. Read errors wrapped in I/O errors come back as themselves.
fn quiet_on_closed_pipe(r: io::Result<()>) -> disk_io::Result<bool> {
    match r {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => {
            if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
                if let Some(Ok(err)) = e.into_inner().map(|inner| inner.downcast::<Error>()) {
                    return Err(*err);
                }
                return Err(Error::new(ErrorKind::Io, "writing standard output"));
            }
            Err(Error::io(e, None))
        }
    }
}
