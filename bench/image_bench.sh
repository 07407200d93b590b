#!/usr/bin/env bash
# Image-folder input pipeline: the trainer's (decode + transform + batch
# into a tensor, on worker threads) against torchvision's ImageFolder +
# DataLoader (PIL, worker processes), same folder, transforms, batch size
# and number of workers, in one run. Results go in BENCHMARKS.md.
#
#   bench/image_bench.sh [ROUNDS] [WORKERS] [IMAGES]     # defaults 5 2 2000
#
# Needs SOUP_PYTHON (torch + torchvision + PIL; scripts/setup.sh --full sets
# it) and LIBTORCH as for any trainer build. Writes a synthetic folder of
# IMAGES JPEGs of about 500x375 (10 classes) in a scratch folder, then per
# transform (train: RandomResizedCrop(224) + flip; eval: Resize(256) +
# CenterCrop(224)) runs each side for ROUNDS passes over all files and
# prints the median images/s and peak RSS. Also prints single-thread decode
# times of the JPEG decoder candidates (trainer/examples/decode_bench.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
rounds=${1:-5}
workers=${2:-2}
images=${3:-2000}
py=${SOUP_PYTHON:?set SOUP_PYTHON to a Python with torch and torchvision}
bench_setup image-bench

cargo build --release -q -p trainer --example image_pipeline --example decode_bench
target=${CARGO_TARGET_DIR:-target}/release/examples
folder="$scratch/folder"
echo "writing $images JPEGs to $folder" >&2
"$py" bench/gen_image_folder.py "$folder" --classes 10 --train "$images" --val 10 \
    --width 500 --height 375
du -sh "$folder/train" >&2
# Both sides read from the page cache: one warm-up pass.
cat "$folder"/train/*/* >/dev/null

echo "## decoders, one thread, ms per image (first class folder)"
"${prio[@]}" "$target/decode_bench" "$folder/train/class0" --rounds 3

for mode in train eval; do
    flag=()
    [ "$mode" = eval ] && flag=(--eval)
    echo "## $mode transform, $workers workers, batch 64, 224x224, $rounds rounds"
    "${prio[@]}" /usr/bin/time -f "trainer peak RSS %M KiB" "$target/image_pipeline" \
        "$folder/train" --workers "$workers" --batch-size 64 --image-size 224 \
        --rounds "$rounds" "${flag[@]}"
    "${prio[@]}" /usr/bin/time -f "torchvision main-process peak RSS %M KiB" "$py" \
        bench/image_bench_torch.py "$folder/train" --workers "$workers" --batch-size 64 \
        --image-size 224 --rounds "$rounds" "${flag[@]}"
done
