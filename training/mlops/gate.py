"""The promotion gate: may a challenger's metrics replace the champion's? Pure: numbers in,
a verdict per metric out; ``registry.py`` fetches the numbers and moves the aliases.

Two references bound each metric, both measured on the challenger's evaluation fingerprint:
the champion's value, and the best value any promoted version reached (``best``). Checking
only the champion lets a chain of promotions, each within the margin of the last, drift
without limit (five promotions 0.002 worse each doubled KID from 0.010 to 0.020); checking the
best as well caps the drift of the whole chain at one margin. A figure that is missing or not
finite on either side fails its metric, with the reason: a hole is never a pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config import RegisterConfig
from ..errors import UserError
from ..evaluation.specs import METRICS, can_gate


@dataclass(frozen=True)
class Rule:
    lower_is_better: bool
    margin: float
    floor: float | None = None

    def bound(self, reference: float) -> float:
        """The worst value allowed relative to ``reference``."""
        return reference + self.margin if self.lower_is_better else reference - self.margin

    def within(self, value: float, bound: float) -> bool:
        return value <= bound if self.lower_is_better else value >= bound

    def tighter(self, a: float, b: float) -> float:
        return min(a, b) if self.lower_is_better else max(a, b)


def rule_for(name: str, rc: RegisterConfig) -> Rule:
    """The metric's direction, margin and floor: the spec names the ``register:`` keys."""
    if not can_gate(name):
        raise UserError(f"register.gate_metrics: {name!r} has no gate rule")
    spec = METRICS[name]
    floor = getattr(rc, spec.floor) if spec.floor else None
    return Rule(spec.lower_is_better, getattr(rc, spec.margin), floor)


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, rc: RegisterConfig,
           best: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Metric by metric: may the challenger replace the champion?

    Lower is better: challenger <= champion + margin and <= best promoted + margin; higher is
    better: challenger >= champion - margin and >= best promoted - margin, and >= the floor
    where the metric has one (``evaluation/specs.py`` says which, e.g. KID with ``kid_margin``,
    domain success with ``success_margin`` and ``min_domain_success``). ``champion`` None means
    there is none; an empty dict means there is one whose figures could not be had, and every
    metric fails. ``best`` maps a metric to ``{"value", "version"}``. Without a champion and
    without a best only the absolute floors apply (the first promotion).
    """
    rows = []
    for name in rc.gate_metrics:
        rule = rule_for(name, rc)
        value = finite(challenger.get(name))
        champ = finite(champion.get(name)) if champion is not None else None
        ref = (best or {}).get(name) or {}
        best_value, best_version = finite(ref.get("value")), ref.get("version")
        limits, text, reasons = [], [], []   # limits: (bound, what it is, True for a maximum)
        sign, plus = ("<=", "+") if rule.lower_is_better else (">=", "-")
        if champion is not None:
            text.append(f"{sign} champion {plus} {rule.margin:g}")
            if champ is None:
                reasons.append("champion value missing or not finite: nothing to compare with")
            else:
                limits.append((rule.bound(champ), f"champion {plus} {rule.margin:g}", rule.lower_is_better))
        if best_value is not None:
            what = f"best promoted (version {best_version}) {plus} {rule.margin:g}"
            text.append(f"{sign} {what}")
            limits.append((rule.bound(best_value), what, rule.lower_is_better))
        threshold = None
        for bound, _, _ in limits:
            threshold = bound if threshold is None else rule.tighter(threshold, bound)
        if rule.floor is not None:   # a floor is a minimum whichever way the metric is better
            text.append(f">= {rule.floor:g} (floor)")
            limits.append((rule.floor, "the floor", False))
            if threshold is None or (not rule.lower_is_better and rule.floor > threshold):
                threshold = rule.floor
        if value is None:
            reasons.append("challenger value missing or not finite")
        else:
            for bound, what, maximum in limits:
                if not (value <= bound if maximum else value >= bound):
                    reasons.append(f"{value:g} {'>' if maximum else '<'} {bound:g} = {what}")
        rows.append({"metric": name, "challenger": value, "champion": champ, "threshold": threshold,
                     "best_promoted": best_value, "best_promoted_version": best_version if best_value is not None
                     else None,
                     "rule": "; ".join(text) or "no champion: nothing to compare",
                     "passed": not reasons, "reason": "; ".join(reasons) or None})
    return {"metrics": rows, "passed": all(r["passed"] for r in rows)}


def finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
