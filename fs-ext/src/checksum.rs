//! `metadata_csum` and `gdt_csum` checksums.
//!
//! ext4 computes CRC-32C the way the kernel's `crc32c()` does: the register
//! starts from a seed and is *not* inverted at the end, so checksums chain
//! (`seed` → inode number → generation → bytes). [`raw_crc32c`] is that
//! function, built on [`disk_io::crc::crc32c_append`].
//!
//! Which structure covers which bytes:
//! - superblock: bytes `0..0x3fc`, seed `!0`;
//! - group descriptor: fs seed, then the group number (le32), then the
//!   descriptor with its checksum field zeroed; low 16 bits stored;
//! - inode: fs seed, inode number (le32), generation (le32), then the inode
//!   record with `i_checksum_lo` (and `i_checksum_hi` when there is room) zeroed;
//! - extent tree block: inode seed, the header and `eh_max` entries;
//! - directory leaf block: inode seed, the block up to its 12-byte tail;
//! - xattr block: fs seed, block number (le64), the block with its checksum zeroed;
//! - bitmaps: fs seed, the bitmap bytes (clusters or inodes per group / 8).

use disk_io::crc::crc32c_append;

/// CRC-32C as the kernel's `crc32c(seed, data)`: no final inversion.
pub fn raw_crc32c(seed: u32, data: &[u8]) -> u32 {
    !crc32c_append(!seed, data)
}

/// The seed of an inode's own structures: fs seed, inode number, generation.
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    let s = raw_crc32c(fs_seed, &ino.to_le_bytes());
    raw_crc32c(s, &generation.to_le_bytes())
}

/// CRC-16 (ANSI, reflected 0xA001) as `gdt_csum` uses it, continued from `crc`.
pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xa001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A checksum that did not match: what, where, stored and computed values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The structure (e.g. `inode 12`, `group descriptor 3`).
    pub what: alloc::string::String,
    /// Byte offset of the structure on the volume.
    pub offset: u64,
    /// Value stored on disk.
    pub stored: u32,
    /// Value computed.
    pub computed: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        // CRC-16/ARC of "123456789" is 0xbb3d (init 0).
        assert_eq!(crc16(0, b"123456789"), 0xbb3d);
    }

    #[test]
    fn raw_chains() {
        let a = raw_crc32c(!0, b"abc");
        assert_eq!(raw_crc32c(a, b"def"), raw_crc32c(!0, b"abcdef"));
        assert_eq!(!raw_crc32c(!0, b"123456789"), 0xe306_9283);
    }
}
