"""Rotation parity with torchvision's `rotate` (nearest neighbour, zero
fill), which CIFAR-100's `RandomRotation(15)` applies.

The Rust test writes DIR/rotate.safetensors: `clean` (N x C x H x W uint8),
`angles` (N degrees, float64) and `turned`, the trainer's rotated images.

usage: rotate.py DIR
Exit status 0 when at most 2% of the pixels differ (a pixel whose source
lies on a rounding boundary may go either way), 1 otherwise.
"""
import sys

import torch
import torchvision.transforms.functional as F
from safetensors.torch import load_file


def main():
    t = load_file(f"{sys.argv[1]}/rotate.safetensors")
    clean, angles, ours = t["clean"], t["angles"], t["turned"]
    ref = torch.stack([
        F.rotate(img, float(a), interpolation=F.InterpolationMode.NEAREST)
        for img, a in zip(clean, angles)
    ])
    differ = (ref != ours).any(dim=1).float().mean().item()
    print(f"{100 * differ:.2f}% of pixels differ from torchvision")
    sys.exit(0 if differ <= 0.02 else 1)


if __name__ == "__main__":
    main()
