"""A retried train task resumes from its s3:// checkpoint prefix: the train component's body
(components.runtime.run_step("train", ...)) is run twice against the loopback S3 server, the first
attempt dying mid-training as a lost node would."""
from __future__ import annotations

import csv

import pytest

from helpers import TESTS_PROFILE
from helpers.mlops import use_mlflow_store
from components.runtime import run_step
from training.layout import TrainRun


def _log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_retried_train_task_resumes_from_s3_checkpoint(tmp_path, monkeypatch, s3_env, tiny_data):
    from training.engine.trainer import Trainer

    use_mlflow_store(tmp_path, monkeypatch)
    bucket = s3_env("ckpt")
    # tests profile: 2 epochs, log_every 5, save_latest_freq 5, sample_every 10; tiny_data has
    # 6 trainA images, so an epoch is 6 iterations: rows at 5, 6 | 10, 12; checkpoints at 5, 6, 10, 12
    params = TESTS_PROFILE.read_text()
    prefix = f"s3://{bucket}/cyclegan"
    original = Trainer._save_sample

    def node_lost(self, visuals):
        if self.global_iter == 10:
            raise RuntimeError("simulated node loss")
        return original(self, visuals)

    def attempt(folder):   # the train component's body: the step's commands, mirrored per pipeline run
        run_step("train", params, {"data": str(tiny_data), "train": str(folder)},
                 options={"mirror": f"{prefix}/run-42"})

    monkeypatch.setattr(Trainer, "_save_sample", node_lost)
    with pytest.raises(RuntimeError, match="node loss"):
        attempt(tmp_path / "attempt1")
    first_log = _log(tmp_path / "attempt1" / "train_log.csv")
    # died at iteration 10 after logging it, before saving it: the last checkpoint is iteration 6
    assert [r["iteration"] for r in first_log] == ["5", "6", "10"]
    monkeypatch.setattr(Trainer, "_save_sample", original)

    # the retry runs in a fresh pod: an empty output folder, same pipeline run (run_key)
    attempt(tmp_path / "attempt2")
    second = tmp_path / "attempt2"
    log = _log(second / "train_log.csv")
    assert [r["iteration"] for r in log] == ["5", "6", "10", "12"]
    assert log[:2] == first_log[:2]                 # restored from S3, not recomputed
    assert log[2]["time"] != first_log[2]["time"]   # iteration 10 was trained again after the resume

    # the same MLflow run across both attempts, holding the complete train part
    run_id = TrainRun(tmp_path / "attempt1").run_id.read_text().strip()
    assert TrainRun(second).run_id.read_text().strip() == run_id
    import mlflow

    history = mlflow.MlflowClient().get_metric_history(run_id, "loss_G")
    assert [m.step for m in history] == [1, 2]

    # the prefix holds the final checkpoint of the run
    import torch

    s3_env.client.download_file(bucket, "cyclegan/run-42/checkpoints/latest.pt", str(tmp_path / "final.pt"))
    assert torch.load(tmp_path / "final.pt", weights_only=True)["global_iter"] == 12
