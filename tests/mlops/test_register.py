"""The promotion gate and the registry against a real SQLite MLflow store in a tmp folder."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from helpers import CYCLEGAN
from helpers.mlops import GOOD_METRICS, make_export, make_metrics, use_mlflow_store
from training.mlops import registry, tracking
from training.config import Config, RegisterConfig, config_from_dict
from training.errors import UserError


# -- the gate itself (pure) ------------------------------------------------------------------

def _rows(decision):
    return {r["metric"]: r for r in decision["metrics"]}


def test_gate_compares_each_metric_with_its_margin():
    rc = RegisterConfig(kid_margin=0.002, psnr_margin=0.5, success_margin=0.01)
    champion = dict(GOOD_METRICS)
    # within every margin: KID a little worse, PSNR a little lower, success a little lower
    ok = {**GOOD_METRICS, "kid_AtoB_mean": 0.0119, "cycle_psnr_A": 23.6, "domain_success_AtoB": 0.945}
    decision = registry.decide(ok, champion, rc)
    assert decision["passed"], decision
    rows = _rows(decision)
    assert set(rows) == set(rc.gate_metrics)
    assert rows["kid_AtoB_mean"]["threshold"] == pytest.approx(0.012)
    assert rows["cycle_psnr_A"]["threshold"] == pytest.approx(23.5)
    # just outside each margin fails that metric and the gate
    for key, value in (("kid_AtoB_mean", 0.0121), ("cycle_psnr_B", 22.4), ("domain_success_BtoA", 0.91)):
        decision = registry.decide({**GOOD_METRICS, key: value}, champion, rc)
        assert not decision["passed"]
        assert [r["metric"] for r in decision["metrics"] if not r["passed"]] == [key]


def test_gate_without_champion_applies_only_floors():
    rc = RegisterConfig(min_domain_success=0.9)
    assert registry.decide(GOOD_METRICS, None, rc)["passed"]
    decision = registry.decide({**GOOD_METRICS, "domain_success_AtoB": 0.5}, None, rc)
    assert not decision["passed"]
    assert _rows(decision)["domain_success_AtoB"]["threshold"] == 0.9


def test_gate_fails_missing_or_nan_values():
    rc = RegisterConfig()
    metrics = {k: v for k, v in GOOD_METRICS.items() if k != "cycle_psnr_B"}
    assert not registry.decide(metrics, GOOD_METRICS, rc)["passed"]
    assert not registry.decide({**GOOD_METRICS, "kid_BtoA_mean": float("nan")}, GOOD_METRICS, rc)["passed"]


def test_gate_metric_without_rule_is_a_config_error():
    with pytest.raises(UserError, match="register.gate_metrics"):
        config_from_dict({"register": {"gate_metrics": ["ssim_A"]}})


# -- the registry ----------------------------------------------------------------------------

def _versions(mlc, name="cyclegan"):
    return sorted(mlc.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def test_promotion_rerun_failed_gate_and_rollback(tmp_path, monkeypatch):
    use_mlflow_store(tmp_path, monkeypatch)
    cfg = Config()
    mlc = tracking.client(cfg)

    # v1: no champion yet -> promoted
    d1 = registry.register(cfg, make_export(tmp_path / "e1", 1.0), make_metrics(tmp_path / "m1"), promote=True,
                           out=tmp_path / "r1")
    assert (d1["challenger_version"], d1["champion_after"], d1["action"]) == ("1", "1", "promoted")
    written = json.loads((tmp_path / "r1" / "decision.json").read_text())
    assert written == d1
    assert [r["metric"] for r in written["metrics"]] == cfg.register.gate_metrics
    for row in written["metrics"]:
        assert set(row) >= {"metric", "challenger", "champion", "threshold", "rule", "passed"}
    run_artifacts = [a.path for a in mlc.list_artifacts(d1["run_id"])]
    assert "decision.json" in run_artifacts

    # re-run: same graphs -> same version, nothing moves, trail unchanged
    trail_before = registry.trail(mlc, "cyclegan", "1")
    d1b = registry.register(cfg, tmp_path / "e1", tmp_path / "m1" / "metrics.json", promote=True,
                            out=tmp_path / "r1b")
    assert d1b["challenger_version"] == "1" and d1b["champion_after"] == "1"
    assert d1b["action"].startswith("none")
    assert len(_versions(mlc)) == 1
    assert registry.trail(mlc, "cyclegan", "1") == trail_before

    # v2: better KID, same test set -> passes against the champion's tagged metrics, promoted
    d2 = registry.register(cfg, make_export(tmp_path / "e2", 2.0),
                           make_metrics(tmp_path / "m2", kid_AtoB_mean=0.004), promote=True, out=tmp_path / "r2")
    assert d2["champion_version"] == "1" and d2["action"] == "promoted"
    assert d2["champion_metrics_source"].startswith("registry tags")
    assert _rows(d2)["kid_AtoB_mean"]["champion"] == pytest.approx(0.010)
    assert str(mlc.get_model_version_by_alias("cyclegan", "champion").version) == "2"
    assert mlc.get_model_version("cyclegan", "2").tags["previous_champion"] == "1"

    # v3: KID worse than champion + margin -> fails, champion stays 2, v3 is the challenger
    d3 = registry.register(cfg, make_export(tmp_path / "e3", 3.0),
                           make_metrics(tmp_path / "m3", kid_AtoB_mean=0.004 + 0.0025), promote=True,
                           out=tmp_path / "r3")
    assert d3["verdict"] == "fail" and d3["champion_after"] == "2"
    assert [r["metric"] for r in d3["metrics"] if not r["passed"]] == ["kid_AtoB_mean"]
    assert str(mlc.get_model_version_by_alias("cyclegan", "champion").version) == "2"
    assert str(mlc.get_model_version_by_alias("cyclegan", "challenger").version) == "3"
    assert mlc.get_model_version("cyclegan", "3").tags["gate_verdict"] == "fail"

    # rollback: champion back to 1, with the trail on both versions
    result = registry.rollback(cfg)
    assert (result["from_version"], result["champion_after"]) == ("2", "1")
    assert str(mlc.get_model_version_by_alias("cyclegan", "champion").version) == "1"
    assert [e["event"] for e in registry.trail(mlc, "cyclegan", "2")] == ["promoted", "rolled back"]
    assert [e["event"] for e in registry.trail(mlc, "cyclegan", "1")] == ["promoted", "demoted", "restored"]
    # v1 replaced nobody: a second rollback has nowhere to go and says so
    with pytest.raises(UserError, match="nothing to roll back"):
        registry.rollback(cfg)
    assert str(mlc.get_model_version_by_alias("cyclegan", "champion").version) == "1"


def test_version_is_one_pyfunc_with_both_graphs_signature_example_and_lineage(tmp_path, monkeypatch):
    import mlflow

    use_mlflow_store(tmp_path, monkeypatch)
    monkeypatch.setenv("CYCLEGAN_IMAGE", "registry.example/cyclegan:train-test")
    monkeypatch.setenv("CYCLEGAN_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text('{"files": []}')
    cfg = Config()
    registry.register(cfg, make_export(tmp_path / "e", 0.5), make_metrics(tmp_path / "m"), promote=True,
                      data_dir=data, out=tmp_path / "r")
    mlc = tracking.client(cfg)
    mv = mlc.get_model_version_by_alias("cyclegan", "champion")
    tags = mv.tags
    assert tags["data_manifest_sha256"] == tracking.manifest_sha256(data)
    assert tags["container_image"] == "registry.example/cyclegan:train-test"
    assert tags["dataset_license"] == cfg.register.dataset_license
    assert tags["test_manifest_sha256"] == GOOD_METRICS["test_manifest_sha256"]
    # the figures are on the run; the version keeps one compact tag of what the gate reads
    assert not [k for k in tags if k.startswith("metric.")]
    assert json.loads(tags["evaluation." + "f" * 64])["kid_AtoB_mean"] == GOOD_METRICS["kid_AtoB_mean"]
    assert mlc.get_run(mv.run_id).data.metrics["kid_AtoB_mean"] == GOOD_METRICS["kid_AtoB_mean"]
    assert tags["git_commit"] == "0123456789abcdef0123456789abcdef01234567"  # baked into the image

    local = mlflow.artifacts.download_artifacts(artifact_uri="models:/cyclegan@champion", dst_path=str(tmp_path / "dl"))
    names = {p.name for p in __import__("pathlib").Path(local).rglob("*.onnx")}
    assert names == {"G_AtoB.onnx", "G_BtoA.onnx"}

    info = mlflow.models.get_model_info("models:/cyclegan@champion")
    assert info.signature.inputs.inputs[0].shape == (-1, 3, -1, -1)
    assert info.signature.params.params[0].name == "direction"
    assert info.saved_input_example_info is not None

    model = mlflow.pyfunc.load_model("models:/cyclegan@champion")
    x = np.linspace(-1, 1, 2 * 3 * 6 * 10, dtype=np.float32).reshape(2, 3, 6, 10)  # not a multiple of 4
    a2b = model.predict(x, params={"direction": "AtoB"})
    b2a = model.predict(x, params={"direction": "BtoA"})
    assert a2b.shape == x.shape
    np.testing.assert_allclose(a2b, np.tanh(0.5 * x), atol=1e-6)
    np.testing.assert_allclose(b2a, np.tanh(-0.5 * x), atol=1e-6)
    tiny = x[:1, :, :3, :5]   # below the ResNet's smallest side (8): padded up, cropped back
    np.testing.assert_allclose(model.predict(tiny), np.tanh(0.5 * tiny), atol=1e-6)


@pytest.mark.parametrize("shape, multiple, min_size, padded, mode", [
    ((6, 10), 4, 8, (8, 12), "reflect"),
    ((3, 5), 4, 8, (8, 8), "edge"),        # a pad as large as the side: numpy would reflect twice
    ((128, 130), 128, 128, (128, 256), "reflect"),
])
def test_pyfunc_padding_follows_the_serving_rule(shape, multiple, min_size, padded, mode):
    from serving.images import pad_to_multiple
    from training.export.pyfunc_model import pad_to

    x = np.random.default_rng(0).random((1, 3, *shape), dtype=np.float32)
    out = pad_to(x, multiple, min_size)
    assert out.shape[2:] == padded
    np.testing.assert_array_equal(out[:, :, :shape[0], :shape[1]], x)
    np.testing.assert_array_equal(out, pad_to_multiple(x, multiple, min_size=min_size)[0])
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (0, 0), (0, padded[0] - shape[0]),
                                                  (0, padded[1] - shape[1])), mode=mode))


def test_register_cli_reports_bad_input_in_one_line(tmp_path, cli_env):
    cli_env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    metrics = dict(GOOD_METRICS)
    del metrics["domain_success_BtoA"]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "metrics.json").write_text(json.dumps(metrics))
    make_export(tmp_path / "e", 1.0)
    proc = subprocess.run([*CYCLEGAN, "register", "--model", str(tmp_path / "e"), "--metrics",
                           str(tmp_path / "m" / "metrics.json"), "--promote"],
                          cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "domain_success_BtoA" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() or not (tmp_path / "runs" / "register").exists()


# -- like evaluations only, no free passes, no ratchet (issue 13 items 6-8) -------------------

def _metrics_file(folder, **values):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(values))
    return folder / "metrics.json"


def _champion(mlc, name="cyclegan"):
    return str(mlc.get_model_version_by_alias(name, "champion").version)


def test_stored_metrics_are_reused_only_on_an_equal_evaluation_fingerprint(tmp_path, monkeypatch, tiny_data):
    """Item 6: the same whole-split hash used to be enough to reuse the champion's stored figures,
    though a --max-images subset, another image size, feature network or KID setting measures
    something else. Now the evaluation fingerprint must be equal."""
    use_mlflow_store(tmp_path, monkeypatch)
    cfg = Config()
    mlc = tracking.client(cfg)
    registry.register(cfg, make_export(tmp_path / "e1", 1.0), make_metrics(tmp_path / "m1"), promote=True,
                      out=tmp_path / "r1")
    assert mlc.get_model_version("cyclegan", "1").tags["evaluation_fingerprint"] == "f" * 64

    # same test split hash, another evaluation: the champion's tags are not comparable
    other = make_metrics(tmp_path / "m2", kid_AtoB_mean=0.004, evaluation_fingerprint="e" * 64)
    with pytest.raises(UserError, match="evaluation fingerprint.*--data"):
        registry.register(cfg, make_export(tmp_path / "e2", 2.0), other, promote=True, out=tmp_path / "r2")
    assert not (tmp_path / "r2" / "decision.json").exists()
    assert len(_versions(mlc)) == 1 and _champion(mlc) == "1"     # refused before registering anything
    # with the data, but a champion without generators cannot be re-evaluated: the gate fails, saying why
    decision = registry.register(cfg, tmp_path / "e2", other, promote=True, data_dir=tiny_data, out=tmp_path / "r2")
    assert decision["verdict"] == "fail" and decision["action"] == "none: gate failed, champion unchanged"
    assert any("generators.pt" in reason for reason in decision["reasons"]), decision["reasons"]
    assert decision["evaluation_fingerprint"] == {"challenger": "e" * 64, "champion": None, "equal": False}
    assert all(not row["passed"] and row["champion"] is None for row in decision["metrics"])
    assert json.loads((tmp_path / "r2" / "decision.json").read_text()) == decision
    assert _champion(mlc) == "1"

    # an equal fingerprint: the stored figures are reused, and the decision names what was compared
    d3 = registry.register(cfg, make_export(tmp_path / "e3", 3.0), make_metrics(tmp_path / "m3", kid_AtoB_mean=0.004),
                           promote=True, out=tmp_path / "r3")
    assert d3["champion_metrics_source"].startswith("registry tags")
    assert d3["evaluation_fingerprint"] == {"challenger": "f" * 64, "champion": "f" * 64, "equal": True}
    assert d3["action"] == "promoted" and _champion(mlc) == "3"


def test_a_champion_missing_a_gate_metric_never_passes_a_challenger_for_free(tmp_path, monkeypatch, tiny_data):
    """Item 7: v1 became champion under a narrower gate, so its tags hold no KID and no cycle
    PSNR. A challenger with KID 9 and cycle PSNR 1 dB used to pass, 'compared on floors only'."""
    use_mlflow_store(tmp_path, monkeypatch)
    narrow = Config(register=RegisterConfig(gate_metrics=["domain_success_AtoB", "domain_success_BtoA"]))
    v1 = _metrics_file(tmp_path / "m1", **{k: GOOD_METRICS[k] for k in (
        "domain_success_AtoB", "domain_success_BtoA", "test_manifest_sha256", "evaluation_fingerprint")})
    registry.register(narrow, make_export(tmp_path / "e1", 1.0), v1, promote=True, out=tmp_path / "r1")

    cfg = Config()
    awful = make_metrics(tmp_path / "m2", kid_AtoB_mean=9.0, kid_BtoA_mean=9.0, cycle_psnr_A=1.0, cycle_psnr_B=1.0)
    decision = registry.register(cfg, make_export(tmp_path / "e2", 2.0), awful, promote=True, data_dir=tiny_data,
                                 out=tmp_path / "r2")
    assert decision["verdict"] == "fail" and decision["champion_after"] == "1"
    failed = {r["metric"]: r for r in decision["metrics"] if not r["passed"]}
    assert set(failed) == {"kid_AtoB_mean", "kid_BtoA_mean", "cycle_psnr_A", "cycle_psnr_B"}
    for row in failed.values():
        assert row["champion"] is None and "champion value missing or not finite" in row["reason"]
    # the registry tried to re-evaluate the champion first, and says why it could not
    assert decision["champion_metrics_source"].startswith("not re-evaluated")
    assert any("generators.pt" in reason for reason in decision["reasons"]), decision["reasons"]
    assert _champion(tracking.client(cfg)) == "1"


def test_five_promotions_each_a_margin_worse_cannot_ratchet_kid(tmp_path, monkeypatch):
    """Item 8: each challenger 0.002 KID worse than the last used to pass against the champion
    alone, doubling KID from 0.010 to 0.020 in five promotions. The best value any promoted
    version reached on this evaluation binds too: the drift stops at one margin."""
    use_mlflow_store(tmp_path, monkeypatch)
    cfg = Config()
    margin = cfg.register.kid_margin
    mlc = tracking.client(cfg)
    registry.register(cfg, make_export(tmp_path / "e1", 1.0), make_metrics(tmp_path / "m1"), promote=True,
                      out=tmp_path / "r1")
    kid, actions = GOOD_METRICS["kid_AtoB_mean"], []
    for step in range(2, 7):
        kid = kid + margin        # exactly champion + margin: the champion-only rule lets each through
        decision = registry.register(cfg, make_export(tmp_path / f"e{step}", float(step)),
                                     make_metrics(tmp_path / f"m{step}", kid_AtoB_mean=kid), promote=True,
                                     out=tmp_path / f"r{step}")
        actions.append(decision["action"])
    assert actions == ["promoted"] + ["none: gate failed, champion unchanged"] * 4
    champion = mlc.get_model_version_by_alias("cyclegan", "champion")
    assert str(champion.version) == "2"
    drift = registry.measurement(champion, "f" * 64)["kid_AtoB_mean"] - GOOD_METRICS["kid_AtoB_mean"]
    assert drift <= margin * (1 + 1e-9)
    # the last decision explains the bound: the best promoted value, its version, the tighter threshold
    row = {r["metric"]: r for r in decision["metrics"]}["kid_AtoB_mean"]
    assert (row["best_promoted"], row["best_promoted_version"]) == (GOOD_METRICS["kid_AtoB_mean"], "1")
    assert row["threshold"] == pytest.approx(GOOD_METRICS["kid_AtoB_mean"] + margin)
    assert "best promoted (version 1)" in row["reason"]
    assert decision["best_promoted"]["kid_AtoB_mean"] == {"value": GOOD_METRICS["kid_AtoB_mean"], "version": "1"}


def test_a_rolled_back_version_no_longer_sets_the_bar(tmp_path, monkeypatch):
    use_mlflow_store(tmp_path, monkeypatch)
    cfg = Config()
    registry.register(cfg, make_export(tmp_path / "e1", 1.0), make_metrics(tmp_path / "m1"), promote=True,
                      out=tmp_path / "r1")
    registry.register(cfg, make_export(tmp_path / "e2", 2.0), make_metrics(tmp_path / "m2", kid_AtoB_mean=0.006),
                      promote=True, out=tmp_path / "r2")
    registry.rollback(cfg)   # version 2 was judged unfit: its KID is no longer the reference
    decision = registry.register(cfg, make_export(tmp_path / "e3", 3.0),
                                 make_metrics(tmp_path / "m3", kid_AtoB_mean=0.0115), promote=True,
                                 out=tmp_path / "r3")
    assert decision["best_promoted"]["kid_AtoB_mean"] == {"value": GOOD_METRICS["kid_AtoB_mean"], "version": "1"}
    assert decision["action"] == "promoted"
