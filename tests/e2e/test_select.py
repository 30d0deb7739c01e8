"""The best checkpoint, not just the last, followed through the pipeline's own commands.

A tests-profile run trains three epochs and keeps each; its last epoch (and so latest.pt) is then
made a solid green whatever the input, which scores far worse than any trained epoch. The commands of the step
table (the ones `dvc repro` and the Kubeflow components run) for select, evaluate, export and
register then have to carry the best-scoring epoch all the way: into the evaluation, the ONNX
graphs, the registered model's generators and the lineage. With `evaluate.select: latest` the
latest checkpoint goes on, measured exactly as before selection existed.
"""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from helpers import CYCLEGAN, ROOT, TESTS_PROFILE
from helpers.checkpoints import GREEN, paint_solid, same_generators
from training import steps
from training.layout import Evaluation, Export, Registration, Selection, TrainRun


def cyclegan(argv, env, cwd):
    proc = subprocess.run([*CYCLEGAN, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{argv} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("select-e2e")
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", TQDM_DISABLE="1")
    env.pop("MLFLOW_REGISTRY_URI", None)
    config = ["--params", str(TESTS_PROFILE), "--set", f"evaluate.cache_dir={root / 'features'}",
              "--set", "train.save_epoch_freq=1", "--set", "train.n_epochs=2"]
    folders = {name: str(root / name) for name in ("data", "train", "select", "eval", "export", "register")}

    def run_step(name, extra=()):
        for argv in steps.BY_NAME[name].argv(folders, steps.DVC_OPTIONS):
            assert argv[0] == "cyclegan"
            cyclegan([*argv[1:], *config, *extra], env, root)

    run_step("prepare")
    run_step("train")                        # 2 + 1 epochs, each kept; the MLflow run opened
    run = TrainRun(folders["train"])
    assert [TrainRun.epoch_number(p) for p in run.epochs()] == [1, 2, 3]
    paint_solid(run.epoch(3), GREEN)
    paint_solid(run.latest, GREEN)           # the latest state is the last epoch's
    for name in ("select", "evaluate", "export", "register"):
        run_step(name)
    return {"root": root, "env": env, "config": config, "folders": folders, "run": run, "run_step": run_step}


def test_the_best_epoch_is_selected_evaluated_exported_and_registered(pipeline, monkeypatch):
    import onnxruntime as ort
    import torch
    from mlflow import MlflowClient

    from training.engine.checkpoint import load_generators
    from training.utils import sha256_file

    run, folders = pipeline["run"], pipeline["folders"]
    selection = Selection(folders["select"])
    scores = json.loads(selection.scores.read_text())
    rows = {r["epoch"]: r for r in scores["epochs"]}
    assert sorted(rows) == [1, 2, 3]
    assert rows[3]["score"] > max(rows[1]["score"], rows[2]["score"]), rows   # the solid-green epoch scores worst
    best = min(rows.values(), key=lambda r: r["score"])["epoch"]
    assert scores["selected_epoch"] == best != 3
    assert same_generators(selection.checkpoint, run.epoch(best))

    # evaluated: the evaluation read the selected file and shows the scores by epoch
    evaluation = Evaluation(folders["eval"])
    info = json.loads(evaluation.info.read_text())
    assert info["checkpoint_sha256"] == sha256_file(selection.checkpoint)
    assert info["selection"]["selected_epoch"] == best and info["checkpoint_epoch"] == best
    report = evaluation.report.read_text()
    assert f"Epoch {best} of 3 kept epochs was evaluated" in report
    assert f'<tr class=selected><td class="num">{best}</td>' in report

    # exported: the ONNX graphs compute the chosen epoch's generators, not the painted ones
    G_A, _, cfg = load_generators(run.epoch(best))
    painted_A, _, _ = load_generators(run.epoch(3))
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32))
    session = ort.InferenceSession(str(Export(folders["export"]).onnx("AtoB")), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected, painted = G_A(x).numpy(), painted_A(x).numpy()
    np.testing.assert_allclose(onnx_out, expected, atol=1e-4)
    assert np.abs(onnx_out - painted).max() > 0.5

    # registered: the version carries the chosen generators and says which epoch they are
    decision = json.loads(Registration(folders["register"]).decision.read_text())
    assert decision["checkpoint"]["epoch"] == best and decision["checkpoint"]["selection"]["mode"] == "best"
    # this run's store, named for the registry too: an earlier test in this process may have set
    # MLflow's global tracking URI, which an unnamed registry URI would follow
    uri = pipeline["env"]["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version("cyclegan", decision["challenger_version"])
    assert (version.tags["selected_epoch"], version.tags["selection_mode"]) == (str(best), "best")
    assert f"epoch **{best}** of 3: the best of 3 kept epoch checkpoints" in version.description
    run_tags = client.get_run(decision["run_id"]).data.tags
    assert run_tags["selected_epoch"] == str(best) and run_tags["cyclegan.logged.select"]
    history = client.get_metric_history(decision["run_id"], "select_score")
    assert sorted((m.step, m.value) for m in history) == [(e, pytest.approx(rows[e]["score"])) for e in (1, 2, 3)]
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/cyclegan/{version.version}",
                                                    dst_path=str(pipeline["root"] / "download"))
    finally:
        mlflow.set_tracking_uri(previous)
    (generators,) = list(__import__("pathlib").Path(local).rglob(Export.GENERATORS))
    assert same_generators(generators, run.epoch(best))


def test_select_latest_keeps_the_latest_checkpoint_and_its_numbers(pipeline, tmp_path):
    """`evaluate.select: latest`: the latest checkpoint goes on, and evaluating it gives the very
    numbers evaluating latest.pt directly gave before there was a select step."""
    from training.config import load_config
    from training.evaluation.evaluate import evaluate

    folders = dict(pipeline["folders"], select=str(tmp_path / "select"))
    for argv in steps.BY_NAME["select"].argv(folders, steps.DVC_OPTIONS)[:1]:
        cyclegan([*argv[1:], *pipeline["config"], "--set", "evaluate.select=latest"], pipeline["env"],
                 pipeline["root"])
    selection = Selection(folders["select"])
    scores = json.loads(selection.scores.read_text())
    assert (scores["mode"], scores["selected_epoch"], scores["epochs"]) == ("latest", 3, [])
    assert same_generators(selection.checkpoint, pipeline["run"].latest)

    cfg = load_config(TESTS_PROFILE, [f"evaluate.cache_dir={pipeline['root'] / 'features'}"], required=True)
    data = pipeline["folders"]["data"]
    through_select = evaluate(cfg, data, str(selection.checkpoint), str(tmp_path / "e1"), progress=False)
    directly = evaluate(cfg, data, str(pipeline["run"].latest), str(tmp_path / "e2"), progress=False)
    assert through_select["metrics"] == directly["metrics"]
