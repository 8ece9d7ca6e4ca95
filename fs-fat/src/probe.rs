//! Recognising a FAT volume and its type from the boot sector's BIOS
//! parameter block, as Microsoft's FAT specification defines it.

use disk_io::bytes::{le_u16, le_u32};
use disk_io::{ReadAt, Result};

/// The FAT variant, decided by the count of data clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FatType {
    /// Fewer than 4085 clusters: 12-bit entries.
    Fat12,
    /// 4085 to 65524 clusters: 16-bit entries.
    Fat16,
    /// 65525 clusters or more: 32-bit entries (28 used).
    Fat32,
}

impl FatType {
    /// `fat12`, `fat16` or `fat32`, as `vdisk info` names them.
    pub const fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "fat12",
            FatType::Fat16 => "fat16",
            FatType::Fat32 => "fat32",
        }
    }
}

// Boot sector field offsets (Microsoft FAT specification, section 3).
const BYTS_PER_SEC: usize = 11;
const SEC_PER_CLUS: usize = 13;
const RSVD_SEC_CNT: usize = 14;
const NUM_FATS: usize = 16;
const ROOT_ENT_CNT: usize = 17;
const TOT_SEC16: usize = 19;
const FAT_SZ16: usize = 22;
const TOT_SEC32: usize = 32;
const FAT_SZ32: usize = 36;
const SIGNATURE: usize = 510;

/// Says whether `volume` starts with a FAT boot sector and which type it is.
///
/// `Ok(None)` means "not FAT": a wrong signature or a BIOS parameter block
/// with impossible values. Only I/O failures are errors.
///
/// ```
/// let mut sector = vec![0u8; 512];
/// sector[11..13].copy_from_slice(&512u16.to_le_bytes()); // bytes per sector
/// sector[13] = 4; // sectors per cluster
/// sector[14..16].copy_from_slice(&1u16.to_le_bytes()); // reserved sectors
/// sector[16] = 2; // FATs
/// sector[17..19].copy_from_slice(&224u16.to_le_bytes()); // root entries
/// sector[19..21].copy_from_slice(&2880u16.to_le_bytes()); // sectors
/// sector[22..24].copy_from_slice(&9u16.to_le_bytes()); // sectors per FAT
/// sector[510..].copy_from_slice(&[0x55, 0xaa]);
/// assert_eq!(fs_fat::probe(&sector[..]).unwrap(), Some(fs_fat::FatType::Fat12));
/// ```
pub fn probe<D: ReadAt + ?Sized>(volume: &D) -> Result<Option<FatType>> {
    if volume.size() < 512 {
        return Ok(None);
    }
    let mut bs = [0u8; 512];
    volume.read_at(0, &mut bs)?;
    Ok(fat_type(&bs))
}

fn fat_type(bs: &[u8; 512]) -> Option<FatType> {
    let u8_at = |at: usize| bs.get(at).copied().map(u32::from);
    let u16_at = |at: usize| le_u16(bs, at).map(u32::from);
    let u32_at = |at: usize| le_u32(bs, at);
    if bs.get(SIGNATURE..) != Some(&[0x55, 0xaa][..]) {
        return None;
    }
    let bytes_per_sector = u16_at(BYTS_PER_SEC)?;
    let sectors_per_cluster = u8_at(SEC_PER_CLUS)?;
    let reserved = u16_at(RSVD_SEC_CNT)?;
    let fats = u8_at(NUM_FATS)?;
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        || !sectors_per_cluster.is_power_of_two()
        || reserved == 0
        || fats == 0
    {
        return None;
    }
    let root_sectors = (u16_at(ROOT_ENT_CNT)? * 32).div_ceil(bytes_per_sector);
    let fat_size = match u16_at(FAT_SZ16)? {
        0 => u32_at(FAT_SZ32)?,
        n => n,
    };
    let total = match u16_at(TOT_SEC16)? {
        0 => u32_at(TOT_SEC32)?,
        n => n,
    };
    if fat_size == 0 {
        return None;
    }
    let meta =
        u64::from(reserved) + u64::from(fats) * u64::from(fat_size) + u64::from(root_sectors);
    let data_sectors = u64::from(total).checked_sub(meta)?;
    let clusters = data_sectors / u64::from(sectors_per_cluster);
    Some(match clusters {
        0..4085 => FatType::Fat12,
        4085..65525 => FatType::Fat16,
        _ => FatType::Fat32,
    })
}
