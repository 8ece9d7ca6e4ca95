//! Creation options: the `-o KEY=VAL[,KEY=VAL]` of `vdisk create` and
//! `vdisk convert`, spelt as qemu-img spells them.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use disk_io::{Error, Result};

/// Options for a new image, as `KEY=VAL` pairs; each format checks the keys
/// it knows and refuses the others as `Unsupported`, naming the key.
///
/// ```
/// use vdisk_format::CreateOptions;
/// let o = CreateOptions::parse(&["cluster_size=4k,compat=1.1".into()])?;
/// assert_eq!(o.get("compat"), Some("1.1"));
/// assert!(CreateOptions::parse(&["novalue".into()]).is_err());
/// # Ok::<(), disk_io::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateOptions {
    pairs: Vec<(String, String)>,
}

/// Longest option list accepted (keys are few; this bounds hostile input).
const MAX_PAIRS: usize = 64;

impl CreateOptions {
    /// No options: the format's defaults.
    pub fn new() -> Self {
        CreateOptions::default()
    }

    /// Parses `-o` arguments, each a comma-separated list of `KEY=VAL`;
    /// empty items are skipped; a key given twice keeps its last value.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = CreateOptions::new();
        for item in args.iter().flat_map(|a| a.split(',')) {
            if item.is_empty() {
                continue;
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(Error::invalid_input(format!(
                    "format option '{item}' has no value (expected KEY=VAL)"
                )));
            };
            if key.is_empty() {
                return Err(Error::invalid_input(format!(
                    "format option '{item}' has no key"
                )));
            }
            o.set(key, value)?;
        }
        Ok(o)
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        self.pairs.retain(|(k, _)| k != key);
        if self.pairs.len() >= MAX_PAIRS {
            return Err(Error::invalid_input("too many format options"));
        }
        self.pairs.push((key.to_string(), value.to_string()));
        Ok(())
    }

    /// The value of `key`, when given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when no option is given.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The keys given, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(k, _)| k.as_str())
    }

    /// Refuses every key not in `known` as `Unsupported`, naming the key
    /// and the format.
    pub fn only(&self, known: &[&str], format: &str) -> Result<()> {
        match self.keys().find(|k| !known.contains(k)) {
            None => Ok(()),
            Some(k) => Err(Error::unsupported(format!(
                "format option '{k}' for {format} images"
            ))),
        }
    }

    /// The boolean option `key` (`on`/`off`, `true`/`false`, `yes`/`no`);
    /// `default` when absent.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some("on" | "true" | "yes") => Ok(true),
            Some("off" | "false" | "no") => Ok(false),
            Some(v) => Err(Error::invalid_input(format!(
                "format option {key}={v}: expected on or off"
            ))),
        }
    }

    /// True when the output must be written front to back (compressed
    /// qcow2, streamOptimized VMDK): a copy into it uses one writer
    /// thread, and the format compresses on its own threads.
    pub fn sequential(&self) -> bool {
        self.flag("compress", false).unwrap_or(false)
            || self.get("subformat") == Some("streamOptimized")
    }
}

/// Parses a byte size: digits with an optional `k`, `M`, `G` suffix
/// (powers of 1024) or a `B`/no suffix.
pub(crate) fn parse_size(key: &str, s: &str) -> Result<u64> {
    let bad = || Error::invalid_input(format!("format option {key}={s}: not a size"));
    let (digits, shift) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 0),
        Some((i, _)) => {
            let (d, suffix) = s.split_at(i);
            let shift = match suffix {
                "b" | "B" => 0,
                "k" | "K" | "KiB" => 10,
                "m" | "M" | "MiB" => 20,
                "g" | "G" | "GiB" => 30,
                _ => return Err(bad()),
            };
            (d, shift)
        }
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}
