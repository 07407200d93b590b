#!/usr/bin/env bash
# Global magnitude pruning of a 1 GiB F32 checkpoint, side by side with
#   - the floor: `cat` of the input plus an fsynced copy of it, and
#   - a numpy implementation (bench/prune_numpy.py) of the same rule.
# Reports wall time and CPU time, user + system (medians of REPS runs), their ratios to the floor and peak
# RSS (/usr/bin/time -v). The input stays in the page cache for every run
# (the same for all three). Checks that soup and numpy write the same values.
#
# usage: bench/prune_bench.sh [--nm N:M] [--dtype f32|bf16|f16] [GIB=1] [REPS=3]
#        (env WORK=folder on disk)
#
# With --nm (for example 2:4), soup prunes to that N:M pattern instead of
# --sparsity 0.9, and the numpy and SOUP_BASE columns are left out; the
# output is checked with `soup check-mask --nm` where that exists.
#
# With --dtype, the input is instead one candidate of bench/gen_candidates.py
# (GIB may be a fraction: GIB GiB of F32 values with half of each weight
# zero, stored as DTYPE, so BF16 and F16 files are half that size) pruned at
# --sparsity 0.8, and the numpy column is left out (numpy has no BF16).
# SOUP_BASE (a soup binary of another build) adds a soup-base row, checked
# to write the same values; SOUP (a built soup binary) and SOUP_PYTHON skip
# the build and the set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
dtype=
nm=
if [ "${1:-}" = --nm ]; then
    nm=${2:?--nm needs a pattern such as 2:4}
    shift 2
fi
if [ "${1:-}" = --dtype ]; then
    dtype=${2:?--dtype needs f32, bf16 or f16}
    shift 2
    case $dtype in
    f32 | bf16 | f16) ;;
    *)
        echo "prune_bench.sh: unknown dtype $dtype (f32, bf16, f16)" >&2
        exit 2
        ;;
    esac
fi
gib=${1:-1}
reps=${2:-3}
sparsity=0.9
[ -z "$dtype" ] || sparsity=0.8
if [ -z "${SOUP_PYTHON:-}" ]; then
    eval "$(scripts/setup.sh --full)"
fi
py=$SOUP_PYTHON
soup=${SOUP:-}
if [ -z "$soup" ]; then
    target=${CARGO_TARGET_DIR:-target}
    cargo build --release --bins -p soup-cli >&2
    soup=$target/release/soup
fi
# Priority, scratch folder and GNU time: see bench/common.sh.
. bench/common.sh
BENCH_DIR=${WORK:-${BENCH_DIR:-}} bench_setup soup-prune-bench
work=$scratch
in=$work/in.safetensors
out=$work/out.safetensors
if [ -z "$dtype" ]; then
    echo "generating a $gib GiB F32 checkpoint in $work" >&2
    "$py" bench/prune_numpy.py make "$in" "$gib"
else
    echo "generating a $gib GiB (as F32) $dtype candidate in $work" >&2
    "$py" bench/gen_candidates.py "$work/gen" "$(awk -v g="$gib" 'BEGIN {print g * 1024}')" 1 0.5 "$dtype"
    mv "$work/gen/candidate-0.safetensors" "$in"
fi
cat "$in" >/dev/null

# run NAME CMD...: REPS timed runs; prints "NAME median_seconds max_rss_kib
# median_cpu_seconds wall_seconds...", CPU time being user + system.
run() {
    local name=$1
    shift
    local times=() cpus=() rss=0
    for _ in $(seq "$reps"); do
        rm -rf "$out" "$work/copy"
        sync
        /usr/bin/time -v -o "$work/time.txt" "${prio[@]}" "$@" >/dev/null
        local wall r
        wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; print s}' "$work/time.txt")
        r=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
        times+=("$wall")
        cpus+=("$(awk -F': ' '/User time|System time/ {s += $2} END {print s}' "$work/time.txt")")
        [ "$r" -gt "$rss" ] && rss=$r
    done
    local median
    median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    local cpu
    cpu=$(printf '%s\n' "${cpus[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "$name $median $rss $cpu ${times[*]}"
}

floor=$(run floor sh -c "cat '$in' >/dev/null && dd if='$in' of='$work/copy' bs=16M conv=fsync status=none")
how=(--sparsity "$sparsity")
[ -z "$nm" ] || how=(--nm "$nm")
soup_row=$(run soup "$soup" prune "$in" -o "$out" "${how[@]}" --quiet)
rows=("$floor" "$soup_row")
if [ -n "$nm" ]; then
    rm -f "$out"
    "$soup" prune "$in" -o "$out" "${how[@]}" --quiet >/dev/null
    zeros=$("$soup" inspect "$out" --json | "$py" -c 'import json,sys; r=json.load(sys.stdin); print(sum(t.get("zeros") or 0 for t in r["tensors"] if t["name"].endswith("weight")))')
    echo "--nm $nm output: $zeros zeros in the weights" >&2
elif [ -n "${SOUP_BASE:-}" ]; then
    rows+=("$(run soup-base "$SOUP_BASE" prune "$in" -o "$out" --sparsity $sparsity --quiet)")
    rm -f "$out" "$work/soup.safetensors"
    "$soup" prune "$in" -o "$work/soup.safetensors" --sparsity $sparsity --quiet >/dev/null
    "$SOUP_BASE" prune "$in" -o "$out" --sparsity $sparsity --quiet >/dev/null
    "$soup" diff "$work/soup.safetensors" "$out" >/dev/null || {
        echo "soup and SOUP_BASE disagree" >&2
        exit 1
    }
fi
if [ -z "$dtype" ] && [ -z "$nm" ]; then
    rm -f "$work/soup.safetensors"
    "$soup" prune "$in" -o "$work/soup.safetensors" --sparsity $sparsity --quiet >/dev/null
    rows+=("$(run numpy "$py" bench/prune_numpy.py prune "$in" "$out" $sparsity)")
    "$soup" diff "$work/soup.safetensors" "$out" >/dev/null || {
        echo "soup and numpy disagree" >&2
        exit 1
    }
fi

floor_s=$(echo "$floor" | awk '{print $2}')
floor_cpu=$(echo "$floor" | awk '{print $4}')
echo "| what | wall s (median of $reps) | x floor | CPU s (median) | CPU x floor | peak RSS MiB | runs |"
echo "|---|---:|---:|---:|---:|---:|---|"
for row in "${rows[@]}"; do
    echo "$row" | awk -v f="$floor_s" -v fc="$floor_cpu" '{runs=""; for(i=5;i<=NF;i++) runs=runs (i>5?" ":"") $i; printf "| %s | %.2f | %.2f | %.2f | %.2f | %.0f | %s |\n", $1, $2, $2/f, $4, (fc > 0 ? $4/fc : 0), $3/1024, runs}'
done
echo
if [ -n "$nm" ]; then
    echo "input: $gib GiB F32 ($((gib * 16)) matrices 4096x4096 + biases), --nm $nm"
elif [ -z "$dtype" ]; then
    echo "input: $gib GiB F32 ($((gib * 16)) matrices 4096x4096 + biases), --sparsity $sparsity --scope global; soup and numpy outputs equal (soup diff)"
else
    echo "input: one bench/gen_candidates.py candidate of $gib GiB as F32, stored as $dtype ($(du -m "$in" | cut -f1) MiB, half of each weight zero), --sparsity $sparsity --scope global"
fi
echo "priority: ${prio[*]:-none}"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
