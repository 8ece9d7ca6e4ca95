#!/usr/bin/env bash
# Times `vdisk ls -r` against `fls -r -p` (The Sleuth Kit) on an ext4 image
# of 100,000 files, in the same run, and prints the ratio (issue 8 wants at
# most 0.5). Both write to /dev/null.
#
#   bench/ext-ls.sh [FILES=100000]
#
# The image, bench/work/ext-<N>.img, is made once with `mkfs.ext4 -d` from
# a generated tree (bench/work/ext-<N>-tree): 100 top directories, each
# with a few subdirectories, small files of 0 to 3 KiB (many inline-sized,
# some spanning blocks), a symlink per directory. Never committed.
# Needs mkfs.ext4 and fls.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-100000}
work=bench/work
mkdir -p "$work"
tree=$work/ext-$((files / 1000))k-tree
img=$work/ext-$((files / 1000))k.img

if [ ! -f "$img" ]; then
  echo "generating $tree and $img: $files files"
  rm -rf "$tree"
  python3 - "$tree" "$files" <<'PY'
import os, random, sys
root, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(8)
os.makedirs(root)
made = 0
top = 100
per_top = count // top
for t in range(top):
    d = os.path.join(root, f"dir-{t:03d}")
    subs = [d] + [os.path.join(d, f"sub-{s}") for s in range(4)]
    for s in subs:
        os.makedirs(s, exist_ok=True)
    os.symlink("../dir-000", os.path.join(d, "link"))
    for i in range(per_top):
        where = subs[i % len(subs)]
        size = rng.choice((0, 17, 60, 200, 1000, 3000))
        with open(os.path.join(where, f"file-{i:05d}-{rng.randrange(1 << 20):x}.dat"), "wb") as f:
            f.write(bytes([65 + i % 26]) * size)
        made += 1
PY
  size_mib=$(( files / 100 + 256 ))
  truncate -s "${size_mib}M" "$img"
  mkfs.ext4 -q -F -N $((files + files / 5)) -d "$tree" "$img"
  rm -rf "$tree"
fi

cargo build --release -q -p vdisk
vdisk=${CARGO_TARGET_DIR:-target}/release/vdisk
# Same listing from both: as many lines (fls adds the . and .. of nothing,
# but lists $OrphanFiles; vdisk lists only the tree).
echo "vdisk lines: $("$vdisk" ls -r "$img" | wc -l), fls lines: $(fls -r -p "$img" | wc -l)"
# Alternating runs (vdisk, fls, vdisk, ...) so that a busy neighbour
# slows both alike; the median ratio is the figure to quote.
python3 - "${RUNS:-7}" "$vdisk" "$img" <<'PY'
import os, statistics, subprocess, sys, time
runs, vdisk, img = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cmds = {"vdisk": [vdisk, "ls", "-r", img], "fls": ["fls", "-r", "-p", img]}
wall = {k: [] for k in cmds}
cpu = {k: [] for k in cmds}
for i in range(runs + 1):
    for name, cmd in cmds.items():
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        if status != 0:
            sys.exit(f"{name} failed")
        if i > 0:  # the first round warms the page cache
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(ru.ru_utime + ru.ru_stime)
med = statistics.median
v, f = med(wall["vdisk"]), med(wall["fls"])
ratios = sorted(a / b for a, b in zip(wall["vdisk"], wall["fls"]))
print(f"vdisk ls -r / fls -r -p: wall median {v / f:.3f} (vdisk {v:.3f} s, fls {f:.3f} s; "
      f"per pair {' '.join(f'{r:.2f}' for r in ratios)}); "
      f"CPU median {med(cpu['vdisk']) / med(cpu['fls']):.3f}")
PY
