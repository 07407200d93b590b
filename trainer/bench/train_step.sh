#!/usr/bin/env bash
# Time per training step (forward, backward, SGD with momentum 0.9 and weight
# decay 5e-4) of the trainer against PyTorch eager, same model, batch and
# threads, on random data, in one run. Each run reports its median step; the
# runs alternate (PyTorch, PyTorch channels-last, trainer) for several rounds
# and the table reports the best round of each, which is the least disturbed
# by background load on a shared machine.
#
# usage: trainer/bench/train_step.sh [ROUNDS] [THREADS]   (defaults: 5, 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
threads=${2:-2}
eval "$(scripts/setup.sh --full)"
cargo build -q --release -p trainer
bin="${CARGO_TARGET_DIR:-target}/release/trainer"
py=trainer/python/bench_step.py
results=$(mktemp)
trap 'rm -f "$results"' EXIT
# model, input, batch, timed steps
cases=("resnet20 3x32x32 128 10" "cnn 1x28x28 128 30")
for ((r = 0; r < rounds; r++)); do
    for c in "${cases[@]}"; do
        read -r model input batch steps <<<"$c"
        common=(--model "$model" --input "$input" --batch-size "$batch" --threads "$threads" --steps "$steps")
        "$SOUP_PYTHON" "$py" "${common[@]}" >>"$results"
        "$SOUP_PYTHON" "$py" "${common[@]}" --channels-last >>"$results"
        "$bin" bench "${common[@]}" --device cpu >>"$results"
    done
done
"$SOUP_PYTHON" - "$results" "$rounds" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rounds = sys.argv[2]
by = {}
for r in rows:
    by.setdefault((r["model"], r["batch_size"], r["threads"]), {}).setdefault(r["impl"], []).append(r["ms_per_step"])
print(f"| model | batch | threads | PyTorch eager (ms) | PyTorch eager, channels-last (ms) | trainer (ms) | trainer / PyTorch | trainer / PyTorch channels-last |")
print("|---|---|---|---|---|---|---|---|")
for (model, batch, threads), d in by.items():
    pt, cl, tr = (min(d[k]) for k in ("pytorch", "pytorch-channels-last", "trainer"))
    print(f"| {model} | {batch} | {threads} | {pt:.1f} | {cl:.1f} | {tr:.1f} | {tr / pt:.2f} | {tr / cl:.2f} |")
print(f"\nMedian step of each run, best of {rounds} alternating rounds.")
PY
