//! FAT12/16/32: boot sector, FAT chains, long names, directories, file
//! data and the used-cluster map over any bytes. No panic, no endless
//! loop, no unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fs_fat::fuzzing::fat_read(data);
});
