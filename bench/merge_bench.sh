#!/usr/bin/env bash
# Benchmark of `soup merge` and `soup check-mask` against the floor of the
# hardware, a plain Python streaming average and, where it is installed,
# mergekit's linear merge. Targets: merge <= 1.15x floor, check-mask <=
# 0.85x cat, peak RSS <= 256 MiB.
#
#   bench/merge_bench.sh [--dtype f32|bf16|f16] [SIZE_MIB ...]   (default: f32, 256 1024)
#
# For each size it generates m = 5 candidates of SIZE_MIB MiB of F32 sharing
# one mask (bench/gen_candidates.py; not timed), stored as DTYPE (BF16 and
# F16 hold the same elements in half the bytes), then measures side by side, in
# rounds (each round runs every command once, after one `cat` pass that warms
# the page cache the same way for all):
#   floor       cat of all inputs to /dev/null, then cp of one input, fsynced
#   cat         cat of all inputs to /dev/null
#   merge       soup merge IN... -o OUT (output fsynced, as soup always does)
#   merge-base  the same with the SOUP_BASE binary (only when SOUP_BASE is
#               set: an older build, to compare two versions side by side)
#   check-mask  soup check-mask IN...
#   check-mask-base  the same with the SOUP_BASE binary (when set)
#   python      bench/stream_average.py OUT IN... (safetensors + numpy; F32
#               only, numpy has no BF16)
#   mergekit    mergekit-pytorch CONFIG OUT_DIR, a linear merge with equal
#               weights in float32 (only when mergekit is installed: the
#               MERGEKIT_PYTORCH executable, or mergekit-pytorch beside
#               SOUP_PYTHON; its output is not fsynced)
# and prints a Markdown table: median and best wall time of REPEAT rounds,
# the median as a ratio (merge, python and mergekit to the floor,
# check-mask to cat), the median CPU time (user + system, all threads) and
# its ratio to the same reference, the peak RSS (/usr/bin/time -v's maximum resident set
# size), and whether soup met its target.
#
# Environment: REPEAT (default 5), SOUP_BASE (see merge-base), BENCH_NICE (see below), BENCH_DIR (scratch folder on the disk to
# measure; default a new folder in /var/tmp, deleted afterwards), SOUP (a
# built soup binary; default: cargo build --release), SOUP_PYTHON (Python
# with numpy and safetensors; default: from scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
dtype=f32
if [ "${1:-}" = --dtype ]; then
    dtype=${2:?--dtype needs f32, bf16 or f16}
    shift 2
fi
case $dtype in
f32 | bf16 | f16) ;;
*)
    echo "merge_bench.sh: unknown dtype $dtype (f32, bf16, f16)" >&2
    exit 2
    ;;
esac
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(256 1024)
repeat=${REPEAT:-5}

if [ -z "${SOUP_PYTHON:-}" ]; then
    eval "$(scripts/setup.sh --full)"
fi
if [ -z "${SOUP:-}" ]; then
    cargo build --release --locked -p soup-cli >&2
    SOUP="${CARGO_TARGET_DIR:-$repo/target}/release/soup"
fi

mergekit=${MERGEKIT_PYTORCH:-$(dirname "$SOUP_PYTHON")/mergekit-pytorch}
if [ "$dtype" != f32 ]; then
    mergekit=
elif [ -x "$mergekit" ]; then
    echo "mergekit column: $mergekit" >&2
else
    echo "mergekit-pytorch not found (MERGEKIT_PYTORCH): no mergekit column" >&2
    mergekit=
fi

# Priority, scratch folder and GNU time: see bench/common.sh.
. bench/common.sh
bench_setup soup-bench

# measure NAME CMD...: runs CMD under /usr/bin/time, appends
# "NAME microseconds peak_kib cpu_seconds" (user + system) to $results.
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

echo "| size | command | median s | best s | ratio (median) | median CPU s | CPU ratio | peak RSS MiB | target |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
for size in "${sizes[@]}"; do
    data="$scratch/$size"
    echo "generating 5 x $size MiB ($dtype) in $data" >&2
    "$SOUP_PYTHON" bench/gen_candidates.py "$data" "$size" 5 0.5 "$dtype"
    inputs=("$data"/candidate-*.safetensors)
    out="$data/out.safetensors"
    results="$scratch/results-$size"
    : >"$results"
    if [ -n "$mergekit" ]; then
        {
            echo "merge_method: linear"
            echo "dtype: float32"
            echo "models:"
            for f in "${inputs[@]}"; do
                echo "  - model: $f"
                echo "    parameters: {weight: 1.0}"
            done
        } >"$data/mergekit.yml"
    fi
    for round in $(seq "$repeat"); do
        echo "size $size MiB: round $round of $repeat" >&2
        cat "${inputs[@]}" >/dev/null
        measure floor sh -c 'cat "$@" >/dev/null && cp "$1" "$0" && sync "$0"' "$out" "${inputs[@]}"
        rm -f "$out"
        measure cat cat "${inputs[@]}"
        measure merge "$SOUP" merge --quiet "${inputs[@]}" -o "$out"
        rm -f "$out"
        if [ -n "${SOUP_BASE:-}" ]; then
            measure merge-base "$SOUP_BASE" merge --quiet "${inputs[@]}" -o "$out"
            rm -f "$out"
        fi
        measure check-mask "$SOUP" check-mask --quiet "${inputs[@]}"
        if [ -n "${SOUP_BASE:-}" ]; then
            measure check-mask-base "$SOUP_BASE" check-mask --quiet "${inputs[@]}"
        fi
        if [ "$dtype" = f32 ]; then
            measure python "$SOUP_PYTHON" bench/stream_average.py "$out" "${inputs[@]}"
            rm -f "$out"
        fi
        if [ -n "$mergekit" ]; then
            measure mergekit "$mergekit" "$data/mergekit.yml" "$data/mergekit-out"
            rm -rf "$data/mergekit-out"
        fi
    done
    "$SOUP_PYTHON" - "$results" "$size MiB $dtype" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, us, kib, cpu = line.split()
    rows.setdefault(name, []).append((int(us) / 1e6, int(kib) / 1024, float(cpu)))
med = {n: statistics.median(t for t, _, _ in v) for n, v in rows.items()}
cpu = {n: statistics.median(c for _, _, c in v) for n, v in rows.items()}
base = {"floor": "floor", "cat": "floor", "merge": "floor", "merge-base": "floor", "python": "floor",
        "mergekit": "floor", "check-mask": "cat", "check-mask-base": "cat"}
# soup's targets: (ratio limit, peak RSS limit in MiB).
targets = {"merge": (1.15, 256), "check-mask": (0.85, 256)}
for name in ["floor", "cat", "merge", "merge-base", "check-mask", "check-mask-base", "python", "mergekit"]:
    if name not in rows:
        continue
    v = rows[name]
    ratio = med[name] / med[base[name]]
    rss = max(r for _, r, _ in v)
    cpu_ratio = f"{cpu[name] / cpu[base[name]]:.2f}x" if cpu[base[name]] > 0 else "-"
    target = ""
    if name in targets:
        limit, rss_limit = targets[name]
        met = ratio <= limit and rss <= rss_limit
        target = f"<= {limit}x, <= {rss_limit} MiB: {'met' if met else 'MISSED'}"
    print(f"| 5 x {sys.argv[2]} | {name} | {med[name]:.3f} | {min(t for t, _, _ in v):.3f} "
          f"| {ratio:.2f}x {base[name]} | {cpu[name]:.2f} | {cpu_ratio} | {rss:.0f} | {target} |")
PY
    rm -rf "$data"
done
