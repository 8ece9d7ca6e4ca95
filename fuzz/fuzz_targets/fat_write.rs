//! FAT writing: format a small volume and run a script of creates,
//! writes, truncations and removals against a model, then read it back
//! (or write to any bytes opened as a volume). No panic, no endless loop,
//! and the volume read back equals the model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fs_fat::fuzzing::fat_write(data);
});
