//! The two headers (at 64 KiB and 128 KiB): sequence number, the GUIDs
//! that identify writes to the file and its data, and where the log is.
//! The current header is the valid one with the higher sequence number.

use alloc::format;
use alloc::vec::Vec;
use core::fmt;

use disk_io::bytes::{le_u16, le_u32, le_u64};
use disk_io::crc::crc32c;
use disk_io::{Error, ReadAt, Result};

/// Offsets of the two header copies.
pub const OFFSETS: [u64; 2] = [64 * 1024, 128 * 1024];
/// Bytes covered by a header's checksum.
pub const SIZE: usize = 4096;
/// "head".
const SIGNATURE: u32 = 0x6461_6568;
/// Offset of the checksum field in every checksummed VHDX structure.
pub(crate) const CHECKSUM_AT: usize = 4;

/// A GUID as VHDX stores it: the first three fields little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID written `{aabbccdd-eeff-0011-2233-445566778899}` (braces
    /// optional), as parent locators hold them.
    pub fn parse(text: &str) -> Option<Guid> {
        let t = text.trim();
        let t = t.strip_prefix('{').unwrap_or(t);
        let t = t.strip_suffix('}').unwrap_or(t);
        let groups: Vec<&str> = t.split('-').collect();
        let lens = [8usize, 4, 4, 4, 12];
        if groups.len() != 5 || groups.iter().zip(lens).any(|(g, l)| g.len() != l) {
            return None;
        }
        let hex: Vec<u8> = groups
            .concat()
            .as_bytes()
            .chunks_exact(2)
            .map(|p| {
                let s = core::str::from_utf8(p).ok()?;
                u8::from_str_radix(s, 16).ok()
            })
            .collect::<Option<_>>()?;
        let b: [u8; 16] = hex.try_into().ok()?;
        // Canonical text is big-endian per field; storage swaps the first three.
        let order = [3usize, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut out = [0u8; 16];
        for (o, &i) in out.iter_mut().zip(order.iter()) {
            *o = b.get(i).copied().unwrap_or(0);
        }
        Some(Guid(out))
    }

    /// The GUID stored at `at` in `bytes` (zero when it does not fit).
    pub fn at(bytes: &[u8], at: usize) -> Guid {
        let mut g = [0u8; 16];
        if let Some(src) = at.checked_add(16).and_then(|end| bytes.get(at..end)) {
            g.copy_from_slice(src);
        }
        Guid(g)
    }

    /// True for the all-zero GUID.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        let d1 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let d2 = u16::from_le_bytes([b[4], b[5]]);
        let d3 = u16::from_le_bytes([b[6], b[7]]);
        write!(f, "{{{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-", b[8], b[9])?;
        for x in &b[10..] {
            write!(f, "{x:02x}")?;
        }
        f.write_str("}")
    }
}

/// One header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Which copy (0 at 64 KiB, 1 at 128 KiB).
    pub copy: usize,
    /// Higher is newer.
    pub sequence_number: u64,
    /// Changes each time the file is opened for writing.
    pub file_write_guid: Guid,
    /// Changes each time the guest data changes; a child's parent locator
    /// records the parent's value.
    pub data_write_guid: Guid,
    /// Non-zero when the log holds entries to replay.
    pub log_guid: Guid,
    /// Log format version (0).
    pub log_version: u16,
    /// Format version (1).
    pub version: u16,
    /// Bytes of the log (a multiple of 1 MiB).
    pub log_length: u32,
    /// File offset of the log (a multiple of 1 MiB).
    pub log_offset: u64,
}

impl Header {
    /// Parses and checks the header copy `copy` from its 4 KiB.
    pub fn parse(bytes: &[u8], copy: usize) -> Result<Header> {
        let at = OFFSETS.get(copy).copied().unwrap_or(0);
        if bytes.len() < SIZE {
            return Err(Error::corrupt(
                format!("vhdx header {} truncated", copy + 1),
                at,
            ));
        }
        if le_u32(bytes, 0) != Some(SIGNATURE) {
            return Err(Error::corrupt(
                format!("vhdx header {} signature (expected 'head')", copy + 1),
                at,
            ));
        }
        let stored = le_u32(bytes, CHECKSUM_AT).unwrap_or(0);
        let computed = checksum(bytes.get(..SIZE).unwrap_or(&[]));
        if stored != computed {
            return Err(Error::corrupt(
                format!(
                    "vhdx header {} checksum {stored:#010x}, computed {computed:#010x}",
                    copy + 1
                ),
                at + CHECKSUM_AT as u64,
            ));
        }
        let h = Header {
            copy,
            sequence_number: le_u64(bytes, 8).unwrap_or(0),
            file_write_guid: Guid::at(bytes, 16),
            data_write_guid: Guid::at(bytes, 32),
            log_guid: Guid::at(bytes, 48),
            log_version: le_u16(bytes, 64).unwrap_or(0),
            version: le_u16(bytes, 66).unwrap_or(0),
            log_length: le_u32(bytes, 68).unwrap_or(0),
            log_offset: le_u64(bytes, 72).unwrap_or(0),
        };
        if h.version != 1 {
            return Err(Error::unsupported(format!(
                "vhdx header {} version {} (only 1 is defined)",
                copy + 1,
                h.version
            ))
            .at(at + 66));
        }
        if h.log_version != 0 {
            return Err(Error::unsupported(format!(
                "vhdx header {} log version {} (only 0 is defined)",
                copy + 1,
                h.log_version
            ))
            .at(at + 64));
        }
        const MIB: u64 = 1 << 20;
        if !h.log_offset.is_multiple_of(MIB)
            || h.log_offset < MIB
            || !u64::from(h.log_length).is_multiple_of(MIB)
        {
            return Err(Error::corrupt(
                format!(
                    "vhdx header {} log at {:#x} ({} bytes) not 1 MiB aligned or inside the header section",
                    copy + 1,
                    h.log_offset,
                    h.log_length
                ),
                at + 68,
            ));
        }
        Ok(h)
    }

    /// File offset of this copy.
    pub fn offset(&self) -> u64 {
        OFFSETS.get(self.copy).copied().unwrap_or(0)
    }
}

/// CRC-32C of a structure whose checksum field (bytes 4..8) counts as zero
/// (headers, region tables, log entries).
pub fn checksum(bytes: &[u8]) -> u32 {
    let head = bytes.get(..CHECKSUM_AT).unwrap_or(&[]);
    let tail = bytes.get(CHECKSUM_AT + 4..).unwrap_or(&[]);
    let c = disk_io::crc::crc32c_append(crc32c(head), &[0; 4]);
    disk_io::crc::crc32c_append(c, tail)
}

/// Both header copies as read: each parsed, or why it is not valid.
pub struct Headers {
    /// Header 1 and header 2.
    pub copies: [Result<Header>; 2],
}

impl Headers {
    /// Reads both copies from `file`.
    pub fn read<D: ReadAt + ?Sized>(file: &D) -> Headers {
        let one = |copy: usize| {
            let at = OFFSETS.get(copy).copied().unwrap_or(0);
            let mut buf = alloc::vec![0u8; SIZE];
            file.read_at(at, &mut buf)
                .map_err(|e| e.context(format!("vhdx header {}", copy + 1)))?;
            Header::parse(&buf, copy)
        };
        Headers {
            copies: [one(0), one(1)],
        }
    }

    /// The current header: the only valid copy, or the valid copy with the
    /// greater sequence number. Without one (both invalid, or both valid
    /// with equal sequence numbers) the file is corrupt, as the
    /// specification says.
    pub fn current(&self) -> Result<&Header> {
        match &self.copies {
            [Ok(a), Ok(b)] if a.sequence_number == b.sequence_number => Err(Error::corrupt(
                format!(
                    "vhdx: both headers have sequence number {}, so neither is current",
                    a.sequence_number
                ),
                OFFSETS[1] + 8,
            )),
            [Ok(a), Ok(b)] => Ok(if b.sequence_number > a.sequence_number {
                b
            } else {
                a
            }),
            [Ok(a), Err(_)] => Ok(a),
            [Err(_), Ok(b)] => Ok(b),
            [Err(e1), Err(e2)] => Err(Error::corrupt(
                format!("vhdx: neither header is valid ({e1}; {e2})"),
                OFFSETS[0],
            )),
        }
    }

    /// Why a copy is invalid, when exactly one of them is (damage the
    /// reader reads past).
    pub fn damage(&self) -> Option<&Error> {
        match &self.copies {
            [Ok(_), Err(e)] | [Err(e), Ok(_)] => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn guid_text_round_trips_in_storage_order() {
        let g = Guid::parse("{2DC27766-F623-4200-9D64-115E9BFD4A08}").unwrap();
        assert_eq!(g, crate::vhdx::region_table::BAT_GUID);
        assert_eq!(g.to_string(), "{2dc27766-f623-4200-9d64-115e9bfd4a08}");
        assert_eq!(Guid::parse(&g.to_string()), Some(g));
        assert_eq!(Guid::parse("2dc27766-f623-4200-9d64-115e9bfd4a08"), Some(g));
        for bad in [
            "",
            "{}",
            "2dc27766-f623-4200-9d64",
            "zzc27766-f623-4200-9d64-115e9bfd4a08",
        ] {
            assert_eq!(Guid::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn current_header_is_the_valid_one_with_the_higher_sequence() {
        let make = |seq: u64| {
            let mut b = alloc::vec![0u8; SIZE];
            b[..4].copy_from_slice(b"head");
            b[8..16].copy_from_slice(&seq.to_le_bytes());
            b[66] = 1;
            b[68..72].copy_from_slice(&(1u32 << 20).to_le_bytes());
            b[72..80].copy_from_slice(&(1u64 << 20).to_le_bytes());
            let crc = checksum(&b);
            b[4..8].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let (a, b) = (make(7), make(9));
        let h = Headers {
            copies: [Header::parse(&a, 0), Header::parse(&b, 1)],
        };
        assert_eq!(h.current().unwrap().copy, 1);
        let h = Headers {
            copies: [Header::parse(&b, 0), Header::parse(&b, 1)],
        };
        assert!(h.current().is_err(), "equal sequence numbers");
        let mut bad = b.clone();
        bad[100] ^= 1;
        let h = Headers {
            copies: [Header::parse(&a, 0), Header::parse(&bad, 1)],
        };
        assert_eq!(h.current().unwrap().copy, 0);
        assert!(
            h.damage()
                .unwrap()
                .to_string()
                .contains("header 2 checksum")
        );
    }
}
