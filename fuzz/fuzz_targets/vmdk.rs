//! vmdk: sparse header, streamOptimized footer, embedded descriptor, grain
//! directory and tables, compressed grains, check, descriptor text over
//! any bytes. No panic, no endless loop, no unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdisk_format::fuzzing::vmdk_read(data);
});
