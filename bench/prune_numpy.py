"""numpy reference for the pruning benchmark (bench/prune_bench.sh).

usage:
  prune_numpy.py make OUT GIB        write a GIB GiB F32 checkpoint (16 weight
                                     matrices per GiB plus small biases)
  prune_numpy.py prune IN OUT S      global magnitude pruning of the weights,
                                     exactly as `soup prune --scope global`:
                                     round(S*n) smallest |w| removed, ties in
                                     (storage order, index) order; fsynced

The prune is the straightforward in-memory implementation a Python user
would write: load everything, partition the concatenated magnitudes, mask.
"""
import json
import os
import struct
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def make(out, gib):
    rows = 4096
    count = 16 * gib
    rng = np.random.default_rng(0)
    layout, offset = {}, 0
    names = []
    for i in range(count):
        for name, shape in ((f"layer{i:03d}.weight", [rows, rows]), (f"layer{i:03d}.bias", [rows])):
            size = 4 * int(np.prod(shape))
            layout[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
            names.append((name, shape))
    layout["__metadata__"] = {"format": "pt"}
    header = json.dumps(layout).encode()
    header += b" " * (-(8 + len(header)) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for name, shape in names:
            data = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            f.write(data.tobytes())
        f.flush()
        os.fsync(f.fileno())


def storage_order(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return sorted(header, key=lambda k: header[k]["data_offsets"][0])


def prune(src, dst, s):
    tensors = load_file(src)
    order = storage_order(src)
    names = [n for n in order if n.endswith("weight") and tensors[n].ndim >= 2]
    mags = np.concatenate([np.abs(tensors[n]).ravel() for n in names])
    k = int(round(s * mags.size))
    if k > 0:
        threshold = np.partition(mags, k - 1)[k - 1]
        ties = k - int(np.count_nonzero(mags < threshold))
        del mags
        for n in names:
            w = tensors[n].reshape(-1)
            a = np.abs(w)
            remove = a < threshold
            if ties > 0:
                equal = np.flatnonzero(a == threshold)[:ties]
                remove[equal] = True
                ties -= equal.size
            w[remove & (w != 0)] = 0.0
    save_file(tensors, dst, metadata={"format": "pt"})
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        prune(sys.argv[2], sys.argv[3], float(sys.argv[4]))
