"""Numerical parity of the trainer with PyTorch.

The Rust test writes into DIR: init.safetensors (the trainer's initial
weights and buffers), batch.safetensors (x, y, lr, momentum, weight_decay)
and rust.safetensors (the trainer's results: `logits.train` of the first
forward pass, `logits.eval` after the steps, and `state.NAME` for every
tensor after the steps). This script loads the same weights into the
PyTorch twin, repeats the steps with torch.optim.SGD and compares.

usage: parity.py DIR ARCH NUM_CLASSES CxHxW STEPS
Exit status 0 when everything agrees within 1e-5 (absolute), 1 otherwise.
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from models import build

TOL = 1e-5


def channels_last(t):
    """The trainer's `to_channels_last`: N x C x H x W values, NHWC strides."""
    n, c, h, w = t.shape
    out = torch.empty_strided(t.shape, (c * h * w, 1, w * c, c), dtype=t.dtype)
    out.copy_(t)
    return out


def main():
    d, arch, num_classes, shape, steps = sys.argv[1:6]
    # The Rust side runs on one thread too: channels-last results depend on
    # the thread count by more than TOL.
    torch.set_num_threads(1)
    model = build(arch, int(num_classes), [int(v) for v in shape.split("x")])
    model.load_state_dict(load_file(f"{d}/init.safetensors"), strict=True)
    batch = load_file(f"{d}/batch.safetensors")
    rust = load_file(f"{d}/rust.safetensors")
    x, y = batch["x"], batch["y"]
    if arch != "mlp":
        # The trainer keeps convolutional models channels-last on the CPU.
        # Results depend on the layout (PyTorch against itself differs by
        # more than 1e-5 between layouts for resnet20), so lay out every 4-D
        # tensor exactly as the trainer does.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 4:
                    p.data = channels_last(p.data)
        x = channels_last(x)
    lr, momentum, wd = (float(batch[k]) for k in ("lr", "momentum", "weight_decay"))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd,
                          nesterov=wd > 0)
    model.train()
    ours = {}
    for i in range(int(steps)):
        logits = model(x)
        if i == 0:
            ours["logits.train"] = logits.detach()
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        ours["logits.eval"] = model(x)
    for name, t in model.state_dict().items():
        ours[f"state.{name}"] = t
    worst, failed = 0.0, []
    for name, t in ours.items():
        r = rust[name]
        if r.shape != t.shape or r.dtype != t.dtype:
            failed.append(f"{name}: {r.dtype}{tuple(r.shape)} vs {t.dtype}{tuple(t.shape)}")
            continue
        diff = (r.double() - t.double()).abs().max().item() if t.numel() else 0.0
        worst = max(worst, diff)
        if diff > TOL:
            failed.append(f"{name}: max |diff| {diff:.3g}")
    missing = set(rust) - set(ours)
    if missing:
        failed.append(f"only in the trainer's output: {sorted(missing)}")
    print(f"{arch}: {len(ours)} tensors compared after {steps} SGD steps, max |diff| {worst:.3g}")
    if failed:
        print("\n".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
