"""Eval-mode forward parity of one model with its PyTorch twin.

The Rust test writes into DIR: init.safetensors (weights and buffers) and
io.safetensors (`x`, the input batch, and `logits`, the trainer's eval-mode
output). This script loads the weights into the twin from models.py, runs
it in eval mode (dropout off, running statistics) and compares.

usage: forward_eval.py DIR ARCH NUM_CLASSES CxHxW
Exit status 0 when the logits agree within 1e-4 (absolute), 1 otherwise.
"""
import sys

import torch
from safetensors.torch import load_file

from models import build


def main():
    d, arch, num_classes, shape = sys.argv[1:5]
    torch.set_num_threads(1)
    model = build(arch, int(num_classes), [int(v) for v in shape.split("x")])
    model.load_state_dict(load_file(f"{d}/init.safetensors"), strict=True)
    model.eval()
    io = load_file(f"{d}/io.safetensors")
    with torch.no_grad():
        ours = model(io["x"])
    err = (ours - io["logits"]).abs().max().item()
    print(f"{arch}: eval logits differ by at most {err:.3g}")
    sys.exit(0 if err < 1e-4 else 1)


if __name__ == "__main__":
    main()
