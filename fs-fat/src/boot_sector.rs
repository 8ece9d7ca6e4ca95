//! The boot sector and its BIOS parameter block (BPB), the FAT32 FSInfo
//! sector and the backup boot sector, as Microsoft's FAT specification
//! ("FAT: General Overview of On-Disk Format", sections 3 to 5) lays them
//! out.
//!
//! Every field is checked against the ranges the specification allows; an
//! impossible value is an error naming the field, its byte offset in the
//! boot sector and the value found.

use alloc::format;
use alloc::string::String;

use disk_io::bytes::{le_u16, le_u32};
use disk_io::{Error, ReadAt, Result};

use crate::FatType;

/// Size of the boot sector as this crate reads it (the BPB and the
/// signature live in the first 512 bytes whatever the sector size).
pub const BOOT_SECTOR_SIZE: usize = 512;

// Common BPB fields (specification section 3.1).
const BYTS_PER_SEC: usize = 11;
const SEC_PER_CLUS: usize = 13;
const RSVD_SEC_CNT: usize = 14;
const NUM_FATS: usize = 16;
const ROOT_ENT_CNT: usize = 17;
const TOT_SEC16: usize = 19;
const MEDIA: usize = 21;
const FAT_SZ16: usize = 22;
const HIDD_SEC: usize = 28;
const TOT_SEC32: usize = 32;
// FAT12/16 extended BPB (section 3.2).
const BS16_BOOT_SIG: usize = 38;
const BS16_VOL_ID: usize = 39;
const BS16_VOL_LAB: usize = 43;
// FAT32 extended BPB (section 3.3).
const FAT_SZ32: usize = 36;
const EXT_FLAGS: usize = 40;
const FS_VER: usize = 42;
const ROOT_CLUS: usize = 44;
const FS_INFO: usize = 48;
const BK_BOOT_SEC: usize = 50;
const BS32_BOOT_SIG: usize = 66;
const BS32_VOL_ID: usize = 67;
const BS32_VOL_LAB: usize = 71;
const SIGNATURE: usize = 510;

/// Fewest clusters of a FAT16 volume; fewer is FAT12 (section 3.5).
pub const MIN_FAT16_CLUSTERS: u32 = 4085;
/// Fewest clusters of a FAT32 volume; fewer is FAT16 (section 3.5).
pub const MIN_FAT32_CLUSTERS: u32 = 65525;
/// Most clusters a FAT32 volume can address (28-bit entries, 0x0FFFFFF6
/// and up are reserved, bad and end-of-chain markers).
pub const MAX_FAT32_CLUSTERS: u32 = 0x0FFF_FFF5;

/// The parsed and validated BIOS parameter block of a FAT volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSector {
    /// Bytes per sector: 512, 1024, 2048 or 4096.
    pub bytes_per_sector: u32,
    /// Sectors per cluster: a power of two from 1 to 128.
    pub sectors_per_cluster: u32,
    /// Sectors before the first FAT (boot sector included).
    pub reserved_sectors: u32,
    /// Number of FAT copies.
    pub fats: u32,
    /// Entries of the fixed root directory (FAT12/16; 0 on FAT32).
    pub root_entries: u32,
    /// Sectors of the volume.
    pub total_sectors: u32,
    /// Sectors of one FAT.
    pub fat_sectors: u32,
    /// Media descriptor byte.
    pub media: u8,
    /// Sectors before this volume on its disk (informational).
    pub hidden_sectors: u32,
    /// The FAT type, from the count of data clusters.
    pub fat_type: FatType,
    /// Number of data clusters; they are numbered 2 to `cluster_count + 1`.
    pub cluster_count: u32,
    /// Volume serial number, when the extended boot signature is present.
    pub serial: Option<u32>,
    /// Volume label of the extended BPB, trailing spaces removed (the root
    /// directory's label entry is the one Windows shows; see
    /// [`FatVolume::label`](crate::FatVolume::label)).
    pub bpb_label: Option<String>,
    /// FAT32: first cluster of the root directory.
    pub root_cluster: u32,
    /// FAT32: sector of the FSInfo structure (0 or 0xFFFF: none).
    pub fs_info_sector: u32,
    /// FAT32: sector of the backup boot sector (0 or 0xFFFF: none).
    pub backup_boot_sector: u32,
    /// FAT32: the FAT that is read, 0 unless mirroring is disabled.
    pub active_fat: u32,
}

fn field(name: &'static str, offset: usize, problem: &str) -> Error {
    Error::corrupt(
        format!("FAT boot sector field {name} (byte {offset}) {problem}"),
        offset as u64,
    )
}

fn u8_at(bs: &[u8], at: usize) -> u32 {
    bs.get(at).copied().map_or(0, u32::from)
}

fn u16_at(bs: &[u8], at: usize) -> u32 {
    le_u16(bs, at).map_or(0, u32::from)
}

fn u32_at(bs: &[u8], at: usize) -> u32 {
    le_u32(bs, at).unwrap_or(0)
}

fn label(bytes: Option<&[u8]>) -> Option<String> {
    let text: String = bytes?.iter().map(|&b| crate::dir_entry::cp850(b)).collect();
    let text = text.trim_end_matches(' ');
    if text.is_empty() || text == "NO NAME" {
        None
    } else {
        Some(String::from(text))
    }
}

impl BootSector {
    /// Reads and validates the boot sector at the start of `volume`.
    pub fn read<D: ReadAt + ?Sized>(volume: &D) -> Result<Self> {
        Self::read_at(volume, 0)
    }

    /// Reads and validates a boot sector (the primary, or the FAT32 backup)
    /// stored at byte `offset` of `volume`; errors carry volume offsets.
    pub fn read_at<D: ReadAt + ?Sized>(volume: &D, offset: u64) -> Result<Self> {
        let mut bs = [0u8; BOOT_SECTOR_SIZE];
        volume
            .read_at(offset, &mut bs)
            .map_err(|e| e.context("FAT boot sector"))?;
        Self::parse(&bs).map_err(|e| match e.offset() {
            Some(at) if offset != 0 => e
                .context("FAT backup boot sector")
                .at(at.saturating_add(offset)),
            _ => e,
        })
    }

    /// Parses the first 512 bytes of a volume.
    pub fn parse(bs: &[u8; BOOT_SECTOR_SIZE]) -> Result<Self> {
        if bs.get(SIGNATURE..) != Some(&[0x55, 0xaa][..]) {
            return Err(field(
                "signature",
                SIGNATURE,
                "is not 55 aa: not a FAT boot sector",
            ));
        }
        let bytes_per_sector = u16_at(bs, BYTS_PER_SEC);
        if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
            return Err(field(
                "BPB_BytsPerSec",
                BYTS_PER_SEC,
                &format!("is {bytes_per_sector}, not 512, 1024, 2048 or 4096"),
            ));
        }
        let sectors_per_cluster = u8_at(bs, SEC_PER_CLUS);
        if !sectors_per_cluster.is_power_of_two() {
            return Err(field(
                "BPB_SecPerClus",
                SEC_PER_CLUS,
                &format!("is {sectors_per_cluster}, not a power of two from 1 to 128"),
            ));
        }
        let reserved_sectors = u16_at(bs, RSVD_SEC_CNT);
        if reserved_sectors == 0 {
            return Err(field("BPB_RsvdSecCnt", RSVD_SEC_CNT, "is 0"));
        }
        let fats = u8_at(bs, NUM_FATS);
        if fats == 0 {
            return Err(field("BPB_NumFATs", NUM_FATS, "is 0"));
        }
        let root_entries = u16_at(bs, ROOT_ENT_CNT);
        let total_sectors = match u16_at(bs, TOT_SEC16) {
            0 => u32_at(bs, TOT_SEC32),
            n => n,
        };
        if total_sectors == 0 {
            return Err(field("BPB_TotSec16/BPB_TotSec32", TOT_SEC16, "are both 0"));
        }
        let fat16_size = u16_at(bs, FAT_SZ16);
        let fat_sectors = match fat16_size {
            0 => u32_at(bs, FAT_SZ32),
            n => n,
        };
        if fat_sectors == 0 {
            return Err(field("BPB_FATSz16/BPB_FATSz32", FAT_SZ16, "are both 0"));
        }
        // Section 3.5: the sectors of the root directory, then the data
        // region's size in clusters decides the type.
        let root_dir_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
        let meta = u64::from(reserved_sectors)
            + u64::from(fats) * u64::from(fat_sectors)
            + u64::from(root_dir_sectors);
        let data_sectors = u64::from(total_sectors)
            .checked_sub(meta)
            .filter(|&n| n >= u64::from(sectors_per_cluster))
            .ok_or_else(|| {
                field(
                    "BPB_TotSec16/BPB_TotSec32",
                    TOT_SEC16,
                    &format!(
                        "is {total_sectors} sectors, no room for one cluster after {meta} sectors of reserved area, FATs and root directory"
                    ),
                )
            })?;
        let clusters = data_sectors / u64::from(sectors_per_cluster);
        let cluster_count = u32::try_from(clusters)
            .ok()
            .filter(|&n| n <= MAX_FAT32_CLUSTERS)
            .ok_or_else(|| {
                field(
                    "BPB_TotSec32",
                    TOT_SEC32,
                    &format!("gives {clusters} clusters, more than FAT32 addresses"),
                )
            })?;
        let fat_type = if cluster_count < MIN_FAT16_CLUSTERS {
            FatType::Fat12
        } else if cluster_count < MIN_FAT32_CLUSTERS {
            FatType::Fat16
        } else {
            FatType::Fat32
        };
        // The FAT must hold an entry for every cluster (plus the two
        // reserved ones).
        let entries = u64::from(cluster_count) + 2;
        let needed = match fat_type {
            FatType::Fat12 => (entries * 3).div_ceil(2),
            FatType::Fat16 => entries * 2,
            FatType::Fat32 => entries * 4,
        };
        if u64::from(fat_sectors) * u64::from(bytes_per_sector) < needed {
            return Err(field(
                "BPB_FATSz16/BPB_FATSz32",
                if fat16_size == 0 { FAT_SZ32 } else { FAT_SZ16 },
                &format!(
                    "is {fat_sectors} sectors, too small for the FAT of {cluster_count} clusters ({needed} bytes)"
                ),
            ));
        }
        let mut boot = BootSector {
            bytes_per_sector,
            sectors_per_cluster,
            reserved_sectors,
            fats,
            root_entries,
            total_sectors,
            fat_sectors,
            media: bs.get(MEDIA).copied().unwrap_or(0),
            hidden_sectors: u32_at(bs, HIDD_SEC),
            fat_type,
            cluster_count,
            serial: None,
            bpb_label: None,
            root_cluster: 0,
            fs_info_sector: 0,
            backup_boot_sector: 0,
            active_fat: 0,
        };
        if fat_type == FatType::Fat32 {
            if root_entries != 0 || fat16_size != 0 {
                return Err(field(
                    "BPB_RootEntCnt",
                    ROOT_ENT_CNT,
                    &format!(
                        "is {root_entries} (BPB_FATSz16 {fat16_size}) on a volume of {cluster_count} clusters, which is FAT32 and must have 0"
                    ),
                ));
            }
            let version = u16_at(bs, FS_VER);
            if version != 0 {
                return Err(Error::unsupported(format!(
                    "FAT32 version {}.{} (BPB_FSVer, byte {FS_VER})",
                    version >> 8,
                    version & 0xff
                )));
            }
            let root = u32_at(bs, ROOT_CLUS);
            if !(2..=cluster_count + 1).contains(&root) {
                return Err(field(
                    "BPB_RootClus",
                    ROOT_CLUS,
                    &format!("is cluster {root}, outside 2..={}", cluster_count + 1),
                ));
            }
            boot.root_cluster = root;
            let flags = u16_at(bs, EXT_FLAGS);
            // Bit 7: only the FAT numbered by bits 0-3 is active.
            if flags & 0x80 != 0 {
                let active = flags & 0x0f;
                if active >= fats {
                    return Err(field(
                        "BPB_ExtFlags",
                        EXT_FLAGS,
                        &format!("names active FAT {active} of {fats}"),
                    ));
                }
                boot.active_fat = active;
            }
            boot.fs_info_sector = u16_at(bs, FS_INFO);
            boot.backup_boot_sector = u16_at(bs, BK_BOOT_SEC);
            if bs.get(BS32_BOOT_SIG) == Some(&0x29) {
                boot.serial = le_u32(bs, BS32_VOL_ID);
                boot.bpb_label = label(bs.get(BS32_VOL_LAB..BS32_VOL_LAB + 11));
            }
        } else {
            if root_entries == 0 {
                return Err(field(
                    "BPB_RootEntCnt",
                    ROOT_ENT_CNT,
                    &format!(
                        "is 0 on a volume of {cluster_count} clusters, which is {} and needs a root directory",
                        fat_type.name()
                    ),
                ));
            }
            if bs.get(BS16_BOOT_SIG) == Some(&0x29) {
                boot.serial = le_u32(bs, BS16_VOL_ID);
                boot.bpb_label = label(bs.get(BS16_VOL_LAB..BS16_VOL_LAB + 11));
            }
        }
        Ok(boot)
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u32 {
        self.bytes_per_sector * self.sectors_per_cluster
    }

    /// Byte offset of FAT number `n` (0-based) in the volume.
    pub fn fat_offset(&self, n: u32) -> u64 {
        (u64::from(self.reserved_sectors) + u64::from(n) * u64::from(self.fat_sectors))
            * u64::from(self.bytes_per_sector)
    }

    /// Bytes of one FAT.
    pub fn fat_bytes(&self) -> u64 {
        u64::from(self.fat_sectors) * u64::from(self.bytes_per_sector)
    }

    /// Byte offset of the fixed root directory (FAT12/16).
    pub fn root_dir_offset(&self) -> u64 {
        self.fat_offset(self.fats)
    }

    /// Bytes of the fixed root directory (0 on FAT32).
    pub fn root_dir_bytes(&self) -> u64 {
        u64::from(self.root_entries) * 32
    }

    /// Byte offset of the data region (cluster 2).
    pub fn data_offset(&self) -> u64 {
        let root_sectors = (self.root_entries * 32).div_ceil(self.bytes_per_sector);
        self.root_dir_offset() + u64::from(root_sectors) * u64::from(self.bytes_per_sector)
    }

    /// Byte offset of cluster `cluster` (2 and up), or `None` when the
    /// volume has no such cluster.
    pub fn cluster_offset(&self, cluster: u32) -> Option<u64> {
        if !(2..=self.cluster_count.checked_add(1)?).contains(&cluster) {
            return None;
        }
        Some(self.data_offset() + u64::from(cluster - 2) * u64::from(self.cluster_size()))
    }

    /// Bytes of the volume as the BPB describes it.
    pub fn volume_bytes(&self) -> u64 {
        u64::from(self.total_sectors) * u64::from(self.bytes_per_sector)
    }
}

/// The FAT32 FSInfo sector (specification section 5): hints about free
/// space, which a reader must not trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsInfo {
    /// Last known count of free clusters (`None`: unknown, 0xFFFFFFFF).
    pub free_count: Option<u32>,
    /// Cluster where a search for a free one should start (`None`: unknown).
    pub next_free: Option<u32>,
}

const FSI_LEAD_SIG: u32 = 0x4161_5252;
const FSI_STRUC_SIG: u32 = 0x6141_7272;
const FSI_TRAIL_SIG: u32 = 0xAA55_0000;

impl FsInfo {
    /// Reads the FSInfo sector of a FAT32 volume; `Ok(None)` when the BPB
    /// names none, an error when the one it names has wrong signatures.
    pub fn read<D: ReadAt + ?Sized>(volume: &D, boot: &BootSector) -> Result<Option<Self>> {
        let sector = boot.fs_info_sector;
        if boot.fat_type != FatType::Fat32 || sector == 0 || sector == 0xffff {
            return Ok(None);
        }
        if sector >= boot.reserved_sectors {
            return Err(field(
                "BPB_FSInfo",
                FS_INFO,
                &format!(
                    "is sector {sector}, outside the {} reserved sectors",
                    boot.reserved_sectors
                ),
            ));
        }
        let offset = u64::from(sector) * u64::from(boot.bytes_per_sector);
        let mut b = [0u8; 512];
        volume
            .read_at(offset, &mut b)
            .map_err(|e| e.context("FAT32 FSInfo sector"))?;
        for (at, want, name) in [
            (0, FSI_LEAD_SIG, "FSI_LeadSig"),
            (484, FSI_STRUC_SIG, "FSI_StrucSig"),
            (508, FSI_TRAIL_SIG, "FSI_TrailSig"),
        ] {
            let got = u32_at(&b, at);
            if got != want {
                return Err(Error::corrupt(
                    format!("FAT32 FSInfo sector {name} is {got:#010x}, not {want:#010x}"),
                    offset + at as u64,
                ));
            }
        }
        let known = |v: u32| (v != u32::MAX).then_some(v);
        Ok(Some(FsInfo {
            free_count: known(u32_at(&b, 488)),
            next_free: known(u32_at(&b, 492)),
        }))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A FAT32 boot sector: 512-byte sectors and clusters, 32 reserved
    /// sectors, 2 FATs of 1009 sectors, 131072 sectors in all.
    fn fat32() -> [u8; 512] {
        let mut b = [0u8; 512];
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 1;
        b[14..16].copy_from_slice(&32u16.to_le_bytes());
        b[16] = 2;
        b[32..36].copy_from_slice(&131_072u32.to_le_bytes());
        b[36..40].copy_from_slice(&1009u32.to_le_bytes());
        b[44..48].copy_from_slice(&2u32.to_le_bytes());
        b[48..50].copy_from_slice(&1u16.to_le_bytes());
        b[50..52].copy_from_slice(&6u16.to_le_bytes());
        b[66] = 0x29;
        b[67..71].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        b[71..82].copy_from_slice(b"VOLUME     ");
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    fn err(b: &[u8; 512]) -> Error {
        BootSector::parse(b).unwrap_err()
    }

    #[test]
    fn fat32_fields() {
        let boot = BootSector::parse(&fat32()).unwrap();
        assert_eq!(boot.fat_type, FatType::Fat32);
        assert_eq!(boot.cluster_count, 131_072 - 32 - 2 * 1009);
        assert_eq!(boot.serial, Some(0x1234_5678));
        assert_eq!(boot.bpb_label.as_deref(), Some("VOLUME"));
        assert_eq!(boot.data_offset(), (32 + 2 * 1009) * 512);
        assert_eq!(boot.cluster_offset(2), Some(boot.data_offset()));
        assert_eq!(boot.cluster_offset(1), None);
        assert_eq!(boot.cluster_offset(boot.cluster_count + 2), None);
    }

    #[test]
    fn impossible_fields_are_named_with_their_offset() {
        let cases: [(usize, &[u8], &str, u64); 8] = [
            (13, &[0], "BPB_SecPerClus", 13),
            (13, &[3], "BPB_SecPerClus", 13),
            (11, &[0, 0], "BPB_BytsPerSec", 11),
            (14, &[0, 0], "BPB_RsvdSecCnt", 14),
            (16, &[0], "BPB_NumFATs", 16),
            (36, &[0, 0, 0, 0], "BPB_FATSz16/BPB_FATSz32", 22),
            (44, &[0, 0, 0, 0], "BPB_RootClus", 44),
            (510, &[0, 0], "signature", 510),
        ];
        for (at, bytes, field, offset) in cases {
            let mut b = fat32();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            let e = err(&b);
            assert!(e.to_string().contains(field), "{e}");
            assert_eq!(e.offset(), Some(offset), "{e}");
        }
        // A FAT too small for the clusters.
        let mut b = fat32();
        b[36..40].copy_from_slice(&100u32.to_le_bytes());
        let e = err(&b);
        assert!(e.to_string().contains("too small"), "{e}");
        // A FAT32 version this code does not know.
        let mut b = fat32();
        b[42] = 1;
        assert_eq!(err(&b).kind(), disk_io::ErrorKind::Unsupported);
        // Root entries on a volume that is FAT32 by its cluster count.
        let mut b = fat32();
        b[17] = 16;
        assert!(err(&b).to_string().contains("BPB_RootEntCnt"));
        // Active FAT out of range when mirroring is off.
        let mut b = fat32();
        b[40] = 0x85;
        assert!(err(&b).to_string().contains("BPB_ExtFlags"));
    }
}
