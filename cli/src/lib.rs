#![doc = include_str!("../README.md")]

mod args;
mod check;
mod files;
mod info;
mod size;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use disk_io::{Error, ReadAt};
use image_convert::{
    Comparison, ConvertOptions, LogicalComparison, PathError, Which, compare_logical,
    compare_sectors, open_source,
};
use indicatif::{ProgressBar, ProgressStyle};

use args::{Cli, Command, ConvertArgs};

/// Exit status for a negative answer (`compare`: differ; `check`: problems).
const EXIT_NEGATIVE: u8 = 1;
/// Exit status for every error.
const EXIT_ERROR: u8 = 2;

/// Runs the command line with the process's arguments and returns the
/// exit status of the contract.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return args::report_usage_error(e),
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vdisk: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cli: Cli) -> Result<u8, PathError> {
    match cli.command {
        Command::Info { image, json } => info::run(&image, json).map(|()| 0),
        Command::Convert(args) => convert(args).map(|()| 0),
        Command::Compare { a, b, logical } => compare(&a, &b, logical),
        Command::Create {
            format,
            dst,
            size,
            backing,
            options,
        } => {
            let mut create = vdisk_format::CreateOptions::parse(&options)?;
            if let Some(parent) = &backing {
                let name = parent.to_str().ok_or_else(|| {
                    PathError::new(parent, Error::invalid_input("backing path is not UTF-8"))
                })?;
                create.set("backing_file", name)?;
            }
            let size = size::parse(&size)?;
            let out = vdisk_format::create_with(&dst, format, size, &create)
                .map_err(|e| PathError::new(&dst, e))?;
            out.flush().map_err(|e| PathError::new(&dst, e))?;
            Ok(0)
        }
        Command::Ls {
            image,
            part,
            path,
            recursive,
            json,
        } => files::ls(&image, part, path.as_deref(), recursive, json).map(|()| 0),
        Command::Cat {
            image,
            part,
            path,
            stream,
        } => files::cat(&image, part, &path, stream.as_deref()).map(|()| 0),
        Command::Manifest { image, part } => files::manifest(&image, part).map(|()| 0),
        Command::Check { image, json } => check::run(&image, json),
        Command::Commit { overlay } => vdisk_format::commit(&overlay)
            .map(|_| 0)
            .map_err(|e| PathError::new(&overlay, e)),
        Command::Rebase { overlay, backing } => {
            let name = backing.to_str().ok_or_else(|| {
                PathError::new(&backing, Error::invalid_input("backing path is not UTF-8"))
            })?;
            vdisk_format::rebase(&overlay, name)
                .map(|()| 0)
                .map_err(|e| PathError::new(&overlay, e))
        }
        Command::Serve { .. } => Err(unsupported(
            "subcommand 'serve'",
            "the NBD server is not implemented yet",
        )),
    }
}

fn unsupported(what: &str, why: &str) -> PathError {
    PathError::from(Error::unsupported(format!("{what}: {why}")))
}

fn convert(args: ConvertArgs) -> Result<(), PathError> {
    let create = vdisk_format::CreateOptions::parse(&args.options)?;
    let size = args.size.as_deref().map(size::parse).transpose()?;
    // Ctrl-C stops the copy; the temporary output is removed on the way out.
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        // Failing to install the handler only loses the clean-up on Ctrl-C.
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let terminal = std::io::stderr().is_terminal();
    // A bar on a terminal; with --progress elsewhere (a log), a line a second.
    let bar = (!args.quiet && terminal).then(progress_bar);
    let mut lines = (args.progress && !terminal).then(LineProgress::new);
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
        if let Some(lines) = &mut lines {
            lines.update(done, total);
        }
    };
    let opts = ConvertOptions {
        format: Some(args.output_format),
        mode: args.mode,
        size,
        cancel: Some(&cancel),
        allow_unrecognised: false,
        sync: false,
        create: Some(&create),
    };
    let result = image_convert::convert(&args.src, &args.dst, &opts, &mut progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result.map(|_| ())
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Progress for a log: at most one line a second on stderr, with bytes
/// done, rate and time left, and a last line at the end.
struct LineProgress {
    started: Instant,
    printed: Option<Instant>,
    finished: bool,
}

impl LineProgress {
    fn new() -> Self {
        LineProgress {
            started: Instant::now(),
            printed: None,
            finished: false,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        let now = Instant::now();
        let due = self
            .printed
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        let last = done == total && total > 0;
        if self.finished || !(due || last) {
            return;
        }
        self.finished = last;
        self.printed = Some(now);
        let secs = now.duration_since(self.started).as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let percent = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        let eta = if rate > 0.0 {
            format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
        } else {
            "?".to_owned()
        };
        eprintln!(
            "{done}/{total} bytes ({percent:.1}%), {:.1} MiB/s, ETA {eta}",
            rate / f64::from(1u32 << 20)
        );
    }
}

fn compare(a: &Path, b: &Path, logical: bool) -> Result<u8, PathError> {
    let ia = open_source(a, false)?;
    let ib = open_source(b, false)?;
    if logical {
        return compare_logical_images(a, ia, b, ib);
    }
    if ia.size() != ib.size() {
        println!(
            "Warning: image size mismatch ({} and {} bytes)",
            ia.size(),
            ib.size()
        );
    }
    // A read error names the image it came from.
    let failed = std::sync::atomic::AtomicU8::new(0);
    let ta = Tagged {
        disk: &ia,
        side: 1,
        failed: &failed,
    };
    let tb = Tagged {
        disk: &ib,
        side: 2,
        failed: &failed,
    };
    let verdict = compare_sectors(&ta, &tb).map_err(|e| match failed.load(Ordering::Relaxed) {
        1 => PathError::new(a, e),
        2 => PathError::new(b, e),
        _ => PathError::from(e),
    })?;
    match verdict {
        Comparison::Equal => {
            println!("Images are identical.");
            Ok(0)
        }
        Comparison::DiffersAt(offset) => {
            println!("Content mismatch at offset {offset} ({offset:#x})!");
            Ok(EXIT_NEGATIVE)
        }
    }
}

/// `compare --logical`: layouts and file-system trees.
fn compare_logical_images(
    a: &Path,
    ia: vdisk_format::Image,
    b: &Path,
    ib: vdisk_format::Image,
) -> Result<u8, PathError> {
    let verdict = compare_logical(Arc::new(ia), Arc::new(ib)).map_err(|e| match e.which {
        Which::A => PathError::new(a, e.error),
        Which::B => PathError::new(b, e.error),
    })?;
    match verdict {
        LogicalComparison::Equal => {
            println!("Images are logically identical.");
            Ok(0)
        }
        LogicalComparison::Differs(what) => {
            println!("Logical mismatch: {what}");
            Ok(EXIT_NEGATIVE)
        }
    }
}

/// A disk that notes in `failed` which side of a comparison it is when a
/// read or map query fails.
struct Tagged<'a, D: ReadAt> {
    disk: &'a D,
    side: u8,
    failed: &'a std::sync::atomic::AtomicU8,
}

impl<D: ReadAt> Tagged<'_, D> {
    fn note<T>(&self, r: disk_io::Result<T>) -> disk_io::Result<T> {
        if r.is_err() {
            self.failed.store(self.side, Ordering::Relaxed);
        }
        r
    }
}

impl<D: ReadAt> ReadAt for Tagged<'_, D> {
    fn size(&self) -> u64 {
        self.disk.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> disk_io::Result<()> {
        self.note(self.disk.read_at(offset, buf))
    }

    fn allocation(&self, offset: u64, length: u64) -> disk_io::Result<disk_io::Extent> {
        self.note(self.disk.allocation(offset, length))
    }
}
