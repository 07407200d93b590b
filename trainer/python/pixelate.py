"""Pixelation parity with PIL, the library the CIFAR-10-C code uses.

The Rust test writes DIR/pixelate.safetensors: `clean` (N x C x H x W
uint8 images) and `s1` .. `s5`, the trainer's pixelated images at each
severity. This script resizes each clean image to int(side * c) and back
with PIL's BOX filter, c = 0.95 0.9 0.85 0.75 0.65 (the published factors),
and compares.

usage: pixelate.py DIR
Exit status 0 when no pixel differs by more than 1 grey level (PIL rounds to
bytes after each of its passes, the trainer once at the end), 1 otherwise.
"""
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

FACTORS = [0.95, 0.9, 0.85, 0.75, 0.65]


def pixelate(img, c):
    """img: C x H x W uint8."""
    ch, h, w = img.shape
    out = []
    for plane in img:
        p = Image.fromarray(plane, mode="L")
        p = p.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
        out.append(np.asarray(p))
    return np.stack(out)


def main():
    t = load_file(f"{sys.argv[1]}/pixelate.safetensors")
    worst = 0
    for s, c in enumerate(FACTORS, start=1):
        ours = t[f"s{s}"].astype(int)
        ref = np.stack([pixelate(img, c) for img in t["clean"]]).astype(int)
        err = int(np.abs(ours - ref).max())
        print(f"severity {s}: at most {err} grey levels apart")
        worst = max(worst, err)
    sys.exit(0 if worst <= 1 else 1)


if __name__ == "__main__":
    main()
