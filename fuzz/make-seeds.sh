#!/usr/bin/env bash
# Regenerates fuzz/seeds/: small inputs made by the real tools, truncated to
# the bytes the parsers look at. Seeds are committed with this recipe;
# `corpus/` is what fuzzing grew from them (minimised with `cargo fuzz cmin`).
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD/seeds/detect
rm -rf "$out"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
qemu-img create -q -f qcow2 a.qcow2 1M
qemu-img create -q -f qcow2 -o compat=0.10 b.qcow2 1M
qemu-img create -q -f vmdk c.vmdk 1M
qemu-img create -q -f vmdk -o subformat=monolithicFlat d.vmdk 1M
qemu-img create -q -f vpc e.vhd 1M
qemu-img create -q -f vpc -o subformat=fixed f-fixed.vhd 100K
qemu-img create -q -f vhdx g.vhdx 1M
qemu-img create -q -f vdi h.vdi 1M
truncate -s 128K mbr.raw && printf 'label: dos\n64,64,83\n128,,5\n' | sfdisk -q mbr.raw
truncate -s 128K gpt.raw && printf 'label: gpt\n40,40,L\n' | sfdisk -q gpt.raw
truncate -s 2M fat12.raw && mkfs.fat fat12.raw >/dev/null
truncate -s 300M fat32.raw && mkfs.fat -F 32 fat32.raw >/dev/null
truncate -s 8M ext4.raw && mkfs.ext4 -q ext4.raw
truncate -s 8M ntfs.raw && mkntfs -q -F ntfs.raw >/dev/null 2>&1
for f in a.qcow2 b.qcow2 c.vmdk d.vmdk e.vhd g.vhdx h.vdi mbr.raw gpt.raw fat12.raw fat32.raw ext4.raw ntfs.raw; do
  head -c 16384 "$f" > "$out/$f"
done
cp f-fixed.vhd "$out/"   # the footer of a fixed VHD is its last sector
: > "$out/empty"
ls -l "$out"

# Partition tables: small disks whose whole table (and GPT backup) fits.
out=$(dirname "$out")/partition
rm -rf "$out"
mkdir -p "$out"
truncate -s 64K p-mbr-ebr.raw
printf 'label: dos\n1,8,83,*\n9,8,7\n17,,5\n18,8,83\n27,8,82\n36,,83\n' | sfdisk -q p-mbr-ebr.raw
truncate -s 64K p-gpt128.raw
sgdisk -a 1 -n 1:34:+8 -t 1:ef00 -c 1:EFI -n 2:0:0 -t 2:8300 -c 2:root p-gpt128.raw >/dev/null
truncate -s 64K p-gpt8.raw
printf 'label: gpt\ntable-length: 8\nfirst-lba: 4\n,8,L\n,,S\n' | sfdisk -q p-gpt8.raw
for f in p-mbr-ebr.raw p-gpt128.raw p-gpt8.raw; do cp "$f" "$out/${f#p-}"; done
ls -l "$out"

# qcow2: small images with data, zero clusters, subclusters and compression.
out=$(dirname "$out")/qcow2
rm -rf "$out"
mkdir -p "$out"
qemu-img create -q -f qcow2 -o cluster_size=512 q512.qcow2 1M
qemu-io -f qcow2 -c 'write -P 1 0 1k' -c 'write -z 4k 2k' -c 'write -P 2 100k 3k' q512.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4k q2.qcow2 1M
qemu-io -f qcow2 -c 'write -P 3 8k 8k' q2.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=16k qext.qcow2 1M
qemu-io -f qcow2 -c 'write -P 4 0 512' -c 'write -z 1k 1k' -c 'write -P 5 40k 20k' qext.qcow2 >/dev/null
qemu-img create -q -f raw qsrc.raw 256k
qemu-io -f raw -c 'write -P 6 0 64k' -c 'write -P 7 128k 8k' qsrc.raw >/dev/null
qemu-img convert -c -O qcow2 -o cluster_size=4k,compression_type=zlib qsrc.raw qzlib.qcow2
qemu-img convert -c -O qcow2 -o cluster_size=4k,compression_type=zstd qsrc.raw qzstd.qcow2
cp q512.qcow2 q2.qcow2 qext.qcow2 qzlib.qcow2 qzstd.qcow2 "$out/"
ls -l "$out"

# vmdk: sparse extents (with data, zeroed grains, a delta link), a
# streamOptimized extent and descriptor files; the sparse ones truncated
# to their metadata (header, embedded descriptor, grain directories and
# tables all sit in the first 32 KiB of what qemu-img writes).
out=$(dirname "$out")/vmdk
rm -rf "$out"
mkdir -p "$out"
qemu-img create -q -f vmdk vm-sparse.vmdk 1M
qemu-io -f vmdk -c 'write -P 1 0 1k' -c 'write -P 2 700k 4k' vm-sparse.vmdk >/dev/null
qemu-img create -q -f vmdk -o zeroed_grain=on vm-zeroed.vmdk 1M
qemu-io -f vmdk -c 'write -z 0 64k' -c 'write -P 3 128k 4k' vm-zeroed.vmdk >/dev/null
qemu-img create -q -f vmdk -b vm-sparse.vmdk -F vmdk vm-delta.vmdk
qemu-img create -q -f raw vm-src.raw 1M
qemu-io -f raw -c 'write -P 6 0 64k' -c 'write -P 7 512k 8k' vm-src.raw >/dev/null
qemu-img convert -O vmdk -o subformat=streamOptimized vm-src.raw vm-stream.vmdk
qemu-img create -q -f vmdk -o subformat=monolithicFlat vm-flat.vmdk 1M
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse vm-2gb.vmdk 5G
for f in vm-sparse.vmdk vm-zeroed.vmdk vm-delta.vmdk vm-stream.vmdk; do
  head -c 32768 "$f" > "$out/$f"
done
cp vm-flat.vmdk vm-2gb.vmdk "$out/"
# The stream with its compressed grains moved right after its metadata
# (qemu leaves 64 KiB of room), and the same laid out as VMware does:
# header grain directory offset 0xffffffffffffffff, footer at the end.
python3 - vm-stream.vmdk "$out" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
meta, first = 32, 128  # sectors: metadata qemu wrote / first grain
gtes = struct.unpack_from("<I", b, 44)[0]
for gd_field in (48, 56):
    gd = struct.unpack_from("<Q", b, gd_field)[0] * 512
    gt = struct.unpack_from("<I", b, gd)[0] * 512
    for i in range(gtes):
        e = struct.unpack_from("<I", b, gt + 4 * i)[0]
        if e >= first:
            struct.pack_into("<I", b, gt + 4 * i, e - (first - meta))
struct.pack_into("<Q", b, 64, meta)
compact = b[:meta * 512] + b[first * 512:]
# Drop qemu's zero tail but one sector (the end-of-stream marker).
last = max(i for i in range(0, len(compact), 512) if any(compact[i:i + 512]))
compact = compact[:last + 1024]
open(sys.argv[2] + "/vm-stream-compact.vmdk", "wb").write(compact)
header = bytes(compact[:512])
vmware = bytearray(compact)
struct.pack_into("<Q", vmware, 56, 0xFFFFFFFFFFFFFFFF)
marker = bytearray(512)
struct.pack_into("<QII", marker, 0, 1, 0, 3)
vmware += marker + header + bytes(512)
open(sys.argv[2] + "/vm-stream-footer.vmdk", "wb").write(vmware)
PY
# VDI: dynamic, static and differencing images, truncated to the header,
# the block map and the first bytes of the data area.
out=$(dirname "$out")/vdi
rm -rf "$out"
mkdir -p "$out"
qemu-img create -q -f vdi v-empty.vdi 4M
qemu-img create -q -f vdi v-data.vdi 4M
qemu-io -f vdi -c 'write -P 1 0 1k' -c 'write -z 2M 4k' -c 'write -P 2 3M 512' v-data.vdi >/dev/null
qemu-img create -q -f vdi -o static=on v-static.vdi 3M
qemu-img create -q -f vdi v-odd.vdi 1500k
qemu-io -f vdi -c 'write -P 3 1M 1k' v-odd.vdi >/dev/null
for f in v-empty.vdi v-data.vdi v-static.vdi v-odd.vdi; do
  head -c 2048 "$f" > "$out/$f"
done
# Differencing (qemu cannot make one): type 4 at 0x4c, a parent UUID at
# 0x1a8, and one block map entry marked zero (0xfffffffe).
cp "$out/v-data.vdi" "$out/v-diff.vdi"
printf '\x04' | dd of="$out/v-diff.vdi" bs=1 seek=$((0x4c)) conv=notrunc status=none
printf 'parent-uuid-0001' | dd of="$out/v-diff.vdi" bs=1 seek=$((0x1a8)) conv=notrunc status=none
printf '\xfe\xff\xff\xff' | dd of="$out/v-diff.vdi" bs=1 seek=$((0x204)) conv=notrunc status=none
ls -l "$out"
