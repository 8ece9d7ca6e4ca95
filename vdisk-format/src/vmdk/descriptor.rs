//! The VMDK text descriptor: `key=value` lines (`CID`, `parentCID`,
//! `createType`, `parentFileNameHint`), extent lines (`RW 131072 SPARSE
//! "disk.vmdk"`) and the disk database (`ddb.key = "value"`). It is either
//! a file of its own or embedded in a hosted sparse extent.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use disk_io::{Error, Result};

/// Most extent lines accepted in one descriptor.
pub const MAX_EXTENTS: usize = 4096;
/// Largest descriptor file read (1 MiB).
pub const MAX_DESCRIPTOR_FILE: u64 = 1 << 20;
/// `parentCID` of a disk without a parent.
pub const NO_PARENT_CID: u32 = 0xffff_ffff;

/// How an extent may be accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `RW`.
    ReadWrite,
    /// `RDONLY`.
    ReadOnly,
    /// `NOACCESS`: reads as zeros here.
    NoAccess,
}

impl Access {
    fn parse(word: &str) -> Option<Access> {
        match word {
            "RW" => Some(Access::ReadWrite),
            "RDONLY" => Some(Access::ReadOnly),
            "NOACCESS" => Some(Access::NoAccess),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Access::ReadWrite => "RW",
            Access::ReadOnly => "RDONLY",
            Access::NoAccess => "NOACCESS",
        }
    }
}

/// The type of an extent, as the extent line names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// `SPARSE`: a hosted sparse extent file (`KDMV`).
    Sparse,
    /// `FLAT`: a plain file, from a sector offset.
    Flat,
    /// `ZERO`: no file; reads as zeros.
    Zero,
    /// `VMFS`: a flat file on ESX.
    Vmfs,
    /// `VMFSSPARSE`: an ESX delta (COWD, or hosted sparse).
    VmfsSparse,
    /// `VMFSRDM`, `VMFSRAW`: a raw device mapping.
    RawDevice(String),
    /// `SESPARSE`: the space-efficient sparse format.
    SeSparse,
    /// Anything else, as written.
    Other(String),
}

impl ExtentKind {
    fn parse(word: &str) -> ExtentKind {
        match word {
            "SPARSE" => ExtentKind::Sparse,
            "FLAT" => ExtentKind::Flat,
            "ZERO" => ExtentKind::Zero,
            "VMFS" => ExtentKind::Vmfs,
            "VMFSSPARSE" => ExtentKind::VmfsSparse,
            "VMFSRDM" | "VMFSRAW" => ExtentKind::RawDevice(word.to_string()),
            "SESPARSE" => ExtentKind::SeSparse,
            other => ExtentKind::Other(other.to_string()),
        }
    }

    /// The name as an extent line spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ExtentKind::Sparse => "SPARSE",
            ExtentKind::Flat => "FLAT",
            ExtentKind::Zero => "ZERO",
            ExtentKind::Vmfs => "VMFS",
            ExtentKind::VmfsSparse => "VMFSSPARSE",
            ExtentKind::SeSparse => "SESPARSE",
            ExtentKind::RawDevice(s) | ExtentKind::Other(s) => s,
        }
    }
}

/// One extent line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtentLine {
    /// Access mode.
    pub access: Access,
    /// Guest sectors the extent holds.
    pub sectors: u64,
    /// Extent type.
    pub kind: ExtentKind,
    /// File name (relative to the descriptor), absent for `ZERO`.
    pub file: Option<String>,
    /// Start of the extent in its file, in sectors (flat extents).
    pub offset: u64,
    /// Byte offset of the line in the descriptor text, for messages.
    pub line_at: u64,
}

/// A parsed descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `version`.
    pub version: Option<u32>,
    /// `CID`: content identifier of this link of the chain.
    pub cid: Option<u32>,
    /// `parentCID`: the parent's `CID` when the child was made.
    pub parent_cid: Option<u32>,
    /// `createType` (`monolithicSparse`, `streamOptimized`, ...).
    pub create_type: Option<String>,
    /// `parentFileNameHint`: where the parent is.
    pub parent_file_name_hint: Option<String>,
    /// Extent lines, in guest order.
    pub extents: Vec<ExtentLine>,
    /// Every other `key = value` line (the disk database and the rest), in order.
    pub others: Vec<(String, String)>,
}

impl Descriptor {
    /// Parses descriptor text found at byte `base` of its file (for
    /// messages). Unknown keys are kept in [`others`](Self::others);
    /// malformed lines are errors naming their offset.
    pub fn parse(text: &[u8], base: u64) -> Result<Descriptor> {
        let mut d = Descriptor::default();
        let mut at = 0usize;
        for raw in text.split(|&b| b == b'\n') {
            let line_at = base.saturating_add(at as u64);
            at = at.saturating_add(raw.len() + 1);
            let line = core::str::from_utf8(raw)
                .map_err(|_| Error::corrupt("vmdk descriptor line is not UTF-8", line_at))?
                .trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_ascii_whitespace().next().unwrap_or("");
            if let Some(access) = Access::parse(first) {
                if d.extents.len() >= MAX_EXTENTS {
                    return Err(Error::corrupt(
                        format!("vmdk descriptor has more than {MAX_EXTENTS} extents"),
                        line_at,
                    ));
                }
                d.extents.push(parse_extent(access, line, line_at)?);
                continue;
            }
            // Lines that are neither extents nor key=value are ignored, as
            // VMware and qemu ignore them.
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim();
            let value = unquote(value.trim());
            let hex = |v: &str| {
                u32::from_str_radix(v, 16).map_err(|_| {
                    Error::corrupt(
                        format!(
                            "vmdk descriptor {key} '{}' is not a hexadecimal number",
                            clip(v)
                        ),
                        line_at,
                    )
                })
            };
            match key {
                "version" => {
                    d.version = Some(value.parse().map_err(|_| {
                        Error::corrupt("vmdk descriptor version is not a number", line_at)
                    })?)
                }
                "CID" => d.cid = Some(hex(value)?),
                "parentCID" => d.parent_cid = Some(hex(value)?),
                "createType" => d.create_type = Some(value.to_string()),
                "parentFileNameHint" => d.parent_file_name_hint = Some(value.to_string()),
                _ => d.others.push((key.to_string(), value.to_string())),
            }
        }
        Ok(d)
    }

    /// Guest size: the sum of the extents' sectors, in bytes.
    pub fn guest_size(&self) -> Option<u64> {
        self.extents
            .iter()
            .try_fold(0u64, |sum, e| sum.checked_add(e.sectors))?
            .checked_mul(512)
    }

    /// True when the descriptor names a parent: a `parentCID` other than
    /// `ffffffff`, or a `parentFileNameHint`.
    pub fn has_parent(&self) -> bool {
        self.parent_file_name_hint.is_some() || self.parent_cid.is_some_and(|c| c != NO_PARENT_CID)
    }

    /// The descriptor as text, the way VMware and qemu write it; parsing it
    /// gives back the same descriptor (line offsets aside).
    pub fn emit(&self) -> String {
        let mut s = String::from("# Disk DescriptorFile\n");
        if let Some(v) = self.version {
            s.push_str(&format!("version={v}\n"));
        }
        if let Some(c) = self.cid {
            s.push_str(&format!("CID={c:08x}\n"));
        }
        if let Some(c) = self.parent_cid {
            s.push_str(&format!("parentCID={c:08x}\n"));
        }
        if let Some(t) = &self.create_type {
            s.push_str(&format!("createType=\"{t}\"\n"));
        }
        if let Some(h) = &self.parent_file_name_hint {
            s.push_str(&format!("parentFileNameHint=\"{h}\"\n"));
        }
        s.push_str("\n# Extent description\n");
        for e in &self.extents {
            s.push_str(&format!(
                "{} {} {}",
                e.access.as_str(),
                e.sectors,
                e.kind.as_str()
            ));
            if let Some(f) = &e.file {
                s.push_str(&format!(" \"{f}\""));
                if e.offset != 0 {
                    s.push_str(&format!(" {}", e.offset));
                }
            }
            s.push('\n');
        }
        s.push_str("\n# The Disk Data Base\n#DDB\n\n");
        for (k, v) in &self.others {
            s.push_str(&format!("{k} = \"{v}\"\n"));
        }
        s
    }
}

/// `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
fn parse_extent(access: Access, line: &str, line_at: u64) -> Result<ExtentLine> {
    let bad = |what: &str| {
        Error::corrupt(
            format!("vmdk descriptor extent line '{}': {what}", clip(line)),
            line_at,
        )
    };
    let mut rest = line.get(first_word_len(line)..).unwrap_or("").trim_start();
    let sectors_len = first_word_len(rest);
    let sectors: u64 = rest
        .get(..sectors_len)
        .unwrap_or("")
        .parse()
        .map_err(|_| bad("sector count is not a number"))?;
    rest = rest.get(sectors_len..).unwrap_or("").trim_start();
    let kind_len = first_word_len(rest);
    let kind_word = rest.get(..kind_len).unwrap_or("");
    if kind_word.is_empty() {
        return Err(bad("no extent type"));
    }
    let kind = ExtentKind::parse(kind_word);
    rest = rest.get(kind_len..).unwrap_or("").trim_start();
    let mut file = None;
    let mut offset = 0;
    if !rest.is_empty() {
        let name = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| bad("file name without closing quote"))?;
            let name = quoted.get(..end).unwrap_or("");
            rest = quoted.get(end + 1..).unwrap_or("").trim_start();
            name
        } else {
            let n = first_word_len(rest);
            let name = rest.get(..n).unwrap_or("");
            rest = rest.get(n..).unwrap_or("").trim_start();
            name
        };
        file = Some(name.to_string());
        let n = first_word_len(rest);
        if n > 0 {
            offset = rest
                .get(..n)
                .unwrap_or("")
                .parse()
                .map_err(|_| bad("extent offset is not a number"))?;
        }
    }
    if kind != ExtentKind::Zero && file.as_deref().is_none_or(str::is_empty) {
        return Err(bad("no file name"));
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
        line_at,
    })
}

fn first_word_len(s: &str) -> usize {
    s.find(|c: char| c.is_ascii_whitespace()).unwrap_or(s.len())
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// At most 80 characters of `s`, for messages.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# Disk DescriptorFile\nversion=1\nCID=8f67ca74\nparentCID=0172e8a4\n\
createType=\"vmfsSparse\"\nparentFileNameHint=\"vmfs_thick.vmdk\"\n# Extent description\n\
RW 4096 VMFSSPARSE \"vmfs thick-000001-delta.vmdk\"\nRDONLY 20480 FLAT \"f.vmdk\" 128\nNOACCESS 8 ZERO\n\
\n#DDB\nddb.longContentID = \"4b98b55b\"\n";

    #[test]
    fn parses_every_line_kind() {
        let d = Descriptor::parse(TEXT.as_bytes(), 0).unwrap();
        assert_eq!(d.cid, Some(0x8f67_ca74));
        assert_eq!(d.parent_cid, Some(0x0172_e8a4));
        assert_eq!(d.create_type.as_deref(), Some("vmfsSparse"));
        assert_eq!(d.parent_file_name_hint.as_deref(), Some("vmfs_thick.vmdk"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].kind, ExtentKind::VmfsSparse);
        assert_eq!(
            d.extents[0].file.as_deref(),
            Some("vmfs thick-000001-delta.vmdk")
        );
        assert_eq!(d.extents[1].offset, 128);
        assert_eq!(d.extents[1].access, Access::ReadOnly);
        assert_eq!(d.extents[2].kind, ExtentKind::Zero);
        assert_eq!(d.guest_size(), Some((4096 + 20480 + 8) * 512));
        assert!(d.has_parent());
        assert_eq!(
            d.others,
            vec![("ddb.longContentID".into(), "4b98b55b".into())]
        );
    }

    #[test]
    fn emit_round_trips() {
        let d = Descriptor::parse(TEXT.as_bytes(), 0).unwrap();
        let mut again = Descriptor::parse(d.emit().as_bytes(), 0).unwrap();
        for (a, b) in again.extents.iter_mut().zip(&d.extents) {
            a.line_at = b.line_at;
        }
        assert_eq!(again, d);
    }

    /// Round trip over many generated descriptors (a small xorshift
    /// stands in for a property-test generator).
    #[test]
    fn emit_round_trips_generated_descriptors() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let name = |next: &mut dyn FnMut(u64) -> u64| -> String {
            const CHARS: &[u8] = b"abcXYZ019 -_.()/\\";
            let len = 1 + next(20) as usize;
            let s: String = (0..len)
                .map(|_| CHARS[next(CHARS.len() as u64) as usize] as char)
                .collect();
            let t = s.trim().to_string();
            if t.is_empty() { "x".into() } else { t }
        };
        let kinds = [
            "SPARSE",
            "FLAT",
            "ZERO",
            "VMFS",
            "VMFSSPARSE",
            "VMFSRDM",
            "SESPARSE",
        ];
        let accesses = [Access::ReadWrite, Access::ReadOnly, Access::NoAccess];
        for _ in 0..500 {
            let mut d = Descriptor {
                version: (next(2) == 0).then(|| next(4) as u32),
                cid: (next(2) == 0).then(|| next(u64::from(u32::MAX)) as u32),
                parent_cid: (next(2) == 0).then(|| next(u64::from(u32::MAX)) as u32),
                create_type: (next(2) == 0).then(|| name(&mut next)),
                parent_file_name_hint: (next(2) == 0).then(|| name(&mut next)),
                ..Descriptor::default()
            };
            for _ in 0..next(5) {
                let kind = ExtentKind::parse(kinds[next(kinds.len() as u64) as usize]);
                let file = (kind != ExtentKind::Zero).then(|| name(&mut next));
                d.extents.push(ExtentLine {
                    access: accesses[next(3) as usize],
                    sectors: next(1 << 40),
                    offset: if file.is_some() { next(1 << 30) } else { 0 },
                    kind,
                    file,
                    line_at: 0,
                });
            }
            for _ in 0..next(4) {
                d.others
                    .push((format!("ddb.k{}", next(100)), name(&mut next)));
            }
            let mut again = Descriptor::parse(d.emit().as_bytes(), 0).unwrap();
            for e in &mut again.extents {
                e.line_at = 0;
            }
            assert_eq!(again, d, "{}", d.emit());
        }
    }

    #[test]
    fn malformed_lines_name_their_offset() {
        let e = Descriptor::parse(b"version=1\nRW x SPARSE \"a\"\n", 100).unwrap_err();
        assert_eq!(e.offset(), Some(110));
        assert!(Descriptor::parse(b"CID=zz\n", 0).is_err());
        assert!(Descriptor::parse(b"RW 8 SPARSE \"a\n", 0).is_err());
        assert!(Descriptor::parse(b"RW 8 FLAT\n", 0).is_err());
        assert!(Descriptor::parse(b"garbage\n", 0).is_ok());
        assert!(Descriptor::parse(&[0xff, b'\n'], 0).is_err());
    }
}
