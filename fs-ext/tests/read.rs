//! Reading what mke2fs wrote: every path, type, size, content, mode,
//! owner, time, link count, symlink target, xattr and inode number of a
//! generated tree, on every ext variant, compared with the tree itself,
//! with debugfs and with dumpe2fs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use disk_io::FileDisk;
use fs_ext::{ExtFs, FileType, InodeFlags};
use test_support::{have_all, sh};

#[derive(Debug, Clone, PartialEq)]
struct Want {
    kind: FileType,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    nlink: u64,
    target: Option<Vec<u8>>,
    content: Option<Vec<u8>>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Builds the test tree under `root`; `many` entries in `/many`.
/// Returns whether xattrs were set.
fn build_tree(root: &Path, many: usize) -> bool {
    std::fs::create_dir_all(root).unwrap();
    let mut deep = root.join("deep");
    for i in 0..24 {
        deep = deep.join(format!("level{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom.txt"), b"at the bottom\n").unwrap();
    let m = root.join("many");
    std::fs::create_dir(&m).unwrap();
    for i in 0..many {
        std::fs::write(m.join(format!("entry-with-a-longish-name-{i:05}")), b"").unwrap();
    }
    std::fs::write(m.join("not-empty"), b"the one with content").unwrap();
    std::fs::write(root.join("big.bin"), noise(300_000, 1)).unwrap();
    std::fs::hard_link(root.join("big.bin"), root.join("big-link.bin")).unwrap();
    std::fs::hard_link(root.join("big.bin"), root.join("deep/another-link")).unwrap();
    std::fs::write(root.join("tiny"), b"tiny inline file\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("héllo wörld ✓.txt"), "unicode ✓\n").unwrap();
    std::fs::create_dir(root.join("日本語")).unwrap();
    std::fs::write(root.join("日本語/ファイル"), b"kana").unwrap();
    std::fs::create_dir(root.join("smalldir")).unwrap();
    std::fs::write(root.join("smalldir/a"), b"a").unwrap();
    std::os::unix::fs::symlink("deep/level0", root.join("fast-link")).unwrap();
    let long = "l".repeat(70) + "/" + &"o".repeat(100) + "/target";
    std::os::unix::fs::symlink(&long, root.join("slow-link")).unwrap();
    std::os::unix::fs::symlink("/nowhere", root.join("dangling")).unwrap();
    sh(
        "truncate -s 5M sparse && printf A | dd of=sparse conv=notrunc status=none \
         && printf BBBB | dd of=sparse bs=1 seek=1048579 conv=notrunc status=none \
         && printf C | dd of=sparse bs=1 seek=5242879 conv=notrunc status=none \
         && truncate -s 2M fragmented \
         && for i in $(seq 0 31); do printf chunk$i | dd of=fragmented bs=65536 seek=$i conv=notrunc status=none; done \
         && printf end | dd of=fragmented bs=1 seek=2097149 conv=notrunc status=none \
         && printf 'mode' > perms && chmod 4751 perms \
         && printf 'owned' > owned && chown 100000:200000 owned \
         && touch -h -d @1700000000 fast-link && touch -d @1600000000 tiny \
         && touch -d @2000000000 empty && mkfifo fifo",
        root,
    );
    // setfattr is optional: without it the xattr part is skipped.
    let has_setfattr = std::process::Command::new("setfattr")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let xattrs = has_setfattr
        && sh(
            "setfattr -n user.k -v hello tiny && setfattr -n trusted.t -v trusty tiny \
             && setfattr -n user.big -v $(head -c 40 /dev/zero | tr '\\0' x) owned \
             && setfattr -n security.s -v sec smalldir && echo ok",
            root,
        )
        .contains("ok");
    if !xattrs {
        eprintln!("xattrs not tested: setfattr is missing");
    }
    xattrs
}

/// What the host says about every path under `root`.
fn expected(root: &Path) -> BTreeMap<Vec<u8>, Want> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap();
            let key = [b"/", rel.as_os_str().as_encoded_bytes()].concat();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                FileType::Directory
            } else if ft.is_symlink() {
                FileType::Symlink
            } else if ft.is_file() {
                FileType::Regular
            } else {
                FileType::Fifo
            };
            let mut xattrs = BTreeMap::new();
            if kind != FileType::Symlink && !key.starts_with(b"/many/") {
                let out = std::process::Command::new("getfattr")
                    .args(["--absolute-names", "-d", "-m", "-", "-e", "hex"])
                    .arg(&p)
                    .output();
                if let Ok(out) = out {
                    for line in String::from_utf8_lossy(&out.stdout).lines() {
                        if let Some((k, v)) = line.split_once("=0x") {
                            let bytes = (0..v.len())
                                .step_by(2)
                                .map(|i| u8::from_str_radix(&v[i..i + 2], 16).unwrap())
                                .collect();
                            xattrs.insert(k.as_bytes().to_vec(), bytes);
                        }
                    }
                }
            }
            out.insert(
                key,
                Want {
                    kind,
                    size: if kind == FileType::Directory {
                        0
                    } else {
                        md.len()
                    },
                    mode: md.mode(),
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: md.mtime(),
                    nlink: md.nlink(),
                    target: (kind == FileType::Symlink).then(|| {
                        std::fs::read_link(&p)
                            .unwrap()
                            .into_os_string()
                            .into_encoded_bytes()
                    }),
                    content: (kind == FileType::Regular).then(|| std::fs::read(&p).unwrap()),
                    xattrs,
                },
            );
        }
    }
    out
}

/// What the reader says about every path of `fs`.
fn actual(fs: &ExtFs<FileDisk>) -> BTreeMap<Vec<u8>, (u32, Want)> {
    let mut out = BTreeMap::new();
    fs.walk(256, &mut |path, entry, inode| {
        let kind = inode.file_type();
        if entry.file_type != 0 {
            assert_eq!(
                FileType::from_dirent(entry.file_type),
                kind,
                "{}",
                String::from_utf8_lossy(path)
            );
        }
        let xattrs = fs
            .xattrs(inode)?
            .into_iter()
            .filter(|(n, _)| n != b"system.data")
            .collect();
        let want = Want {
            kind,
            size: if kind == FileType::Directory {
                0
            } else {
                inode.size
            },
            mode: u32::from(inode.mode),
            uid: inode.uid,
            gid: inode.gid,
            mtime: inode.mtime.secs,
            nlink: u64::from(inode.links_count),
            target: (kind == FileType::Symlink).then(|| fs.read_link(inode).unwrap()),
            content: (kind == FileType::Regular).then(|| fs.read_all(inode, 1 << 30).unwrap()),
            xattrs,
        };
        out.insert(path.to_vec(), (inode.ino, want));
        Ok(())
    })
    .unwrap();
    out
}

/// Free block ranges as dumpe2fs lists them, complemented: the used runs.
/// With bigalloc, dumpe2fs names a free cluster range by the first block
/// of its first and last clusters.
fn dumpe2fs_used(img: &Path, first: u64, blocks: u64, ratio: u64) -> Vec<(u64, u64)> {
    let out = sh(
        &format!("dumpe2fs {} 2>/dev/null", img.display()),
        Path::new("/"),
    );
    let mut free = BTreeSet::new();
    for line in out.lines() {
        let Some(list) = line.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for part in list.split(", ").filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            free.insert((a, (b + ratio).min(blocks) - a));
        }
    }
    let mut used = Vec::new();
    let mut at = first;
    for (s, len) in free {
        if s > at {
            used.push((at, s - at));
        }
        at = at.max(s + len);
    }
    if at < blocks {
        used.push((at, blocks - at));
    }
    used
}

fn sb_has_inline(fs: &ExtFs<FileDisk>) -> bool {
    fs.superblock()
        .incompat
        .contains(fs_ext::superblock::Incompat::INLINE_DATA)
}

fn debugfs_stat(img: &Path, ino: u32) -> String {
    sh(
        &format!("debugfs -R 'stat <{ino}>' {} 2>/dev/null", img.display()),
        Path::new("/"),
    )
}

fn check_variant(dir: &Path, tree: &Path, want: &BTreeMap<Vec<u8>, Want>, name: &str, mkfs: &str) {
    let img = dir.join(format!("{name}.img"));
    sh(
        &format!(
            "rm -f {img} && truncate -s 32M {img} && {mkfs} -q -F -N 8000 -d {tree} {img} \
             && e2fsck -fyD {img} >/dev/null 2>&1; e2fsck -fn {img} >/dev/null",
            img = img.display(),
            tree = tree.display()
        ),
        dir,
    );
    let fs = ExtFs::open(FileDisk::open(&img).unwrap()).unwrap();
    let got = actual(&fs);
    let got_paths: BTreeSet<_> = got
        .keys()
        .filter(|k| !k.starts_with(b"/lost+found"))
        .collect();
    let want_paths: BTreeSet<_> = want.keys().collect();
    assert_eq!(got_paths, want_paths, "{name}: paths");
    assert!(
        got.contains_key(b"/lost+found".as_slice()),
        "{name}: lost+found"
    );
    for (path, w) in want {
        let (ino, g) = &got[path];
        let p = String::from_utf8_lossy(path);
        // (mke2fs -d with inline_data drops a trailing hole from i_size:
        // the tree's sparse files end with data.)
        let mut w = w.clone();
        if w.kind == FileType::Directory {
            // Directory link counts are the ext ones (2 + subdirectories).
            w.nlink = g.nlink;
        }
        assert_eq!(g, &w, "{name}: {p} (inode {ino})");
    }
    // Hard links share an inode.
    let big = got[&b"/big.bin".to_vec()].0;
    assert_eq!(got[&b"/big-link.bin".to_vec()].0, big);
    assert_eq!(got[&b"/deep/another-link".to_vec()].0, big);
    // Inode numbers, sizes, links and owners agree with debugfs.
    for path in [
        "/big.bin",
        "/owned",
        "/slow-link",
        "/many",
        "/sparse",
        "/tiny",
    ] {
        let (ino, g) = &got[path.as_bytes()];
        let stat = debugfs_stat(&img, *ino);
        let by_path = sh(
            &format!("debugfs -R 'stat {path}' {} 2>/dev/null", img.display()),
            Path::new("/"),
        );
        assert!(
            by_path.starts_with(&format!("Inode: {ino} ")),
            "{name}: {path}: {by_path}"
        );
        assert!(
            stat.contains(&format!("Links: {}", g.nlink)),
            "{name}: {path}: {stat}"
        );
        let size = if g.kind == FileType::Directory {
            fs.inode(*ino).unwrap().size
        } else {
            g.size
        };
        assert!(
            stat.contains(&format!("Size: {size}")),
            "{name}: {path}: {stat}"
        );
        assert!(
            stat.contains(&format!("User: {:>5}", g.uid))
                || stat.contains(&format!("User: {}", g.uid)),
            "{name}: {path}: {stat}"
        );
    }
    // The big directory became an htree (after e2fsck -D) and reads whole.
    let many = fs.inode(got[&b"/many".to_vec()].0).unwrap();
    if fs
        .superblock()
        .compat
        .contains(fs_ext::superblock::Compat::DIR_INDEX)
        && !many.has_inline_data()
    {
        assert!(
            many.flags.contains(InodeFlags::INDEX),
            "{name}: /many is not indexed"
        );
    }
    if sb_has_inline(&fs) {
        assert!(
            fs.resolve("/tiny").unwrap().has_inline_data(),
            "{name}: /tiny inline"
        );
        assert!(
            fs.resolve("/smalldir").unwrap().has_inline_data(),
            "{name}: /smalldir inline"
        );
    }
    // 32 separate chunks need more than the 4 extents i_block holds:
    // an extent tree of depth 1 (ext4), or a single-indirect map (ext2/3).
    let frag = fs.resolve("/fragmented").unwrap();
    if frag.flags.contains(InodeFlags::EXTENTS) {
        let depth = u16::from_le_bytes([frag.i_block[6], frag.i_block[7]]);
        assert!(depth >= 1, "{name}: /fragmented extent depth {depth}");
    }
    // Used blocks equal what dumpe2fs says is not free.
    let sb = fs.superblock();
    fs.verify_bitmaps().unwrap();
    let used = fs.used_blocks().unwrap();
    let expect = dumpe2fs_used(
        &img,
        u64::from(sb.first_data_block),
        sb.blocks_count,
        u64::from(sb.cluster_ratio()),
    );
    assert_eq!(used, expect, "{name}: used blocks");
    assert!(fs.mismatches().is_empty());
}

#[test]
fn mkfs_variants() {
    if !have_all(&[
        "mkfs.ext4",
        "mkfs.ext2",
        "mkfs.ext3",
        "debugfs",
        "dumpe2fs",
        "e2fsck",
    ]) {
        return;
    }
    let t0 = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let big_tree = dir.path().join("big-tree");
    let small_tree = dir.path().join("small-tree");
    build_tree(&big_tree, 5000);
    build_tree(&small_tree, 100);
    eprintln!("trees built: {:?}", t0.elapsed());
    let big_want = expected(&big_tree);
    let small_want = expected(&small_tree);
    for (name, mkfs, big) in [
        ("ext4", "mkfs.ext4", true),
        ("ext2", "mkfs.ext2", false),
        ("ext3", "mkfs.ext3", false),
        ("ext4-32bit", "mkfs.ext4 -O ^64bit", false),
        ("ext4-inline", "mkfs.ext4 -O inline_data", false),
        (
            "ext4-nocsum",
            "mkfs.ext4 -O ^metadata_csum,uninit_bg",
            false,
        ),
        ("ext4-1k", "mkfs.ext4 -b 1024", false),
        ("ext4-bigalloc", "mkfs.ext4 -O bigalloc -C 16384", false),
        (
            "ext4-metabg",
            "mkfs.ext4 -O ^resize_inode,meta_bg,sparse_super2 -b 1024 -g 1024",
            false,
        ),
    ] {
        let (tree, want) = if big {
            (&big_tree, &big_want)
        } else {
            (&small_tree, &small_want)
        };
        let t = std::time::Instant::now();
        check_variant(dir.path(), tree, want, name, mkfs);
        eprintln!("{name}: {:?}", t.elapsed());
    }
}

/// Values debugfs puts in an external xattr block and in an EA inode.
#[test]
fn xattr_block_and_ea_inode() {
    if !have_all(&["mkfs.ext4", "debugfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("tree")).unwrap();
    std::fs::write(d.join("tree/f"), b"f").unwrap();
    std::fs::write(d.join("tree/g"), b"g").unwrap();
    let v1 = noise(2000, 7);
    let v2 = noise(4096, 8);
    std::fs::write(d.join("v1"), &v1).unwrap();
    std::fs::write(d.join("v2"), &v2).unwrap();
    sh(
        "truncate -s 8M x.img && mkfs.ext4 -q -F -b 4096 -O ea_inode -d tree x.img \
         && debugfs -w -R 'ea_set -f v1 /f user.blockval' x.img 2>/dev/null \
         && debugfs -w -R 'ea_set -f v2 /g trusted.huge' x.img 2>/dev/null",
        d,
    );
    let fs = ExtFs::open(FileDisk::open(d.join("x.img")).unwrap()).unwrap();
    let f = fs.resolve("/f").unwrap();
    assert_ne!(f.file_acl, 0);
    let attrs = fs.xattrs(&f).unwrap();
    assert!(
        attrs.contains(&(b"user.blockval".to_vec(), v1)),
        "{attrs:?}"
    );
    let g = fs.resolve("/g").unwrap();
    let attrs = fs.xattrs(&g).unwrap();
    assert!(attrs.contains(&(b"trusted.huge".to_vec(), v2)));
    // That value lives in an inode of its own.
    let ea_inode = (12..64)
        .filter_map(|i| fs.inode(i).ok())
        .any(|i| i.flags.contains(InodeFlags::EA_INODE));
    assert!(ea_inode);
    assert!(fs.mismatches().is_empty());
}

/// Times past 2038 use the epoch bits of the `_extra` fields.
#[test]
fn times_past_2038() {
    if !have_all(&["mkfs.ext4", "mkfs.ext2", "debugfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "mkdir t && echo y > t/f && truncate -s 4M y.img && mkfs.ext4 -q -F -d t y.img \
         && debugfs -w -R 'sif /f mtime 21000101000000' y.img 2>/dev/null \
         && debugfs -w -R 'sif /f atime @-631152000' y.img 2>/dev/null",
        d,
    );
    let fs = ExtFs::open(FileDisk::open(d.join("y.img")).unwrap()).unwrap();
    let f = fs.resolve("/f").unwrap();
    assert_eq!(f.mtime.secs, 4_102_444_800);
    assert_eq!(f.atime.secs, -631_152_000);
    assert!(f.crtime.is_some());
}
