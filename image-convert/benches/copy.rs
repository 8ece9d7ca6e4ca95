//! The sector copy between memory disks (pure pipeline cost, no file I/O),
//! and zero detection throughput.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use disk_io::{MemDisk, WriteAt, is_zero};
use image_convert::{CopyOptions, copy_sectors};

const SIZE: usize = 64 << 20;

fn copy(c: &mut Criterion) {
    // A quarter data, in 1 MiB runs.
    let src = MemDisk::new(SIZE);
    for off in (0..SIZE).step_by(4 << 20) {
        src.write_at(off as u64, &vec![0x5a; 1 << 20]).unwrap();
    }
    let mut group = c.benchmark_group("copy_sectors");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(20);
    group.bench_function("64MiB-quarter-data", |b| {
        let dst = MemDisk::new(SIZE);
        let opts = CopyOptions {
            destination_is_zero: true,
            ..Default::default()
        };
        b.iter(|| copy_sectors(&src, &dst, &opts, &mut |_, _| {}).unwrap())
    });
    group.finish();

    let zeros = vec![0u8; 4 << 20];
    let mut group = c.benchmark_group("is_zero");
    group.throughput(Throughput::Bytes(zeros.len() as u64));
    group.bench_function("4MiB", |b| b.iter(|| is_zero(black_box(&zeros))));
    group.finish();
}

criterion_group!(benches, copy);
criterion_main!(benches);
