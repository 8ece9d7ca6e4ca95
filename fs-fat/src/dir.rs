//! Directories (specification section 6): the fixed root directory region
//! of FAT12/16, and cluster chains for the FAT32 root and every
//! subdirectory. A directory is read whole (at most 65,536 entries, 2 MiB,
//! the specification's limit) and turned into [`DirEntry`] values with
//! their long names resolved.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::{Error, ReadAt, Result};

use crate::FatType;
use crate::boot_sector::BootSector;
use crate::dir_entry::{Attributes, DirEntry, ENTRY_SIZE, Slot};
use crate::fat::Fat;
use crate::long_name::LongNameBuilder;

/// Most entries one directory may hold (specification section 6).
pub const MAX_DIR_ENTRIES: u64 = 65_536;
/// Most bytes of one directory.
pub const MAX_DIR_BYTES: u64 = MAX_DIR_ENTRIES * ENTRY_SIZE as u64;

/// Where a directory's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirLocation {
    /// The fixed root directory region of FAT12/16.
    FixedRoot,
    /// A chain of clusters starting at this one.
    Chain(u32),
}

impl DirLocation {
    /// The directory a first-cluster value names: 0 is the root, as in
    /// `..` entries.
    pub fn of_cluster(boot: &BootSector, cluster: u32) -> Self {
        match (cluster, boot.fat_type) {
            (0, FatType::Fat32) => DirLocation::Chain(boot.root_cluster),
            (0, _) => DirLocation::FixedRoot,
            (c, _) => DirLocation::Chain(c),
        }
    }
}

/// The byte ranges (offset, length) of a directory in the volume.
pub fn segments<D: ReadAt + ?Sized>(
    disk: &D,
    boot: &BootSector,
    fat: &Fat,
    location: DirLocation,
) -> Result<Vec<(u64, u64)>> {
    match location {
        DirLocation::FixedRoot => Ok(vec![(boot.root_dir_offset(), boot.root_dir_bytes())]),
        DirLocation::Chain(first) => {
            let cluster_size = u64::from(boot.cluster_size());
            let max_clusters = MAX_DIR_BYTES.div_ceil(cluster_size);
            let mut out = Vec::new();
            for cluster in fat.chain(disk, first) {
                let cluster = cluster.map_err(|e| e.context("directory cluster chain"))?;
                if out.len() as u64 >= max_clusters {
                    return Err(Error::corrupt(
                        format!(
                            "directory at cluster {first}: its chain is longer than {MAX_DIR_ENTRIES} entries"
                        ),
                        fat.entry_offset(cluster),
                    ));
                }
                let offset = boot.cluster_offset(cluster).ok_or_else(|| {
                    Error::corrupt(
                        format!("directory cluster {cluster} past the last cluster"),
                        fat.entry_offset(cluster),
                    )
                })?;
                out.push((offset, cluster_size));
            }
            Ok(out)
        }
    }
}

/// The entries of a directory and, for the root, its volume label.
pub struct Listing {
    /// Files and subdirectories, without `.`, `..` and the label.
    pub entries: Vec<DirEntry>,
    /// The label entry's text, when the directory has one.
    pub label: Option<String>,
}

/// Reads and decodes the directory at `location`.
pub fn read<D: ReadAt + ?Sized>(
    disk: &D,
    boot: &BootSector,
    fat: &Fat,
    location: DirLocation,
) -> Result<Listing> {
    let fat32 = boot.fat_type == FatType::Fat32;
    let mut listing = Listing {
        entries: Vec::new(),
        label: None,
    };
    let mut names = LongNameBuilder::new();
    let mut buf = Vec::new();
    'segments: for (offset, len) in segments(disk, boot, fat, location)? {
        let len = usize::try_from(len).map_err(|_| Error::invalid_input("directory too large"))?;
        buf.resize(len, 0);
        disk.read_at(offset, &mut buf)
            .map_err(|e| e.context(format!("directory block at offset {offset:#x}")))?;
        for (i, raw) in buf.chunks_exact(ENTRY_SIZE).enumerate() {
            let at = offset + (i * ENTRY_SIZE) as u64;
            let Some(slot) = Slot::parse(raw) else {
                break;
            };
            match slot {
                Slot::End => break 'segments,
                Slot::Deleted => names.reset(),
                Slot::LongName(piece) => names.push(&piece),
                Slot::Short(short) => {
                    let long = names.finish(short.checksum());
                    if short.attributes.contains(Attributes::VOLUME_ID) {
                        if short.is_volume_label() && listing.label.is_none() {
                            listing.label = Some(short.label());
                        }
                        continue;
                    }
                    if short.is_dot() {
                        continue;
                    }
                    let short_name = short.display_name();
                    let is_dir = short.attributes.contains(Attributes::DIRECTORY);
                    listing.entries.push(DirEntry {
                        has_long_name: long.is_some(),
                        name: long.unwrap_or_else(|| short_name.clone()),
                        short_name,
                        attributes: short.attributes,
                        first_cluster: short.first_cluster(fat32),
                        size: if is_dir { 0 } else { short.size },
                        created: short.created(),
                        modified: short.modified(),
                        accessed: short.accessed(),
                        offset: at,
                    });
                }
            }
        }
    }
    Ok(listing)
}
