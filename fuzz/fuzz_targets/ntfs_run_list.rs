//! NTFS: a run list (fs_ntfs::fuzzing::ntfs_run_list). No panic, no endless loop, no
//! unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fs_ntfs::fuzzing::ntfs_run_list(data);
});
