//! NTFS: one FILE record with fixups, its attributes and resident values (fs_ntfs::fuzzing::ntfs_mft_record). No panic, no endless loop, no
//! unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fs_ntfs::fuzzing::ntfs_mft_record(data);
});
