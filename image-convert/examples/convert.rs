//! The main job: convert a disk image.
//!
//! ```text
//! cargo run --release --example convert                       # built-in demo
//! cargo run --release --example convert -- SRC DST [--format F] [--mode M]
//! ```
//!
//! With no arguments it builds a small sparse demo disk in a temporary
//! directory — a GPT with a FAT32 EFI system partition and a FAT16 data
//! partition, each holding a small tree, written through `fs-fat` — then
//! converts it in logical mode to VMDK (fresh file systems, file by file)
//! and prints the layout, what was copied and the logical comparison's
//! verdict. With `SRC DST` it converts a real image (format detected from
//! content) into `DST` (raw by default; `--mode used` leaves the file
//! systems' free space out, `--mode logical` re-creates them; both verify
//! the copy with a logical comparison).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use disk_io::{FileDisk, ReadAt, WriteAt};
use fs_fat::{Attributes, FatType, FatWriter, FileTimes, FormatOptions, Timestamp};
use image_convert::{
    Comparison, ConvertOptions, GuestContent, LogicalComparison, Mode, compare_logical,
    compare_sectors, convert_report, inspect, open_source, used_layout,
};
use partition::{DEFAULT_ALIGNMENT, Guid, Layout, PartitionType, TableType};
use vdisk_format::Format;

const USAGE: &str =
    "usage: convert [SRC DST [--format raw|vmdk|qcow2|vhd|vhdx|vdi] [--mode sector|used|logical]]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [] => demo(),
        [src, dst, flags @ ..] => parse_flags(flags)
            .and_then(|(format, mode)| run(Path::new(src), Path::new(dst), format, mode)),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convert: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--format F` and `--mode M`, in any order.
fn parse_flags(flags: &[String]) -> Result<(Format, Mode), String> {
    let mut format = Format::Raw;
    let mut mode = Mode::Sector;
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| USAGE.to_owned())?;
        match flag.as_str() {
            "--format" => format = value.parse().map_err(|e: disk_io::Error| e.to_string())?,
            "--mode" => mode = value.parse().map_err(|e: disk_io::Error| e.to_string())?,
            _ => return Err(USAGE.to_owned()),
        }
    }
    Ok((format, mode))
}

fn run(src: &Path, dst: &Path, format: Format, mode: Mode) -> Result<(), String> {
    let image = open_source(src, false).map_err(|e| e.to_string())?;
    let content = inspect(&image).map_err(|e| e.to_string())?;
    let info = image.info().map_err(|e| e.to_string())?;
    println!(
        "source: {} ({}, {} bytes virtual, {} bytes allocated)",
        src.display(),
        info.format,
        info.virtual_size,
        info.allocated_bytes
    );
    if let GuestContent::Table(table) = &content {
        for p in &table.partitions {
            let kind = p
                .kind
                .name()
                .map_or_else(|| p.kind.to_string(), str::to_owned);
            let name = if p.name.is_empty() {
                String::new()
            } else {
                format!(" \"{}\"", p.name)
            };
            println!(
                "  partition {}{name} ({kind}): {} bytes at {}",
                p.number, p.size, p.start
            );
        }
    }
    if mode == Mode::Used {
        let layout = used_layout(&image).map_err(|e| e.to_string())?;
        for v in &layout.volumes {
            println!(
                "  {} ({}): keeps {} of {} bytes",
                v.number
                    .map_or_else(|| "whole disk".to_owned(), |n| format!("partition {n}")),
                v.fs.name(),
                v.kept_bytes(),
                v.size
            );
        }
    }
    drop(image);
    let started = Instant::now();
    let opts = ConvertOptions {
        format: Some(format),
        mode,
        ..Default::default()
    };
    let mut last_tenth = 0;
    let (stats, report) = convert_report(src, dst, &opts, &mut |done, total| {
        let tenth = done.saturating_mul(10).checked_div(total).unwrap_or(10);
        if tenth > last_tenth {
            last_tenth = tenth;
            print!(" {}%", tenth * 10);
            if tenth == 10 {
                println!();
            }
        }
    })
    .map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "converted to {} ({format}) in {secs:.3} s: read {} bytes, wrote {} bytes, skipped {} zero bytes ({:.0} MiB/s of guest data)",
        dst.display(),
        stats.read,
        stats.written,
        stats.zero,
        stats.total as f64 / (1 << 20) as f64 / secs.max(1e-9)
    );
    for u in report.iter().flat_map(|r| &r.units) {
        let place = u
            .number
            .map_or_else(|| "whole disk".to_owned(), |n| format!("partition {n}"));
        let fs = u.fs_name.unwrap_or("no known file system");
        if u.logical {
            println!(
                "  {place} ({fs}): formatted afresh, {} files and directories, {} bytes of file data copied",
                u.entries, u.bytes
            );
        } else {
            println!(
                "  {place} ({fs}): copied sector by sector, {} bytes",
                u.bytes
            );
        }
    }
    let a = open_source(src, false).map_err(|e| e.to_string())?;
    let b = open_source(dst, false).map_err(|e| e.to_string())?;
    let allocated = b.info().map_err(|e| e.to_string())?.allocated_bytes;
    if mode == Mode::Sector {
        match compare_sectors(&a, &b).map_err(|e| e.to_string())? {
            Comparison::Equal => println!("verified: guest contents are identical"),
            Comparison::DiffersAt(at) => {
                return Err(format!(
                    "verification failed: contents differ at offset {at:#x}"
                ));
            }
        }
    } else {
        // Free space differs by design: compare the trees.
        match compare_logical(Arc::new(a), Arc::new(b)).map_err(|e| e.to_string())? {
            LogicalComparison::Equal => println!("verified: logically identical"),
            LogicalComparison::Differs(what) => {
                return Err(format!("verification failed: {what}"));
            }
        }
    }
    println!("destination allocates {allocated} bytes");
    Ok(())
}

/// Builds a 256 MiB sparse disk: a GPT (written by the partition crate)
/// with a FAT32 EFI system partition and a FAT16 data partition, each
/// formatted and filled with a small tree by `fs-fat`.
fn build_demo(path: &Path) -> disk_io::Result<()> {
    const SIZE: u64 = 256 << 20;
    let disk = Arc::new(FileDisk::create(path, SIZE)?);
    let mut layout = Layout::new(TableType::Gpt, 512);
    layout.disk_guid = Guid::parse("9B3C1F0A-5E27-4D8B-A1C6-2F4E6D8A0B1C").unwrap_or(Guid::ZERO);
    let esp = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap_or(Guid::ZERO);
    let data = Guid::parse("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7").unwrap_or(Guid::ZERO);
    layout.push(
        SIZE,
        Some(100 << 20),
        PartitionType::Gpt(esp),
        DEFAULT_ALIGNMENT,
    )?;
    layout.push(SIZE, None, PartitionType::Gpt(data), DEFAULT_ALIGNMENT)?;
    layout.partitions[0].name = "EFI system".into();
    layout.partitions[1].name = "demo data".into();
    partition::write::write(&*disk, &layout)?;
    let when = Timestamp {
        seconds: 1_780_000_000,
        nanoseconds: 0,
    };
    for (i, p) in layout.partitions.clone().iter().enumerate() {
        let volume = disk_io::Window::new(Arc::clone(&disk), p.first_lba * 512, p.sectors * 512)?;
        let opts = FormatOptions {
            fat_type: Some(if i == 0 {
                FatType::Fat32
            } else {
                FatType::Fat16
            }),
            hidden_sectors: p.first_lba as u32,
            label: Some(if i == 0 { "EFI" } else { "DEMO DATA" }.into()),
            time: when,
            ..FormatOptions::default()
        };
        let mut fat = FatWriter::format(volume, &opts)?;
        fat.set_default_time(when);
        let times = FileTimes {
            modified: Some(when),
            ..FileTimes::default()
        };
        let root = fat.root();
        let none = Attributes::empty();
        let file = |fat: &mut FatWriter<_>, dir, name: &str, bytes: &[u8]| {
            let f = fat.create_file(dir, name, &times, none, bytes.len() as u64)?;
            fat.write(f, 0, bytes)
        };
        if i == 0 {
            let efi = fat.create_dir(root, "EFI", &times, none)?;
            let boot = fat.create_dir(efi, "BOOT", &times, none)?;
            let loader: Vec<u8> = (0..200_000u32).map(|n| (n * 7 % 251) as u8).collect();
            file(&mut fat, boot, "BOOTX64.EFI", &loader)?;
            file(
                &mut fat,
                root,
                "startup.nsh",
                b"\\EFI\\BOOT\\BOOTX64.EFI\r\n",
            )?;
        } else {
            let docs = fat.create_dir(root, "Documents and notes", &times, none)?;
            for n in 0..40u32 {
                let text = format!("note {n}: logical conversion copies every file\n");
                file(
                    &mut fat,
                    docs,
                    &format!("Note {n:02} — é.txt"),
                    text.repeat(50).as_bytes(),
                )?;
            }
            let photos = fat.create_dir(root, "Photos", &times, none)?;
            let big: Vec<u8> = (0..3_000_000u32).map(|n| (n ^ (n >> 9)) as u8).collect();
            file(&mut fat, photos, "holiday 2026.raw", &big)?;
            file(&mut fat, root, "README.TXT", b"demo disk\r\n")?;
        }
        fat.flush()?;
    }
    disk.flush()
}

fn demo() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let src: PathBuf = dir.path().join("demo.raw");
    build_demo(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    println!("built a demo disk at {}", src.display());
    let dst = dir.path().join("demo-copy.vmdk");
    run(&src, &dst, Format::Vmdk, Mode::Logical)?;
    let src_disk = FileDisk::open(&src).map_err(|e| e.to_string())?;
    println!(
        "demo done (source allocates {} bytes of {}); the temporary directory is removed on exit",
        src_disk.allocated_bytes().map_err(|e| e.to_string())?,
        src_disk.size()
    );
    Ok(())
}
