#!/usr/bin/env bash
# Regenerates fuzz/seeds/ext/: tiny ext2/3/4 volumes made by mke2fs -d,
# each at most 32 KiB (bigger ones truncated to the bytes the reader
# looks at first: superblock, descriptors, bitmaps, first inode tables).
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD/seeds/ext
rm -rf "$out"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir -p tree/d/e
printf 'hello\n' > tree/f
printf 'inline' > tree/d/small
head -c 3000 /dev/zero | tr '\0' x > tree/d/e/blocks
ln -s f tree/fast
ln -s "$(printf 'p%.0s' $(seq 1 80))" tree/slow
ln tree/f tree/hard
setfattr -n user.k -v v tree/f 2>/dev/null || true
mk() { # name size mkfs-args...
  local name=$1 size=$2
  shift 2
  rm -f "$name"
  truncate -s "$size" "$name"
  "$@" -q -F -d tree "$name" >/dev/null
  head -c 32768 "$name" > "$out/$name"
}
# Without flex_bg and the resize inode, the root directory and the first
# files land inside the first 32 KiB.
x=^has_journal,^resize_inode,^flex_bg
mk ext2.img 64K mkfs.ext2 -b 1024 -N 32 -m 0
mk ext2-128.img 64K mkfs.ext2 -b 1024 -N 32 -m 0 -I 128
mk ext4.img 64K mkfs.ext4 -b 1024 -N 32 -m 0 -O $x
mk ext4-inline.img 64K mkfs.ext4 -b 1024 -N 32 -m 0 -O $x,inline_data
mk ext4-32bit.img 64K mkfs.ext4 -b 1024 -N 32 -m 0 -O $x,^64bit,^metadata_csum
mk ext4-metabg.img 64K mkfs.ext4 -b 1024 -N 32 -m 0 -O $x,meta_bg
mk ext4-bigalloc.img 256K mkfs.ext4 -b 1024 -C 4096 -N 32 -m 0 -O $x,bigalloc
mk ext3.img 2M mkfs.ext3 -b 1024 -N 32 -m 0 -O ^resize_inode
ls -l "$out"
