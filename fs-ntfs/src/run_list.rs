//! Data runs (mapping pairs) of non-resident attributes.

use alloc::vec::Vec;
use disk_io::{Error, Result};

/// One run: `length` clusters starting at virtual cluster `vcn`, stored at
/// logical cluster `lcn`, or sparse (reads as zeros) when `lcn` is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First virtual cluster of the run.
    pub vcn: u64,
    /// First logical cluster on the volume, `None` for a sparse run.
    pub lcn: Option<u64>,
    /// Clusters in the run (never 0).
    pub length: u64,
}

/// Decodes the run list in `bytes` (which starts at byte `position` on the
/// volume), the first run starting at `start_vcn`. Every run must lie in
/// the `total_clusters` of the volume; the list ends at a zero header byte
/// or at the end of `bytes`, so its length bounds the work.
///
/// ```
/// // 0x18 clusters at 0x5634, then a sparse run of 4, then 2 clusters 0x10 before.
/// let bytes = [0x21, 0x18, 0x34, 0x56, 0x01, 0x04, 0x11, 0x02, 0xf0, 0x00];
/// let runs = fs_ntfs::decode_run_list(&bytes, 0, 0, 1 << 20).unwrap();
/// assert_eq!(runs.len(), 3);
/// assert_eq!(runs[1].lcn, None);
/// assert_eq!((runs[2].vcn, runs[2].lcn), (0x1c, Some(0x5624)));
/// ```
pub fn decode_run_list(
    bytes: &[u8],
    position: u64,
    start_vcn: u64,
    total_clusters: u64,
) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut at = 0usize;
    let mut vcn = start_vcn;
    let mut lcn: i64 = 0;
    let err = |at: usize, what: alloc::string::String| {
        Error::corrupt(
            alloc::format!("NTFS run list: {what}"),
            position + at as u64,
        )
    };
    while let Some(&header) = bytes.get(at) {
        if header == 0 {
            break;
        }
        let len_size = usize::from(header & 0x0f);
        let off_size = usize::from(header >> 4);
        if len_size == 0 || len_size > 8 || off_size > 8 {
            return Err(err(
                at,
                alloc::format!(
                    "run header {header:#04x} (expected 1-8 length bytes, 0-8 offset bytes)"
                ),
            ));
        }
        let field =
            |from: usize, n: usize| -> Option<&[u8]> { bytes.get(from..from.checked_add(n)?) };
        let len_bytes =
            field(at + 1, len_size).ok_or_else(|| err(at, "run runs past the list".into()))?;
        let off_bytes = field(at + 1 + len_size, off_size)
            .ok_or_else(|| err(at, "run runs past the list".into()))?;
        let length = le_signed(len_bytes);
        if length <= 0 {
            return Err(err(
                at,
                alloc::format!("run length {length} (expected > 0)"),
            ));
        }
        let length = length as u64;
        let run_lcn = if off_size == 0 {
            None
        } else {
            lcn = lcn
                .checked_add(le_signed(off_bytes))
                .filter(|l| *l >= 0)
                .ok_or_else(|| {
                    err(
                        at,
                        alloc::format!("cluster offset leads before cluster 0 (from {lcn})"),
                    )
                })?;
            let start = lcn as u64;
            if start
                .checked_add(length)
                .is_none_or(|end| end > total_clusters)
            {
                return Err(err(
                    at,
                    alloc::format!(
                        "run of {length} clusters at cluster {start} reaches past the volume ({total_clusters} clusters)"
                    ),
                ));
            }
            Some(start)
        };
        runs.push(Run {
            vcn,
            lcn: run_lcn,
            length,
        });
        vcn = vcn
            .checked_add(length)
            .filter(|v| *v <= 1 << 56)
            .ok_or_else(|| err(at, "virtual cluster numbers overflow".into()))?;
        at += 1 + len_size + off_size;
    }
    Ok(runs)
}

/// A little-endian two's-complement integer of 1 to 8 bytes.
fn le_signed(bytes: &[u8]) -> i64 {
    let mut v: i64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        v |= i64::from(*b) << (8 * i);
    }
    let bits = 8 * bytes.len();
    if bits > 0 && bits < 64 && bytes.last().is_some_and(|b| b & 0x80 != 0) {
        v -= 1i64 << bits;
    }
    v
}

/// Finds the run holding `vcn` in `runs` (sorted by VCN).
pub fn find_run(runs: &[Run], vcn: u64) -> Option<&Run> {
    let i = runs.partition_point(|r| r.vcn + r.length <= vcn);
    runs.get(i).filter(|r| r.vcn <= vcn)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn negative_deltas_sparse_and_bounds() {
        let bytes = [0x11, 0x04, 0x20, 0x01, 0x08, 0x11, 0x02, 0xfe, 0x00];
        let runs = decode_run_list(&bytes, 0, 10, 100).unwrap();
        assert_eq!(
            runs,
            [
                Run {
                    vcn: 10,
                    lcn: Some(0x20),
                    length: 4
                },
                Run {
                    vcn: 14,
                    lcn: None,
                    length: 8
                },
                Run {
                    vcn: 22,
                    lcn: Some(0x1e),
                    length: 2
                },
            ]
        );
        assert_eq!(find_run(&runs, 21).unwrap().vcn, 14);
        assert!(find_run(&runs, 24).is_none());
        assert!(find_run(&runs, 9).is_none());
        let e = decode_run_list(&bytes, 0x400, 0, 0x21).unwrap_err();
        assert_eq!(e.offset(), Some(0x400));
        assert!(decode_run_list(&[0x11, 0x01, 0x80], 0, 0, 1000).is_err());
        assert!(decode_run_list(&[0x31, 0x01], 0, 0, 1000).is_err());
    }
}
