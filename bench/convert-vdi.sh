#!/usr/bin/env bash
# Times `vdisk convert -O vdi` against `qemu-img convert -O vdi` (dynamic,
# and static with `-o static=on`) on the mixed bench image that
# bench/convert-raw.sh makes, in the same run, and prints the ratios.
# Also checks the outputs: `qemu-img check` clean, `qemu-img compare`
# equal to the source, allocated no more than qemu-img's plus 1%.
#
#   bench/convert-vdi.sh [SRC=bench/work/src-4G-mixed.raw]
#
# Needs qemu-img and hyperfine (.ci/install-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-bench/work/src-4G-mixed.raw}
[ -f "$src" ] || { echo "no $src: run bench/convert-raw.sh first" >&2; exit 1; }
work=bench/work
mkdir -p "$work"
cargo build --release -q -p vdisk
vdisk=${CARGO_TARGET_DIR:-target}/release/vdisk
out=$work/out
for sub in dynamic static; do
  o=""; [ "$sub" = static ] && o="-o static=on"
  json=$work/convert-vdi-$sub.json
  hyperfine --warmup 1 --runs "${RUNS:-5}" --export-json "$json" \
    --prepare "sh -c 'rm -f $out-*.vdi; sync'" \
    -n vdisk "$vdisk convert --quiet $src $out-vdisk.vdi -O vdi $o" \
    -n qemu-img "qemu-img convert -f raw -O vdi $o $src $out-qemu.vdi"
  "$vdisk" convert --quiet "$src" "$out-vdisk.vdi" -O vdi $o
  qemu-img convert -f raw -O vdi $o "$src" "$out-qemu.vdi"
  qemu-img check -q "$out-vdisk.vdi"
  qemu-img compare -q -f raw -F vdi "$src" "$out-vdisk.vdi"
  ours=$(du -B1 "$out-vdisk.vdi" | cut -f1)
  theirs=$(du -B1 "$out-qemu.vdi" | cut -f1)
  echo "$sub: allocated vdisk $ours bytes, qemu-img $theirs bytes"
  if [ "$ours" -gt $((theirs + theirs / 100)) ]; then
    echo "FAIL: vdisk $sub output allocates more than qemu-img's + 1%" >&2
    exit 1
  fi
  python3 - "$json" "$sub" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
v, o = r["vdisk"], r["qemu-img"]
print(f"{sys.argv[2]}: vdisk / qemu-img: median {v['median'] / o['median']:.3f}, mean {v['mean'] / o['mean']:.3f}, "
      f"min {v['min'] / o['min']:.3f} (median vdisk {v['median']:.3f} s, qemu-img {o['median']:.3f} s)")
PY
  rm -f "$out"-*.vdi
done
