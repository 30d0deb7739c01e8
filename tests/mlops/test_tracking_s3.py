"""MLflow artifacts on S3 (MLFLOW_S3_ENDPOINT_URL) against the loopback S3 server: the model
version's two ONNX graphs land in the bucket and come back through models:/NAME@champion."""
from __future__ import annotations

import numpy as np

from helpers.mlops import make_export, make_metrics, use_mlflow_store
from training.mlops import registry, tracking
from training.config import Config


def test_model_artifacts_on_s3(tmp_path, monkeypatch, s3_env):
    import mlflow

    bucket = s3_env("mlflow-artifacts")
    use_mlflow_store(tmp_path, monkeypatch)
    cfg = Config()
    cfg.register.artifact_location = f"s3://{bucket}/mlflow"
    decision = registry.register(cfg, make_export(tmp_path / "e", 0.25), make_metrics(tmp_path / "m"),
                                 promote=True, out=tmp_path / "r")
    assert decision["action"] == "promoted"

    keys = [o["Key"] for o in s3_env.client.list_objects_v2(Bucket=bucket, Prefix="mlflow/")["Contents"]]
    assert any(k.endswith("artifacts/G_AtoB.onnx") for k in keys), keys
    assert any(k.endswith("artifacts/G_BtoA.onnx") for k in keys), keys
    assert any(k.endswith("/decision.json") for k in keys), keys
    assert not list((tmp_path).glob("mlruns/**/*.onnx"))        # nothing went to local artifacts

    run = tracking.client(cfg).get_run(decision["run_id"])
    assert run.info.artifact_uri.startswith(f"s3://{bucket}/mlflow/")
    model = mlflow.pyfunc.load_model("models:/cyclegan@champion")
    x = np.full((1, 3, 8, 8), 0.5, dtype=np.float32)
    np.testing.assert_allclose(model.predict(x, params={"direction": "BtoA"}), np.tanh(-0.125), atol=1e-6)
