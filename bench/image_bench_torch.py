"""torchvision's ImageFolder + DataLoader on a class folder, for image_bench.sh.

    image_bench_torch.py CLASS_FOLDERS_DIR --workers N --batch-size 64 --image-size 224 --rounds 5 [--eval]

The same work as the trainer's pipeline: PIL decode, RandomResizedCrop(size) +
RandomHorizontalFlip (or Resize(int(size / 0.875)) + CenterCrop(size) with
--eval), ToTensor, Normalize(ImageNet), collated into a batch tensor; one
shuffled pass over all files per round, with N worker processes. Prints one
JSON object: images per second per round, the median, and peak resident
memory (the main process, and the largest worker process).
"""
import argparse
import json
import resource
import statistics
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--eval", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if a.eval:
        t = [transforms.Resize(int(a.image_size / 0.875)), transforms.CenterCrop(a.image_size)]
    else:
        t = [transforms.RandomResizedCrop(a.image_size), transforms.RandomHorizontalFlip()]
    ds = datasets.ImageFolder(a.root, transform=transforms.Compose(t + [transforms.ToTensor(), norm]))
    rates = []
    for r in range(a.rounds):
        torch.manual_seed(r)
        loader = DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers)
        start = time.perf_counter()
        n = 0
        for images, labels in loader:
            n += images.shape[0]
        rates.append(n / (time.perf_counter() - start))
    print(json.dumps({
        "impl": "torchvision", "images": len(ds), "workers": a.workers, "batch_size": a.batch_size,
        "image_size": a.image_size, "eval": a.eval, "rounds": rates,
        "median_images_per_s": statistics.median(rates),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
