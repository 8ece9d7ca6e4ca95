#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod cache;
pub mod chain;
mod check;
#[cfg(feature = "std")]
mod compress;
mod detect;
mod format;
pub mod fuzzing;
#[cfg(feature = "std")]
mod options;
pub mod qcow2;
pub mod raw;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

#[cfg(feature = "std")]
mod image;
#[cfg(feature = "std")]
pub mod writable;

pub use check::{CheckReport, MAX_MESSAGES};
pub use detect::{Detected, PROBE_LEN, RawContent, detect, probe_raw_content};
pub use format::Format;

#[cfg(feature = "std")]
pub use image::{
    BackingFile, Image, ImageInfo, OpenOptions, Output, check, create, create_output, create_with,
};
#[cfg(feature = "std")]
pub use options::CreateOptions;
#[cfg(feature = "std")]
pub use writable::{Writable, commit, open_rw, rebase};
