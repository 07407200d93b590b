"""The file API against `soup ... --json` on the same inputs: the same
reports, byte-identical outputs, the same error messages."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import LEVELS, cli_error, scripted_scores, write_evaluator
from safetensors.numpy import load_file, save_file

import sparse_soups as ss


def without(report: dict, *keys: str) -> dict:
    return {k: v for k, v in report.items() if k not in keys}


def test_merge_matches_cli(family, soup, tmp_path: Path) -> None:
    inputs = [family["c0"], family["c1"], family["c2"]]
    py_out, cli_out = tmp_path / "py.safetensors", tmp_path / "cli.safetensors"
    report = ss.merge(inputs, py_out)
    code, cli, _ = soup("merge", *inputs, "-o", cli_out)
    assert code == 0
    assert report["outputs"] == [str(py_out)]
    assert without(report, "outputs") == without(cli, "outputs")
    assert py_out.read_bytes() == cli_out.read_bytes()


def test_weighted_union_merge_with_dtype_matches_cli(family, soup, tmp_path: Path) -> None:
    inputs = [family["c0"], family["odd"]]
    py_out, cli_out = tmp_path / "py.safetensors", tmp_path / "cli.safetensors"
    report = ss.merge(inputs, py_out, weights=[3, 1], mask_policy="union", dtype="BF16")
    code, cli, _ = soup(
        "merge", *inputs, "-o", cli_out, "--weights", "3,1", "--mask-policy", "union",
        "--dtype", "BF16",
    )
    assert code == 0
    assert report["mask_differences"], "the odd candidate's mask differs"
    assert without(report, "outputs") == without(cli, "outputs")
    assert py_out.read_bytes() == cli_out.read_bytes()


@pytest.mark.parametrize("reference", [False, True])
def test_check_mask_matches_cli(family, soup, reference: bool) -> None:
    inputs = [family["c0"], family["c1"], family["odd"]]
    ref = ["--reference", family["parent"]] if reference else []
    report = ss.check_mask(inputs, family["parent"] if reference else None, exclude=["bias$"])
    code, cli, _ = soup("check-mask", *inputs, *ref, "--exclude", "bias$")
    assert code == 1 and not report["identical"]
    assert report == cli
    same = ss.check_mask([family["c0"], family["c1"]], family["parent"])
    assert same["identical"]


@pytest.mark.parametrize(
    "options, flags",
    [
        ({}, []),
        ({"scope": "layer"}, ["--scope", "layer"]),
        ({"of_remaining": True, "exclude": ["^fc"]}, ["--of-remaining", "--exclude", "^fc"]),
    ],
)
def test_prune_matches_cli(family, soup, tmp_path: Path, options, flags) -> None:
    py_out, cli_out = tmp_path / "py.safetensors", tmp_path / "cli.safetensors"
    report = ss.prune(family["c0"], py_out, 0.7, **options)
    code, cli, _ = soup("prune", family["c0"], "-o", cli_out, "--sparsity", "0.7", *flags)
    assert code == 0
    assert without(report, "outputs") == without(cli, "outputs")
    assert py_out.read_bytes() == cli_out.read_bytes()
    plan = ss.prune(family["c0"], None, 0.7, **options)
    code, dry, _ = soup("prune", family["c0"], "--dry-run", "--sparsity", "0.7", *flags)
    assert plan == dry and plan["removed"] == report["removed"]


def test_inspect_matches_cli(family, soup) -> None:
    for headers_only in (False, True):
        report = ss.inspect(family["parent"], headers_only=headers_only)
        code, cli, _ = soup("inspect", family["parent"], *(["--headers-only"] if headers_only else []))
        assert code == 0 and report == cli
    assert report["tensors"][0]["zeros"] is None


def test_diff_matches_cli(family, soup) -> None:
    for atol in (0.0, 1.0):
        report = ss.diff(family["c0"], family["c1"], atol=atol)
        code, cli, _ = soup("diff", family["c0"], family["c1"], "--atol", atol)
        assert report == cli
        assert code == (0 if report["equal"] else 1)
    assert not ss.diff(family["c0"], family["c1"])["equal"]
    assert ss.diff(family["c0"], family["c0"])["equal"]


def test_hash_matches_cli(family, soup) -> None:
    report = ss.hash(family["parent"])
    code, cli, _ = soup("hash", family["parent"])
    assert code == 0 and report == cli and report["digest"].startswith("blake3:")
    report = ss.hash(family["parent"], digest="sha256")
    code, cli, _ = soup("--digest", "sha256", "hash", family["parent"])
    assert code == 0 and report == cli and report["digest"].startswith("sha256:")


def test_distance_matches_cli(family, soup) -> None:
    inputs = [family["c0"], family["c1"], family["c2"]]
    report = ss.distance(inputs, exclude=["^bn"])
    code, cli, _ = soup("distance", *inputs, "--exclude", "^bn")
    assert code == 0 and report == cli
    assert report["l2"][0][0] == 0 and report["l2"][0][1] > 0


def test_merge_report_hashes_are_the_inputs_hashes(family, tmp_path: Path) -> None:
    report = ss.merge([family["c0"], family["c1"]], tmp_path / "m.safetensors")
    assert report["input_digest"] == [ss.hash(family[c])["digest"] for c in ("c0", "c1")]


@pytest.mark.parametrize("strict", [False, True])
def test_greedy_merge_matches_cli(tmp_path: Path, soup, strict: bool) -> None:
    table = scripted_scores()
    script = write_evaluator(tmp_path, table)
    paths = []
    for i, level in enumerate(LEVELS):
        paths.append(tmp_path / f"c{i}.safetensors")
        save_file({"w": np.full((2, 3), level, np.float32)}, str(paths[-1]))
    seen = []

    def evaluate(path: str) -> float:
        seen.append(path)
        w = load_file(path)["w"]
        return table[f"{w.astype(float).mean():.6f}"]

    py_out, cli_out = tmp_path / "py.safetensors", tmp_path / "cli.safetensors"
    report = ss.greedy_merge(paths, py_out, evaluate, strict=strict)
    flags = ["--strict"] if strict else []
    code, cli, err = soup(
        "merge", *paths, "-o", cli_out, "--greedy", "--eval-cmd", f"{sys.executable} {script} {{}}", *flags
    )
    assert code == 0, err
    assert without(report, "merge") == without(cli, "merge")
    assert without(report["merge"], "outputs") == without(cli["merge"], "outputs")
    assert load_file(str(py_out))["w"].tobytes() == load_file(str(cli_out))["w"].tobytes()
    assert len(seen) == 4 + 3  # every candidate, then one trial per other candidate
    assert report["chosen"] == [str(paths[i]) for i in ([1, 2] if strict else [1, 3, 0])]


def test_greedy_merge_passes_evaluator_exceptions_through(family, tmp_path: Path) -> None:
    class Broken(Exception):
        pass

    def evaluate(path: str) -> float:
        raise Broken(path)

    out = tmp_path / "g.safetensors"
    with pytest.raises(Broken):
        ss.greedy_merge([family["c0"], family["c1"]], out, evaluate)
    with pytest.raises(ss.EvaluatorError, match="'high'"):
        ss.greedy_merge([family["c0"], family["c1"]], out, lambda p: "high")
    assert not out.exists() and not list(tmp_path.glob(".soup-greedy-*"))


# ----- errors: the class by kind, the message the CLI prints -----


def test_bad_checkpoint(tmp_path: Path, soup) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 8 + b"not a header")
    with pytest.raises(ss.BadCheckpoint) as e:
        ss.inspect(bad)
    code, _, err = soup("inspect", bad)
    assert code == 2 and str(e.value) == cli_error(err)
    assert str(bad) in str(e.value)


def test_missing_file(tmp_path: Path, soup) -> None:
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ss.SoupIOError) as e:
        ss.hash(missing)
    assert isinstance(e.value, OSError)
    assert str(e.value) == cli_error(soup("hash", missing)[2])


def test_output_exists_is_refused_and_kept(family, soup) -> None:
    target = family["odd"]
    before = target.read_bytes()
    with pytest.raises(ss.OutputExists) as e:
        ss.merge([family["c0"], family["c1"]], target)
    cli = cli_error(soup("merge", family["c0"], family["c1"], "-o", target)[2])
    assert str(e.value) == cli.replace("--force", "force=True")
    assert target.read_bytes() == before
    ss.merge([family["c0"], family["c1"]], target, force=True)
    assert target.read_bytes() != before


def test_mask_mismatch(family, soup, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    with pytest.raises(ss.MaskMismatch) as e:
        ss.merge([family["c0"], family["odd"]], out)
    assert isinstance(e.value, ss.IncompatibleCheckpoints)
    cli = cli_error(soup("merge", family["c0"], family["odd"], "-o", out)[2])
    # The same line, with the CLI's hint in this API's words.
    assert str(e.value) == cli.replace(
        "`soup check-mask`, or merge anyway with --mask-policy union|intersect"
        " (base|none with --base)",
        'check_mask(), or merge anyway with mask_policy="union" or "intersect"',
    )
    assert not out.exists()


def test_incompatible_shapes(family, soup, tmp_path: Path) -> None:
    other = tmp_path / "other.safetensors"
    save_file({"conv.weight": np.zeros((2, 2), np.float32)}, str(other))
    out = tmp_path / "m.safetensors"
    with pytest.raises(ss.IncompatibleCheckpoints) as e:
        ss.merge([family["c0"], other], out)
    assert not isinstance(e.value, ss.MaskMismatch)
    assert str(e.value) == cli_error(soup("merge", family["c0"], other, "-o", out)[2])


@pytest.mark.parametrize(
    "call",
    [
        lambda f, t: ss.prune(f["c0"], t, 1.5),
        lambda f, t: ss.merge([f["c0"], f["c1"]], t, weights=[1, -1]),
        lambda f, t: ss.merge([f["c0"], f["c1"]], t, mask_policy="maybe"),
        lambda f, t: ss.merge([f["c0"]], t, dtype="I32"),
        lambda f, t: ss.check_mask([f["c0"]]),
        lambda f, t: ss.merge([f["c0"], f["c1"]], f["c0"], force=True),
    ],
)
def test_invalid_arguments(family, tmp_path: Path, call) -> None:
    with pytest.raises(ss.InvalidArgument) as e:
        call(family, tmp_path / "out.safetensors")
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
    assert not (tmp_path / "out.safetensors").exists()


@pytest.fixture
def big_inputs(tmp_path: Path) -> list[Path]:
    """Three 16 MiB checkpoints: with a 64 KiB budget, a merge of them
    takes hundreds of windows."""
    rng = np.random.default_rng(1)
    inputs = []
    for i in range(3):
        path = tmp_path / f"big{i}.safetensors"
        save_file({"w": rng.standard_normal((2048, 2048)).astype(np.float32)}, str(path))
        inputs.append(path)
    return inputs


def test_long_work_releases_the_gil(big_inputs: list[Path], tmp_path: Path) -> None:
    worker = threading.Thread(
        target=ss.merge, args=(big_inputs, tmp_path / "soup.safetensors"), kwargs={"budget": 1 << 16}
    )
    ticks = 0
    worker.start()
    while worker.is_alive():  # runs only while the merge has let go of the GIL
        ticks += 1
        time.sleep(0.001)
    worker.join()
    assert ticks > 5 and (tmp_path / "soup.safetensors").exists()


def test_ctrl_c_stops_a_merge_and_writes_nothing(big_inputs: list[Path], tmp_path: Path) -> None:
    inputs = big_inputs
    out = tmp_path / "soup.safetensors"
    # SIGINT shortly after the merge starts; Python's default handler turns
    # it into KeyboardInterrupt once the core polls for signals. 4 KiB
    # windows make the merge take far longer than the 10 ms before the
    # signal however fast the machine (tens of thousands of windows).
    # A process started in the background by a non-interactive shell
    # inherits SIGINT ignored, and Python then leaves it so: install
    # Python's own handler for the test.
    signal.setitimer(signal.ITIMER_REAL, 0.0)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old = signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        with pytest.raises(KeyboardInterrupt):
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            ss.merge(inputs, out, budget=1 << 12)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, old)
        signal.signal(signal.SIGINT, old_int)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"big{i}.safetensors" for i in range(3)]
