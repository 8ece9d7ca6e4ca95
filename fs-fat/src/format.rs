//! Formatting a volume, as `mkfs.fat` and Windows do.
//!
//! The FAT type and cluster size come from the volume size by the tables
//! of Microsoft's FAT specification (section 3.5 and its appendix):
//! FAT12 below 4.1 MB (and for the standard floppy sizes, with their
//! classic geometry, media byte and root size), FAT16 up to 512 MiB, FAT32
//! above; any of them can be forced. Like `mkfs.fat`, the reserved area
//! (1 sector, 32 on FAT32), each FAT and the fixed root directory are
//! rounded up to whole clusters so that the data area starts on a cluster
//! boundary (except on floppies and volumes under 8 MiB, which stay
//! compact). FAT32 gets its FSInfo sector (sector 1) and the backup boot
//! sector and FSInfo (sectors 6 and 7). A label goes into the boot sector
//! and, as Windows shows it, into a volume-label entry of the root.

use alloc::format;
use alloc::string::String;
use alloc::vec;

use disk_io::{Error, Result, WriteAt};

use crate::FatType;
use crate::boot_sector::{BootSector, MAX_FAT32_CLUSTERS, MIN_FAT16_CLUSTERS, MIN_FAT32_CLUSTERS};
use crate::dir_entry::{Attributes, ShortEntry, Timestamp, unix_to_dos};

/// How to format a volume; [`Default`] chooses everything from the size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatOptions {
    /// The FAT type; `None`: by size (see the module documentation).
    pub fat_type: Option<FatType>,
    /// Bytes per sector: 512 (default), 1024, 2048 or 4096.
    pub bytes_per_sector: u32,
    /// Sectors per cluster (a power of two, at most 32 KiB per cluster
    /// unless the sector is bigger); `None`: by size.
    pub sectors_per_cluster: Option<u32>,
    /// Sectors of the volume; `None`: all of the disk.
    pub total_sectors: Option<u64>,
    /// Reserved sectors before the first FAT; `None`: 1, or 32 on FAT32
    /// (rounded up to a cluster when aligning).
    pub reserved_sectors: Option<u32>,
    /// Number of FATs (default 2).
    pub fats: u32,
    /// Entries of the FAT12/16 root directory; `None`: 512 (224 or 112 on
    /// floppies), rounded up to fill whole clusters when aligning.
    pub root_entries: Option<u32>,
    /// Media descriptor; `None`: 0xF8, or the floppy's.
    pub media: Option<u8>,
    /// Sectors before the volume on its disk (`BPB_HiddSec`), the start
    /// of its partition.
    pub hidden_sectors: u32,
    /// Volume label: up to 11 characters, stored uppercase; `None`: none
    /// (`NO NAME` in the boot sector).
    pub label: Option<String>,
    /// Volume serial number; `None`: derived from `time` and the size.
    pub volume_id: Option<u32>,
    /// Round the reserved area, FATs and root to whole clusters (the
    /// default, as `mkfs.fat` does; its `-a` turns it off).
    pub align: bool,
    /// Time stamped on the label entry (and seed of the volume id).
    pub time: Timestamp,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            fat_type: None,
            bytes_per_sector: 512,
            sectors_per_cluster: None,
            total_sectors: None,
            reserved_sectors: None,
            fats: 2,
            root_entries: None,
            media: None,
            hidden_sectors: 0,
            label: None,
            volume_id: None,
            align: true,
            time: Timestamp {
                seconds: crate::dir_entry::DOS_EPOCH,
                nanoseconds: 0,
            },
        }
    }
}

/// The geometry [`format()`] chose, before anything is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// FAT12, FAT16 or FAT32.
    pub fat_type: FatType,
    /// Bytes per sector.
    pub bytes_per_sector: u32,
    /// Sectors per cluster.
    pub sectors_per_cluster: u32,
    /// Sectors of the volume.
    pub total_sectors: u32,
    /// Reserved sectors.
    pub reserved_sectors: u32,
    /// Number of FATs.
    pub fats: u32,
    /// Sectors of each FAT.
    pub fat_sectors: u32,
    /// Entries of the fixed root directory (0 on FAT32).
    pub root_entries: u32,
    /// Data clusters.
    pub cluster_count: u32,
    /// Media descriptor.
    pub media: u8,
    /// Sectors per track and heads written in the BPB.
    pub geometry: (u16, u16),
    /// BIOS drive number (0x00 floppy, 0x80 hard disk).
    pub drive: u8,
}

/// Floppy formats: size in KiB, sectors per cluster, root entries, media,
/// sectors per track, heads (the values of `mkfs.fat`).
const FLOPPIES: [(u64, u32, u32, u8, u16, u16); 8] = [
    (160, 1, 64, 0xfe, 8, 1),
    (180, 1, 64, 0xfc, 9, 1),
    (320, 2, 112, 0xff, 8, 2),
    (360, 2, 112, 0xfd, 9, 2),
    (720, 2, 112, 0xf9, 9, 2),
    (1200, 1, 224, 0xf9, 15, 2),
    (1440, 1, 224, 0xf0, 18, 2),
    (2880, 2, 224, 0xf0, 36, 2),
];

/// Microsoft's FAT16 table: up to this many 512-byte sectors, this many
/// sectors per cluster.
const FAT16_TABLE: [(u64, u32); 7] = [
    (32_680, 2),
    (262_144, 4),
    (524_288, 8),
    (1_048_576, 16),
    (2_097_152, 32),
    (4_194_304, 64),
    (u64::MAX, 128),
];
/// Microsoft's FAT32 table.
const FAT32_TABLE: [(u64, u32); 5] = [
    (532_480, 1),
    (16_777_216, 8),
    (33_554_432, 16),
    (67_108_864, 32),
    (u64::MAX, 64),
];
/// FAT12 below this many 512-byte sectors (4.1 MB), as the specification's
/// FAT16 table refuses smaller volumes.
const FAT12_BELOW: u64 = 8400;
/// FAT32 above this many bytes (512 MiB), as `mkfs.fat` and Windows.
const FAT32_ABOVE: u64 = 512 << 20;
/// Volumes smaller than this stay compact (no cluster alignment).
const ALIGN_FROM: u64 = 8 << 20;

fn invalid(msg: String) -> Error {
    Error::invalid_input(msg)
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to.max(1)) * to.max(1)
}

/// Chooses the layout of a volume of `disk_bytes` bytes for `opts`.
pub fn layout(disk_bytes: u64, opts: &FormatOptions) -> Result<Layout> {
    let bps = opts.bytes_per_sector;
    if !matches!(bps, 512 | 1024 | 2048 | 4096) {
        return Err(invalid(format!(
            "FAT format: {bps} bytes per sector, not 512, 1024, 2048 or 4096"
        )));
    }
    let bps64 = u64::from(bps);
    let total = opts.total_sectors.unwrap_or(disk_bytes / bps64);
    if total.saturating_mul(bps64) > disk_bytes {
        return Err(invalid(format!(
            "FAT format: {total} sectors of {bps} bytes do not fit a disk of {disk_bytes} bytes"
        )));
    }
    let bytes = total * bps64;
    let sectors512 = bytes / 512;
    let floppy = FLOPPIES
        .iter()
        .find(|f| bps == 512 && f.0 * 1024 == bytes)
        .filter(|_| matches!(opts.fat_type, None | Some(FatType::Fat12)));
    let fat_type = opts.fat_type.unwrap_or(if sectors512 < FAT12_BELOW {
        FatType::Fat12
    } else if bytes <= FAT32_ABOVE {
        FatType::Fat16
    } else {
        FatType::Fat32
    });
    let fats = opts.fats;
    if !(1..=4).contains(&fats) {
        return Err(invalid(format!("FAT format: {fats} FATs, not 1 to 4")));
    }
    let align = opts.align && floppy.is_none() && bytes >= ALIGN_FROM;
    let try_spc = |spc: u32| -> Result<Layout> {
        if !spc.is_power_of_two() || spc > 128 {
            return Err(invalid(format!(
                "FAT format: {spc} sectors per cluster, not a power of two from 1 to 128"
            )));
        }
        let spc64 = u64::from(spc);
        let mut reserved = u64::from(opts.reserved_sectors.unwrap_or(match fat_type {
            FatType::Fat32 => 32,
            _ => 1,
        }));
        if fat_type == FatType::Fat32 && reserved < 8 {
            return Err(invalid(format!(
                "FAT format: {reserved} reserved sectors, FAT32 needs 8 (boot sector, FSInfo and their backups at 6 and 7)"
            )));
        }
        if reserved == 0 || reserved > 0xffff {
            return Err(invalid(format!("FAT format: {reserved} reserved sectors")));
        }
        if align {
            reserved = round_up(reserved, spc64);
        }
        let mut root_entries = match fat_type {
            FatType::Fat32 => 0,
            _ => u64::from(opts.root_entries.unwrap_or(floppy.map_or(512, |f| f.2))),
        };
        let per_sector = bps64 / 32;
        let mut root_sectors = root_entries.div_ceil(per_sector);
        if align {
            root_sectors = round_up(root_sectors, spc64);
            root_entries = root_sectors * per_sector;
        }
        if fat_type != FatType::Fat32 && !(1..=0xffff).contains(&root_entries) {
            return Err(invalid(format!(
                "FAT format: {root_entries} root directory entries, not 1 to 65535"
            )));
        }
        let meta = reserved + root_sectors;
        let avail = total.saturating_sub(meta);
        // The smallest FAT that holds an entry for every cluster left
        // beside it (the need shrinks as the FAT grows: a binary search).
        let entry_bytes = |clusters: u64| match fat_type {
            FatType::Fat12 => ((clusters + 2) * 3).div_ceil(2),
            FatType::Fat16 => (clusters + 2) * 2,
            FatType::Fat32 => (clusters + 2) * 4,
        };
        let need = |fs: u64| {
            let clusters = avail.saturating_sub(u64::from(fats) * fs) / spc64;
            entry_bytes(clusters).div_ceil(bps64)
        };
        let (mut lo, mut hi) = (1u64, need(0).max(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if need(mid) <= mid {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let mut fat_sectors = lo;
        if align {
            fat_sectors = round_up(fat_sectors, spc64);
        }
        let data = total.saturating_sub(meta + u64::from(fats) * fat_sectors);
        let clusters = data / spc64;
        let (lo, hi) = match fat_type {
            FatType::Fat12 => (1, u64::from(MIN_FAT16_CLUSTERS) - 1),
            FatType::Fat16 => (
                u64::from(MIN_FAT16_CLUSTERS),
                u64::from(MIN_FAT32_CLUSTERS) - 1,
            ),
            FatType::Fat32 => (u64::from(MIN_FAT32_CLUSTERS), u64::from(MAX_FAT32_CLUSTERS)),
        };
        if !(lo..=hi).contains(&clusters) {
            return Err(invalid(format!(
                "FAT format: {total} sectors with {spc} sectors per cluster give {clusters} clusters, outside {lo}..={hi} for {}",
                fat_type.name()
            )));
        }
        let total32 = u32::try_from(total).map_err(|_| {
            invalid(format!(
                "FAT format: {total} sectors, more than a FAT volume can count"
            ))
        })?;
        let small = bytes < (512 << 20);
        Ok(Layout {
            fat_type,
            bytes_per_sector: bps,
            sectors_per_cluster: spc,
            total_sectors: total32,
            reserved_sectors: reserved as u32,
            fats,
            fat_sectors: fat_sectors as u32,
            root_entries: root_entries as u32,
            cluster_count: clusters as u32,
            media: opts.media.unwrap_or(floppy.map_or(0xf8, |f| f.3)),
            geometry: floppy.map_or(if small { (32, 64) } else { (63, 255) }, |f| (f.4, f.5)),
            drive: if floppy.is_some() { 0 } else { 0x80 },
        })
    };
    if let Some(spc) = opts.sectors_per_cluster {
        return try_spc(spc);
    }
    if let Some(f) = floppy {
        return try_spc(f.1);
    }
    // Cluster bytes from the tables (in 512-byte sectors), then in this
    // volume's sectors; at least one sector.
    let from_table = |table: &[(u64, u32)]| {
        let spc512 = table
            .iter()
            .find(|row| sectors512 <= row.0)
            .map_or(64, |row| row.1);
        (spc512 * 512 / bps).max(1)
    };
    match fat_type {
        FatType::Fat16 => try_spc(from_table(&FAT16_TABLE)),
        FatType::Fat32 => try_spc(from_table(&FAT32_TABLE)),
        FatType::Fat12 => {
            // The smallest cluster that keeps the count under FAT16's.
            let mut spc = 1;
            loop {
                match try_spc(spc) {
                    Err(e) if spc < 128 && e.message().contains("clusters, outside") => spc *= 2,
                    other => return other,
                }
            }
        }
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// The 11 bytes of a label: uppercase ASCII, space padded, checked as
/// `mkfs.fat` and Windows check it.
pub fn label_bytes(label: &str) -> Result<[u8; 11]> {
    let mut out = [b' '; 11];
    if label.is_empty() || label.len() > 11 || !label.is_ascii() {
        return Err(invalid(format!(
            "FAT volume label '{label}': 1 to 11 ASCII characters"
        )));
    }
    for (i, b) in label.bytes().enumerate() {
        let b = b.to_ascii_uppercase();
        if b < 0x20 || b"\"*+,./:;<=>?[\\]|\x7f".contains(&b) {
            return Err(invalid(format!(
                "FAT volume label '{label}': character {:?} is not allowed",
                char::from(b)
            )));
        }
        put(&mut out, i, &[b]);
    }
    if out.first() == Some(&b' ') {
        return Err(invalid(format!(
            "FAT volume label '{label}' starts with a space"
        )));
    }
    Ok(out)
}

/// Boot code of a volume that is not bootable: `int 18h` (the BIOS tries
/// the next device), then halt.
const BOOT_CODE: [u8; 5] = [0xcd, 0x18, 0xf4, 0xeb, 0xfd];

/// Writes an empty FAT volume on `disk` (from byte 0) and returns its
/// parsed boot sector. Nothing but the reserved area, the FATs, the root
/// directory (and on FAT32 its one cluster) is written; the data area is
/// left as it is.
pub fn format<D: WriteAt + ?Sized>(disk: &D, opts: &FormatOptions) -> Result<BootSector> {
    let l = layout(disk.size(), opts)?;
    let label = opts.label.as_deref().map(label_bytes).transpose()?;
    let bps = l.bytes_per_sector as usize;
    let fat32 = l.fat_type == FatType::Fat32;
    let serial = opts.volume_id.unwrap_or_else(|| {
        let mut h = (opts.time.seconds as u64) ^ u64::from(opts.time.nanoseconds) << 32;
        h ^= u64::from(l.total_sectors).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h = (h ^ h >> 29).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (h ^ h >> 32) as u32
    });

    // The boot sector.
    let mut bs = vec![0u8; bps];
    put(&mut bs, 0, &[0xeb, if fat32 { 0x58 } else { 0x3c }, 0x90]);
    put(&mut bs, 3, b"MSWIN4.1");
    put(&mut bs, 11, &(l.bytes_per_sector as u16).to_le_bytes());
    put(&mut bs, 13, &[l.sectors_per_cluster as u8]);
    put(&mut bs, 14, &(l.reserved_sectors as u16).to_le_bytes());
    put(&mut bs, 16, &[l.fats as u8]);
    put(&mut bs, 17, &(l.root_entries as u16).to_le_bytes());
    if l.total_sectors < 0x10000 && !fat32 {
        put(&mut bs, 19, &(l.total_sectors as u16).to_le_bytes());
    } else {
        put(&mut bs, 32, &l.total_sectors.to_le_bytes());
    }
    put(&mut bs, 21, &[l.media]);
    if !fat32 {
        put(&mut bs, 22, &(l.fat_sectors as u16).to_le_bytes());
    }
    put(&mut bs, 24, &l.geometry.0.to_le_bytes());
    put(&mut bs, 26, &l.geometry.1.to_le_bytes());
    put(&mut bs, 28, &opts.hidden_sectors.to_le_bytes());
    let ext = if fat32 {
        put(&mut bs, 36, &l.fat_sectors.to_le_bytes());
        put(&mut bs, 44, &2u32.to_le_bytes());
        put(&mut bs, 48, &1u16.to_le_bytes());
        put(&mut bs, 50, &6u16.to_le_bytes());
        64
    } else {
        36
    };
    put(&mut bs, ext, &[l.drive]);
    put(&mut bs, ext + 2, &[0x29]);
    put(&mut bs, ext + 3, &serial.to_le_bytes());
    put(&mut bs, ext + 7, label.as_ref().unwrap_or(b"NO NAME    "));
    let fs_type: &[u8; 8] = match l.fat_type {
        FatType::Fat12 => b"FAT12   ",
        FatType::Fat16 => b"FAT16   ",
        FatType::Fat32 => b"FAT32   ",
    };
    put(&mut bs, ext + 18, fs_type);
    put(&mut bs, ext + 26, &BOOT_CODE);
    put(&mut bs, 510, &[0x55, 0xaa]);
    let bs512: [u8; 512] = bs
        .get(..512)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| invalid(String::from("FAT format: boot sector")))?;
    let boot = BootSector::parse(&bs512)?;

    // Reserved area, FATs and the fixed root read as zeros first.
    let meta = boot.data_offset();
    disk.write_zeroes(0, meta)?;
    disk.write_at(0, &bs)?;

    let cluster_size = u64::from(boot.cluster_size());
    let free = l.cluster_count - u32::from(fat32);
    if fat32 {
        let mut info = vec![0u8; bps];
        put(&mut info, 0, &0x4161_5252u32.to_le_bytes());
        put(&mut info, 484, &0x6141_7272u32.to_le_bytes());
        put(&mut info, 488, &free.to_le_bytes());
        put(&mut info, 492, &3u32.to_le_bytes());
        put(&mut info, 508, &0xaa55_0000u32.to_le_bytes());
        disk.write_at(bps as u64, &info)?;
        disk.write_at(6 * bps as u64, &bs)?;
        disk.write_at(7 * bps as u64, &info)?;
    }

    // The first entries of every FAT: the media byte, end of chain, and
    // on FAT32 the root directory's one cluster.
    let head: alloc::vec::Vec<u8> = match l.fat_type {
        FatType::Fat12 => vec![l.media, 0xff, 0xff],
        FatType::Fat16 => vec![l.media, 0xff, 0xff, 0xff],
        FatType::Fat32 => {
            let mut v = vec![l.media, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0x0f];
            v.extend_from_slice(&0x0fff_fff8u32.to_le_bytes());
            v
        }
    };
    for n in 0..l.fats {
        disk.write_at(boot.fat_offset(n), &head)?;
    }

    // The root: zeroed, with the label entry.
    let root_at = if fat32 {
        let at = boot
            .cluster_offset(2)
            .ok_or_else(|| invalid(String::from("FAT format: no cluster 2")))?;
        disk.write_zeroes(at, cluster_size)?;
        at
    } else {
        boot.root_dir_offset()
    };
    if let Some(name) = label {
        let (date, time, _) = unix_to_dos(opts.time);
        let entry = ShortEntry {
            name,
            attributes: Attributes::VOLUME_ID,
            nt_flags: 0,
            create_time_tenth: 0,
            create_time: 0,
            create_date: 0,
            access_date: 0,
            cluster_high: 0,
            write_time: time,
            write_date: date,
            cluster_low: 0,
            size: 0,
        };
        disk.write_at(root_at, &entry.to_bytes())?;
    }
    disk.flush()?;
    Ok(boot)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lay(bytes: u64) -> Layout {
        layout(bytes, &FormatOptions::default()).unwrap()
    }

    #[test]
    fn types_and_clusters_follow_the_tables() {
        let f = lay(1_474_560);
        assert_eq!(
            (
                f.fat_type,
                f.sectors_per_cluster,
                f.root_entries,
                f.fat_sectors,
                f.media
            ),
            (FatType::Fat12, 1, 224, 9, 0xf0)
        );
        assert_eq!(f.cluster_count, 2847);
        let f = lay(64 << 20);
        assert_eq!(
            (f.fat_type, f.sectors_per_cluster, f.reserved_sectors),
            (FatType::Fat16, 4, 4)
        );
        let f = lay(300 << 20);
        assert_eq!((f.fat_type, f.sectors_per_cluster), (FatType::Fat16, 16));
        let f = lay(600 << 20);
        assert_eq!(
            (f.fat_type, f.sectors_per_cluster, f.reserved_sectors),
            (FatType::Fat32, 8, 32)
        );
        let f = lay(2 << 20);
        assert_eq!(f.fat_type, FatType::Fat12);
        let forced = FormatOptions {
            fat_type: Some(FatType::Fat32),
            ..FormatOptions::default()
        };
        let f = layout(40 << 20, &forced).unwrap();
        assert_eq!((f.fat_type, f.sectors_per_cluster), (FatType::Fat32, 1));
        assert!(layout(20 << 20, &forced).is_err());
    }

    #[test]
    fn labels() {
        assert_eq!(&label_bytes("My Vol").unwrap(), b"MY VOL     ");
        assert!(label_bytes("a.b").is_err());
        assert!(label_bytes("twelve chars").is_err());
        assert!(label_bytes("").is_err());
    }
}
