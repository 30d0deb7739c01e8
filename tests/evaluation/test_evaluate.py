"""End-to-end tests of `cyclegan evaluate` on a checkpoint from the trainer (tests profile,
synthetic data from `cyclegan prepare`): outputs, documented names, determinism, the report
in headless Chromium, s3:// paths against the loopback server, and bad input."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import CYCLEGAN, ROOT, TESTS_PROFILE

CHROMIUM = Path("/usr/bin/chromium")


def run(args, env, check=True):
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def evaluate_args(data, checkpoint, out, cache, *extra):
    return [*CYCLEGAN, "evaluate", "--params", str(TESTS_PROFILE), "--no-progress", "--data", str(data),
            "--checkpoint", str(checkpoint), "--out", str(out), "--set", f"evaluate.cache_dir={cache}", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Synthetic data (prepare), a checkpoint (train) and one evaluation with a cold cache."""
    root = tmp_path_factory.mktemp("eval")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    data, run_dir = root / "data", root / "run"
    run([*CYCLEGAN, "prepare", "--params", str(TESTS_PROFILE), "--no-progress", "--out", str(data)], env)
    run([*CYCLEGAN, "train", "--params", str(TESTS_PROFILE), "--no-progress", "--data", str(data),
         "--out", str(run_dir)], env)
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    proc = run(evaluate_args(data, checkpoint, root / "eval1", root / "cache"), env)
    return {"root": root, "env": env, "data": data, "run": run_dir, "checkpoint": checkpoint,
            "out": root / "eval1", "cache": root / "cache", "stdout": proc.stdout}


def _translation_psnr(trained, direction: str, split: str) -> float:
    """Mean PSNR of G(x) against x over a test split, computed apart from the evaluation."""
    import torch

    from training.engine.checkpoint import load_generators
    from training.evaluation import metrics as M
    from training.evaluation.evaluate import load_image

    G_A, G_B, cfg = load_generators(trained["checkpoint"])
    generator = G_A if direction == "AtoB" else G_B
    values = []
    for path in sorted((trained["data"] / split).rglob("*.png")):
        x = load_image(path, cfg.data.crop_size, 3)[None]
        with torch.no_grad():
            y = generator(x)
        values.append(float(M.psnr(M.to_unit(y), M.to_unit(x))))
    return sum(values) / len(values)


def test_evaluate_writes_documented_metrics_and_pictures(trained):
    from PIL import Image

    from training.prepare.manifest import manifest_hash
    from training.evaluation.specs import GATE_KEYS, METRICS, WITH_BASELINE

    out = trained["out"]
    metrics = json.loads((out / "metrics.json").read_text())
    # every name is documented; every gate key is there; the synthetic statistic is reported
    assert all(k.removeprefix("baseline_") in METRICS for k in metrics)
    assert set(GATE_KEYS) <= set(metrics)
    for name in ("cycle_l1_A", "cycle_ssim_B", "identity_l1_A", "identity_l1_B", "kid_AtoB_std", "fd_effnet_BtoA",
                 "probe_ceiling_AtoB", "probe_floor_BtoA", "probe_accuracy_test",
                 "synthetic_domain_success_AtoB", "synthetic_domain_success_BtoA"):
        assert name in metrics, name
    for name in WITH_BASELINE:
        if name in metrics:
            assert f"baseline_{name}" in metrics, name
    assert "fid_AtoB" not in metrics                  # no local Inception weights configured
    # the cycle's baseline is the translation itself (identity map as the return leg)
    assert metrics["baseline_cycle_psnr_A"] == pytest.approx(_translation_psnr(trained, "AtoB", "testA"), abs=1e-4)
    assert 0 < metrics["baseline_cycle_ssim_B"] < 1
    assert metrics["cycle_psnr_A"] < 60 and 0 < metrics["cycle_l1_A"] < 1
    assert metrics["baseline_domain_success_AtoB"] == metrics["probe_floor_AtoB"]
    for name, value in metrics.items():
        if name.startswith(("domain_success", "synthetic_domain", "probe_")):
            assert 0.0 <= value <= 1.0, name
    # the synthetic statistic separates real A from real B without error: untranslated A is never B-like
    assert metrics["baseline_synthetic_domain_success_AtoB"] == 0.0
    assert (metrics["n_test_A"], metrics["n_test_B"], metrics["n_probe_train_A"]) == (6, 6, 12)
    assert metrics["test_manifest_sha256"] == manifest_hash(trained["data"])
    # grids: grid_images rows (tests profile: 4) of input | translation | reconstruction, 32 px + 2 px gaps
    for direction in ("AtoB", "BtoA"):
        with Image.open(out / "grids" / f"{direction}.png") as grid:
            assert grid.size == (3 * 34 + 2, 4 * 34 + 2)
    # DVC plots: the loss curves are the trainer's log, and a row per metric with its baseline
    with open(trained["run"] / "train_log.csv") as f:
        log = list(csv.DictReader(f))
    with open(out / "plots" / "losses.csv") as f:
        losses = list(csv.DictReader(f))
    assert [r["iteration"] for r in losses] == [r["iteration"] for r in log]
    assert float(losses[-1]["loss_G"]) == pytest.approx(float(log[-1]["loss_G"]))
    with open(out / "plots" / "metrics.csv") as f:
        rows = {r["metric"]: r for r in csv.DictReader(f)}
    assert float(rows["kid_AtoB_mean"]["identity"]) == pytest.approx(metrics["baseline_kid_AtoB_mean"])
    info = json.loads((out / "eval_info.json").read_text())
    assert info["data_source"] == "synthetic" and info["train_log"].endswith("train_log.csv")
    assert json.loads(trained["stdout"])["kid_AtoB_mean"] == metrics["kid_AtoB_mean"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".eval1")]   # no temporary folders left


def test_the_out_of_domain_threshold_is_the_low_percentile_of_per_image_cycle_psnr(trained):
    """ood_cycle_psnr_A/B: the evaluate.ood_percentile-th percentile (5th) of each test image's
    cycle PSNR, computed here apart from the evaluation; export records it for serving."""
    import numpy as np

    from training.engine.checkpoint import load_generators
    from training.evaluation import metrics as M
    from training.evaluation.evaluate import load_image
    from training.translate import translate_tensor

    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    G_A, G_B, cfg = load_generators(trained["checkpoint"])
    assert metrics["ood_percentile"] == 5.0
    for domain, there, back in (("A", G_A, G_B), ("B", G_B, G_A)):
        values = []
        for path in sorted((trained["data"] / f"test{domain}").rglob("*.png")):
            x = load_image(path, cfg.data.crop_size, 3)[None]
            rec = translate_tensor(back, translate_tensor(there, x))
            values.append(float(M.psnr(M.to_unit(rec), M.to_unit(x))))
        assert len(values) == metrics[f"n_test_{domain}"] >= 2
        assert metrics[f"ood_cycle_psnr_{domain}"] == pytest.approx(float(np.percentile(values, 5)), abs=1e-3)
        assert min(values) <= metrics[f"ood_cycle_psnr_{domain}"] < metrics[f"cycle_psnr_{domain}"]


def test_metrics_are_identical_across_runs_and_the_cache_is_used(trained):
    cache_files = sorted(p.name for p in trained["cache"].glob("*.npy"))
    assert len(cache_files) == 4                       # testA, testB, trainA, trainB features
    out2 = trained["root"] / "eval2"
    run(evaluate_args(trained["data"], trained["checkpoint"], out2, trained["cache"]), trained["env"])
    assert (out2 / "metrics.json").read_bytes() == (trained["out"] / "metrics.json").read_bytes()
    assert sorted(p.name for p in trained["cache"].glob("*.npy")) == cache_files
    # the warm run skipped the real sets: its feature network saw only the translations. Counted
    # images, not seconds, so neither a busy machine nor a fast one decides the outcome.
    metrics = json.loads((out2 / "metrics.json").read_text())
    tests, probes = metrics["n_test_A"] + metrics["n_test_B"], metrics["n_probe_train_A"] + metrics["n_probe_train_B"]
    cold = json.loads((trained["out"] / "eval_info.json").read_text())["feature_images"]
    warm = json.loads((out2 / "eval_info.json").read_text())["feature_images"]
    assert cold == {"effnet": 2 * tests + probes}      # translations, real test sets, probe training sets
    assert warm == {"effnet": tests}                   # translations only


def test_the_fingerprint_is_written_and_stable(trained):
    from training.evaluation.evaluate import fingerprint

    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    info = json.loads((trained["out"] / "eval_info.json").read_text())
    assert metrics["evaluation_fingerprint"] == fingerprint(info["fingerprint_parts"])
    parts = info["fingerprint_parts"]
    assert parts["size"] == 32 and parts["device"] == {"type": "cpu"}
    assert set(parts["images"]) == {"test_A", "test_B", "probe_A", "probe_B"}
    effnet = parts["features"]["effnet"]
    assert effnet["version"].startswith("effnet_lite0/") and len(effnet["weights_sha256"]) == 64


def _fingerprint_inputs(**changes):
    import torch

    class Tiny(torch.nn.Linear):
        name, version = "tiny", "tiny/v1"

    torch.manual_seed(0)
    inputs = dict(images={"test_A": "a", "test_B": "b", "probe_A": "c", "probe_B": "d"}, size=32,
                  channels={"A": 3, "B": 3}, extractors={"effnet": Tiny(3, 2)}, device=torch.device("cpu"),
                  synthetic=False)
    inputs.update(changes)
    return inputs


def test_the_fingerprint_covers_everything_that_changes_a_number():
    """Every evaluate: key is a part unless listed as changing no number; the images, the size,
    the channels, the feature network's version and weights, the device type and the synthetic
    statistic are parts too."""
    import torch

    from training.config import EvaluateConfig
    from training.evaluation.evaluate import NUMBERLESS_SETTINGS, fingerprint, fingerprint_parts

    defaults = EvaluateConfig()
    reference = fingerprint(fingerprint_parts(defaults, **_fingerprint_inputs()))
    assert reference == fingerprint(fingerprint_parts(EvaluateConfig(), **_fingerprint_inputs()))
    assert NUMBERLESS_SETTINGS < set(EvaluateConfig.model_fields)
    for key, value in defaults.model_dump().items():
        other = (not value if isinstance(value, bool) else value + 17 if isinstance(value, int)
                 else value * 2 + 1 if isinstance(value, float) else f"{value}-other")
        changed = fingerprint(fingerprint_parts(defaults.model_copy(update={key: other}), **_fingerprint_inputs()))
        assert (changed == reference) == (key in NUMBERLESS_SETTINGS), key

    tiny = _fingerprint_inputs()["extractors"]["effnet"]
    heavier = _fingerprint_inputs()["extractors"]["effnet"]
    with torch.no_grad():
        heavier.weight[0, 0] += 1e-6
    renamed = _fingerprint_inputs()["extractors"]["effnet"]
    renamed.version = "tiny/v2"
    for change in (dict(images={"test_A": "a", "test_B": "b", "probe_A": "c", "probe_B": "e"}), dict(size=64),
                   dict(channels={"A": 1, "B": 3}), dict(extractors={"effnet": heavier}),
                   dict(extractors={"effnet": renamed}), dict(extractors={"effnet": tiny, "inception": tiny}),
                   dict(device=torch.device("cuda")), dict(synthetic=True)):
        assert fingerprint(fingerprint_parts(defaults, **_fingerprint_inputs(**change))) != reference, change
    # which GPU or CPU does not matter: only the kind of device (see the module's notes)
    assert fingerprint(fingerprint_parts(defaults, **_fingerprint_inputs(device=torch.device("cpu", 0)))) == reference


def test_report_loads_offline_in_headless_chromium(trained):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make system-deps)")
    from playwright.sync_api import sync_playwright

    from training.evaluation.specs import METRICS

    report = trained["out"] / "report" / "index.html"
    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--no-first-run"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            table = page.inner_text("table#metrics")
            svgs = page.eval_on_selector_all("svg polyline", "els => els.length")
        finally:
            browser.close()
    assert len(widths) == 2 and all(w > 0 for w in widths), widths
    outside = [u for u in requests if not (u == report.as_uri() or u.startswith("data:"))]
    assert not outside, outside
    for name in metrics:
        if not name.startswith("baseline_"):
            assert name in table, name
    assert set(metrics) - {f"baseline_{n}" for n in METRICS} <= set(METRICS)
    assert svgs >= 2                                   # loss curves drawn inline from the training log
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", report.read_text())


def test_evaluate_with_s3_paths(trained, s3_env):
    bucket = s3_env("eval-bucket")
    client = s3_env.client
    for path in sorted(trained["data"].rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"data/{path.relative_to(trained['data']).as_posix()}")
    client.upload_file(str(trained["checkpoint"]), bucket, "run/checkpoints/latest.pt")
    client.upload_file(str(trained["run"] / "train_log.csv"), bucket, "run/train_log.csv")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run(evaluate_args(f"s3://{bucket}/data", f"s3://{bucket}/run/checkpoints/latest.pt", f"s3://{bucket}/eval",
                      trained["root"] / "cache-s3"), env)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="eval/")["Contents"]}
    assert {"eval/metrics.json", "eval/grids/AtoB.png", "eval/grids/BtoA.png", "eval/report/index.html",
            "eval/plots/losses.csv", "eval/_SUCCESS"} <= keys   # losses.csv: the log found beside the s3 checkpoint
    remote = json.loads(client.get_object(Bucket=bucket, Key="eval/metrics.json")["Body"].read())
    local = json.loads((trained["out"] / "metrics.json").read_text())
    assert remote == local                             # same data and checkpoint, same numbers


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_max_images_identity_off_and_standard_fid_from_local_weights(trained, tmp_path):
    """--max-images caps the test sets, identity off drops its metrics, and a local TorchScript
    Inception stand-in (same call convention as inception-2015-12-05.pt) adds the FID."""
    import torch

    class TinyInception(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert x.dtype == torch.uint8
            pooled = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255.0, 2)
            return pooled.flatten(1)                   # N x 12 "pool features"

    weights = tmp_path / "inception.pt"
    torch.jit.script(TinyInception()).save(str(weights))
    out = tmp_path / "eval"
    run(evaluate_args(trained["data"], trained["checkpoint"], out, tmp_path / "cache", "--max-images", "3",
                      "--set", "evaluate.identity=false", "--set", f"evaluate.inception_weights={weights}",
                      "--train-log", str(trained["run"] / "train_log.csv")), trained["env"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_test_A"], metrics["n_test_B"]) == (3, 3)
    assert not any(k.startswith(("identity_", "baseline_identity_")) for k in metrics)
    assert metrics["fid_AtoB"] > 0 and metrics["baseline_fid_AtoB"] > 0 and "fid_BtoA" in metrics
    # the subset does not change the test split's provenance hash, but it is another evaluation:
    # the fingerprint differs, and eval_info.json says in which parts
    from training.evaluation.evaluate import fingerprint_differences

    full = json.loads((trained["out"] / "metrics.json").read_text())
    assert metrics["test_manifest_sha256"] == full["test_manifest_sha256"]
    assert metrics["evaluation_fingerprint"] != full["evaluation_fingerprint"]
    parts = [json.loads((folder / "eval_info.json").read_text())["fingerprint_parts"] for folder in (trained["out"], out)]
    assert fingerprint_differences(*parts) == ["features", "images", "settings"]


@pytest.mark.parametrize("case", ["missing_checkpoint", "corrupt_checkpoint", "missing_test_split",
                                  "missing_train_log", "bad_config"])
def test_bad_input_is_a_one_line_error_with_exit_2(trained, tmp_path, case):
    import shutil

    data, checkpoint, extra = trained["data"], trained["checkpoint"], []
    if case == "missing_checkpoint":
        checkpoint = tmp_path / "nope.pt"
    elif case == "corrupt_checkpoint":
        checkpoint = tmp_path / "broken.pt"
        checkpoint.write_bytes(b"not a checkpoint")
    elif case == "missing_test_split":
        data = tmp_path / "data"
        shutil.copytree(trained["data"], data)
        shutil.rmtree(data / "testB")
    elif case == "missing_train_log":
        extra = ["--train-log", str(tmp_path / "no_log.csv")]
    else:
        extra = ["--set", "evaluate.kid_subset_size=1"]
    out = tmp_path / "out"
    proc = run(evaluate_args(data, checkpoint, out, tmp_path / "cache", *extra), trained["env"], check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cyclegan evaluate: error:"), proc.stderr
    expected = {"missing_checkpoint": "nope.pt", "corrupt_checkpoint": "broken.pt", "missing_test_split": "testB",
                "missing_train_log": "no_log.csv", "bad_config": "evaluate.kid_subset_size"}[case]
    assert expected in lines[0]
    assert not out.exists()
