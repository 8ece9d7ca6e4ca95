//! Structure-aware round trip: arbitrary valid layout -> write -> read ->
//! the same layout.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    partition::arbitrary_layout::round_trip(data);
});
