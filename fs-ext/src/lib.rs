#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod block_map;
pub mod checksum;
pub mod dir;
pub mod extent_tree;
mod fs;
pub mod fuzzing;
pub mod group_descriptor;
pub mod inode;
pub mod journal;
mod probe;
pub mod superblock;
pub mod xattr;

pub use dir::DirEntry;
pub use fs::{ChecksumPolicy, ExtFs, MAX_DIR_ENTRIES, Options, Run, Visitor};
pub use inode::{FileType, Inode, InodeFlags, Timestamp};
pub use probe::{ExtVersion, probe};
