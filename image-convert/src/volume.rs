//! One interface over the file-system crates: what `vdisk ls`, `cat` and
//! `manifest` read, and what `compare --logical` and logical copies walk.
//!
//! A file-system crate joins by implementing [`Volume`] in a module here
//! and adding its arm to [`open_volume`]; nothing else changes.

use std::sync::Arc;

use disk_io::{Error, ErrorKind, ReadAt, Result, Window};

use crate::inspect::{FileSystem, GuestContent, inspect};

mod ext;
mod fat;
mod ntfs;

/// A disk shared by a volume and its caller.
pub type SharedDisk = Arc<dyn ReadAt + Send + Sync>;

/// What kind of object an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (NTFS: a symbolic-link or junction reparse point).
    Symlink,
    /// Anything else: devices, fifos, sockets.
    Other,
}

impl EntryKind {
    /// The name the manifest uses: `file`, `dir`, `symlink`, `other`.
    pub const fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "other",
        }
    }
}

/// A named data stream of a file (NTFS alternate data streams).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Stream name (without the file name).
    pub name: String,
    /// Length in bytes.
    pub size: u64,
}

/// One directory entry with the metadata a manifest shows. Fields a file
/// system does not have stay `None` or empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Name inside its directory, UTF-8 (invalid sequences as U+FFFD).
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Length of the data in bytes (a symlink: the length of its target).
    pub size: u64,
    /// Modification time, whole Unix seconds, UTC.
    pub mtime: Option<i64>,
    /// POSIX mode bits including the file type (ext).
    pub mode: Option<u32>,
    /// Owner (ext).
    pub uid: Option<u32>,
    /// Group (ext).
    pub gid: Option<u32>,
    /// Number of hard links.
    pub nlink: Option<u64>,
    /// Identity inside the file system: equal for hard links.
    pub inode: u64,
    /// DOS attributes by name (`readonly`, `hidden`, `system`, `archive`).
    pub attrs: Vec<&'static str>,
    /// Symlink target.
    pub target: Option<String>,
    /// Extended attributes, name and value.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Named data streams.
    pub streams: Vec<StreamInfo>,
    /// What the volume needs to find the entry again (listing a directory,
    /// reading a file); opaque to callers.
    pub handle: u64,
}

/// What a fresh copy of a volume keeps from it (logical conversion):
/// whatever the file system has of these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The exact type (`fat12`, `fat16`, `fat32`, `ext4`, `ntfs`, …).
    pub fs_name: &'static str,
    /// Volume label.
    pub label: Option<String>,
    /// Volume serial number (FAT volume id, NTFS serial number).
    pub serial: Option<u64>,
    /// File-system UUID (ext).
    pub uuid: Option<[u8; 16]>,
    /// Allocation unit in bytes (FAT/NTFS cluster, ext block).
    pub cluster_size: Option<u64>,
}

/// A file system opened for reading.
pub trait Volume: Send + Sync {
    /// The file-system type, as `vdisk info` names it (`fat32`, `ext4`, …).
    fn fs_name(&self) -> &'static str;

    /// The volume label, when it has one.
    fn label(&self) -> Option<String> {
        None
    }

    /// Type, label, serial, UUID and cluster size, for a fresh copy.
    fn identity(&self) -> Identity {
        Identity {
            fs_name: self.fs_name(),
            label: self.label(),
            ..Identity::default()
        }
    }

    /// The root directory, as an entry named `""`.
    fn root(&self) -> Result<Entry>;

    /// The entries of directory `dir` (without `.` and `..`), in any order.
    /// Metadata files the contract does not list (NTFS `$MFT`, …) are left out.
    fn list(&self, dir: &Entry) -> Result<Vec<Entry>>;

    /// The entry called `name` in `dir`. The default compares names
    /// exactly; case-insensitive file systems override it.
    fn lookup(&self, dir: &Entry, name: &str) -> Result<Option<Entry>> {
        Ok(self.list(dir)?.into_iter().find(|e| e.name == name))
    }

    /// Reads the data of `file` (or of its named `stream`) at `offset`
    /// into `buf`; returns how many bytes were read, 0 at the end.
    fn read(
        &self,
        file: &Entry,
        stream: Option<&str>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize>;
}

/// Opens the file system `fs` found on `disk`.
pub fn open_volume(disk: SharedDisk, fs: FileSystem) -> Result<Box<dyn Volume>> {
    match fs {
        FileSystem::Ext(version) => Ok(Box::new(ext::ExtVolume::open(disk, version)?)),
        FileSystem::Fat(_) => fat::open(disk),
        FileSystem::Ntfs => Ok(Box::new(ntfs::NtfsReader::open(disk)?)),
    }
}

/// Opens the file system `vdisk` addresses with `--part`: partition
/// `part` of the disk's table, or the whole disk when `part` is `None`.
pub fn open_filesystem(disk: SharedDisk, part: Option<u32>) -> Result<Box<dyn Volume>> {
    let content = inspect(&*disk)?;
    match (part, content) {
        (None, GuestContent::FileSystem(fs)) => open_volume(disk, fs),
        (None, GuestContent::Table(t)) => Err(Error::invalid_input(format!(
            "the disk has a {} partition table: choose a partition with --part N ({})",
            t.kind_name(),
            t.partitions
                .iter()
                .map(|p| p.number.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        (None, _) => Err(Error::unsupported(
            "no file system this tool reads spans the whole disk",
        )),
        (Some(n), GuestContent::Table(t)) => {
            let p = t.partition(n).ok_or_else(|| {
                Error::invalid_input(format!("the {} table has no partition {n}", t.kind_name()))
            })?;
            let window: SharedDisk = Arc::new(Window::new(Arc::clone(&disk), p.start, p.size)?);
            let fs = crate::inspect::probe_filesystem(&*window)?.ok_or_else(|| {
                Error::unsupported(format!(
                    "partition {n} holds no file system this tool reads"
                ))
                .at(p.start)
            })?;
            open_volume(window, fs)
        }
        (Some(_), _) => Err(Error::invalid_input(
            "--part given, but the disk has no partition table",
        )),
    }
}

/// The entry at the `/`-separated `path` (`/` or empty: the root).
/// Symbolic links are not followed.
pub fn resolve(volume: &dyn Volume, path: &str) -> Result<Entry> {
    let mut entry = volume.root()?;
    let mut depth = 0usize;
    for name in path.split('/').filter(|c| !c.is_empty()) {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(Error::invalid_input(format!(
                "path deeper than {MAX_DEPTH} levels"
            )));
        }
        if entry.kind != EntryKind::Dir {
            return Err(Error::invalid_input(format!(
                "{path}: '{}' is not a directory",
                entry.name
            )));
        }
        entry = volume
            .lookup(&entry, name)?
            .ok_or_else(|| Error::invalid_input(format!("{path}: no such file or directory")))?;
    }
    Ok(entry)
}

/// Deepest directory nesting a walk follows.
pub const MAX_DEPTH: usize = 256;

/// Walks the tree under `dir` (whose path is `prefix`, `""` for the root)
/// depth first, calling `visit` with each entry's full path. A directory
/// seen twice on one path (a cycle) or nesting past [`MAX_DEPTH`] is an
/// error naming it.
pub fn walk(
    volume: &dyn Volume,
    dir: &Entry,
    prefix: &str,
    visit: &mut dyn FnMut(&str, &Entry) -> Result<()>,
) -> Result<()> {
    let mut ancestors = vec![dir.handle];
    // One path buffer for the whole walk: each entry's name is appended
    // to its directory's path and cut off again.
    let mut path = String::from(prefix);
    walk_in(volume, dir, &mut path, visit, &mut ancestors)
}

fn walk_in(
    volume: &dyn Volume,
    dir: &Entry,
    path: &mut String,
    visit: &mut dyn FnMut(&str, &Entry) -> Result<()>,
    ancestors: &mut Vec<u64>,
) -> Result<()> {
    let dir_len = path.len();
    for entry in volume.list(dir)? {
        path.truncate(dir_len);
        path.push('/');
        path.push_str(&entry.name);
        visit(path, &entry)?;
        if entry.kind == EntryKind::Dir {
            if ancestors.contains(&entry.handle) {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("directory {path} contains itself (a directory cycle)"),
                ));
            }
            if ancestors.len() >= MAX_DEPTH {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("directory {path} nested deeper than {MAX_DEPTH} levels"),
                ));
            }
            ancestors.push(entry.handle);
            walk_in(volume, &entry, path, visit, ancestors)?;
            ancestors.pop();
        }
    }
    path.truncate(dir_len);
    Ok(())
}
