//! Detection speed on the headers qemu-img and the partitioning tools write
//! (the committed fuzz seeds, `fuzz/make-seeds.sh`), and on a blank disk.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};

const SEEDS: [&str; 10] = [
    "a.qcow2",
    "c.vmdk",
    "d.vmdk",
    "e.vhd",
    "f-fixed.vhd",
    "g.vhdx",
    "h.vdi",
    "gpt.raw",
    "mbr.raw",
    "ext4.raw",
];

fn detect(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/detect");
    let mut inputs: Vec<(String, Vec<u8>)> = SEEDS
        .iter()
        .map(|name| (name.to_string(), std::fs::read(dir.join(name)).unwrap()))
        .collect();
    inputs.push(("blank-1MiB".to_owned(), vec![0u8; 1 << 20]));
    let mut group = c.benchmark_group("detect");
    for (name, data) in &inputs {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| vdisk_format::detect(black_box(&data[..])).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, detect);
criterion_main!(benches);
