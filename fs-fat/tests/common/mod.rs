//! Helpers shared by the read and write tests: the generated source
//! tree, walks of a host tree and of a volume, comparisons, fsck counts.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use disk_io::ReadAt;
use fs_fat::{DirEntry, FatVolume};
use test_support::sh;

/// What a walk finds for one path: directory or file contents, and mtime.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
}

pub fn read_all<D: ReadAt>(vol: &FatVolume<D>, e: &DirEntry) -> Vec<u8> {
    let mut out = vec![0u8; e.size as usize];
    // Odd-sized chunks exercise reads across cluster boundaries.
    let mut at = 0;
    while at < out.len() {
        let end = (at + 70_001).min(out.len());
        let n = vol.read_file(e, at as u64, &mut out[at..end]).unwrap();
        assert!(n > 0);
        at += n;
    }
    let mut extra = [0u8; 4];
    assert_eq!(vol.read_file(e, e.size as u64, &mut extra).unwrap(), 0);
    out
}

pub fn walk_volume<D: ReadAt>(vol: &FatVolume<D>) -> BTreeMap<String, (Node, Option<i64>)> {
    let mut out = BTreeMap::new();
    vol.walk(&mut |path, e| {
        let node = if e.is_dir() {
            Node::Dir
        } else {
            Node::File(read_all(vol, e))
        };
        out.insert(path.to_string(), (node, e.modified.map(|t| t.seconds)));
        Ok(())
    })
    .unwrap();
    out
}

pub fn walk_tree(root: &Path) -> BTreeMap<String, (Node, Option<i64>)> {
    fn go(dir: &Path, prefix: &str, out: &mut BTreeMap<String, (Node, Option<i64>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let path = format!("{prefix}/{name}");
            let meta = e.metadata().unwrap();
            let mtime = meta
                .modified()
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            if meta.is_dir() {
                out.insert(path.clone(), (Node::Dir, Some(mtime)));
                go(&e.path(), &path, out);
            } else {
                out.insert(path, (Node::File(fs::read(e.path()).unwrap()), Some(mtime)));
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, "", &mut out);
    out
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

pub fn set_mtime(path: &Path, secs: u64) {
    let f = fs::File::options()
        .write(true)
        .open(path)
        .or_else(|_| fs::File::open(path))
        .unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// The tree copied into every image. `big`: the multi-MiB variant with a
/// directory of 2,000 entries.
pub fn make_tree(root: &Path, big: bool) {
    let mut t = 1_600_000_000u64; // 2020-09-13, an even second
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("hello.txt".into(), b"hello, FAT\n".to_vec()),
        ("Mixed Case With Spaces.txt".into(), b"spaces".to_vec()),
        ("café résumé.txt".into(), b"accents".to_vec()),
        ("日本語のファイル名.txt".into(), b"cjk".to_vec()),
        ("UPPER.TXT".into(), b"upper".to_vec()),
        ("lower.txt".into(), b"lower".to_vec()),
        (
            format!("{}.txt", "long name ".repeat(21)),
            b"a 214-character name".to_vec(),
        ),
        ("d1/d2/d3/d4/d5/d6/deep.bin".into(), pattern(5000, 6)),
        ("d1/d2/sibling.txt".into(), b"sibling".to_vec()),
    ];
    if big {
        files.push(("data/big.bin".into(), pattern(3 << 20, 1)));
        files.push(("data/odd size.bin".into(), pattern((1 << 20) + 12345, 2)));
        for i in 0..2000 {
            files.push((
                format!("many/{i:04} entry with a long name.txt"),
                format!("{i}\n").into_bytes(),
            ));
        }
    } else {
        files.push(("data/small.bin".into(), pattern(100_000, 1)));
        for i in 0..60 {
            files.push((format!("many/f{i:02}.txt"), format!("{i}\n").into_bytes()));
        }
    }
    for (path, data) in &files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        t += 7; // odd steps: some mtimes are odd seconds, FAT rounds to 2 s
        set_mtime(&p, t);
    }
    // Directories last, deepest first, so file creation does not touch them.
    let mut dirs = vec![];
    for (path, _) in &files {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(root.join(d));
            p = d.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    for d in dirs.iter().rev() {
        t += 2;
        set_mtime(d, t);
    }
}

pub fn compare(
    vol_map: &BTreeMap<String, (Node, Option<i64>)>,
    tree: &BTreeMap<String, (Node, Option<i64>)>,
) {
    assert_eq!(
        vol_map.keys().collect::<Vec<_>>(),
        tree.keys().collect::<Vec<_>>(),
        "names"
    );
    for (path, (node, mtime)) in tree {
        let (got, got_mtime) = &vol_map[path];
        assert!(got == node, "{path}: content differs");
        if let Node::File(_) = node {
            // FAT keeps modification times to 2 seconds (mtools rounds down).
            let (want, got) = (mtime.unwrap(), got_mtime.unwrap());
            assert!((want - got).abs() < 2, "{path}: mtime {got} vs {want}");
        }
    }
}

/// The used cluster count of `fsck.fat -v -n`'s last line
/// ("img: 3 files, 51/16343 clusters").
pub fn fsck_used(dir: &Path, image: &str) -> u64 {
    let out = sh(&format!("fsck.fat -v -n {image}"), dir);
    let line = out.lines().last().unwrap();
    let counts = line.rsplit(' ').nth(1).unwrap();
    counts.split('/').next().unwrap().parse().unwrap()
}
