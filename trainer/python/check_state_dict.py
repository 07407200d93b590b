"""Loads a trainer checkpoint into the PyTorch model of the same
architecture with load_state_dict(strict=True) and checks dtypes too.

usage: check_state_dict.py CHECKPOINT ARCH NUM_CLASSES CxHxW
"""
import sys

import torch
from safetensors.torch import load_file

from models import build


def main():
    path, arch, num_classes, shape = sys.argv[1:5]
    model = build(arch, int(num_classes), [int(d) for d in shape.split("x")])
    state = load_file(path)
    model.load_state_dict(state, strict=True)
    for name, t in model.state_dict().items():
        if t.dtype != state[name].dtype or t.shape != state[name].shape:
            sys.exit(f"{name}: {state[name].dtype} {tuple(state[name].shape)} vs {t.dtype} {tuple(t.shape)}")
    model.eval()
    c, h, w = (int(d) for d in shape.split("x"))
    with torch.no_grad():
        out = model(torch.zeros(2, c, h, w))
    assert out.shape == (2, int(num_classes)), out.shape
    print(f"ok: {arch} loads strictly ({len(state)} tensors)")


if __name__ == "__main__":
    main()
