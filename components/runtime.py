"""What the Kubeflow components run: their step's commands from the step table
(``training/steps.py``), the same commands ``dvc repro`` runs, with the task's artifact paths
as the step folders.

A lightweight KFP component is shipped as the source of its one function, so each body in
``components/<step>.py`` only imports this module (installed in the project image, and in the
venv for ``cyclegan pipeline run --local``) and calls ``run_step``.

The pipeline passes one params document (YAML text) plus a few named overrides
(``steps.PIPELINE_OVERRIDES``); each command gets them as ``--params FILE --set key=value``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_params(params: str, folder: Path) -> Path:
    """The params document as a file; an empty document means the typed defaults."""
    import yaml

    path = folder / "params.yaml"
    data = yaml.safe_load(params) if params.strip() else {}
    path.write_text(yaml.safe_dump(data or {}, sort_keys=False))
    return path


def set_environment(image: str = "", tracking_uri: str = "") -> None:
    """Lineage (the image this task runs in), the MLflow server when the pipeline names one,
    and no progress bars in task logs."""
    if image:
        os.environ["CYCLEGAN_IMAGE"] = image
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ.setdefault("TQDM_DISABLE", "1")


def cyclegan(argv: list[str]) -> None:
    """Run one ``cyclegan`` command in this process; a non-zero exit fails the task."""
    from training.cli import main

    print("+ " + " ".join(argv), flush=True)
    code = main(argv[1:])
    if code:
        raise RuntimeError(f"{' '.join(argv[:2])} exited with status {code}")


def run_step(name: str, params: str, folders: dict[str, str], *, options: dict[str, Any] | None = None,
             overrides: dict[str, Any] | None = None, image: str = "", tracking_uri: str = "") -> None:
    """Run step ``name``'s commands with ``folders`` (data, train, eval, export, register:
    the task's artifact paths) and the pipeline's ``options`` (mirror, promote)."""
    from training.steps import BY_NAME, overrides_from

    set_environment(image, tracking_uri)
    step = BY_NAME[name]
    with tempfile.TemporaryDirectory(prefix="cyclegan-params-") as tmp:
        config = ["--params", str(write_params(params, Path(tmp)))]
        for item in overrides_from(overrides or {}):
            config += ["--set", item]
        for argv in step.argv(folders, options):
            cyclegan(argv + config)


def metrics_of(evaluation: str) -> dict[str, float]:
    """The numeric metrics of an evaluation folder (for the KFP Metrics artifact)."""
    from training.layout import Evaluation
    from training.mlops.tracking import numeric_metrics

    return numeric_metrics(json.loads(Evaluation(evaluation).metrics.read_text()))


def selection_of(select: str) -> dict[str, Any]:
    from training.layout import Selection

    return json.loads(Selection(select).scores.read_text())


def decision_of(register: str) -> dict[str, Any]:
    from training.layout import Registration

    return json.loads(Registration(register).decision.read_text())


def report_of(evaluation: str) -> Path:
    from training.layout import Evaluation

    return Evaluation(evaluation).report
