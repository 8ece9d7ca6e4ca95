//! VHD: footers, dynamic header, BAT, sector bitmaps and parent locators
//! over any bytes. No panic, no endless loop, no unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdisk_format::fuzzing::vhd_read(data);
});
