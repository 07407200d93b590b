"""`soup fold-lora` against a direct numpy computation on generated PEFT
adapter folders: W + s B A with s = alpha / r (alpha / sqrt(r) under
rsLoRA), per-module rank and alpha patterns, fan_in_fan_out (GPT-2's
Conv1D) and embeddings, masked by a sparse base's zeros."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import cli_error

PREFIX = "base_model.model."


def sparse(rng, shape, dtype=np.float32, density=0.5):
    w = rng.standard_normal(shape).astype(dtype)
    w[rng.random(shape) > density] = 0
    return w


def make_case(tmp_path: Path, *, rslora: bool, fan_in_fan_out: bool, adapter_name: str | None = None):
    """A base with three adapted weights and an adapter folder; returns
    (base path, adapter folder, expected output by numpy, expected norms)."""
    rng = np.random.default_rng(7 if rslora else 8)
    r, alpha = 4, 8.0
    pattern_r, pattern_alpha = 2, 3.0  # for `layers.1.k_proj` only
    base = {
        "layers.0.q_proj.weight": sparse(rng, (6, 10)),
        "layers.1.k_proj.weight": sparse(rng, (5, 10), np.float16),
        "layers.1.q_proj.weight": rng.standard_normal((6, 10)).astype(np.float32),  # dense
        "embed.weight": sparse(rng, (12, 10)),
        "layers.0.q_proj.bias": rng.standard_normal(6).astype(np.float32),
    }
    if fan_in_fan_out:
        for name in ("layers.0.q_proj.weight", "layers.1.k_proj.weight", "layers.1.q_proj.weight"):
            base[name] = np.ascontiguousarray(base[name].T)
    save_file(base, tmp_path / "base.safetensors")
    factors, expected, removed = {}, dict(base), {}
    mid = f".{adapter_name}" if adapter_name else ""
    for module, shape in (("layers.0.q_proj", (6, 10)), ("layers.1.k_proj", (5, 10)), ("layers.1.q_proj", (6, 10))):
        rank = pattern_r if module == "layers.1.k_proj" else r
        a = rng.standard_normal((rank, shape[1])).astype(np.float32)
        b = rng.standard_normal((shape[0], rank)).astype(np.float32)
        factors[f"{PREFIX}{module}.lora_A{mid}.weight"] = a
        factors[f"{PREFIX}{module}.lora_B{mid}.weight"] = b
        al = pattern_alpha if module == "layers.1.k_proj" else alpha
        s = al / math.sqrt(rank) if rslora else al / rank
        delta = s * (b.astype(np.float64) @ a.astype(np.float64))
        if fan_in_fan_out:
            delta = delta.T
        w = base[f"{module}.weight"]
        keep = w != 0
        expected[f"{module}.weight"] = (w.astype(np.float64) + delta * keep).astype(w.dtype)
        removed[f"{module}.weight"] = (np.linalg.norm(delta), np.linalg.norm(delta * ~keep))
    # An embedding: A is r x vocab, B is dim x r, the update (B A)^T.
    a = rng.standard_normal((r, 12)).astype(np.float32)
    b = rng.standard_normal((10, r)).astype(np.float32)
    factors[f"{PREFIX}embed.lora_embedding_A{mid}"] = a
    factors[f"{PREFIX}embed.lora_embedding_B{mid}"] = b
    s = alpha / math.sqrt(r) if rslora else alpha / r
    delta = (s * (b.astype(np.float64) @ a.astype(np.float64))).T
    keep = base["embed.weight"] != 0
    expected["embed.weight"] = (base["embed.weight"] + delta * keep).astype(np.float32)
    removed["embed.weight"] = (np.linalg.norm(delta), np.linalg.norm(delta * ~keep))
    folder = tmp_path / "adapter"
    folder.mkdir()
    save_file(factors, folder / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": alpha,
        "use_rslora": rslora,
        "fan_in_fan_out": fan_in_fan_out,
        "target_modules": ["q_proj", "k_proj", "embed"],
        "rank_pattern": {"layers.1.k_proj": pattern_r},
        "alpha_pattern": {"layers\\.1\\.k_proj": pattern_alpha},
        "lora_dropout": 0.0,
        "bias": "none",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return tmp_path / "base.safetensors", folder, expected, removed


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("fan_in_fan_out", [False, True])
def test_fold_matches_numpy_and_keeps_the_mask(tmp_path, soup, rslora, fan_in_fan_out):
    base, folder, expected, removed = make_case(tmp_path, rslora=rslora, fan_in_fan_out=fan_in_fan_out)
    out = tmp_path / "folded.safetensors"
    code, report, err = soup("fold-lora", base, folder, "-o", out, "--budget", "300")
    assert code == 0, err
    got = load_file(out)
    base_state = load_file(base)
    assert sorted(got) == sorted(expected)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype
        tol = 2e-3 if want.dtype == np.float16 else 1e-6
        np.testing.assert_allclose(got[name], want, rtol=tol, atol=tol, err_msg=name)
        # Folded zeros are the base's zeros.
        np.testing.assert_array_equal(got[name] == 0, base_state[name] == 0, err_msg=name)
    by_name = {t["name"]: t for t in report["tensors"]}
    assert sorted(by_name) == sorted(removed)
    for name, (update, off) in removed.items():
        assert by_name[name]["update_norm"] == pytest.approx(update, rel=1e-9)
        assert by_name[name]["removed_norm"] == pytest.approx(off, rel=1e-9)
    total = math.sqrt(sum(u * u for u, _ in removed.values()))
    total_off = math.sqrt(sum(o * o for _, o in removed.values()))
    assert report["removed_share"] == pytest.approx(total_off / total, rel=1e-9)
    assert by_name["layers.1.q_proj.weight"]["removed_share"] == 0
    assert by_name["layers.1.k_proj.weight"]["rank"] == 2
    assert by_name["layers.1.k_proj.weight"]["alpha"] == 3.0
    # The result passes check-mask against the base.
    code, check, err = soup("check-mask", out, "--reference", base)
    assert code == 0 and check["identical"], err


def test_no_mask_densifies(tmp_path, soup):
    base, folder, _, _ = make_case(tmp_path, rslora=False, fan_in_fan_out=False, adapter_name="default")
    out = tmp_path / "dense.safetensors"
    code, report, err = soup("fold-lora", base, folder, "-o", out, "--no-mask")
    assert code == 0, err
    got = load_file(out)
    assert np.count_nonzero(got["layers.0.q_proj.weight"] == 0) == 0
    assert report["removed_share"] > 0 and not report["keep_mask"]
    assert soup("check-mask", out, "--reference", base)[0] == 1


def test_bad_adapters_are_one_line_and_write_nothing(tmp_path, soup):
    base, folder, _, _ = make_case(tmp_path, rslora=False, fan_in_fan_out=False)
    factors = load_file(folder / "adapter_model.safetensors")
    config = json.loads((folder / "adapter_config.json").read_text())
    out = tmp_path / "out.safetensors"

    def variant(name, tensors=None, cfg=None):
        d = tmp_path / name
        d.mkdir()
        save_file(tensors if tensors is not None else factors, d / "adapter_model.safetensors")
        (d / "adapter_config.json").write_text(json.dumps(cfg if cfg is not None else config))
        return d

    missing = dict(factors)
    missing[f"{PREFIX}layers.9.v_proj.lora_A.weight"] = np.ones((4, 10), np.float32)
    missing[f"{PREFIX}layers.9.v_proj.lora_B.weight"] = np.ones((6, 4), np.float32)
    wrong_shape = dict(factors)
    wrong_shape[f"{PREFIX}layers.0.q_proj.lora_A.weight"] = np.ones((4, 9), np.float32)
    lonely = {k: v for k, v in factors.items() if "layers.0.q_proj.lora_B" not in k}
    dora = dict(factors)
    dora[f"{PREFIX}layers.0.q_proj.lora_magnitude_vector"] = np.ones(6, np.float32)
    cases = [
        (variant("missing", missing), "not in the base"),
        (variant("shape", wrong_shape), "do not fit `layers.0.q_proj.weight`"),
        (variant("lonely", lonely), "has no partner factor"),
        (variant("dora", dora), "not a LoRA factor"),
        (variant("rank", cfg={**config, "rank_pattern": {}}), "the config gives `layers.1.k_proj` rank 4"),
        (variant("targets", cfg={**config, "target_modules": ["q_proj", "embed"]}), "not among target_modules"),
        (tmp_path / "nowhere", "not a PEFT adapter folder"),
    ]
    for folder_path, problem in cases:
        code, _, err = soup("fold-lora", base, folder_path, "-o", out)
        assert code == 2, err
        assert problem in cli_error(err), (folder_path, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    code, _, err = soup("fold-lora", base, cases[0][0], "-o", out)
    assert "layers.9.v_proj.weight" in err


def test_python_fold_lora(tmp_path):
    import sparse_soups

    base, folder, expected, _ = make_case(tmp_path, rslora=True, fan_in_fan_out=False)
    out = tmp_path / "folded.safetensors"
    report = sparse_soups.fold_lora(base, folder, out)
    assert report["keep_mask"] and len(report["tensors"]) == 4
    got = load_file(out)
    for name, want in expected.items():
        tol = 2e-3 if want.dtype == np.float16 else 1e-6
        np.testing.assert_allclose(got[name], want, rtol=tol, atol=tol)
    assert sparse_soups.check_mask([out], reference=base)["identical"]
    with pytest.raises(sparse_soups.BadCheckpoint, match="not a PEFT adapter folder"):
        sparse_soups.fold_lora(base, tmp_path / "nowhere", tmp_path / "x.safetensors")
