//! NTFS: boot sector, MFT records and fixups, attributes and attribute
//! lists, run lists, indexes, LZNT1 and reparse points over any bytes (a
//! volume, or a packed volume: see fs_ntfs::fuzzing). No panic, no endless
//! loop, no unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fs_ntfs::fuzzing::ntfs_read(data);
});
