"""torchvision's view of an image folder, for the trainer's tests.

    folder_reference.py list ROOT            JSON: classes and samples of ROOT/train and ROOT/val
    folder_reference.py eval ROOT SIZE OUT   ROOT/val through Resize(int(SIZE / 0.875)) and
                                             CenterCrop(SIZE) on PIL images, written to OUT as
                                             uint8 N x 3 x SIZE x SIZE in sample order
"""
import json
import sys

import numpy as np
from torchvision import datasets, transforms


def eval_transform(size):
    return transforms.Compose([transforms.Resize(int(size / 0.875)), transforms.CenterCrop(size)])


def planar(img):
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def main():
    mode, root = sys.argv[1], sys.argv[2]
    if mode == "list":
        out = {}
        for split in ("train", "val"):
            ds = datasets.ImageFolder(f"{root}/{split}")
            out[split] = {"classes": ds.classes, "samples": ds.samples}
        print(json.dumps(out))
    elif mode == "eval":
        size, path = int(sys.argv[3]), sys.argv[4]
        ds = datasets.ImageFolder(f"{root}/val", transform=eval_transform(size))
        arr = np.stack([planar(img) for img, _ in ds])
        arr.tofile(path)
        print(f"wrote {arr.shape}")
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
