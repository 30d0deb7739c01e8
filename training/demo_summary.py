"""What `make demo` prints after `dvc repro`: where everything is, and whether it visibly works.

    python -m training.demo_summary [--runs runs]

The "visibly working" figures of the default (synthetic) profile:
  1. the synthetic data set's domain statistic puts >= 90% of G(testA) on the B side
     (``synthetic_domain_success_AtoB``; the untranslated images score its baseline, ~0%);
  2. cycle PSNR beats its identity baseline: F(G(a)) is closer to a (``cycle_psnr_A``) than the
     cycle with the identity map as the return leg, i.e. the translation G(a) itself
     (``baseline_cycle_psnr_A``), and the same for B. Identity maps both ways would reconstruct
     perfectly but translate nothing (figure 1).
Exit status 1 when a figure misses its goal.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

SUCCESS_GOAL = 0.90


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

    print("\nDoes it visibly work?")
    ok = True
    success = m.get("synthetic_domain_success_AtoB")
    if success is None:
        print("  synthetic domain statistic: not available (not the synthetic data set)")
    else:
        passed = success >= SUCCESS_GOAL
        ok &= passed
        print(f"  [{'PASS' if passed else 'FAIL'}] G(testA) on the B side by the synthetic statistic: "
              f"{success:.0%} (goal >= {SUCCESS_GOAL:.0%}; untranslated: "
              f"{m.get('baseline_synthetic_domain_success_AtoB', float('nan')):.0%})")
    for domain in ("A", "B"):
        cycle, moved = m.get(f"cycle_psnr_{domain}"), m.get(f"baseline_cycle_psnr_{domain}")
        if cycle is None or moved is None:
            print(f"  cycle PSNR {domain}: not available")
            continue
        passed = cycle > moved
        ok &= passed
        print(f"  [{'PASS' if passed else 'FAIL'}] cycle PSNR {domain}: reconstruction {cycle:.1f} dB vs its "
              f"identity baseline, the translation itself, {moved:.1f} dB (content kept while the domain changed)")
    for direction in ("AtoB", "BtoA"):
        kid, base = m.get(f"kid_{direction}_mean"), m.get(f"baseline_kid_{direction}_mean")
        if kid is not None and base is not None:
            print(f"  KID {direction}: {kid:.4f} (untranslated: {base:.4f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
