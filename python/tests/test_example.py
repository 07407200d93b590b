"""examples/sms_fashion_mnist.py runs end to end on a small generated IDX
data set and keeps the method's invariants."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sms_fashion_mnist.py"


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    head = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = head + array.astype(np.uint8).tobytes()
    if compress:
        Path(f"{path}.gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def fake_fashion_mnist(folder: Path, train: int, test: int) -> None:
    """Ten classes told apart by which horizontal band of the image is lit."""
    rng = np.random.default_rng(0)
    for stem, n, compress in (("train", train, True), ("t10k", test, False)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label + 4 : 2 * label + 7, 4:24] += 180
        write_idx(folder / f"{stem}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{stem}-labels-idx1-ubyte", labels, compress)


def test_example_runs_end_to_end(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path, train=640, test=200)
    out = tmp_path / "results.json"
    args = ["--data", tmp_path, "--pretrain-epochs", "1", "--phases", "2", "--candidates", "2",
            "--epochs-per-phase", "0.5", "--batch-size", "32", "--sparsity", "0.75",
            "--threads", "1", "--json", out]  # fmt: skip
    p = subprocess.run([sys.executable, EXAMPLE, *map(str, args)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert "phase  sparsity%   soup  best_cand  mean_cand    imp" in p.stdout
    # It names the data it was given and its split.
    assert f"cnn on {tmp_path} (576 training, 64 validation, 200 test images)" in p.stdout
    results = json.loads(out.read_text())
    phases = results["phases"]
    assert [r["phase"] for r in phases] == [1, 2]
    # Two phases of q = 0.5 on the conv and linear weights: 50% then 75%.
    assert abs(phases[0]["sparsity"] - 50.0) < 0.1 and abs(phases[1]["sparsity"] - 75.0) < 0.1
    # The task is easy: the models learn it (not a chance-level 10%).
    assert results["dense"]["test"] > 50
    assert all(r["soup"] > 50 and r["imp"] > 50 for r in phases)
