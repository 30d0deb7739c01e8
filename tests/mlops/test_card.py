"""The model card on every registered version (issue 16 item 8): its content read back with
MlflowClient from a real SQLite store, tags kept to lineage and what automation filters on,
versions registered before the card still gating, and the card as the MLflow UI shows it (a real
`mlflow server`, headless Chromium)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import TESTS_PROFILE, make_data
from helpers.checkpoints import write_generator_checkpoint
from helpers.mlops import GOOD_METRICS, make_export, make_metrics, use_mlflow_store
from training.config import Config, load_config
from training.mlops import registry, tracking

CHROMIUM = Path("/usr/bin/chromium")
SELECTION = {"mode": "best", "epoch": 4, "checkpoint": "epoch_4.pt", "metric": "kid", "score": 0.123,
             "kept_epochs": [2, 4, 6], "epochs_trained": 6}
BASELINES = {"baseline_kid_AtoB_mean": 0.051, "baseline_kid_BtoA_mean": 0.052, "baseline_cycle_psnr_A": 11.5,
             "baseline_cycle_psnr_B": 12.5, "baseline_domain_success_AtoB": 0.02, "baseline_domain_success_BtoA": 0.03}
# what a version's tags may hold: lineage and what automation and the gate filter on
ALLOWED_TAGS = {"onnx_sha256", "run_id", "dataset_license", "git_commit", "git_dirty", "container_image",
                "data_manifest_sha256", "test_manifest_sha256", "evaluation_fingerprint", "gate_verdict",
                "champion_trail", "previous_champion", "selected_epoch", "selection_mode", "selection_metric"}


def _inputs(tmp_path: Path) -> dict:
    """Prepared data with a manifest, a selected checkpoint with its record, and an evaluation
    folder (metrics with baselines, a report) for each of two versions."""
    data = make_data(tmp_path / "data")
    manifest = {"format": 1, "source": {"kind": "synthetic", "source": "synthetic"},
                "counts": {"trainA": 6, "trainB": 5, "testA": 3, "testB": 3}}
    (data / "manifest.json").write_text(json.dumps(manifest))
    cfg = load_config(TESTS_PROFILE, [], required=True)
    checkpoint = write_generator_checkpoint(tmp_path / "select" / "chosen.pt", cfg, 4, selection=SELECTION)
    evals = {}
    for name, overrides in (("v1", {}), ("v2", {"kid_AtoB_mean": 0.020})):
        path = make_metrics(tmp_path / f"eval-{name}", **BASELINES, **overrides)
        (path.parent / "report").mkdir()
        (path.parent / "report" / "index.html").write_text("<!DOCTYPE html><h1>CycleGAN evaluation</h1>")
        evals[name] = path
    return {"data": data, "checkpoint": checkpoint, "metrics": evals}


def headline_rows(card: str) -> dict[str, list[str]]:
    """metric -> its cells in the card's headline table."""
    rows = {}
    for line in card.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_registered_version_carries_a_model_card(tmp_path, monkeypatch):
    use_mlflow_store(tmp_path, monkeypatch)
    monkeypatch.setenv("CYCLEGAN_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    cfg = Config()
    mlc = tracking.client(cfg)
    inputs = _inputs(tmp_path)
    d1 = registry.register(cfg, make_export(tmp_path / "e1", 1.0), inputs["metrics"]["v1"], promote=True,
                           data_dir=inputs["data"], checkpoint=inputs["checkpoint"], out=tmp_path / "r1")
    v1 = mlc.get_model_version("cyclegan", d1["challenger_version"])
    card = v1.description
    assert card.startswith("### cyclegan version 1: gate **pass**, promoted to champion")
    # the data set, its manifest hash, the training, the checkpoint and how it was chosen
    assert f"synthetic; manifest sha256 `{tracking.manifest_sha256(inputs['data'])}`" in card
    assert "testA 3, testB 3, trainA 6, trainB 5" in card
    assert f"6 epochs; run `{d1['run_id']}`" in card
    assert ("epoch **4** of 6: the best of 3 kept epoch checkpoints by validation KID (mean of both directions) "
            "= 0.123, scored on training images, not the test split") in card
    assert f"manifest hash `{GOOD_METRICS['test_manifest_sha256']}`" in card
    assert f"`{GOOD_METRICS['evaluation_fingerprint']}`" in card
    # the report: its link in the UI and its runs:/ address
    experiment = mlc.get_run(d1["run_id"]).info.experiment_id
    path = "evaluation/report/index.html"
    assert f"[{path}](#/experiments/{experiment}/runs/{d1['run_id']}/artifactPath/{path})" in card
    assert f"`runs:/{d1['run_id']}/{path}`" in card
    assert path in {a.path for a in mlc.list_artifacts(d1["run_id"], "evaluation/report")}
    # headline metrics: this version, no champion yet, the untranslated baseline, the gate
    rows = headline_rows(card)
    assert list(rows) == cfg.register.gate_metrics
    for name, (better, value, champion, baseline, gate) in rows.items():
        assert float(value) == pytest.approx(GOOD_METRICS[name], rel=1e-3), name
        assert champion == "–" and float(baseline) == pytest.approx(BASELINES[f"baseline_{name}"], rel=1e-3)
        assert gate.startswith("pass") and better in ("higher", "lower")
    # the tags: lineage and automation keys, one compact figure tag, no metric.* sprawl
    tags = v1.tags
    assert set(tags) - ALLOWED_TAGS == {f"evaluation.{GOOD_METRICS['evaluation_fingerprint']}"}
    assert (tags["selected_epoch"], tags["selection_mode"], tags["selection_metric"]) == ("4", "best", "kid")
    assert tags["git_commit"] == "0123456789abcdef0123456789abcdef01234567" and tags["gate_verdict"] == "pass"

    # version 2: worse KID, the gate fails: the card shows the champion's figures and why
    d2 = registry.register(cfg, make_export(tmp_path / "e2", 2.0), inputs["metrics"]["v2"], promote=True,
                           data_dir=inputs["data"], checkpoint=inputs["checkpoint"], out=tmp_path / "r2")
    card2 = mlc.get_model_version("cyclegan", d2["challenger_version"]).description
    assert card2.startswith("### cyclegan version 2: gate **fail**, not promoted (gate failed, champion unchanged); "
                            "champion is version 1")
    assert "| metric | better | this version | champion (v1) | untranslated | gate |" in card2
    rows2 = headline_rows(card2)
    kid = rows2["kid_AtoB_mean"]
    assert (float(kid[1]), float(kid[2])) == (pytest.approx(0.020), pytest.approx(GOOD_METRICS["kid_AtoB_mean"]))
    assert kid[4].startswith("**fail**") and "threshold 0.012" in kid[4]
    assert all(cells[4].startswith("pass") for name, cells in rows2.items() if name != "kid_AtoB_mean")
    assert "- kid_AtoB_mean: 0.02 > 0.012 = champion + 0.002" in card2
    # re-registering the same graphs rewrites the card with the newest decision, nothing else
    registry.register(cfg, tmp_path / "e2", inputs["metrics"]["v1"], promote=True, data_dir=inputs["data"],
                      checkpoint=inputs["checkpoint"], out=tmp_path / "r3")
    assert mlc.get_model_version("cyclegan", "2").description.startswith(
        "### cyclegan version 2: gate **pass**, promoted to champion (replacing version 1)")


def test_a_version_registered_before_the_card_still_sets_the_bar(tmp_path, monkeypatch):
    """Older versions kept their figures as one `metric.<name>` tag each and no compact tag: the
    gate reads those for a champion measured the same way."""
    use_mlflow_store(tmp_path, monkeypatch)
    cfg = Config()
    mlc = tracking.client(cfg)
    registry.register(cfg, make_export(tmp_path / "e1", 1.0), make_metrics(tmp_path / "m1"), promote=True,
                      out=tmp_path / "r1")
    fingerprint = GOOD_METRICS["evaluation_fingerprint"]
    mlc.delete_model_version_tag("cyclegan", "1", f"evaluation.{fingerprint}")   # the old form
    for name, value in tracking.numeric_metrics(GOOD_METRICS).items():
        mlc.set_model_version_tag("cyclegan", "1", f"metric.{name}", repr(value))
    old = mlc.get_model_version("cyclegan", "1")
    assert registry.measurement(old, fingerprint)["kid_AtoB_mean"] == GOOD_METRICS["kid_AtoB_mean"]
    assert registry.measurement(old, "e" * 64) is None

    worse = make_metrics(tmp_path / "m2", kid_AtoB_mean=GOOD_METRICS["kid_AtoB_mean"] + 0.003)
    decision = registry.register(cfg, make_export(tmp_path / "e2", 2.0), worse, promote=True, out=tmp_path / "r2")
    row = {r["metric"]: r for r in decision["metrics"]}["kid_AtoB_mean"]
    assert row["champion"] == GOOD_METRICS["kid_AtoB_mean"] and not row["passed"]
    assert decision["champion_metrics_source"].startswith("registry tags") and decision["champion_after"] == "1"


def test_a_checkpoint_without_a_selection_record_is_tagged_with_its_own_epoch(tmp_path, monkeypatch):
    """A trainer's own checkpoint registered by hand: the version says which epoch it holds, and
    neither the run's choice (the select step's tags) nor a mode it did not go through."""
    use_mlflow_store(tmp_path, monkeypatch)
    cfg = Config()
    mlc = tracking.client(cfg)
    train = tmp_path / "train"
    train.mkdir()
    run_id = mlc.create_run(tracking.experiment_id(mlc, cfg)).info.run_id
    (train / "mlflow_run_id").write_text(run_id + "\n")
    for key, value in {"selected_epoch": "6", "selection_mode": "best", "selection_metric": "kid"}.items():
        mlc.set_tag(run_id, key, value)   # what the select step logged for another checkpoint
    checkpoint = write_generator_checkpoint(tmp_path / "epoch_2.pt", load_config(TESTS_PROFILE, [], required=True), 2)
    decision = registry.register(cfg, make_export(tmp_path / "e", 1.0), make_metrics(tmp_path / "m"),
                                 run_id_file=train / "mlflow_run_id", checkpoint=checkpoint, out=tmp_path / "r")
    version = mlc.get_model_version("cyclegan", decision["challenger_version"])
    assert version.tags["selected_epoch"] == "2" and "selection_mode" not in version.tags
    assert "epoch 2 (no selection record: registered from a trainer checkpoint)" in version.description
    # without --checkpoint the run's choice is the best there is
    d2 = registry.register(cfg, make_export(tmp_path / "e2", 2.0), make_metrics(tmp_path / "m2"),
                           run_id_file=train / "mlflow_run_id", out=tmp_path / "r2")
    assert mlc.get_model_version("cyclegan", d2["challenger_version"]).tags["selected_epoch"] == "6"


# -- the card in the MLflow UI ---------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on a SQLite store in tmp_path (artifacts proxied under it); yields its URL."""
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not come up:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)   # the server and the workers it started, nothing else
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_the_card_renders_on_the_version_page_of_the_mlflow_ui(tmp_path, monkeypatch, mlflow_server):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make system-deps)")
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.chdir(tmp_path)
    cfg = Config()
    inputs = _inputs(tmp_path)
    decision = registry.register(cfg, make_export(tmp_path / "e1", 1.0), inputs["metrics"]["v1"], promote=True,
                                 data_dir=inputs["data"], checkpoint=inputs["checkpoint"], out=tmp_path / "r1")
    version = decision["challenger_version"]
    card = tracking.client(cfg).get_model_version("cyclegan", version).description
    experiment = tracking.client(cfg).get_run(decision["run_id"]).info.experiment_id
    report_link = f"{mlflow_server}/#/experiments/{experiment}/runs/{decision['run_id']}/artifactPath/" \
                  "evaluation/report/index.html"
    assert f"]({report_link})" in card            # a server: the link is absolute

    shot = tmp_path / "model-card.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1800})
            page = context.new_page()
            page.goto(f"{mlflow_server}/#/models/cyclegan/versions/{version}", wait_until="domcontentloaded")
            page.wait_for_selector("text=Headline metrics (test split)", timeout=120_000)
            text = page.inner_text("body")
            cells = page.eval_on_selector_all(
                "table tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))")
            href = page.get_attribute("a:has-text('evaluation/report/index.html')", "href")
            page.screenshot(path=str(shot), full_page=True)
            with context.expect_page() as opened:      # the card opens the report in a new tab
                page.click("a:has-text('evaluation/report/index.html')")
            report_page = opened.value
            report_page.wait_for_selector("text=evaluation/report/index.html", timeout=120_000)
            report_url = report_page.url
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    # the Markdown was rendered: headings and bold as text, tables as table rows
    assert "cyclegan version 1: gate pass, promoted to champion" in text
    assert "### " not in text and "**" not in text
    assert "epoch 4 of 6: the best of 3 kept epoch checkpoints" in text
    rows = {r[0]: r for r in cells if r}
    assert rows["Checkpoint"][1].startswith("epoch 4 of 6")
    assert rows["Evaluation fingerprint"][1] == GOOD_METRICS["evaluation_fingerprint"]
    for name in cfg.register.gate_metrics:
        assert float(rows[name][2]) == pytest.approx(GOOD_METRICS[name], rel=1e-3), name
        assert float(rows[name][4]) == pytest.approx(BASELINES[f"baseline_{name}"], rel=1e-3), name
    assert href == report_link and report_url == report_link
    assert shot.stat().st_size > 10_000
