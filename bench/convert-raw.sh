#!/usr/bin/env bash
# Times `vdisk convert -O raw` against `cp --sparse=always` and
# `qemu-img convert -O raw` on the same generated image, in the same run,
# and prints the ratios. Also checks the output: byte-identical to the
# input, and no more allocated than the input plus 1%.
#
#   bench/convert-raw.sh [SIZE_GIB=4] [DATA_MIB=1024]
#
# Needs qemu-img, qemu-io, sfdisk and hyperfine (.ci/install-tools).
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

cargo build --release -q -p vdisk
vdisk=target/release/vdisk
out=$work/out
json=$work/convert-raw.json
# `sync` in --prepare: each run leaves ~1 GiB of dirty pages whose writeback
# would otherwise overlap the next timed run.
hyperfine --warmup 1 --runs "${RUNS:-5}" --export-json "$json" \
  --prepare "sh -c 'rm -f $out-*.raw; sync'" \
  -n vdisk "$vdisk convert --quiet $src $out-vdisk.raw -O raw" \
  -n qemu-img "qemu-img convert -f raw -O raw $src $out-qemu.raw" \
  -n cp "cp --sparse=always $src $out-cp.raw"

# `--prepare` removed the outputs between runs: make them once more, untimed.
"$vdisk" convert --quiet "$src" "$out-vdisk.raw" -O raw
qemu-img convert -f raw -O raw "$src" "$out-qemu.raw"
cp --sparse=always "$src" "$out-cp.raw"
cmp "$src" "$out-vdisk.raw"
echo "identical: $out-vdisk.raw"
in_bytes=$(du -B1 "$src" | cut -f1)
for f in "$out-vdisk.raw" "$out-qemu.raw" "$out-cp.raw"; do
  echo "allocated: $(du -B1 "$f" | cut -f1) bytes  $f (input: $in_bytes)"
done
ours=$(du -B1 "$out-vdisk.raw" | cut -f1)
if [ "$ours" -gt $((in_bytes + in_bytes / 100)) ]; then
  echo "FAIL: vdisk output allocates $ours bytes, more than the input's $in_bytes + 1%" >&2
  exit 1
fi
python3 - "$json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
v = r["vdisk"]
for other in ("qemu-img", "cp"):
    o = r[other]
    # This machine's timings have outliers (writeback, neighbours): the
    # median is the figure to quote; mean and min are shown beside it.
    print(f"vdisk / {other}: median {v['median'] / o['median']:.3f}, mean {v['mean'] / o['mean']:.3f}, "
          f"min {v['min'] / o['min']:.3f} (median vdisk {v['median']:.3f} s, {other} {o['median']:.3f} s)")
PY
rm -f "$out"-*.raw
