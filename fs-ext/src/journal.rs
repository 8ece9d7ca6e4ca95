//! The jbd2 journal (ext3/ext4), read for recovery only.
//!
//! When the superblock says `needs_recovery`, the blocks of committed
//! transactions still in the log are newer than their home locations.
//! [`scan`] walks the log from `s_start` (descriptor, commit and revoke
//! blocks, 32- or 64-bit block numbers, v2/v3 checksum tag layouts) and
//! returns a map *file-system block → journal block* of what a replay
//! would write. The reader consults it on every read instead of writing
//! anything: the source is never modified.
//!
//! All journal fields are big-endian.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;

use disk_io::bytes::{be_u16, be_u32};
use disk_io::{Error, Result};

/// `h_magic` of every journal metadata block.
pub const MAGIC: u32 = 0xc03b_3998;
const DESCRIPTOR: u32 = 1;
const COMMIT: u32 = 2;
const SUPERBLOCK_V1: u32 = 3;
const SUPERBLOCK_V2: u32 = 4;
const REVOKE: u32 = 5;

const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
const INCOMPAT_FAST_COMMIT: u32 = 0x20;
const SUPPORTED_INCOMPAT: u32 = INCOMPAT_REVOKE
    | INCOMPAT_64BIT
    | INCOMPAT_ASYNC_COMMIT
    | INCOMPAT_CSUM_V2
    | INCOMPAT_CSUM_V3
    | INCOMPAT_FAST_COMMIT;

/// Longest log scanned, in blocks (mke2fs's largest journal).
pub const MAX_JOURNAL_BLOCKS: u64 = 10_240_000;

const TAG_ESCAPE: u32 = 0x1;
const TAG_SAME_UUID: u32 = 0x2;
const TAG_LAST: u32 = 0x8;

/// A block a replay would write: where its newest copy is in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// Logical block number inside the journal.
    pub journal_block: u64,
    /// The first four bytes were the journal magic and are stored zeroed.
    pub escaped: bool,
}

/// What a scan found.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// File-system block → its replayed copy.
    pub blocks: BTreeMap<u64, Replayed>,
    /// Committed transactions found.
    pub transactions: u32,
    /// Blocks skipped because a later revoke covered them.
    pub revoked: u32,
    /// Logged blocks whose v2/v3 tag checksum failed (not replayed).
    pub bad_blocks: u32,
    /// Commit blocks whose checksum failed (the log ends there).
    pub bad_commits: u32,
}

/// Restores an escaped block's magic.
pub fn unescape(block: &mut [u8]) {
    if let Some(head) = block.get_mut(..4) {
        head.copy_from_slice(&MAGIC.to_be_bytes());
    }
}

struct Tag {
    fs_block: u64,
    journal_block: u64,
    escaped: bool,
}

/// Scans the journal whose logical blocks `read(n)` returns (`blocks` of
/// them, each `block_size` bytes). `offset` is the volume offset of the
/// journal superblock, for messages.
pub fn scan(
    read: &dyn Fn(u64) -> Result<Vec<u8>>,
    blocks: u64,
    block_size: usize,
    offset: u64,
) -> Result<Replay> {
    let sb = read(0)?;
    let magic = be_u32(&sb, 0).unwrap_or(0);
    let kind = be_u32(&sb, 4).unwrap_or(0);
    if magic != MAGIC || (kind != SUPERBLOCK_V1 && kind != SUPERBLOCK_V2) {
        return Err(Error::corrupt(
            format!("journal superblock magic {magic:#x} type {kind}"),
            offset,
        ));
    }
    let j_block_size = be_u32(&sb, 0xc).unwrap_or(0) as usize;
    if j_block_size != block_size {
        return Err(Error::unsupported(format!(
            "journal block size {j_block_size} differs from the file system's {block_size}"
        ))
        .at(offset + 0xc));
    }
    let maxlen = u64::from(be_u32(&sb, 0x10).unwrap_or(0));
    let first = u64::from(be_u32(&sb, 0x14).unwrap_or(0));
    let mut seq = be_u32(&sb, 0x18).unwrap_or(0);
    let start = u64::from(be_u32(&sb, 0x1c).unwrap_or(0));
    let incompat = if kind == SUPERBLOCK_V2 {
        be_u32(&sb, 0x28).unwrap_or(0)
    } else {
        0
    };
    if incompat & !SUPPORTED_INCOMPAT != 0 {
        return Err(Error::unsupported(format!(
            "journal incompatible features {:#x}",
            incompat & !SUPPORTED_INCOMPAT
        ))
        .at(offset + 0x28));
    }
    let mut replay = Replay::default();
    if start == 0 {
        return Ok(replay); // clean journal
    }
    let fc_blocks = if incompat & INCOMPAT_FAST_COMMIT != 0 {
        match be_u32(&sb, 0x54).unwrap_or(0) {
            0 => 256,
            n => u64::from(n),
        }
    } else {
        0
    };
    // mke2fs makes journals of at most 10,240,000 blocks (plus the fast
    // commit area): a longer log is not one to trust with a scan.
    let last = maxlen
        .min(blocks)
        .min(MAX_JOURNAL_BLOCKS + fc_blocks)
        .saturating_sub(fc_blocks);
    if first == 0 || first >= last || start < first || start >= last {
        return Err(Error::corrupt(
            format!("journal superblock first {first} start {start} length {maxlen}"),
            offset,
        ));
    }
    let bit64 = incompat & INCOMPAT_64BIT != 0;
    let csum_v3 = incompat & INCOMPAT_CSUM_V3 != 0;
    let csum_v2 = incompat & INCOMPAT_CSUM_V2 != 0;
    let has_tail = csum_v2 || csum_v3;
    let tag_size = if csum_v3 {
        16
    } else {
        8 + if csum_v2 { 2 } else { 0 } + if bit64 { 4 } else { 0 }
    };
    let next = |b: u64| if b + 1 >= last { first } else { b + 1 };
    // v2/v3 checksums: crc32c seeded with the journal UUID.
    let csum_seed = crate::checksum::raw_crc32c(!0, sb.get(0x30..0x40).unwrap_or(&[]));
    let async_commit = incompat & INCOMPAT_ASYNC_COMMIT != 0;

    // Transactions in log order: (sequence, tags, revoked blocks).
    let mut committed: Vec<(u32, Vec<Tag>)> = Vec::new();
    let mut revokes: BTreeMap<u64, u32> = BTreeMap::new();
    let mut tags: Vec<Tag> = Vec::new();
    // A set: a revoke block repeated in a hostile log adds nothing new.
    let mut pending_revokes: alloc::collections::BTreeSet<u64> =
        alloc::collections::BTreeSet::new();
    let mut block = start;
    // Each log block is visited at most once: the log cannot be longer
    // than the journal.
    let mut budget = last - first;
    while budget > 0 {
        budget -= 1;
        let data = read(block)?;
        let at = offset_of(block, block_size, offset);
        if be_u32(&data, 0) != Some(MAGIC) || be_u32(&data, 8) != Some(seq) {
            break;
        }
        match be_u32(&data, 4).unwrap_or(0) {
            DESCRIPTOR => {
                let end = block_size - if has_tail { 4 } else { 0 };
                let mut pos = 12usize;
                let mut data_block = block;
                loop {
                    if pos + tag_size > end {
                        break;
                    }
                    let lo = u64::from(be_u32(&data, pos).unwrap_or(0));
                    let (flags, hi) = if csum_v3 {
                        (
                            be_u32(&data, pos + 4).unwrap_or(0),
                            be_u32(&data, pos + 8).unwrap_or(0),
                        )
                    } else {
                        (
                            u32::from(be_u16(&data, pos + 6).unwrap_or(0)),
                            if bit64 {
                                be_u32(&data, pos + 8).unwrap_or(0)
                            } else {
                                0
                            },
                        )
                    };
                    let hi = if bit64 { u64::from(hi) } else { 0 };
                    data_block = next(data_block);
                    if budget == 0 {
                        return Err(Error::corrupt(
                            "journal descriptor lists more blocks than the log holds",
                            at,
                        ));
                    }
                    budget -= 1;
                    let tag_ok = if has_tail {
                        // The block's checksum: sequence, then the data as logged.
                        let stored = if csum_v3 {
                            be_u32(&data, pos + 12).unwrap_or(0)
                        } else {
                            u32::from(be_u16(&data, pos + 4).unwrap_or(0))
                        };
                        let logged = read(data_block)?;
                        let c = crate::checksum::raw_crc32c(csum_seed, &seq.to_be_bytes());
                        let c = crate::checksum::raw_crc32c(c, &logged);
                        let c = if csum_v3 { c } else { c & 0xffff };
                        c == stored
                    } else {
                        true
                    };
                    if tag_ok {
                        tags.push(Tag {
                            fs_block: lo | hi << 32,
                            journal_block: data_block,
                            escaped: flags & TAG_ESCAPE != 0,
                        });
                    } else {
                        // jbd2 does not replay a block whose checksum fails.
                        replay.bad_blocks += 1;
                    }
                    pos += tag_size;
                    if flags & TAG_SAME_UUID == 0 {
                        pos += 16;
                    }
                    if flags & TAG_LAST != 0 {
                        break;
                    }
                }
                block = data_block;
            }
            COMMIT => {
                if has_tail && !commit_ok(&data, csum_seed) && !async_commit {
                    // A torn commit ends the log, as in jbd2.
                    replay.bad_commits += 1;
                    break;
                }
                replay.transactions += 1;
                committed.push((seq, core::mem::take(&mut tags)));
                for b in core::mem::take(&mut pending_revokes) {
                    let e = revokes.entry(b).or_insert(seq);
                    if seq_after(seq, *e) {
                        *e = seq;
                    }
                }
                seq = seq.wrapping_add(1);
            }
            REVOKE => {
                let count = be_u32(&data, 12).unwrap_or(0) as usize;
                let limit = block_size - if has_tail { 4 } else { 0 };
                if !(16..=limit).contains(&count) {
                    return Err(Error::corrupt(
                        format!("journal revoke block byte count {count}"),
                        at + 12,
                    ));
                }
                let rec = if bit64 { 8 } else { 4 };
                let mut pos = 16;
                while pos + rec <= count {
                    let b = if bit64 {
                        u64::from(be_u32(&data, pos).unwrap_or(0)) << 32
                            | u64::from(be_u32(&data, pos + 4).unwrap_or(0))
                    } else {
                        u64::from(be_u32(&data, pos).unwrap_or(0))
                    };
                    pending_revokes.insert(b);
                    pos += rec;
                }
            }
            _ => break,
        }
        block = next(block);
    }
    // Replay committed transactions in order, skipping revoked blocks.
    for (tseq, tags) in committed {
        for t in tags {
            if let Some(&rseq) = revokes.get(&t.fs_block) {
                if !seq_after(tseq, rseq) {
                    replay.revoked += 1;
                    continue;
                }
            }
            replay.blocks.insert(
                t.fs_block,
                Replayed {
                    journal_block: t.journal_block,
                    escaped: t.escaped,
                },
            );
        }
    }
    Ok(replay)
}

/// Checks a v2/v3 commit block: crc32c of the block with its checksum
/// field (`h_chksum[0]`, at byte 16) zeroed.
fn commit_ok(block: &[u8], seed: u32) -> bool {
    let stored = be_u32(block, 16).unwrap_or(0);
    let c = crate::checksum::raw_crc32c(seed, block.get(..16).unwrap_or(&[]));
    let c = crate::checksum::raw_crc32c(c, &[0; 4]);
    let c = crate::checksum::raw_crc32c(c, block.get(20..).unwrap_or(&[]));
    c == stored
}

/// True when sequence `a` comes after `b` (wrapping, as jbd2 compares tids).
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn offset_of(block: u64, block_size: usize, base: u64) -> u64 {
    // `base` is where journal block 0 is; later blocks may be elsewhere,
    // but this names the log position well enough for a message.
    base.saturating_add(block.saturating_mul(block_size as u64))
}
