"""N:M pruning seen from PyTorch: a `soup prune --nm 2:4` output has at
most 2 non-zeros in every group of 4 along the input dimension by
PyTorch's own view of the tensors, and `sparse_soups.prune(nm=...)`,
`prune_state_dict(nm=...)` and `sparse_soups.torch.prune_model(nm=...)`
give the same pattern."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file, save_file  # noqa: E402

import sparse_soups  # noqa: E402
import sparse_soups.torch as st  # noqa: E402


def groups_of_4(name: str, w: torch.Tensor, transposed: bool) -> torch.Tensor:
    """Rows of 4 consecutive weights along the input dimension: `[out, in]`
    as is; convolutions `[out, in, kh, kw]` permuted to `[out, kh, kw, in]`
    (the layout NVIDIA's ASP and `to_sparse_semi_structured` group);
    `[in, out]` weights transposed first."""
    if transposed:
        w = w.t()
    if w.dim() == 4:
        w = w.permute(0, 2, 3, 1)
    return w.contiguous().reshape(-1, 4)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 12, 3)
        self.fc = torch.nn.Linear(16, 6)
        self.head = torch.nn.Linear(6, 3)  # 6 inputs: not a multiple of 4


def state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = Net()
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    # A GPT-2 Conv1D weight, stored [in, out].
    sd["h.0.mlp.c_fc.weight"] = torch.randn(16, 24)
    sd["fc.weight"] = sd["fc.weight"].to(torch.bfloat16)
    return sd


def assert_2_4(sd: dict[str, torch.Tensor], names: list[str]) -> None:
    for name in names:
        w = sd[name]
        g = groups_of_4(name, w, name.endswith("c_fc.weight"))
        nonzero = (g != 0).sum(dim=1)
        assert int(nonzero.max()) <= 2, name
        # Magnitude 2:4 of dense random weights keeps exactly 2.
        assert int(nonzero.min()) == 2, name


def test_soup_prune_nm_output_is_2_4_by_torch_view(tmp_path: Path, soup_bin: Path) -> None:
    sd = state(0)
    src = tmp_path / "in.safetensors"
    out = tmp_path / "out.safetensors"
    save_file(sd, str(src))
    p = subprocess.run(
        [
            str(soup_bin),
            "prune",
            str(src),
            "-o",
            str(out),
            "--nm",
            "2:4",
            "--nm-transposed",
            r"mlp\.c_fc\.weight$",
            "--nm-skip-ragged",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    got = load_file(str(out))
    assert_2_4(got, ["conv.weight", "fc.weight", "h.0.mlp.c_fc.weight"])
    assert torch.equal(got["head.weight"], sd["head.weight"])
    # Every kept weight is the input's value.
    for name in ["conv.weight", "fc.weight", "h.0.mlp.c_fc.weight"]:
        kept = got[name] != 0
        assert torch.equal(got[name][kept], sd[name][kept])


def test_python_prune_nm_matches_the_cli(tmp_path: Path, soup_bin: Path) -> None:
    sd = state(1)
    src = tmp_path / "in.safetensors"
    save_file(sd, str(src))
    report = sparse_soups.prune(
        src,
        tmp_path / "py.safetensors",
        nm=(2, 4),
        nm_transposed=[r"c_fc\.weight$"],
        nm_skip_ragged=True,
    )
    assert report["grouping"] == "nm"
    assert report["pattern"] == "2:4"
    assert report["skipped"] == ["head.weight"]
    assert {t["name"] for t in report["float_tensors"]} == set(sd)
    got = load_file(str(tmp_path / "py.safetensors"))
    assert_2_4(got, ["conv.weight", "fc.weight", "h.0.mlp.c_fc.weight"])
    pruned = sparse_soups.prune_state_dict(
        sd, nm=(2, 4), nm_transposed=[r"c_fc\.weight$"], nm_skip_ragged=True
    )
    for name in got:
        assert torch.equal(pruned[name], got[name]), name
    with pytest.raises(sparse_soups.errors.InvalidArgument, match="head.weight"):
        sparse_soups.prune(src, tmp_path / "bad.safetensors", nm=(2, 4))
    assert not (tmp_path / "bad.safetensors").exists()
    with pytest.raises(sparse_soups.errors.InvalidArgument):
        sparse_soups.prune(src, tmp_path / "bad.safetensors", 0.5, nm=(2, 4))


def test_prune_model_nm_in_place() -> None:
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 8))
    params = [id(p) for p in net.parameters()]
    report = st.prune_model(net, nm=(2, 4))
    assert report["pattern"] == "2:4"
    assert [id(p) for p in net.parameters()] == params
    for name, w in net.state_dict().items():
        if name.endswith("weight"):
            g = groups_of_4(name, w, False)
            assert int((g != 0).sum(dim=1).max()) <= 2, name
