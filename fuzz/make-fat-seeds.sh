#!/usr/bin/env bash
# Regenerates fuzz/seeds/fat/: FAT12/16/32 volumes made by mkfs.fat and
# mcopy, truncated to 32 KiB (boot sector, FATs, root directory and the
# first data clusters), plus copies with a looping cluster chain and a
# directory that contains itself.
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD/seeds/fat
rm -rf "$out"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir -p tree/sub/deeper
echo hello > tree/hello.txt
echo x > "tree/sub/A long name, café.txt"
head -c 3000 /dev/zero | tr '\0' r > tree/sub/deeper/r.bin
: > tree/empty
export TZ=UTC LC_ALL=C.UTF-8
mkfs.fat -s 1 -f 1 -r 16 -n SMALL12 -C fat12-small.img 200 >/dev/null
mkfs.fat -C fat12-floppy.img 1440 >/dev/null
mkfs.fat -F 16 -s 1 -f 1 -r 16 -C fat16.img 2200 >/dev/null
mkfs.fat -F 32 -n VOL32 -C fat32.img 65536 >/dev/null
for f in fat12-small.img fat12-floppy.img fat16.img fat32.img; do
  (cd tree && mcopy -s -m -i "../$f" -- * ::)
  head -c 32768 "$f" > "$out/$f"
done
# Damaged copies of fat12-small, located through its BPB: hello.txt's
# cluster links back to itself (a loop), and directory sub/deeper points
# at sub (a directory that contains itself).
python3 - "$out/fat12-small.img" "$out/loop.img" "$out/selfdir.img" <<'PY'
import sys
src = open(sys.argv[1], 'rb').read()
u16 = lambda d, at: int.from_bytes(d[at:at + 2], 'little')
bps, spc, rsvd, nfats, nroot, fatsz = u16(src, 11), src[13], u16(src, 14), src[16], u16(src, 17), u16(src, 22)
fat = rsvd * bps
root = fat + nfats * fatsz * bps
data_at = root + (nroot * 32 + bps - 1) // bps * bps
cluster_at = lambda c: data_at + (c - 2) * spc * bps
def find(d, at, count, name):
    for i in range(count):
        e = at + 32 * i
        if d[e:e + 11] == name:
            return e
    raise SystemExit('no ' + repr(name))
def set_fat12(d, c, v):
    at = fat + c + c // 2
    w = u16(d, at)
    w = (w & 0x000f) | (v << 4) if c & 1 else (w & 0xf000) | v
    d[at:at + 2] = w.to_bytes(2, 'little')
loop = bytearray(src)
hello = u16(loop, find(loop, root, nroot, b'HELLO   TXT') + 26)
set_fat12(loop, hello, hello)
open(sys.argv[2], 'wb').write(loop)
selfdir = bytearray(src)
sub = u16(selfdir, find(selfdir, root, nroot, b'SUB        ') + 26)
deeper = find(selfdir, cluster_at(sub), spc * bps // 32, b'DEEPER     ')
selfdir[deeper + 26:deeper + 28] = sub.to_bytes(2, 'little')
open(sys.argv[3], 'wb').write(selfdir)
PY
printf 'not a file system' > "$out/garbage"
ls -l "$out"
