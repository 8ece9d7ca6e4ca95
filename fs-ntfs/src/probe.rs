//! Recognising an NTFS volume from its boot sector.

use disk_io::bytes::le_u16;
use disk_io::{ReadAt, Result};

const OEM_ID: &[u8; 8] = b"NTFS    ";
const BYTES_PER_SECTOR: usize = 0x0b;
const SECTORS_PER_CLUSTER: usize = 0x0d;

/// Says whether `volume` starts with an NTFS boot sector: the OEM id
/// `NTFS    `, the `55 aa` signature, and a valid sector size (512 to
/// 4096) and cluster factor (a power of two, or a negative shift for
/// clusters of 64 KiB and up).
///
/// ```
/// let mut sector = vec![0u8; 512];
/// sector[3..11].copy_from_slice(b"NTFS    ");
/// sector[11..13].copy_from_slice(&512u16.to_le_bytes());
/// sector[13] = 8;
/// sector[510..].copy_from_slice(&[0x55, 0xaa]);
/// assert!(fs_ntfs::probe(&sector[..]).unwrap());
/// sector[13] = 3;
/// assert!(!fs_ntfs::probe(&sector[..]).unwrap());
/// ```
pub fn probe<D: ReadAt + ?Sized>(volume: &D) -> Result<bool> {
    if volume.size() < 512 {
        return Ok(false);
    }
    let mut bs = [0u8; 512];
    volume.read_at(0, &mut bs)?;
    if bs.get(3..11) != Some(&OEM_ID[..]) || bs.get(510..) != Some(&[0x55, 0xaa][..]) {
        return Ok(false);
    }
    let sector = le_u16(&bs, BYTES_PER_SECTOR);
    let cluster = bs.get(SECTORS_PER_CLUSTER).copied().unwrap_or(0);
    // Values 0xf4..=0xff encode 2^(256 - v) sectors (clusters >= 64 KiB).
    let cluster_ok =
        cluster.is_power_of_two() && cluster <= 0x80 || (0xf4..=0xff).contains(&cluster);
    Ok(matches!(sector, Some(512 | 1024 | 2048 | 4096)) && cluster_ok)
}
