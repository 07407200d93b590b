"""A scripted evaluator for the greedy-soup tests (standard library only).

usage: score.py REFERENCE CHECKPOINT [LOG]

Prints a log line, then the score of CHECKPOINT on its last line: minus the
L2 distance of its F32 tensors to REFERENCE's, so checkpoints closer to the
reference score higher. Appends CHECKPOINT's file name to LOG when given, so
tests can count evaluations.
"""
import json
import math
import os
import struct
import sys
from array import array


def tensors(path):
    files = [path]
    if os.path.isdir(path):
        with open(os.path.join(path, "model.safetensors.index.json")) as f:
            files = sorted({os.path.join(path, v) for v in json.load(f)["weight_map"].values()})
    out = {}
    for file in files:
        with open(file, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            data = f.read()
        for name, info in header.items():
            if name == "__metadata__" or info["dtype"] != "F32":
                continue
            a, b = info["data_offsets"]
            values = array("f")
            values.frombytes(data[a:b])
            if sys.byteorder == "big":
                values.byteswap()
            out[name] = values
    return out


reference, checkpoint = tensors(sys.argv[1]), tensors(sys.argv[2])
if len(sys.argv) > 3:
    with open(sys.argv[3], "a") as log:
        log.write(os.path.basename(sys.argv[2]) + "\n")
distance = math.sqrt(
    sum((x - y) ** 2 for name, ref in reference.items() for x, y in zip(checkpoint[name], ref))
)
print(f"evaluated {sys.argv[2]}")
print(-distance)
