"""Crop and flip parity with torchvision's `RandomCrop(size, padding=pad)`
and `RandomHorizontalFlip()`, the training augmentation of IDX data.

The Rust test writes DIR/crop.safetensors:
- `clean` (N x C x H x W uint8) fixed images, `params` (N x 3 int64: top,
  left, flip) placements, `ours` the trainer's crops of them;
- `all`: every crop the trainer can make of `clean[0]`, placement
  (top, left, flip) at index (top * (2 pad + 1) + left) * 2 + flip;
- `pad` (1 int64): the zero padding.

usage: crop.py DIR
Checks, exit status 1 on the first failure:
1. same decisions: torchvision's transforms driven by the trainer's
   placements (its `get_params` returns the trainer's offsets, the flip
   runs with p = 1 or 0) give the trainer's images, byte for byte;
2. free draws: 4000 draws of torchvision's own randomness, with and without
   the flip, only ever give crops the trainer can make, and every one of
   them (25 or 50 for pad 2).
"""
import sys
from unittest import mock

import torch
import torchvision.transforms as T
from safetensors.torch import load_file


def main():
    t = load_file(f"{sys.argv[1]}/crop.safetensors")
    clean, params, ours, every = t["clean"], t["params"], t["ours"], t["all"]
    pad = int(t["pad"][0])
    size = (clean.shape[-2], clean.shape[-1])
    crop = T.RandomCrop(size, padding=pad)

    for k, (img, (top, left, flip), want) in enumerate(zip(clean, params.tolist(), ours)):
        with mock.patch.object(T.RandomCrop, "get_params", return_value=(top, left, *size)):
            out = crop(img)
        out = T.RandomHorizontalFlip(p=1.0 if flip else 0.0)(out)
        if not torch.equal(out, want):
            sys.exit(f"image {k} at top {top} left {left} flip {flip}: torchvision differs")

    index = {x.numpy().tobytes(): k for k, x in enumerate(every)}
    if len(index) != len(every):
        sys.exit("the trainer's crops of the first image are not all different")
    torch.manual_seed(0)
    for name, transform, reachable in [
        ("crop", crop, {k for k in range(len(every)) if k % 2 == 0}),
        ("crop-flip", T.Compose([crop, T.RandomHorizontalFlip()]), set(range(len(every)))),
    ]:
        seen = set()
        for _ in range(4000):
            k = index.get(transform(clean[0]).numpy().tobytes())
            if k is None or k not in reachable:
                sys.exit(f"{name}: torchvision made a crop the trainer cannot make")
            seen.add(k)
        if seen != reachable:
            sys.exit(f"{name}: torchvision made {len(seen)} of the trainer's {len(reachable)} crops")
        print(f"{name}: torchvision's draws give exactly the trainer's {len(seen)} crops")
    print(f"ok: {len(clean)} placements agree with torchvision")


if __name__ == "__main__":
    main()
