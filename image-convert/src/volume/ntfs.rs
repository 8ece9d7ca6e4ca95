//! NTFS through [`Volume`]: entries from `$I30` indexes, metadata from
//! `$STANDARD_INFORMATION` and `$FILE_NAME`, data from `$DATA` streams.

use disk_io::{Error, Result};
use fs_ntfs::attribute::types;
use fs_ntfs::{FileName, LinkTarget, NtfsVolume, dos, records};

use super::{Entry, EntryKind, SharedDisk, StreamInfo, Volume};

/// An NTFS volume opened for reading.
pub struct NtfsReader {
    vol: NtfsVolume<SharedDisk>,
}

impl NtfsReader {
    /// Opens the NTFS volume on `disk`.
    pub fn open(disk: SharedDisk) -> Result<Self> {
        Ok(NtfsReader {
            vol: NtfsVolume::open(disk)?,
        })
    }

    /// The entry for file `record` reached under `name`.
    fn entry(&self, record: u64, name: String) -> Result<Entry> {
        let file = self.vol.file(record)?;
        if !file.in_use() {
            return Err(Error::corrupt(
                format!("directory entry {name} points at free MFT record {record}"),
                0,
            ));
        }
        let info = file.standard_information()?;
        let target = match self.vol.link_target(&file)? {
            Some(LinkTarget::Symlink(t) | LinkTarget::Junction(t)) => Some(t),
            None => None,
        };
        let kind = match &target {
            Some(_) => EntryKind::Symlink,
            None if file.is_directory() => EntryKind::Dir,
            None => EntryKind::File,
        };
        let size = match (&target, kind) {
            (Some(t), _) => t.len() as u64,
            (None, EntryKind::Dir) => 0,
            _ => file.data_size(),
        };
        let dos_attrs = info.map_or(0, |i| i.attributes);
        let attrs = [
            (dos::READONLY, "readonly"),
            (dos::HIDDEN, "hidden"),
            (dos::SYSTEM, "system"),
            (dos::ARCHIVE, "archive"),
        ]
        .into_iter()
        .filter(|(bit, _)| dos_attrs & bit != 0)
        .map(|(_, n)| n)
        .collect();
        let streams = if kind == EntryKind::File {
            file.named_streams()
                .into_iter()
                .map(|(name, size)| StreamInfo { name, size })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Entry {
            name,
            kind,
            size,
            mtime: info.map(|i| i.mtime()),
            mode: None,
            uid: None,
            gid: None,
            nlink: Some(file.link_count()?),
            inode: record,
            attrs,
            target,
            xattrs: Vec::new(),
            streams,
            handle: record,
        })
    }

    /// True for index entries a listing shows: long names of user files.
    fn listed(dir: u64, record: u64, name: &FileName) -> bool {
        name.namespace.is_long() && record >= records::FIRST_USER && record != dir
    }
}

impl Volume for NtfsReader {
    fn fs_name(&self) -> &'static str {
        "ntfs"
    }

    fn label(&self) -> Option<String> {
        self.vol.label().map(str::to_owned)
    }

    fn root(&self) -> Result<Entry> {
        self.entry(records::ROOT, String::new())
    }

    fn list(&self, dir: &Entry) -> Result<Vec<Entry>> {
        let file = self.vol.file(dir.handle)?;
        let mut out = Vec::new();
        for (record, name) in self.vol.read_dir(&file)? {
            if Self::listed(dir.handle, record, &name) {
                out.push(self.entry(record, name.name_string())?);
            }
        }
        Ok(out)
    }

    fn lookup(&self, dir: &Entry, name: &str) -> Result<Option<Entry>> {
        let file = self.vol.file(dir.handle)?;
        let Some((record, found)) = self.vol.find(&file, name)? else {
            return Ok(None);
        };
        if record < records::FIRST_USER || record == dir.handle {
            return Ok(None);
        }
        // A DOS short name finds the file; the entry carries its long name.
        let shown = if found.namespace.is_long() {
            found.name_string()
        } else {
            let f = self.vol.file(record)?;
            f.file_names()?
                .into_iter()
                .find(|n| n.parent == dir.handle && n.namespace.is_long())
                .map_or_else(|| found.name_string(), |n| n.name_string())
        };
        self.entry(record, shown).map(Some)
    }

    fn read(
        &self,
        file: &Entry,
        stream: Option<&str>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let f = self.vol.file(file.handle)?;
        // The unnamed stream of these reparse points is a sparse placeholder.
        match f.reparse_tag() {
            Some(fs_ntfs::TAG_WOF) if stream.is_none() => {
                return Err(Error::unsupported(format!(
                    "{}: reading files compressed by the Windows Overlay Filter (CompactOS)",
                    file.name
                )));
            }
            Some(fs_ntfs::TAG_DEDUP) if stream.is_none() => {
                return Err(Error::unsupported(format!(
                    "{}: reading files moved into a Windows deduplication chunk store",
                    file.name
                )));
            }
            _ => {}
        }
        let name: Vec<u16> = stream.unwrap_or("").encode_utf16().collect();
        let Some(s) = f.stream(types::DATA, &name)? else {
            return match stream {
                Some(n) => Err(Error::invalid_input(format!(
                    "{}: no stream named {n}",
                    file.name
                ))),
                None if f.is_directory() => Err(Error::invalid_input(format!(
                    "{}: is a directory",
                    file.name
                ))),
                None => Ok(0),
            };
        };
        self.vol.read_stream(&s, offset, buf)
    }
}
