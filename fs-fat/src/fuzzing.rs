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

/// Bytes read one at a time, zeros once they run out.
struct Script<'a> {
    data: &'a [u8],
    at: usize,
}

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }

    /// A name from a small alphabet with the hard cases: case, spaces,
    /// periods, accents, CJK, a character outside the BMP, lengths past
    /// 8.3 and up to 255 units.
    fn name(&mut self) -> alloc::string::String {
        const ALPHABET: [&str; 16] = [
            "a", "B", "c", "D", ".", " ", "é", "日", "😀", "~", "1", "+", "x", "Y", "z", "_",
        ];
        let len = match self.byte() {
            0xf0.. => 100 + usize::from(self.byte() % 120),
            n => 1 + usize::from(n % 14),
        };
        let mut s = alloc::string::String::new();
        for _ in 0..len {
            let i = usize::from(self.byte() % 16);
            s.push_str(ALPHABET.get(i).copied().unwrap_or("a"));
        }
        s
    }
}

/// Deterministic contents for a write.
fn fill_bytes(len: usize, seed: u8) -> alloc::vec::Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Drives the writer with `data` as a script. An even first byte opens
/// the rest as an existing volume and writes to it (errors expected,
/// panics and hangs are bugs). An odd one formats a fresh FAT12, FAT16 or
/// FAT32 volume, creates, writes, truncates and removes files and
/// directories as the script says while keeping a model, then reads the
/// volume back with [`FatVolume`] and checks that it equals the model.
pub fn fat_write(data: &[u8]) {
    use alloc::collections::BTreeMap;
    use alloc::string::String;
    use alloc::vec::Vec;

    use crate::{Attributes, FatWriter, FileTimes, FormatOptions, Node};
    use disk_io::MemDisk;

    let mut s = Script { data, at: 0 };
    let mode = s.byte();
    if mode.is_multiple_of(2) {
        let Some(rest) = data.get(1..) else { return };
        let mut bytes = rest.to_vec();
        // A truncated image is padded with zeros to the size its boot
        // sector gives (up to 4 MiB), so small seeds hold whole volumes.
        if let Ok(boot) = crate::BootSector::read(rest) {
            let want = boot.volume_bytes();
            if want > bytes.len() as u64 && want <= 4 << 20 {
                bytes.resize(want as usize, 0);
            }
        }
        let Ok(mut w) = FatWriter::open(MemDisk::from_vec(bytes)) else {
            return;
        };
        let root = w.root();
        let t = FileTimes::default();
        let _ = w.read_dir(root);
        let _ = w.create_dir(root, "new dir", &t, Attributes::empty());
        if let Ok(f) = w.create_file(root, "a new file.txt", &t, Attributes::ARCHIVE, 3000) {
            let _ = w.write(f, 100, b"data");
            let _ = w.set_len(f, 10);
        }
        if let Ok(entries) = w.read_dir(root) {
            for (i, (_, node)) in entries.into_iter().enumerate().take(8) {
                if node.is_dir() {
                    let _ = w.read_dir(node);
                    let _ = w.create_file(node, "inner", &t, Attributes::ARCHIVE, 0);
                } else {
                    let _ = w.write(node, 0, b"xyz");
                }
                if i % 3 == 0 {
                    let _ = w.remove(node);
                }
            }
        }
        let _ = w.flush();
        return;
    }
    let (size, fat_type) = match s.byte() % 3 {
        0 => (1_474_560u64, crate::FatType::Fat12),
        1 => (3 << 20, crate::FatType::Fat16),
        _ => (33 << 20, crate::FatType::Fat32),
    };
    let opts = FormatOptions {
        fat_type: Some(fat_type),
        sectors_per_cluster: Some(1),
        root_entries: Some(64),
        ..FormatOptions::default()
    };
    let disk = MemDisk::new(size as usize);
    let Ok(mut w) = FatWriter::format(&disk, &opts) else {
        return;
    };
    // Path -> (node, contents; None for a directory).
    let mut model: BTreeMap<String, (Node, Option<Vec<u8>>)> = BTreeMap::new();
    let root = w.root();
    let t = FileTimes::default();
    let mut ops = 0;
    while !s.done() && ops < 64 {
        ops += 1;
        let op = s.byte();
        let dirs: Vec<(String, Node)> = core::iter::once((String::new(), root))
            .chain(
                model
                    .iter()
                    .filter(|(_, v)| v.1.is_none())
                    .map(|(k, v)| (k.clone(), v.0)),
            )
            .collect();
        let files: Vec<String> = model
            .iter()
            .filter(|(_, v)| v.1.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let pick = usize::from(s.byte());
        match op % 6 {
            0 | 1 => {
                let Some((parent_path, parent)) = dirs.get(pick % dirs.len()).cloned() else {
                    continue;
                };
                let name = s.name();
                let path = alloc::format!("{parent_path}/{name}");
                let exists = model.keys().any(|k| {
                    k.rsplit_once('/').map(|p| p.0) == Some(parent_path.as_str())
                        && crate::writer::fold(k.rsplit_once('/').map_or("", |p| p.1))
                            == crate::writer::fold(&name)
                });
                let result = if op.is_multiple_of(6) {
                    w.create_dir(parent, &name, &t, Attributes::empty())
                        .map(|n| (n, None))
                } else {
                    let hint = u64::from(s.byte()) * 64;
                    w.create_file(parent, &name, &t, Attributes::ARCHIVE, hint)
                        .map(|n| (n, Some(Vec::new())))
                };
                match result {
                    Ok(v) => {
                        assert!(!exists, "{path}: created twice");
                        model.insert(path, v);
                    }
                    Err(e) => assert!(
                        exists
                            || crate::short_name::validate(&name).is_err()
                            || e.message().contains("full"),
                        "{path}: {e}"
                    ),
                }
            }
            2 | 3 => {
                let Some(path) = files.get(pick % files.len().max(1)).cloned() else {
                    continue;
                };
                let offset = usize::from(s.byte()) * 37;
                let len = usize::from(s.byte()) * 23;
                let bytes = fill_bytes(len, s.byte());
                if let Some((node, Some(content))) = model.get_mut(&path) {
                    let r = if op % 6 == 2 {
                        w.write(*node, offset as u64, &bytes)
                    } else {
                        w.set_len(*node, offset as u64)
                    };
                    match r {
                        Ok(()) if op % 6 == 2 => {
                            if content.len() < offset + len {
                                content.resize(offset + len, 0);
                            }
                            if let Some(dst) = content.get_mut(offset..offset + len) {
                                dst.copy_from_slice(&bytes);
                            }
                        }
                        Ok(()) => content.resize(offset, 0),
                        Err(e) => {
                            assert!(e.message().contains("full"), "{path}: {e}");
                        }
                    }
                }
            }
            4 => {
                let all: Vec<String> = model.keys().cloned().collect();
                let Some(path) = all.get(pick % all.len().max(1)).cloned() else {
                    continue;
                };
                let prefix = alloc::format!("{path}/");
                let has_children = model.keys().any(|k| k.starts_with(&prefix));
                if let Some((node, _)) = model.get(&path) {
                    match w.remove(*node) {
                        Ok(()) => {
                            assert!(!has_children, "{path}: removed with children");
                            model.remove(&path);
                        }
                        Err(e) => assert!(has_children, "{path}: {e}"),
                    }
                }
            }
            _ => {
                if w.flush().is_err() {
                    return;
                }
            }
        }
    }
    if w.flush().is_err() {
        return;
    }
    let volume = FatVolume::open(&disk);
    assert!(volume.is_ok(), "the written volume does not open");
    let Ok(volume) = volume else { return };
    let mut seen = 0usize;
    let mut buf = vec![0u8; 8192];
    let walked = volume.walk(&mut |path, entry| {
        seen += 1;
        match model.get(path) {
            Some((_, Some(content))) => {
                assert_eq!(entry.size as usize, content.len(), "{path}: size");
                let n = volume.read_file(entry, 0, &mut buf)?;
                let want = content.get(..n).unwrap_or(&[]);
                assert!(buf.get(..n) == Some(want), "{path}: contents");
            }
            Some((_, None)) => assert!(entry.is_dir(), "{path}: not a directory"),
            None => assert!(path.is_empty(), "{path}: not in the model"),
        }
        Ok(())
    });
    assert!(walked.is_ok(), "walk: {walked:?}");
    assert_eq!(seen, model.len(), "entries");
    let used = volume.used_clusters().map(|u| u.count());
    assert_eq!(
        used.ok(),
        Some(u64::from(volume.cluster_count() - w.free_clusters())),
        "used clusters"
    );
}
