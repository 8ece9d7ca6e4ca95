//! vhdx: headers, region table, metadata, BAT and sector bitmaps, log
//! replay and check, over a sparse description of a file (or the file
//! itself). No panic, no endless loop, no unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdisk_format::fuzzing::vhdx_read(data);
});
