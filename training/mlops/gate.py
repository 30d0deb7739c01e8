"""The promotion gate: may a challenger's metrics replace the champion's? Pure: numbers in,
a verdict per metric out; ``registry.py`` fetches the numbers and moves the aliases.
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


def rule_for(name: str, rc: RegisterConfig) -> Rule:
    """The metric's direction, margin and floor: the spec names the ``register:`` keys."""
    if not can_gate(name):
        raise UserError(f"register.gate_metrics: {name!r} has no gate rule")
    spec = METRICS[name]
    floor = getattr(rc, spec.floor) if spec.floor else None
    return Rule(spec.lower_is_better, getattr(rc, spec.margin), floor)


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, rc: RegisterConfig) -> dict[str, Any]:
    """Metric by metric: may the challenger replace the champion?

    Lower is better: challenger <= champion + margin; higher is better: challenger >=
    champion - margin, and >= the floor where the metric has one (``evaluation/specs.py``
    says which, e.g. KID with ``kid_margin``, domain success with ``success_margin`` and
    ``min_domain_success``). Without a champion only the absolute floors apply. A missing or
    non-finite value fails.
    """
    rows = []
    for name in rc.gate_metrics:
        rule = rule_for(name, rc)
        value = _finite(challenger.get(name))
        champ = _finite(champion.get(name)) if champion is not None else None
        threshold, checks, text = None, [], []
        if champion is not None:
            if champ is None:
                threshold = None
                text.append("champion has no value: compared on floors only")
            elif rule.lower_is_better:
                threshold = champ + rule.margin
                checks.append(value is not None and value <= threshold)
                text.append(f"<= champion + {rule.margin:g}")
            else:
                threshold = champ - rule.margin
                checks.append(value is not None and value >= threshold)
                text.append(f">= champion - {rule.margin:g}")
        if rule.floor is not None:
            checks.append(value is not None and value >= rule.floor)
            text.append(f">= {rule.floor:g} (floor)")
            if threshold is None or (not rule.lower_is_better and rule.floor > threshold):
                threshold = rule.floor
        if value is None:
            checks.append(False)
            text.append("challenger value missing")
        rows.append({"metric": name, "challenger": value, "champion": champ, "threshold": threshold,
                     "rule": "; ".join(text) or "no champion: nothing to compare",
                     "passed": all(checks)})
    return {"metrics": rows, "passed": all(r["passed"] for r in rows)}


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
