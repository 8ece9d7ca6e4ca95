//! Creation parameters of a new VMDK disk, and the bytes qemu-img and
//! VMware lay down for it: the text descriptor (same template and disk
//! database as qemu-img), the hosted sparse extent header, and where its
//! grain directories and tables go.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use disk_io::{Error, Result};

use super::sparse_header::{COMPRESSION_DEFLATE, GD_AT_END, MAGIC, SECTOR, flags};
use crate::options::CreateOptions;

/// The layouts a new disk can take (`subformat=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subformat {
    /// One hosted sparse extent with the descriptor embedded.
    MonolithicSparse,
    /// One sparse extent of compressed grains behind markers, written
    /// front to back, its grain directory in the footer.
    StreamOptimized,
    /// A descriptor file and one flat extent (`NAME-flat.vmdk`).
    MonolithicFlat,
    /// A descriptor file and sparse extents of at most 2 GiB
    /// (`NAME-s001.vmdk`, ...).
    TwoGbMaxExtentSparse,
}

impl Subformat {
    /// The `createType` of the descriptor.
    pub fn create_type(self) -> &'static str {
        match self {
            Subformat::MonolithicSparse => "monolithicSparse",
            Subformat::StreamOptimized => "streamOptimized",
            Subformat::MonolithicFlat => "monolithicFlat",
            Subformat::TwoGbMaxExtentSparse => "twoGbMaxExtentSparse",
        }
    }
}

/// Option keys a VMDK disk takes (as qemu-img names them).
pub const KEYS: [&str; 9] = [
    "subformat",
    "adapter_type",
    "hwversion",
    "compat6",
    "zeroed_grain",
    "backing_file",
    "backing_fmt",
    "toolsversion",
    "preallocation",
];

/// Guest bytes of one extent of a twoGbMaxExtentSparse disk.
pub const SPLIT_EXTENT: u64 = 2 << 30;
/// Grain size of new sparse extents, in sectors (64 KiB).
pub const GRAIN_SECTORS: u64 = 128;
/// Grain table entries per table.
pub const GTES_PER_GT: u64 = 512;
/// Sectors reserved for the embedded descriptor (as qemu).
pub const DESCRIPTOR_SECTORS: u64 = 20;
/// Longest parent name accepted.
const MAX_HINT: usize = 4096;

/// How a new disk is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// The layout.
    pub subformat: Subformat,
    /// `ddb.adapterType`.
    pub adapter_type: String,
    /// `ddb.virtualHWVersion`.
    pub hwversion: String,
    /// `ddb.toolsVersion`.
    pub toolsversion: String,
    /// Sparse extents mark zeroed grains with entry 1.
    pub zeroed_grain: bool,
    /// Parent name (`parentFileNameHint`), stored as given.
    pub backing_file: Option<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            subformat: Subformat::MonolithicSparse,
            adapter_type: "ide".into(),
            hwversion: "4".into(),
            toolsversion: "2147483647".into(),
            zeroed_grain: false,
            backing_file: None,
        }
    }
}

impl Params {
    /// The parameters `-o` options ask for, checked as qemu-img checks them.
    pub fn from_options(o: &CreateOptions) -> Result<Params> {
        o.only(&KEYS, "vmdk")?;
        let subformat = match o.get("subformat") {
            None | Some("monolithicSparse") => Subformat::MonolithicSparse,
            Some("streamOptimized") => Subformat::StreamOptimized,
            Some("monolithicFlat") => Subformat::MonolithicFlat,
            Some("twoGbMaxExtentSparse") => Subformat::TwoGbMaxExtentSparse,
            Some(v @ "twoGbMaxExtentFlat") => {
                return Err(Error::unsupported(format!("format option subformat={v}")));
            }
            Some(v) => {
                return Err(Error::invalid_input(format!(
                    "format option subformat={v}: expected monolithicSparse, streamOptimized, monolithicFlat or twoGbMaxExtentSparse"
                )));
            }
        };
        let mut p = Params {
            subformat,
            ..Params::default()
        };
        if let Some(a) = o.get("adapter_type") {
            if !["ide", "buslogic", "lsilogic", "legacyESX"].contains(&a) {
                return Err(Error::invalid_input(format!(
                    "format option adapter_type={a}: expected ide, buslogic, lsilogic or legacyESX"
                )));
            }
            p.adapter_type = a.to_string();
        }
        let compat6 = o.flag("compat6", false)?;
        match (o.get("hwversion"), compat6) {
            (Some(_), true) => {
                return Err(Error::invalid_input(
                    "format options compat6 and hwversion cannot be given together",
                ));
            }
            (Some(v), false) => {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 4 {
                    return Err(Error::invalid_input(format!(
                        "format option hwversion={v}: expected a number"
                    )));
                }
                p.hwversion = v.to_string();
            }
            (None, true) => p.hwversion = "6".into(),
            (None, false) => {}
        }
        if let Some(v) = o.get("toolsversion") {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 10 {
                return Err(Error::invalid_input(format!(
                    "format option toolsversion={v}: expected a number"
                )));
            }
            p.toolsversion = v.to_string();
        }
        p.zeroed_grain = o.flag("zeroed_grain", false)?;
        match o.get("preallocation") {
            None | Some("off") => {}
            Some(v) => {
                return Err(Error::unsupported(format!(
                    "format option preallocation={v} (only off)"
                )));
            }
        }
        if let Some(name) = o.get("backing_file") {
            if name.is_empty() || name.len() > MAX_HINT || name.contains(['"', '\n', '\0']) {
                return Err(Error::invalid_input(format!(
                    "vmdk backing file name '{name}': 1 to {MAX_HINT} bytes, no quote or newline"
                )));
            }
            match p.subformat {
                Subformat::MonolithicSparse | Subformat::TwoGbMaxExtentSparse => {}
                other => {
                    return Err(Error::unsupported(format!(
                        "a backing file for a {} vmdk (only sparse children)",
                        other.create_type()
                    )));
                }
            }
            p.backing_file = Some(name.into());
        }
        match o.get("backing_fmt") {
            None | Some("vmdk") => {}
            Some(f) => {
                return Err(Error::unsupported(format!(
                    "format option backing_fmt={f}: a vmdk's parent is a vmdk"
                )));
            }
        }
        if o.get("backing_fmt").is_some() && p.backing_file.is_none() {
            return Err(Error::invalid_input(
                "format option backing_fmt without backing_file",
            ));
        }
        Ok(p)
    }

    /// The descriptor text of a new disk of `size` bytes, as qemu-img
    /// writes it: `extents` are the extent lines, already formatted.
    pub fn descriptor(&self, cid: u32, parent_cid: u32, size: u64, extents: &str) -> String {
        let heads: u64 = if self.adapter_type == "ide" { 16 } else { 255 };
        let cylinders = size / (heads * 63 * SECTOR);
        let hint = match &self.backing_file {
            Some(name) => format!("parentFileNameHint=\"{name}\""),
            None => String::new(),
        };
        format!(
            "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID={parent_cid:08x}\n\
             createType=\"{}\"\n{hint}\n# Extent description\n{extents}\n\
             # The Disk Data Base\n#DDB\n\n\
             ddb.virtualHWVersion = \"{}\"\n\
             ddb.geometry.cylinders = \"{cylinders}\"\n\
             ddb.geometry.heads = \"{heads}\"\n\
             ddb.geometry.sectors = \"63\"\n\
             ddb.adapterType = \"{}\"\n\
             ddb.toolsVersion = \"{}\"\n",
            self.subformat.create_type(),
            self.hwversion,
            self.adapter_type,
            self.toolsversion
        )
    }
}

/// Where the metadata of a new hosted sparse extent goes (in sectors), as
/// qemu-img lays it out: header, embedded descriptor, redundant grain
/// directory and its tables, grain directory and its tables, then grains
/// from `overhead` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Guest sectors of the extent.
    pub capacity: u64,
    /// Grain tables.
    pub gt_count: u64,
    /// Sectors of one grain directory.
    pub gd_sectors: u64,
    /// Sectors of one grain table.
    pub gt_sectors: u64,
    /// Redundant grain directory.
    pub rgd_offset: u64,
    /// Grain directory.
    pub gd_offset: u64,
    /// First grain.
    pub overhead: u64,
}

impl Layout {
    /// The layout of a sparse extent of `capacity` sectors; a stream keeps
    /// only the header and descriptor before its grains.
    pub fn new(capacity: u64, stream: bool) -> Layout {
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let gt_count = grains.div_ceil(GTES_PER_GT);
        let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
        let gt_sectors = (GTES_PER_GT * 4).div_ceil(SECTOR);
        let rgd_offset = 1 + DESCRIPTOR_SECTORS;
        if stream {
            return Layout {
                capacity,
                gt_count,
                gd_sectors,
                gt_sectors,
                rgd_offset: 0,
                gd_offset: GD_AT_END,
                overhead: GRAIN_SECTORS,
            };
        }
        let gd_offset = rgd_offset + gd_sectors + gt_sectors * gt_count;
        let overhead = (gd_offset + gd_sectors + gt_sectors * gt_count).div_ceil(GRAIN_SECTORS)
            * GRAIN_SECTORS;
        Layout {
            capacity,
            gt_count,
            gd_sectors,
            gt_sectors,
            rgd_offset,
            gd_offset,
            overhead,
        }
    }

    /// The header sector; `gd_offset` is the layout's, or the real one
    /// for a stream's footer.
    pub fn header(&self, zeroed_grain: bool, stream: bool, gd_offset: u64) -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        let mut flag = flags::VALID_NEWLINE_TEST;
        if stream {
            flag |= flags::COMPRESSED | flags::MARKERS;
        } else {
            flag |= flags::REDUNDANT_GT;
        }
        if zeroed_grain {
            flag |= flags::ZEROED_GRAIN_GTE;
        }
        let version: u32 = if stream {
            3
        } else if zeroed_grain {
            2
        } else {
            1
        };
        let mut put = |at: usize, bytes: &[u8]| {
            if let Some(dst) = h.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        };
        put(0, &MAGIC.to_le_bytes());
        put(4, &version.to_le_bytes());
        put(8, &flag.to_le_bytes());
        put(12, &self.capacity.to_le_bytes());
        put(20, &GRAIN_SECTORS.to_le_bytes());
        put(28, &1u64.to_le_bytes());
        put(36, &DESCRIPTOR_SECTORS.to_le_bytes());
        put(44, &(GTES_PER_GT as u32).to_le_bytes());
        put(48, &self.rgd_offset.to_le_bytes());
        put(56, &gd_offset.to_le_bytes());
        put(64, &self.overhead.to_le_bytes());
        // uncleanShutdown 0, then the newline-detection characters.
        put(73, b"\n \r\n");
        if stream {
            put(77, &COMPRESSION_DEFLATE.to_le_bytes());
        }
        h
    }

    /// A grain directory whose tables follow it back to back (qemu's
    /// preallocated tables), as little-endian bytes of whole sectors.
    pub fn directory(&self, gd_offset: u64) -> Vec<u8> {
        let mut gd = vec![0u8; (self.gd_sectors * SECTOR) as usize];
        for (i, e) in gd
            .chunks_exact_mut(4)
            .take(self.gt_count as usize)
            .enumerate()
        {
            let sector = gd_offset + self.gd_sectors + i as u64 * self.gt_sectors;
            e.copy_from_slice(&(sector as u32).to_le_bytes());
        }
        gd
    }
}

/// The name a new disk's files are named after: the final name when
/// `path` is the hidden temporary name `vdisk convert` writes to
/// (`.NAME.vdisk-tmp-PID`), else `path`'s own file name.
pub fn final_name(path: &std::path::Path) -> Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid_input("vmdk file name is not UTF-8"))?;
    if let Some((inner, pid)) = name
        .strip_prefix('.')
        .and_then(|n| n.rsplit_once(".vdisk-tmp-"))
    {
        if !inner.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(inner.to_string());
        }
    }
    Ok(name.to_string())
}

/// The name of extent file `suffix` (`-flat`, `-s001`) of a disk whose
/// descriptor is named `name`: the suffix goes before a `.vmdk` ending.
pub fn extent_name(name: &str, suffix: &str) -> String {
    match name.strip_suffix(".vmdk") {
        Some(stem) => format!("{stem}{suffix}.vmdk"),
        None => format!("{name}{suffix}.vmdk"),
    }
}

/// A new content identifier: random, never `ffffffff` (no parent) and
/// never `old`.
pub fn new_cid(old: Option<u32>) -> u32 {
    use core::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    let mut cid = h.finish() as u32;
    while cid == u32::MAX || Some(cid) == old {
        cid = cid.wrapping_add(0x9e37_79b9);
    }
    cid
}

/// `text` with the value of the descriptor line `key` set to `value`
/// (quoted when `quote`), the line added after the `after` line (or at the
/// end of the header lines) when absent. Every other line is kept as is.
pub fn set_descriptor_value(
    text: &str,
    key: &str,
    value: &str,
    quote: bool,
    after: &str,
) -> String {
    let line = if quote {
        format!("{key}=\"{value}\"")
    } else {
        format!("{key}={value}")
    };
    let key_of = |l: &str| l.split_once('=').map(|(k, _)| k.trim().to_string());
    let mut out = String::with_capacity(text.len() + line.len() + 1);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let is = |l: &str, k: &str| key_of(l).as_deref() == Some(k) && !l.trim_start().starts_with('#');
    // Insert after `after` only when the key is absent.
    let mut done = false;
    let present = lines.iter().any(|l| is(l, key));
    for l in &lines {
        if !done && is(l, key) {
            out.push_str(&line);
            out.push('\n');
            done = true;
            continue;
        }
        out.push_str(l);
        if !done && !present && is(l, after) {
            if !l.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&line);
            out.push('\n');
            done = true;
        }
    }
    if !done {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_qemu() {
        // qemu-img create -f vmdk x 64M: gd 30, grains from 128.
        let l = Layout::new(131072, false);
        assert_eq!((l.rgd_offset, l.gd_offset, l.overhead), (21, 30, 128));
        // 2 GiB extent of a split disk: gd 278, grains from 640.
        let l = Layout::new(4194304, false);
        assert_eq!((l.gd_offset, l.overhead), (278, 640));
    }

    #[test]
    fn descriptor_values_are_replaced_or_added() {
        let t = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"x\"\n\n# Extent\nRW 8 SPARSE \"a\"\n";
        let u = set_descriptor_value(t, "CID", "abcdef01", false, "version");
        assert!(u.contains("version=1\nCID=abcdef01\nparentCID=ffffffff\n"));
        assert_eq!(u.matches("CID=").count(), 2, "{u}");
        let u = set_descriptor_value(&u, "parentFileNameHint", "p.vmdk", true, "createType");
        assert!(u.contains("createType=\"x\"\nparentFileNameHint=\"p.vmdk\"\n\n# Extent"));
        assert_eq!(
            final_name(".a.vmdk.vdisk-tmp-42".as_ref()).unwrap(),
            "a.vmdk"
        );
        assert_eq!(extent_name("a.vmdk", "-s001"), "a-s001.vmdk");
    }
}
