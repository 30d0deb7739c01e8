"""MLflow tracking: the train/evaluate parts of the one pipeline run, lineage, idempotence,
the tracking URI rule, and recovery when the store lost the run (real SQLite store in tmp)."""
from __future__ import annotations

import csv
import json
import subprocess
from collections import defaultdict

import pytest

from helpers import ROOT, TESTS_PROFILE, make_images
from helpers.mlops import GOOD_METRICS, use_mlflow_store
from training.mlops import tracking
from training.config import Config, load_config
from training.layout import TrainRun


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tests-profile training shared by this module's tests (they copy it)."""
    from training.engine.trainer import train

    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    for i, (name, n) in enumerate((("trainA", 6), ("trainB", 5), ("testA", 3), ("testB", 3))):
        make_images(data / name, n, seed=i)
    (data / "manifest.json").write_text(json.dumps({"source": "tiny"}))
    cfg = load_config(TESTS_PROFILE, required=True)
    train(cfg, data, root / "train", progress=False)
    return root, cfg


@pytest.fixture
def train_out(tmp_path, trained):
    import shutil

    root, cfg = trained
    shutil.copytree(root, tmp_path / "copy")
    return tmp_path / "copy" / "train", tmp_path / "copy" / "data", cfg


def test_tracking_uri_default_and_env_override(monkeypatch):
    cfg = Config()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(cfg) == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.tracking_uri(cfg) == "http://mlflow.example:5000"


def test_git_commit_of_the_checkout(monkeypatch):
    monkeypatch.delenv("CYCLEGAN_GIT_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit, dirty = tracking.git_commit(ROOT)
    assert commit == head and isinstance(dirty, bool)
    monkeypatch.setenv("CYCLEGAN_GIT_COMMIT", "f" * 40)   # baked into an image without .git
    assert tracking.git_commit(ROOT) == ("f" * 40, None)


def test_epoch_metrics_average_each_epoch(tmp_path):
    path = tmp_path / "log.csv"
    rows = [{"epoch": 1, "iteration": 5, "loss_G": 4.0, "lr": 0.1}, {"epoch": 1, "iteration": 10, "loss_G": 2.0,
            "lr": 0.1}, {"epoch": 2, "iteration": 15, "loss_G": 1.0, "lr": 0.05}]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "iteration", "loss_G", "lr"])
        writer.writeheader()
        writer.writerows(rows)
    per_epoch = tracking.epoch_metrics(path)
    assert per_epoch[1]["loss_G"] == 3.0 and per_epoch[2]["loss_G"] == 1.0
    assert per_epoch[2]["lr"] == 0.05 and per_epoch[1]["iteration"] == 10


def test_train_part_params_losses_samples_lineage_and_idempotence(tmp_path, monkeypatch, train_out):
    out, data, cfg = train_out
    use_mlflow_store(tmp_path, monkeypatch)
    monkeypatch.setenv("CYCLEGAN_IMAGE", "registry.example/cyclegan:train-abc")
    monkeypatch.setenv("CYCLEGAN_GIT_COMMIT", "c" * 40)
    run_id = tracking.log_train(cfg, out, data)
    assert TrainRun(out).run_id.read_text().strip() == run_id
    client = tracking.client(cfg)
    run = client.get_run(run_id)

    stored = json.loads((out / "config.json").read_text())
    expected = tracking.flatten_config(stored)
    assert run.data.params == expected                       # every parameter, as section.key
    assert run.data.params["model.ngf"] == "8"

    with open(out / "train_log.csv", newline="") as f:
        log_rows = list(csv.DictReader(f))
    by_epoch = defaultdict(list)
    for row in log_rows:
        by_epoch[int(row["epoch"])].append(float(row["loss_D_A"]))
    history = client.get_metric_history(run_id, "loss_D_A")
    assert [m.step for m in history] == sorted(by_epoch)
    for m in history:
        assert m.value == pytest.approx(sum(by_epoch[m.step]) / len(by_epoch[m.step]))
    assert [m.step for m in client.get_metric_history(run_id, "lr")] == sorted(by_epoch)

    samples = sorted((out / "samples").glob("*.png"))
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    assert len(images) >= len(samples) > 0                  # each grid (plus MLflow's thumbnails)
    assert {a.path for a in client.list_artifacts(run_id, "train")} == {"train/config.json", "train/train_log.csv"}

    tags = run.data.tags
    assert tags["container_image"] == "registry.example/cyclegan:train-abc"
    assert tags["git_commit"] == "c" * 40
    assert tags["data_manifest_sha256"] == tracking.manifest_sha256(data)
    assert tags["dataset_license"] == cfg.register.dataset_license

    # logging again (e.g. a re-run of the stage command) reuses the run and adds nothing
    assert tracking.log_train(cfg, out, data) == run_id
    assert len(client.get_metric_history(run_id, "loss_D_A")) == len(history)


def test_evaluate_part_and_recovery_when_the_store_lost_the_run(tmp_path, monkeypatch, train_out):
    out, data, cfg = train_out
    use_mlflow_store(tmp_path, monkeypatch)
    TrainRun(out).run_id.write_text("0123456789abcdef0123456789abcdef\n")   # from another store
    replacement = tracking.resolve_run(cfg, TrainRun(out).run_id)
    client = tracking.client(cfg)
    run = client.get_run(replacement)
    assert run.data.tags["cyclegan.replaces"] == "0123456789abcdef0123456789abcdef"
    assert run.data.params["model.ngf"] == "8"                    # the train part was re-logged
    # every later step finds the same replacement
    assert tracking.resolve_run(cfg, TrainRun(out).run_id) == replacement

    eval_dir = tmp_path / "eval"
    (eval_dir / "report").mkdir(parents=True)
    (eval_dir / "report" / "index.html").write_text("<html><table></table></html>")
    (eval_dir / "metrics.json").write_text(json.dumps(GOOD_METRICS))
    tracking.log_evaluate(cfg, replacement, eval_dir)
    tracking.log_evaluate(cfg, replacement, eval_dir)   # idempotent
    run = client.get_run(replacement)
    assert run.data.metrics["kid_AtoB_mean"] == GOOD_METRICS["kid_AtoB_mean"]
    assert len(client.get_metric_history(replacement, "cycle_psnr_A")) == 1
    assert run.data.tags["eval.test_manifest_sha256"] == GOOD_METRICS["test_manifest_sha256"]
    assert "evaluation/report/index.html" in {a.path for a in client.list_artifacts(replacement, "evaluation/report")}


def test_missing_run_id_file_is_a_clear_error(tmp_path):
    from training.errors import UserError

    with pytest.raises(UserError, match="mlflow_run_id"):
        tracking.read_run_id(tmp_path / "mlflow_run_id")
