"""The model card: the Markdown description each registered version carries, which the MLflow
UI shows on the version's page. Pure: the registry (``registry.py``) gathers the facts and
writes the text with ``update_model_version``.

What a person deciding about a version needs on one page: the data set (source, the hash of
its manifest, the split sizes), how long it trained and which epoch's checkpoint this is (and
how it was chosen), the headline metrics on the test split beside the champion's and the
untranslated baseline's (``baseline_*``), the gate's verdict with its reasons, where the
evaluation report is, and the evaluation fingerprint that says what exactly was measured.
The figures stay on the run as metrics; the version's tags keep lineage and what automation
filters on.
"""
from __future__ import annotations

import math
from typing import Any

from ..evaluation.specs import METRICS


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3e}"


def _code(text: Any) -> str:
    return f"`{text}`" if text not in (None, "") else "–"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def checkpoint_line(selection: dict | None, checkpoint_epoch: Any) -> str:
    """Which checkpoint this version is, and how it was chosen."""
    if not selection:
        return (f"epoch {checkpoint_epoch} (no selection record: registered from a trainer checkpoint)"
                if checkpoint_epoch is not None else "unknown (registered without --checkpoint)")
    epoch, kept = selection.get("epoch"), selection.get("kept_epochs") or []
    trained = selection.get("epochs_trained")
    of = f" of {trained}" if trained is not None else ""
    if selection.get("mode") == "best":
        how = {"kid": "validation KID (mean of both directions)",
               "domain_success": "validation domain success (mean of both directions)"}.get(
            selection.get("metric"), str(selection.get("metric")))
        score = selection.get("score")
        return (f"epoch **{epoch}**{of}: the best of {len(kept)} kept epoch checkpoints by {how}"
                + (f" = {_number(score)}" if score is not None else "")
                + ", scored on training images, not the test split")
    return f"epoch **{epoch}**{of}: the latest checkpoint (`evaluate.select: latest`, no epoch scored)"


def model_card(*, model_name: str, version: str, decision: dict, metrics: dict, data: dict, training: dict,
               selection: dict | None, checkpoint_epoch: Any, report: dict | None) -> str:
    """The version's description (Markdown).

    ``decision``: the gate's decision (``registry.register``); ``metrics``: the challenger's
    evaluation; ``data``: source, manifest_sha256, counts; ``training``: run_id, epochs;
    ``selection``: the checkpoint's selection record; ``report``: uri, link (or None when the
    run holds no report)."""
    verdict, action = decision.get("verdict"), decision.get("action", "")
    champion = decision.get("champion_version")
    if action == "promoted":
        outcome = "promoted to champion" + (f" (replacing version {champion})" if champion else "")
    elif str(decision.get("champion_after")) == str(version):
        outcome = "champion"
    else:
        after = decision.get("champion_after")
        outcome = (f"not promoted ({action.removeprefix('none: ')}); "
                   + (f"champion is version {after}" if after else "no champion yet"))
    lines = [f"### {model_name} version {version}: gate **{verdict}**, {outcome}", ""]

    counts = data.get("counts") or {}
    sizes = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    rows = [
        ("Data set", f"{data.get('source') or 'unknown source'}; manifest sha256 {_code(data.get('manifest_sha256'))}"
                     + (f"; {sizes}" if sizes else "")),
        ("Test split", f"manifest hash {_code(metrics.get('test_manifest_sha256'))}"),
        ("Training", f"{_number(training.get('epochs'))} epochs; run {_code(training.get('run_id'))}"),
        ("Checkpoint", checkpoint_line(selection, checkpoint_epoch)),
        ("Evaluation fingerprint", _code(metrics.get("evaluation_fingerprint"))),
    ]
    if report:
        rows.append(("Evaluation report", f"[{report['path']}]({report['link']}) ({_code(report['uri'])})"))
    else:
        rows.append(("Evaluation report", "not logged with this run"))
    lines += ["| | |", "|---|---|", *[f"| **{k}** | {_cell(v)} |" for k, v in rows], ""]

    champion_head = f"champion (v{champion})" if champion and str(champion) != str(version) else "champion"
    lines += ["#### Headline metrics (test split)", "",
              f"| metric | better | this version | {champion_head} | untranslated | gate |",
              "|---|---|---|---|---|---|"]
    for row in decision.get("metrics", []):
        name = row["metric"]
        spec = METRICS.get(name)
        mark = "pass" if row.get("passed") else "**fail**"
        threshold = row.get("threshold")
        gate = mark + (f" (threshold {_number(threshold)})" if threshold is not None else "")
        lines.append(f"| `{name}` | {spec.better if spec and spec.better else '–'} | {_number(row.get('challenger'))} "
                     f"| {_number(row.get('champion'))} | {_number(metrics.get(f'baseline_{name}'))} | {gate} |")
    lines.append("")
    reasons = decision.get("reasons") or []
    lines += ["#### Gate", "", f"**{verdict}**: {decision.get('champion_metrics_source', '')}; action: {action}.", ""]
    lines += [f"- {_cell(reason)}" for reason in reasons]
    if reasons:
        lines.append("")
    lines.append("The figures are on the run as metrics; `untranslated` is the identity map measured the same way.")
    return "\n".join(lines) + "\n"
