#!/usr/bin/env bash
# Regenerates fuzz/seeds/ntfs: NTFS volumes made by mkntfs and filled
# through ntfs-3g (needs FUSE, run as root), plus the shared images,
# packed by fs-ntfs's `ntfs-pack` example to the sectors a bounded walk
# reads (at most 32 KiB each; see fs_ntfs::fuzzing).
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD/seeds/ntfs
testdata=$PWD/../../shared/testdata
rm -rf "$out"
mkdir -p "$out"
cargo build -q --manifest-path ../Cargo.toml -p fs-ntfs --example ntfs-pack
pack=$(cargo metadata -q --manifest-path ../Cargo.toml --format-version 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/examples/ntfs-pack
tmp=$(mktemp -d)
trap 'umount "$tmp/mnt" 2>/dev/null || true; rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir mnt
make() { # name size cluster
  truncate -s "$2" "$1.img"
  mkntfs -q -F -Q -c "$3" -L seed "$1.img" >/dev/null 2>&1
  ntfs-3g "$1.img" mnt
  mkdir -p mnt/dir mnt/comp
  python3 - mnt "$3" <<'PY'
import os, sys
m, cluster = sys.argv[1], int(sys.argv[2])
if cluster <= 4096:
    os.setxattr(f'{m}/comp', 'system.ntfs_attrib_be', (0x800).to_bytes(4, 'big'))
open(f'{m}/small', 'w').write('12345')
open(f'{m}/big', 'wb').write(bytes(range(256)) * 12)
open(f'{m}/comp/text', 'wb').write(b'compress me ' * 900)
for i in range(40):
    open(f'{m}/dir/entry-{i:03}', 'w').write(str(i))
os.setxattr(f'{m}/small', 'user.stream', b'stream data')
os.link(f'{m}/small', f'{m}/dir/hardlink')
os.symlink('small', f'{m}/symlink')
with open(f'{m}/sparse', 'wb') as f:
    f.seek(1 << 20)
    f.write(b'end')
PY
  umount mnt
  "$pack" "$1.img" "$out/$1"
  head -c 16384 "$1.img" > "$out/$1-head"
}
make c512 2M 512
make c4k 4M 4096
make c64k 16M 65536
"$pack" "$testdata/ntfs-colinfinck/testfs1" "$out/colinfinck-testfs1"
for n in lastaccess ramslack; do
  gzip -dc "$testdata/ntfs-msuhanov/ntfs-$n.sanitized.raw.gz" > w.img
  "$pack" w.img "$out/msuhanov-$n" 65536
  rm w.img
done
ls -l "$out"
# corpus/ntfs: 21 inputs of at most 16 KiB, spread by size, from a
# `cargo fuzz cmin` of 6 minutes of fuzzing from these seeds.
