//! ext2/3/4: superblock, descriptors, inodes, extent trees, block maps,
//! directories (htree too), xattrs, journal replay and the used-block map
//! over any bytes. No panic, no endless loop, no unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fs_ext::fuzzing::ext_read(data);
});
