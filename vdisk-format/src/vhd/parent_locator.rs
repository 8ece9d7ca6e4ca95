//! Parent locator entries of a differencing disk's dynamic header, and
//! the names they give for the parent.
//!
//! Each entry is 24 bytes: platform code (0), platform data space in
//! sectors (4), platform data length in bytes (8), reserved (12) and the
//! file offset of the platform data (16).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use disk_io::bytes::{be_u32, be_u64};
use disk_io::{Error, ReadAt, Result};

/// Longest locator data read (a path; the specification reserves a few
/// sectors for it).
pub const MAX_DATA: u32 = 64 << 10;

/// What kind of path a locator holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// `W2ru`: Windows relative path, UTF-16LE.
    W2ru,
    /// `W2ku`: Windows absolute path, UTF-16LE.
    W2ku,
    /// `Wi2r`: Windows relative path, ANSI (deprecated).
    Wi2r,
    /// `Wi2k`: Windows absolute path, ANSI (deprecated).
    Wi2k,
    /// `MacX`: a `file://` URL, UTF-8.
    MacX,
    /// `Mac `: a Mac OS alias record (not a path: not followed).
    Mac,
}

impl Platform {
    fn from_code(code: u32) -> Option<Platform> {
        Some(match &code.to_be_bytes() {
            b"W2ru" => Platform::W2ru,
            b"W2ku" => Platform::W2ku,
            b"Wi2r" => Platform::Wi2r,
            b"Wi2k" => Platform::Wi2k,
            b"MacX" => Platform::MacX,
            b"Mac " => Platform::Mac,
            _ => return None,
        })
    }

    /// The platform code as the specification spells it.
    pub fn code(self) -> &'static str {
        match self {
            Platform::W2ru => "W2ru",
            Platform::W2ku => "W2ku",
            Platform::Wi2r => "Wi2r",
            Platform::Wi2k => "Wi2k",
            Platform::MacX => "MacX",
            Platform::Mac => "Mac ",
        }
    }

    /// Order in which locators are tried: relative paths first.
    fn rank(self) -> u8 {
        match self {
            Platform::W2ru => 0,
            Platform::Wi2r => 1,
            Platform::W2ku => 2,
            Platform::Wi2k => 3,
            Platform::MacX => 4,
            Platform::Mac => 5,
        }
    }
}

/// One parent locator entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentLocator {
    /// File offset of the entry itself.
    pub entry_offset: u64,
    /// Kind of path.
    pub platform: Platform,
    /// Bytes of platform data.
    pub data_length: u32,
    /// File offset of the platform data.
    pub data_offset: u64,
}

impl ParentLocator {
    /// The entry in the 24 bytes `e` at `entry_offset`; `None` for an
    /// unused entry or a platform code this reader does not know.
    pub fn parse(e: &[u8], entry_offset: u64) -> Option<ParentLocator> {
        let platform = Platform::from_code(be_u32(e, 0)?)?;
        Some(ParentLocator {
            entry_offset,
            platform,
            data_length: be_u32(e, 8)?,
            data_offset: be_u64(e, 16)?,
        })
    }

    /// Reads the locator's path from `file`, as a relative or absolute
    /// path with `/` separators (or `None` for a Mac alias).
    pub fn path<D: ReadAt + ?Sized>(&self, file: &D) -> Result<Option<String>> {
        if self.platform == Platform::Mac {
            return Ok(None);
        }
        let at = self.entry_offset;
        if self.data_length > MAX_DATA
            || self
                .data_offset
                .checked_add(u64::from(self.data_length))
                .is_none_or(|e| e > file.size())
        {
            return Err(Error::corrupt(
                format!(
                    "vhd parent locator {} ({} bytes at {:#x}) past the end of the file or too long",
                    self.platform.code(),
                    self.data_length,
                    self.data_offset
                ),
                at,
            ));
        }
        let data = disk_io::read_vec(file, self.data_offset, self.data_length as usize)?;
        let text: String = match self.platform {
            // UTF-16LE, as VHDX stores its parent locator too.
            Platform::W2ru | Platform::W2ku => crate::vhdx::file_identifier::utf16le(&data),
            Platform::Wi2r | Platform::Wi2k => data
                .iter()
                .take_while(|&&b| b != 0)
                .map(|&b| char::from(b))
                .collect(),
            Platform::MacX => {
                let s = String::from_utf8_lossy(&data);
                let s = s.trim_end_matches('\0');
                let s = s.strip_prefix("file://").unwrap_or(s);
                let s = s.strip_prefix("localhost").unwrap_or(s);
                return Ok(Some(percent_decode(s)));
            }
            Platform::Mac => return Ok(None),
        };
        Ok(Some(text.replace('\\', "/")))
    }
}

/// `%xx` escapes of a URL path decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|&h| char::from(h).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The names to try for the parent, best first: the locators' paths
/// (relative ones first; a Windows absolute path such as `C:/vm/p.vhd` by
/// its file name, looked for beside the child), then the parent unicode
/// name of the header. Unreadable locators are skipped.
pub fn candidates<D: ReadAt + ?Sized>(
    file: &D,
    locators: &[ParentLocator],
    unicode_name: &str,
) -> Vec<String> {
    let mut sorted: Vec<&ParentLocator> = locators.iter().collect();
    sorted.sort_by_key(|l| l.platform.rank());
    let mut out: Vec<String> = Vec::new();
    let mut add = |name: String| {
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    };
    for l in sorted {
        if let Ok(Some(path)) = l.path(file) {
            let windows_absolute = matches!(l.platform, Platform::W2ku | Platform::Wi2k)
                || path.as_bytes().get(1) == Some(&b':')
                || path.starts_with("//");
            if windows_absolute {
                add(file_name(&path));
            } else {
                add(path.strip_prefix("./").unwrap_or(&path).into());
            }
        }
    }
    let name = unicode_name.replace('\\', "/");
    if name.as_bytes().get(1) == Some(&b':') || name.starts_with('/') {
        add(file_name(&name));
    } else {
        add(name);
    }
    out
}

fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// A file with locator data at 512 * (i + 1) and the entries.
    fn file_with(paths: &[(&[u8; 4], Vec<u8>)]) -> (Vec<u8>, Vec<ParentLocator>) {
        let mut file = vec![0u8; 512];
        let mut locators = Vec::new();
        for (i, (code, data)) in paths.iter().enumerate() {
            let mut e = [0u8; 24];
            e[..4].copy_from_slice(*code);
            e[8..12].copy_from_slice(&(data.len() as u32).to_be_bytes());
            e[16..24].copy_from_slice(&(file.len() as u64).to_be_bytes());
            locators.push(ParentLocator::parse(&e, i as u64 * 24).unwrap());
            let mut sector = data.clone();
            sector.resize(512, 0);
            file.extend_from_slice(&sector);
        }
        (file, locators)
    }

    fn utf16le(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    #[test]
    fn names_in_order_of_preference() {
        let (file, locs) = file_with(&[
            (b"MacX", b"file://localhost/Users/a/My%20Disk.vhd".to_vec()),
            (b"W2ku", utf16le("C:\\VMs\\base.vhd")),
            (b"Wi2r", b".\\old.vhd\0".to_vec()),
            (b"W2ru", utf16le(".\\sub\\base.vhd")),
        ]);
        assert_eq!(
            candidates(&file[..], &locs, "D:\\x\\named.vhd"),
            [
                "sub/base.vhd",
                "old.vhd",
                "base.vhd",
                "/Users/a/My Disk.vhd",
                "named.vhd"
            ]
        );
        assert_eq!(candidates(&file[..], &[], "p.vhd"), ["p.vhd"]);
        assert!(candidates(&file[..], &[], "").is_empty());
    }

    #[test]
    fn unknown_codes_and_bad_data_are_skipped() {
        let mut e = [0u8; 24];
        e[..4].copy_from_slice(b"Wxyz");
        assert!(ParentLocator::parse(&e, 0).is_none());
        e[..4].copy_from_slice(b"W2ru");
        e[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        let l = ParentLocator::parse(&e, 0).unwrap();
        let err = l.path(&[0u8; 512][..]).err().unwrap();
        assert!(err.to_string().contains("vhd parent locator W2ru"));
        assert_eq!(candidates(&[0u8; 512][..], &[l], "p.vhd"), ["p.vhd"]);
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
