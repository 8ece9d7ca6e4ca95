//! MBR (with EBR chains) and GPT (both copies, CRCs, entry arrays) over any
//! bytes: no panic, no endless loop, every accepted partition inside the disk.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    partition::fuzz_read(data);
});
