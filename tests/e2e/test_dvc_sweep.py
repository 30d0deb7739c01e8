"""A DVC sweep: `dvc exp run --queue -S train.lr=A,B` queues one experiment per value (DVC's
Hydra grid syntax), `dvc exp run --run-all` runs the queue, and `dvc exp show --json` holds
both with their params and metrics; every experiment's MLflow run lands in the one store
MLFLOW_TRACKING_URI names."""
from __future__ import annotations

import json
import subprocess

import mlflow

from helpers.mlops import DVC, dvc_env, make_dvc_repo

GRID = ("0.0002", "0.002")


def dvc(repo, *args, env, timeout=600) -> str:
    proc = subprocess.run([DVC, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _experiments(shown) -> list[dict]:
    """The experiments of `dvc exp show --json` (DVC 3: a list of baselines, each with its
    experiments' revisions), as {name, params, metrics}."""
    found = []
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs", []):
                data = rev.get("data") or {}
                params = data["params"]["params.yaml"]["data"]
                metrics = data.get("metrics", {}).get("runs/eval/metrics.json", {}).get("data", {})
                found.append({"name": rev.get("name"), "params": params, "metrics": metrics})
    return found


def test_dvc_queue_runs_a_grid_and_exp_show_compares_it(tmp_path):
    repo = make_dvc_repo(tmp_path / "repo", evaluate={"cache_dir": str(tmp_path / "features")})
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"   # absolute: queued runs happen in temporary copies
    env = dvc_env(MLFLOW_TRACKING_URI=store)

    dvc(repo, "exp", "run", "--queue", "-S", f"train.lr={','.join(GRID)}", env=env)
    status = dvc(repo, "queue", "status", env=env)
    assert status.count("Queued") == 2, status

    dvc(repo, "exp", "run", "--run-all", "--jobs", "1", env=env, timeout=1800)
    status = dvc(repo, "queue", "status", env=env)
    assert status.count("Success") == 2 and "Failed" not in status, status

    experiments = _experiments(json.loads(dvc(repo, "exp", "show", "--json", env=env)))
    assert sorted(str(e["params"]["train"]["lr"]) for e in experiments) == sorted(GRID)
    for experiment in experiments:
        assert experiment["name"]
        assert {"kid_AtoB_mean", "kid_BtoA_mean", "cycle_psnr_A"} <= set(experiment["metrics"]), experiment
    # the two trainings differ (the metrics are not one experiment's shown twice)
    assert experiments[0]["metrics"]["kid_AtoB_mean"] != experiments[1]["metrics"]["kid_AtoB_mean"]

    # the workspace is untouched: the queue ran in temporary copies
    assert not (repo / "runs").exists()

    runs = mlflow.MlflowClient(store).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(store).search_experiments()])
    trained = {r.data.params.get("train.lr") for r in runs if "train.lr" in r.data.params}
    assert trained == set(GRID)
