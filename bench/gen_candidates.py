#!/usr/bin/env python3
"""Writes m candidate checkpoints that share one sparsity mask, for
bench/merge_bench.sh.

    gen_candidates.py OUT_DIR SIZE_MIB [M] [SPARSITY]

Each candidate is about SIZE_MIB MiB of F32 in a transformer-like layout:
per layer, a pruned 1024x4096 weight (16 MiB) and an unpruned 4096-element
bias, until the size is reached. The parent's smallest-magnitude fraction
SPARSITY (default 0.5) of every weight is zero; candidate k is the parent
times (1 + 0.01 * noise_k), so every candidate has exactly the parent's mask.
Tensors are generated one at a time, so memory stays small whatever the
size. Generation is not part of what the benchmark measures.
"""
import json
import os
import struct
import sys

import numpy as np

ROWS, COLS = 1024, 4096


def layout(size_bytes):
    tensors, offset, layer = [], 0, 0
    while offset < size_bytes:
        for name, shape in ((f"layers.{layer}.weight", [ROWS, COLS]), (f"layers.{layer}.bias", [COLS])):
            n = int(np.prod(shape)) * 4
            tensors.append((name, shape, offset, offset + n))
            offset += n
        layer += 1
    return tensors


def header(tensors):
    entries = {"__metadata__": {"format": "pt"}}
    for name, shape, start, end in tensors:
        entries[name] = {"dtype": "F32", "shape": shape, "data_offsets": [start, end]}
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text


def main():
    out_dir = sys.argv[1]
    size = int(float(sys.argv[2]) * (1 << 20))
    m = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    sparsity = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
    os.makedirs(out_dir, exist_ok=True)
    tensors = layout(size)
    head = header(tensors)
    rng = np.random.default_rng(2024)
    files = [open(os.path.join(out_dir, f"candidate-{k}.safetensors"), "wb") for k in range(m)]
    for f in files:
        f.write(head)
    for name, shape, start, end in tensors:
        n = (end - start) // 4
        parent = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
        if name.endswith("weight"):
            cut = np.quantile(np.abs(parent[: 1 << 16]), sparsity)
            parent[np.abs(parent) < cut] = 0.0
        noise = rng.standard_normal(n, dtype=np.float32) * np.float32(0.01)
        for k, f in enumerate(files):
            # A different slice of one noise vector per candidate: cheap and
            # enough to make the candidates differ.
            f.write((parent * (1 + np.roll(noise, 977 * k))).tobytes())
    for f in files:
        f.close()


if __name__ == "__main__":
    main()
