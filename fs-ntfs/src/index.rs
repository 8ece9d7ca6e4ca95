//! Indexes: `$INDEX_ROOT` (in the FILE record) and `$INDEX_ALLOCATION`
//! (INDX records with fixups) form a B+ tree; directories are the `$I30`
//! index of `$FILE_NAME` keys.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use disk_io::bytes::{le_u16, le_u32, le_u64};
use disk_io::{Error, Result};

use crate::record::REFERENCE_MASK;

/// Deepest index tree accepted.
pub const MAX_DEPTH: usize = 32;

/// An index entry (not the end marker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The file reference (record number) the entry points at.
    pub record: u64,
    /// Key bytes (a `$FILE_NAME` value in `$I30`).
    pub key: Vec<u8>,
    /// Byte position of the entry on the volume.
    pub position: u64,
    /// The data of a view-index entry (`$SII`, `$SDH`, ...): the bytes its
    /// data offset and length (the first four bytes, in place of a file
    /// reference) name. Empty when they do not fit inside the entry, and
    /// meaningless for `$I30` entries.
    pub data: Vec<u8>,
}

/// The header of `$INDEX_ROOT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexRoot {
    /// Type of the indexed attribute (0x30 for `$I30`).
    pub indexed_type: u32,
    /// Bytes per INDX record.
    pub index_record_size: u32,
}

impl IndexRoot {
    /// Parses the fixed header of an `$INDEX_ROOT` value at `position`.
    pub fn parse(value: &[u8], position: u64) -> Result<Self> {
        let size = le_u32(value, 8).unwrap_or(0);
        if value.len() < 0x20 || !size.is_power_of_two() || !(256..=65536).contains(&size) {
            return Err(Error::corrupt(
                alloc::format!(
                    "$INDEX_ROOT of {} bytes with index record size {size} (expected >= 32 bytes, 256 B to 64 KiB)",
                    value.len()
                ),
                position,
            ));
        }
        Ok(IndexRoot {
            indexed_type: le_u32(value, 0).unwrap_or(0),
            index_record_size: size,
        })
    }
}

/// One entry of a node as parsed: an entry or the end marker, with the
/// VCN of its child node.
struct NodeEntry {
    entry: Option<IndexEntry>,
    child: Option<u64>,
}

/// Parses the entries of the node whose node header starts at `node` in
/// `buf` (`buf` starts at byte `position` on the volume).
fn node_entries(buf: &[u8], node: usize, position: u64, what: &str) -> Result<Vec<NodeEntry>> {
    let err = |at: usize, m: alloc::string::String| {
        Error::corrupt(
            alloc::format!("{what} at byte {at}: {m}"),
            position + at as u64,
        )
    };
    let first = node + le_u32(buf, node).unwrap_or(0) as usize;
    let end = node.saturating_add(le_u32(buf, node + 4).unwrap_or(0) as usize);
    if end > buf.len() || first < node + 0x10 || first > end {
        return Err(err(
            node,
            alloc::format!(
                "node header: entries at {first}, end at {end} (expected inside {} bytes)",
                buf.len()
            ),
        ));
    }
    let mut out = Vec::new();
    let mut at = first;
    loop {
        let len = usize::from(le_u16(buf, at + 8).unwrap_or(0));
        let key_len = usize::from(le_u16(buf, at + 10).unwrap_or(0));
        let flags = le_u32(buf, at + 12).unwrap_or(0);
        if at + 0x10 > end || len < 0x10 || !len.is_multiple_of(8) || at + len > end {
            return Err(err(
                at,
                alloc::format!(
                    "index entry of {len} bytes (expected >= 16, inside the node ending at {end})"
                ),
            ));
        }
        let child = if flags & 1 != 0 {
            if len < 0x18 {
                return Err(err(
                    at,
                    alloc::format!("index entry of {len} bytes with a child pointer"),
                ));
            }
            Some(le_u64(buf, at + len - 8).unwrap_or(0))
        } else {
            None
        };
        let last = flags & 2 != 0;
        let entry = if last {
            None
        } else {
            let key = buf
                .get(at + 0x10..at + 0x10 + key_len)
                .filter(|_| 0x10 + key_len <= len)
                .ok_or_else(|| {
                    err(
                        at,
                        alloc::format!("key of {key_len} bytes in an entry of {len}"),
                    )
                })?;
            let data_off = usize::from(le_u16(buf, at).unwrap_or(0));
            let data_len = usize::from(le_u16(buf, at + 2).unwrap_or(0));
            let data_end = if child.is_some() { len - 8 } else { len };
            let data = if data_len != 0 && data_off >= 0x10 && data_off + data_len <= data_end {
                buf.get(at + data_off..at + data_off + data_len)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            Some(IndexEntry {
                record: le_u64(buf, at).unwrap_or(0) & REFERENCE_MASK,
                key: key.to_vec(),
                position: position + at as u64,
                data,
            })
        };
        out.push(NodeEntry { entry, child });
        if last {
            return Ok(out);
        }
        at += len;
    }
}

/// Reads INDX records of an index allocation by VCN: returns the record's
/// bytes (fixups not yet applied) and its position on the volume.
pub trait IndexBlocks {
    /// Fetches the INDX record at `vcn`.
    fn block(&self, vcn: u64) -> Result<(Vec<u8>, u64)>;
}

/// Visits every entry of the index in collation order: `root` is the
/// `$INDEX_ROOT` value at `root_position`; child nodes come from `blocks`.
/// Depth is capped at [`MAX_DEPTH`] and a node reached twice is an error
/// (an index loop). `visit` returns `false` to stop early.
pub fn walk_index(
    root: &[u8],
    root_position: u64,
    blocks: Option<&dyn IndexBlocks>,
    visit: &mut dyn FnMut(IndexEntry) -> Result<bool>,
) -> Result<()> {
    IndexRoot::parse(root, root_position)?;
    let entries = node_entries(root, 0x10, root_position, "$INDEX_ROOT")?;
    let mut seen = BTreeSet::new();
    walk_node(entries, blocks, visit, &mut seen, 0).map(|_| ())
}

fn walk_node(
    entries: Vec<NodeEntry>,
    blocks: Option<&dyn IndexBlocks>,
    visit: &mut dyn FnMut(IndexEntry) -> Result<bool>,
    seen: &mut BTreeSet<u64>,
    depth: usize,
) -> Result<bool> {
    for e in entries {
        if let Some(vcn) = e.child {
            let Some(blocks) = blocks else {
                return Err(Error::corrupt(
                    alloc::format!(
                        "index entry points at child VCN {vcn} but there is no $INDEX_ALLOCATION"
                    ),
                    e.entry.as_ref().map_or(0, |x| x.position),
                ));
            };
            let children = load_node(blocks, vcn, seen, depth)?;
            if !walk_node(children, Some(blocks), visit, seen, depth + 1)? {
                return Ok(false);
            }
        }
        if let Some(entry) = e.entry {
            if !visit(entry)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Reads, checks and parses the child node at `vcn` (a node deeper than
/// [`MAX_DEPTH`] or seen before is an error).
fn load_node(
    blocks: &dyn IndexBlocks,
    vcn: u64,
    seen: &mut BTreeSet<u64>,
    depth: usize,
) -> Result<Vec<NodeEntry>> {
    let (mut buf, pos) = blocks.block(vcn)?;
    if depth + 1 >= MAX_DEPTH {
        return Err(Error::corrupt(
            alloc::format!("index tree deeper than {MAX_DEPTH} levels at VCN {vcn}"),
            pos,
        ));
    }
    if !seen.insert(vcn) {
        return Err(Error::corrupt(
            alloc::format!("index loop: the node at VCN {vcn} is reached twice"),
            pos,
        ));
    }
    let what = alloc::format!("index record at VCN {vcn}");
    if buf.get(0..4) != Some(b"INDX") {
        return Err(Error::corrupt(
            alloc::format!("{what} signature (expected \"INDX\")"),
            pos,
        ));
    }
    crate::record::apply_fixups(&mut buf, &what, pos)?;
    let stored = le_u64(&buf, 0x10).unwrap_or(0);
    if stored != vcn {
        return Err(Error::corrupt(
            alloc::format!("{what} says it is at VCN {stored}"),
            pos + 0x10,
        ));
    }
    node_entries(&buf, 0x18, pos, &what)
}

/// Searches the index as a B+ tree: `compare` orders the wanted key
/// against an entry's key (`Less`: the wanted key sorts before it).
/// Returns the first entry that compares `Equal`, descending only into
/// the one child that can hold the key. Bounded like [`walk_index`].
pub fn search_index(
    root: &[u8],
    root_position: u64,
    blocks: Option<&dyn IndexBlocks>,
    compare: &mut dyn FnMut(&IndexEntry) -> Result<core::cmp::Ordering>,
) -> Result<Option<IndexEntry>> {
    IndexRoot::parse(root, root_position)?;
    let mut entries = node_entries(root, 0x10, root_position, "$INDEX_ROOT")?;
    let mut seen = BTreeSet::new();
    let mut depth = 0;
    loop {
        let mut next = None;
        for e in entries {
            if let Some(entry) = &e.entry {
                match compare(entry)? {
                    core::cmp::Ordering::Equal => return Ok(e.entry),
                    core::cmp::Ordering::Greater => continue,
                    core::cmp::Ordering::Less => {}
                }
            }
            next = e.child;
            break;
        }
        let (Some(vcn), Some(blocks)) = (next, blocks) else {
            return Ok(None);
        };
        entries = load_node(blocks, vcn, &mut seen, depth)?;
        depth += 1;
    }
}
