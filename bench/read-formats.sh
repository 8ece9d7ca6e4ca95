#!/usr/bin/env bash
# Times reading each container format that vdisk reads: `vdisk convert X
# -O raw` against `qemu-img convert X -O raw`, X made by qemu-img from the
# bench image of convert-raw.sh (run that first, or this makes it).
#
#   bench/read-formats.sh [FORMAT...]
#   (default: qcow2 qcow2-zlib qcow2-zstd vmdk vmdk-stream vhd vhdx vdi)
set -euo pipefail
cd "$(dirname "$0")/.."
work=bench/work
src=$work/src-4G-mixed.raw
[ -f "$src" ] || { bash bench/convert-raw.sh >/dev/null; }
cargo build --release -q -p vdisk
vdisk=target/release/vdisk
formats=("$@")
[ ${#formats[@]} -gt 0 ] || formats=(qcow2 qcow2-zlib qcow2-zstd vmdk vmdk-stream vhd vhdx vdi)
for f in "${formats[@]}"; do
  img=$work/src.$f
  if [ ! -f "$img" ]; then
    case $f in
      qcow2) qemu-img convert -O qcow2 "$src" "$img" ;;
      qcow2-zlib) qemu-img convert -c -O qcow2 -o compression_type=zlib "$src" "$img" ;;
      qcow2-zstd) qemu-img convert -c -O qcow2 -o compression_type=zstd "$src" "$img" ;;
      vmdk) qemu-img convert -O vmdk "$src" "$img" ;;
      vmdk-stream) qemu-img convert -O vmdk -o subformat=streamOptimized "$src" "$img" ;;
      vhd) qemu-img convert -O vpc -o force_size=on "$src" "$img" ;;
      vhdx) qemu-img convert -O vhdx "$src" "$img" ;;
      vdi) qemu-img convert -O vdi "$src" "$img" ;;
      *) echo "unknown format $f" >&2; exit 2 ;;
    esac
  fi
  json=$work/read-$f.json
  hyperfine --warmup 1 --runs "${RUNS:-5}" --export-json "$json" \
    --prepare "sh -c 'rm -f $work/out-*.raw; sync'" \
    -n vdisk "$vdisk convert --quiet $img $work/out-vdisk.raw -O raw" \
    -n qemu-img "qemu-img convert -O raw $img $work/out-qemu.raw" >/dev/null
  "$vdisk" convert --quiet "$img" "$work/out-vdisk.raw" -O raw
  # qemu rounds some formats' sizes up (vhd geometry): compare the source's bytes.
  cmp -n "$(stat -c %s "$src")" "$src" "$work/out-vdisk.raw"
  python3 - "$json" "$f" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
v, q = r["vdisk"], r["qemu-img"]
print(f"{sys.argv[2]:>11}: vdisk / qemu-img median {v['median'] / q['median']:.3f}, mean {v['mean'] / q['mean']:.3f} "
      f"(median vdisk {v['median']:.3f} s, qemu-img {q['median']:.3f} s; output identical)")
PY
  rm -f "$work"/out-*.raw
done
