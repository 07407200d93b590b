"""Writes a synthetic image folder in torchvision's ImageFolder layout.

    gen_image_folder.py OUT --classes 4 --train 500 --val 100 \
        --width 500 --height 375 [--format jpeg|png|mixed] [--seed 0]

Class k has its own colour and stripe frequency, with a smooth random field
and fine noise on top, so the images compress like photographs (not like
flat colour) and a network can learn the classes. The sizes vary by up to
+-20% around --width x --height, as ImageNet's do. Deterministic per seed.
"""
import argparse
import os

import numpy as np
from PIL import Image


def image(rng, k, classes, w, h):
    hue = np.array([np.cos(2 * np.pi * k / classes), np.sin(2 * np.pi * k / classes), 0.5 - k / classes])
    base = 128 + 70 * hue
    small = rng.normal(0, 40, size=(max(h // 32, 2), max(w // 32, 2), 3))
    field = np.array(Image.fromarray(np.clip(128 + small, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR), dtype=np.float32) - 128
    y, x = np.mgrid[0:h, 0:w]
    stripes = 30 * np.sin((x * np.cos(k) + y * np.sin(k)) * (0.05 + 0.03 * k))[..., None]
    noise = rng.normal(0, 8, size=(h, w, 3))
    px = base + field + stripes + noise
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--train", type=int, default=400, help="training images in all")
    ap.add_argument("--val", type=int, default=80, help="val (test) images in all")
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--height", type=int, default=375)
    ap.add_argument("--format", choices=["jpeg", "png", "mixed"], default="jpeg")
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    for split, n in (("train", a.train), ("val", a.val)):
        for i in range(n):
            k = i % a.classes
            d = os.path.join(a.out, split, f"class{k}")
            os.makedirs(d, exist_ok=True)
            w = int(a.width * rng.uniform(0.8, 1.2))
            h = int(a.height * rng.uniform(0.8, 1.2))
            img = image(rng, k, a.classes, w, h)
            png = a.format == "png" or (a.format == "mixed" and i % 2 == 1)
            name = os.path.join(d, f"{i:06d}." + ("png" if png else "jpg"))
            if png:
                img.save(name)
            else:
                img.save(name, quality=a.quality)


if __name__ == "__main__":
    main()
