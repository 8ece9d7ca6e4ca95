//! VFAT long names (specification section 7): a chain of 32-byte entries
//! before a short entry, each holding 13 UTF-16 code units, numbered from
//! the last piece (flagged 0x40) down to 1, and each carrying the checksum
//! of the short entry's 8.3 name.
//!
//! A chain is accepted only when it is complete, in order, and its checksum
//! matches the short entry that follows; anything else (an orphan piece, a
//! gap, a checksum of another name) is dropped and the 8.3 name is used.

use alloc::string::String;
use alloc::vec::Vec;

use disk_io::bytes::le_u16;

use crate::dir_entry::ATTR_LONG_NAME;

/// `LDIR_Ord` flag of the last (first stored) piece of a long name.
pub const LAST_LONG_ENTRY: u8 = 0x40;
/// UTF-16 code units per long-name entry.
pub const CHARS_PER_ENTRY: usize = 13;
/// Most entries of one long name (255 characters).
pub const MAX_ENTRIES: u8 = 20;

/// Byte offsets of the 13 code units in a long-name entry.
const CHAR_OFFSETS: [usize; CHARS_PER_ENTRY] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/// One long-name entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongNameEntry {
    /// `LDIR_Ord` without the last-entry flag: 1 for the first 13 units.
    pub order: u8,
    /// True for the piece that holds the end of the name (stored first).
    pub last: bool,
    /// `LDIR_Chksum`: checksum of the short name this belongs to.
    pub checksum: u8,
    /// The 13 UTF-16 code units.
    pub units: [u16; CHARS_PER_ENTRY],
}

impl LongNameEntry {
    /// Parses a 32-byte long-name entry.
    pub fn parse(raw: &[u8]) -> Option<Self> {
        let ord = *raw.first()?;
        let mut units = [0u16; CHARS_PER_ENTRY];
        for (u, &at) in units.iter_mut().zip(CHAR_OFFSETS.iter()) {
            *u = le_u16(raw, at)?;
        }
        Some(LongNameEntry {
            order: ord & !LAST_LONG_ENTRY,
            last: ord & LAST_LONG_ENTRY != 0,
            checksum: *raw.get(13)?,
            units,
        })
    }
}

/// The long-name entries of `units` (a name's UTF-16 code units, 1 to 255
/// of them) belonging to the short entry whose checksum is `checksum`, in
/// storage order: the last piece (flagged) first, piece 1 just before the
/// short entry. The name ends with a 0 unit when it does not fill its last
/// piece, padded with 0xFFFF. `None` when `units` is empty or too long.
pub fn encode(units: &[u16], checksum: u8) -> Option<Vec<[u8; 32]>> {
    if units.is_empty() || units.len() > 255 {
        return None;
    }
    let count = units.len().div_ceil(CHARS_PER_ENTRY);
    let mut out = Vec::with_capacity(count);
    for n in (1..=count).rev() {
        let mut raw = [0u8; 32];
        let ord = u8::try_from(n).ok()? | if n == count { LAST_LONG_ENTRY } else { 0 };
        let start = (n - 1) * CHARS_PER_ENTRY;
        for (i, &at) in CHAR_OFFSETS.iter().enumerate() {
            let unit = match units.get(start + i) {
                Some(&u) => u,
                None if start + i == units.len() => 0,
                None => 0xffff,
            };
            raw.get_mut(at..at + 2)?
                .copy_from_slice(&unit.to_le_bytes());
        }
        *raw.first_mut()? = ord;
        *raw.get_mut(11)? = ATTR_LONG_NAME;
        *raw.get_mut(13)? = checksum;
        out.push(raw);
    }
    Some(out)
}

/// Collects long-name pieces while a directory is read, in storage order.
#[derive(Default)]
pub struct LongNameBuilder {
    units: Vec<u16>,
    /// Order of the piece expected next (0: none in progress).
    expect: u8,
    checksum: u8,
    active: bool,
}

impl LongNameBuilder {
    /// A builder with nothing collected.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets a chain in progress (a deleted or unrelated entry broke it).
    pub fn reset(&mut self) {
        self.active = false;
        self.expect = 0;
        self.units.clear();
    }

    /// Adds the next long-name entry of the directory.
    pub fn push(&mut self, entry: &LongNameEntry) {
        if entry.last {
            // A new chain starts; any unfinished one was an orphan.
            self.reset();
            if entry.order == 0 || entry.order > MAX_ENTRIES {
                return;
            }
            self.units.clear();
            self.units
                .resize(usize::from(entry.order) * CHARS_PER_ENTRY, 0xffff);
            self.checksum = entry.checksum;
            self.active = true;
            self.expect = entry.order;
        }
        if !self.active
            || entry.order == 0
            || entry.order != self.expect
            || entry.checksum != self.checksum
        {
            self.reset();
            return;
        }
        let start = usize::from(entry.order.saturating_sub(1)) * CHARS_PER_ENTRY;
        if let Some(slot) = self.units.get_mut(start..start + CHARS_PER_ENTRY) {
            slot.copy_from_slice(&entry.units);
        }
        self.expect -= 1;
    }

    /// Ends the chain at a short entry whose 8.3 name has `checksum`; the
    /// long name when the chain is complete and belongs to it.
    pub fn finish(&mut self, checksum: u8) -> Option<String> {
        let complete = self.active && self.expect == 0 && self.checksum == checksum;
        let name = if complete {
            let end = self
                .units
                .iter()
                .position(|&u| u == 0)
                .unwrap_or(self.units.len());
            let units = self.units.get(..end).unwrap_or(&[]);
            let name: String = char::decode_utf16(units.iter().copied())
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect();
            (!name.is_empty()).then_some(name)
        } else {
            None
        };
        self.reset();
        name
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn piece(order: u8, last: bool, checksum: u8, text: &[u16]) -> LongNameEntry {
        let mut units = [0xffffu16; CHARS_PER_ENTRY];
        for (i, u) in text.iter().enumerate() {
            units[i] = *u;
        }
        if text.len() < CHARS_PER_ENTRY {
            units[text.len()] = 0;
        }
        LongNameEntry {
            order,
            last,
            checksum,
            units,
        }
    }

    #[test]
    fn encode_round_trips() {
        for name in [
            "a",
            "abcdefghijklm",
            "abcdefghijklmn",
            "😀 日本語 café",
            &"x".repeat(255),
        ] {
            let units: Vec<u16> = name.encode_utf16().collect();
            let entries = encode(&units, 0x5a).unwrap();
            assert_eq!(entries.len(), units.len().div_ceil(13));
            let mut b = LongNameBuilder::new();
            for e in &entries {
                assert_eq!(e[11], ATTR_LONG_NAME);
                b.push(&LongNameEntry::parse(e).unwrap());
            }
            assert_eq!(b.finish(0x5a).as_deref(), Some(name));
        }
        assert!(encode(&[], 0).is_none());
        assert!(encode(&[b'x'.into(); 256], 0).is_none());
    }

    #[test]
    fn chains() {
        let first: Vec<u16> = "abcdefghijklm".encode_utf16().collect();
        // A surrogate pair split across the boundary of two pieces.
        let mut second: Vec<u16> = "😀x".encode_utf16().collect();
        assert_eq!(second.len(), 3);
        second.truncate(3);
        let mut b = LongNameBuilder::new();
        b.push(&piece(2, true, 7, &second));
        b.push(&piece(1, false, 7, &first));
        assert_eq!(b.finish(7).as_deref(), Some("abcdefghijklm😀x"));
        // Wrong checksum: fall back.
        b.push(&piece(1, true, 7, &first));
        assert_eq!(b.finish(8), None);
        // Missing piece 1: fall back.
        b.push(&piece(2, true, 7, &second));
        assert_eq!(b.finish(7), None);
        // Orphan piece without the last flag.
        b.push(&piece(1, false, 7, &first));
        assert_eq!(b.finish(7), None);
        // A piece numbered 0 after a complete chain is dropped.
        b.push(&piece(1, true, 3, &first));
        b.push(&piece(0, false, 3, &first));
        assert_eq!(b.finish(3), None);
        // A lone surrogate becomes U+FFFD.
        b.push(&piece(1, true, 1, &[0xd800, u16::from(b'a')]));
        assert_eq!(b.finish(1).as_deref(), Some("\u{fffd}a"));
    }
}
