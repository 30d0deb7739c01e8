"""DVC: the repo's dvc.yaml end to end in a tmp git+DVC repo with the tests profile, and
`dvc push`/`dvc pull` of the prepared data to an S3 remote on the loopback server."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from helpers import ROOT
from helpers.mlops import DVC, dvc_env, make_dvc_repo

STAGES = ["prepare", "train", "select", "evaluate", "export", "register"]


def dvc(repo, *args, env=None, timeout=600) -> str:
    proc = subprocess.run([DVC, *args], cwd=repo, env=env or dvc_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_dvc_yaml_declares_the_six_stages_exactly():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stages = spec["stages"]
    assert list(stages) == STAGES
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, stage in stages.items():
        cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
        assert all(c.split()[0] == "cyclegan" for c in cmds), name
        for section in stage["params"]:  # every params entry names a real params.yaml section
            assert section.split(".")[0] in params, (name, section)
    train_outs = {next(iter(o)) if isinstance(o, dict) else o: o for o in stages["train"]["outs"]}
    assert train_outs["runs/train/checkpoints"]["runs/train/checkpoints"]["persist"] is True
    assert "runs/train/mlflow_run_id" in train_outs
    assert stages["evaluate"]["metrics"][0] == {"runs/eval/metrics.json": {"cache": False}}
    plotted = {f for plot in spec["plots"] for entry in plot.values() for f in entry["y"]}
    # the loss curves come straight from the training log: `dvc plots show` needs no evaluation;
    # the selection's scores by epoch come from the select stage
    assert plotted == {"runs/train/train_log.csv", "runs/eval/plots/metrics.csv", "runs/select/scores.csv"}
    for stage in ("evaluate", "export", "register"):   # all three read the checkpoint select chose
        assert "runs/select/selected.pt" in stages[stage]["deps"], stage
        assert "latest.pt" not in " ".join(stages[stage]["deps"]), stage
    assert "--promote" in stages["register"]["cmd"]


@pytest.mark.slow
def test_dvc_exp_run_end_to_end_with_the_tests_profile(tmp_path):
    """`dvc exp run -S train.n_epochs=2` on the tests profile runs all six stages: metrics,
    plots, the MLflow run with every step's part, and a champion; a repro after it is a no-op."""
    import mlflow

    repo = make_dvc_repo(tmp_path / "repo", evaluate={"cache_dir": str(tmp_path / "features")})
    env = dvc_env(CYCLEGAN_IMAGE="tests-image")
    out = dvc(repo, "exp", "run", "-S", "train.n_epochs=2", env=env)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out

    # the override reached the trainer: 2 + 1 epochs of 10 iterations
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["n_epochs"] == 2
    log_rows = (repo / "runs" / "train" / "train_log.csv").read_text().strip().splitlines()
    assert log_rows[-1].split(",")[1] == "30"

    metrics = json.loads(dvc(repo, "metrics", "show", "--json", env=env))
    (workspace,) = metrics.values()  # keyed by revision: the workspace
    shown = workspace["data"]["runs/eval/metrics.json"]["data"]
    assert {"kid_AtoB_mean", "cycle_psnr_A", "domain_success_AtoB"} <= set(shown)
    plots = json.loads(dvc(repo, "plots", "show", "--json", env=env))
    assert {"Training losses", "Metrics vs identity baseline", "Validation KID by epoch (checkpoint selection)"} \
        <= set(plots["data"])
    assert not plots.get("errors")

    # a second repro changes nothing
    assert "Data and pipelines are up to date" in dvc(repo, "repro", env=env)

    # one MLflow run (default store: sqlite:///mlflow.db in the project folder) holds every part
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = (repo / "runs" / "train" / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.data.params["train.n_epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run_id, "loss_G")] == [1, 2, 3]
    assert {"lr", "kid_AtoB_mean", "cycle_psnr_A"} <= set(run.data.metrics)
    assert run.data.tags["container_image"] == "tests-image"
    assert run.data.tags["data_manifest_sha256"]
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"train", "evaluation", "decision.json"} <= top
    decision = json.loads((repo / "runs" / "register" / "decision.json").read_text())
    assert decision["run_id"] == run_id and decision["action"] == "promoted"
    champion = client.get_model_version_by_alias("cyclegan", "champion")
    assert champion.run_id == run_id and champion.tags["data_manifest_sha256"] == run.data.tags["data_manifest_sha256"]
    # select best on the tests profile: the only kept epoch is the last (save_epoch_freq 5 > 3 epochs)
    selection = json.loads((repo / "runs" / "select" / "selection.json").read_text())
    assert (selection["mode"], selection["selected_epoch"], selection["kept_epochs"]) == ("best", 3, [3])
    assert run.data.tags["selected_epoch"] == champion.tags["selected_epoch"] == "3"
    assert "epoch **3** of 3" in champion.description

    # a changed model setting re-runs train, which cannot continue the old checkpoint: it starts over
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["ngf"] = 12
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([DVC, "repro", "--single-item", "train"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "starting over" in proc.stdout + proc.stderr and "model.ngf" in proc.stdout + proc.stderr
    log_rows = (repo / "runs" / "train" / "train_log.csv").read_text().strip().splitlines()
    iterations = [int(row.split(",")[1]) for row in log_rows[1:]]   # one new run's rows, no old ones
    assert iterations == list(range(iterations[0], 31, iterations[0]))
    import torch

    state = torch.load(repo / "runs" / "train" / "checkpoints" / "latest.pt", weights_only=True)
    assert state["config"]["model"]["ngf"] == 12 and state["global_iter"] == 30


def test_dvc_push_and_pull_prepared_data_with_s3_remote(tmp_path, s3_env):
    """Prepared data goes to an S3 remote with a configurable endpoint URL and comes back."""
    bucket = s3_env("dvc-remote")
    repo = make_dvc_repo(tmp_path / "repo")
    env = dvc_env()
    dvc(repo, "repro", "prepare", env=env)
    manifest = (repo / "data" / "prepared" / "manifest.json").read_text()
    dvc(repo, "remote", "add", "-d", "storage", f"s3://{bucket}/dvc", env=env)
    dvc(repo, "remote", "modify", "storage", "endpointurl", s3_env.endpoint, env=env)
    dvc(repo, "push", env=env)
    objects = s3_env.client.list_objects_v2(Bucket=bucket, Prefix="dvc/").get("KeyCount", 0)
    assert objects > 10  # the images and the manifest, content-addressed

    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc(repo, "pull", "prepare", env=env)
    assert (repo / "data" / "prepared" / "manifest.json").read_text() == manifest
    assert "up to date" in dvc(repo, "status", "prepare", env=env)
