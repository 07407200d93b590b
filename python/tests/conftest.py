"""Shared fixtures: the `soup` binary the file API is compared with, and
small checkpoints written with the `safetensors` package."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def soup_bin() -> Path:
    """The release `soup` binary (`cargo build --release -p soup-cli`), or
    $SOUP_BIN. Missing, the comparison tests fail rather than skip."""
    path = Path(os.environ.get("SOUP_BIN", REPO / "target" / "release" / "soup"))
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `cargo build --release -p soup-cli` first")
    return path


@pytest.fixture
def soup(soup_bin: Path):
    """Runs `soup ARGS... --json`; returns (exit code, parsed stdout or
    None, stderr)."""

    def run(*args: object) -> tuple[int, object, str]:
        cmd = [str(soup_bin), *(str(a) for a in args), "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        out = json.loads(p.stdout) if p.stdout.strip() else None
        return p.returncode, out, p.stderr

    return run


def cli_error(stderr: str) -> str:
    """The one-line message of a failed `soup` run."""
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("soup: error: "), stderr
    return line[len("soup: error: ") :]


def model_state(seed: int) -> dict[str, np.ndarray]:
    """A small conv + batch norm + linear state dict with mixed dtypes."""
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(8).astype(np.float32),
        "bn.weight": rng.standard_normal(8).astype(np.float32),
        "bn.running_mean": rng.standard_normal(8).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "fc.weight": rng.standard_normal((10, 32)).astype(np.float16),
        "fc.bias": rng.standard_normal(10).astype(np.float64),
    }


@pytest.fixture
def family(tmp_path: Path) -> dict[str, Path]:
    """A pruned parent, three candidates that keep its mask (noise on the
    surviving weights only) and one candidate with a different mask."""
    parent = model_state(0)
    for name in ("conv.weight", "fc.weight"):
        w = parent[name]
        w[np.abs(w) < np.quantile(np.abs(w), 0.6)] = 0
    paths = {"parent": tmp_path / "parent.safetensors"}
    save_file(parent, str(paths["parent"]))
    for i in range(3):
        rng = np.random.default_rng(100 + i)
        cand = {}
        for k, v in parent.items():
            if v.dtype.kind == "f":
                noise = rng.standard_normal(v.shape).astype(v.dtype) * v.dtype.type(0.1)
                cand[k] = np.where(v != 0, v + noise, v).astype(v.dtype)
            else:
                cand[k] = v.copy()
        paths[f"c{i}"] = tmp_path / f"c{i}.safetensors"
        save_file(cand, str(paths[f"c{i}"]))
    odd = {k: v.copy() for k, v in parent.items()}
    odd["conv.weight"][0, 0, 0, 0] = 0 if odd["conv.weight"][0, 0, 0, 0] != 0 else 1.0
    paths["odd"] = tmp_path / "odd.safetensors"
    save_file(odd, str(paths["odd"]))
    return paths


# ----- greedy soups on a scripted evaluator -----

LEVELS = [1.0, 2.0, 4.0, 8.0]  # every subset has its own mean


def scripted_scores() -> dict[str, float]:
    """Score of the soup of each subset, keyed by the soup's mean."""
    from itertools import combinations

    table = {}
    for k in range(1, 5):
        for subset in combinations(range(4), k):
            table[frozenset(subset)] = 0.1
    table.update(
        {
            frozenset({0}): 0.5,
            frozenset({1}): 0.9,
            frozenset({2}): 0.7,
            frozenset({3}): 0.9,  # ties with 1: input order decides
            frozenset({1, 3}): 0.9,  # a tie: kept unless strict
            frozenset({1, 3, 2}): 0.85,  # worse: rejected
            frozenset({1, 3, 0}): 0.95,
            frozenset({1, 2}): 0.92,
            frozenset({1, 2, 0}): 0.92,
        }
    )
    means = {}
    for subset, score in table.items():
        key = f"{sum(LEVELS[i] for i in subset) / len(subset):.6f}"
        assert key not in means
        means[key] = score
    return means


def write_evaluator(folder: Path, table: dict[str, float]) -> Path:
    """A script for `soup merge --greedy --eval-cmd` that prints the
    scripted score of the checkpoint it is given."""
    (folder / "table.json").write_text(json.dumps(table))
    script = folder / "evaluate.py"
    script.write_text(
        "import json, sys\n"
        "from safetensors.numpy import load_file\n"
        f"table = json.load(open({str(folder / 'table.json')!r}))\n"
        "w = load_file(sys.argv[1])['w']\n"
        "print(table[f'{w.astype(float).mean():.6f}'])\n"
    )
    return script
