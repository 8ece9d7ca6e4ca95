//! The metadata log: a circular buffer of entries, each a set of 4 KiB
//! sector writes (data descriptors) and zeroed ranges (zero descriptors)
//! that a writer logs before it updates the file in place. When the
//! header's LogGuid is set, the active sequence of entries must be
//! replayed before the metadata can be trusted.
//!
//! This reader never writes the file: it replays the active sequence into
//! an in-memory [`Overlay`] of replaced sectors that every later read of
//! the file (region table, metadata, BAT, sector bitmaps, payload) goes
//! through.

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use disk_io::bytes::{le_u32, le_u64};
use disk_io::{Error, ReadAt, Result};

use super::header::{CHECKSUM_AT, Guid, Header, checksum};

/// Log sectors are 4 KiB.
pub const SECTOR: u64 = 4096;
/// "loge".
const ENTRY_SIGNATURE: u32 = 0x6567_6f6c;
/// "zero".
const ZERO_SIGNATURE: u32 = 0x6f72_657a;
/// "desc".
const DATA_SIGNATURE: u32 = 0x6373_6564;
/// "data".
const SECTOR_SIGNATURE: u32 = 0x6174_6164;
/// Bytes of an entry header before its descriptors.
const ENTRY_HEADER: u64 = 64;
/// Bytes of a descriptor.
const DESCRIPTOR: u64 = 32;

/// Replaced byte ranges of the file: whole 4 KiB sectors with new
/// contents, or ranges that read as zeros.
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    /// Non-overlapping pieces by start offset: (end, contents or zeros).
    pieces: BTreeMap<u64, (u64, Option<Vec<u8>>)>,
}

impl Overlay {
    /// True when nothing is replaced.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Number of replaced pieces.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// The replaced pieces in file order: start, end, and the new bytes
    /// (`None`: zeros).
    pub fn pieces(&self) -> impl Iterator<Item = (u64, u64, Option<&[u8]>)> {
        self.pieces.iter().map(|(&s, (e, d))| (s, *e, d.as_deref()))
    }

    /// Replaces `start..end` with `data` (its length is `end - start`) or
    /// zeros, over whatever was replaced before.
    fn insert(&mut self, start: u64, end: u64, data: Option<Vec<u8>>) {
        let overlapping: Vec<u64> = self
            .pieces
            .range(..end)
            .rev()
            .take_while(|(_, (e, _))| *e > start)
            .map(|(s, _)| *s)
            .collect();
        for s in overlapping {
            let Some((e, old)) = self.pieces.remove(&s) else {
                continue;
            };
            // Keep what sticks out on either side.
            if s < start {
                let keep = old
                    .as_ref()
                    .and_then(|d| d.get(..(start - s) as usize).map(<[u8]>::to_vec));
                self.pieces.insert(s, (start, keep));
            }
            if e > end {
                let keep = old
                    .as_ref()
                    .and_then(|d| d.get((end - s) as usize..).map(<[u8]>::to_vec));
                self.pieces.insert(end, (e, keep));
            }
        }
        self.pieces.insert(start, (end, data));
    }

    /// Patches `buf`, just read from the file at `offset`, with the
    /// replaced bytes it overlaps.
    pub fn apply(&self, offset: u64, buf: &mut [u8]) {
        let end = offset.saturating_add(buf.len() as u64);
        // The piece starting before `offset` may reach into the buffer.
        let first = self
            .pieces
            .range(..=offset)
            .next_back()
            .map(|(s, _)| *s)
            .unwrap_or(offset);
        for (&s, (e, data)) in self.pieces.range(first..end) {
            let from = s.max(offset);
            let to = (*e).min(end);
            if from >= to {
                continue;
            }
            let dst = buf.get_mut((from - offset) as usize..(to - offset) as usize);
            let Some(dst) = dst else { continue };
            match data {
                None => dst.fill(0),
                Some(d) => {
                    if let Some(src) = d.get((from - s) as usize..(to - s) as usize) {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
    }

    /// One past the last replaced data byte (0 when none).
    pub fn data_end(&self) -> u64 {
        self.pieces
            .iter()
            .filter(|(_, (_, d))| d.is_some())
            .map(|(_, (e, _))| *e)
            .max()
            .unwrap_or(0)
    }
}

/// What the log held.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// The sectors the active sequence replaces.
    pub overlay: Overlay,
    /// Entries replayed.
    pub entries: u64,
    /// Sequence number of the head entry (0 when nothing was replayed).
    pub head_sequence: u64,
    /// The file must be at least this long for the log to be replayable.
    pub flushed_file_offset: u64,
    /// The file is this long after replay.
    pub last_file_offset: u64,
}

/// A checked log entry.
struct Entry {
    /// Offset in the log.
    pos: u64,
    length: u64,
    tail: u64,
    sequence: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
}

/// Finds the active sequence of the log `header` names and replays it in
/// memory. `None` when the header's LogGuid is zero (a clean file).
pub fn replay<D: ReadAt + ?Sized>(file: &D, header: &Header) -> Result<Option<Replay>> {
    if header.log_guid.is_zero() {
        return Ok(None);
    }
    let length = u64::from(header.log_length);
    let at = header.log_offset;
    if length == 0 || at.checked_add(length).is_none_or(|end| end > file.size()) {
        return Err(Error::corrupt(
            format!(
                "vhdx log at {at:#x} ({length} bytes) is empty or ends past the end of the {}-byte file",
                file.size()
            ),
            header.offset() + 68,
        ));
    }
    // Bounded by the file size, checked just above.
    let log = disk_io::read_vec(file, at, length as usize).map_err(|e| e.context("vhdx log"))?;
    let sectors = length / SECTOR;
    let mut memo: Vec<Option<Option<Entry>>> = (0..sectors).map(|_| None).collect();
    let mut entry_at = |pos: u64| -> Option<(u64, u64, u64, u64)> {
        let slot = memo.get_mut((pos / SECTOR) as usize)?;
        if slot.is_none() {
            *slot = Some(parse_entry(&log, pos, header.log_guid, at, None).ok());
        }
        slot.as_ref()
            .and_then(|e| e.as_ref())
            .map(|e| (e.pos, e.length, e.tail, e.sequence))
    };

    // (positions of the entries to replay, tail first; head sequence number)
    let mut best: Option<(Vec<u64>, u64)> = None;
    // Walks never revisit an entry (sequence numbers only grow), and a
    // walk that does not wrap lets the scan skip past it, so a log costs
    // a few passes; the budget bounds what crafted logs can make it do.
    let mut budget = sectors.saturating_mul(16);
    let mut s = 0u64;
    while s < sectors {
        let Some(first) = entry_at(s * SECTOR) else {
            s += 1;
            continue;
        };
        let mut seq = vec![first];
        let mut last = first;
        let mut wraps = false;
        while (seq.len() as u64) < sectors {
            budget = budget.checked_sub(1).ok_or_else(|| {
                Error::corrupt(
                    "vhdx log: too many overlapping entry sequences to search",
                    at,
                )
            })?;
            let next = (last.0 + last.1) % length;
            match entry_at(next) {
                Some(e) if Some(e.3) == last.3.checked_add(1) => {
                    wraps |= e.0 < last.0;
                    seq.push(e);
                    last = e;
                }
                _ => break,
            }
        }
        // Valid when the head's tail is one of the sequence's entries.
        if let Some(i) = seq.iter().position(|e| e.0 == last.2) {
            if best.as_ref().is_none_or(|b| last.3 > b.1) {
                let positions = seq.get(i..).unwrap_or(&[]).iter().map(|e| e.0).collect();
                best = Some((positions, last.3));
            }
        }
        // A later start inside this walk finds a suffix of it: the same
        // head, never a better sequence.
        let end = last.0 + last.1;
        s = if !wraps && end > s * SECTOR {
            end.div_ceil(SECTOR)
        } else {
            s + (first.1 / SECTOR).max(1)
        };
    }
    let Some((positions, head_sequence)) = best else {
        return Ok(Some(Replay::default()));
    };
    let mut replay = Replay {
        head_sequence,
        ..Replay::default()
    };
    for pos in positions {
        let e = parse_entry(&log, pos, header.log_guid, at, Some(&mut replay.overlay))?;
        replay.entries += 1;
        replay.flushed_file_offset = e.flushed_file_offset;
        replay.last_file_offset = e.last_file_offset;
    }
    if replay.flushed_file_offset > file.size() {
        return Err(Error::corrupt(
            format!(
                "vhdx log head entry {head_sequence} needs a file of at least {} bytes (FlushedFileOffset); it has {}: the file was truncated",
                replay.flushed_file_offset,
                file.size()
            ),
            at,
        ));
    }
    Ok(Some(replay))
}

/// `len` bytes of the circular log from `pos`, wrapping at its end.
fn wrapped(log: &[u8], pos: u64, len: u64) -> Option<Cow<'_, [u8]>> {
    let total = log.len() as u64;
    if len > total || pos >= total {
        return None;
    }
    if pos + len <= total {
        return log
            .get(pos as usize..(pos + len) as usize)
            .map(Cow::Borrowed);
    }
    let mut v = log.get(pos as usize..)?.to_vec();
    v.extend_from_slice(log.get(..(pos + len - total) as usize)?);
    Some(Cow::Owned(v))
}

/// Checks the entry at `pos` of `log` (at file offset `log_at`); with
/// `into`, also replays its descriptors there.
fn parse_entry(
    log: &[u8],
    pos: u64,
    guid: Guid,
    log_at: u64,
    into: Option<&mut Overlay>,
) -> Result<Entry> {
    let file_at = log_at + pos;
    let bad = |what: &str| {
        Error::corrupt(
            format!("vhdx log entry at log offset {pos:#x}: {what}"),
            file_at,
        )
    };
    let head = wrapped(log, pos, ENTRY_HEADER).ok_or_else(|| bad("past the end of the log"))?;
    if le_u32(&head, 0) != Some(ENTRY_SIGNATURE) {
        return Err(bad("signature (expected 'loge')"));
    }
    let length = u64::from(le_u32(&head, 8).unwrap_or(0));
    let tail = u64::from(le_u32(&head, 12).unwrap_or(0));
    let sequence = le_u64(&head, 16).unwrap_or(0);
    let count = u64::from(le_u32(&head, 24).unwrap_or(0));
    if Guid::at(&head, 32) != guid {
        return Err(bad("LogGuid differs from the header's"));
    }
    let total = log.len() as u64;
    if length == 0 || !length.is_multiple_of(SECTOR) || length > total {
        return Err(bad(
            "length not a non-zero multiple of 4 KiB inside the log",
        ));
    }
    if !tail.is_multiple_of(SECTOR) || tail >= total {
        return Err(bad("tail not a 4 KiB aligned offset inside the log"));
    }
    let desc_sectors = (ENTRY_HEADER + count * DESCRIPTOR).div_ceil(SECTOR);
    if desc_sectors > length / SECTOR {
        return Err(bad("descriptors do not fit the entry"));
    }
    let bytes = wrapped(log, pos, length).ok_or_else(|| bad("past the end of the log"))?;
    let stored = le_u32(&bytes, CHECKSUM_AT).unwrap_or(0);
    if checksum(&bytes) != stored {
        return Err(bad("checksum"));
    }
    let entry = Entry {
        pos,
        length,
        tail,
        sequence,
        flushed_file_offset: le_u64(&head, 48).unwrap_or(0),
        last_file_offset: le_u64(&head, 56).unwrap_or(0),
    };
    let mut overlay = into;
    let mut data_sector = desc_sectors;
    for i in 0..count {
        let d = (ENTRY_HEADER + i * DESCRIPTOR) as usize;
        let sig = le_u32(&bytes, d).unwrap_or(0);
        let offset = le_u64(&bytes, d + 16).unwrap_or(0);
        if le_u64(&bytes, d + 24) != Some(sequence) {
            return Err(bad(&format!(
                "descriptor {i} sequence number differs from the entry's"
            )));
        }
        if !offset.is_multiple_of(SECTOR) {
            return Err(bad(&format!(
                "descriptor {i} file offset {offset:#x} not 4 KiB aligned"
            )));
        }
        match sig {
            ZERO_SIGNATURE => {
                let len = le_u64(&bytes, d + 8).unwrap_or(0);
                let end = offset.checked_add(len);
                if !len.is_multiple_of(SECTOR) || end.is_none() {
                    return Err(bad(&format!("zero descriptor {i} length {len:#x}")));
                }
                if let (Some(o), Some(end)) = (overlay.as_deref_mut(), end) {
                    if len > 0 {
                        o.insert(offset, end, None);
                    }
                }
            }
            DATA_SIGNATURE => {
                let s = (data_sector * SECTOR) as usize;
                data_sector += 1;
                let sector = bytes.get(s..s + SECTOR as usize).ok_or_else(|| {
                    bad(&format!(
                        "data descriptor {i}: its data sector is past the entry"
                    ))
                })?;
                let high = le_u32(sector, 4).unwrap_or(0);
                let low = le_u32(sector, 4092).unwrap_or(0);
                if le_u32(sector, 0) != Some(SECTOR_SIGNATURE)
                    || (u64::from(high) << 32 | u64::from(low)) != sequence
                {
                    return Err(bad(&format!(
                        "data sector of descriptor {i}: signature or sequence number"
                    )));
                }
                if let Some(o) = overlay.as_deref_mut() {
                    let mut full = vec![0u8; SECTOR as usize];
                    // Leading 8 bytes and trailing 4 live in the descriptor.
                    if let (Some(dst), Some(src)) = (full.get_mut(..8), bytes.get(d + 8..d + 16)) {
                        dst.copy_from_slice(src);
                    }
                    if let (Some(dst), Some(src)) = (full.get_mut(8..4092), sector.get(8..4092)) {
                        dst.copy_from_slice(src);
                    }
                    if let (Some(dst), Some(src)) = (full.get_mut(4092..), bytes.get(d + 4..d + 8))
                    {
                        dst.copy_from_slice(src);
                    }
                    o.insert(offset, offset + SECTOR, Some(full));
                }
            }
            _ => return Err(bad(&format!("descriptor {i} signature"))),
        }
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_pieces_replace_earlier_ones() {
        let mut o = Overlay::default();
        o.insert(0, 4 * SECTOR, None);
        o.insert(SECTOR, 2 * SECTOR, Some(vec![7; SECTOR as usize]));
        o.insert(3 * SECTOR, 4 * SECTOR, Some(vec![9; SECTOR as usize]));
        o.insert(3 * SECTOR, 5 * SECTOR, None);
        assert_eq!(o.len(), 4);
        let mut buf = vec![1u8; 6 * SECTOR as usize];
        o.apply(0, &mut buf);
        let at = |i: u64| buf[(i * SECTOR) as usize];
        assert_eq!(
            [at(0), at(1), at(2), at(3), at(4), at(5)],
            [0, 7, 0, 0, 0, 1]
        );
        // Reads that start inside a piece.
        let mut part = vec![1u8; 10];
        o.apply(SECTOR + 100, &mut part);
        assert_eq!(part, vec![7; 10]);
        assert_eq!(o.data_end(), 2 * SECTOR);
    }

    #[test]
    fn wrapped_reads_continue_at_the_start() {
        let log: Vec<u8> = (0..8u8).collect();
        assert_eq!(&*wrapped(&log, 6, 4).unwrap(), &[6, 7, 0, 1]);
        assert!(wrapped(&log, 6, 9).is_none());
        assert!(wrapped(&log, 8, 1).is_none());
    }
    /// A log entry: (file offset, Some(sector) | None for a zero range of 8 KiB).
    fn entry(seq: u64, tail: u32, guid: Guid, descs: &[(u64, Option<u8>)]) -> Vec<u8> {
        let data: Vec<_> = descs.iter().filter(|d| d.1.is_some()).collect();
        let desc_sectors = (64 + 32 * descs.len() as u64).div_ceil(SECTOR);
        let len = (desc_sectors + data.len() as u64) * SECTOR;
        let mut e = vec![0u8; len as usize];
        e[..4].copy_from_slice(b"loge");
        e[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        e[12..16].copy_from_slice(&tail.to_le_bytes());
        e[16..24].copy_from_slice(&seq.to_le_bytes());
        e[24..28].copy_from_slice(&(descs.len() as u32).to_le_bytes());
        e[32..48].copy_from_slice(&guid.0);
        e[56..64].copy_from_slice(&(3u64 << 20).to_le_bytes());
        let mut k = desc_sectors as usize;
        for (i, (offset, fill)) in descs.iter().enumerate() {
            let d = 64 + 32 * i;
            e[d + 16..d + 24].copy_from_slice(&offset.to_le_bytes());
            e[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
            match fill {
                None => {
                    e[d..d + 4].copy_from_slice(b"zero");
                    e[d + 8..d + 16].copy_from_slice(&(2 * SECTOR).to_le_bytes());
                }
                Some(b) => {
                    e[d..d + 4].copy_from_slice(b"desc");
                    e[d + 4..d + 8].fill(*b); // trailing bytes
                    e[d + 8..d + 16].fill(*b); // leading bytes
                    let s = k * SECTOR as usize;
                    e[s..s + 4].copy_from_slice(b"data");
                    e[s + 4..s + 8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
                    e[s + 8..s + 4092].fill(*b);
                    e[s + 4092..s + 4096].copy_from_slice(&(seq as u32).to_le_bytes());
                    k += 1;
                }
            }
        }
        let crc = checksum(&e);
        e[4..8].copy_from_slice(&crc.to_le_bytes());
        e
    }

    #[test]
    fn active_sequence_wraps_and_replays_in_order() {
        let guid = Guid([7; 16]);
        let log_at = 1u64 << 20;
        let log_len = 1usize << 20;
        let mut file = vec![0xeeu8; (2 << 20) + 4096];
        let mut put = |pos: usize, e: &[u8]| {
            for (i, b) in e.iter().enumerate() {
                file[log_at as usize + (pos + i) % log_len] = *b;
            }
        };
        // Entry A wraps around the end of the log; B follows it; a stale
        // entry and one of another log are ignored.
        let a_pos = log_len - 8192;
        let a = entry(
            10,
            a_pos as u32,
            guid,
            &[(0x1000, Some(0x11)), (0x4000, None), (0x2000, Some(0x22))],
        );
        assert_eq!(a.len(), 12288);
        put(a_pos, &a);
        put(
            4096,
            &entry(11, a_pos as u32, guid, &[(0x1000, Some(0x33))]),
        );
        put(64 << 10, &entry(5, 64 << 10, guid, &[(0x1000, Some(0x44))]));
        put(
            128 << 10,
            &entry(50, 128 << 10, Guid([8; 16]), &[(0x1000, Some(0x55))]),
        );
        let header = Header {
            copy: 0,
            sequence_number: 1,
            file_write_guid: Guid::default(),
            data_write_guid: Guid::default(),
            log_guid: guid,
            log_version: 0,
            version: 1,
            log_length: log_len as u32,
            log_offset: log_at,
        };
        let r = replay(&file[..], &header).unwrap().unwrap();
        assert_eq!((r.entries, r.head_sequence), (2, 11));
        assert_eq!(r.last_file_offset, 3 << 20);
        let mut buf = vec![0xeeu8; 0x6000];
        r.overlay.apply(0, &mut buf);
        assert!(buf[..0x1000].iter().all(|&b| b == 0xee));
        assert!(buf[0x1000..0x2000].iter().all(|&b| b == 0x33));
        assert!(buf[0x2000..0x3000].iter().all(|&b| b == 0x22));
        assert!(buf[0x3000..0x4000].iter().all(|&b| b == 0xee));
        assert!(buf[0x4000..0x6000].iter().all(|&b| b == 0));

        // The file is shorter than the head entry says it was flushed to.
        let mut tiny = file.clone();
        let flushed = (tiny.len() as u64 + 1).to_le_bytes();
        let at = log_at as usize + 4096; // entry B, the head
        tiny[at + 48..at + 56].copy_from_slice(&flushed);
        let crc = checksum(&tiny[at..at + 8192]);
        tiny[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        let err = replay(&tiny[..], &header).unwrap_err();
        assert!(err.to_string().contains("FlushedFileOffset"), "{err}");
    }
}
