#!/usr/bin/env bash
# Times `vdisk convert -O vmdk` against `qemu-img convert -O vmdk` on the
# same mixed-content raw image, in the same run, for monolithicSparse and
# streamOptimized, prints the ratios, and checks the outputs: equal to the
# source (`qemu-img compare`) and no more allocated than qemu-img's + 1%.
#
#   bench/convert-vmdk.sh [SRC=bench/work/src-4G-mixed.raw]
#
# The source is made by bench/convert-raw.sh. On a busy machine a 1 GiB
# slice of it does: dd if=...4G... of=bench/work/src-1G-mixed.raw bs=1M
# count=1024 conv=sparse. Needs qemu-img and hyperfine.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-bench/work/src-4G-mixed.raw}
work=bench/work
out=$work/out
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p vdisk
vdisk=${CARGO_TARGET_DIR:-target}/release/vdisk
for sub in monolithicSparse streamOptimized; do
  json=$work/convert-vmdk-$sub.json
  hyperfine --warmup 1 --runs "${RUNS:-3}" --export-json "$json" \
    --prepare "sh -c 'rm -f $out-*.vmdk; sync'" \
    -n vdisk "$vdisk convert --quiet $src $out-vdisk.vmdk -O vmdk -o subformat=$sub" \
    -n qemu-img "qemu-img convert -f raw -O vmdk -o subformat=$sub $src $out-qemu.vmdk"
  "$vdisk" convert --quiet "$src" "$out-vdisk.vmdk" -O vmdk -o "subformat=$sub"
  qemu-img convert -f raw -O vmdk -o "subformat=$sub" "$src" "$out-qemu.vmdk"
  qemu-img compare -f raw "$src" "$out-vdisk.vmdk"
  ours=$(du -B1 "$out-vdisk.vmdk" | cut -f1)
  theirs=$(du -B1 "$out-qemu.vmdk" | cut -f1)
  echo "$sub allocated: vdisk $ours bytes, qemu-img $theirs bytes"
  python3 - "$json" "$sub" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
v, q = r["vdisk"], r["qemu-img"]
print(f"{sys.argv[2]}: vdisk / qemu-img: median {v['median'] / q['median']:.3f}, "
      f"min {v['min'] / q['min']:.3f} (median vdisk {v['median']:.2f} s, qemu-img {q['median']:.2f} s)")
PY
  if [ "$ours" -gt $((theirs + theirs / 100)) ]; then
    echo "FAIL: $sub output allocates $ours bytes, more than qemu-img's $theirs + 1%" >&2
    exit 1
  fi
  rm -f "$out"-*.vmdk
done
