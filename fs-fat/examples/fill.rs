//! Copies a host directory tree into a FAT image through `FatWriter`:
//! names, contents, modification times. Driven by `bench/fat-fill.sh`.
//!
//!     cargo run --release -p fs-fat --example fill -- IMAGE SOURCE_DIR [--format]
//!
//! With `--format` the image (which must exist, at its final size) is
//! formatted first, as `fs_fat::format` chooses.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use disk_io::{FileDisk, WriteAt};
use fs_fat::{Attributes, FatWriter, FileTimes, FormatOptions, Node, Timestamp};

fn copy<D: WriteAt>(
    w: &mut FatWriter<D>,
    src: &Path,
    parent: Node,
    count: &mut u64,
    inside: &mut Duration,
) -> disk_io::Result<()> {
    // Work inside the directory (as mcopy does): short relative lookups.
    let io = |e: std::io::Error| disk_io::Error::io(e, None);
    std::env::set_current_dir(src).map_err(io)?;
    let mut entries: Vec<_> = fs::read_dir(".")
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    entries.sort();
    let mut buf = Vec::new();
    for file_name in entries {
        let name = file_name.to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(&file_name).map_err(io)?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| Timestamp {
                seconds: d.as_secs() as i64,
                nanoseconds: d.subsec_nanos(),
            });
        let times = FileTimes {
            created: mtime,
            modified: mtime,
            accessed: mtime,
        };
        *count += 1;
        if meta.is_dir() {
            let t = Instant::now();
            let d = w.create_dir(parent, &name, &times, Attributes::empty())?;
            *inside += t.elapsed();
            copy(w, &src.join(&file_name), d, count, inside)?;
            std::env::set_current_dir(src).map_err(io)?;
        } else {
            let t = Instant::now();
            let f = w.create_file(parent, &name, &times, Attributes::ARCHIVE, meta.len())?;
            *inside += t.elapsed();
            // One read of the size the metadata gave (files do not change
            // under a benchmark).
            let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
            buf.resize(len, 0);
            if len > 0 {
                fs::File::open(&file_name)
                    .and_then(|mut file| file.read_exact(&mut buf))
                    .map_err(io)?;
            }
            let t = Instant::now();
            w.write(f, 0, &buf)?;
            *inside += t.elapsed();
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(image), Some(src)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: fill IMAGE SOURCE_DIR [--format]");
        std::process::exit(2);
    };
    let start = Instant::now();
    let disk = FileDisk::open_rw(image)?;
    let mut w = if args.iter().any(|a| a == "--format") {
        FatWriter::format(disk, &FormatOptions::default())?
    } else {
        FatWriter::open(disk)?
    };
    let root = w.root();
    let mut count = 0;
    let src = fs::canonicalize(src)?;
    let mut inside = Duration::ZERO;
    copy(&mut w, &src, root, &mut count, &mut inside)?;
    let t = Instant::now();
    w.into_inner()?;
    inside += t.elapsed();
    eprintln!(
        "{count} entries in {:.3} s, of which {:.3} s in fs-fat (flush included)",
        start.elapsed().as_secs_f64(),
        inside.as_secs_f64()
    );
    Ok(())
}
