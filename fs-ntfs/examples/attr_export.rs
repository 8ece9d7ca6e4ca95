//! Exports every file of an NTFS volume attribute by attribute, walking
//! the directory tree from the root:
//!
//! ```text
//! attr_export IMAGE [--offset BYTES] [--out DIR] [--data]
//! ```
//!
//! Without `--out` it prints, per file, its path and MFT record and then
//! each attribute in record order: resident ones with their size,
//! non-resident ones with their sizes and runs. With `--out DIR` it writes
//! `DIR/files.txt` (record and path per line) and, once per record,
//! `DIR/<record>/<n>-<type>[-<name>].attr` holding the attribute record as
//! stored; with `--data` also `.data` files holding the clusters of each
//! non-resident attribute at their VCN offsets (sparse runs as holes).

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use disk_io::{FileDisk, ReadAt, Window};
use fs_ntfs::{Exported, ExportedAttribute, NtfsVolume, records};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Options {
    out: Option<PathBuf>,
    data: bool,
}

fn main() -> Res<()> {
    let usage = "usage: attr_export IMAGE [--offset BYTES] [--out DIR] [--data]";
    let mut args = std::env::args().skip(1);
    let mut image = None;
    let mut offset = 0u64;
    let mut opts = Options {
        out: None,
        data: false,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--offset" => offset = args.next().ok_or(usage)?.parse()?,
            "--out" => opts.out = Some(args.next().ok_or(usage)?.into()),
            "--data" => opts.data = true,
            _ if image.is_none() => image = Some(a),
            _ => return Err(usage.into()),
        }
    }
    let disk = FileDisk::open(image.ok_or(usage)?)?;
    let size = disk
        .size()
        .checked_sub(offset)
        .ok_or("offset past the image")?;
    let vol = NtfsVolume::open(Window::new(disk, offset, size)?)?;
    if let Some(dir) = &opts.out {
        std::fs::create_dir_all(dir)?;
    }
    let mut index = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    let mut stack = vec![(records::ROOT, String::new(), 0usize)];
    while let Some((number, path, depth)) = stack.pop() {
        let file = vol.file(number)?;
        let attributes = vol.export_attributes(&file)?;
        let first = done.insert(number);
        match &opts.out {
            Some(dir) if first => write_file(&vol, dir, number, &attributes, opts.data)?,
            Some(_) => {}
            None => print_file(&path, number, &attributes),
        }
        index.push(format!(
            "{number}\t{}",
            if path.is_empty() { "/" } else { &path }
        ));
        if file.is_directory() && depth < 256 {
            let mut children = vol.read_dir(&file)?;
            children.retain(|(rec, name)| {
                name.namespace.is_long() && *rec != number && *rec >= records::FIRST_USER
            });
            for (rec, name) in children.into_iter().rev() {
                stack.push((rec, format!("{path}/{}", name.name_string()), depth + 1));
            }
        }
    }
    if let Some(dir) = &opts.out {
        std::fs::write(dir.join("files.txt"), index.join("\n") + "\n")?;
    }
    Ok(())
}

fn describe(a: &ExportedAttribute) -> String {
    let name = String::from_utf16_lossy(&a.name);
    let head = format!("  {:#06x} {name:?} id {} record {}", a.ty, a.id, a.record);
    match &a.content {
        Exported::Resident(v) => format!("{head} resident {} bytes", v.len()),
        Exported::NonResident(n) => {
            let runs: Vec<String> = n
                .runs
                .iter()
                .map(|r| match r.lcn {
                    Some(l) => format!("{}+{}@{l}", r.vcn, r.length),
                    None => format!("{}+{}@sparse", r.vcn, r.length),
                })
                .collect();
            format!(
                "{head} non-resident VCN {}..={} size {} allocated {} initialized {} compression {} runs [{}]",
                n.start_vcn,
                n.last_vcn,
                n.data_size,
                n.allocated_size,
                n.initialized_size,
                n.compression_unit,
                runs.join(" ")
            )
        }
    }
}

fn print_file(path: &str, number: u64, attributes: &[ExportedAttribute]) {
    println!(
        "{} (record {number})",
        if path.is_empty() { "/" } else { path }
    );
    for a in attributes {
        println!("{}", describe(a));
    }
}

fn write_file<D: ReadAt>(
    vol: &NtfsVolume<D>,
    dir: &std::path::Path,
    number: u64,
    attributes: &[ExportedAttribute],
    data: bool,
) -> Res<()> {
    let dir = dir.join(number.to_string());
    std::fs::create_dir_all(&dir)?;
    let cs = u64::from(vol.cluster_size());
    for (i, a) in attributes.iter().enumerate() {
        let name = String::from_utf16_lossy(&a.name).replace(['/', '\\'], "_");
        let stem = if name.is_empty() {
            format!("{i:03}-{:x}", a.ty)
        } else {
            format!("{i:03}-{:x}-{name}", a.ty)
        };
        std::fs::write(dir.join(format!("{stem}.attr")), &a.header)?;
        if data && !a.is_resident() {
            let mut f = std::fs::File::create(dir.join(format!("{stem}.data")))?;
            vol.export_data(a, &mut |vcn, bytes| {
                f.seek(SeekFrom::Start(vcn * cs))?;
                f.write_all(bytes)?;
                Ok(())
            })?;
            if let Exported::NonResident(n) = &a.content {
                f.set_len(n.allocated_size.max((n.last_vcn + 1) * cs))?;
            }
        }
    }
    Ok(())
}
