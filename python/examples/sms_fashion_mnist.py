"""Sparse model soups on Fashion-MNIST in plain PyTorch with sparse_soups.

The loop of the sparse-model-soups method (the one `trainer sms` runs), as a
user would write it in their own PyTorch training code:

1. train the small `cnn` densely (SGD, momentum 0.9, Nesterov, weight decay
   5e-4, cosine learning rate from 0.1);
2. run the phases with `sms_phases`: in each of `--phases` phases it prunes
   the parent (the dense model, then the previous soup) by global
   magnitude, removing the fraction q = 1 - (1 - s)^(1/k) of the remaining
   weights, retrains `--candidates` copies with `train` below (seeds
   base + i, the ALLR schedule and a `MaskEnforcer` from
   `candidate.prepare`), checks their masks, averages them and
   recalibrates batch norm;
3. next to it run IMP (the same chain with one candidate) as the baseline;
   print the data set and its split, then the table.

Every reported model (candidate, soup, IMP) is recalibrated the same way
before it is evaluated. Defaults are those of `scripts/demo.sh`. Prints one
table of test accuracies; `--json PATH` also writes the numbers.

    python sms_fashion_mnist.py [--data /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import struct
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparse_soups.schedules import iterations as phase_iterations
from sparse_soups.torch import Candidate, recalibrate_bn, sms_phases


def read_idx(folder: Path, stem: str) -> torch.Tensor:
    """An IDX file (`stem`, or `stem.gz`) as a uint8 tensor."""
    path = folder / stem
    raw = path.read_bytes() if path.exists() else gzip.decompress((folder / f"{stem}.gz").read_bytes())
    dims = raw[3]
    shape = struct.unpack(f">{dims}I", raw[4 : 4 + 4 * dims])
    return torch.frombuffer(bytearray(raw[4 + 4 * dims :]), dtype=torch.uint8).reshape(shape)


class Data:
    """Fashion-MNIST: a fixed 10% validation split, normalised images."""

    def __init__(self, folder: Path, split_seed: int, batch_size: int) -> None:
        x = read_idx(folder, "train-images-idx3-ubyte").float().div(255).unsqueeze(1)
        y = read_idx(folder, "train-labels-idx1-ubyte").long()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
        n_val = round(0.1 * len(x))
        self.train_x, self.train_y = x[order[n_val:]], y[order[n_val:]]
        self.val_x, self.val_y = x[order[:n_val]], y[order[:n_val]]
        mean, std = self.train_x.mean(), self.train_x.std()
        self.train_x, self.val_x = (self.train_x - mean) / std, (self.val_x - mean) / std
        test_x = read_idx(folder, "t10k-images-idx3-ubyte").float().div(255).unsqueeze(1)
        self.test_x = (test_x - mean) / std
        self.test_y = read_idx(folder, "t10k-labels-idx1-ubyte").long()
        self.batch_size = batch_size

    @property
    def per_epoch(self) -> int:
        return math.ceil(len(self.train_x) / self.batch_size)

    def batches(self, seed: int):
        """Endless shuffled training batches; a new order every epoch."""
        g = torch.Generator().manual_seed(seed)
        while True:
            order = torch.randperm(len(self.train_x), generator=g)
            for i in range(0, len(order), self.batch_size):
                idx = order[i : i + self.batch_size]
                yield self.train_x[idx], self.train_y[idx]

    def recalibration_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The same batches for every model: the first epoch of seed 0."""
        it = self.batches(0)
        return [next(it) for _ in range(self.per_epoch)]


class Cnn(nn.Module):
    """The trainer's `cnn`, name for name."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.fc = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(x[i : i + 500]).argmax(1) == y[i : i + 500]).sum()) for i in range(0, len(x), 500))
    return 100.0 * correct / len(x)


def train(model: nn.Module, data: Data, seed: int, iterations: int, args, candidate: Candidate | None = None) -> None:
    """SGD (momentum, Nesterov with weight decay) for `iterations` steps:
    dense pretraining under a cosine schedule, or a candidate's retraining
    under its phase's schedule with its mask kept."""
    opt = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay, nesterov=args.weight_decay > 0
    )
    if candidate is None:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 0.5 * (1 + math.cos(math.pi * it / iterations)))
    else:
        sched = candidate.prepare(opt)
    model.train()
    torch.manual_seed(seed)
    for _, (x, y) in zip(range(iterations), data.batches(seed)):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--pretrain-epochs", type=int, default=2)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--phases", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--epochs-per-phase", type=float, default=0.3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--recal-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.monotonic()
    data = Data(args.data, args.seed, args.batch_size)
    recal = data.recalibration_batches()

    def scores(model: nn.Module) -> dict[str, float]:
        return {"val": accuracy(model, data.val_x, data.val_y), "test": accuracy(model, data.test_x, data.test_y)}

    torch.manual_seed(args.seed)
    dense = Cnn()
    train(dense, data, args.seed, data.per_epoch * args.pretrain_epochs, args)
    recalibrate_bn(dense, recal, fraction=args.recal_fraction)
    dense_acc = scores(dense)

    def chain(candidates: int):
        return sms_phases(
            dense,
            lambda model, c: train(model, data, args.seed + c.index, c.iterations, args, c),
            sparsity=args.sparsity,
            phases=args.phases,
            candidates=candidates,
            iterations=phase_iterations(args.epochs_per_phase, data.per_epoch),
            lr=args.lr,
            retrain_epochs=args.epochs_per_phase,
            pretrain_epochs=args.pretrain_epochs,
            recalibrate=recal,
            recal_fraction=args.recal_fraction,
        )

    rows = []
    for sms, imp in zip(chain(args.candidates), chain(1)):
        # sms_phases recalibrated every model with `recal` already.
        cand_acc = [scores(c) for c in sms.candidates]
        best = max(range(args.candidates), key=lambda i: cand_acc[i]["val"])
        rows.append(
            {
                "phase": sms.phase,
                "sparsity": 100.0 * sms.sparsity,
                "soup": scores(sms.soup)["test"],
                "best_cand": cand_acc[best]["test"],
                "mean_cand": sum(a["test"] for a in cand_acc) / len(cand_acc),
                "imp": scores(imp.soup)["test"],
            }
        )

    print(
        f"cnn on {args.data} ({len(data.train_x)} training, {len(data.val_x)} validation, "
        f"{len(data.test_x)} test images), {args.candidates} candidates per phase, uniform soup "
        f"(sparse_soups example); test top-1 accuracy in %, dense parent {dense_acc['test']:.2f}"
    )
    print(f"{'phase':>5}  {'sparsity%':>9}  {'soup':>5}  {'best_cand':>9}  {'mean_cand':>9}  {'imp':>5}")
    for r in rows:
        print(
            f"{r['phase']:>5}  {r['sparsity']:>9.2f}  {r['soup']:>5.2f}  {r['best_cand']:>9.2f}  "
            f"{r['mean_cand']:>9.2f}  {r['imp']:>5.2f}"
        )
    seconds = time.monotonic() - start
    print(f"wall time {seconds:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"dense": dense_acc, "phases": rows, "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
