//! Prints the tree of an NTFS volume: `ntfs-tree IMAGE [OFFSET]`.

use disk_io::{FileDisk, ReadAt, Window};
use fs_ntfs::NtfsVolume;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: ntfs-tree IMAGE [OFFSET]")?;
    let offset: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let disk = FileDisk::open(path)?;
    let size = disk.size() - offset;
    let vol = NtfsVolume::open(Window::new(disk, offset, size)?)?;
    println!(
        "label {:?} version {:?} dirty {} warnings {:?}",
        vol.label(),
        vol.version(),
        vol.is_dirty(),
        vol.warnings()
    );
    walk(&vol, 5, "", 0)?;
    Ok(())
}

fn walk<D: ReadAt>(
    vol: &NtfsVolume<D>,
    dir: u64,
    prefix: &str,
    depth: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let file = vol.file(dir)?;
    for (rec, name) in vol.read_dir(&file)? {
        if !name.namespace.is_long() || rec == dir || (dir == 5 && rec < 16) {
            continue;
        }
        let f = vol.file(rec)?;
        let path = format!("{prefix}/{}", name.name_string());
        println!(
            "{rec:6} {:10} {:?} {} {:?} {:?}",
            f.data_size(),
            f.named_streams(),
            path,
            vol.link_target(&f)?,
            f.standard_information()?.map(|s| s.attributes)
        );
        if f.is_directory() && depth < 64 {
            walk(vol, rec, &path, depth + 1)?;
        }
    }
    Ok(())
}
