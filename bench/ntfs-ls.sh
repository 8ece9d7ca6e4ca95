#!/usr/bin/env bash
# Times listing a 100,000-file NTFS: `vdisk ls -r --json` against
# `fls -r -p` (The Sleuth Kit) with hyperfine in the same run, checks both
# list the same number of entries and prints the ratio (target <= 0.5).
# The volume (mkntfs, filled through ntfs-3g: 100 directories of 1,000
# files) is built once into bench/work/ntfs-100k.img; needs FUSE (root).
#
#   bench/ntfs-ls.sh            (RUNS=10 for more runs)
set -euo pipefail
cd "$(dirname "$0")/.."
work=bench/work
img=$work/ntfs-100k.img
mkdir -p "$work"
if [ ! -f "$img" ]; then
  rm -f "$img.tmp"
  truncate -s 1G "$img.tmp"
  mkntfs -q -F -Q -c 4096 "$img.tmp" >/dev/null 2>&1
  mnt=$(mktemp -d)
  ntfs-3g "$img.tmp" "$mnt"
  python3 - "$mnt" <<'PY'
import os, sys
m = sys.argv[1]
for d in range(100):
    os.mkdir(f'{m}/dir-{d:03}')
    for f in range(1000):
        with open(f'{m}/dir-{d:03}/file-{f:04}.txt', 'wb') as h:
            h.write(b'%d %d\n' % (d, f))
PY
  umount "$mnt"
  rmdir "$mnt"
  mv "$img.tmp" "$img"
fi
cargo build --release -q -p vdisk
vdisk=${CARGO_TARGET_DIR:-target}/release/vdisk
n_vdisk=$("$vdisk" ls -r --json "$img" | wc -l)
n_fls=$(fls -r -p "$img" | grep -c -v -P ':\t\$|^[^:]*\*')
echo "entries: vdisk $n_vdisk, fls $n_fls (without metadata files and deleted names)"
[ "$n_vdisk" -eq 100100 ] && [ "$n_fls" -eq 100100 ] || { echo "expected 100,100 entries" >&2; exit 1; }
json=$work/ntfs-ls.json
hyperfine --warmup 1 --runs "${RUNS:-5}" --export-json "$json" \
  -n vdisk "$vdisk ls -r --json $img" \
  -n fls "fls -r -p $img" >/dev/null
python3 - "$json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
v, f = r["vdisk"], r["fls"]
print(f"ntfs ls -r: vdisk / fls median {v['median'] / f['median']:.3f} "
      f"(median vdisk {v['median']:.3f} s, fls {f['median']:.3f} s; target <= 0.5)")
PY
