#!/usr/bin/env bash
# Makes bench/work/src-<SIZE>G-mixed.raw once (the bench image of
# convert-raw.sh, convert-compressed.sh and read-formats.sh): SIZE GiB
# sparse, a GPT, DATA MiB of scattered mixed data.
#
#   bench/make-mixed.sh [SIZE_GIB=4] [DATA_MIB=1024]
set -euo pipefail
cd "$(dirname "$0")/.."
size_gib=${1:-4}
data_mib=${2:-1024}
work=bench/work
mkdir -p "$work"
src=$work/src-${size_gib}G-mixed.raw

if [ ! -f "$src" ]; then
  echo "generating $src: ${size_gib} GiB sparse, ${data_mib} MiB of scattered mixed data"
  qemu-img create -q -f raw "$src" "${size_gib}G"
  printf 'label: gpt\n2048,,L\n' | sfdisk -q "$src"
  # 1 MiB pieces at distinct pseudo-random MiB slots past the first MiB.
  # Content like a real disk's, so that compressed formats are measured
  # fairly: 3/8 random (incompressible), 3/8 text, 1/8 a repeated pattern,
  # 1/8 zeros (a zero run inside data).
  python3 - "$src" "$((size_gib * 1024 - 2))" "$data_mib" <<'PY'
import os, random, sys
path, slots, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(1234)
words = [bytes(rng.choice(b"etaoinshrdlucmfwypvbgkjqxz") for _ in range(rng.randint(2, 9)))
         for _ in range(4000)]
text = bytearray()
while len(text) < 8 << 20:
    line = b" ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
    text += line.capitalize() + b".\n"
with open(path, "r+b") as f:
    for i, slot in enumerate(sorted(rng.sample(range(slots), count))):
        kind = i % 8
        if kind in (0, 3, 6):
            data = rng.randbytes(1 << 20)
        elif kind in (1, 4, 7):
            start = rng.randrange(0, len(text) - (1 << 20))
            data = bytes(text[start:start + (1 << 20)])
        elif kind == 2:
            data = bytes([1 + i % 250]) * (1 << 20)
        else:
            data = bytes(1 << 20)
        f.seek((slot + 1) << 20)
        f.write(data)
PY
  sync
fi

