//! Format detection and, for raw images, the raw reader: whatever the
//! bytes, no panic, no endless loop.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdisk_format::fuzzing::detect_and_read(data);
});
