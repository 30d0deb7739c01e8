"""What the Kubeflow components run: their step's commands from the step table
(``training/steps.py``), the same commands ``dvc repro`` runs, with the task's artifact paths
as the step folders.

A lightweight KFP component is shipped as the source of its one function, so each body in
``components/<step>.py`` only imports this module (installed in the project image, and in the
venv for ``cyclegan pipeline run --local``) and calls ``run_step``.

The pipeline passes one params document (YAML text) plus a few named overrides
(``steps.PIPELINE_OVERRIDES``); each command gets them as ``--params FILE --set key=value``.

Also here: the content keys the cached tasks are keyed on (``fingerprint``, ``train_key``) and
the sweep's parts (``apply_variant``, ``rank_candidates``, ``copy_candidate``).
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


def data_key(data: str | Path) -> str:
    """The content hash of a prepared dataset: every split's files, from its manifest."""
    from training.prepare.manifest import SPLITS, manifest_hash

    return manifest_hash(data, SPLITS)


def train_key(params: str, data_hash: str, *, overrides: dict[str, Any] | None = None, gpus: int = 0,
              image: str = "") -> str:
    """What a train task computes, as one key (``steps.content_key``): the prepared data's
    hash, the data/model/train params after the pipeline's overrides, the training code, the
    image, and the number of processes (``gpus`` > 1 trains at ``gpus`` x batch_size)."""
    from training.config import load_config
    from training.steps import BY_NAME, content_key, overrides_from

    with tempfile.TemporaryDirectory(prefix="cyclegan-params-") as tmp:
        cfg = load_config(write_params(params, Path(tmp)), overrides_from(overrides or {}), required=True)
    return content_key(BY_NAME["train"], cfg.to_dict(), {"data": data_hash}, image=image,
                       processes=max(gpus, 1))


def fingerprint(params: str, source: str = "", *, overrides: dict[str, Any] | None = None, gpus: int = 0,
                image: str = "", tracking_uri: str = "") -> tuple[str, str]:
    """(data key, train key) of a pipeline run: the prepare step's commands run into a scratch
    folder (a source is only known by what it yields), whose manifest gives the data key."""
    with tempfile.TemporaryDirectory(prefix="cyclegan-fingerprint-") as tmp:
        data = Path(tmp) / "data"
        run_step("prepare", params, {"data": str(data)}, overrides={"source": source}, image=image,
                 tracking_uri=tracking_uri)
        data_hash = data_key(data)
    return data_hash, train_key(params, data_hash, overrides=overrides, gpus=gpus, image=image)


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


# -- sweeps ------------------------------------------------------------------------------------

# What a sweep minimises: the promotion gate's KID, the two directions averaged. KID (a
# distribution distance on features) is the gate's measure of whether translations look like
# the target domain; cycle PSNR rewards generators that change little, and domain success
# saturates at 1 on easy data, so neither ranks variants as well.
SWEEP_OBJECTIVE = ("kid_AtoB_mean", "kid_BtoA_mean")


def apply_variant(params: str, overrides: dict[str, Any]) -> str:
    """The params document with a variant's ``{"section.key": value}`` laid over it, validated,
    as one line of JSON. Only the train step's sections may vary (a sweep compares trainings;
    the rest of the pipeline runs once, for the best)."""
    import yaml

    from training.config import config_from_dict, merge
    from training.steps import BY_NAME

    sections = BY_NAME["train"].params
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in sections or not key or "." in key:
            raise ValueError(f"sweep variant key {dotted!r}: expected section.key with section one of "
                             f"{', '.join(sections)} (what training depends on)")
        # KFP carries list parameters as protobuf numbers (doubles): a grid's 8 arrives as 8.0,
        # which the config's integer fields refuse; its float fields take an int as it is.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        nested.setdefault(section, {})[key] = value
    document = merge((yaml.safe_load(params) or {}) if params.strip() else {}, nested)
    config_from_dict(document, f"sweep variant {json.dumps(overrides, sort_keys=True)}")
    return json.dumps(document)


def rank_candidates(models: list[str], selections: list[str], evaluations: list[str]) -> list[dict[str, Any]]:
    """Each trained variant (a run folder) with its selection and evaluation, best first by the
    sweep's objective; each row: model, selection, evaluation, objective, terms, run_id, settings
    (the data/model/train values in which the variants differ)."""
    from training.evaluation.specs import METRICS
    from training.layout import Evaluation, Selection, TrainRun
    from training.mlops.tracking import flatten_config
    from training.utils import sha256_file

    assert all(METRICS[name].lower_is_better for name in SWEEP_OBJECTIVE)
    evaluation_of = {}     # the evaluated checkpoint's sha256 -> evaluation folder
    for folder in evaluations:
        info = json.loads(Evaluation(folder).info.read_text())
        evaluation_of[info["checkpoint_sha256"]] = folder
    chosen = []            # (file name in the run's checkpoints, its sha256, selection folder)
    for folder in selections:
        summary = json.loads(Selection(folder).scores.read_text())
        chosen.append((summary["selected_checkpoint"], summary["source_sha256"], folder))
    rows = []
    for folder in models:
        run = TrainRun(folder)
        selection = next((sel for name, digest, sel in chosen
                          if (run.checkpoints / name).is_file() and sha256_file(run.checkpoints / name) == digest), None)
        if selection is None:
            raise RuntimeError(f"{folder}: none of the {len(selections)} selections chose a checkpoint of this run")
        digest = sha256_file(Selection(selection).checkpoint)
        if digest not in evaluation_of:
            raise RuntimeError(f"{Selection(selection).checkpoint}: no evaluation of this checkpoint "
                               f"(sha256 {digest[:12]}) among the {len(evaluations)} given")
        metrics = json.loads(Evaluation(evaluation_of[digest]).metrics.read_text())
        terms = {name: float(metrics[name]) for name in SWEEP_OBJECTIVE}
        config = json.loads(run.config.read_text())
        rows.append({"model": folder, "selection": selection, "evaluation": evaluation_of[digest], "terms": terms,
                     "objective": sum(terms.values()) / len(terms),
                     "run_id": run.run_id.read_text().strip() if run.run_id.exists() else "",
                     "config": flatten_config({s: config[s] for s in ("data", "model", "train")})})
    differing = sorted(k for k in rows[0]["config"] if len({row["config"][k] for row in rows}) > 1) if rows else []
    for row in rows:
        row["settings"] = {k: row["config"].pop(k) for k in differing}
        del row["config"]
    return sorted(rows, key=lambda row: row["objective"])   # stable: ties keep the given order


def copy_candidate(row: dict[str, Any], model_out: str, selection_out: str, evaluation_out: str) -> None:
    """The chosen run folder's latest checkpoint, log, config and MLflow run id (what export and
    register read; the other checkpoints and samples stay with the variant), its selection and
    its evaluation."""
    import shutil

    from training.layout import TrainRun

    source, target = TrainRun(row["model"]), TrainRun(model_out)
    for name in ("latest", "log", "config", "run_id"):
        path = getattr(source, name)
        if path.exists():
            getattr(target, name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, getattr(target, name))
    shutil.copytree(row["selection"], selection_out, dirs_exist_ok=True)
    shutil.copytree(row["evaluation"], evaluation_out, dirs_exist_ok=True)


def leaderboard_markdown(rows: list[dict[str, Any]]) -> str:
    """The ranked variants as a Markdown table (KFP shows Markdown artifacts)."""
    objective = " + ".join(SWEEP_OBJECTIVE)
    lines = [f"| rank | objective: mean of {objective} | {' | '.join(SWEEP_OBJECTIVE)} | settings | MLflow run |",
             "|---|---|" + "---|" * len(SWEEP_OBJECTIVE) + "---|---|"]
    for rank, row in enumerate(rows, 1):
        settings = ", ".join(f"{k}={v}" for k, v in row["settings"].items()) or "-"
        terms = " | ".join(f"{row['terms'][name]:.6g}" for name in SWEEP_OBJECTIVE)
        lines.append(f"| {rank} | {row['objective']:.6g} | {terms} | {settings} | {row['run_id'] or '-'} |")
    return "\n".join(lines) + "\n"
