#!/usr/bin/env bash
# The main job: the sparse-model-soup pipeline on Fashion-MNIST with the small
# `cnn`, three prune-retrain phases to 90% sparsity, three candidates per
# phase, and the IMP baseline; prints the results table at the end. Every
# model is also evaluated under the 12 grey-image corruptions at severity 3,
# on the first 1,000 test images (--ood-limit) to keep the demo short.
# Installs what it needs on first use (scripts/setup.sh: the CPU-only libtorch
# unless SOUP_TORCH=full, which a GPU needs). Rerunning resumes
# the run in runs/demo; extra arguments are passed to `trainer sms`.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
cargo build --release --locked -p trainer -p soup-cli >&2
exec target/release/trainer sms \
    --out "${SOUP_DEMO_RUN:-runs/demo}" \
    --data fashion-mnist --model cnn \
    --pretrain-epochs 2 --sparsity 0.9 --phases 3 --candidates 3 \
    --epochs-per-phase 0.3 --batch-size 128 --lr 0.1 \
    --baselines imp \
    --ood-limit 1000 \
    "$@"
