"""sparse_soups.schedules against the trainer's own definitions: the values
`trainer schedule` (a hidden subcommand that evaluates the functions the
pipeline uses) prints, compared one by one, and the hand-computed values of
the trainer's unit tests."""

from __future__ import annotations

import json
import math
import os
import subprocess
from itertools import product
from pathlib import Path

import pytest

from sparse_soups.schedules import (
    allr_peak,
    iterations,
    phase_sparsities,
    pretrain_lr,
    retrain_lr,
    retrain_warmup,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def trainer():
    """Runs `trainer schedule ARGS...` and returns its JSON. The binary is
    $TRAINER_BIN or target/release/trainer (`cargo build --release -p
    trainer`, needs libtorch); missing, the comparison tests fail."""
    path = Path(os.environ.get("TRAINER_BIN", REPO / "target" / "release" / "trainer"))
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `cargo build --release -p trainer` or set TRAINER_BIN")

    def run(**kw: object) -> dict:
        args = [str(path), "schedule"]
        for k, v in kw.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        p = subprocess.run(args, capture_output=True, text=True, check=False)
        assert p.returncode == 0, f"{' '.join(args)}: {p.stderr}"
        return json.loads(p.stdout)

    return run


def same(a: float, b: float) -> bool:
    return a == pytest.approx(b, rel=1e-13, abs=1e-16)


@pytest.mark.parametrize("target,phases", [(0.9, 3), (0.98, 3), (0.5, 1), (0.0, 2), (0.99, 7), (0.75, 2)])
def test_phase_sparsities_match_the_trainer(trainer, target: float, phases: int) -> None:
    ref = trainer(sparsity=target, phases=phases, total=1, pretrain_total=1)
    got = phase_sparsities(target, phases)
    assert same(got.fraction, ref["prune_fraction"])
    assert len(got.after) == phases
    assert all(same(a, b) for a, b in zip(got.after, ref["target_sparsity"], strict=True))
    assert math.isclose(got.after[-1], target, abs_tol=1e-12)


PEAKS = [
    # norm before, after, q, retrain epochs, pretrain epochs: clipped to lr,
    # clipped up to lo, passing through, no pruning, a zero norm.
    (10.0, 8.0, 0.36, 2.0, 10.0),
    (10.0, 9.95, 0.25, 2.0, 10.0),
    (10.0, 9.0, 0.49, 1.0, 10.0),
    (3.0, 3.0, 0.0, 0.3, 2.0),
    (0.0, 0.0, 0.5, 0.3, 2.0),
    (41.2, 39.7, 0.5358, 0.3, 2.0),
    (41.2, 39.7, 0.5358, 5.0, 2.0),
]


@pytest.mark.parametrize("before,after,q,retrain,pretrain", PEAKS)
def test_allr_peak_matches_the_trainer(trainer, before, after, q, retrain, pretrain) -> None:
    ref = trainer(total=10, pretrain_total=10, lr=0.1, norm_before=before, norm_after=after,
                  fraction=q, retrain_epochs=retrain, pretrain_epochs=pretrain)  # fmt: skip
    assert same(allr_peak(before, after, q, 0.1, retrain, pretrain), ref["allr_peak"])


# Every retraining schedule over odd and even lengths (T = 5 and 15 and 25
# warm up for round-half-up 1, 2 and 3 iterations) and every pretraining
# shape, with and without a pretraining warm-up.
CASES = [
    (kind, total, pkind, pwarm)
    for kind, total, (pkind, pwarm) in product(
        ["allr", "llr", "clr", "slr", "lrw", "ft"],
        [1, 5, 15, 25, 100],
        [("cosine", 0), ("step", 0), ("linear", 7), ("constant", 0)],
    )
    if pkind == "cosine" or total in (15, 100)
]


@pytest.mark.parametrize("kind,total,pkind,pwarm", CASES)
def test_retrain_lr_matches_the_trainer_step_by_step(trainer, kind, total, pkind, pwarm) -> None:
    ptotal = 60
    ref = trainer(kind=kind, total=total, lr=0.1, pretrain_schedule=pkind, pretrain_total=ptotal,
                  pretrain_warmup=pwarm, norm_before=10.0, norm_after=9.0, fraction=0.49,
                  retrain_epochs=1.0, pretrain_epochs=10.0)  # fmt: skip
    assert retrain_warmup(total, kind) == ref["warmup"]
    peak = ref["allr_peak"]
    assert same(allr_peak(10.0, 9.0, 0.49, 0.1, 1.0, 10.0), peak)
    got = [
        retrain_lr(it, total, lr=0.1, kind=kind, peak=peak, pretrain_total=ptotal,
                   pretrain_kind=pkind, pretrain_warmup=pwarm)  # fmt: skip
        for it in range(total)
    ]
    assert len(ref["lr"]) == total
    bad = [(i, g, r) for i, (g, r) in enumerate(zip(got, ref["lr"], strict=True)) if not same(g, r)]
    assert not bad, bad[:5]
    pre = [pretrain_lr(it, peak=0.1, total=ptotal, kind=pkind, warmup=pwarm) for it in range(ptotal)]
    assert all(same(g, r) for g, r in zip(pre, ref["pretrain_lr"], strict=True))


def test_schedules_by_hand_as_the_trainer_unit_tests() -> None:
    # trainer/src/sms/lr.rs: T = 100, W = 10, ALLR peak 0.05.
    lr = [retrain_lr(it, 100, lr=0.1, peak=0.05) for it in range(100)]
    assert lr[0] == pytest.approx(0.05 * 0.5 * (1 - math.cos(math.pi / 10)), abs=1e-15)
    assert lr[4] == pytest.approx(0.025, abs=1e-12) and lr[9] == pytest.approx(0.05, abs=1e-12)
    assert lr[55] == pytest.approx(0.025, abs=1e-12) and lr[99] == pytest.approx(0.05 / 90, abs=1e-12)
    pre = dict(pretrain_total=1000, pretrain_kind="linear")
    assert retrain_lr(55, 100, lr=0.1, kind="llr") == pytest.approx(0.05, abs=1e-12)
    assert retrain_lr(0, 100, lr=0.1, kind="ft", **pre) == pytest.approx(1e-4, abs=1e-12)
    assert retrain_lr(0, 100, lr=0.1, kind="lrw", **pre) == pytest.approx(0.01, abs=1e-12)
    assert retrain_lr(55, 100, lr=0.1, kind="slr", **pre) == pytest.approx(0.05, abs=1e-12)
    assert retrain_lr(55, 100, lr=0.1, kind="clr", **pre) == pytest.approx(1e-4 + (0.1 - 1e-4) * 0.5, abs=1e-12)
    assert allr_peak(10, 8, 0.36, 0.1, 2, 10) == pytest.approx(0.1, abs=1e-12)
    assert allr_peak(10, 9.95, 0.25, 0.1, 2, 10) == pytest.approx(0.02, abs=1e-12)
    # trainer/src/sms/config.rs: 98% in 3 phases.
    assert phase_sparsities(0.98, 3).fraction == pytest.approx(0.728558, abs=1e-6)
    # Rounding halves up, as the trainer does (Python's round would give 0 and 2).
    assert retrain_warmup(5) == 1 and retrain_warmup(25) == 3
    assert iterations(0.5, 5) == 3 and iterations(0.0, 100) == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="target sparsity"):
        phase_sparsities(1.0, 3)
    with pytest.raises(ValueError, match="phases"):
        phase_sparsities(0.5, 0)
    with pytest.raises(ValueError, match="ALLR needs its peak"):
        retrain_lr(0, 10, lr=0.1)
    with pytest.raises(ValueError, match="pretrain_total"):
        retrain_lr(0, 10, lr=0.1, kind="ft")
    with pytest.raises(ValueError, match="unknown retraining schedule"):
        retrain_lr(0, 10, lr=0.1, kind="warm")  # type: ignore[arg-type]
