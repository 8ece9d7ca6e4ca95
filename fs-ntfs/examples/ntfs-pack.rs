//! Packs the sectors of an NTFS volume that a bounded walk reads into a
//! small fuzz seed: `ntfs-pack VOLUME OUTPUT [OFFSET]`.

use disk_io::{FileDisk, ReadAt, Window};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        return Err("usage: ntfs-pack VOLUME OUTPUT [OFFSET]".into());
    };
    let offset: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let disk = FileDisk::open(input)?;
    let size = disk.size() - offset;
    let volume = Window::new(disk, offset, size)?;
    let packed = fs_ntfs::fuzzing::pack(&volume, 16 << 10, 32 << 10)?;
    std::fs::write(output, packed)?;
    Ok(())
}
