#!/usr/bin/env python3
"""Writes m candidate checkpoints that share one sparsity mask, for
bench/merge_bench.sh.

    gen_candidates.py OUT_DIR SIZE_MIB [M] [SPARSITY] [DTYPE]

Each candidate is about SIZE_MIB MiB of F32 in a transformer-like layout:
per layer, a pruned 1024x4096 weight (16 MiB) and an unpruned 4096-element
bias, until the size is reached. The parent's smallest-magnitude fraction
SPARSITY (default 0.5) of every weight is zero; candidate k is the parent
times (1 + 0.01 * noise_k), so every candidate has exactly the parent's mask.
Tensors are generated one at a time, so memory stays small whatever the
size. Generation is not part of what the benchmark measures.

DTYPE (f32, the default, bf16 or f16) is the stored type: the same values
rounded to nearest even, so a BF16 or F16 candidate holds the same elements
(and the same mask) in half the bytes of SIZE_MIB.
"""
import json
import os
import struct
import sys

import numpy as np

ROWS, COLS = 1024, 4096
DTYPE = "f32"
ITEM = 4


def encode(values):
    """The bytes of float32 `values` in DTYPE (round to nearest even)."""
    if DTYPE == "f32":
        return values.tobytes()
    if DTYPE == "f16":
        return values.astype(np.float16).tobytes()
    bits = values.view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def layout(size_bytes):
    tensors, offset, layer = [], 0, 0
    while offset < size_bytes:
        for name, shape in ((f"layers.{layer}.weight", [ROWS, COLS]), (f"layers.{layer}.bias", [COLS])):
            n = int(np.prod(shape)) * ITEM
            tensors.append((name, shape, offset, offset + n))
            offset += n
        layer += 1
    return tensors


def header(tensors):
    entries = {"__metadata__": {"format": "pt"}}
    for name, shape, start, end in tensors:
        entries[name] = {"dtype": DTYPE.upper(), "shape": shape, "data_offsets": [start, end]}
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text


def main():
    global DTYPE, ITEM
    out_dir = sys.argv[1]
    DTYPE = sys.argv[5].lower() if len(sys.argv) > 5 else "f32"
    if DTYPE not in ("f32", "bf16", "f16"):
        sys.exit(f"gen_candidates.py: unknown dtype {DTYPE} (f32, bf16, f16)")
    ITEM = 4 if DTYPE == "f32" else 2
    # SIZE_MIB counts F32 bytes: the element count is the same in every dtype.
    size = int(float(sys.argv[2]) * (1 << 20)) * ITEM // 4
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
        n = (end - start) // ITEM
        parent = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
        if name.endswith("weight"):
            cut = np.quantile(np.abs(parent[: 1 << 16]), sparsity)
            parent[np.abs(parent) < cut] = 0.0
        noise = rng.standard_normal(n, dtype=np.float32) * np.float32(0.01)
        for k, f in enumerate(files):
            # A different slice of one noise vector per candidate: cheap and
            # enough to make the candidates differ.
            f.write(encode(parent * (1 + np.roll(noise, 977 * k))))
    for f in files:
        f.close()


if __name__ == "__main__":
    main()
