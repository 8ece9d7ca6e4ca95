//! The 32-byte short directory entry (specification section 6): the 8.3
//! name, attributes, first cluster, size and DOS dates and times.
//!
//! 8.3 names are decoded as code page 850, the default of mtools and of
//! Linux's `codepage=` mount option for Western European systems; bytes
//! 0x00-0x7F are ASCII either way. Windows NT marks an all-lowercase base
//! name or extension with bits 3 and 4 of byte 12 (`DIR_NTRes`); those
//! flags are applied. Times are the DOS local time read as if it were UTC.

use alloc::string::String;

use disk_io::bytes::{le_u16, le_u32};

bitflags::bitflags! {
    /// `DIR_Attr`, byte 11.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Attributes: u8 {
        /// Writes are refused.
        const READ_ONLY = 0x01;
        /// Not listed by default.
        const HIDDEN = 0x02;
        /// Belongs to the operating system.
        const SYSTEM = 0x04;
        /// The entry is the volume label.
        const VOLUME_ID = 0x08;
        /// The entry is a directory.
        const DIRECTORY = 0x10;
        /// Changed since the last backup.
        const ARCHIVE = 0x20;
    }
}

/// `DIR_Attr` of a long-name entry: read-only, hidden, system, volume ID.
pub const ATTR_LONG_NAME: u8 = 0x0f;
/// Bytes of a directory entry.
pub const ENTRY_SIZE: usize = 32;
/// First name byte of a free (deleted) entry.
pub const DELETED: u8 = 0xe5;
/// First name byte standing for 0xE5 in a live entry (a Kanji lead byte).
const KANJI_E5: u8 = 0x05;
/// `DIR_NTRes` bit: the base name is all lowercase.
pub const NT_LOWER_BASE: u8 = 0x08;
/// `DIR_NTRes` bit: the extension is all lowercase.
pub const NT_LOWER_EXT: u8 = 0x10;

static CP850_HIGH: [char; 128] = [
    '\u{00c7}', '\u{00fc}', '\u{00e9}', '\u{00e2}', '\u{00e4}', '\u{00e0}', '\u{00e5}', '\u{00e7}',
    '\u{00ea}', '\u{00eb}', '\u{00e8}', '\u{00ef}', '\u{00ee}', '\u{00ec}', '\u{00c4}', '\u{00c5}',
    '\u{00c9}', '\u{00e6}', '\u{00c6}', '\u{00f4}', '\u{00f6}', '\u{00f2}', '\u{00fb}', '\u{00f9}',
    '\u{00ff}', '\u{00d6}', '\u{00dc}', '\u{00f8}', '\u{00a3}', '\u{00d8}', '\u{00d7}', '\u{0192}',
    '\u{00e1}', '\u{00ed}', '\u{00f3}', '\u{00fa}', '\u{00f1}', '\u{00d1}', '\u{00aa}', '\u{00ba}',
    '\u{00bf}', '\u{00ae}', '\u{00ac}', '\u{00bd}', '\u{00bc}', '\u{00a1}', '\u{00ab}', '\u{00bb}',
    '\u{2591}', '\u{2592}', '\u{2593}', '\u{2502}', '\u{2524}', '\u{00c1}', '\u{00c2}', '\u{00c0}',
    '\u{00a9}', '\u{2563}', '\u{2551}', '\u{2557}', '\u{255d}', '\u{00a2}', '\u{00a5}', '\u{2510}',
    '\u{2514}', '\u{2534}', '\u{252c}', '\u{251c}', '\u{2500}', '\u{253c}', '\u{00e3}', '\u{00c3}',
    '\u{255a}', '\u{2554}', '\u{2569}', '\u{2566}', '\u{2560}', '\u{2550}', '\u{256c}', '\u{00a4}',
    '\u{00f0}', '\u{00d0}', '\u{00ca}', '\u{00cb}', '\u{00c8}', '\u{0131}', '\u{00cd}', '\u{00ce}',
    '\u{00cf}', '\u{2518}', '\u{250c}', '\u{2588}', '\u{2584}', '\u{00a6}', '\u{00cc}', '\u{2580}',
    '\u{00d3}', '\u{00df}', '\u{00d4}', '\u{00d2}', '\u{00f5}', '\u{00d5}', '\u{00b5}', '\u{00fe}',
    '\u{00de}', '\u{00da}', '\u{00db}', '\u{00d9}', '\u{00fd}', '\u{00dd}', '\u{00af}', '\u{00b4}',
    '\u{00ad}', '\u{00b1}', '\u{2017}', '\u{00be}', '\u{00b6}', '\u{00a7}', '\u{00f7}', '\u{00b8}',
    '\u{00b0}', '\u{00a8}', '\u{00b7}', '\u{00b9}', '\u{00b3}', '\u{00b2}', '\u{25a0}', '\u{00a0}',
];

/// The character of byte `b` in code page 850.
pub fn cp850(b: u8) -> char {
    if b < 0x80 {
        char::from(b)
    } else {
        CP850_HIGH
            .get(usize::from(b - 0x80))
            .copied()
            .unwrap_or(char::REPLACEMENT_CHARACTER)
    }
}

/// A point in time: whole seconds since the Unix epoch plus nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01 00:00:00 UTC.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanoseconds: u32,
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A DOS date (and time, 0 for midnight) as Unix seconds, treating the
/// local time as UTC; `None` for the 0 date ("never") or impossible fields.
pub fn dos_to_unix(date: u16, time: u16) -> Option<i64> {
    if date == 0 {
        return None;
    }
    let year = 1980 + i64::from(date >> 9);
    let month = u32::from((date >> 5) & 0x0f);
    let day = u32::from(date & 0x1f);
    let hour = i64::from(time >> 11);
    let minute = i64::from((time >> 5) & 0x3f);
    let second = i64::from(time & 0x1f) * 2;
    if !(1..=12).contains(&month) || day == 0 || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// The civil date (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// First second a DOS date can hold: 1980-01-01 00:00:00.
pub const DOS_EPOCH: i64 = 315_532_800;
/// Last second a DOS date can hold: 2107-12-31 23:59:59.
pub const DOS_END: i64 = 4_354_819_199;

/// A Unix time as a DOS date, time (2-second units, rounded down) and the
/// 10-millisecond count (0-199) of `DIR_CrtTimeTenth`; times before 1980
/// or after 2107 are clamped to the ends of the range.
pub fn unix_to_dos(t: Timestamp) -> (u16, u16, u8) {
    let (seconds, nanoseconds) = if t.seconds < DOS_EPOCH {
        (DOS_EPOCH, 0)
    } else if t.seconds > DOS_END {
        (DOS_END, 999_999_999)
    } else {
        (t.seconds, t.nanoseconds.min(999_999_999))
    };
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let secs = seconds.rem_euclid(86_400);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let date = ((year - 1980) << 9) as u16 | (month << 5) as u16 | day as u16;
    let time = (hour << 11) as u16 | (minute << 5) as u16 | (second / 2) as u16;
    let tenth = (second % 2) as u32 * 100 + nanoseconds / 10_000_000;
    (date, time, tenth as u8)
}

/// A short (8.3) directory entry as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortEntry {
    /// `DIR_Name`: 8 bytes of base name, 3 of extension, space padded.
    pub name: [u8; 11],
    /// `DIR_Attr`.
    pub attributes: Attributes,
    /// `DIR_NTRes`: lowercase flags.
    pub nt_flags: u8,
    /// `DIR_CrtTimeTenth`: 10 ms units (0-199) added to the creation time.
    pub create_time_tenth: u8,
    /// `DIR_CrtTime`.
    pub create_time: u16,
    /// `DIR_CrtDate`.
    pub create_date: u16,
    /// `DIR_LstAccDate`.
    pub access_date: u16,
    /// `DIR_FstClusHI` (FAT32 only).
    pub cluster_high: u16,
    /// `DIR_WrtTime`.
    pub write_time: u16,
    /// `DIR_WrtDate`.
    pub write_date: u16,
    /// `DIR_FstClusLO`.
    pub cluster_low: u16,
    /// `DIR_FileSize`.
    pub size: u32,
}

/// What one 32-byte slot of a directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// First byte 0: this and every later slot are free.
    End,
    /// A deleted entry (first byte 0xE5).
    Deleted,
    /// A piece of a long name.
    LongName(crate::long_name::LongNameEntry),
    /// A short entry: file, directory, `.`/`..` or volume label.
    Short(ShortEntry),
}

impl Slot {
    /// Parses one 32-byte slot; `None` when `raw` is shorter than 32 bytes.
    pub fn parse(raw: &[u8]) -> Option<Slot> {
        let raw = raw.get(..ENTRY_SIZE)?;
        let first = *raw.first()?;
        let attr = *raw.get(11)?;
        if first == 0 {
            return Some(Slot::End);
        }
        if first == DELETED {
            return Some(Slot::Deleted);
        }
        if attr & 0x3f == ATTR_LONG_NAME {
            return crate::long_name::LongNameEntry::parse(raw).map(Slot::LongName);
        }
        let mut name = [0u8; 11];
        name.copy_from_slice(raw.get(..11)?);
        let u16_at = |at| le_u16(raw, at).unwrap_or(0);
        Some(Slot::Short(ShortEntry {
            name,
            attributes: Attributes::from_bits_truncate(attr),
            nt_flags: *raw.get(12)?,
            create_time_tenth: *raw.get(13)?,
            create_time: u16_at(14),
            create_date: u16_at(16),
            access_date: u16_at(18),
            cluster_high: u16_at(20),
            write_time: u16_at(22),
            write_date: u16_at(24),
            cluster_low: u16_at(26),
            size: le_u32(raw, 28).unwrap_or(0),
        }))
    }
}

impl ShortEntry {
    /// The long-name checksum of this entry's 8.3 name (section 7).
    pub fn checksum(&self) -> u8 {
        self.name
            .iter()
            .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
    }

    /// True for the `.` and `..` entries of a subdirectory.
    pub fn is_dot(&self) -> bool {
        self.name == *b".          " || self.name == *b"..         "
    }

    /// True for the volume label entry.
    pub fn is_volume_label(&self) -> bool {
        self.attributes.contains(Attributes::VOLUME_ID)
            && !self.attributes.contains(Attributes::DIRECTORY)
    }

    /// The first cluster; the high half counts on FAT32 only.
    pub fn first_cluster(&self, fat32: bool) -> u32 {
        let high = if fat32 {
            u32::from(self.cluster_high)
        } else {
            0
        };
        high << 16 | u32::from(self.cluster_low)
    }

    fn part(bytes: &[u8], lower: bool, out: &mut String) {
        let len = bytes.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
        for (i, &b) in bytes.iter().take(len).enumerate() {
            let b = if i == 0 && b == KANJI_E5 { DELETED } else { b };
            let c = cp850(b);
            if lower {
                out.extend(c.to_lowercase());
            } else {
                out.push(c);
            }
        }
    }

    /// The 8.3 name as shown: `NAME.EXT`, lowercase flags applied.
    pub fn display_name(&self) -> String {
        let mut out = String::new();
        let (base, ext) = self.name.split_at(8);
        Self::part(base, self.nt_flags & NT_LOWER_BASE != 0, &mut out);
        if ext.iter().any(|&b| b != b' ') {
            out.push('.');
            Self::part(ext, self.nt_flags & NT_LOWER_EXT != 0, &mut out);
        }
        out
    }

    /// The 32 bytes of this entry as stored.
    pub fn to_bytes(&self) -> [u8; ENTRY_SIZE] {
        let mut raw = [0u8; ENTRY_SIZE];
        let fields: [(usize, &[u8]); 12] = [
            (0, &self.name),
            (11, &[self.attributes.bits()]),
            (12, &[self.nt_flags]),
            (13, &[self.create_time_tenth]),
            (14, &self.create_time.to_le_bytes()),
            (16, &self.create_date.to_le_bytes()),
            (18, &self.access_date.to_le_bytes()),
            (20, &self.cluster_high.to_le_bytes()),
            (22, &self.write_time.to_le_bytes()),
            (24, &self.write_date.to_le_bytes()),
            (26, &self.cluster_low.to_le_bytes()),
            (28, &self.size.to_le_bytes()),
        ];
        for (at, bytes) in fields {
            if let Some(dst) = raw.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        raw
    }

    /// Sets the first cluster (both halves; the high one is 0 below FAT32).
    pub fn set_first_cluster(&mut self, cluster: u32) {
        self.cluster_low = cluster as u16;
        self.cluster_high = (cluster >> 16) as u16;
    }

    /// The volume label as stored (11 bytes, trailing spaces removed).
    pub fn label(&self) -> String {
        let mut out: String = self.name.iter().map(|&b| cp850(b)).collect();
        out.truncate(out.trim_end_matches(' ').len());
        out
    }

    /// Last modification time.
    pub fn modified(&self) -> Option<Timestamp> {
        dos_to_unix(self.write_date, self.write_time).map(|seconds| Timestamp {
            seconds,
            nanoseconds: 0,
        })
    }

    /// Creation time, with its 10 ms part.
    pub fn created(&self) -> Option<Timestamp> {
        let seconds = dos_to_unix(self.create_date, self.create_time)?;
        let tenth = u32::from(self.create_time_tenth.min(199));
        Some(Timestamp {
            seconds: seconds + i64::from(tenth / 100),
            nanoseconds: (tenth % 100) * 10_000_000,
        })
    }

    /// Last access date (midnight).
    pub fn accessed(&self) -> Option<Timestamp> {
        dos_to_unix(self.access_date, 0).map(|seconds| Timestamp {
            seconds,
            nanoseconds: 0,
        })
    }
}

/// A directory entry as a reader sees it: the short entry with its long
/// name resolved and its place on the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The long name when a valid one precedes the short entry, else the
    /// 8.3 name with lowercase flags applied.
    pub name: String,
    /// The 8.3 name (lowercase flags applied).
    pub short_name: String,
    /// True when `name` comes from a long-name chain.
    pub has_long_name: bool,
    /// Attributes.
    pub attributes: Attributes,
    /// First cluster (0: none; for a directory, 0 means the root).
    pub first_cluster: u32,
    /// Size in bytes (0 for directories).
    pub size: u32,
    /// Creation time (10 ms resolution).
    pub created: Option<Timestamp>,
    /// Last modification time (2 s resolution).
    pub modified: Option<Timestamp>,
    /// Last access date.
    pub accessed: Option<Timestamp>,
    /// Byte offset of the short entry in the volume (0 for the root).
    pub offset: u64,
}

impl DirEntry {
    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.attributes.contains(Attributes::DIRECTORY)
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        // 1980-01-01 00:00:00
        assert_eq!(dos_to_unix(0x21, 0), Some(315_532_800));
        // 2023-11-14 22:13:20 = 1700000000
        let date = ((2023 - 1980) << 9) | (11 << 5) | 14;
        let time = (22 << 11) | (13 << 5) | 10;
        assert_eq!(dos_to_unix(date, time), Some(1_700_000_000));
        assert_eq!(dos_to_unix(0, 0), None);
        assert_eq!(dos_to_unix(0x21 | 13 << 5, 0), None);
    }

    #[test]
    fn dates_round_trip() {
        for secs in [
            DOS_EPOCH,
            1_700_000_000,
            1_600_000_007,
            951_782_400,
            DOS_END - 1,
        ] {
            let (d, t, tenth) = unix_to_dos(Timestamp {
                seconds: secs,
                nanoseconds: 250_000_000,
            });
            assert_eq!(dos_to_unix(d, t), Some(secs - secs % 2), "{secs}");
            assert_eq!(u32::from(tenth), (secs % 2) as u32 * 100 + 25);
        }
        let (d, t, _) = unix_to_dos(Timestamp {
            seconds: 0,
            nanoseconds: 0,
        });
        assert_eq!(dos_to_unix(d, t), Some(DOS_EPOCH));
        let raw = [7u8; 32];
        let Some(Slot::Short(e)) = Slot::parse(&raw) else {
            panic!("not short")
        };
        assert_eq!(e.to_bytes(), raw);
    }

    #[test]
    fn names_and_checksum() {
        let mut raw = [0u8; 32];
        raw[..11].copy_from_slice(b"\x05BC     TXT");
        raw[12] = NT_LOWER_EXT;
        let Some(Slot::Short(e)) = Slot::parse(&raw) else {
            panic!("not short")
        };
        assert_eq!(e.display_name(), "\u{d5}BC.txt");
        assert_eq!(cp850(0x82), 'é');
        let mut raw2 = [0u8; 32];
        raw2[..11].copy_from_slice(b"THISIS~1   ");
        let Some(Slot::Short(e)) = Slot::parse(&raw2) else {
            panic!("not short")
        };
        assert_eq!(e.display_name(), "THISIS~1");
        // Known checksum of "THISIS~1   " computed by hand with the
        // specification's rotate-and-add.
        let mut sum = 0u8;
        for &b in b"THISIS~1   " {
            sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(sum >> 1)
                .wrapping_add(b);
        }
        assert_eq!(e.checksum(), sum);
    }
}
