//! Tables written by this crate, checked by sfdisk and sgdisk, and
//! round-trip properties.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

use disk_io::{FileDisk, MemDisk, ReadAt, WriteAt};
use partition::{
    DEFAULT_ALIGNMENT, GptAttributes, Guid, Layout, PartitionSpec, PartitionType, Rescale,
    TableType, read,
};
use test_support::{have_all, sh};

const LINUX: Guid = Guid::from_fields(
    0x0fc6_3daf,
    0x8483,
    0x4772,
    [0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4],
);
const ESP: Guid = Guid::from_fields(
    0xc12a_7328,
    0xf81f,
    0x11d2,
    [0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b],
);

/// 3 primaries and an extended partition with 3 logicals, fdisk-style.
fn mbr_layout() -> Layout {
    let mut l = Layout::new(TableType::Mbr, 512);
    l.disk_signature = 0x1234_abcd;
    let mut boot = [0u8; 440];
    boot[0] = 0xeb;
    boot[439] = 0x90;
    l.boot_code = Some(Box::new(boot));
    l.partitions = vec![
        PartitionSpec {
            bootable: true,
            ..PartitionSpec::new(1, 2048, 16384, PartitionType::Mbr(0x83))
        },
        PartitionSpec::new(2, 18432, 16384, PartitionType::Mbr(0x07)),
        PartitionSpec::new(3, 34816, 16384, PartitionType::Mbr(0x0c)),
        PartitionSpec::new(4, 51200, 79872, PartitionType::Mbr(0x05)),
        PartitionSpec::new(5, 53248, 12288, PartitionType::Mbr(0x83)),
        PartitionSpec::new(6, 67584, 12288, PartitionType::Mbr(0x82)),
        PartitionSpec::new(7, 81920, 49152, PartitionType::Mbr(0x83)),
    ];
    l
}

fn gpt_layout(entries: u32) -> Layout {
    let mut l = Layout::new(TableType::Gpt, 512);
    l.disk_guid = Guid::parse("5D2F0E62-3A58-4B3F-9E7C-0A1B2C3D4E5F").unwrap();
    l.gpt_entries = entries;
    l.partitions = vec![
        PartitionSpec {
            name: "EFI system".into(),
            guid: Guid::parse("11111111-2222-3333-4444-555555555555").unwrap(),
            attributes: GptAttributes::REQUIRED_PARTITION,
            ..PartitionSpec::new(1, 2048, 16384, PartitionType::Gpt(ESP))
        },
        PartitionSpec {
            name: "données ☃".into(),
            guid: Guid::parse("66666666-7777-8888-9999-AAAAAAAAAAAA").unwrap(),
            attributes: GptAttributes::from_bits_retain(1 << 60 | 1 << 48),
            ..PartitionSpec::new(3, 18432, 40960, PartitionType::Gpt(LINUX))
        },
    ];
    l
}

fn write_file(dir: &Path, name: &str, size: u64, layout: &Layout) {
    let path = dir.join(name);
    let disk = FileDisk::create(&path, size).unwrap();
    partition::write::write(&disk, layout).unwrap();
    disk.flush().unwrap();
}

fn verify(dir: &Path, name: &str) {
    let out = sh(&format!("sfdisk --verify {name} 2>&1"), dir);
    // It prints the device name, its findings, and some statistics.
    const INFO: [&str; 5] = [
        "No errors detected.",
        "Header version",
        "Using ",
        "A total of ",
        "Remaining ",
    ];
    let findings: Vec<&str> = out
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !INFO.iter().any(|i| l.starts_with(i)))
        .collect();
    assert!(
        out.contains("No errors detected.") && findings.is_empty(),
        "sfdisk --verify {name}: {out}"
    );
}

fn sgdisk_clean(dir: &Path, name: &str) {
    let out = sh(&format!("sgdisk -v {name} 2>&1"), dir);
    assert!(out.contains("No problems found"), "sgdisk -v {name}: {out}");
}

#[test]
fn mbr_written_like_sfdisk_writes_it() {
    if !have_all(&["sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 64 << 20;
    write_file(d, "ours.raw", size, &mbr_layout());
    verify(d, "ours.raw");
    // sfdisk reads back the layout written.
    let table = read(&FileDisk::open(d.join("ours.raw")).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(Layout::from_table(&table), mbr_layout());
    // The same layout made by sfdisk has the same MBR entries, CHS included.
    sh(
        "truncate -s 64M theirs.raw && printf 'label: dos\\nlabel-id: 0x1234abcd\\n2048,16384,83,*\\n18432,16384,7\\n34816,16384,c\\n51200,79872,5\\n53248,12288,83\\n67584,12288,82\\n81920,49152,83\\n' | sfdisk -q theirs.raw",
        d,
    );
    let ours = std::fs::read(d.join("ours.raw")).unwrap();
    let theirs = std::fs::read(d.join("theirs.raw")).unwrap();
    assert_eq!(
        ours[440..512],
        theirs[440..512],
        "MBR entries differ from sfdisk's"
    );
    assert_eq!(ours[0], 0xeb, "boot code preserved");
    let json = |f: &str| {
        sh(
            &format!("sfdisk --json {f} | grep -v '\"device\"\\|\"node\"'"),
            d,
        )
    };
    assert_eq!(
        json("ours.raw").replace("ours.raw", ""),
        json("theirs.raw").replace("theirs.raw", "")
    );
}

#[test]
fn gpt_written_passes_sgdisk_and_sfdisk() {
    if !have_all(&["sfdisk", "sgdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for entries in [128, 8, 256] {
        let name = format!("gpt{entries}.raw");
        write_file(d, &name, 32 << 20, &gpt_layout(entries));
        sgdisk_clean(d, &name);
        verify(d, &name);
        let table = read(&FileDisk::open(d.join(&name)).unwrap())
            .unwrap()
            .unwrap();
        assert!(table.warnings().is_empty(), "{:?}", table.warnings());
        assert_eq!(Layout::from_table(&table), gpt_layout(entries), "{name}");
        let json = sh(&format!("sfdisk --json {name}"), d);
        assert!(json.contains("\"name\": \"données ☃\""), "{json}");
        assert!(
            json.contains("\"start\": 18432,") && json.contains("\"size\": 40960,"),
            "{json}"
        );
        assert!(json.contains("\"attrs\": \"GUID:48,60\""), "{json}");
        assert!(
            json.contains("5D2F0E62-3A58-4B3F-9E7C-0A1B2C3D4E5F"),
            "{json}"
        );
    }
}

#[test]
fn repair_and_growth() {
    if !have_all(&["sgdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "truncate -s 32M g.raw && sgdisk -n 1:2048:+4M -n 2:0:0 -c 2:data g.raw >/dev/null",
        d,
    );
    let before = read(&FileDisk::open(d.join("g.raw")).unwrap())
        .unwrap()
        .unwrap();

    // Zeroed primary header: read from the backup, repaired, sgdisk is happy.
    sh(
        "dd if=/dev/zero of=g.raw bs=512 seek=1 count=1 conv=notrunc status=none",
        d,
    );
    let disk = FileDisk::open_rw(d.join("g.raw")).unwrap();
    let damaged = read(&disk).unwrap().unwrap();
    assert_eq!(damaged.partitions, before.partitions);
    assert!(damaged.warnings()[0].contains("primary GPT header at LBA 1 is missing"));
    let actions = partition::write::repair_gpt(&disk, 512).unwrap();
    assert_eq!(actions, ["rewrote the damaged primary GPT from the backup"]);
    disk.flush().unwrap();
    drop(disk);
    sgdisk_clean(d, "g.raw");
    assert_eq!(
        partition::write::repair_gpt(&FileDisk::open_rw(d.join("g.raw")).unwrap(), 512).unwrap(),
        Vec::<String>::new()
    );

    // Damaged backup array.
    sh(
        "printf 'xx' | dd of=g.raw bs=1 seek=$((32*1024*1024 - 33*512 + 7)) conv=notrunc status=none",
        d,
    );
    let disk = FileDisk::open_rw(d.join("g.raw")).unwrap();
    assert_eq!(
        partition::write::repair_gpt(&disk, 512).unwrap(),
        ["rewrote the damaged backup GPT from the primary"]
    );
    drop(disk);
    sgdisk_clean(d, "g.raw");

    // The disk grows: the backup moves to the new end.
    sh("truncate -s 48M g.raw", d);
    let disk = FileDisk::open_rw(d.join("g.raw")).unwrap();
    let grown = read(&disk).unwrap().unwrap();
    assert!(
        grown
            .warnings()
            .iter()
            .any(|w| w.contains("not at the last LBA")),
        "{:?}",
        grown.warnings()
    );
    let actions = partition::write::repair_gpt(&disk, 512).unwrap();
    assert!(
        actions[0].starts_with("moved the backup GPT"),
        "{actions:?}"
    );
    drop(disk);
    sgdisk_clean(d, "g.raw");
    let after = read(&FileDisk::open(d.join("g.raw")).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(after.partitions, before.partitions);
    assert!(after.warnings().is_empty());
}

#[test]
fn rescale_policies() {
    let mbr = mbr_layout();
    let (old, grown, shrunk) = (64u64 << 20, 128u64 << 20, 48u64 << 20);
    let keep = mbr.rescale(old, grown, Rescale::KeepSizes).unwrap();
    assert_eq!(keep, mbr);
    let last = mbr.rescale(old, grown, Rescale::ResizeLast).unwrap();
    let p7 = last.partitions.iter().find(|p| p.number == 7).unwrap();
    let ext = last.partitions.iter().find(|p| p.number == 4).unwrap();
    assert_eq!(p7.end_lba(), (128 << 20) / 512);
    assert_eq!(
        ext.end_lba(),
        p7.end_lba(),
        "the extended partition follows its last logical"
    );
    let small = mbr.rescale(old, shrunk, Rescale::ResizeLast).unwrap();
    assert_eq!(
        small
            .partitions
            .iter()
            .find(|p| p.number == 7)
            .unwrap()
            .end_lba(),
        (48 << 20) / 512
    );
    assert!(
        mbr.rescale(old, 16 << 20, Rescale::ResizeLast).is_err(),
        "cannot hold the partitions"
    );
    assert!(mbr.rescale(old, shrunk, Rescale::KeepSizes).is_err());
    for size in [grown, shrunk, 1 << 30] {
        let scaled = mbr.rescale(old, size, Rescale::Proportional).unwrap();
        let disk = MemDisk::new(size as usize);
        partition::write::write(&disk, &scaled).unwrap();
        assert_eq!(Layout::from_table(&read(&disk).unwrap().unwrap()), scaled);
    }
    let gpt = gpt_layout(128);
    let g = gpt
        .rescale(32 << 20, 64 << 20, Rescale::ResizeLast)
        .unwrap();
    let p3 = g.partitions.iter().find(|p| p.number == 3).unwrap();
    let tail = (32u64 << 20) / 512 - 34 - gpt.partitions[1].end_lba();
    assert_eq!(p3.end_lba(), (64 << 20) / 512 - 34 - tail);
}

#[test]
fn rescaled_tables_pass_the_checkers() {
    if !have_all(&["sfdisk", "sgdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, how) in [Rescale::ResizeLast, Rescale::Proportional]
        .into_iter()
        .enumerate()
    {
        let mbr = mbr_layout().rescale(64 << 20, 200 << 20, how).unwrap();
        write_file(d, &format!("m{i}.raw"), 200 << 20, &mbr);
        verify(d, &format!("m{i}.raw"));
        let gpt = gpt_layout(128).rescale(32 << 20, 100 << 20, how).unwrap();
        write_file(d, &format!("g{i}.raw"), 100 << 20, &gpt);
        sgdisk_clean(d, &format!("g{i}.raw"));
    }
}

#[test]
fn bad_layouts_are_refused_before_writing() {
    let disk = MemDisk::new(64 << 20);
    let mut l = mbr_layout();
    l.partitions[1].first_lba = 10000; // overlaps partition 1
    assert!(partition::write::write(&disk, &l).is_err());
    let mut l = mbr_layout();
    l.partitions[6].first_lba = 79872; // right after logical 6: no room for its EBR
    l.partitions[6].sectors = 100;
    let mut l2 = mbr_layout();
    l2.partitions[4].first_lba = 51200; // logical at the extended start: no EBR room
    for bad in [l, l2] {
        assert!(partition::write::write(&disk, &bad).is_err());
    }
    let mut l = gpt_layout(128);
    l.partitions[1].sectors = 1 << 30; // past the end
    assert!(partition::write::write(&disk, &l).is_err());
    assert!(
        disk.to_vec().unwrap().iter().all(|&b| b == 0),
        "nothing was written"
    );
}

#[test]
fn round_trip_random_layouts() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut bytes = vec![0u8; 4096];
    for _ in 0..300 {
        for b in bytes.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        // Panics with the layout when it does not come back the same.
        partition::arbitrary_layout::round_trip(&bytes);
    }
}

#[test]
fn pushed_partitions_are_aligned() {
    let mut l = Layout::new(TableType::Gpt, 4096);
    let size = 64 << 20;
    l.push(
        size,
        Some(10 << 20),
        PartitionType::Gpt(ESP),
        DEFAULT_ALIGNMENT,
    )
    .unwrap();
    l.push(size, None, PartitionType::Gpt(LINUX), DEFAULT_ALIGNMENT)
        .unwrap();
    assert_eq!(l.partitions[0].first_lba * 4096, 1 << 20);
    assert_eq!(l.partitions[1].first_lba * 4096, 11 << 20);
    let disk = MemDisk::new(size as usize);
    partition::write::write(&disk, &l).unwrap();
    let t = read(&disk).unwrap().unwrap();
    assert_eq!(t.sector_size, 4096);
    assert_eq!(
        t.partitions[1].start + t.partitions[1].size,
        disk.size() - 5 * 4096
    );
}
