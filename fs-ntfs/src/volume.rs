//! An NTFS volume opened for reading.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;
use disk_io::sync::Lock;
use disk_io::{Error, ErrorKind, ReadAt, Result};

use crate::attribute::{Value, parse_attributes, types, utf16, utf16_string};
use crate::attribute_list::parse_attribute_list;
use crate::boot_sector::BootSector;
use crate::file::{File, Stream, StreamData};
use crate::file_name::FileName;
use crate::index::{IndexBlocks, IndexEntry, walk_index};
use crate::lznt1::lznt1_decompress;
use crate::record::FileRecord;
use crate::reparse::{Reparse, parse_reparse};
use crate::run_list::find_run;
use crate::security::{SDS_HEADER, SdsLocation, SecurityDescriptor};
use crate::standard_information::dos;

/// Well-known MFT record numbers.
pub mod records {
    /// `$MFT`.
    pub const MFT: u64 = 0;
    /// `$MFTMirr`.
    pub const MFT_MIRROR: u64 = 1;
    /// `$Volume`.
    pub const VOLUME: u64 = 3;
    /// The root directory.
    pub const ROOT: u64 = 5;
    /// `$Bitmap`.
    pub const BITMAP: u64 = 6;
    /// `$Secure`.
    pub const SECURE: u64 = 9;
    /// `$UpCase`.
    pub const UPCASE: u64 = 10;
    /// The first record that is not a reserved metadata file.
    pub const FIRST_USER: u64 = 16;
}

/// Largest attribute value read whole into memory (attribute lists,
/// reparse points, `$UpCase`).
pub const MAX_VALUE: u64 = 4 << 20;
/// Most extension records one file may use.
pub const MAX_EXTENSION_RECORDS: usize = 4096;
/// Most entries one directory listing returns.
pub const MAX_DIR_ENTRIES: usize = 1 << 20;

/// What a file is beyond plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkTarget {
    /// A symbolic link (reparse point or ntfs-3g Interix link).
    Symlink(String),
    /// A junction (mount point reparse point).
    Junction(String),
}

/// An NTFS volume on a disk (`D` holds the volume from its boot sector).
pub struct NtfsVolume<D: ReadAt> {
    disk: D,
    boot: BootSector,
    mft: Stream,
    upcase: Vec<u16>,
    label: Option<String>,
    version: (u8, u8),
    dirty: bool,
    warnings: Vec<String>,
    /// The most recently read FILE records, newest last.
    cache: Lock<Vec<FileRecord>>,
}

/// FILE records kept by the record cache.
pub const RECORD_CACHE: usize = 64;

impl<D: ReadAt> NtfsVolume<D> {
    /// Opens the volume: boot sector, `$MFT` (through its own runs and
    /// attribute list), `$MFTMirr` cross-check, `$Volume` and `$UpCase`.
    pub fn open(disk: D) -> Result<Self> {
        let mut sector = [0u8; 512];
        disk.read_at(0, &mut sector)?;
        let boot = BootSector::parse(&sector)?;
        if boot.volume_size() > disk.size() + u64::from(boot.sector_size) {
            return Err(Error::corrupt(
                alloc::format!(
                    "NTFS boot sector: the volume has {} bytes but the disk only {}",
                    boot.volume_size(),
                    disk.size()
                ),
                0x28,
            ));
        }
        let rs = boot.file_record_size;
        let position = boot.mft_lcn * u64::from(boot.cluster_size);
        let bytes = disk_io::read_vec(&disk, position, rs as usize)?;
        let record = FileRecord::parse(bytes, 0, position).map_err(|e| e.context("$MFT"))?;
        let attrs = parse_attributes(&record, boot.total_clusters())?;
        let base = File {
            number: 0,
            sequence: record.sequence,
            flags: record.flags,
            attributes: attrs,
        };
        let mft = base
            .stream(types::DATA, &[])?
            .ok_or_else(|| Error::corrupt("$MFT record 0 has no $DATA attribute", position))?;
        if !matches!(mft.data, StreamData::Runs(_)) || mft.compression_unit != 0 {
            return Err(Error::corrupt(
                "$MFT $DATA is resident or compressed",
                mft.position,
            ));
        }
        let mut vol = NtfsVolume {
            disk,
            boot,
            mft,
            upcase: Vec::new(),
            label: None,
            version: (0, 0),
            dirty: false,
            warnings: Vec::new(),
            cache: Lock::new(Vec::new()),
        };
        // With an attribute list, the $DATA of $MFT continues in extension
        // records found through the first extent.
        if base
            .attributes
            .iter()
            .any(|a| a.ty == types::ATTRIBUTE_LIST)
        {
            let full = vol.file(records::MFT)?;
            if let Some(s) = full.stream(types::DATA, &[])? {
                vol.mft = s;
            }
        }
        vol.check_mirror()?;
        vol.read_volume_info()?;
        vol.read_upcase()?;
        Ok(vol)
    }

    /// The disk underneath.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// The boot sector.
    pub fn boot_sector(&self) -> &BootSector {
        &self.boot
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u32 {
        self.boot.cluster_size
    }

    /// The volume label from `$Volume`.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// NTFS version (major, minor) from `$Volume`, e.g. (3, 1).
    pub fn version(&self) -> (u8, u8) {
        self.version
    }

    /// True when `$Volume` says the volume was not cleanly unmounted.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Problems found while opening that do not prevent reading (a
    /// `$MFTMirr` that differs from `$MFT`, a missing `$UpCase`).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Records in the MFT.
    pub fn record_count(&self) -> u64 {
        self.mft.size / u64::from(self.boot.file_record_size)
    }

    fn record_bytes(&self, number: u64) -> Result<(Vec<u8>, u64)> {
        let rs = u64::from(self.boot.file_record_size);
        if number >= self.record_count() {
            return Err(Error::corrupt(
                alloc::format!(
                    "MFT record {number} is past the end of $MFT ({} records)",
                    self.record_count()
                ),
                self.mft.position,
            ));
        }
        let offset = number * rs;
        // Records never straddle a run in practice, but clusters may be
        // smaller than records: locate the first byte for the position.
        let position = self.byte_position(&self.mft, offset)?;
        let mut buf = alloc::vec![0u8; rs as usize];
        let n = self.read_stream(&self.mft, offset, &mut buf)?;
        if n != buf.len() {
            return Err(Error::corrupt(
                alloc::format!("MFT record {number} is cut short"),
                position,
            ));
        }
        Ok((buf, position))
    }

    /// The volume position of byte `offset` of a non-resident stream.
    fn byte_position(&self, stream: &Stream, offset: u64) -> Result<u64> {
        let cs = u64::from(self.boot.cluster_size);
        match &stream.data {
            StreamData::Runs(runs) => {
                let vcn = offset / cs;
                let run = find_run(runs, vcn).ok_or_else(|| self.no_run(stream, vcn))?;
                Ok(run
                    .lcn
                    .map_or(0, |l| (l + vcn - run.vcn) * cs + offset % cs))
            }
            StreamData::Resident(_) => Ok(stream.position),
        }
    }

    fn no_run(&self, stream: &Stream, vcn: u64) -> Error {
        Error::corrupt(
            alloc::format!(
                "MFT record {} attribute {:#x} \"{}\": no run maps VCN {vcn} (size {})",
                stream.record,
                stream.ty,
                utf16_string(&stream.name),
                stream.size
            ),
            stream.position,
        )
    }

    /// Reads FILE record `number` (fixups applied).
    pub fn record(&self, number: u64) -> Result<FileRecord> {
        let hit = self.cache.with_write(|c| {
            Ok(c.iter().position(|r| r.number == number).map(|i| {
                let r = c.remove(i);
                c.push(r.clone());
                r
            }))
        })?;
        if let Some(r) = hit {
            return Ok(r);
        }
        let (bytes, position) = self.record_bytes(number)?;
        let record = FileRecord::parse(bytes, number, position)?;
        self.cache.with_write(|c| {
            if c.len() >= RECORD_CACHE {
                c.remove(0);
            }
            c.push(record.clone());
            Ok(())
        })?;
        Ok(record)
    }

    /// Reads file `number` with all its attributes, following
    /// `$ATTRIBUTE_LIST` into extension records.
    pub fn file(&self, number: u64) -> Result<File> {
        let record = self.record(number)?;
        if record.base_record != 0 {
            return Err(Error::corrupt(
                alloc::format!(
                    "MFT record {number} is an extension record of {}",
                    record.base_record
                ),
                record.position + 0x20,
            ));
        }
        let tc = self.boot.total_clusters();
        let mut attributes = parse_attributes(&record, tc)?;
        let list = attributes
            .iter()
            .find(|a| a.ty == types::ATTRIBUTE_LIST)
            .cloned();
        if let Some(list) = list {
            let tmp = File {
                number,
                sequence: 0,
                flags: record.flags,
                attributes: Vec::new(),
            };
            let stream = File {
                attributes: alloc::vec![list.clone()],
                ..tmp
            }
            .stream(types::ATTRIBUTE_LIST, &list.name)?
            .ok_or_else(|| Error::corrupt("$ATTRIBUTE_LIST", list.position))?;
            let value = self.read_value(&stream)?;
            let entries = parse_attribute_list(&value, list.position)
                .map_err(|e| e.context(alloc::format!("file {number}")))?;
            let mut extension: BTreeSet<u64> = BTreeSet::new();
            for e in &entries {
                if e.record != number {
                    extension.insert(e.record);
                }
            }
            if extension.len() > MAX_EXTENSION_RECORDS {
                return Err(Error::corrupt(
                    alloc::format!(
                        "file {number} uses {} extension records (at most {MAX_EXTENSION_RECORDS})",
                        extension.len()
                    ),
                    list.position,
                ));
            }
            for ext in extension {
                let r = self
                    .record(ext)
                    .map_err(|e| e.context(alloc::format!("extension record of file {number}")))?;
                if r.base_record != number {
                    return Err(Error::corrupt(
                        alloc::format!(
                            "$ATTRIBUTE_LIST of file {number} points at MFT record {ext}, whose base record is {}",
                            r.base_record
                        ),
                        r.position + 0x20,
                    ));
                }
                for a in parse_attributes(&r, tc)? {
                    if a.ty == types::ATTRIBUTE_LIST {
                        return Err(Error::corrupt(
                            alloc::format!(
                                "extension record {ext} of file {number} holds another $ATTRIBUTE_LIST (a cycle)"
                            ),
                            a.position,
                        ));
                    }
                    if entries
                        .iter()
                        .any(|e| e.record == ext && e.ty == a.ty && e.id == a.id)
                    {
                        attributes.push(a);
                    }
                }
            }
        }
        Ok(File {
            number,
            sequence: record.sequence,
            flags: record.flags,
            attributes,
        })
    }

    /// Reads a whole stream of at most [`MAX_VALUE`] bytes.
    pub fn read_value(&self, stream: &Stream) -> Result<Vec<u8>> {
        if stream.size > MAX_VALUE {
            return Err(Error::corrupt(
                alloc::format!(
                    "attribute {:#x} of {} bytes (at most {MAX_VALUE} read whole)",
                    stream.ty,
                    stream.size
                ),
                stream.position,
            ));
        }
        let mut buf = alloc::vec![0u8; stream.size as usize];
        let n = self.read_stream(stream, 0, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Reads the bytes of `stream` at `offset` into `buf`; returns how many
    /// were read (fewer at the end of the stream, 0 past it). Sparse runs and
    /// bytes past the initialised size read as zeros; compressed streams are
    /// decompressed; encrypted streams are unsupported.
    pub fn read_stream(&self, stream: &Stream, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= stream.size {
            return Ok(0);
        }
        let len = (stream.size - offset).min(buf.len() as u64) as usize;
        let Some(buf) = buf.get_mut(..len) else {
            return Ok(0);
        };
        if stream.flags.encrypted() {
            return Err(
                Error::unsupported("reading encrypted (EFS) NTFS files").at(stream.position)
            );
        }
        match &stream.data {
            StreamData::Resident(v) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|o| v.get(o..o + len))
                    .ok_or_else(|| {
                        Error::corrupt("resident value shorter than its size", stream.position)
                    })?;
                buf.copy_from_slice(src);
            }
            StreamData::Runs(_) if stream.compression_unit != 0 => {
                self.read_compressed(stream, offset, buf)?
            }
            StreamData::Runs(_) => self.read_runs(stream, offset, buf)?,
        }
        Ok(len)
    }

    fn read_runs(&self, stream: &Stream, offset: u64, buf: &mut [u8]) -> Result<()> {
        let StreamData::Runs(runs) = &stream.data else {
            return Ok(());
        };
        let cs = u64::from(self.boot.cluster_size);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let vcn = pos / cs;
            let run = find_run(runs, vcn).ok_or_else(|| self.no_run(stream, vcn))?;
            let run_end = (run.vcn + run.length).saturating_mul(cs);
            let mut n = (run_end - pos).min((buf.len() - done) as u64);
            let zero = pos >= stream.initialized_size;
            if !zero {
                n = n.min(stream.initialized_size - pos);
            }
            let n = n as usize;
            let Some(dst) = buf.get_mut(done..done + n) else {
                break;
            };
            match run.lcn {
                Some(lcn) if !zero => {
                    let at = (lcn + vcn - run.vcn) * cs + pos % cs;
                    self.disk.read_at(at, dst).map_err(|e| {
                        e.context(alloc::format!("attribute {:#x} at VCN {vcn}", stream.ty))
                    })?;
                }
                _ => dst.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn read_compressed(&self, stream: &Stream, offset: u64, buf: &mut [u8]) -> Result<()> {
        let StreamData::Runs(runs) = &stream.data else {
            return Ok(());
        };
        let cs = u64::from(self.boot.cluster_size);
        let unit_clusters = 1u64 << stream.compression_unit;
        let unit = unit_clusters * cs;
        if unit > 4 << 20 {
            return Err(Error::unsupported(alloc::format!(
                "compression units of {unit} bytes (at most 4 MiB)"
            ))
            .at(stream.position));
        }
        let mut raw = Vec::new();
        let mut plain = alloc::vec![0u8; unit as usize];
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let first_vcn = pos / unit * unit_clusters;
            // Gather the stored clusters of the unit, in order.
            raw.clear();
            let mut stored = 0u64;
            let mut vcn = first_vcn;
            let mut raw_pos = 0;
            while vcn < first_vcn + unit_clusters {
                let Some(run) = find_run(runs, vcn) else {
                    break;
                };
                let n = (run.vcn + run.length - vcn).min(first_vcn + unit_clusters - vcn);
                if let Some(lcn) = run.lcn {
                    let at = (lcn + vcn - run.vcn) * cs;
                    if raw.is_empty() {
                        raw_pos = at;
                    }
                    let old = raw.len();
                    raw.resize(old + (n * cs) as usize, 0);
                    self.disk
                        .read_at(at, raw.get_mut(old..).unwrap_or_default())?;
                    stored += n;
                }
                vcn += n;
            }
            if stored == 0 {
                plain.fill(0);
            } else if stored == unit_clusters {
                let n = plain.len();
                plain.copy_from_slice(raw.get(..n).unwrap_or_default());
            } else {
                lznt1_decompress(&raw, raw_pos, &mut plain).map_err(|e| {
                    e.context(alloc::format!(
                        "MFT record {} attribute {:#x} \"{}\": compression unit at VCN {first_vcn}",
                        stream.record,
                        stream.ty,
                        utf16_string(&stream.name)
                    ))
                })?;
            }
            let within = (pos - first_vcn * cs) as usize;
            let n = (plain.len() - within).min(buf.len() - done);
            if let (Some(dst), Some(src)) =
                (buf.get_mut(done..done + n), plain.get(within..within + n))
            {
                dst.copy_from_slice(src);
                // Past the initialised size, zeros.
                if pos + n as u64 > stream.initialized_size {
                    let from = stream.initialized_size.saturating_sub(pos) as usize;
                    if let Some(z) = dst.get_mut(from..) {
                        z.fill(0);
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    fn check_mirror(&mut self) -> Result<()> {
        let mirror = match self.file(records::MFT_MIRROR).and_then(|f| {
            f.stream(types::DATA, &[])?
                .ok_or_else(|| Error::corrupt("$MFTMirr has no $DATA", 0))
        }) {
            Ok(m) => m,
            Err(e) => {
                self.warnings
                    .push(alloc::format!("$MFTMirr cannot be read: {e}"));
                return Ok(());
            }
        };
        let rs = u64::from(self.boot.file_record_size);
        let count = (mirror.size / rs).min(4).min(self.record_count());
        for n in 0..count {
            let (ours, position) = self.record_bytes(n)?;
            let mut theirs = alloc::vec![0u8; rs as usize];
            self.read_stream(&mirror, n * rs, &mut theirs)?;
            if ours != theirs {
                let at = self.byte_position(&mirror, n * rs).unwrap_or(0);
                self.warnings.push(alloc::format!(
                    "MFT record {n} at offset {position:#x} differs from its copy in $MFTMirr at offset {at:#x}"
                ));
            }
        }
        Ok(())
    }

    fn read_volume_info(&mut self) -> Result<()> {
        let f = self
            .file(records::VOLUME)
            .map_err(|e| e.context("$Volume"))?;
        if let Some(a) = f.attributes.iter().find(|a| a.ty == types::VOLUME_NAME) {
            if let Some(v) = a.resident() {
                let name = utf16_string(&utf16(v));
                if !name.is_empty() {
                    self.label = Some(name);
                }
            }
        }
        if let Some(v) = f
            .attributes
            .iter()
            .find(|a| a.ty == types::VOLUME_INFORMATION)
            .and_then(|a| a.resident())
        {
            self.version = (
                v.get(8).copied().unwrap_or(0),
                v.get(9).copied().unwrap_or(0),
            );
            self.dirty = disk_io::bytes::le_u16(v, 10).unwrap_or(0) & 1 != 0;
        }
        Ok(())
    }

    fn read_upcase(&mut self) -> Result<()> {
        let result = self.file(records::UPCASE).and_then(|f| {
            let s = f
                .stream(types::DATA, &[])?
                .ok_or_else(|| Error::corrupt("$UpCase has no $DATA", 0))?;
            if s.size != 131_072 {
                return Err(Error::corrupt(
                    alloc::format!("$UpCase of {} bytes (expected 131072)", s.size),
                    s.position,
                ));
            }
            self.read_value(&s)
        });
        match result {
            Ok(v) => {
                let table = utf16(&v);
                // A table that does not even map a-z to A-Z is damaged:
                // lookups would miss, so compare as ASCII (and scan).
                let sane = (u16::from(b'a')..=u16::from(b'z'))
                    .all(|c| table.get(usize::from(c)) == Some(&(c - 32)))
                    && table.get(usize::from(b'A')) == Some(&u16::from(b'A'));
                if sane {
                    self.upcase = table;
                } else {
                    self.warnings.push(alloc::string::ToString::to_string(
                        "$UpCase does not map a-z to A-Z; names compare as ASCII",
                    ));
                }
            }
            Err(e) => self.warnings.push(alloc::format!(
                "$UpCase cannot be read, names compare as ASCII: {e}"
            )),
        }
        Ok(())
    }

    /// Upper-cases one UTF-16 unit as `$UpCase` says.
    pub fn upcase(&self, c: u16) -> u16 {
        match self.upcase.get(usize::from(c)) {
            Some(u) => *u,
            None if (u16::from(b'a')..=u16::from(b'z')).contains(&c) => c - 32,
            None => c,
        }
    }

    /// True when `a` and `b` are equal ignoring case (by `$UpCase`).
    pub fn names_equal_ignore_case(&self, a: &[u16], b: &[u16]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x == y || self.upcase(*x) == self.upcase(*y))
    }

    /// The entries of directory `dir`'s `$I30` index in index order, every
    /// name including DOS short names, each with the record it points at.
    pub fn read_dir(&self, dir: &File) -> Result<Vec<(u64, FileName)>> {
        let mut out = Vec::new();
        self.walk_dir(dir, &mut |e| {
            if out.len() >= MAX_DIR_ENTRIES {
                return Err(Error::corrupt(
                    alloc::format!(
                        "directory {} has more than {MAX_DIR_ENTRIES} entries",
                        dir.number
                    ),
                    e.position,
                ));
            }
            let name = FileName::parse(&e.key, e.position)?;
            out.push((e.record, name));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Visits the raw `$I30` entries of directory `dir` in order.
    pub fn walk_dir(
        &self,
        dir: &File,
        visit: &mut dyn FnMut(IndexEntry) -> Result<bool>,
    ) -> Result<()> {
        self.with_dir_index(dir, |root, at, blocks| walk_index(root, at, blocks, visit))
    }

    /// Opens the `$I30` index of directory `dir` (its root and, when it
    /// has one, its allocation's index buffers) and runs `f` over them;
    /// errors name the directory.
    fn with_dir_index<T, F>(&self, dir: &File, f: F) -> Result<T>
    where
        F: FnOnce(&[u8], u64, Option<&dyn IndexBlocks>) -> Result<T>,
    {
        let i30: Vec<u16> = "$I30".encode_utf16().collect();
        let root = dir.stream(types::INDEX_ROOT, &i30)?.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                alloc::format!("file {} is not a directory", dir.number),
            )
        })?;
        let StreamData::Resident(root_value) = &root.data else {
            return Err(Error::corrupt("non-resident $INDEX_ROOT", root.position));
        };
        let alloc_stream = dir.stream(types::INDEX_ALLOCATION, &i30)?;
        let index_record_size =
            crate::index::IndexRoot::parse(root_value, root.position)?.index_record_size;
        let blocks = alloc_stream.map(|s| Blocks {
            vol: self,
            stream: s,
            size: index_record_size,
        });
        f(
            root_value,
            root.position,
            blocks.as_ref().map(|b| b as &dyn IndexBlocks),
        )
        .map_err(|e| e.context(alloc::format!("directory index of file {}", dir.number)))
    }

    /// Finds `name` in directory `dir`: an exact match first, else one
    /// equal ignoring case (by `$UpCase`); DOS short names match too. With
    /// `$UpCase` the search descends the B+ tree; without it, it scans.
    pub fn find(&self, dir: &File, name: &str) -> Result<Option<(u64, FileName)>> {
        let want: Vec<u16> = name.encode_utf16().collect();
        if self.upcase.len() == 65536 {
            for exact in [true, false] {
                if let Some(hit) = self.search_dir(dir, &want, exact)? {
                    return Ok(Some(hit));
                }
            }
            return Ok(None);
        }
        let mut folded = None;
        let mut exact = None;
        self.walk_dir(dir, &mut |e| {
            let n = FileName::parse(&e.key, e.position)?;
            if n.name == want {
                exact = Some((e.record, n));
                return Ok(false);
            }
            if folded.is_none() && self.names_equal_ignore_case(&n.name, &want) {
                folded = Some((e.record, n));
            }
            Ok(true)
        })?;
        Ok(exact.or(folded))
    }

    /// Orders `a` against `b` as the `$I30` collation does: upper-cased
    /// first, then (when `exact`) code unit by code unit.
    fn collate(&self, a: &[u16], b: &[u16], exact: bool) -> core::cmp::Ordering {
        let folded = a
            .iter()
            .map(|c| self.upcase(*c))
            .cmp(b.iter().map(|c| self.upcase(*c)));
        if exact {
            folded.then_with(|| a.cmp(b))
        } else {
            folded
        }
    }

    fn search_dir(&self, dir: &File, want: &[u16], exact: bool) -> Result<Option<(u64, FileName)>> {
        let found = self.with_dir_index(dir, |root, at, blocks| {
            crate::index::search_index(root, at, blocks, &mut |e| {
                let n = FileName::parse(&e.key, e.position)?;
                Ok(self.collate(want, &n.name, exact))
            })
        })?;
        match found {
            Some(e) => Ok(Some((e.record, FileName::parse(&e.key, e.position)?))),
            None => Ok(None),
        }
    }

    /// Where a symbolic link or junction points, for reparse points of
    /// those kinds and for ntfs-3g's Interix symbolic links (system files
    /// whose data starts with `IntxLNK\1`).
    pub fn link_target(&self, file: &File) -> Result<Option<LinkTarget>> {
        if let Some(s) = file.stream(types::REPARSE_POINT, &[])? {
            let v = self.read_value(&s)?;
            return Ok(match parse_reparse(&v, s.position)? {
                Reparse::Symlink { target, .. } => Some(LinkTarget::Symlink(target)),
                Reparse::Junction { target } => Some(LinkTarget::Junction(target)),
                Reparse::Other { .. } => None,
            });
        }
        let system = file
            .standard_information()?
            .is_some_and(|s| s.attributes & dos::SYSTEM != 0);
        let size = file.data_size();
        if system && !file.is_directory() && (10..=8192).contains(&size) && size.is_multiple_of(2) {
            if let Some(s) = file.stream(types::DATA, &[])? {
                if s.flags.encrypted() {
                    return Ok(None);
                }
                let v = self.read_value(&s)?;
                if let Some(rest) = v.strip_prefix(b"IntxLNK\x01") {
                    return Ok(Some(LinkTarget::Symlink(utf16_string(&utf16(rest)))));
                }
            }
        }
        Ok(None)
    }

    /// The security descriptor of `file`: looked up in `$Secure` by the
    /// security id of its `$STANDARD_INFORMATION` (NTFS 3.x), else read
    /// from a `$SECURITY_DESCRIPTOR` attribute of the file (older
    /// volumes). `None` when the file has neither.
    pub fn security_descriptor(&self, file: &File) -> Result<Option<SecurityDescriptor>> {
        let id = file.standard_information()?.and_then(|s| s.security_id);
        if let Some(id) = id.filter(|i| *i != 0) {
            let found = self.security_descriptor_by_id(id).map_err(|e| {
                e.context(alloc::format!("security id {id} of file {}", file.number))
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        match file.stream(types::SECURITY_DESCRIPTOR, &[])? {
            Some(s) => {
                let raw = self.read_value(&s)?;
                SecurityDescriptor::parse(raw, s.position)
                    .map(Some)
                    .map_err(|e| {
                        e.context(alloc::format!(
                            "$SECURITY_DESCRIPTOR of file {}",
                            file.number
                        ))
                    })
            }
            None => Ok(None),
        }
    }

    /// The security descriptor stored in `$Secure` under `id`: its `$SII`
    /// index entry gives the place in the `$SDS` stream, whose entry header
    /// must repeat the id. `None` when `$SII` has no such id (or the
    /// volume has no `$Secure` index).
    pub fn security_descriptor_by_id(&self, id: u32) -> Result<Option<SecurityDescriptor>> {
        let secure = self
            .file(records::SECURE)
            .map_err(|e| e.context("$Secure"))?;
        let sii: Vec<u16> = "$SII".encode_utf16().collect();
        let Some(root) = secure.stream(types::INDEX_ROOT, &sii)? else {
            return Ok(None);
        };
        let StreamData::Resident(root_value) = &root.data else {
            return Err(Error::corrupt(
                "non-resident $Secure:$SII $INDEX_ROOT",
                root.position,
            ));
        };
        let index_record_size =
            crate::index::IndexRoot::parse(root_value, root.position)?.index_record_size;
        let blocks = secure
            .stream(types::INDEX_ALLOCATION, &sii)?
            .map(|s| Blocks {
                vol: self,
                stream: s,
                size: index_record_size,
            });
        let found = crate::index::search_index(
            root_value,
            root.position,
            blocks.as_ref().map(|b| b as &dyn IndexBlocks),
            &mut |e| {
                let key = disk_io::bytes::le_u32(&e.key, 0).ok_or_else(|| {
                    Error::corrupt(
                        alloc::format!("$SII key of {} bytes (expected 4)", e.key.len()),
                        e.position,
                    )
                })?;
                Ok(id.cmp(&key))
            },
        )
        .map_err(|e| e.context("$Secure:$SII index"))?;
        let Some(entry) = found else {
            return Ok(None);
        };
        let loc = SdsLocation::parse(&entry.data, entry.position)?;
        if loc.security_id != id {
            return Err(Error::corrupt(
                alloc::format!(
                    "$SII entry for security id {id} names id {}",
                    loc.security_id
                ),
                entry.position,
            ));
        }
        let sds_name: Vec<u16> = "$SDS".encode_utf16().collect();
        let sds = secure.stream(types::DATA, &sds_name)?.ok_or_else(|| {
            Error::corrupt("$Secure has no $SDS stream", secure_position(&secure))
        })?;
        let at = self.byte_position(&sds, loc.offset).unwrap_or(sds.position);
        let mut header = [0u8; SDS_HEADER];
        if loc.offset.saturating_add(u64::from(loc.length)) > sds.size
            || self.read_stream(&sds, loc.offset, &mut header)? != SDS_HEADER
        {
            return Err(Error::corrupt(
                alloc::format!(
                    "$SDS entry of security id {id} at offset {} ({} bytes) is past the end of $SDS ({} bytes)",
                    loc.offset,
                    loc.length,
                    sds.size
                ),
                entry.position,
            ));
        }
        let stored = SdsLocation::parse(&header, at)?;
        if stored.security_id != id || stored.offset != loc.offset || stored.length != loc.length {
            return Err(Error::corrupt(
                alloc::format!(
                    "$SDS entry at offset {} is security id {} at {} ({} bytes), $SII says id {id} at {} ({} bytes)",
                    loc.offset,
                    stored.security_id,
                    stored.offset,
                    stored.length,
                    loc.offset,
                    loc.length
                ),
                at,
            ));
        }
        let mut raw = alloc::vec![0u8; loc.length as usize - SDS_HEADER];
        self.read_stream(&sds, loc.offset + SDS_HEADER as u64, &mut raw)?;
        SecurityDescriptor::parse(raw, at + SDS_HEADER as u64)
            .map(Some)
            .map_err(|e| e.context(alloc::format!("$SDS entry of security id {id}")))
    }

    /// Byte ranges of the volume a copy must keep, sorted and merged:
    /// every cluster `$Bitmap` marks used, plus the backup boot sector in
    /// the sector after the last one the boot sector counts (the
    /// partition's last sector as mkntfs and Windows place it), which lies
    /// outside every cluster and which partclone does not copy.
    pub fn used_byte_ranges(&self) -> Result<Vec<Range<u64>>> {
        let cs = u64::from(self.boot.cluster_size);
        let mut out: Vec<Range<u64>> = Vec::new();
        for r in self.used_clusters()? {
            let (Some(start), Some(end)) = (r.start.checked_mul(cs), r.end.checked_mul(cs)) else {
                continue;
            };
            match out.last_mut() {
                Some(prev) if prev.end >= start => prev.end = prev.end.max(end),
                _ => out.push(start..end),
            }
        }
        let backup = self.boot.volume_size();
        let end = backup.saturating_add(u64::from(self.boot.sector_size));
        if end <= self.disk.size() {
            match out.last_mut() {
                Some(prev) if prev.end >= backup => prev.end = prev.end.max(end),
                _ => out.push(backup..end),
            }
        }
        Ok(out)
    }

    /// The used clusters as `$Bitmap` marks them, as sorted, merged ranges
    /// of cluster numbers.
    pub fn used_clusters(&self) -> Result<Vec<Range<u64>>> {
        let f = self
            .file(records::BITMAP)
            .map_err(|e| e.context("$Bitmap"))?;
        let s = f
            .stream(types::DATA, &[])?
            .ok_or_else(|| Error::corrupt("$Bitmap has no $DATA", 0))?;
        let clusters = self.boot.total_clusters();
        let needed = clusters.div_ceil(8);
        if s.size < needed {
            return Err(Error::corrupt(
                alloc::format!(
                    "$Bitmap of {} bytes for {clusters} clusters (expected >= {needed})",
                    s.size
                ),
                s.position,
            ));
        }
        let mut out: Vec<Range<u64>> = Vec::new();
        let mut chunk = alloc::vec![0u8; 64 << 10];
        let mut byte = 0u64;
        while byte < needed {
            let n = self.read_stream(&s, byte, &mut chunk)?;
            if n == 0 {
                break;
            }
            for (i, b) in chunk.iter().take(n).enumerate() {
                if *b == 0 {
                    continue;
                }
                let c0 = (byte + i as u64) * 8;
                if *b == 0xff && c0 + 8 <= clusters {
                    match out.last_mut() {
                        Some(r) if r.end == c0 => r.end = c0 + 8,
                        _ => out.push(c0..c0 + 8),
                    }
                    continue;
                }
                for bit in 0..8u64 {
                    let c = (byte + i as u64) * 8 + bit;
                    if c >= clusters || b & (1 << bit) == 0 {
                        continue;
                    }
                    match out.last_mut() {
                        Some(r) if r.end == c => r.end = c + 1,
                        _ => out.push(c..c + 1),
                    }
                }
            }
            byte += n as u64;
        }
        Ok(out)
    }
}

struct Blocks<'a, D: ReadAt> {
    vol: &'a NtfsVolume<D>,
    stream: Stream,
    size: u32,
}

impl<D: ReadAt> IndexBlocks for Blocks<'_, D> {
    fn block(&self, vcn: u64) -> Result<(Vec<u8>, u64)> {
        let cs = self.vol.boot.cluster_size;
        // VCNs count clusters, or 512-byte blocks when a cluster is larger
        // than an index record.
        let unit = if self.size >= cs { u64::from(cs) } else { 512 };
        let offset = vcn
            .checked_mul(unit)
            .filter(|o| o.saturating_add(u64::from(self.size)) <= self.stream.size)
            .ok_or_else(|| {
                Error::corrupt(
                    alloc::format!(
                        "index child VCN {vcn} is past the end of $INDEX_ALLOCATION ({} bytes)",
                        self.stream.size
                    ),
                    self.stream.position,
                )
            })?;
        let pos = self.vol.byte_position(&self.stream, offset)?;
        let mut buf = alloc::vec![0u8; self.size as usize];
        self.vol.read_stream(&self.stream, offset, &mut buf)?;
        Ok((buf, pos))
    }
}

impl Value {
    /// True for a resident value.
    pub fn is_resident(&self) -> bool {
        matches!(self, Value::Resident(_))
    }
}

fn secure_position(file: &File) -> u64 {
    file.attributes.first().map_or(0, |a| a.position)
}
