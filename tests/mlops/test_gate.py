"""The promotion gate's rules as a pure function: missing figures never pass, and the best value
any promoted version reached bounds a chain of promotions (issue 13 items 7 and 8)."""
from __future__ import annotations

import math

import pytest

from helpers.mlops import GOOD_METRICS
from training.config import RegisterConfig
from training.mlops.gate import decide


def _rows(decision):
    return {r["metric"]: r for r in decision["metrics"]}


@pytest.mark.parametrize("hole", ["missing", "nan", "inf", "text"])
def test_a_champion_without_a_figure_never_lets_a_challenger_pass_on_floors(hole):
    """Item 7: a champion with a missing or NaN metric used to be 'compared on floors only', and
    KID and PSNR have no floor: a challenger with KID 9 and cycle PSNR 1 dB passed."""
    champion = dict(GOOD_METRICS)
    for name in ("kid_AtoB_mean", "kid_BtoA_mean", "cycle_psnr_A", "cycle_psnr_B"):
        if hole == "missing":
            del champion[name]
        else:
            champion[name] = {"nan": math.nan, "inf": math.inf, "text": "n/a"}[hole]
    awful = {**GOOD_METRICS, "kid_AtoB_mean": 9.0, "kid_BtoA_mean": 9.0, "cycle_psnr_A": 1.0, "cycle_psnr_B": 1.0}
    decision = decide(awful, champion, RegisterConfig())
    assert not decision["passed"]
    rows = _rows(decision)
    failed = sorted(name for name, row in rows.items() if not row["passed"])
    assert failed == ["cycle_psnr_A", "cycle_psnr_B", "kid_AtoB_mean", "kid_BtoA_mean"]
    for name in failed:
        assert rows[name]["champion"] is None
        assert "champion" in rows[name]["reason"] and "missing or not finite" in rows[name]["reason"]
    # the same holds for a challenger that is a copy of the champion: a hole is never a pass
    assert not decide(champion, champion, RegisterConfig())["passed"]


def test_a_challenger_hole_fails_with_its_reason():
    metrics = {**GOOD_METRICS, "domain_success_BtoA": math.nan}
    row = _rows(decide(metrics, GOOD_METRICS, RegisterConfig()))["domain_success_BtoA"]
    assert not row["passed"] and "challenger" in row["reason"]


def test_the_best_promoted_value_tightens_the_threshold():
    """Item 8: the threshold is the tighter of champion +/- margin and best promoted +/- margin."""
    rc = RegisterConfig(kid_margin=0.002, psnr_margin=0.5)
    champion = {**GOOD_METRICS, "kid_AtoB_mean": 0.012, "cycle_psnr_A": 24.0}
    best = {"kid_AtoB_mean": {"value": 0.010, "version": "1"}, "cycle_psnr_A": {"value": 25.0, "version": "1"},
            # a best worse than the champion (a rolled-back champion restored) does not loosen anything
            "kid_BtoA_mean": {"value": 0.020, "version": "3"}}
    ok = {**GOOD_METRICS, "kid_AtoB_mean": 0.012, "cycle_psnr_A": 24.5}
    decision = decide(ok, champion, rc, best=best)
    assert decision["passed"], decision
    rows = _rows(decision)
    assert rows["kid_AtoB_mean"]["threshold"] == pytest.approx(0.012)
    assert rows["cycle_psnr_A"]["threshold"] == pytest.approx(24.5)
    assert rows["kid_BtoA_mean"]["threshold"] == pytest.approx(GOOD_METRICS["kid_BtoA_mean"] + 0.002)
    assert (rows["kid_AtoB_mean"]["best_promoted"], rows["kid_AtoB_mean"]["best_promoted_version"]) == (0.010, "1")
    assert "best promoted" in rows["kid_AtoB_mean"]["rule"]

    # within the champion's margin but not the best's: fails, and says which bound
    worse = {**GOOD_METRICS, "kid_AtoB_mean": 0.0135, "cycle_psnr_A": 24.2}
    rows = _rows(decide(worse, champion, rc, best=best))
    assert not rows["kid_AtoB_mean"]["passed"] and "best promoted (version 1)" in rows["kid_AtoB_mean"]["reason"]
    assert not rows["cycle_psnr_A"]["passed"] and "best promoted (version 1)" in rows["cycle_psnr_A"]["reason"]

    # without a champion (the alias was removed) the best still binds
    assert not decide(worse, None, rc, best=best)["passed"]


def test_a_chain_of_small_regressions_drifts_at_most_one_margin():
    """Five challengers, each one margin worse than the last, against the gate alone: only the
    first gets through, so the champion ends at most one margin from the best ever promoted."""
    rc = RegisterConfig(kid_margin=0.002, psnr_margin=0.5)
    champion = dict(GOOD_METRICS)
    best = {name: {"value": champion[name], "version": "1"} for name in rc.gate_metrics}
    promoted = [champion]
    for step in range(1, 6):
        challenger = {**GOOD_METRICS, "kid_AtoB_mean": champion["kid_AtoB_mean"] + 0.002,
                      "cycle_psnr_A": champion["cycle_psnr_A"] - 0.5}
        if decide(challenger, champion, rc, best=best)["passed"]:
            champion = challenger
            promoted.append(challenger)
            for name in rc.gate_metrics:   # what the registry keeps: the best any promoted version reached
                better = challenger[name] < best[name]["value"] if name.startswith("kid") \
                    else challenger[name] > best[name]["value"]
                if better:
                    best[name] = {"value": challenger[name], "version": str(step + 1)}
    assert len(promoted) == 2
    assert champion["kid_AtoB_mean"] - GOOD_METRICS["kid_AtoB_mean"] <= 0.002 + 1e-12
    assert GOOD_METRICS["cycle_psnr_A"] - champion["cycle_psnr_A"] <= 0.5 + 1e-12
