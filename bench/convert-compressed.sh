#!/usr/bin/env bash
# Times compressed qcow2 output: `vdisk convert -O qcow2 -o
# compression_type=T,compress=on` against `qemu-img convert -c -O qcow2 -o
# compression_type=T` on the bench image of make-mixed.sh, runs alternating
# (vdisk, qemu-img, vdisk, ...), and prints the median ratios of wall time
# and of CPU time (user + sys, steadier on a shared machine), and both
# outputs' allocated sizes. Issue 5 wants zlib at most 0.35x, zstd at most
# 0.6x, outputs at most qemu-img's + 1%. Each output is checked with
# `qemu-img compare` and `qemu-img check`.
#
#   bench/convert-compressed.sh [SIZE_GIB=4] [DATA_MIB=1024] [TYPES="zlib zstd"]
#   RUNS=5 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
size_gib=${1:-4}
data_mib=${2:-1024}
types=${3:-zlib zstd}
work=bench/work
bash bench/make-mixed.sh "$size_gib" "$data_mib"
src=$work/src-${size_gib}G-mixed.raw
cargo build --release -q -p vdisk
vdisk=${CARGO_TARGET_DIR:-target}/release/vdisk
for t in $types; do
  python3 - "${RUNS:-5}" "$vdisk" "$src" "$work" "$t" <<'PY'
import os, statistics, subprocess, sys, time
runs, vdisk, src, work, t = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
out = {"vdisk": f"{work}/out-vdisk.qcow2", "qemu-img": f"{work}/out-qemu.qcow2"}
cmds = {
    "vdisk": [vdisk, "convert", "--quiet", src, out["vdisk"], "-O", "qcow2",
              "-o", f"compression_type={t},compress=on"],
    "qemu-img": ["qemu-img", "convert", "-c", "-O", "qcow2", "-o", f"compression_type={t}",
                 src, out["qemu-img"]],
}
wall = {k: [] for k in cmds}
cpu = {k: [] for k in cmds}
size = {}
for i in range(runs):
    for name, cmd in cmds.items():
        if os.path.exists(out[name]):
            os.unlink(out[name])
        subprocess.run(["sync"], check=True)
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd)
        _, status, ru = os.wait4(p.pid, 0)
        wall[name].append(time.perf_counter() - t0)
        cpu[name].append(ru.ru_utime + ru.ru_stime)
        if status != 0:
            sys.exit(f"{name} failed: {cmd}")
        size[name] = os.stat(out[name]).st_blocks * 512
for name in cmds:
    subprocess.run(["qemu-img", "compare", "-q", src, out[name]], check=True)
subprocess.run(["qemu-img", "check", "-q", out["vdisk"]], check=True)
med = lambda d, k: statistics.median(d[k])
v, q = "vdisk", "qemu-img"
pair = sorted(a / b for a, b in zip(wall[v], wall[q]))
print(f"qcow2 {t}: wall vdisk/qemu-img median {med(wall, v) / med(wall, q):.3f} "
      f"(vdisk {med(wall, v):.2f} s, qemu-img {med(wall, q):.2f} s; per pair {' '.join(f'{r:.2f}' for r in pair)}); "
      f"CPU median {med(cpu, v) / med(cpu, q):.3f} (vdisk {med(cpu, v):.2f} s, qemu-img {med(cpu, q):.2f} s); "
      f"allocated vdisk {size[v]} B, qemu-img {size[q]} B ({size[v] / size[q] - 1:+.2%}); outputs equal the source")
for f in out.values():
    os.unlink(f)
PY
done
