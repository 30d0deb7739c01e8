"""`python -m training.demo_summary` (what `make demo` prints after `dvc repro`): where the
outputs are, and the "visibly working" figures with their pass/fail verdicts."""
from __future__ import annotations

import json

from helpers.mlops import make_export, use_mlflow_store
from training import demo_summary


def _project(tmp_path, success: float, cycle_psnr: float):
    runs = tmp_path / "runs"
    make_export(runs / "export", 3.0)
    (runs / "eval").mkdir(parents=True)
    (runs / "eval" / "metrics.json").write_text(json.dumps({
        "synthetic_domain_success_AtoB": success, "baseline_synthetic_domain_success_AtoB": 0.0,
        "cycle_psnr_A": cycle_psnr, "cycle_psnr_B": cycle_psnr, "baseline_cycle_psnr_A": 12.5,
        "baseline_cycle_psnr_B": 13.5, "kid_AtoB_mean": 0.01, "baseline_kid_AtoB_mean": 0.2, "image_size": 16}))
    (runs / "train").mkdir()
    (runs / "train" / "mlflow_run_id").write_text("abc123\n")
    return ["--runs", str(runs), "--params", str(tmp_path / "none.yaml")]


def test_summary_passes_when_the_figures_meet_their_goals(tmp_path, monkeypatch, capsys):
    use_mlflow_store(tmp_path, monkeypatch)
    args = _project(tmp_path, success=0.95, cycle_psnr=40.0)
    assert demo_summary.main(args) == 0
    out = capsys.readouterr().out
    for text in ("runs/eval/metrics.json", "report/index.html", "G_AtoB.onnx", "G_BtoA.onnx", "abc123",
                 "[PASS] G(testA) on the B side by the synthetic statistic: 95%",
                 "[PASS] cycle PSNR A: reconstruction 40.0 dB vs its identity baseline, the translation "
                 "itself, 12.5 dB", "[PASS] cycle PSNR B", "champion         (none yet)"):
        assert text in out, text


def test_summary_fails_when_a_figure_misses(tmp_path, monkeypatch, capsys):
    use_mlflow_store(tmp_path, monkeypatch)
    assert demo_summary.main(_project(tmp_path, success=0.5, cycle_psnr=40.0)) == 1
    assert "[FAIL] G(testA) on the B side" in capsys.readouterr().out
    assert demo_summary.main(_project(tmp_path / "b", success=0.95, cycle_psnr=1.0)) == 1
    assert "[FAIL] cycle PSNR A" in capsys.readouterr().out


def test_summary_without_a_run_says_what_to_do(tmp_path, capsys):
    assert demo_summary.main(["--runs", str(tmp_path / "runs"), "--params", str(tmp_path / "x.yaml")]) == 1
    assert "dvc repro" in capsys.readouterr().err
