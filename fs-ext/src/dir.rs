//! Directories: linear blocks of variable-length entries (inode, record
//! length, name length, file type, name). Hashed (htree) directories keep
//! the same leaf blocks and add index blocks that look like one empty
//! entry to a linear reader, so every directory is read linearly here; the
//! htree root and index nodes are validated (magic fields, counts, block
//! references in range, no block reached twice).

use alloc::format;
use alloc::vec::Vec;

use disk_io::bytes::{le_u16, le_u32};
use disk_io::{Error, Result};

/// `file_type` value of the `metadata_csum` tail entry.
pub const TAIL_FILE_TYPE: u8 = 0xde;
/// Size of the `metadata_csum` tail.
pub const TAIL_SIZE: usize = 12;

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub inode: u32,
    /// Name bytes (ext names are bytes, usually UTF-8).
    pub name: Vec<u8>,
    /// File type byte (0 when the volume does not record it).
    pub file_type: u8,
}

/// Decodes a record length (64 KiB blocks encode their full size specially).
fn rec_len(raw: u16, block_size: usize) -> usize {
    if block_size >= 65536 && (raw == 65535 || raw == 0) {
        block_size
    } else {
        usize::from(raw)
    }
}

/// True when `block` ends with a `metadata_csum` directory tail.
pub fn has_tail(block: &[u8]) -> bool {
    let Some(start) = block.len().checked_sub(TAIL_SIZE) else {
        return false;
    };
    le_u32(block, start) == Some(0)
        && le_u16(block, start + 4) == Some(TAIL_SIZE as u16)
        && block.get(start + 6) == Some(&0)
        && block.get(start + 7) == Some(&TAIL_FILE_TYPE)
}

/// Parses the entries of one directory block (or an inline-data area),
/// appending live ones (inode != 0) to `out`. `offset` is the byte offset
/// of `data` on the volume, for messages; `filetype` says whether the
/// name length is one byte followed by a type byte. At most `max` entries
/// in `out` in all.
pub fn parse_entries(
    data: &[u8],
    ino: u32,
    offset: u64,
    filetype: bool,
    block_size: usize,
    out: &mut Vec<DirEntry>,
    max: usize,
) -> Result<()> {
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let inode = le_u32(data, at).unwrap_or(0);
        let rl = rec_len(le_u16(data, at + 4).unwrap_or(0), block_size);
        let name_len = if filetype {
            usize::from(data.get(at + 6).copied().unwrap_or(0))
        } else {
            usize::from(le_u16(data, at + 6).unwrap_or(0))
        };
        let file_type = if filetype {
            data.get(at + 7).copied().unwrap_or(0)
        } else {
            0
        };
        if rl < 8 || !rl.is_multiple_of(4) || at + rl > data.len() || 8 + name_len > rl {
            return Err(Error::corrupt(
                format!(
                    "inode {ino}: directory entry with record length {rl} and name length {name_len} at byte {at} of its block"
                ),
                offset + at as u64,
            ));
        }
        if inode != 0 {
            if out.len() >= max {
                return Err(Error::corrupt(
                    format!("inode {ino}: directory has more than {max} entries"),
                    offset + at as u64,
                ));
            }
            let name = data.get(at + 8..at + 8 + name_len).unwrap_or(&[]).to_vec();
            out.push(DirEntry {
                inode,
                name,
                file_type,
            });
        }
        at += rl;
    }
    if at != data.len() && at < data.len() && data.len() - at >= 8 {
        return Err(Error::corrupt(
            format!("inode {ino}: directory block does not end on an entry"),
            offset + at as u64,
        ));
    }
    Ok(())
}

/// The htree root (`dx_root`) of block 0 of an indexed directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DxRoot {
    /// Hash version.
    pub hash_version: u8,
    /// Index levels below the root (0: the root points at leaves).
    pub indirect_levels: u8,
}

/// Validates block 0 of an htree directory and returns its root info with
/// the (hash, block) entries it points at.
pub fn parse_dx_root(
    block: &[u8],
    ino: u32,
    offset: u64,
    largedir: bool,
    csum: bool,
) -> Result<(DxRoot, Vec<u32>)> {
    let bad = |what: &str| Error::corrupt(format!("inode {ino}: htree root {what}"), offset);
    // "." (12 bytes) then ".." whose record covers the rest of the block.
    if le_u16(block, 4) != Some(12) || block.get(7 + 1..8 + 1) != Some(b".") {
        return Err(bad("does not start with '.'"));
    }
    if block.get(12 + 8..12 + 10) != Some(b"..") {
        return Err(bad("has no '..' entry"));
    }
    let info = 0x18;
    let info_len = block.get(info + 5).copied().unwrap_or(0);
    let levels = block.get(info + 6).copied().unwrap_or(0);
    if info_len != 8 {
        return Err(bad(&format!("info length {info_len} (expected 8)")));
    }
    let max_levels = if largedir { 3 } else { 2 };
    if levels >= max_levels {
        return Err(bad(&format!("has {levels} indirect levels")));
    }
    let root = DxRoot {
        hash_version: block.get(info + 4).copied().unwrap_or(0),
        indirect_levels: levels,
    };
    let entries_at = info + 8;
    let blocks = dx_entries(block, entries_at, ino, offset, csum)?;
    Ok((root, blocks))
}

/// Validates an htree interior node (a block whose only entry is empty
/// and spans the block) and returns the blocks it points at.
pub fn parse_dx_node(block: &[u8], ino: u32, offset: u64, csum: bool) -> Result<Vec<u32>> {
    if le_u32(block, 0) != Some(0)
        || rec_len(le_u16(block, 4).unwrap_or(0), block.len()) != block.len()
    {
        return Err(Error::corrupt(
            format!("inode {ino}: htree index node has no empty spanning entry"),
            offset,
        ));
    }
    dx_entries(block, 8, ino, offset, csum)
}

fn dx_entries(block: &[u8], at: usize, ino: u32, offset: u64, csum: bool) -> Result<Vec<u32>> {
    let limit = usize::from(le_u16(block, at).unwrap_or(0));
    let count = usize::from(le_u16(block, at + 2).unwrap_or(0));
    let room = ((block.len() - at.min(block.len())) / 8).saturating_sub(usize::from(csum));
    if count == 0 || count > limit || limit > room {
        return Err(Error::corrupt(
            format!("inode {ino}: htree node count {count} limit {limit} (room for {room})"),
            offset + at as u64,
        ));
    }
    let mut blocks = Vec::with_capacity(count);
    // Entry 0 is the count/limit header with its block; the others are (hash, block).
    blocks.push(le_u32(block, at + 4).unwrap_or(0));
    for i in 1..count {
        blocks.push(le_u32(block, at + i * 8 + 4).unwrap_or(0));
    }
    Ok(blocks)
}
