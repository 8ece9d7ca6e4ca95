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

bash bench/make-mixed.sh "$size_gib" "$data_mib"

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
