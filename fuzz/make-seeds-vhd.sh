#!/usr/bin/env bash
# Regenerates fuzz/seeds/vhd/ (the sibling of make-seeds.sh for the `vhd`
# target): dynamic (the first 16 KiB and the end footer: header, BAT, the
# first block's bitmap and some data), fixed, qemu's force_size creator, a
# 4 GiB disk's BAT, and a differencing child (made from a dynamic disk by
# the script below, since qemu does not write differencing disks).
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD/seeds/vhd
rm -rf "$out"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
qemu-img create -q -f vpc vdyn.vhd 4M
qemu-io -f vpc -c 'write -P 1 0 4k' -c 'write -P 2 12k 1k' -c 'write -P 3 3M 4k' vdyn.vhd >/dev/null
{ head -c 16384 vdyn.vhd; tail -c 512 vdyn.vhd; } > "$out/dynamic.vhd"
qemu-img create -q -f vpc vempty.vhd 1M
cp vempty.vhd "$out/empty.vhd"
qemu-img create -q -f vpc -o force_size=on vforce.vhd 1000000
cp vforce.vhd "$out/force-size.vhd"
qemu-img create -q -f vpc vbig.vhd 4G
cp vbig.vhd "$out/big-bat.vhd"
qemu-img create -q -f vpc -o subformat=fixed vfixed.vhd 12K
qemu-io -f vpc -c 'write -P 4 0 1k' -c 'write -P 5 8k 3k' vfixed.vhd >/dev/null
{ head -c 12288 vfixed.vhd; tail -c 512 vfixed.vhd; } > "$out/fixed.vhd"
qemu-img create -q -f vpc vchild.vhd 4M
qemu-io -f vpc -c 'write -P 6 2k 1k' vchild.vhd >/dev/null
python3 - vchild.vhd vdyn.vhd <<'PY'
import struct, sys
child, parent = sys.argv[1], sys.argv[2]
def csum(b, at):
    return (~sum(b[:at] + b[at + 4:])) & 0xffffffff
p = open(parent, 'rb').read()
f = bytearray(open(child, 'rb').read())
foot = bytearray(f[-512:])
struct.pack_into('>I', foot, 60, 4)
h = struct.unpack_from('>Q', foot, 16)[0]
hdr = bytearray(f[h:h + 1024])
hdr[40:56] = p[-512 + 68:-512 + 84]
name = 'vdyn.vhd'.encode('utf-16-be')
hdr[64:64 + len(name)] = name
loc = '.\\vdyn.vhd'.encode('utf-16-le')
end = len(f) - 512
struct.pack_into('>4sIIIQ', hdr, 576, b'W2ru', 1, len(loc), 0, end)
struct.pack_into('>I', hdr, 36, csum(hdr, 36))
struct.pack_into('>I', foot, 64, csum(foot, 64))
f[h:h + 1024] = hdr
f[:512] = foot
f = f[:end] + loc.ljust(512, b'\0') + foot
open(child, 'wb').write(f)
PY
{ head -c 16384 vchild.vhd; tail -c 1024 vchild.vhd; } > "$out/differencing.vhd"
ls -l "$out"
