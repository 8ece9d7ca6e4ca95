//! Test disks built by the real tools: a partition table (MBR with a
//! logical partition, GPT, or none) holding FAT, ext4 and NTFS file
//! systems, each with a small tree of files and its free space full of
//! random bytes (as on a used disk whose files were deleted), so that a
//! copy that carries free space over is caught by its size.
//!
//! ```no_run
//! use test_support::disks::{Fs, Table, build_disk, tools_for};
//! if test_support::have_all(&tools_for(&[Fs::Fat, Fs::Ext4])) {
//!     let dir = std::env::temp_dir().join("vdisk-doc-disk");
//!     std::fs::create_dir_all(&dir).unwrap();
//!     let disk = build_disk(&dir, "d.img", Table::Gpt, &[Fs::Fat, Fs::Ext4], 16);
//!     assert_eq!(disk.parts.len(), 2);
//! }
//! ```

use std::path::{Path, PathBuf};

use crate::sh;

/// A file system to put on a test disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    /// FAT16 (mkfs.fat, filled with mcopy).
    Fat,
    /// ext4 with 1 KiB blocks (mkfs.ext4 -d), with a symlink and a hard link.
    Ext4,
    /// NTFS (mkntfs, filled through an ntfs-3g mount, else ntfscp).
    Ntfs,
}

impl Fs {
    /// The name `vdisk info` gives it.
    pub fn vdisk_name(self) -> &'static str {
        match self {
            Fs::Fat => "fat16",
            Fs::Ext4 => "ext4",
            Fs::Ntfs => "ntfs",
        }
    }

    /// Runs the file system's own checker read-only on `image` (a file
    /// holding just the file system) and fails the test if it complains.
    pub fn fsck(self, image: &Path) {
        let dir = image.parent().unwrap();
        let name = image.file_name().unwrap().to_str().unwrap();
        match self {
            Fs::Fat => sh(&format!("fsck.fat -n {name}"), dir),
            Fs::Ext4 => sh(&format!("e2fsck -fn {name}"), dir),
            Fs::Ntfs => sh(&format!("ntfsfix -n {name}"), dir),
        };
    }
}

/// The tools [`build_disk`] and [`Fs::fsck`] need for `fss`.
pub fn tools_for(fss: &[Fs]) -> Vec<&'static str> {
    let mut t = vec!["sfdisk", "dd", "head"];
    for fs in fss {
        t.extend_from_slice(match fs {
            Fs::Fat => &["mkfs.fat", "mcopy", "fsck.fat"][..],
            Fs::Ext4 => &["mkfs.ext4", "e2fsck"][..],
            Fs::Ntfs => &["mkntfs", "ntfscp", "ntfsfix"][..],
        });
    }
    t
}

/// A partition table kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// MBR; from the third file system on, partitions are logical ones
    /// inside an extended partition (numbers 5, 6, …).
    Mbr,
    /// GPT.
    Gpt,
    /// No table: one file system spans the whole disk.
    None,
}

/// One partition of a built disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Number as Linux numbers it (`None` for a whole-disk file system).
    pub number: Option<u32>,
    /// Its file system.
    pub fs: Fs,
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
}

/// A disk made by [`build_disk`].
#[derive(Clone, Debug)]
pub struct Disk {
    /// The raw disk image.
    pub path: PathBuf,
    /// Its partitions with file systems, in table order.
    pub parts: Vec<Part>,
}

impl Disk {
    /// Copies partition `part` of the raw image at `image` (this disk, or
    /// a raw copy of it) into its own file `out` in the same directory,
    /// for the file-system checkers.
    pub fn extract(&self, image: &Path, part: &Part, out: &str) -> PathBuf {
        let dir = image.parent().unwrap();
        sh(
            &format!(
                "dd if={} of={out} bs=1M skip={} count={} iflag=skip_bytes,count_bytes conv=sparse status=none",
                image.display(),
                part.start,
                part.size
            ),
            dir,
        );
        dir.join(out)
    }
}

/// Writes the small tree every file system gets into `dir/tree`, with a
/// symlink and a hard link when `links` (ext) is set.
fn make_tree(dir: &Path, seed: &str, links: bool) {
    sh(
        &format!(
            "rm -rf tree && mkdir -p tree/docs/deep tree/empty_dir \
             && printf 'hello {seed}\\n' > tree/hello.txt \
             && head -c 300000 /dev/urandom > tree/docs/random.bin \
             && head -c 70000 /dev/urandom > tree/docs/deep/small.bin \
             && : > tree/docs/empty.txt \
             && touch -d '2021-05-06 07:08:10 UTC' tree/hello.txt tree/docs/random.bin"
        ),
        dir,
    );
    if links {
        sh(
            "ln -s docs/random.bin tree/link && ln tree/docs/deep/small.bin tree/hardlink.bin",
            dir,
        );
    }
}

/// Makes one file system of `mib` MiB in `dir/name`, its free space
/// random bytes.
fn make_fs(dir: &Path, name: &str, fs: Fs, mib: u64) {
    sh(&format!("head -c {mib}M /dev/urandom > {name}"), dir);
    match fs {
        Fs::Fat => {
            make_tree(dir, name, false);
            sh(
                &format!(
                    "mkfs.fat -F 16 -n FATVOL {name} >/dev/null \
                     && cd tree && TZ=UTC mcopy -s -m -i ../{name} * ::"
                ),
                dir,
            );
        }
        Fs::Ext4 => {
            make_tree(dir, name, true);
            sh(
                &format!(
                    "mkfs.ext4 -q -F -b 1024 -E nodiscard,lazy_itable_init=0 -L extvol -d tree {name}"
                ),
                dir,
            );
        }
        Fs::Ntfs => {
            make_tree(dir, name, false);
            sh(
                &format!("mkntfs -q -F -Q -L ntfsvol {name} >/dev/null 2>&1"),
                dir,
            );
            let mounted = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "mkdir -p mnt && ntfs-3g {name} mnt 2>/dev/null && cp -r tree/. mnt/ && umount mnt"
                ))
                .current_dir(dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !mounted {
                // No FUSE: the root files only, through ntfscp.
                let _ = std::process::Command::new("umount")
                    .arg("mnt")
                    .current_dir(dir)
                    .status();
                sh(
                    &format!(
                        "ntfscp -q {name} tree/hello.txt hello.txt \
                         && ntfscp -q {name} tree/docs/random.bin random.bin"
                    ),
                    dir,
                );
            }
        }
    }
}

/// Builds the raw disk `dir/name`: a `table` holding one partition of
/// `part_mib` MiB per file system of `fss` (with [`Table::None`], just
/// the first file system), each filled as the module documentation says.
/// The gaps between partitions are holes.
pub fn build_disk(dir: &Path, name: &str, table: Table, fss: &[Fs], part_mib: u64) -> Disk {
    let path = dir.join(name);
    if table == Table::None {
        let fs = *fss.first().unwrap();
        make_fs(dir, name, fs, part_mib);
        return Disk {
            path,
            parts: vec![Part {
                number: None,
                fs,
                start: 0,
                size: part_mib << 20,
            }],
        };
    }
    let mut script = String::new();
    match table {
        Table::Mbr => {
            script.push_str("label: dos\n");
            for (i, fs) in fss.iter().enumerate() {
                let kind = match fs {
                    Fs::Fat => "6",
                    Fs::Ext4 => "83",
                    Fs::Ntfs => "7",
                };
                if i == 2 {
                    // The rest of the disk as an extended partition.
                    script.push_str(",,5\n");
                }
                script.push_str(&format!(",{part_mib}M,{kind}\n"));
            }
        }
        Table::Gpt | Table::None => {
            script.push_str("label: gpt\n");
            for fs in fss {
                let kind = match fs {
                    Fs::Fat | Fs::Ntfs => "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
                    Fs::Ext4 => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                };
                script.push_str(&format!(",{part_mib}M,{kind}\n"));
            }
        }
    }
    // Room for the extended partition's EBRs and the GPT backup.
    let disk_mib = 1 + (part_mib + 1) * fss.len() as u64 + 1;
    sh(
        &format!("truncate -s {disk_mib}M {name} && printf '{script}' | sfdisk -q {name}"),
        dir,
    );
    // `sfdisk -d` lines: "name5 : start=  77824, size=  32768, type=7".
    let dump = sh(&format!("sfdisk -d {name}"), dir);
    let mut parts = Vec::new();
    let mut fs_iter = fss.iter();
    for line in dump.lines().filter(|l| l.contains("start=")) {
        let (node, rest) = line.split_once(':').unwrap();
        let number: u32 = node
            .trim()
            .trim_start_matches(name)
            .trim_start_matches('p')
            .parse()
            .unwrap();
        let field = |key: &str| -> &str {
            rest.split(',')
                .find_map(|f| f.trim().strip_prefix(key))
                .unwrap()
                .trim()
        };
        let start: u64 = field("start=").parse().unwrap();
        let size: u64 = field("size=").parse().unwrap();
        if field("type=") == "5" {
            continue;
        }
        let fs = *fs_iter.next().unwrap();
        parts.push(Part {
            number: Some(number),
            fs,
            start: start * 512,
            size: size * 512,
        });
    }
    assert_eq!(parts.len(), fss.len(), "{dump}");
    for (i, p) in parts.iter().enumerate() {
        let fs_name = format!("{name}.fs{i}");
        make_fs(dir, &fs_name, p.fs, p.size >> 20);
        sh(
            &format!(
                "dd if={fs_name} of={name} bs=1M seek={} oflag=seek_bytes conv=notrunc status=none && rm {fs_name}",
                p.start
            ),
            dir,
        );
    }
    Disk { path, parts }
}
