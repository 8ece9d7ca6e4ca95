//! The argument grammar of `shared/spec/cli.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind as ClapErrorKind;
use clap::{Args, Parser, Subcommand};
use disk_io::Error;
use image_convert::Mode;
use vdisk_format::Format;

/// Inspect, convert and compare virtual disk images (raw, vmdk, qcow2, vhd, vhdx, vdi).
#[derive(Parser, Debug)]
#[command(name = "vdisk", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Describe an image: format, sizes, backing chain, partitions, file systems.
    Info {
        /// The image (its format is detected from its content).
        image: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List a directory of a file system inside an image.
    Ls {
        /// The image.
        image: PathBuf,
        /// Partition number (MBR: 1-4 primary, 5+ logical; GPT: entry index + 1).
        #[arg(long = "part", value_name = "N")]
        part: Option<u32>,
        /// Directory to list (default: the root).
        path: Option<String>,
        /// List subdirectories too.
        #[arg(short, long)]
        recursive: bool,
        /// Print JSON Lines.
        #[arg(long)]
        json: bool,
    },
    /// Write a file (or one of its named streams) to stdout.
    Cat {
        /// The image.
        image: PathBuf,
        /// Partition number.
        #[arg(long = "part", value_name = "N")]
        part: Option<u32>,
        /// The file.
        path: String,
        /// A named data stream (NTFS).
        #[arg(long, value_name = "NAME")]
        stream: Option<String>,
    },
    /// Print every entry of a file system as JSON Lines, with SHA-256 of files.
    Manifest {
        /// The image.
        image: PathBuf,
        /// Partition number.
        #[arg(long = "part", value_name = "N")]
        part: Option<u32>,
    },
    /// Check the container's own metadata.
    Check {
        /// The image.
        image: PathBuf,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Compare the guest contents of two images, whatever their formats.
    Compare {
        /// First image.
        a: PathBuf,
        /// Second image.
        b: PathBuf,
        /// Compare partition layouts and file-system manifests instead of sectors.
        #[arg(long)]
        logical: bool,
    },
    /// Convert an image into a new one of any format.
    Convert(ConvertArgs),
    /// Create a new empty image.
    Create {
        /// Output format.
        #[arg(short = 'O', value_name = "FMT", value_parser = parse_format)]
        format: Format,
        /// The new image.
        dst: PathBuf,
        /// Virtual size: bytes, or a K, M, G or T suffix.
        size: String,
        /// Make a copy-on-write child of this image (qcow2; stored as
        /// given, relative to the new image's directory as in qemu-img).
        #[arg(long, value_name = "PARENT")]
        backing: Option<PathBuf>,
        /// Format options, KEY=VAL[,KEY=VAL].
        #[arg(short = 'o', value_name = "KEY=VAL")]
        options: Vec<String>,
    },
    /// Merge a copy-on-write child into its parent.
    Commit {
        /// The child image.
        overlay: PathBuf,
    },
    /// Give a copy-on-write child a new parent, keeping its guest contents.
    Rebase {
        /// The child image.
        overlay: PathBuf,
        /// The new parent.
        #[arg(long, value_name = "NEW_PARENT")]
        backing: PathBuf,
    },
    /// Serve an image over the network block device protocol.
    Serve {
        /// The image.
        image: PathBuf,
        /// Address to listen on.
        #[arg(long, value_name = "ADDR:PORT")]
        bind: Option<String>,
        /// Export name.
        #[arg(long, value_name = "NAME")]
        export: Option<String>,
        /// Accept writes.
        #[arg(long)]
        writable: bool,
    },
}

/// `vdisk convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Source image (read-only, format detected from content).
    pub src: PathBuf,
    /// Destination image (written under a temporary name, then renamed).
    pub dst: PathBuf,
    /// Output format.
    #[arg(short = 'O', value_name = "FMT", value_parser = parse_format)]
    pub output_format: Format,
    /// What to copy: every sector, used blocks only, or file by file.
    #[arg(long, value_name = "MODE", default_value = "sector", value_parser = parse_mode)]
    pub mode: Mode,
    /// Format options, KEY=VAL[,KEY=VAL].
    #[arg(short = 'o', value_name = "KEY=VAL")]
    pub options: Vec<String>,
    /// Virtual size of the output: bytes, or a K, M, G or T suffix.
    #[arg(long, value_name = "BYTES")]
    pub size: Option<String>,
    /// Always show progress (by default only on a terminal).
    #[arg(long, conflicts_with = "quiet")]
    pub progress: bool,
    /// Never show progress.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse().map_err(|e: Error| e.message().to_owned())
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse().map_err(|e: Error| e.message().to_owned())
}

/// Prints a clap error as the contract wants it: help and version on
/// stdout with status 0, anything else as one line on stderr with status 2.
pub fn report_usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ClapErrorKind::DisplayHelp | ClapErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ClapErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        | ClapErrorKind::MissingSubcommand => {
            eprintln!("vdisk: missing subcommand (try 'vdisk --help')");
            ExitCode::from(crate::EXIT_ERROR)
        }
        _ => {
            let text = e.render().to_string();
            // The first paragraph, folded onto one line ("required arguments
            // were not provided:" lists the arguments on the lines below).
            let first: Vec<&str> = text
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            let line = first.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("vdisk: {line} (try 'vdisk --help')");
            ExitCode::from(crate::EXIT_ERROR)
        }
    }
}
