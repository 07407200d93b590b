"""Times PyTorch eager training steps, the twin of `trainer bench`.

usage: bench_step.py --model resnet20 --input 3x32x32 --batch-size 128 --threads 2
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

from models import build


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--input", default="3x32x32")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--channels-last", action="store_true",
                    help="model and batch in torch.channels_last (what the trainer uses on CPU)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c, h, w = (int(d) for d in a.input.split("x"))
    model = build(a.model, a.num_classes, (c, h, w))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)
    x = torch.randn(a.batch_size, c, h, w)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(a.num_classes, (a.batch_size,))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    # The median step: robust to spikes of background load.
    ms = sorted(times)[len(times) // 2] * 1e3
    name = "pytorch-channels-last" if a.channels_last else "pytorch"
    print(json.dumps({"impl": name, "model": a.model, "batch_size": a.batch_size,
                      "threads": torch.get_num_threads(), "ms_per_step": ms}))


if __name__ == "__main__":
    main()
