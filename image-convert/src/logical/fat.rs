//! FAT12/16/32 in logical mode, through `fs_fat::FatWriter`.

use std::io::Read;

use disk_io::{Error, Result};
use fs_fat::{Attributes, FatType, FatWriter, FileTimes, FormatOptions, Node, Timestamp};

use super::{Builder, Capacity, FormatSpec, FsWriter, SharedWriteDisk};
use crate::inspect::FileSystem;
use crate::volume::Entry;

/// Bytes read from the source per write.
const CHUNK: usize = 1 << 20;

/// Makes FAT volumes.
pub(super) struct FatFsWriter;

fn fat_type(name: &str) -> Option<FatType> {
    match name {
        "fat12" => Some(FatType::Fat12),
        "fat16" => Some(FatType::Fat16),
        "fat32" => Some(FatType::Fat32),
        _ => None,
    }
}

/// The format options closest to the source: its type and cluster size
/// when the new size allows them, else its type, else the defaults for
/// the size. Label, serial and the partition's first sector always.
fn options(spec: &FormatSpec) -> Result<(FormatOptions, fs_fat::Layout)> {
    let id = &spec.identity;
    let hidden = u32::try_from(spec.first_sector).map_err(|_| {
        Error::unsupported(format!(
            "a FAT volume starting at sector {} (past what its boot sector records)",
            spec.first_sector
        ))
    })?;
    let base = FormatOptions {
        hidden_sectors: hidden,
        label: id.label.clone().filter(|l| !l.is_empty()),
        volume_id: id.serial.and_then(|s| u32::try_from(s).ok()),
        ..FormatOptions::default()
    };
    let ty = fat_type(id.fs_name);
    let spc = id.cluster_size.and_then(|c| u32::try_from(c / 512).ok());
    let tries = [
        FormatOptions {
            fat_type: ty,
            sectors_per_cluster: spc,
            ..base.clone()
        },
        FormatOptions {
            fat_type: ty,
            ..base.clone()
        },
        base.clone(),
    ];
    let mut last = None;
    for o in tries {
        match fs_fat::format::layout(spec.size, &o) {
            Ok(l) => return Ok((o, l)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::unsupported("no FAT layout fits")))
}

impl FsWriter for FatFsWriter {
    fn handles(&self, fs: FileSystem) -> bool {
        matches!(fs, FileSystem::Fat(_))
    }

    fn capacity(&self, spec: &FormatSpec) -> Result<Capacity> {
        let (_, l) = options(spec)?;
        let unit = u64::from(l.sectors_per_cluster) * u64::from(l.bytes_per_sector);
        // FAT32's root directory takes a cluster of the data area.
        let clusters =
            u64::from(l.cluster_count).saturating_sub(u64::from(l.fat_type == FatType::Fat32));
        Ok(Capacity {
            bytes: clusters * unit,
            unit,
        })
    }

    fn format(&self, disk: SharedWriteDisk, spec: &FormatSpec) -> Result<Box<dyn Builder>> {
        let (o, _) = options(spec)?;
        let writer = FatWriter::format(disk, &o)?;
        let root = writer.root();
        Ok(Box::new(FatBuilder {
            writer,
            nodes: vec![root],
        }))
    }
}

/// A FAT volume being filled; handles index `nodes`.
struct FatBuilder {
    writer: FatWriter<SharedWriteDisk>,
    nodes: Vec<Node>,
}

impl FatBuilder {
    fn node(&self, handle: u64) -> Result<Node> {
        usize::try_from(handle)
            .ok()
            .and_then(|i| self.nodes.get(i).copied())
            .ok_or_else(|| Error::invalid_input(format!("no FAT node {handle}")))
    }

    fn add(&mut self, node: Node) -> u64 {
        self.nodes.push(node);
        self.nodes.len() as u64 - 1
    }
}

fn times(entry: &Entry) -> FileTimes {
    FileTimes {
        modified: entry.mtime.map(|seconds| Timestamp {
            seconds,
            nanoseconds: 0,
        }),
        ..FileTimes::default()
    }
}

fn attributes(entry: &Entry) -> Attributes {
    entry
        .attrs
        .iter()
        .fold(Attributes::empty(), |a, name| match *name {
            "readonly" => a | Attributes::READ_ONLY,
            "hidden" => a | Attributes::HIDDEN,
            "system" => a | Attributes::SYSTEM,
            "archive" => a | Attributes::ARCHIVE,
            _ => a,
        })
}

impl Builder for FatBuilder {
    fn root(&self) -> u64 {
        0
    }

    fn mkdir(&mut self, parent: u64, entry: &Entry) -> Result<u64> {
        let p = self.node(parent)?;
        let n = self
            .writer
            .create_dir(p, &entry.name, &times(entry), attributes(entry))?;
        Ok(self.add(n))
    }

    fn file(&mut self, parent: u64, entry: &Entry, data: &mut dyn Read) -> Result<u64> {
        let p = self.node(parent)?;
        let n = self.writer.create_file(
            p,
            &entry.name,
            &times(entry),
            attributes(entry),
            entry.size,
        )?;
        let mut buf = vec![0u8; CHUNK.min(entry.size as usize).max(1)];
        let mut at = 0u64;
        while at < entry.size {
            let want = (entry.size - at).min(buf.len() as u64) as usize;
            let chunk = buf.get_mut(..want).unwrap_or(&mut []);
            data.read_exact(chunk)
                .map_err(|e| Error::from(e).context(format!("reading '{}' at {at}", entry.name)))?;
            self.writer.write(n, at, chunk)?;
            at += want as u64;
        }
        // Writing stamps the file; give it the source's times again.
        self.writer.set_times(n, &times(entry))?;
        Ok(self.add(n))
    }

    fn finish_dir(&mut self, dir: u64, entry: &Entry) -> Result<()> {
        let n = self.node(dir)?;
        if n.is_root() {
            return Ok(());
        }
        self.writer.set_times(n, &times(entry))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.writer.flush()
    }
}
