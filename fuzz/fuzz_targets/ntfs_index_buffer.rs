//! NTFS: INDX index records reached from a root (fs_ntfs::fuzzing::ntfs_index_buffer). No panic, no endless loop, no
//! unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fs_ntfs::fuzzing::ntfs_index_buffer(data);
});
