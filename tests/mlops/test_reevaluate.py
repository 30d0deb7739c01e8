"""The gate compares with the champion's stored metrics only on an equal evaluation fingerprint;
otherwise it first re-evaluates the champion like the challenger (with the evaluate library,
from the generators the version carries), keeps that measurement on the version, and measures
the best-promoted versions again when the fingerprint is new."""
from __future__ import annotations

import json

import pytest

from helpers import TESTS_PROFILE
from helpers.mlops import make_export, make_metrics, use_mlflow_store
from training.config import load_config
from training.errors import UserError
from training.mlops import registry, tracking


@pytest.mark.slow
def test_champion_is_reevaluated_when_the_evaluation_fingerprint_differs(tmp_path, monkeypatch, tiny_data):
    from training.evaluation.evaluate import evaluate
    from training.engine.trainer import train

    use_mlflow_store(tmp_path, monkeypatch)
    cfg = load_config(TESTS_PROFILE, [f"evaluate.cache_dir={tmp_path / 'features'}"], required=True)
    mlc = tracking.client(cfg)
    train(cfg, tiny_data, tmp_path / "train", progress=False)
    checkpoint = tmp_path / "train" / "checkpoints" / "latest.pt"

    # the challenger's metrics: the generators measured on the test set
    measured = evaluate(cfg, str(tiny_data), str(checkpoint), str(tmp_path / "eval"), progress=False)["metrics"]
    fingerprint = measured["evaluation_fingerprint"]
    metrics_path = tmp_path / "eval" / "metrics.json"

    # v1: champion whose stored figures come from another evaluation of the SAME test split (the
    # whole-split hash is equal: the old gate reused these figures as if comparable)
    stale = make_metrics(tmp_path / "m1", test_manifest_sha256=measured["test_manifest_sha256"])
    registry.register(cfg, make_export(tmp_path / "e1", 1.0), stale, promote=True, checkpoint=checkpoint,
                      out=tmp_path / "r1")

    # without the data the champion cannot be re-evaluated: a clear error, nothing moves
    with pytest.raises(UserError, match="re-evaluated"):
        registry.register(cfg, make_export(tmp_path / "e2", 2.0), metrics_path, promote=True, out=tmp_path / "r2")
    assert not (tmp_path / "r2" / "decision.json").exists()
    assert [str(v.version) for v in mlc.search_model_versions("name = 'cyclegan'")] == ["1"]   # nothing registered

    decision = registry.register(cfg, tmp_path / "e2", metrics_path, promote=True, data_dir=tiny_data,
                                 checkpoint=checkpoint, out=tmp_path / "r2")
    assert decision["champion_version"] == "1"
    assert decision["champion_metrics_source"].startswith("re-evaluated")
    assert decision["evaluation_fingerprint"] == {"challenger": fingerprint, "champion": fingerprint, "equal": True}
    stored = json.loads((tmp_path / "m1" / "metrics.json").read_text())
    for row in decision["metrics"]:
        # the champion's figures are the evaluate library's on this evaluation, not its old tags
        assert row["champion"] == pytest.approx(measured[row["metric"]], abs=1e-9), row["metric"]
        assert row["champion"] != pytest.approx(stored[row["metric"]])
    assert decision["verdict"] == "pass" and decision["action"] == "promoted"
    # the re-evaluation is kept on version 1 under its fingerprint
    kept = json.loads(mlc.get_model_version("cyclegan", "1").tags[f"evaluation.{fingerprint}"])
    assert kept["kid_AtoB_mean"] == pytest.approx(measured["kid_AtoB_mean"], abs=1e-12)

    # another way of measuring (fewer KID subsets): the champion (v2) is re-evaluated like the
    # challenger, with the settings of the challenger's eval_info.json though the register
    # step's params say otherwise, and the version that held the best values (v1) is measured
    # again, so the new fingerprint starts with the old bound
    other_cfg = load_config(TESTS_PROFILE, [f"evaluate.cache_dir={tmp_path / 'features'}", "evaluate.kid_subsets=3"],
                            required=True)
    measured2 = evaluate(other_cfg, str(tiny_data), str(checkpoint), str(tmp_path / "eval2"), progress=False)["metrics"]
    fingerprint2 = measured2["evaluation_fingerprint"]
    assert fingerprint2 != fingerprint
    decision3 = registry.register(cfg, make_export(tmp_path / "e3", 3.0), tmp_path / "eval2" / "metrics.json",
                                  promote=True, data_dir=tiny_data, checkpoint=checkpoint, out=tmp_path / "r3")
    assert decision3["champion_version"] == "2"
    assert decision3["evaluation_fingerprint"] == {"challenger": fingerprint2, "champion": fingerprint2, "equal": True}
    assert f"evaluation.{fingerprint2}" in mlc.get_model_version("cyclegan", "1").tags
    assert decision3["best_promoted"]["kid_AtoB_mean"] == {"value": pytest.approx(measured2["kid_AtoB_mean"]),
                                                           "version": "1"}
    assert decision3["best_promoted_notes"] == []
    assert decision3["verdict"] == "pass" and decision3["action"] == "promoted"
