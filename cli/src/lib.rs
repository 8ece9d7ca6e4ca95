#![doc = include_str!("../README.md")]

mod args;
mod check;
mod info;
mod size;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use disk_io::{Error, ReadAt};
use image_convert::{Comparison, ConvertOptions, PathError, compare_sectors, open_source};
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
            if backing.is_some() {
                return Err(unsupported(
                    "create --backing",
                    "copy-on-write images are not written yet",
                ));
            }
            args::no_options(&options)?;
            let size = size::parse(&size)?;
            let out =
                vdisk_format::create(&dst, format, size).map_err(|e| PathError::new(&dst, e))?;
            out.flush().map_err(|e| PathError::new(&dst, e))?;
            Ok(0)
        }
        Command::Ls { .. } => Err(unsupported("subcommand 'ls'", NO_FS_READER)),
        Command::Cat { .. } => Err(unsupported("subcommand 'cat'", NO_FS_READER)),
        Command::Manifest { .. } => Err(unsupported("subcommand 'manifest'", NO_FS_READER)),
        Command::Check { image, json } => check::run(&image, json),
        Command::Commit { .. } => Err(unsupported("subcommand 'commit'", NO_COW)),
        Command::Rebase { .. } => Err(unsupported("subcommand 'rebase'", NO_COW)),
        Command::Serve { .. } => Err(unsupported(
            "subcommand 'serve'",
            "the NBD server is not implemented yet",
        )),
    }
}

const NO_FS_READER: &str = "no file-system reader is available yet";
const NO_COW: &str = "copy-on-write chains are not written yet";

fn unsupported(what: &str, why: &str) -> PathError {
    PathError::from(Error::unsupported(format!("{what}: {why}")))
}

fn convert(args: ConvertArgs) -> Result<(), PathError> {
    args::no_options(&args.options)?;
    let size = args.size.as_deref().map(size::parse).transpose()?;
    // Ctrl-C stops the copy; the temporary output is removed on the way out.
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        // Failing to install the handler only loses the clean-up on Ctrl-C.
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let show = args.progress || (!args.quiet && std::io::stderr().is_terminal());
    let bar = show.then(progress_bar);
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let opts = ConvertOptions {
        format: Some(args.output_format),
        mode: args.mode,
        size,
        cancel: Some(&cancel),
        allow_unrecognised: false,
        sync: false,
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

fn compare(a: &Path, b: &Path, logical: bool) -> Result<u8, PathError> {
    if logical {
        return Err(unsupported("compare --logical", NO_FS_READER));
    }
    let ia = open_source(a, false)?;
    let ib = open_source(b, false)?;
    if ia.size() != ib.size() {
        println!(
            "Warning: image size mismatch ({} and {} bytes)",
            ia.size(),
            ib.size()
        );
    }
    match compare_sectors(&ia, &ib)? {
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
