//! The entry point of the `ext` fuzz target: open any bytes as a volume
//! and walk everything, bounded.

use alloc::vec;

use crate::fs::{ChecksumPolicy, ExtFs, Options};
use crate::inode::FileType;

/// Opens `data` as an ext volume and reads every directory, file (up to a
/// few blocks each), symlink and xattr, plus the used-block map. Never
/// panics; errors simply end the walk.
pub fn ext_read(data: &[u8]) {
    for checksums in [ChecksumPolicy::Enforce, ChecksumPolicy::ReadAnyway] {
        let options = Options {
            checksums,
            replay_journal: true,
        };
        let Ok(fs) = ExtFs::open_with(data, options) else {
            continue;
        };
        let _ = fs.used_blocks();
        let _ = fs.verify_bitmaps();
        let mut budget = 2000usize;
        let _ = fs.walk(64, &mut |_, _, inode| {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return Err(disk_io::Error::invalid_input("fuzz budget"));
            }
            let _ = fs.xattrs(inode);
            match inode.file_type() {
                FileType::Symlink => {
                    let _ = fs.read_link(inode);
                }
                FileType::Regular => {
                    let mut buf = vec![0u8; 8192];
                    let _ = fs.read(inode, 0, &mut buf);
                    let _ = fs.read(inode, inode.size.saturating_sub(100), &mut buf);
                }
                _ => {}
            }
            Ok(())
        });
    }
}
