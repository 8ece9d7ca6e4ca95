//! Sizes on the command line: a byte count or a K/M/G/T suffix (powers of 1024).

use disk_io::Error;
use image_convert::PathError;

/// Parses `512`, `64K`, `10G`, `1T` (an optional trailing `B` or `iB` is accepted).
pub fn parse(text: &str) -> Result<u64, PathError> {
    let bad = || {
        PathError::from(Error::invalid_input(format!(
            "invalid size '{text}' (expected bytes or a K, M, G or T suffix)"
        )))
    };
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (t.get(..i).unwrap_or(""), shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn sizes() {
        assert_eq!(parse("512").unwrap(), 512);
        assert_eq!(parse("64K").unwrap(), 64 << 10);
        assert_eq!(parse("10G").unwrap(), 10 << 30);
        assert_eq!(parse("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse("1t").unwrap(), 1 << 40);
        for bad in ["", "G", "1X", "-1", "99999999999T", "1.5G"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
