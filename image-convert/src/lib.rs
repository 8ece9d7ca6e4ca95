#![doc = include_str!("../README.md")]

mod compare;
mod compare_logical;
mod convert;
mod copy;
mod inspect;
pub mod logical;
mod used;
pub mod volume;

pub use used::{FilteredVolume, UsedFilter, UsedLayout, used_layout};

pub use compare::{Comparison, compare_sectors};
pub use compare_logical::{CompareError, LogicalComparison, Which, compare_logical};
pub use convert::{ConvertOptions, Mode, PathError, convert, open_source};
pub use copy::{
    BATCH, CHUNK, CopyError, CopyOptions, CopyStats, DEFAULT_THREADS, Side, ZERO_BLOCK,
    copy_sectors,
};
pub use inspect::{
    FileSystem, GuestContent, fuzz_inspect, inspect, is_recognised, probe_filesystem,
};
