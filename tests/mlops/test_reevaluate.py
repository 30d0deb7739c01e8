"""The gate compares with the champion's stored metrics only on the same test set; on a new
test set it first re-evaluates the champion (with the evaluate library, from the generators
the version carries)."""
from __future__ import annotations

import json

import pytest

from helpers import TESTS_PROFILE
from helpers.mlops import make_export, make_metrics, use_mlflow_store
from training.mlops import registry
from training.config import load_config
from training.errors import UserError


@pytest.mark.slow
def test_champion_is_reevaluated_when_the_test_manifest_differs(tmp_path, monkeypatch, tiny_data):
    from training.evaluation.evaluate import evaluate
    from training.engine.trainer import train

    use_mlflow_store(tmp_path, monkeypatch)
    cfg = load_config(TESTS_PROFILE, [f"evaluate.cache_dir={tmp_path / 'features'}"], required=True)
    train(cfg, tiny_data, tmp_path / "train", progress=False)
    checkpoint = tmp_path / "train" / "checkpoints" / "latest.pt"

    # v1: champion, evaluated on some earlier test set (manifest "a" * 64)
    registry.register(cfg, make_export(tmp_path / "e1", 1.0), make_metrics(tmp_path / "m1"), promote=True,
                      checkpoint=checkpoint, out=tmp_path / "r1")

    # the same generators measured on the new test set: the challenger's metrics
    measured = evaluate(cfg, str(tiny_data), str(checkpoint), str(tmp_path / "eval"), progress=False)["metrics"]
    new_manifest = measured["test_manifest_sha256"]
    assert new_manifest != "a" * 64
    metrics_path = tmp_path / "eval" / "metrics.json"

    # without the data the champion cannot be re-evaluated: a clear error, nothing moves
    with pytest.raises(UserError, match="re-evaluated"):
        registry.register(cfg, make_export(tmp_path / "e2", 2.0), metrics_path, promote=True, out=tmp_path / "r2")
    assert not (tmp_path / "r2" / "decision.json").exists()

    decision = registry.register(cfg, tmp_path / "e2", metrics_path, promote=True, data_dir=tiny_data,
                                 checkpoint=checkpoint, out=tmp_path / "r2")
    assert decision["champion_version"] == "1"
    assert decision["champion_metrics_source"].startswith("re-evaluated")
    for row in decision["metrics"]:
        # the champion's figures are the evaluate library's on the new test set, not its old tags
        assert row["champion"] == pytest.approx(measured[row["metric"]], abs=1e-9), row["metric"]
        assert row["champion"] != pytest.approx(json.loads((tmp_path / "m1" / "metrics.json").read_text())[row["metric"]])
    assert decision["verdict"] == "pass" and decision["action"] == "promoted"
