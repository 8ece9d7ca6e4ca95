//! What a guest disk holds: partition-table signatures and the FAT, ext
//! and NTFS probes over any bytes. No panic, no endless loop.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    image_convert::fuzz_inspect(data);
});
