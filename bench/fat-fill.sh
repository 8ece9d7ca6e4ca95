#!/usr/bin/env bash
# Times filling an empty FAT image with a generated 10,000-file tree
# through fs-fat (examples/fill.rs) against `mcopy -s` into an identical
# empty image (made once by mkfs.fat, copied before every run), checks
# both with `fsck.fat -n` and prints the ratio.
#
#   bench/fat-fill.sh [FILES=10000] [SIZE_MIB=512] [RUNS=3]
#
# Two measures: images on the disk (bench/work, each run ending with the
# image synced: the I/O of the 100 MB written weighs as much as the
# tools), and images in memory (IMAGES=/dev/shm/..., the default second
# pass: what the tools themselves cost).
# Needs mkfs.fat, mcopy and fsck.fat.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-10000}
size_mib=${2:-512}
runs=${3:-${RUNS:-3}}
work=bench/work/fat-fill
mkdir -p "$work"
tree=$work/tree-$files

if [ ! -d "$tree" ]; then
  echo "generating $tree: $files files in 100 directories, 3 levels"
  python3 - "$tree" "$files" <<'PY'
import os, random, sys
root, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
words = ["report", "photo", "Notes", "data", "résumé", "日本", "backup", "final", "v2", "draft"]
for i in range(count):
    d = os.path.join(root, f"dir {i % 10}", f"sub {i // 10 % 10}")
    os.makedirs(d, exist_ok=True)
    name = f"{rng.choice(words)} {i} {rng.choice(words)}.txt" if i % 3 else f"f{i}.dat"
    size = rng.choice([0, 100, 1000, 3000, 5000, 12000, 40000])
    with open(os.path.join(d, name), "wb") as f:
        f.write(os.urandom(size))
PY
fi

cargo build -q --release -p fs-fat --example fill
fill=${CARGO_TARGET_DIR:-target}/release/examples/fill

run_all() {
img_dir=$1
mkdir -p "$img_dir"
empty=$img_dir/empty.img
rm -f "$empty"
mkfs.fat -F 32 -C "$empty" $((size_mib * 1024)) >/dev/null

# Wall time of each run, both ending with the image synced to the disk
# (fs-fat's flush ends with fdatasync; mcopy does not sync, so `sync FILE`
# is timed with it), and the CPU time (user + system) of the tool alone.
best() { sort -n | head -1; }
now() { date +%s.%N; }
cpu() { /usr/bin/time -f '%U %S' "$@" 2>&1 >/dev/null | tail -1 | awk '{print $1 + $2}'; }
t_mcopy=(); t_fsfat=(); c_mcopy=(); c_fsfat=()
m_img=$(realpath "$img_dir")/m.img
for r in $(seq "$runs"); do
  cp --sparse=always "$empty" "$m_img"; sync
  s=$(now); (cd "$tree" && LC_ALL=C.UTF-8 mcopy -s -m -i "$m_img" -- * :: && sync "$m_img"); e=$(now)
  t_mcopy+=("$(echo "$e - $s" | bc)")
  cp --sparse=always "$empty" "$m_img"; sync
  c_mcopy+=("$(cd "$tree" && LC_ALL=C.UTF-8 cpu mcopy -s -m -i "$m_img" -- * ::)")
  cp --sparse=always "$empty" "$img_dir/f.img"; sync
  s=$(now); "$fill" "$img_dir/f.img" "$tree" 2>/dev/null; e=$(now)
  t_fsfat+=("$(echo "$e - $s" | bc)")
  cp --sparse=always "$empty" "$img_dir/f.img"; sync
  c_fsfat+=("$(cpu "$fill" "$img_dir/f.img" "$tree")")
done
fsck.fat -n "$m_img" | tail -1
fsck.fat -n "$img_dir/f.img" | tail -1
cp --sparse=always "$empty" "$img_dir/f.img"
"$fill" "$img_dir/f.img" "$tree" 2>&1 | sed 's/^/fill: /'
m=$(printf '%s\n' "${t_mcopy[@]}" | best)
f=$(printf '%s\n' "${t_fsfat[@]}" | best)
mc=$(printf '%s\n' "${c_mcopy[@]}" | best)
fc=$(printf '%s\n' "${c_fsfat[@]}" | best)
printf 'wall, synced:  mcopy -s %.3f s   fs-fat %.3f s   ratio %.1fx\n' "$m" "$f" "$(echo "$m / $f" | bc -l)"
printf 'CPU (user+sys): mcopy -s %.3f s   fs-fat %.3f s   ratio %.1fx\n' "$mc" "$fc" "$(echo "$mc / ($fc + 0.001)" | bc -l)"
echo "(best of $runs runs; $(du -sh "$tree" | cut -f1) in $files files; images in $img_dir)"
rm -f "$img_dir"/*.img
}
run_all "$work"
run_all "${IMAGES:-/dev/shm/vdisk-fat-fill}"
