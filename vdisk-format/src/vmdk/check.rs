//! `vdisk check` for hosted sparse extents: the grain directory and its
//! redundant copy agree, grain tables lie inside the file, and grain table
//! entries point inside the file, outside the metadata, and each to a
//! grain of its own.

use alloc::format;
use alloc::vec::Vec;

use disk_io::{ReadAt, Result};

use super::grain_table::{Grain, grain_of, read_directory, read_table};
use super::sparse_header::{GD_AT_END, SECTOR, SparseHeader};
use super::stream::{GRAIN_MARKER_LEN, GrainMarker, read_footer};
use crate::CheckReport;

/// Checks the sparse extent in `file` (named `name` in messages) and adds
/// what it finds to `report`. An error means the header itself could not
/// be read.
pub fn check_sparse<D: ReadAt + ?Sized>(
    file: &D,
    name: &str,
    report: &mut CheckReport,
) -> Result<()> {
    let mut header = SparseHeader::read(file)?;
    let file_size = file.size();
    let stream = header.gd_offset == GD_AT_END;
    if stream {
        match read_footer(file) {
            Ok(h) => header = h,
            Err(e) => {
                report.error(format!("{name}: {e}"));
                return Ok(());
            }
        }
    }
    let gd = match read_directory(file, &header, header.gd_offset, "grain directory") {
        Ok(gd) => gd,
        Err(e) => {
            report.error(format!("{name}: {e}"));
            return Ok(());
        }
    };
    let gt_bytes = u64::from(header.gtes_per_gt) * 4;
    // Metadata byte ranges no grain may overlap.
    let mut meta: Vec<(u64, u64)> = Vec::new();
    meta.push((0, SECTOR));
    if let Some((start, len)) = header.descriptor_range() {
        meta.push((start, start.saturating_add(len)));
    }
    let gd_at = header.gd_offset.saturating_mul(SECTOR);
    meta.push((gd_at, gd_at.saturating_add(gd.len() as u64 * 4)));
    if stream {
        meta.push((file_size.saturating_sub(3 * SECTOR), file_size));
    }

    let mut tables: Vec<(u64, Vec<u32>)> = Vec::new();
    for (i, &gde) in gd.iter().enumerate() {
        if gde == 0 {
            continue;
        }
        match read_table(file, &header, gde, i as u64) {
            Ok(t) => {
                let at = u64::from(gde) * SECTOR;
                meta.push((at, at + gt_bytes));
                tables.push((i as u64, t));
            }
            Err(e) => report.error(format!(
                "{name}: grain directory entry {i} at offset {:#x}: {e}",
                gd_at + i as u64 * 4
            )),
        }
    }

    if header.has_redundant() && !stream {
        check_redundant(file, &header, &gd, name, &mut meta, report);
    }

    meta.sort_unstable();
    let overlaps_meta = |start: u64, end: u64| {
        let i = meta.partition_point(|m| m.1 <= start);
        meta.iter()
            .skip(i)
            .take_while(|m| m.0 < end)
            .next()
            .copied()
    };
    let mut grains: Vec<(u64, u64)> = Vec::new();
    let grain_size = header.grain_size();
    for (gt_index, table) in &tables {
        let gt_at = u64::from(gd.get(*gt_index as usize).copied().unwrap_or(0)) * SECTOR;
        for (j, &gte) in table.iter().enumerate() {
            let entry_at = gt_at + j as u64 * 4;
            let (host, len) = match grain_of(&header, gte) {
                Grain::Data(h) => (h, grain_size),
                Grain::Compressed(h) => (h, GRAIN_MARKER_LEN),
                Grain::Unallocated | Grain::Zero => continue,
            };
            if host >= file_size {
                report.error(format!(
                    "{name}: grain table {gt_index} entry {j} at offset {entry_at:#x} points to {host:#x}, past the end of the file ({file_size} bytes)"
                ));
                continue;
            }
            if let Some((ms, me)) = overlaps_meta(host, host.saturating_add(len)) {
                report.error(format!(
                    "{name}: grain table {gt_index} entry {j} at offset {entry_at:#x} points to {host:#x}, inside metadata at {ms:#x}..{me:#x}"
                ));
                continue;
            }
            if header.compressed() && header.markers() {
                let guest = (gt_index * u64::from(header.gtes_per_gt) + j as u64)
                    .saturating_mul(header.grain_sectors);
                match GrainMarker::read(file, host) {
                    Ok(m) if m.lba != guest => report.error(format!(
                        "{name}: grain marker at {host:#x} (grain table {gt_index} entry {j}) says sector {}, the table says {guest}",
                        m.lba
                    )),
                    Ok(m) if host + GRAIN_MARKER_LEN + u64::from(m.size) > file_size => {
                        report.error(format!(
                            "{name}: compressed grain at {host:#x} ({} bytes) runs past the end of the file ({file_size} bytes)",
                            m.size
                        ))
                    }
                    Ok(_) => {}
                    Err(e) => report.error(format!("{name}: {e}")),
                }
            }
            grains.push((host, entry_at));
        }
    }
    grains.sort_unstable();
    for pair in grains.windows(2) {
        if let [(a, a_at), (b, b_at)] = pair {
            if a == b {
                report.error(format!(
                    "{name}: grain table entries at offsets {a_at:#x} and {b_at:#x} both point to the grain at {a:#x}"
                ));
            }
        }
    }
    Ok(())
}

/// The redundant grain directory and its tables must say what the primary
/// ones say.
fn check_redundant<D: ReadAt + ?Sized>(
    file: &D,
    header: &SparseHeader,
    gd: &[u32],
    name: &str,
    meta: &mut Vec<(u64, u64)>,
    report: &mut CheckReport,
) {
    let rgd = match read_directory(file, header, header.rgd_offset, "redundant grain directory") {
        Ok(r) => r,
        Err(e) => {
            report.error(format!("{name}: {e}"));
            return;
        }
    };
    let rgd_at = header.rgd_offset.saturating_mul(SECTOR);
    meta.push((rgd_at, rgd_at.saturating_add(rgd.len() as u64 * 4)));
    let gt_bytes = u64::from(header.gtes_per_gt) * 4;
    for (i, (&p, &r)) in gd.iter().zip(&rgd).enumerate() {
        let entry_at = rgd_at + i as u64 * 4;
        if (p == 0) != (r == 0) {
            report.error(format!(
                "{name}: redundant grain directory entry {i} at offset {entry_at:#x} is {r:#x}, the grain directory says {p:#x}"
            ));
            continue;
        }
        if r == 0 {
            continue;
        }
        let (Ok(pt), rt) = (
            read_table(file, header, p, i as u64),
            read_table(file, header, r, i as u64),
        ) else {
            continue;
        };
        let rt = match rt {
            Ok(t) => t,
            Err(e) => {
                report.error(format!("{name}: redundant {e}"));
                continue;
            }
        };
        let at = u64::from(r) * SECTOR;
        meta.push((at, at + gt_bytes));
        let differ = pt.iter().zip(&rt).filter(|(a, b)| a != b).count();
        if let Some(j) = pt.iter().zip(&rt).position(|(a, b)| a != b) {
            report.error(format!(
                "{name}: redundant grain table {i} at offset {at:#x} differs from the grain table in {differ} entries (first: entry {j})"
            ));
        }
    }
}
