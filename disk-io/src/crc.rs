//! The two CRC-32 variants disk formats use, table-driven, `no_std`.
//!
//! - [`crc32`]: IEEE 802.3 (reflected polynomial 0xEDB88320), as GPT headers
//!   and entry arrays use it.
//! - [`crc32c`]: Castagnoli (reflected 0x82F63B78), as VHDX and ext4
//!   `metadata_csum` use it.
//!
//! ```
//! assert_eq!(disk_io::crc::crc32(b"123456789"), 0xcbf4_3926);
//! assert_eq!(disk_io::crc::crc32c(b"123456789"), 0xe306_9283);
//! ```

// Only evaluated at compile time (the statics below): an index out of
// bounds here would fail the build, it cannot panic at run time.
#[allow(clippy::indexing_slicing)]
const fn table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static IEEE: [u32; 256] = table(0xedb8_8320);
static CASTAGNOLI: [u32; 256] = table(0x82f6_3b78);

/// Continues a reflected CRC over `data` from the raw register `crc`.
fn update(table: &[u32; 256], mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        // The index is a u8, always inside the 256-entry table.
        let i = usize::from((crc as u8) ^ b);
        crc = (crc >> 8) ^ table.get(i).copied().unwrap_or(0);
    }
    crc
}

/// CRC-32 (IEEE) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    !update(&IEEE, !0, data)
}

/// CRC-32 (IEEE) of several pieces as if concatenated, e.g. a header with
/// its checksum field replaced by zeros.
pub fn crc32_parts(parts: &[&[u8]]) -> u32 {
    !parts.iter().fold(!0, |crc, p| update(&IEEE, crc, p))
}

/// CRC-32C (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !update(&CASTAGNOLI, !0, data)
}

/// CRC-32C continued from a previous result `seed` (as ext4 chains them).
pub fn crc32c_append(seed: u32, data: &[u8]) -> u32 {
    !update(&CASTAGNOLI, !seed, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_equal_whole() {
        let data = b"The quick brown fox jumps over the lazy dog";
        assert_eq!(crc32(data), 0x414f_a339);
        assert_eq!(crc32_parts(&[&data[..10], &data[10..]]), crc32(data));
        assert_eq!(crc32c_append(crc32c(&data[..7]), &data[7..]), crc32c(data));
        assert_eq!(crc32(b""), 0);
    }
}
