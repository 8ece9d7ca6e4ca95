//! Entry points for the fuzz targets (and their corpus replay tests).

use alloc::vec;

use crate::FatVolume;

/// Opens `data` as a FAT volume and reads everything: label, FSInfo,
/// backup boot sector, every directory and the start of every file, the
/// used-cluster map. Errors are expected; panics and hangs are bugs.
pub fn fat_read(data: &[u8]) {
    let Ok(volume) = FatVolume::open(data) else {
        return;
    };
    let _ = volume.label();
    let _ = volume.fs_info();
    let _ = volume.backup_boot_sector();
    let _ = volume.used_byte_ranges();
    let mut visited = 0u32;
    let mut buf = vec![0u8; 4096];
    let _ = volume.walk(&mut |path, entry| {
        visited += 1;
        if visited > 5_000 {
            return Err(disk_io::Error::invalid_input("enough"));
        }
        if !entry.is_dir() {
            let _ = volume.read_file(entry, 0, &mut buf);
            let _ = volume.read_file(entry, u64::from(entry.size / 2), &mut buf);
        }
        if visited <= 100 {
            let _ = volume.open_path(path);
        }
        Ok(())
    });
}
