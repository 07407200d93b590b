"""The README's first snippet runs, the result types are documented, the
torch extra brings what the torch side needs, and sparse_soups.torch
without PyTorch says what to install."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PYTHON = Path(__file__).resolve().parents[1]


def test_readme_snippet_runs_and_keeps_the_mask() -> None:
    text = (PYTHON / "README.md").read_text()
    first = re.search(r"```python\n(.*?)```", text, re.S)
    assert first is not None and text.index("```python") < text.index("```sh")
    ns: dict[str, object] = {}
    exec(compile(first.group(1), "README.md", "exec"), ns)
    from sparse_soups import mask_fingerprints
    from sparse_soups.torch import model_sparsity

    model, candidates = ns["model"], ns["candidates"]
    assert model_sparsity(model) == pytest.approx(0.5, abs=0.01)  # type: ignore[arg-type]
    masks = mask_fingerprints(model.state_dict())  # type: ignore[attr-defined]
    assert all(mask_fingerprints(c.state_dict()) == masks for c in candidates)  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", ["GreedyResult", "GreedyTrial"])
def test_result_fields_are_documented(cls: str) -> None:
    tree = ast.parse((PYTHON / "sparse_soups" / "torch.py").read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
    body = node.body
    fields = [(i, n.target.id) for i, n in enumerate(body) if isinstance(n, ast.AnnAssign)]  # type: ignore[union-attr]
    assert fields
    undocumented = [
        name
        for i, name in fields
        if not (
            i + 1 < len(body)
            and isinstance(body[i + 1], ast.Expr)
            and isinstance(body[i + 1].value, ast.Constant)  # type: ignore[attr-defined]
        )
    ]
    assert not undocumented, f"{cls} fields without a docstring: {undocumented}"
    readme = (PYTHON / "README.md").read_text()
    assert all(f"`{name}`" in readme for _, name in fields)


def test_torch_extra_brings_safetensors() -> None:
    meta = tomllib.loads((PYTHON / "pyproject.toml").read_text())
    extra = meta["project"]["optional-dependencies"]["torch"]
    assert any(d.startswith("torch") for d in extra)
    assert any(d.startswith("safetensors") for d in extra)


BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
import sparse_soups  # the file and in-memory APIs need no torch
print(sparse_soups.phase_sparsities(0.75, 2).fraction)
try:
    import sparse_soups.torch
except ImportError as e:
    print("ERR", e)
"""


def test_sparse_soups_torch_without_torch_says_what_to_install() -> None:
    p = subprocess.run([sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "0.5"
    assert lines[1].startswith("ERR sparse_soups.torch needs PyTorch")
    assert 'pip install "sparse-soups[torch]"' in lines[1]
