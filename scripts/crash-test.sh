#!/usr/bin/env bash
# Crash test of soup's writes: kills `soup merge`, `prune`, `edit` and
# `shard` with SIGKILL at random moments and checks, after every kill, what
# DESIGN.md promises (atomic writes, inputs never touched, temp files swept):
#
#   1. the output is either absent or complete and byte-equal to the output
#      of a clean run of the same command;
#   2. the inputs are unchanged (sha256 before and after);
#   3. the next run of the same command succeeds and leaves nothing in the
#      output folder but its output: no temp file of its own or of the
#      killed run (soup sweeps the temp files of dead processes).
#
#   scripts/crash-test.sh [KILLS]      (default 100; `--short` means 12)
#
# The operations take turns; each kill lands at a uniformly random moment
# between the start and 90 % of the command's clean run time (measured
# first), so most kills hit a running process. A command that finished
# before its kill counts as a run, not a kill; the script goes on until
# KILLS processes were really killed. Exit status 0 when every check held,
# 1 otherwise (each failure is printed on one line).
#
# Environment: SOUP (a built soup binary; default target/release/soup,
# built if missing), SOUP_PYTHON (Python with numpy, for the inputs),
# CRASH_MIB (size of each of the 3 inputs; default 64, 16 with --short),
# CRASH_SEED (random seed; default: the time), CRASH_DIR (a folder on the
# disk to test, default /var/tmp: the test works in a new folder inside it,
# deleted afterwards; what CRASH_DIR held before is left alone).
set -euo pipefail
cd "$(dirname "$0")/.."
kills=100
mib=${CRASH_MIB:-64}
if [ "${1:-}" = --short ]; then
    kills=12
    mib=${CRASH_MIB:-16}
elif [ -n "${1:-}" ]; then
    kills=$1
fi
seed=${CRASH_SEED:-$(date +%s)}
RANDOM=$seed

if [ -z "${SOUP:-}" ]; then
    SOUP=${CARGO_TARGET_DIR:-target}/release/soup
    [ -x "$SOUP" ] || cargo build --release --locked -p soup-cli >&2
fi
SOUP=$(realpath "$SOUP")
if [ -z "${SOUP_PYTHON:-}" ]; then
    eval "$(scripts/setup.sh --full)"
fi

# A fresh folder of its own, inside CRASH_DIR when given: only that folder
# is removed at the end, never what CRASH_DIR held before.
if [ -n "${CRASH_DIR:-}" ]; then
    mkdir -p "$CRASH_DIR"
    scratch=$(mktemp -d "$CRASH_DIR/soup-crash.XXXXXX")
else
    scratch=$(mktemp -d /var/tmp/soup-crash.XXXXXX)
fi
trap 'rm -rf "$scratch"' EXIT
in=$scratch/in
out=$scratch/out
ref=$scratch/ref
mkdir -p "$in" "$out" "$ref"

echo "crash test: $kills kills, 3 inputs of $mib MiB, seed $seed, in $scratch" >&2
"$SOUP_PYTHON" bench/gen_candidates.py "$in" "$mib" 3
inputs=("$in"/candidate-*.safetensors)
sums_before=$(sha256sum "${inputs[@]}")

# command_for OP DIR: sets `cmd` to the command of OP writing into DIR.
ops=(merge prune edit shard)
command_for() {
    local op=$1 dir=$2
    case $op in
    merge) cmd=("$SOUP" merge --quiet "${inputs[@]}" -o "$dir/merge.safetensors") ;;
    prune) cmd=("$SOUP" prune --quiet "${inputs[0]}" -o "$dir/prune.safetensors" --sparsity 0.9) ;;
    edit) cmd=("$SOUP" edit --quiet "${inputs[1]}" -o "$dir/edit.safetensors" --cast BF16 --set-meta crash=test) ;;
    shard) cmd=("$SOUP" shard --quiet "${inputs[2]}" -o "$dir/shard" --shard-size 8MiB) ;;
    esac
}
output_name() {
    case $1 in shard) echo shard ;; *) echo "$1.safetensors" ;; esac
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Clean reference runs, timed: the kill moments are drawn from their times.
declare -A clean_ms
for op in "${ops[@]}"; do
    command_for "$op" "$ref"
    t0=$(now_ms)
    "${cmd[@]}" >/dev/null
    clean_ms[$op]=$(($(now_ms) - t0))
    echo "clean $op: ${clean_ms[$op]} ms" >&2
done

failures=0
fail() {
    echo "FAIL ($op, kill $killed, after ${delay_ms} ms): $*"
    failures=$((failures + 1))
}
# same_output OP: whether $out holds the reference output of OP, byte for byte.
same_output() {
    local name
    name=$(output_name "$1")
    diff -r -q "$ref/$name" "$out/$name" >/dev/null 2>&1
}

declare -A kills_of absent complete finished
for op in "${ops[@]}"; do kills_of[$op]=0 absent[$op]=0 complete[$op]=0 finished[$op]=0; done
killed=0
runs=0
while [ "$killed" -lt "$kills" ]; do
    op=${ops[runs % 4]}
    runs=$((runs + 1))
    name=$(output_name "$op")
    delay_ms=$((RANDOM * (clean_ms[$op] * 9 / 10 + 1) / 32768))
    command_for "$op" "$out"
    "${cmd[@]}" >/dev/null 2>&1 &
    pid=$!
    sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    kill -KILL "$pid" 2>/dev/null || true
    status=0
    wait "$pid" 2>/dev/null || status=$?
    if [ "$status" = 137 ]; then
        killed=$((killed + 1))
        kills_of[$op]=$((kills_of[$op] + 1))
    elif [ "$status" = 0 ]; then
        finished[$op]=$((finished[$op] + 1))
    else
        fail "exit status $status, neither finished nor killed"
    fi

    # 1. absent, or complete and equal to the clean run's.
    if [ ! -e "$out/$name" ]; then
        [ "$status" != 137 ] || absent[$op]=$((absent[$op] + 1))
    elif same_output "$op"; then
        [ "$status" != 137 ] || complete[$op]=$((complete[$op] + 1))
    else
        fail "$name exists but differs from the clean run's output"
    fi
    # 2. inputs unchanged.
    if [ "$(sha256sum "${inputs[@]}")" != "$sums_before" ]; then
        fail "an input changed"
        sums_before=$(sha256sum "${inputs[@]}")
    fi
    # 3. the next run succeeds and leaves only its output in the folder.
    rm -rf "${out:?}/$name"
    if ! "${cmd[@]}" >/dev/null 2>"$scratch/stderr"; then
        fail "the next run failed: $(head -1 "$scratch/stderr")"
    elif ! same_output "$op"; then
        fail "the next run's output differs from the clean run's"
    fi
    left=$(ls -A "$out" | grep -v -x -F "$name" || true)
    if [ -n "$left" ]; then
        fail "left in the output folder after the next run: $(echo "$left" | tr '\n' ' ')($(du -sh "$out" | cut -f1) in all)"
        # Start the next kill from a clean folder, so one leftover is
        # reported once.
        find "$out" -mindepth 1 -delete
    fi
    rm -rf "${out:?}/$name"
done

echo "| command | clean run ms | kills | output absent | output complete | finished before the kill |"
echo "|---|---:|---:|---:|---:|---:|"
for op in "${ops[@]}"; do
    echo "| soup $op | ${clean_ms[$op]} | ${kills_of[$op]} | ${absent[$op]} | ${complete[$op]} | ${finished[$op]} |"
done
echo "crash test: $killed kills in $runs runs, $failures failed checks (seed $seed)"
[ "$failures" = 0 ]
