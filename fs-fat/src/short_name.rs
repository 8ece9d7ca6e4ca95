//! Long names to 8.3 names (specification section 7.4, "Basis-Name
//! Generation" and "Numeric-Tail Generation"), the way Windows does it.
//!
//! A name that fits 8.3 as it is (ASCII, a base of 1 to 8 and an
//! extension of 0 to 3 allowed characters, each part in one case) is
//! stored as a short entry alone, with the Windows NT lowercase flags for
//! a lowercase part. Any other name gets a long-name chain and an alias:
//! the basis name (uppercase, spaces and extra periods dropped, characters
//! an 8.3 name cannot hold turned into `_`) with a numeric tail `~1`,
//! `~2`, ... when the conversion lost anything or the name did not fit,
//! and from the fifth alias on a hash of the long name, as Windows does,
//! so that thousands of similar names do not probe thousands of tails.
//!
//! Only ASCII goes into 8.3 names: bytes above 0x7F mean different
//! characters in different code pages, so accented and other non-ASCII
//! letters become `_` in the alias and live in the long name only.

use alloc::string::String;
use alloc::vec::Vec;

use disk_io::{Error, Result};

use crate::dir_entry::{NT_LOWER_BASE, NT_LOWER_EXT};

/// Characters an 8.3 name may hold besides `A`-`Z` and `0`-`9`.
const SPECIAL: &[u8] = b"$%'-_@~`!(){}^#&";
/// Characters no FAT name may hold (besides control characters).
const FORBIDDEN: &str = "\"*/:<>?\\|";
/// Most UTF-16 code units of a long name.
pub const MAX_NAME_UNITS: usize = 255;

fn short_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || SPECIAL.contains(&b)
}

/// Checks `name` as a FAT long name and returns its UTF-16 code units:
/// 1 to 255 units, not `.` or `..`, no control characters, none of
/// `"*/:<>?\|`, and no trailing space or period (Windows cannot open
/// those).
pub fn validate(name: &str) -> Result<Vec<u16>> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let problem = if units.is_empty() {
        Some("is empty")
    } else if units.len() > MAX_NAME_UNITS {
        Some("is longer than 255 UTF-16 units")
    } else if name == "." || name == ".." {
        Some("is reserved")
    } else if name
        .chars()
        .any(|c| (c as u32) < 0x20 || FORBIDDEN.contains(c))
    {
        Some("holds a control character or one of \" * / : < > ? \\ |")
    } else if name.ends_with(' ') || name.ends_with('.') {
        Some("ends with a space or a period")
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::invalid_input(alloc::format!(
            "FAT file name '{name}' {p}"
        ))),
        None => Ok(units),
    }
}

/// The 11-byte 8.3 name and lowercase flags of `name` when it fits 8.3
/// exactly (and so needs no long name).
pub fn exact(name: &str) -> Option<([u8; 11], u8)> {
    if !name.is_ascii() || name.starts_with('.') {
        return None;
    }
    let (base, ext) = match name.split_once('.') {
        Some((b, e)) if !e.contains('.') && !e.is_empty() => (b, e),
        Some(_) => return None,
        None => (name, ""),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 {
        return None;
    }
    let mut out = [b' '; 11];
    let mut flags = 0u8;
    for (part, at, flag) in [(base, 0usize, NT_LOWER_BASE), (ext, 8, NT_LOWER_EXT)] {
        let lower = part.bytes().any(|b| b.is_ascii_lowercase());
        let upper = part.bytes().any(|b| b.is_ascii_uppercase());
        if lower && upper {
            return None;
        }
        if lower {
            flags |= flag;
        }
        for (i, b) in part.bytes().enumerate() {
            let b = b.to_ascii_uppercase();
            if !short_char(b) {
                return None;
            }
            *out.get_mut(at + i)? = b;
        }
    }
    Some((out, flags))
}

/// The basis name of `name` (section 7.4) and whether it stands for the
/// name exactly (no character lost or changed, nothing truncated; only
/// the case may differ): when it does not, every alias gets a tail.
pub fn basis(name: &str) -> ([u8; 11], bool) {
    let mut lossy = false;
    let convert = |c: char, lossy: &mut bool| -> Option<u8> {
        if c == ' ' {
            *lossy = true;
            return None;
        }
        let up = c.to_ascii_uppercase();
        if up.is_ascii() && short_char(up as u8) {
            Some(up as u8)
        } else {
            *lossy = true;
            Some(b'_')
        }
    };
    let trimmed = name.trim_start_matches('.');
    if trimmed.len() != name.len() {
        lossy = true;
    }
    let (base, ext) = match trimmed.rfind('.') {
        Some(at) => (trimmed.get(..at).unwrap_or(""), trimmed.get(at + 1..)),
        None => (trimmed, None),
    };
    let mut out = [b' '; 11];
    let mut n = 0;
    for c in base.chars() {
        if c == '.' {
            lossy = true;
            continue;
        }
        if let Some(b) = convert(c, &mut lossy) {
            if n == 8 {
                lossy = true;
                break;
            }
            if let Some(slot) = out.get_mut(n) {
                *slot = b;
            }
            n += 1;
        }
    }
    if n == 0 {
        if let Some(first) = out.first_mut() {
            *first = b'_';
        }
        lossy = true;
    }
    let mut m = 0;
    for c in ext.unwrap_or("").chars() {
        if let Some(b) = convert(c, &mut lossy) {
            if m == 3 {
                lossy = true;
                break;
            }
            if let Some(slot) = out.get_mut(8 + m) {
                *slot = b;
            }
            m += 1;
        }
    }
    (out, !lossy)
}

/// A 16-bit hash of a long name, for the aliases past the fourth.
fn name_hash(units: &[u16]) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for &u in units {
        h = (h ^ u32::from(u)).wrapping_mul(0x0100_0193);
    }
    (h ^ h >> 16) as u16
}

/// The `n`-th alias (from 1) of the long name `units` whose basis is
/// `basis`: `BASIS~n` for n up to 4, then the first two characters of
/// the basis, four hex digits of a hash of the name and `~(n-4)`.
pub fn alias(basis: &[u8; 11], units: &[u16], n: u32) -> [u8; 11] {
    let mut out = *basis;
    let mut head: Vec<u8> = basis
        .get(..8)
        .unwrap_or(&[])
        .iter()
        .copied()
        .take_while(|&b| b != b' ')
        .collect();
    let k = if n <= 4 {
        n
    } else {
        head.truncate(2);
        let hash = name_hash(units);
        for shift in [12u16, 8, 4, 0] {
            let digit = (hash >> shift & 0xf) as u8;
            head.push(if digit < 10 {
                b'0' + digit
            } else {
                b'A' + digit - 10
            });
        }
        n - 4
    };
    let mut tail = String::from("~");
    tail.push_str(&alloc::format!("{k}"));
    let keep = 8usize.saturating_sub(tail.len()).min(head.len());
    head.truncate(keep);
    head.extend_from_slice(tail.as_bytes());
    for (i, slot) in out.iter_mut().take(8).enumerate() {
        *slot = head.get(i).copied().unwrap_or(b' ');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn s(b: &[u8; 11]) -> &str {
        core::str::from_utf8(b).unwrap()
    }

    #[test]
    fn exact_names_and_case_flags() {
        assert_eq!(exact("UPPER.TXT").unwrap(), (*b"UPPER   TXT", 0));
        assert_eq!(exact("lower.txt").unwrap(), (*b"LOWER   TXT", 0x18));
        assert_eq!(exact("README.md").unwrap(), (*b"README  MD ", 0x10));
        assert_eq!(exact("a1").unwrap(), (*b"A1         ", 0x08));
        assert_eq!(exact("123").unwrap(), (*b"123        ", 0));
        for no in [
            "Mixed.txt",
            "toolongname.txt",
            "a.b.c",
            ".hidden",
            "a b.txt",
            "café.txt",
            "x.long",
            "a+b",
        ] {
            assert!(exact(no).is_none(), "{no}");
        }
    }

    #[test]
    fn basis_names() {
        let (b, exact) = basis("Mixed.txt");
        assert_eq!((s(&b), exact), ("MIXED   TXT", true));
        let (b, exact) = basis("The quick brown.fox");
        assert_eq!((s(&b), exact), ("THEQUICKFOX", false));
        let (b, exact) = basis("café résumé.txt");
        assert_eq!((s(&b), exact), ("CAF_R_SUTXT", false));
        let (b, _) = basis("my.file.name.text");
        assert_eq!(s(&b), "MYFILENATEX");
        let (b, _) = basis(".bashrc");
        assert_eq!(s(&b), "BASHRC     ");
        let (b, _) = basis("日本語");
        assert_eq!(s(&b), "___        ");
        let (b, _) = basis("  .txt");
        assert_eq!(s(&b), "_       TXT");
    }

    #[test]
    fn tails() {
        let (b, _) = basis("The quick brown.fox");
        let units: Vec<u16> = "The quick brown.fox".encode_utf16().collect();
        assert_eq!(s(&alias(&b, &units, 1)), "THEQUI~1FOX");
        assert_eq!(s(&alias(&b, &units, 4)), "THEQUI~4FOX");
        let fifth = alias(&b, &units, 5);
        assert_eq!(&fifth[..2], b"TH");
        assert_eq!(&fifth[6..8], b"~1");
        let k = alias(&b, &units, 1_000);
        assert_eq!((&k[..2], &k[4..8]), (&b"TH"[..], &b"~996"[..]));
        assert_eq!(&alias(&b, &units, 100_004)[..8], b"T~100000");
        let (short, _) = basis("ab");
        assert_eq!(s(&alias(&short, &[], 1)), "AB~1       ");
    }
}
