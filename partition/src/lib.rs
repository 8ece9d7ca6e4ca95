#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

#[cfg(feature = "arbitrary")]
pub mod arbitrary_layout;
pub mod gpt;
mod guid;
mod layout;
pub mod mbr;
mod table;
mod types;
pub mod write;

pub use gpt::{Gpt, GptAttributes, GptPartition};
pub use guid::Guid;
pub use layout::{DEFAULT_ALIGNMENT, Layout, PartitionSpec, Rescale, TableType};
pub use mbr::{Mbr, MbrPartition};
pub use table::{Partition, PartitionTable, PartitionType, Table, read};
pub use types::{GPT_TYPES, gpt_type_name, mbr_type_name};

/// Fuzzing entry point shared by the `partition` fuzz target and the corpus
/// replay test: reads any bytes as a partitioned disk. Must never panic.
pub fn fuzz_read(data: &[u8]) {
    if let Ok(Some(table)) = read(data) {
        for p in &table.partitions {
            // Every partition the reader accepts lies inside the disk.
            debug_assert!(
                p.start
                    .checked_add(p.size)
                    .is_some_and(|end| end <= data.len() as u64)
            );
        }
    }
}
