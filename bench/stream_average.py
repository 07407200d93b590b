#!/usr/bin/env python3
"""The plain Python reference for bench/merge_bench.sh: a streaming uniform
average of safetensors checkpoints with the safetensors package and numpy.

    stream_average.py OUT IN [IN ...]

Tensors are read one at a time from every input (safe_open maps the files),
summed in float32 and divided by the number of inputs; the result of each
tensor is kept, because safetensors' save_file writes a whole dict at once.
The output is fsynced, as soup's is.
"""
import os
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def main():
    out, inputs = sys.argv[1], sys.argv[2:]
    files = [safe_open(p, framework="np") for p in inputs]
    metadata = files[0].metadata() or {}
    result = {}
    for name in files[0].keys():
        first = files[0].get_tensor(name)
        acc = first.astype(np.float32, copy=True)
        for f in files[1:]:
            acc += f.get_tensor(name)
        acc /= np.float32(len(files))
        result[name] = acc.astype(first.dtype, copy=False)
    save_file(result, out, metadata=metadata)
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


if __name__ == "__main__":
    main()
