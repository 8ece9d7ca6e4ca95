//! FAT12/16/32 volumes through `fs-fat`.
//!
//! Entries: the long name (or the 8.3 name with its lowercase flags), size
//! (0 for directories), modification time (DOS local time read as UTC) and
//! DOS attributes. `inode` is the first cluster when the entry has one,
//! else `2^32 +` the byte offset of its directory entry in the volume, so
//! the two kinds never collide (clusters are 28-bit). `handle` is the
//! first cluster, 0 for the root directory.

use disk_io::{Error, Result};
use fs_fat::{Attributes, DirEntry, FatVolume};

use super::{Entry, EntryKind, Identity, SharedDisk, Volume};

/// An open FAT volume.
pub(super) struct Fat {
    volume: FatVolume<SharedDisk>,
}

/// Opens the FAT volume at the start of `disk`.
pub(super) fn open(disk: SharedDisk) -> Result<Box<dyn Volume>> {
    Ok(Box::new(Fat {
        volume: FatVolume::open(disk)?,
    }))
}

impl Fat {
    fn entry(&self, e: DirEntry) -> Entry {
        let is_dir = e.is_dir();
        let mut attrs = Vec::new();
        for (flag, name) in [
            (Attributes::READ_ONLY, "readonly"),
            (Attributes::HIDDEN, "hidden"),
            (Attributes::SYSTEM, "system"),
            (Attributes::ARCHIVE, "archive"),
        ] {
            if e.attributes.contains(flag) {
                attrs.push(name);
            }
        }
        let handle = if is_dir {
            self.volume.dir_key(e.first_cluster)
        } else {
            e.first_cluster
        };
        Entry {
            inode: if e.first_cluster != 0 {
                u64::from(e.first_cluster)
            } else {
                (1u64 << 32) + e.offset
            },
            kind: if is_dir {
                EntryKind::Dir
            } else {
                EntryKind::File
            },
            size: u64::from(e.size),
            mtime: e.modified.map(|t| t.seconds),
            mode: None,
            uid: None,
            gid: None,
            nlink: None,
            attrs,
            target: None,
            xattrs: Vec::new(),
            streams: Vec::new(),
            handle: u64::from(handle),
            name: e.name,
        }
    }

    fn cluster(handle: u64) -> Result<u32> {
        u32::try_from(handle).map_err(|_| Error::invalid_input("not a FAT entry handle"))
    }
}

impl Volume for Fat {
    fn fs_name(&self) -> &'static str {
        self.volume.fat_type().name()
    }

    fn label(&self) -> Option<String> {
        self.volume.label().ok().flatten()
    }

    fn identity(&self) -> Identity {
        Identity {
            fs_name: self.fs_name(),
            label: self.label(),
            serial: self.volume.serial().map(u64::from),
            uuid: None,
            cluster_size: Some(u64::from(self.volume.cluster_size())),
        }
    }

    fn root(&self) -> Result<Entry> {
        let root = self.volume.root();
        let mut entry = self.entry(root);
        entry.inode = u64::from(self.volume.boot_sector().root_cluster);
        entry.handle = 0;
        Ok(entry)
    }

    fn list(&self, dir: &Entry) -> Result<Vec<Entry>> {
        if dir.kind != EntryKind::Dir {
            return Err(Error::invalid_input(format!(
                "{}: not a directory",
                dir.name
            )));
        }
        let entries = self
            .volume
            .read_dir_at(Self::cluster(dir.handle)?)
            .map_err(|e| e.context(format!("directory '{}'", dir.name)))?;
        Ok(entries.into_iter().map(|e| self.entry(e)).collect())
    }

    fn lookup(&self, dir: &Entry, name: &str) -> Result<Option<Entry>> {
        if dir.kind != EntryKind::Dir {
            return Err(Error::invalid_input(format!(
                "{}: not a directory",
                dir.name
            )));
        }
        Ok(self
            .volume
            .lookup_at(Self::cluster(dir.handle)?, name)?
            .map(|e| self.entry(e)))
    }

    fn read(
        &self,
        file: &Entry,
        stream: Option<&str>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        if let Some(s) = stream {
            return Err(Error::invalid_input(format!(
                "{}: FAT files have no named stream '{s}'",
                file.name
            )));
        }
        if file.kind != EntryKind::File {
            return Err(Error::invalid_input(format!("{}: not a file", file.name)));
        }
        let size = u32::try_from(file.size)
            .map_err(|_| Error::invalid_input("FAT files are smaller than 4 GiB"))?;
        self.volume
            .read_chain(Self::cluster(file.handle)?, size, offset, buf)
            .map_err(|e| e.context(format!("file '{}'", file.name)))
    }
}
