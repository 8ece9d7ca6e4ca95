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
//
// Slicing-by-8: `t[0]` is the classic byte table; `t[k][i]` is the CRC of
// byte `i` followed by `k` zero bytes, so eight input bytes fold into the
// register with eight independent look-ups instead of eight dependent ones
// (about five times faster: ext4 checksums every inode and directory block).
#[allow(clippy::indexing_slicing)]
const fn tables(poly: u32) -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            k += 1;
        }
        i += 1;
    }
    t
}

static IEEE: [[u32; 256]; 8] = tables(0xedb8_8320);
static CASTAGNOLI: [[u32; 256]; 8] = tables(0x82f6_3b78);

/// Entry `i` of table `k` (`i` is a byte: always inside the table).
#[inline(always)]
fn at(t: &[[u32; 256]; 8], k: usize, i: u32) -> u32 {
    t.get(k)
        .and_then(|row| row.get((i & 0xff) as usize))
        .copied()
        .unwrap_or(0)
}

/// Continues a reflected CRC over `data` from the raw register `crc`.
fn update(t: &[[u32; 256]; 8], mut crc: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let v = u64::from_le_bytes(b);
        let lo = (v as u32) ^ crc;
        let hi = (v >> 32) as u32;
        crc = at(t, 7, lo)
            ^ at(t, 6, lo >> 8)
            ^ at(t, 5, lo >> 16)
            ^ at(t, 4, lo >> 24)
            ^ at(t, 3, hi)
            ^ at(t, 2, hi >> 8)
            ^ at(t, 1, hi >> 16)
            ^ at(t, 0, hi >> 24);
    }
    for &b in words.remainder() {
        crc = (crc >> 8) ^ at(t, 0, crc ^ u32::from(b));
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

    /// The sliced loop against the bit-by-bit definition, at every length
    /// and alignment up to 40 bytes.
    #[test]
    fn sliced_equals_bitwise() {
        fn bitwise(poly: u32, data: &[u8]) -> u32 {
            let mut c = !0u32;
            for &b in data {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
                }
            }
            !c
        }
        let mut data = [0u8; 48];
        for (i, d) in data.iter_mut().enumerate() {
            *d = (i * 37 + 11) as u8;
        }
        for start in 0..8 {
            for len in 0..40 {
                let d = &data[start..start + len];
                assert_eq!(crc32(d), bitwise(0xedb8_8320, d));
                assert_eq!(crc32c(d), bitwise(0x82f6_3b78, d));
            }
        }
    }
}
