#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod attribute;
mod attribute_list;
mod boot_sector;
mod export;
mod file;
mod file_name;
pub mod fuzzing;
mod index;
mod lznt1;
mod probe;
mod record;
mod reparse;
mod run_list;
pub mod security;
mod standard_information;
mod volume;

pub use attribute::{Attribute, AttributeFlags, NonResident, Value};
pub use attribute_list::{AttributeListEntry, parse_attribute_list};
pub use boot_sector::BootSector;
pub use export::{EXPORT_CHUNK, Exported, ExportedAttribute};
pub use file::{File, Stream, StreamData};
pub use file_name::{FileName, Namespace};
pub use index::{IndexBlocks, IndexEntry, IndexRoot, search_index, walk_index};
pub use lznt1::lznt1_decompress;
pub use probe::probe;
pub use record::{FileRecord, RecordFlags, apply_fixups};
pub use reparse::{Reparse, TAG_DEDUP, TAG_MOUNT_POINT, TAG_SYMLINK, TAG_WOF, parse_reparse};
pub use run_list::{Run, decode_run_list, find_run};
pub use security::{SdsLocation, SecurityDescriptor, Sid};
pub use standard_information::{StandardInformation, dos, ntfs_time_to_unix};
pub use volume::{LinkTarget, MAX_VALUE, NtfsVolume, RECORD_CACHE, records};
