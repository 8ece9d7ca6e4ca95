#!/usr/bin/env bash
# Regenerates fuzz/seeds/vhdx/: VHDX files made by qemu-img and qemu-io,
# stored in the sparse form `vdisk_format::fuzzing::vhdx_read` reads (a
# u32 file size in 4 KiB units, then pieces: u32 offset in 4 KiB units,
# u16 length, bytes) because VHDX structures lie megabytes apart. Only
# non-zero sectors are kept, so each seed stays far below 32 KiB.
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD/seeds/vhdx
rm -rf "$out"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

# Dynamic, empty and with data, zeroed ranges and a partial last block.
qemu-img create -q -f vhdx -o block_size=1M empty.vhdx 8M
qemu-img create -q -f vhdx -o block_size=1M data.vhdx 3500k
qemu-io -f vhdx -c 'write -P 1 0 512' -c 'write -z 1M 4k' -c 'write -P 2 3M 1k' data.vhdx >/dev/null
qemu-img create -q -f vhdx -o block_size=32M big-block.vhdx 40M
qemu-io -f vhdx -c 'write -P 3 33M 1k' big-block.vhdx >/dev/null
# Fixed, blocks FULLY_PRESENT.
qemu-img create -q -f vhdx -o subformat=fixed,block_state_zero=off,block_size=1M fixed.vhdx 4M
qemu-io -f vhdx -c 'write -P 4 2M 1k' fixed.vhdx >/dev/null
# A dirty log: the in-place BAT write fails (blkdebug), then qemu-io aborts.
printf '[inject-error]\nevent = "pwritev"\nsector = "4096"\nerrno = "5"\nonce = "on"\n' > bd.cfg
qemu-img create -q -f vhdx -o block_size=1M dirty.vhdx 8M
qemu-io -c 'write -P 5 0 1k' -c abort \
  'json:{"driver":"vhdx","file":{"driver":"blkdebug","config":"bd.cfg","image":{"driver":"file","filename":"dirty.vhdx"}}}' \
  >/dev/null 2>&1 || true

for f in empty data big-block fixed dirty; do
python3 - "$f.vhdx" "$out/$f" <<'PY'
import struct, sys
src = open(sys.argv[1], 'rb').read()
S = 4096
out = [struct.pack('<I', (len(src) + S - 1) // S)]
i, n = 0, (len(src) + S - 1) // S
while i < n:
    if not any(src[i*S:(i+1)*S]):
        i += 1
        continue
    j = i
    while j < n and j - i < 15 and any(src[j*S:(j+1)*S]):
        j += 1
    piece = src[i*S:j*S].rstrip(b'\0')
    out.append(struct.pack('<IH', i, len(piece)) + piece)
    i = j
open(sys.argv[2], 'wb').write(b''.join(out))
PY
done
ls -l "$out"
