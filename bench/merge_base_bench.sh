#!/usr/bin/env bash
# Benchmark of `soup merge --base B --method ties` (a sparse base and three
# fine-tunes sharing its mask) against the floor of the hardware and, where
# it is installed, mergekit's TIES. Target: peak RSS bounded as for `merge`
# (<= 256 MiB); the time is reported as a ratio to the floor.
#
#   bench/merge_base_bench.sh [SIZE_MIB ...]   (default: 1024)
#
# For each size it generates 4 checkpoints of SIZE_MIB MiB of F32 sharing one
# mask (bench/gen_candidates.py; not timed): the first is the base, the
# others the fine-tunes. Then, in rounds (each after one `cat` pass that
# warms the page cache the same way for all):
#   floor     cat of the base and the fine-tunes to /dev/null, then cp of one
#             input, fsynced
#   ties      soup merge --base BASE FT... --method ties --density 0.5 -o OUT
#             (output fsynced, as soup always does; it reads the inputs three
#             times: two pre-pass sweeps for the trim, then the merge)
#   mergekit  mergekit-pytorch CONFIG OUT_DIR --lazy-unpickle --quiet on
#             the CPU, with merge_method ties, base_model BASE, dtype
#             float32, density 0.5 and weight 1 for each fine-tune: the
#             same method on the same files (mergekit-pytorch reads
#             .safetensors files as they are; it writes OUT_DIR/
#             model.safetensors, not fsynced). Only when installed:
#             MERGEKIT_PYTORCH, or mergekit-pytorch beside SOUP_PYTHON.
#   ties-base the ties command with the SOUP_BASE binary, where set (an
#             older build to compare with in the same run)
# and prints a Markdown table: median and best wall time, the median as a
# ratio to the floor, the median CPU time, and the peak RSS.
#
# Environment: REPEAT (default 3), BENCH_NICE, BENCH_DIR, SOUP, SOUP_PYTHON
# (as bench/merge_bench.sh), SOUP_BASE.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1024)
repeat=${REPEAT:-3}

if [ -z "${SOUP_PYTHON:-}" ]; then
    eval "$(scripts/setup.sh --full)"
fi
if [ -z "${SOUP:-}" ]; then
    cargo build --release --locked -p soup-cli >&2
    SOUP="${CARGO_TARGET_DIR:-$repo/target}/release/soup"
fi
mergekit=${MERGEKIT_PYTORCH:-$(dirname "$SOUP_PYTHON")/mergekit-pytorch}
if [ -x "$mergekit" ]; then
    echo "mergekit column: $mergekit" >&2
else
    echo "mergekit-pytorch not found (MERGEKIT_PYTORCH): no mergekit column" >&2
    mergekit=
fi

. bench/common.sh
bench_setup soup-base-bench

measure() {
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s%N)
    "${prio[@]}" /usr/bin/time -f "%M %U %S" -o "$scratch/rss" "$@" >/dev/null
    t1=$(date +%s%N)
    local rss user sys
    read -r rss user sys < <(tail -1 "$scratch/rss")
    echo "$name $(( (t1 - t0) / 1000 )) $rss $(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')" >>"$results"
}

echo "| size | command | median s | best s | ratio (median) | median CPU s | peak RSS MiB |"
echo "|---|---|---:|---:|---:|---:|---:|"
for size in "${sizes[@]}"; do
    data="$scratch/$size"
    echo "generating 4 x $size MiB (f32) in $data" >&2
    "$SOUP_PYTHON" bench/gen_candidates.py "$data" "$size" 4 0.5 f32
    all=("$data"/candidate-*.safetensors)
    base=${all[0]}
    tunes=("${all[@]:1}")
    out="$data/out.safetensors"
    results="$scratch/results-$size"
    : >"$results"
    if [ -n "$mergekit" ]; then
        {
            echo "merge_method: ties"
            echo "base_model: $base"
            echo "dtype: float32"
            echo "models:"
            for f in "${tunes[@]}"; do
                echo "  - model: $f"
                echo "    parameters: {weight: 1.0, density: 0.5}"
            done
        } >"$data/mergekit.yml"
    fi
    for round in $(seq "$repeat"); do
        echo "size $size MiB: round $round of $repeat" >&2
        cat "${all[@]}" >/dev/null
        measure floor sh -c 'cat "$@" >/dev/null && cp "$1" "$0" && sync "$0"' "$out" "${all[@]}"
        rm -f "$out"
        measure ties "$SOUP" merge --quiet --base "$base" "${tunes[@]}" --method ties \
            --density 0.5 -o "$out"
        rm -f "$out"
        if [ -n "${SOUP_BASE:-}" ]; then
            measure ties-base "$SOUP_BASE" merge --quiet --base "$base" "${tunes[@]}" \
                --method ties --density 0.5 -o "$out"
            rm -f "$out"
        fi
        if [ -n "$mergekit" ]; then
            measure mergekit "$mergekit" "$data/mergekit.yml" "$data/mergekit-out" \
                --lazy-unpickle --quiet
            rm -rf "$data/mergekit-out"
        fi
    done
    "$SOUP_PYTHON" - "$results" "$size MiB" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, us, kib, cpu = line.split()
    rows.setdefault(name, []).append((int(us) / 1e6, int(kib) / 1024, float(cpu)))
med = {n: statistics.median(t for t, _, _ in v) for n, v in rows.items()}
for name in ["floor", "ties", "ties-base", "mergekit"]:
    if name not in rows:
        continue
    v = rows[name]
    cpu = statistics.median(c for _, _, c in v)
    print(f"| base + 3 x {sys.argv[2]} | {name} | {med[name]:.3f} | {min(t for t, _, _ in v):.3f} "
          f"| {med[name] / med['floor']:.2f}x floor | {cpu:.2f} | {max(r for _, r, _ in v):.0f} |")
PY
    rm -rf "$data"
done
