//! `vdisk check` for VHD: footer and header checksums, the footer copies,
//! and every BAT entry (inside the file, before the end footer, not
//! overlapping another block nor the metadata).

use alloc::format;
use alloc::vec::Vec;

use disk_io::{ReadAt, Result};

use super::bat::UNUSED;
use super::{DiskType, Footer, Issue, Metadata, footer};
use crate::CheckReport;

/// Checks the VHD metadata of `file`. An error means the footer (or the
/// header and BAT it leads to) could not be read at all.
pub fn check_file<D: ReadAt + ?Sized>(file: &D) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let meta = Metadata::read(file, &mut |i| {
        match i {
            Issue::Damage(e) => report.error(format!("{e}")),
            Issue::Note(n) => report.error(n),
        }
        Ok(())
    })?;
    let file_size = file.size();
    let Some((header, bat)) = &meta.sparse else {
        return Ok(report);
    };
    // Both footers are required for dynamic and differencing disks: say
    // which one is missing when the note above did not.
    let end_at = file_size.saturating_sub(footer::SIZE as u64);
    if meta.footer.offset == 0 {
        if let Ok(Some(end)) = Footer::read_at(file, end_at) {
            if end.checksum_ok() && end.disk_type == DiskType::Fixed {
                report.error(format!(
                    "vhd footer at {end_at:#x} says fixed, the copy at offset 0 says {}",
                    meta.footer.disk_type.name()
                ));
            }
        }
    }
    // Metadata ranges no block may overlap.
    let mut used: Vec<(u64, u64, alloc::string::String)> = Vec::new();
    used.push((0, footer::SIZE as u64, "footer copy".into()));
    used.push((
        header.offset,
        header.offset + super::dynamic_header::SIZE as u64,
        "dynamic disk header".into(),
    ));
    let bat_bytes = (bat.entries.len() as u64 * 4).div_ceil(512) * 512;
    used.push((bat.offset, bat.offset + bat_bytes, "BAT".into()));
    for l in &header.locators {
        let len = u64::from(l.data_length);
        if len == 0 {
            continue;
        }
        match l.data_offset.checked_add(len) {
            Some(end) if end <= end_at => {
                used.push((l.data_offset, end, format!("parent locator {}", l.platform.code())))
            }
            _ => report.error(format!(
                "vhd parent locator {} at offset {:#x}: data ({len} bytes at {:#x}) past the end of the file",
                l.platform.code(),
                l.entry_offset,
                l.data_offset
            )),
        }
    }
    let block_bytes = header.bitmap_size() + u64::from(header.block_size);
    let mut blocks: Vec<(u64, u64, u64)> = Vec::new();
    for (index, &entry) in bat.entries.iter().enumerate() {
        if entry == UNUSED {
            continue;
        }
        let index = index as u64;
        let at = u64::from(entry) * 512;
        let entry_at = bat.entry_offset(index);
        if at + block_bytes > end_at {
            report.error(format!(
                "vhd BAT entry {index} at offset {entry_at:#x}: block at {at:#x} ({block_bytes} bytes) runs past the end of the file or into the footer at {end_at:#x}"
            ));
            continue;
        }
        if let Some((_, _, what)) = used
            .iter()
            .find(|(s, e, _)| at < *e && *s < at + block_bytes)
        {
            report.error(format!(
                "vhd BAT entry {index} at offset {entry_at:#x}: block at {at:#x} overlaps the {what}"
            ));
            continue;
        }
        blocks.push((at, at + block_bytes, index));
    }
    blocks.sort_unstable();
    for pair in blocks.windows(2) {
        if let [(_, end_a, a), (start_b, _, b)] = pair {
            if start_b < end_a {
                report.error(format!(
                    "vhd BAT entries {a} and {b}: blocks overlap at {start_b:#x} (entry {b} at offset {:#x})",
                    bat.entry_offset(*b)
                ));
            }
        }
    }
    Ok(report)
}
