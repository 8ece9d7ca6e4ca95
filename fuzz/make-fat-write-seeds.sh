#!/usr/bin/env bash
# Regenerates fuzz/seeds/fat_write/: scripts for fs_fat::fuzzing::fat_write
# (first byte odd: format FAT12 / FAT16 / FAT32 by the second byte, then
# operations of 3+ bytes: op, pick, arguments), and one existing volume
# (first byte even) from the read target's seeds.
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD/seeds/fat_write
rm -rf "$out"
mkdir -p "$out"
python3 - "$out" <<'PY'
import os, sys
out = sys.argv[1]
def name(text):
    # ALPHABET indices of fs_fat::fuzzing: a B c D . space é 日 😀 ~ 1 + x Y z _
    alpha = ["a", "B", "c", "D", ".", " ", "é", "日", "😀", "~", "1", "+", "x", "Y", "z", "_"]
    idx = [alpha.index(ch) for ch in text]
    return bytes([len(idx) - 1]) + bytes(idx)
def mkdir(pick, text): return bytes([0, pick]) + name(text)
def mkfile(pick, text, hint=0): return bytes([1, pick]) + name(text) + bytes([hint])
def write(pick, off, ln, seed): return bytes([2, pick, off, ln, seed])
def trunc(pick, off): return bytes([3, pick, off, 0, 0])
def remove(pick): return bytes([4, pick])
def flush(): return bytes([5, 0])
scripts = {
    "fat12-tree": bytes([1, 0]) + mkdir(0, "Dc a") + mkfile(1, "a.c") + write(0, 0, 200, 7)
        + mkfile(0, "日é 😀.x") + write(1, 3, 90, 1) + trunc(0, 10) + flush(),
    "fat16-aliases": bytes([1, 1]) + b"".join(mkfile(0, "aaaaaaaa" + c + ".c") for c in "BcDxYz1_")
        + remove(3) + mkfile(0, "aaaaaaaaB.c") + write(2, 255, 255, 3),
    "fat32-remove": bytes([1, 2]) + mkdir(0, "D") + mkdir(1, "x") + mkfile(2, "c", 200) + write(0, 0, 40, 9)
        + remove(0) + remove(1) + flush() + mkfile(0, "Y") + write(0, 100, 10, 2),
    "fat12-names": bytes([1, 3]) + mkfile(0, "a") + mkfile(0, "c") + mkfile(0, "c") + mkfile(0, ".a") + mkfile(0, "a.")
        + mkfile(0, "B.c.D") + mkfile(0, "+~1") + mkfile(0, "zzzzzzzz.zzz") + mkfile(0, "zzzzzzzz.zzzz"),
}
for k, v in scripts.items():
    open(os.path.join(out, k), "wb").write(v)
PY
# Existing volumes (the read target's seeds, truncated: the target pads
# them with zeros to their size); the first byte (even) is dropped.
for f in fat12-small.img fat16.img; do
  { printf '\000'; head -c 32767 "seeds/fat/$f"; } > "$out/existing-$f"
done
ls -l "$out"
