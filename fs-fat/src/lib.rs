#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod boot_sector;
pub mod dir;
pub mod dir_entry;
pub mod fat;
pub mod fuzzing;
pub mod long_name;
mod probe;
mod volume;

pub use boot_sector::{BootSector, FsInfo};
pub use dir_entry::{Attributes, DirEntry, Timestamp};
pub use probe::{FatType, probe};
pub use volume::{FatVolume, MAX_DEPTH, UsedClusters};
