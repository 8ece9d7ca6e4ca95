//! Entry points for the fuzz targets (also replayed by `cargo test`).

use alloc::vec::Vec;

use crate::attribute::types;
use crate::volume::{NtfsVolume, records};

/// Opens `data` as an NTFS volume and walks everything, bounded: the
/// directory tree from the root (at most 2,000 files, 16 levels), every
/// stream of every file (the first 64 KiB), link targets and the
/// used-cluster map. Errors are fine; panics and hangs are bugs.
pub fn ntfs_read(data: &[u8]) {
    let Ok(vol) = NtfsVolume::open(data) else {
        return;
    };
    let _ = vol.used_clusters();
    let mut budget = 2000usize;
    let mut stack: Vec<(u64, usize)> = alloc::vec![(records::ROOT, 0)];
    let mut buf = alloc::vec![0u8; 64 << 10];
    while let Some((number, depth)) = stack.pop() {
        if budget == 0 {
            break;
        }
        budget -= 1;
        let Ok(file) = vol.file(number) else {
            continue;
        };
        let _ = file.name();
        let _ = file.standard_information();
        let _ = vol.link_target(&file);
        for a in file.attributes.iter().filter(|a| a.ty == types::DATA) {
            if let Ok(Some(s)) = file.stream(types::DATA, &a.name) {
                let _ = vol.read_stream(&s, 0, &mut buf);
            }
        }
        if file.is_directory() && depth < 16 {
            if let Ok(entries) = vol.read_dir(&file) {
                let _ = vol.find(&file, "x");
                for (child, _) in entries {
                    if child >= records::FIRST_USER && child != number && stack.len() < 4096 {
                        stack.push((child, depth + 1));
                    }
                }
            }
        }
    }
}
