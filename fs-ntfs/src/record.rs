//! FILE records of the MFT: header, update-sequence fixups, flags.

use disk_io::bytes::{le_u16, le_u32, le_u64};
use disk_io::{Error, Result};

/// Bytes protected by one update-sequence entry: NTFS always uses 512,
/// whatever the sector size.
pub const FIXUP_STRIDE: usize = 512;

/// Applies the update-sequence fixups of a multi-sector record (FILE or
/// INDX) in place: checks that the last two bytes of every 512-byte block
/// hold the update sequence number and puts the saved bytes back.
///
/// `what` names the record ("MFT record 42", "index record at VCN 3") and
/// `position` is its byte offset on the volume, both used in errors. A
/// mismatch means the record was torn by an interrupted write.
pub fn apply_fixups(buf: &mut [u8], what: &str, position: u64) -> Result<()> {
    let usa_offset = usize::from(le_u16(buf, 4).unwrap_or(0));
    let usa_count = usize::from(le_u16(buf, 6).unwrap_or(0));
    let blocks = buf.len() / FIXUP_STRIDE;
    if usa_count != blocks + 1 || usa_offset < 8 || !usa_offset.is_multiple_of(2) {
        return Err(Error::corrupt(
            alloc::format!(
                "{what} update sequence array: offset {usa_offset}, {usa_count} entries \
                 (expected {} for {} bytes)",
                blocks + 1,
                buf.len()
            ),
            position + 4,
        ));
    }
    let end = usa_offset + 2 * usa_count;
    let usa: alloc::vec::Vec<u8> = match buf.get(usa_offset..end) {
        Some(s) if end <= FIXUP_STRIDE - 2 => s.to_vec(),
        _ => {
            return Err(Error::corrupt(
                alloc::format!(
                    "{what} update sequence array at {usa_offset} runs past the first block"
                ),
                position + 4,
            ));
        }
    };
    let usn = usa.get(0..2).unwrap_or(&[0, 0]).to_vec();
    for block in 0..blocks {
        let at = (block + 1) * FIXUP_STRIDE - 2;
        let saved = usa.get(2 + 2 * block..4 + 2 * block).unwrap_or(&[0, 0]);
        let Some(tail) = buf.get_mut(at..at + 2) else {
            break;
        };
        if *tail != usn[..] {
            return Err(Error::corrupt(
                alloc::format!(
                    "{what} is torn: update sequence number at byte {at} is {:#06x}, expected {:#06x}",
                    u16::from_le_bytes([
                        tail.first().copied().unwrap_or(0),
                        tail.get(1).copied().unwrap_or(0)
                    ]),
                    u16::from_le_bytes([
                        usn.first().copied().unwrap_or(0),
                        usn.get(1).copied().unwrap_or(0)
                    ]),
                ),
                position + at as u64,
            ));
        }
        tail.copy_from_slice(saved);
    }
    Ok(())
}

/// Flags of a FILE record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RecordFlags(pub u16);

impl RecordFlags {
    /// The record is in use (else: a deleted file or a free record).
    pub const IN_USE: u16 = 0x0001;
    /// The record is a directory (has a `$I30` index).
    pub const DIRECTORY: u16 = 0x0002;

    /// True when the record is in use.
    pub fn in_use(self) -> bool {
        self.0 & Self::IN_USE != 0
    }

    /// True when the record is a directory.
    pub fn is_directory(self) -> bool {
        self.0 & Self::DIRECTORY != 0
    }
}

/// A FILE record read from the MFT, fixups applied; it owns its bytes.
#[derive(Clone, Debug)]
pub struct FileRecord {
    /// Record number (index in the MFT).
    pub number: u64,
    /// Byte offset of the record on the volume.
    pub position: u64,
    /// Sequence number (incremented when the record is reused).
    pub sequence: u16,
    /// Hard-link count as stored.
    pub link_count: u16,
    /// Flags.
    pub flags: RecordFlags,
    /// Base record reference (0 for a base record), record number only.
    pub base_record: u64,
    /// Offset of the first attribute.
    pub first_attribute: usize,
    /// Bytes in use.
    pub used_size: usize,
    /// The record, fixups applied.
    pub bytes: alloc::vec::Vec<u8>,
}

impl FileRecord {
    /// Validates the header of `bytes` (the whole record as read from
    /// `position`) and applies its fixups.
    pub fn parse(mut bytes: alloc::vec::Vec<u8>, number: u64, position: u64) -> Result<Self> {
        let what = alloc::format!("MFT record {number}");
        match bytes.get(0..4) {
            Some(b"FILE") => {}
            Some(sig) => {
                return Err(Error::corrupt(
                    alloc::format!("{what} signature {sig:02x?} (expected \"FILE\")"),
                    position,
                ));
            }
            None => {
                return Err(Error::corrupt(
                    alloc::format!("{what} is too short"),
                    position,
                ));
            }
        }
        apply_fixups(&mut bytes, &what, position)?;
        let first_attribute = usize::from(le_u16(&bytes, 0x14).unwrap_or(0));
        let used_size = le_u32(&bytes, 0x18).unwrap_or(0) as usize;
        if used_size > bytes.len() || first_attribute < 0x18 || first_attribute + 8 > used_size {
            return Err(Error::corrupt(
                alloc::format!(
                    "{what} header: first attribute at {first_attribute}, {used_size} bytes used \
                     of {} (expected 24 <= first attribute < used <= size)",
                    bytes.len()
                ),
                position + 0x14,
            ));
        }
        Ok(FileRecord {
            number,
            position,
            sequence: le_u16(&bytes, 0x10).unwrap_or(0),
            link_count: le_u16(&bytes, 0x12).unwrap_or(0),
            flags: RecordFlags(le_u16(&bytes, 0x16).unwrap_or(0)),
            base_record: le_u64(&bytes, 0x20).unwrap_or(0) & REFERENCE_MASK,
            first_attribute,
            used_size,
            bytes,
        })
    }
}

/// The 48-bit record number of a file reference (the top 16 bits are the
/// sequence number).
pub const REFERENCE_MASK: u64 = (1 << 48) - 1;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn fixups_restore_and_detect_tears() {
        let mut rec = alloc::vec![0u8; 1024];
        rec[0..4].copy_from_slice(b"FILE");
        rec[4] = 0x30;
        rec[6] = 3;
        rec[0x30..0x32].copy_from_slice(&[7, 0]);
        rec[0x32..0x34].copy_from_slice(&[0xaa, 0xbb]);
        rec[0x34..0x36].copy_from_slice(&[0xcc, 0xdd]);
        rec[510..512].copy_from_slice(&[7, 0]);
        rec[1022..1024].copy_from_slice(&[7, 0]);
        let mut ok = rec.clone();
        apply_fixups(&mut ok, "MFT record 5", 0x1000).unwrap();
        assert_eq!(&ok[510..512], &[0xaa, 0xbb]);
        assert_eq!(&ok[1022..1024], &[0xcc, 0xdd]);
        rec[1022] = 8;
        let e = apply_fixups(&mut rec, "MFT record 5", 0x1000).unwrap_err();
        assert_eq!(e.offset(), Some(0x1000 + 1022));
        assert!(e.to_string().contains("MFT record 5 is torn"), "{e}");
    }
}
