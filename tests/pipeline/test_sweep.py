"""The Kubeflow sweep (pipeline/sweep.py): a ParallelFor over variants (each: variant -> train ->
select -> evaluate), the lowest mean KID chosen, exported and registered; `cyclegan pipeline sweep`
compiles, runs it here or submits it. One local 2-variant sweep on the tests profile."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from helpers import CYCLEGAN
from helpers.mlops import use_mlflow_store, write_tests_params
from components import runtime
from training.cli import main
from training.commands.pipeline import grid_variants
from training.layout import Evaluation, Selection, TrainRun
from training.utils import sha256_file


def test_the_grid_is_every_combination_of_the_values_given():
    assert grid_variants(["train.lr=0.0002,0.001", "model.ngf=8,16"]) == [
        {"train.lr": 0.0002, "model.ngf": 8}, {"train.lr": 0.0002, "model.ngf": 16},
        {"train.lr": 0.001, "model.ngf": 8}, {"train.lr": 0.001, "model.ngf": 16}]
    assert grid_variants(["model.netG=resnet_2blocks,unet_128"]) == [{"model.netG": "resnet_2blocks"},
                                                                     {"model.netG": "unet_128"}]


@pytest.mark.parametrize("grid, message", [
    ([], "--grid SECTION.KEY=VALUE1,VALUE2"),
    (["train.lr"], "expected SECTION.KEY=VALUE1,VALUE2"),
    (["train.lr=0.1", "train.lr=0.2"], "given twice"),
    (["evaluate.batch_size=2,4"], "section one of data, model, train"),
    (["train.lr=0.001,fast"], "train.lr"),
    (["train.nope=1,2"], "unknown key 'train.nope'"),
])
def test_a_bad_grid_fails_in_one_line_before_anything_is_compiled(tmp_path, capsys, grid, message):
    out = tmp_path / "sweep.yaml"
    args = ["pipeline", "sweep", "--params", str(write_tests_params(tmp_path / "p.yaml")), "--output", str(out)]
    assert main([*args, *(a for item in grid for a in ("--grid", item))]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def _compiled_sweep(tmp_path, *extra) -> dict:
    out = tmp_path / "sweep.yaml"
    assert main(["pipeline", "sweep", "--params", str(write_tests_params(tmp_path / "p.yaml")), "--output", str(out),
                 "--grid", "train.lr=0.0002,0.001", "--grid", "model.ngf=8,16", *extra]) == 0
    return next(yaml.safe_load_all(out.read_text()))


def test_the_compiled_sweep_trains_each_variant_and_registers_the_selected_one(tmp_path):
    spec = _compiled_sweep(tmp_path, "--parallelism", "2")
    assert spec["pipelineInfo"]["name"] == "cyclegan-sweep"
    root = spec["root"]
    variants = root["inputDefinitions"]["parameters"]["variants"]
    assert variants["parameterType"] == "LIST" and len(variants["defaultValue"]) == 4
    tasks = root["dag"]["tasks"]
    (loop_name,) = [name for name in tasks if name.startswith("for-loop")]
    loop = tasks[loop_name]
    assert loop["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--variants"}
    assert loop["iteratorPolicy"]["parallelismLimit"] == 2
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"variant", "train", "select", "evaluate"}
    train = body["train"]["inputs"]
    assert train["parameters"]["params"]["taskOutputParameter"] == {"producerTask": "variant",
                                                                    "outputParameterKey": "params"}
    assert train["parameters"]["train_key"]["taskOutputParameter"] == {"producerTask": "variant",
                                                                       "outputParameterKey": "train_key"}
    assert body["evaluate"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "train"
    assert body["select"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "train"
    assert body["evaluate"]["inputs"]["artifacts"]["selected"]["taskOutputArtifact"] == {
        "producerTask": "select", "outputArtifactKey": "selected"}
    assert body["variant"]["cachingOptions"].get("enableCache", False) is False   # its key covers the code
    assert body["train"]["cachingOptions"]["enableCache"] is True
    # every variant's model and evaluation are collected into the selection
    select = tasks["select-best"]["inputs"]["artifacts"]
    assert select["models"]["taskOutputArtifact"]["producerTask"] == loop_name
    assert select["evaluations"]["taskOutputArtifact"]["producerTask"] == loop_name
    assert select["selections"]["taskOutputArtifact"]["producerTask"] == loop_name
    # and only the selected one is exported and registered
    for name in ("export", "register"):
        assert tasks[name]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
            "producerTask": "select-best", "outputArtifactKey": "model"}
        assert tasks[name]["inputs"]["artifacts"]["selected"]["taskOutputArtifact"] == {
            "producerTask": "select-best", "outputArtifactKey": "selected"}
    assert tasks["register"]["inputs"]["artifacts"]["evaluation"]["taskOutputArtifact"]["producerTask"] == \
        "select-best"
    assert tasks["register"]["cachingOptions"].get("enableCache", False) is False
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"


def test_sweep_submit_hands_the_variants_to_the_server(tmp_path, monkeypatch):
    import kfp

    calls = {}

    class Client:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
            calls["run"] = {"pipeline": next(yaml.safe_load_all(open(pipeline_file))), **kwargs}
            return type("Result", (), {"run_id": "run-7"})()

    monkeypatch.setattr(kfp, "Client", Client)
    assert main(["pipeline", "sweep", "--host", "http://kfp.example", "--params",
                 str(write_tests_params(tmp_path / "p.yaml")), "--grid", "train.lr=0.0002,0.001"]) == 0
    run = calls["run"]
    assert run["pipeline"]["pipelineInfo"]["name"] == "cyclegan-sweep"
    assert run["arguments"]["variants"] == [{"train.lr": 0.0002}, {"train.lr": 0.001}]
    assert yaml.safe_load(run["arguments"]["params"])["model"]["ngf"] == 8


def _candidate(tmp_path, name: str, kid_a: float, kid_b: float, lr: float) -> tuple[str, str, str]:
    """A trained variant's run folder, its selection (epoch 2 chosen) and its evaluation of the
    selected checkpoint, as the tasks leave them."""
    run, evaluation = TrainRun(tmp_path / name / "model"), Evaluation(tmp_path / name / "evaluation")
    selection = Selection(tmp_path / name / "selected")
    run.latest.parent.mkdir(parents=True)
    run.latest.write_bytes(f"checkpoint of {name}".encode())
    run.epoch(2).write_bytes(f"epoch 2 of {name}".encode())
    selection.checkpoint.parent.mkdir(parents=True)
    selection.checkpoint.write_bytes(f"selected epoch 2 of {name}".encode())
    selection.scores.write_text(json.dumps({"selected_checkpoint": run.epoch(2).name,
                                            "source_sha256": sha256_file(run.epoch(2))}))
    run.config.write_text(json.dumps({"data": {"crop_size": 32}, "model": {"ngf": 8}, "train": {"lr": lr},
                                      "evaluate": {"batch_size": 4}}))
    run.run_id.write_text(f"run-{name}\n")
    run.log.write_text("epoch,iteration\n1,1\n")
    evaluation.metrics.parent.mkdir(parents=True)
    evaluation.metrics.write_text(json.dumps({"kid_AtoB_mean": kid_a, "kid_BtoA_mean": kid_b, "cycle_psnr_A": 20.0}))
    evaluation.info.write_text(json.dumps({"checkpoint_sha256": sha256_file(selection.checkpoint)}))
    return str(tmp_path / name / "model"), str(tmp_path / name / "selected"), str(tmp_path / name / "evaluation")


def test_the_selection_takes_the_lowest_mean_kid_matching_evaluations_by_checkpoint(tmp_path):
    # (folder, selection, evaluation) per variant
    a = _candidate(tmp_path, "a", 0.030, 0.010, 0.0002)   # mean 0.020
    b = _candidate(tmp_path, "b", 0.012, 0.014, 0.001)    # mean 0.013: the best, though not best in AtoB alone
    c = _candidate(tmp_path, "c", 0.011, 0.040, 0.002)    # mean 0.0255
    # the collected lists in different orders: matched by the checkpoint's hash, not by position
    ranked = runtime.rank_candidates([a[0], b[0], c[0]], [b[1], c[1], a[1]], [c[2], a[2], b[2]])
    assert [row["run_id"] for row in ranked] == ["run-b", "run-a", "run-c"]
    assert ranked[0]["evaluation"] == b[2] and ranked[0]["selection"] == b[1]
    assert ranked[0]["objective"] == pytest.approx(0.013)
    assert [row["settings"] for row in ranked] == [{"train.lr": "0.001"}, {"train.lr": "0.0002"},
                                                   {"train.lr": "0.002"}]   # only what differs
    board = runtime.leaderboard_markdown(ranked)
    assert board.splitlines()[2].startswith("| 1 | 0.013 |") and "train.lr=0.001" in board.splitlines()[2]

    out_model, out_eval = tmp_path / "best" / "model", tmp_path / "best" / "evaluation"
    out_selected = tmp_path / "best" / "selected"
    runtime.copy_candidate(ranked[0], str(out_model), str(out_selected), str(out_eval))
    assert TrainRun(out_model).latest.read_bytes() == b"checkpoint of b"
    assert Selection(out_selected).checkpoint.read_bytes() == b"selected epoch 2 of b"
    assert TrainRun(out_model).run_id.read_text() == "run-b\n"
    assert json.loads(Evaluation(out_eval).metrics.read_text())["kid_AtoB_mean"] == 0.012

    with pytest.raises(RuntimeError, match="no evaluation of this checkpoint"):
        runtime.rank_candidates([a[0], b[0]], [a[1], b[1]], [a[2], c[2]])
    with pytest.raises(RuntimeError, match="none of the 2 selections chose a checkpoint of this run"):
        runtime.rank_candidates([a[0], b[0]], [a[1], c[1]], [a[2], b[2], c[2]])


@pytest.mark.slow
def test_local_sweep_of_two_variants_registers_the_lower_kid(tmp_path, monkeypatch, cli_env):
    """`cyclegan pipeline sweep --local` on the tests profile: two learning rates, each trained and
    evaluated in its own MLflow run; the one with the lower mean KID is the registered version."""
    import mlflow

    uri = use_mlflow_store(tmp_path, monkeypatch)
    params = write_tests_params(tmp_path / "params.yaml", evaluate={"cache_dir": str(tmp_path / "features")})
    env = {k: v for k, v in cli_env.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = uri
    root = tmp_path / "root"
    proc = subprocess.run([*CYCLEGAN, "pipeline", "sweep", "--local", "--params", str(params), "--pipeline-root",
                           str(root), "--grid", "train.lr=0.0002,0.002"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep of 2 variant(s): train.lr=0.0002; train.lr=0.002" in proc.stdout
    (run_dir,) = root.glob("cyclegan-sweep-*")

    # both variants trained and were evaluated, each in its own MLflow run
    trained = sorted(run_dir.glob("for-loop-*/train/model"))
    assert len(trained) == 2
    client = mlflow.MlflowClient(uri)
    objectives = {}
    for model in trained:
        run_id = TrainRun(model).run_id.read_text().strip()
        lr = json.loads(TrainRun(model).config.read_text())["train"]["lr"]
        # the selection that chose one of this run's checkpoints, then the evaluation of its choice
        selection = next(Selection(s) for s in run_dir.glob("for-loop-*/select/selected")
                         if sha256_file(TrainRun(model).checkpoints
                                        / json.loads(Selection(s).scores.read_text())["selected_checkpoint"])
                         == json.loads(Selection(s).scores.read_text())["source_sha256"])
        evaluation = next(e for e in run_dir.glob("for-loop-*/evaluate/evaluation")
                          if json.loads(Evaluation(e).info.read_text())["checkpoint_sha256"]
                          == sha256_file(selection.checkpoint))
        metrics = json.loads(Evaluation(evaluation).metrics.read_text())
        objectives[run_id] = (metrics["kid_AtoB_mean"] + metrics["kid_BtoA_mean"]) / 2
        logged = client.get_run(run_id).data
        assert logged.params["train.lr"] == str(lr) and "kid_AtoB_mean" in logged.metrics
    assert len(objectives) == 2
    best = min(objectives, key=objectives.get)

    board = (run_dir / "select-best" / "leaderboard").read_text()
    assert len([line for line in board.splitlines() if line.startswith("| ") and line[2].isdigit()]) == 2
    assert board.splitlines()[2].endswith(f"| {best} |")
    decision = json.loads((run_dir / "register" / "decision" / "decision.json").read_text())
    assert decision["run_id"] == best
    version = client.get_model_version("cyclegan", decision["challenger_version"])
    assert version.run_id == best
    assert "pipeline finished: gate pass, promoted" in proc.stdout
    assert os.path.exists(TrainRun(run_dir / "select-best" / "model").latest)
    assert os.path.exists(Selection(run_dir / "select-best" / "selected").checkpoint)
