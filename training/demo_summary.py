"""What `make demo` prints after `dvc repro`: where everything is, and whether it visibly works.

    python -m training.demo_summary [--runs runs] [--params params.yaml]

"Visibly working" is a list of verdicts, each PASS or FAIL, read from the evaluation's
metrics (names and directions in ``training/evaluation/specs.py``):

  1. every distribution metric beats the untranslated baseline, in both directions: KID and
     the Fréchet distance of G(testA) to testB are lower than those of testA itself to testB,
     and the linear probe calls more of G(testA) "B" than of testA (the same for F(testB)
     against testA). The untranslated images are what the identity map scores: a translator
     that does not beat it has made nothing look more like the other domain;
  2. the synthetic data set's own statistic (``synthetic.domain_score``, the shapes' colour)
     puts at least 90% of the translations on the other side, both directions (only when the
     data are the synthetic set);
  3. cycle PSNR beats its identity baseline: F(G(a)) is closer to a (``cycle_psnr_A``) than the
     cycle with the identity map as the return leg, i.e. the translation G(a) itself
     (``baseline_cycle_psnr_A``), and the same for B. Identity maps both ways would reconstruct
     perfectly but translate nothing (item 1).

A figure missing from the metrics is a FAIL. Exit status 1 when any verdict is FAIL.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

SYNTHETIC_GOAL = 0.90
DIRECTIONS = {"AtoB": ("A->B", "G(testA)", "testB"), "BtoA": ("B->A", "F(testB)", "testA")}


def _show(name: str, value: float) -> str:
    from .evaluation.specs import METRICS

    unit = METRICS[name].unit
    if unit == "share":
        return f"{value:.1%}"
    if unit == "dB":
        return f"{value:.1f} dB"
    return f"{value:.4g}"


def _line(passed: bool, text: str) -> tuple[bool, str]:
    return passed, f"  [{'PASS' if passed else 'FAIL'}] {text}"


def beats_baseline(metrics: dict, name: str, label: str, extra: str = "") -> tuple[bool, str]:
    """PASS when ``name`` is better than ``baseline_<name>`` in the spec's direction."""
    from .evaluation.specs import METRICS

    value, baseline = metrics.get(name), metrics.get(f"baseline_{name}")
    if value is None or baseline is None:
        missing = " and ".join(k for k in (name, f"baseline_{name}") if metrics.get(k) is None)
        return _line(False, f"{label}: {missing} missing from the metrics")
    lower = METRICS[name].lower_is_better
    passed = value < baseline if lower else value > baseline
    return _line(passed, f"{label}: {_show(name, value)} vs untranslated {_show(name, baseline)} "
                         f"({'lower' if lower else 'higher'} is better{extra})")


def verdicts(metrics: dict) -> list[tuple[bool, str]]:
    """(passed, printed line) of every "visibly working" check, in the order printed."""
    lines = []
    for direction, (arrow, translated, target) in DIRECTIONS.items():
        lines.append(beats_baseline(metrics, f"kid_{direction}_mean", f"KID {arrow}, {translated} to {target}"))
        lines.append(beats_baseline(metrics, f"fd_effnet_{direction}",
                                    f"Fréchet distance {arrow}, {translated} to {target}"))
        ceiling = metrics.get(f"probe_ceiling_{direction}")
        extra = "" if ceiling is None else f"; real {target}: {ceiling:.1%}"
        lines.append(beats_baseline(metrics, f"domain_success_{direction}",
                                    f"domain success {arrow}, share of {translated} the probe calls {target[-1]}",
                                    extra))
    for direction, (arrow, translated, target) in DIRECTIONS.items():
        name = f"synthetic_domain_success_{direction}"
        success = metrics.get(name)
        if success is None:
            lines.append((True, f"  [n/a ] synthetic statistic {arrow}: not in the metrics (not the synthetic data set)"))
            continue
        lines.append(_line(success >= SYNTHETIC_GOAL,
                           f"synthetic statistic {arrow}: {success:.0%} of {translated} on the {target[-1]} side "
                           f"(goal >= {SYNTHETIC_GOAL:.0%}; untranslated: "
                           f"{metrics.get(f'baseline_{name}', float('nan')):.0%})"))
    for domain in ("A", "B"):
        name = f"cycle_psnr_{domain}"
        cycle, moved = metrics.get(name), metrics.get(f"baseline_{name}")
        if cycle is None or moved is None:
            lines.append(_line(False, f"cycle PSNR {domain}: {name} or baseline_{name} missing from the metrics"))
            continue
        lines.append(_line(cycle > moved, f"cycle PSNR {domain}: reconstruction {cycle:.1f} dB vs its identity "
                                          f"baseline, the translation itself, {moved:.1f} dB (content kept while "
                                          f"the domain changed)"))
    return lines


def mlflow_lines(run_id_file: Path, tracking_uri: str, model_name: str) -> list[str]:
    lines = []
    if run_id_file.is_file():
        run_id = run_id_file.read_text().strip()
        lines.append(f"  MLflow run       {run_id} in {tracking_uri}")
        if tracking_uri.startswith("sqlite:"):
            lines.append(f"                   browse: mlflow ui --backend-store-uri {tracking_uri}")
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        for alias in ("champion", "challenger"):
            try:
                mv = client.get_model_version_by_alias(model_name, alias)
                lines.append(f"  {alias:<16} models:/{model_name}@{alias} = version {mv.version}")
            except MlflowException:
                lines.append(f"  {alias:<16} (none yet)")
    except Exception as e:  # the summary must not fail on an unreachable server
        lines.append(f"  registry         not reachable: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from .config import load_config
    from .layout import FOLDERS, Evaluation, Export, Registration, TrainRun

    parser = argparse.ArgumentParser(prog="python -m training.demo_summary", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="pipeline output folder (default: runs)")
    parser.add_argument("--params", default="params.yaml", help="params file (for the MLflow store and model name)")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    cfg = load_config(args.params)
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.register.tracking_uri

    folders = {step: runs / Path(path).name for step, path in FOLDERS.items()}   # runs/train, runs/eval, ...
    evaluation, export = Evaluation(folders["eval"]), Export(folders["export"])
    metrics_path = evaluation.metrics
    if not metrics_path.is_file():
        print(f"{metrics_path}: no metrics yet; run `dvc repro` (or `make demo`) first", file=sys.stderr)
        return 1
    m = json.loads(metrics_path.read_text())
    decision_path = Registration(folders["register"]).decision
    print("Where things are")
    print(f"  metrics          {metrics_path}   (dvc metrics show)")
    print(f"  report           {evaluation.report}")
    print(f"  plots            {evaluation.plots}/   (dvc plots show)")
    print(f"  ONNX models      {', '.join(str(p) for p in export.onnx_pair())}")
    print(f"  gate decision    {decision_path}")
    for line in mlflow_lines(TrainRun(folders["train"]).run_id, tracking_uri, cfg.register.model_name):
        print(line)
    if decision_path.is_file():
        decision = json.loads(decision_path.read_text())
        print(f"  gate             {decision['verdict']}: {decision['action']}")

    print("\nDoes it visibly work? (translations against the untranslated test images)")
    results = verdicts(m)
    for _, line in results:
        print(line)
    failed = sum(not passed for passed, _ in results)
    print(f"\n{'all checks pass' if not failed else f'{failed} check(s) FAIL'}")
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main())
