"""`python -m training.demo_summary` (what `make demo` prints after `dvc repro`): where the
outputs are, and the "visibly working" verdicts, PASS or FAIL, from made-up metrics files."""
from __future__ import annotations

import json

import pytest

from helpers.mlops import make_export, use_mlflow_store
from training import demo_summary

# A run that visibly works: every translation beats its untranslated baseline.
GOOD = {
    "kid_AtoB_mean": 0.05, "baseline_kid_AtoB_mean": 0.70, "kid_BtoA_mean": 0.02, "baseline_kid_BtoA_mean": 0.71,
    "fd_effnet_AtoB": 120.0, "baseline_fd_effnet_AtoB": 350.0, "fd_effnet_BtoA": 60.0,
    "baseline_fd_effnet_BtoA": 352.0,
    "domain_success_AtoB": 0.85, "baseline_domain_success_AtoB": 0.0, "probe_ceiling_AtoB": 1.0,
    "domain_success_BtoA": 0.975, "baseline_domain_success_BtoA": 0.025, "probe_ceiling_BtoA": 1.0,
    "synthetic_domain_success_AtoB": 0.95, "baseline_synthetic_domain_success_AtoB": 0.0,
    "synthetic_domain_success_BtoA": 1.0, "baseline_synthetic_domain_success_BtoA": 0.0,
    "cycle_psnr_A": 40.0, "baseline_cycle_psnr_A": 12.5, "cycle_psnr_B": 22.0, "baseline_cycle_psnr_B": 13.5,
    "image_size": 64,
}

# One figure at a time made to miss (equal to its baseline counts as a miss), and the
# verdict line that must then say FAIL.
MISSES = [
    ("kid_AtoB_mean", 0.70, "KID A->B"),
    ("kid_BtoA_mean", 0.90, "KID B->A"),
    ("fd_effnet_AtoB", 351.0, "Fréchet distance A->B"),
    ("fd_effnet_BtoA", 352.0, "Fréchet distance B->A"),
    ("domain_success_AtoB", 0.0, "domain success A->B"),
    ("domain_success_BtoA", 0.0, "domain success B->A"),
    ("synthetic_domain_success_AtoB", 0.89, "synthetic statistic A->B"),
    ("synthetic_domain_success_BtoA", 0.5, "synthetic statistic B->A"),
    ("cycle_psnr_A", 12.0, "cycle PSNR A"),
    ("cycle_psnr_B", 13.5, "cycle PSNR B"),
]


def _project(tmp_path, metrics: dict):
    runs = tmp_path / "runs"
    make_export(runs / "export", 3.0)
    (runs / "eval").mkdir(parents=True)
    (runs / "eval" / "metrics.json").write_text(json.dumps(metrics))
    (runs / "train").mkdir()
    (runs / "train" / "mlflow_run_id").write_text("abc123\n")
    return ["--runs", str(runs), "--params", str(tmp_path / "none.yaml")]


def _verdicts(out: str) -> dict[str, str]:
    """Printed verdict lines: their text after the tag -> PASS / FAIL / n/a."""
    found = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("["):
            tag, text = line[1:].split("]", 1)
            found[text.strip()] = tag.strip()
    return found


def test_summary_passes_when_every_figure_beats_its_baseline(tmp_path, monkeypatch, capsys):
    use_mlflow_store(tmp_path, monkeypatch)
    assert demo_summary.main(_project(tmp_path, GOOD)) == 0
    out = capsys.readouterr().out
    for text in ("runs/eval/metrics.json", "report/index.html", "G_AtoB.onnx", "G_BtoA.onnx", "abc123",
                 "champion         (none yet)",
                 "[PASS] KID A->B, G(testA) to testB: 0.05 vs untranslated 0.7 (lower is better)",
                 "[PASS] Fréchet distance B->A, F(testB) to testA: 60 vs untranslated 352 (lower is better)",
                 "[PASS] domain success A->B, share of G(testA) the probe calls B: 85.0% vs untranslated 0.0% "
                 "(higher is better; real testB: 100.0%)",
                 "[PASS] synthetic statistic A->B: 95% of G(testA) on the B side (goal >= 90%; untranslated: 0%)",
                 "[PASS] cycle PSNR A: reconstruction 40.0 dB vs its identity baseline, the translation "
                 "itself, 12.5 dB", "all checks pass"):
        assert text in out, text
    verdicts = _verdicts(out)
    assert len(verdicts) == 10 and set(verdicts.values()) == {"PASS"}, verdicts


def test_summary_fails_when_a_figure_misses(tmp_path, monkeypatch, capsys):
    use_mlflow_store(tmp_path, monkeypatch)
    assert demo_summary.main(_project(tmp_path, {**GOOD, "kid_BtoA_mean": 0.9})) == 1
    out = capsys.readouterr().out
    assert "[FAIL] KID B->A, F(testB) to testA: 0.9 vs untranslated 0.71 (lower is better)" in out
    assert "1 check(s) FAIL" in out


@pytest.mark.parametrize("name, value, label", MISSES, ids=[m[0] for m in MISSES])
def test_each_verdict_fails_alone_when_its_figure_misses(name, value, label):
    lines = demo_summary.verdicts({**GOOD, name: value})
    failed = [line for passed, line in lines if not passed]
    assert len(lines) == 10 and len(failed) == 1, lines
    assert failed[0].startswith(f"  [FAIL] {label}"), failed


def test_a_missing_figure_is_a_failure_not_a_pass(tmp_path, monkeypatch, capsys):
    use_mlflow_store(tmp_path, monkeypatch)
    metrics = {k: v for k, v in GOOD.items() if k not in ("baseline_fd_effnet_AtoB", "cycle_psnr_B")}
    assert demo_summary.main(_project(tmp_path, metrics)) == 1
    verdicts = _verdicts(capsys.readouterr().out)
    assert verdicts["Fréchet distance A->B, G(testA) to testB: baseline_fd_effnet_AtoB missing from the metrics"] == "FAIL"
    assert verdicts["cycle PSNR B: cycle_psnr_B or baseline_cycle_psnr_B missing from the metrics"] == "FAIL"
    assert sum(tag == "FAIL" for tag in verdicts.values()) == 2


def test_other_data_sets_have_no_synthetic_statistic(tmp_path, monkeypatch, capsys):
    """A real data set (no synthetic_* metrics) is judged on the distribution and cycle figures."""
    use_mlflow_store(tmp_path, monkeypatch)
    metrics = {k: v for k, v in GOOD.items() if not k.startswith(("synthetic_", "baseline_synthetic_"))}
    assert demo_summary.main(_project(tmp_path, metrics)) == 0
    verdicts = _verdicts(capsys.readouterr().out)
    assert sorted(tag for tag in verdicts.values()) == ["PASS"] * 8 + ["n/a"] * 2


def test_summary_without_a_run_says_what_to_do(tmp_path, capsys):
    assert demo_summary.main(["--runs", str(tmp_path / "runs"), "--params", str(tmp_path / "x.yaml")]) == 1
    assert "dvc repro" in capsys.readouterr().err
