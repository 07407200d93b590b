#!/usr/bin/env bash
# The study of README.md ("A longer study: does the soup help once
# candidates differ?"):
# `cnn` on Fashion-MNIST with crop-and-flip augmentation, a dense parent
# trained to convergence (30 epochs, cosine), a sweep of one-shot pruning
# + 1 epoch of retraining at 80/90/95/98 %, then at the chosen sparsity
# `trainer sms` (3 candidates x 4 epochs, uniform and greedy soups,
# baselines imp, imp-long, imp-swa averaging 5 iterates per epoch over
# the last half of each retraining, reprune; 3 repeats sharing the dense
# parent) and `trainer pdt --method gmp` (5 epochs: plain, +sms, -long;
# 2 repeats). Every process uses one thread; the stages run one after
# another, the runs inside a stage side by side on the cores. Rerunning
# resumes: each run skips the steps it has done. (`--swa-every 84` is a
# fifth of an epoch: Fashion-MNIST's 54,000 training images in batches of
# 128 make 422 iterations.)
#
#   scripts/study.sh [STAGE...]    stages: dense sweep sms greedy pdt
#                                  (default: all, in that order)
#
# OUT (default runs/study) holds the runs, TRAINER the binary (default
# target/release/trainer, built here), SPARSITY the study's sparsity
# (default 0.95). Wall and CPU times of each stage go to OUT/times.txt.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/.."
OUT=${OUT:-runs/study}
S=${SPARSITY:-0.95}
if [ -z "${TRAINER:-}" ]; then
    eval "$(scripts/setup.sh)"
    cargo build --release --locked -p trainer >&2
    TRAINER=target/release/trainer
fi
mkdir -p "$OUT"
COMMON=(--data fashion-mnist --model cnn --augment crop-flip --threads 1)
FROM=(--from "$OUT/dense/final.safetensors" --pretrain-epochs 30 --pretrain-schedule cosine)

# Runs one stage in a child of this script under /usr/bin/time, which
# counts the CPU time of every process the stage starts: its wall, user and
# system seconds are appended to OUT/times.txt.
timed() {
    /usr/bin/time -a -o "$OUT/times.txt" -f "$1: wall %e s, user %U s, system %S s" \
        env TRAINER="$TRAINER" OUT="$OUT" SPARSITY="$S" "$SELF" --stage "$1"
}

dense() {
    if [ ! -f "$OUT/dense/final.safetensors" ]; then
        local resume=()
        [ -f "$OUT/dense/config.toml" ] && resume=(--resume)
        "$TRAINER" train --out "$OUT/dense" "${COMMON[@]}" --epochs 30 --schedule cosine \
            --seed 0 "${resume[@]}" >"$OUT/dense.txt"
    fi
}

sweep_one() {
    "$TRAINER" sms --out "$OUT/sweep/s$1" "${COMMON[@]}" "${FROM[@]}" \
        --phases 1 --sparsity "0.$1" --candidates 1 --epochs-per-phase 1 \
        --corruptions none --quiet >"$OUT/sweep/s$1.txt"
}

# Waits for every background job, failing if one failed.
wait_all() {
    local pid failed=0
    for pid in $(jobs -p); do
        wait "$pid" || failed=1
    done
    return $failed
}

sweep() {
    mkdir -p "$OUT/sweep"
    sweep_one 80 &
    sweep_one 90 &
    wait_all
    sweep_one 95 &
    sweep_one 98 &
    wait_all
}

SMS=(--phases 1 --sparsity "$S" --candidates 3 --epochs-per-phase 4
    --baselines imp,imp-long,imp-swa,reprune --imp-swa-from 0.5 --swa-every 84 --ood-limit 1000
    --repeats 3 --repeat-jobs 3)

sms() {
    "$TRAINER" sms --out "$OUT/sms-uniform" "${COMMON[@]}" "${FROM[@]}" "${SMS[@]}" \
        --soup uniform --quiet >"$OUT/sms-uniform.txt"
}

# The greedy soup of the same candidates: a run whose configuration differs
# only in --soup, seeded with hard links to the uniform run's dense parent,
# pruned parents, candidates and baselines (with one phase none of them
# depends on the soup), so that it adds only the greedy soup and its report.
greedy() {
    local r
    [ -f "$OUT/sms-uniform/summary.json" ] || {
        echo "$OUT/sms-uniform has no summary.json: run the sms stage first" >&2
        exit 2
    }
    for r in 0 1 2; do
        local from="$OUT/sms-uniform/repeat-$r" to="$OUT/sms-greedy/repeat-$r"
        mkdir -p "$to/phase-1"
        [ -d "$to/dense" ] || cp -al "$from/dense" "$to/dense"
        [ -d "$to/baselines" ] || cp -al "$from/baselines" "$to/baselines"
        for f in "$from"/phase-1/{parent.safetensors,prune.json,candidate-*}; do
            [ -e "$to/phase-1/${f##*/}" ] || ln "$f" "$to/phase-1/"
        done
    done
    "$TRAINER" sms --out "$OUT/sms-greedy" "${COMMON[@]}" "${FROM[@]}" "${SMS[@]}" \
        --soup greedy --quiet >"$OUT/sms-greedy.txt"
}

PDT=(--method gmp --sparsity "$S" --epochs 5 --candidates 3 --baselines plain,long
    --ood-limit 1000 --repeats 2)

# The repeats of the pdt study run side by side: each repeat's steps, as
# `--plan` prints them, in its own shell; the last command finds every step
# done and writes the summary.
pdt() {
    "$TRAINER" pdt --out "$OUT/pdt-gmp" "${COMMON[@]}" "${PDT[@]}" --quiet --plan >"$OUT/pdt-plan.txt"
    local r
    for r in 0 1; do
        grep -F "/repeat-$r --step" "$OUT/pdt-plan.txt" | sed "s|^[^ ]*|$TRAINER|" |
            sed 's/$/ --threads 1 --quiet/' | bash -e &
    done
    wait_all
    "$TRAINER" pdt --out "$OUT/pdt-gmp" "${COMMON[@]}" "${PDT[@]}" --quiet >"$OUT/pdt-gmp.txt"
}

if [ "${1:-}" = --stage ]; then
    "$2"
    exit
fi
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(dense sweep sms greedy pdt)
for s in "${stages[@]}"; do
    case $s in
    dense | sweep | sms | greedy | pdt) timed "$s" ;;
    *)
        echo "unknown stage $s (dense, sweep, sms, greedy, pdt)" >&2
        exit 2
        ;;
    esac
done
