#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod boot_sector;
pub mod dir;
pub mod dir_entry;
pub mod fat;
mod fat_table;
pub mod format;
pub mod fuzzing;
pub mod long_name;
mod probe;
pub mod short_name;
mod volume;
pub mod writer;

pub use boot_sector::{BootSector, FsInfo};
pub use dir_entry::{Attributes, DirEntry, Timestamp};
pub use format::{FormatOptions, Layout, format};
pub use probe::{FatType, probe};
pub use volume::{FatVolume, MAX_DEPTH, UsedClusters};
pub use writer::{EntryInfo, FatWriter, FileTimes, Node};
