//! VDI: header, block map (free, zero and stored blocks), differencing
//! images over a parent of zeros, and the block map check, over any bytes.
//! No panic, no endless loop, no unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdisk_format::fuzzing::vdi_read(data);
});
