#!/usr/bin/env bash
# Regenerates fuzz/seeds/ntfs_{boot,mft_record,run_list,index_buffer,lznt1}:
# the pieces of NTFS volumes made by mkntfs (512 B and 4 KiB clusters) and
# filled through ntfs-3g (needs FUSE, run as root) that those targets
# parse, cut out by the Python below: boot sectors, FILE records as stored
# (fixups not applied), run lists of non-resident attributes, INDX records
# of directory and $Secure indexes, and compressed units of LZNT1 files
# (a first byte giving the unit size, see fs_ntfs::fuzzing). At most 6
# files of at most 32 KiB per target.
set -euo pipefail
cd "$(dirname "$0")"
seeds=$PWD/seeds
for t in boot mft_record run_list index_buffer lznt1; do
  rm -rf "$seeds/ntfs_$t"
  mkdir -p "$seeds/ntfs_$t"
done
tmp=$(mktemp -d)
trap 'umount "$tmp/mnt" 2>/dev/null || true; rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir mnt
for cluster in 512 4096; do
  truncate -s 8M v.img
  mkntfs -q -F -Q -c "$cluster" v.img >/dev/null 2>&1
  ntfs-3g v.img mnt
  python3 - mnt <<'PY'
import os, sys, struct
m = sys.argv[1]
os.mkdir(f'{m}/comp')
os.setxattr(f'{m}/comp', 'system.ntfs_attrib_be', (0x800).to_bytes(4, 'big'))
open(f'{m}/comp/text', 'wb').write(b''.join(b'line %d compresses\n' % i for i in range(4000)))
os.mkdir(f'{m}/dir')
for i in range(300):
    open(f'{m}/dir/entry-{i:04}', 'w').write(str(i))
os.setxattr(f'{m}/dir/entry-0001', 'user.stream', b'named stream')
for i in range(20):
    os.link(f'{m}/dir/entry-0002', f'{m}/dir/a-rather-long-hard-link-name-number-{i:02}')
os.symlink('dir/entry-0003', f'{m}/symlink')
with open(f'{m}/sparse', 'wb') as f:
    for i in range(120):
        f.seek(i * 65536)
        f.write(b'x' * 512)
PY
  umount mnt
  python3 - v.img "$seeds" "c$cluster" <<'PY'
import sys, struct
img, seeds, tag = open(sys.argv[1], 'rb').read(), sys.argv[2], sys.argv[3]
def put(target, name, data):
    open(f'{seeds}/ntfs_{target}/{tag}-{name}', 'wb').write(data[:32768])
u16 = lambda b, o: struct.unpack_from('<H', b, o)[0]
u32 = lambda b, o: struct.unpack_from('<I', b, o)[0]
u64 = lambda b, o: struct.unpack_from('<Q', b, o)[0]
cs = u16(img, 11) * img[13]
rs = 1 << (256 - img[0x40]) if img[0x40] > 0x80 else img[0x40] * cs
put('boot', 'boot', img[:512])
mft = u64(img, 0x30) * cs
def fixed(b):
    b = bytearray(b)
    off, cnt = u16(b, 4), u16(b, 6)
    for i in range(1, cnt):
        b[i * 512 - 2:i * 512] = b[off + 2 * i:off + 2 * i + 2]
    return bytes(b)
def runs(b):
    out, at, vcn, lcn = [], 0, 0, 0
    while at < len(b) and b[at]:
        h = b[at]; ls, os_ = h & 15, h >> 4
        ln = int.from_bytes(b[at + 1:at + 1 + ls], 'little')
        if os_:
            lcn += int.from_bytes(b[at + 1 + ls:at + 1 + ls + os_], 'little', signed=True)
            out.append((vcn, lcn, ln))
        else:
            out.append((vcn, None, ln))
        vcn += ln; at += 1 + ls + os_
    return out
def clusters(rl, n):
    data = b''
    for vcn, lcn, ln in rl:
        data += bytes(ln * cs) if lcn is None else img[lcn * cs:(lcn + ln) * cs]
        if len(data) >= n:
            break
    return data[:n]
picked = {'mft_record': 0, 'run_list': 0, 'index_buffer': 0, 'lznt1': 0}
for n in range(64 + 400):
    raw = img[mft + n * rs:mft + (n + 1) * rs]
    if raw[:4] != b'FILE' or not u16(raw, 0x16) & 1:
        continue
    rec = fixed(raw)
    at, attrs = u16(rec, 0x14), []
    while u32(rec, at) != 0xffffffff:
        attrs.append((at, rec[at:at + u32(rec, at + 4)]))
        at += u32(rec, at + 4)
    types = {u32(a, 0) for _, a in attrs}
    interesting = n in (0, 5, 9) or 0x20 in types or 0xc0 in types or len(attrs) > 5
    if interesting and picked['mft_record'] < 6:
        put('mft_record', f'rec{n}', raw); picked['mft_record'] += 1
    for _, a in attrs:
        if not a[8]:
            continue
        rl_bytes = a[u16(a, 0x20):]
        rl = runs(rl_bytes)
        if (len(rl) > 2 or n == 0) and picked['run_list'] < 6:
            put('run_list', f'rec{n}-{u32(a, 0):x}', b'\0' + rl_bytes); picked['run_list'] += 1
        if u32(a, 0) == 0xa0 and picked['index_buffer'] < 6:
            put('index_buffer', f'rec{n}', clusters(rl, 4096 * 4)); picked['index_buffer'] += 1
        if u32(a, 0) == 0x80 and a[0x22] and picked['lznt1'] < 6:
            unit = (1 << a[0x22]) * cs
            stored = [r for r in rl if r[1] is not None]
            data = b''.join(img[l * cs:(l + ln) * cs] for _, l, ln in stored)[:unit]
            put('lznt1', f'rec{n}', bytes([unit // 4096 - 1]) + data); picked['lznt1'] += 1
PY
done
for t in boot mft_record run_list index_buffer lznt1; do
  echo "ntfs_$t: $(ls "$seeds/ntfs_$t" | wc -l) files, $(du -sk "$seeds/ntfs_$t" | cut -f1) KiB"
done
