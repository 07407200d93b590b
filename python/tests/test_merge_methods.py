"""`soup merge --base` (task arithmetic, TIES, DARE) against references
written here in numpy, on dense and sparse inputs, under every mask policy,
budget and thread count; DARE's drop against its documented random stream.

Tolerances: float32 tensors are compared with rtol 1e-5 / atol 1e-6 (soup
accumulates in f32, the references in f64 after forming task vectors in
f32), float16 tensors with rtol 2e-3 / atol 2e-3 (one f16 rounding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import cli_error

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on uint64 arrays (wrapping)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def fnv(name: str) -> np.uint64:
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(h)


def dare_keep(name: str, k: int, n: int, density: float, seed: int) -> np.ndarray:
    """Which elements candidate `k` keeps, by the stream soup documents."""
    stream = mix(np.uint64(seed) ^ mix(fnv(name) ^ mix(np.uint64(k))))
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        u = mix(stream + i * GOLDEN)
    return (u >> np.uint64(11)) < np.uint64(int(density * 2.0**53))


def reference(method, base, cands, name, *, weights=None, scale=1.0, density=1.0,
              seed=0, masked=True):
    """The merged tensor: task vectors formed in f32 like soup, the rest in
    f64."""
    shape = base.shape
    b32 = base.astype(np.float32).ravel()
    taus = [(c.astype(np.float32).ravel() - b32).astype(np.float64) for c in cands]
    w = np.ones(len(cands)) if weights is None else np.asarray(weights, dtype=np.float64)
    eligible = (b32 != 0) if masked else np.ones(b32.shape, dtype=bool)
    if method == "ties" and density < 1:
        for k, t in enumerate(taus):
            mags = np.abs(t.astype(np.float32))
            # At least one where any survives, as mergekit keeps.
            keep = min(max(int(np.floor(density * eligible.sum())), 1), int(eligible.sum()))
            if keep == 0:
                taus[k] = np.zeros_like(t)
                continue
            threshold = np.sort(mags[eligible])[::-1][keep - 1]
            taus[k] = np.where(mags >= threshold, t, 0.0)
    if method.startswith("dare"):
        for k, t in enumerate(taus):
            keep = dare_keep(name, k, t.size, density, seed)
            # mergekit's rescaling: the kept entries get the L1 norm of the
            # whole task vector (ratio of the f32 sums; 1 below 1e-7).
            mags = np.abs(t.astype(np.float32)).astype(np.float64)
            before = np.float32(mags[eligible].sum())
            after = np.float32(mags[eligible & keep].sum())
            factor = np.float32(1)
            if density < 1 and before >= 1e-7 and after >= 1e-7:
                factor = before / after
            rescaled = t.astype(np.float32) * factor
            taus[k] = np.where(keep, rescaled, 0.0).astype(np.float64)
    wd = np.stack([wk * t for wk, t in zip(w, taus)])
    if method in ("ties", "dare-ties"):
        # The election as soup computes it, in f32 and in input order (a
        # sum near zero could flip its sign in f64).
        sum32 = np.zeros(b32.shape, dtype=np.float32)
        for wk, t in zip(w, taus):
            sum32 = sum32 + np.float32(wk) * t.astype(np.float32)
        positive = sum32 >= 0
        agree = np.where(positive, wd > 0, wd < 0)
        mixed = (wd * agree).sum(axis=0)
        if method == "ties":
            divisor = (w[:, None] * agree).sum(axis=0)
            divisor[divisor == 0] = 1
            mixed = mixed / divisor
    else:
        mixed = wd.sum(axis=0)
    out = b32.astype(np.float64) + scale * mixed
    if masked:
        out[b32 == 0] = 0
    return out.reshape(shape)


def family(tmp: Path, *, sparse: bool, odd_mask: bool = False, seed: int = 0):
    """A base and three fine-tunes; with `sparse`, the base is 50 % zero and
    the fine-tunes share its mask (one does not with `odd_mask`)."""
    rng = np.random.default_rng(seed)
    shapes = {"fc.weight": ((64, 300), np.float32), "emb.weight": ((50, 40), np.float16),
              "fc.bias": ((64,), np.float32)}
    base, mask = {}, {}
    for name, (shape, dtype) in shapes.items():
        v = rng.standard_normal(shape).astype(dtype)
        mask[name] = (rng.random(shape) >= 0.5) if sparse and name != "fc.bias" else np.ones(shape, bool)
        base[name] = np.where(mask[name], v, 0).astype(dtype)
    base["steps"] = np.array([3], dtype=np.int64)
    paths = {"base": tmp / "base.safetensors"}
    save_file(base, str(paths["base"]))
    cands = []
    for k in range(3):
        c = {}
        for name, (shape, dtype) in shapes.items():
            delta = 0.1 * rng.standard_normal(shape)
            c[name] = np.where(mask[name], base[name] + delta, 0).astype(dtype)
        if odd_mask and k == 1:
            c["fc.weight"] = c["fc.weight"].copy()
            c["fc.weight"][0, :10] = 0.5  # revives pruned weights
        c["steps"] = base["steps"]
        path = tmp / f"ft{k}.safetensors"
        save_file(c, str(path))
        cands.append(path)
    return paths["base"], cands


def check(out: Path, base: Path, cands, method, **kw):
    got = load_file(str(out))
    b = load_file(str(base))
    cs = [load_file(str(c)) for c in cands]
    for name in b:
        if b[name].dtype == np.int64:
            assert np.array_equal(got[name], b[name])
            continue
        want = reference(method, b[name], [c[name] for c in cs], name, **kw)
        tol = 2e-3 if b[name].dtype == np.float16 else 1e-5
        atol = 2e-3 if b[name].dtype == np.float16 else 1e-6
        np.testing.assert_allclose(got[name].astype(np.float64), want, rtol=tol, atol=atol,
                                   err_msg=f"{method} {name}")
        if kw.get("masked", True):
            assert np.array_equal(got[name] != 0, b[name] != 0) or not (b[name] == 0).any(), name


METHODS = [
    ("task-arithmetic", ["--weights", "1.0,0.5,-0.25"], dict(weights=[1.0, 0.5, -0.25])),
    ("task-arithmetic", ["--scale", "0.7"], dict(scale=0.7)),
    ("ties", ["--density", "0.3"], dict(density=0.3)),
    ("ties", ["--density", "0.5", "--weights", "1,2,0.5"], dict(density=0.5, weights=[1, 2, 0.5])),
    ("dare-linear", ["--density", "0.4", "--seed", "3"], dict(density=0.4, seed=3)),
    ("dare-ties", ["--density", "0.6", "--seed", "11", "--scale", "0.9"], dict(density=0.6, seed=11, scale=0.9)),
    # fc.bias's 64 * 0.01 rounds down to no element: one is kept.
    ("ties", ["--density", "0.01", "--scale", "0.5", "--weights", "1,2,0.5"],
     dict(density=0.01, scale=0.5, weights=[1, 2, 0.5])),
]


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("method,args,kw", METHODS)
def test_methods_match_numpy(tmp_path, soup, sparse, method, args, kw):
    base, cands = family(tmp_path, sparse=sparse)
    out = tmp_path / "out.safetensors"
    code, report, err = soup("merge", "--base", base, *cands, "-o", out, "--method", method, *args)
    assert code == 0, err
    assert report["method"] == method and report["mask_policy"] == "base"
    check(out, base, cands, method, **kw)
    if sparse:
        code, _, err = soup("check-mask", "--reference", base, out)
        assert code == 0, err


@pytest.mark.parametrize("method,args,kw", [METHODS[2], METHODS[5]])
def test_budgets_and_threads_give_the_same_bytes(tmp_path, soup, method, args, kw):
    base, cands = family(tmp_path, sparse=True, seed=5)
    outs = []
    for i, extra in enumerate([[], ["--budget", "20KiB", "--threads", "1"],
                               ["--budget", "100KiB", "--threads", "3"]]):
        out = tmp_path / f"out{i}.safetensors"
        code, _, err = soup("merge", "--base", base, *cands, "-o", out, "--method", method,
                            *args, *extra)
        assert code == 0, err
        outs.append(load_file(str(out)))
    check(tmp_path / "out1.safetensors", base, cands, method, **kw)
    for other in outs[1:]:
        for name in outs[0]:
            assert outs[0][name].tobytes() == other[name].tobytes(), name


def test_dare_seed_decides_the_drop(tmp_path, soup):
    base, cands = family(tmp_path, sparse=False, seed=2)
    got = {}
    for seed in (1, 1, 2):
        out = tmp_path / f"s{seed}-{len(got)}.safetensors"
        code, _, err = soup("merge", "--base", base, *cands, "-o", out, "--method",
                            "dare-linear", "--density", "0.5", "--seed", seed)
        assert code == 0, err
        got[out.name] = load_file(str(out))["fc.weight"]
    a, b, c = got.values()
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


@pytest.mark.parametrize("method,args,kw", [METHODS[0], METHODS[2], METHODS[4]])
def test_mask_policies(tmp_path, soup, method, args, kw):
    base, cands = family(tmp_path, sparse=True, odd_mask=True, seed=9)
    # refuse: the odd fine-tune is named, nothing is written.
    out = tmp_path / "refused.safetensors"
    code, _, err = soup("merge", "--base", base, *cands, "-o", out, "--method", method, *args,
                        "--mask-policy", "refuse")
    assert code == 2 and "ft1.safetensors" in cli_error(err) and "fc.weight" in err, err
    assert not out.exists()
    # base: the base's zeros, the dropped share reported for the odd one.
    out = tmp_path / "kept.safetensors"
    code, report, err = soup("merge", "--base", base, *cands, "-o", out, "--method", method, *args)
    assert code == 0, err
    b = load_file(str(base))["fc.weight"]
    c1 = load_file(str(cands[1]))["fc.weight"].astype(np.float32)
    revived = (b == 0) & (c1 != 0)
    assert report["mask_differences"] == [["fc.weight", [0, int(revived.sum()), 0]]]
    dropped = report["task_vectors"][1]["dropped"]
    assert dropped == pytest.approx(np.sqrt((c1[revived].astype(np.float64) ** 2).sum()), rel=1e-6)
    assert report["task_vectors"][0]["dropped"] == 0
    check(out, base, cands, method, **kw)
    code, _, err = soup("check-mask", "--reference", base, out)
    assert code == 0, err
    # none: the dense result, revived weights included.
    out = tmp_path / "none.safetensors"
    code, report, err = soup("merge", "--base", base, *cands, "-o", out, "--method", method,
                             *args, "--mask-policy", "none")
    assert code == 0, err
    check(out, base, cands, method, masked=False, **kw)
    assert (load_file(str(out))["fc.weight"][revived] != 0).any()


def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, soup):
    base, cands = family(tmp_path, sparse=True)
    b = load_file(str(base))
    missing = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in b.items() if k != "fc.bias"}, str(missing))
    reshaped = tmp_path / "reshaped.safetensors"
    save_file({**b, "fc.bias": np.zeros(32, np.float32)}, str(reshaped))
    cases = [
        (["--base", missing, *cands, "--method", "ties", "--density", "0.5"], "fc.bias"),
        (["--base", reshaped, *cands, "--method", "task-arithmetic"], "fc.bias"),
        (["--base", base, *cands, "--method", "ties"], "density"),
        (["--base", base, *cands, "--method", "uniform"], "base"),
        ([*cands, "--method", "ties", "--density", "0.5"], "base"),
    ]
    for args, word in cases:
        out = tmp_path / "out.safetensors"
        code, _, err = soup("merge", *args, "-o", out)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and word in cli_error(err), err
        assert not out.exists()

