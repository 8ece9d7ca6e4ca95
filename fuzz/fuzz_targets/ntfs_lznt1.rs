//! NTFS: an LZNT1 compression unit (fs_ntfs::fuzzing::ntfs_lznt1). No panic, no endless loop, no
//! unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fs_ntfs::fuzzing::ntfs_lznt1(data);
});
