//! Lists every path of an ext volume with its inode, type and size:
//! `cargo run -p fs-ext --example ext-ls IMAGE [FILE]` (with FILE: its contents).

use disk_io::FileDisk;
use fs_ext::ExtFs;

fn main() -> Result<(), disk_io::Error> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: ext-ls IMAGE");
        std::process::exit(2);
    };
    let fs = ExtFs::open(FileDisk::open(path)?)?;
    if let Some(file) = std::env::args().nth(2) {
        let inode = fs.resolve(&file)?;
        let data = fs.read_all(&inode, u64::MAX)?;
        std::io::Write::write_all(&mut std::io::stdout(), &data)?;
        return Ok(());
    }
    fs.walk(256, &mut |path, _, inode| {
        println!(
            "{} ino={} mode={:o} size={} nlink={}",
            String::from_utf8_lossy(path),
            inode.ino,
            inode.mode,
            inode.size,
            inode.links_count
        );
        Ok(())
    })?;
    Ok(())
}
