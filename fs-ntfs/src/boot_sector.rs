//! The NTFS boot sector (`$Boot`, sector 0 of the volume): geometry and the
//! location of `$MFT` and `$MFTMirr`.

use disk_io::bytes::{le_u16, le_u64};
use disk_io::{Error, Result};

/// Smallest and largest sector size accepted.
pub const SECTOR_SIZE_RANGE: (u32, u32) = (512, 4096);
/// Smallest and largest cluster size accepted (512 B to 2 MiB).
pub const CLUSTER_SIZE_RANGE: (u32, u32) = (512, 2 << 20);
/// Smallest and largest MFT record (and index record) size accepted.
pub const RECORD_SIZE_RANGE: (u32, u32) = (256, 64 << 10);

/// The fields of the boot sector this reader uses, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSector {
    /// Bytes per sector (512 to 4096, a power of two).
    pub sector_size: u32,
    /// Bytes per cluster (512 B to 2 MiB, a power of two).
    pub cluster_size: u32,
    /// Sectors in the volume (the backup boot sector follows the last one).
    pub total_sectors: u64,
    /// First cluster of `$MFT`.
    pub mft_lcn: u64,
    /// First cluster of `$MFTMirr`.
    pub mft_mirror_lcn: u64,
    /// Bytes per FILE record.
    pub file_record_size: u32,
    /// Bytes per INDX record.
    pub index_record_size: u32,
    /// Volume serial number.
    pub serial_number: u64,
}

impl BootSector {
    /// Parses and validates the first 512 bytes of a volume.
    ///
    /// ```
    /// let mut s = [0u8; 512];
    /// s[3..11].copy_from_slice(b"NTFS    ");
    /// s[0x0b..0x0d].copy_from_slice(&512u16.to_le_bytes());
    /// s[0x0d] = 8; // 4 KiB clusters
    /// s[0x28..0x30].copy_from_slice(&2048u64.to_le_bytes());
    /// s[0x30] = 4;
    /// s[0x38] = 8;
    /// s[0x40] = 0xf6; // 2^10 = 1024-byte records
    /// s[0x44] = 1; // one cluster per index record
    /// s[510] = 0x55;
    /// s[511] = 0xaa;
    /// let b = fs_ntfs::BootSector::parse(&s).unwrap();
    /// assert_eq!((b.cluster_size, b.file_record_size, b.index_record_size), (4096, 1024, 4096));
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let field = |what: &str, at: usize| {
            Error::corrupt(alloc::format!("NTFS boot sector {what}"), at as u64)
        };
        if bytes.get(3..11) != Some(&b"NTFS    "[..]) {
            return Err(field("OEM id (expected \"NTFS    \")", 3));
        }
        if bytes.get(510..512) != Some(&[0x55, 0xaa][..]) {
            return Err(field("signature (expected 55 aa)", 510));
        }
        let sector_size = u32::from(le_u16(bytes, 0x0b).unwrap_or(0));
        if !sector_size.is_power_of_two()
            || !(SECTOR_SIZE_RANGE.0..=SECTOR_SIZE_RANGE.1).contains(&sector_size)
        {
            return Err(field(
                &alloc::format!(
                    "bytes per sector {sector_size} (expected 512 to 4096, a power of two)"
                ),
                0x0b,
            ));
        }
        let spc = bytes.get(0x0d).copied().unwrap_or(0);
        let sectors_per_cluster: u64 = if spc <= 0x80 {
            u64::from(spc)
        } else {
            // 0xf4..=0xff: 2^(256 - v) sectors.
            let shift = 256 - u32::from(spc);
            if shift > 12 { 0 } else { 1u64 << shift }
        };
        let cluster = sectors_per_cluster * u64::from(sector_size);
        if !sectors_per_cluster.is_power_of_two()
            || cluster < u64::from(CLUSTER_SIZE_RANGE.0)
            || cluster > u64::from(CLUSTER_SIZE_RANGE.1)
        {
            return Err(field(
                &alloc::format!(
                    "sectors per cluster {spc:#x} ({cluster} bytes; expected 512 B to 2 MiB, a power of two)"
                ),
                0x0d,
            ));
        }
        let cluster_size = cluster as u32;
        let total_sectors = le_u64(bytes, 0x28).unwrap_or(0);
        let mft_lcn = le_u64(bytes, 0x30).unwrap_or(0);
        let mft_mirror_lcn = le_u64(bytes, 0x38).unwrap_or(0);
        let file_record_size = record_size(bytes, 0x40, cluster_size, "clusters per FILE record")?;
        let index_record_size =
            record_size(bytes, 0x44, cluster_size, "clusters per index record")?;
        let clusters = total_sectors / sectors_per_cluster;
        if total_sectors == 0 || mft_lcn >= clusters || mft_mirror_lcn >= clusters {
            return Err(field(
                &alloc::format!(
                    "geometry: $MFT at cluster {mft_lcn}, $MFTMirr at cluster {mft_mirror_lcn}, \
                     but the volume has {clusters} clusters"
                ),
                0x28,
            ));
        }
        Ok(BootSector {
            sector_size,
            cluster_size,
            total_sectors,
            mft_lcn,
            mft_mirror_lcn,
            file_record_size,
            index_record_size,
            serial_number: le_u64(bytes, 0x48).unwrap_or(0),
        })
    }

    /// Clusters in the volume.
    pub fn total_clusters(&self) -> u64 {
        // Clusters are whole sectors (parse checks it): no overflow.
        self.total_sectors / u64::from((self.cluster_size / self.sector_size).max(1))
    }

    /// Bytes in the volume (without the backup boot sector).
    pub fn volume_size(&self) -> u64 {
        self.total_sectors
            .saturating_mul(u64::from(self.sector_size))
    }
}

/// Decodes a record-size byte: a positive count of clusters, or a negative
/// `-n` meaning `2^n` bytes.
fn record_size(bytes: &[u8], at: usize, cluster_size: u32, what: &str) -> Result<u32> {
    let raw = bytes.get(at).copied().unwrap_or(0) as i8;
    let size: u64 = if raw > 0 {
        u64::from(raw as u8) * u64::from(cluster_size)
    } else if (-31..0).contains(&raw) {
        1u64 << (-i32::from(raw))
    } else {
        0
    };
    if !size.is_power_of_two()
        || size < u64::from(RECORD_SIZE_RANGE.0)
        || size > u64::from(RECORD_SIZE_RANGE.1)
    {
        return Err(Error::corrupt(
            alloc::format!(
                "NTFS boot sector {what} {:#x} ({size} bytes; expected 256 B to 64 KiB, a power of two)",
                raw as u8
            ),
            at as u64,
        ));
    }
    Ok(size as u32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn sector(spc: u8, rec: u8) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[3..11].copy_from_slice(b"NTFS    ");
        s[0x0b..0x0d].copy_from_slice(&512u16.to_le_bytes());
        s[0x0d] = spc;
        s[0x28..0x30].copy_from_slice(&(1u64 << 20).to_le_bytes());
        s[0x30] = 4;
        s[0x38] = 2;
        s[0x40] = rec;
        s[0x44] = rec;
        s[510] = 0x55;
        s[511] = 0xaa;
        s
    }

    #[test]
    fn cluster_and_record_encodings() {
        let b = BootSector::parse(&sector(1, 2)).unwrap();
        assert_eq!((b.cluster_size, b.file_record_size), (512, 1024));
        let b = BootSector::parse(&sector(0xf4, 0xf6)).unwrap();
        assert_eq!((b.cluster_size, b.file_record_size), (2 << 20, 1024));
        let b = BootSector::parse(&sector(0x80, 0xf4)).unwrap();
        assert_eq!((b.cluster_size, b.file_record_size), (64 << 10, 4096));
        assert!(BootSector::parse(&sector(3, 2)).is_err());
        assert!(BootSector::parse(&sector(0xf3, 2)).is_err());
        assert!(BootSector::parse(&sector(8, 0xe0)).is_err());
        let e = BootSector::parse(&sector(8, 0x80)).unwrap_err();
        assert_eq!(e.offset(), Some(0x40));
    }
}
