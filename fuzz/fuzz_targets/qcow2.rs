//! qcow2: header, L1/L2 tables, subclusters, compressed clusters over any
//! bytes. No panic, no endless loop, no unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdisk_format::fuzzing::qcow2_read(data);
});
