//! `vdisk info`.

use std::path::Path;

use disk_io::{ReadAt, Window};
use image_convert::{GuestContent, PathError, inspect, open_source, probe_filesystem};
use partition::PartitionTable;
use serde::Serialize;

/// The JSON object of `vdisk info --json`, field names fixed by the contract.
#[derive(Serialize)]
struct InfoJson {
    format: &'static str,
    subformat: Option<String>,
    virtual_size: u64,
    allocated_bytes: u64,
    cluster_size: Option<u64>,
    backing_chain: Vec<BackingJson>,
    partition_table: Option<&'static str>,
    partitions: Vec<PartitionJson>,
    filesystem: Option<&'static str>,
}

#[derive(Serialize)]
struct BackingJson {
    path: String,
    format: &'static str,
}

/// One partition; `name` only for GPT. `label` is left out until the
/// file-system crates read labels.
#[derive(Serialize)]
struct PartitionJson {
    index: u32,
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    filesystem: Option<&'static str>,
}

pub fn run(path: &Path, json: bool) -> Result<(), PathError> {
    let at = |e| PathError::new(path, e);
    let image = open_source(path, false)?;
    let info = image.info().map_err(at)?;
    let content = inspect(&image).map_err(at)?;
    let (table, filesystem) = match &content {
        GuestContent::Table(t) => (Some(t), None),
        GuestContent::FileSystem(fs) => (None, Some(fs.name())),
        GuestContent::Foreign(_) | GuestContent::Blank | GuestContent::Unrecognised => (None, None),
    };
    if let Some(t) = table {
        for w in t.warnings() {
            eprintln!("vdisk: warning: {}: {w}", path.display());
        }
    }
    let partitions = match table {
        Some(t) => partitions(&image, t).map_err(at)?,
        None => Vec::new(),
    };
    let out = InfoJson {
        format: info.format.name(),
        subformat: info.subformat.clone(),
        virtual_size: info.virtual_size,
        allocated_bytes: info.allocated_bytes,
        cluster_size: info.cluster_size,
        backing_chain: info
            .backing_chain
            .iter()
            .map(|b| BackingJson {
                path: b.path.clone(),
                format: b.format.name(),
            })
            .collect(),
        partition_table: table.map(PartitionTable::kind_name),
        partitions,
        filesystem,
    };
    if json {
        let text = serde_json::to_string(&out).map_err(|e| {
            PathError::from(disk_io::Error::invalid_input(format!("JSON output: {e}")))
        })?;
        println!("{text}");
        return Ok(());
    }
    print_human(path, &out, &content);
    Ok(())
}

fn partitions(disk: &dyn ReadAt, table: &PartitionTable) -> disk_io::Result<Vec<PartitionJson>> {
    let gpt = table.kind_name() == "gpt";
    table
        .partitions
        .iter()
        .map(|p| {
            let window = Window::new(disk, p.start, p.size)?;
            // An extended partition holds EBRs, not a file system.
            let filesystem = if p.kind.is_extended() {
                None
            } else {
                probe_filesystem(&window)?.map(|f| f.name())
            };
            Ok(PartitionJson {
                index: p.number,
                start: p.start,
                size: p.size,
                kind: p.kind.to_string(),
                name: gpt.then(|| p.name.clone()),
                filesystem,
            })
        })
        .collect()
}

fn print_human(path: &Path, out: &InfoJson, content: &GuestContent) {
    println!("image: {}", path.display());
    println!("file format: {}", out.format);
    if let Some(sub) = &out.subformat {
        println!("subformat: {sub}");
    }
    println!(
        "virtual size: {} ({} bytes)",
        human(out.virtual_size),
        out.virtual_size
    );
    println!("disk size: {}", human(out.allocated_bytes));
    if let Some(c) = out.cluster_size {
        println!("cluster_size: {c}");
    }
    for (depth, b) in out.backing_chain.iter().enumerate() {
        println!("backing file {}: {} ({})", depth + 1, b.path, b.format);
    }
    match content {
        GuestContent::Table(t) => {
            println!(
                "partition table: {} ({}-byte sectors)",
                t.kind_name(),
                t.sector_size
            );
            for (p, j) in t.partitions.iter().zip(&out.partitions) {
                let type_name = p.kind.name().map(|n| format!(" ({n})")).unwrap_or_default();
                let name = if p.name.is_empty() {
                    String::new()
                } else {
                    format!(" \"{}\"", p.name)
                };
                let fs = j.filesystem.map(|f| format!(", {f}")).unwrap_or_default();
                println!(
                    "  {:>3}  start {:>14}  size {:>10}  {}{type_name}{name}{fs}",
                    p.number,
                    p.start,
                    human(p.size),
                    p.kind
                );
            }
        }
        GuestContent::FileSystem(fs) => println!("file system: {}", fs.name()),
        GuestContent::Foreign(what) => println!("content: {what}"),
        GuestContent::Blank => println!("content: blank (first 64 KiB are zeros)"),
        GuestContent::Unrecognised => {}
    }
}

/// `4 GiB`, `1.5 MiB`, `512 B`: powers of 1024, three significant digits.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {name}")
    } else {
        let s = format!("{value:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s} {name}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(512), "512 B");
        assert_eq!(super::human(4 << 30), "4 GiB");
        assert_eq!(super::human(1536 << 10), "1.5 MiB");
    }
}
