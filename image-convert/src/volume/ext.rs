//! ext2/3/4 behind the [`Volume`] interface: entries carry the inode
//! number (as `inode` and `handle`), mode, owner, times, link count,
//! symlink target and extended attributes with their namespace prefix.

use disk_io::Result;
use fs_ext::{DirEntry, ExtFs, ExtVersion, FileType, Inode};

use crate::volume::{Entry, EntryKind, SharedDisk, Volume};

/// An ext volume opened for reading (journal replayed in memory).
pub struct ExtVolume {
    fs: ExtFs<SharedDisk>,
    version: ExtVersion,
}

impl ExtVolume {
    /// Opens the ext file system of generation `version` on `disk`.
    pub fn open(disk: SharedDisk, version: ExtVersion) -> Result<Self> {
        Ok(ExtVolume {
            fs: ExtFs::open(disk)?,
            version,
        })
    }

    fn entry(&self, name: String, inode: &Inode) -> Result<Entry> {
        let kind = match inode.file_type() {
            FileType::Regular => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        let target = if kind == EntryKind::Symlink {
            Some(String::from_utf8_lossy(&self.fs.read_link(inode)?).into_owned())
        } else {
            None
        };
        let xattrs = self
            .fs
            .xattrs(inode)?
            .into_iter()
            // Inline data is file content, not an attribute.
            .filter(|(n, _)| n != b"system.data")
            .map(|(n, v)| (String::from_utf8_lossy(&n).into_owned(), v))
            .collect();
        Ok(Entry {
            name,
            kind,
            size: inode.size,
            mtime: Some(inode.mtime.secs),
            mode: Some(u32::from(inode.mode)),
            uid: Some(inode.uid),
            gid: Some(inode.gid),
            nlink: Some(u64::from(inode.links_count)),
            inode: u64::from(inode.ino),
            attrs: Vec::new(),
            target,
            xattrs,
            streams: Vec::new(),
            handle: u64::from(inode.ino),
        })
    }

    fn inode_of(&self, entry: &Entry) -> Result<Inode> {
        let ino = u32::try_from(entry.handle)
            .map_err(|_| disk_io::Error::invalid_input("not an ext inode handle"))?;
        self.fs.inode(ino)
    }
}

impl Volume for ExtVolume {
    fn fs_name(&self) -> &'static str {
        self.version.name()
    }

    fn label(&self) -> Option<String> {
        Some(self.fs.superblock().label()).filter(|l| !l.is_empty())
    }

    fn root(&self) -> Result<Entry> {
        let root = self.fs.root()?;
        self.entry(String::new(), &root)
    }

    fn list(&self, dir: &Entry) -> Result<Vec<Entry>> {
        let inode = self.inode_of(dir)?;
        self.fs
            .read_dir(&inode)?
            .into_iter()
            .map(|e: DirEntry| {
                let child = self.fs.inode(e.inode).map_err(|err| {
                    err.context(format!(
                        "entry '{}' of directory inode {}",
                        String::from_utf8_lossy(&e.name),
                        inode.ino
                    ))
                })?;
                self.entry(String::from_utf8_lossy(&e.name).into_owned(), &child)
            })
            .collect()
    }

    fn lookup(&self, dir: &Entry, name: &str) -> Result<Option<Entry>> {
        // Only the entry asked for is decoded (inode, target, xattrs).
        let inode = self.inode_of(dir)?;
        match self.fs.lookup(&inode, name.as_bytes())? {
            Some(e) => {
                let child = self.fs.inode(e.inode)?;
                self.entry(name.to_string(), &child).map(Some)
            }
            None => Ok(None),
        }
    }

    fn read(
        &self,
        file: &Entry,
        stream: Option<&str>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        if let Some(s) = stream {
            return Err(disk_io::Error::invalid_input(format!(
                "ext files have no named stream '{s}'"
            )));
        }
        let inode = self.inode_of(file)?;
        self.fs.read(&inode, offset, buf)
    }
}
