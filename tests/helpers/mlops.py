"""Helpers for the MLOps tests: small real ONNX generators, metrics files, a params file."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from helpers import ROOT, TESTS_PROFILE

GOOD_METRICS = {
    "kid_AtoB_mean": 0.010, "kid_BtoA_mean": 0.012, "cycle_psnr_A": 24.0, "cycle_psnr_B": 23.0,
    "domain_success_AtoB": 0.95, "domain_success_BtoA": 0.93, "synthetic_domain_success_AtoB": 1.0,
    "cycle_l1_A": 0.05, "test_manifest_sha256": "a" * 64, "evaluation_fingerprint": "f" * 64,
}


def write_onnx_generator(path: Path, scale: float) -> Path:
    """A real ONNX model with the exported generators' interface: float NCHW image in, same
    shape out (``tanh(scale * x)``), dynamic batch/height/width, opset 17."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    out = helper.make_tensor_value_info("translated", TensorProto.FLOAT, ["N", 3, "H", "W"])
    const = helper.make_tensor("scale", TensorProto.FLOAT, [], [scale])
    graph = helper.make_graph([helper.make_node("Mul", ["image", "scale"], ["scaled"]),
                               helper.make_node("Tanh", ["scaled"], ["translated"])],
                              "generator", [image], [out], initializer=[const])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_export(folder: Path, scale: float) -> Path:
    write_onnx_generator(folder / "G_AtoB.onnx", scale)
    write_onnx_generator(folder / "G_BtoA.onnx", -scale)
    (folder / "verify.json").write_text(json.dumps({"passed": True, "max_abs_diff": 0.0}))
    return folder


def make_metrics(folder: Path, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metrics.json"
    path.write_text(json.dumps({**GOOD_METRICS, **overrides}, indent=2))
    return path


def write_tests_params(path: Path, **sections) -> Path:
    """params.yaml = the repo's params.yaml with the tests profile and ``sections`` on top."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for extra in (yaml.safe_load(TESTS_PROFILE.read_text()), sections):
        for section, values in extra.items():
            params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def use_mlflow_store(tmp_path: Path, monkeypatch) -> str:
    """A fresh SQLite MLflow store (and ./mlruns artifacts) inside ``tmp_path``, never the repo."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.chdir(tmp_path)
    return uri


def make_dvc_repo(root: Path, **params_sections) -> Path:
    """A git + DVC repo in ``root`` holding this project's dvc.yaml, DVC config and the code the
    stages depend on, with params.yaml = the tests profile (plus ``params_sections``)."""
    import shutil
    import subprocess

    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "training", root / "training", ignore=shutil.ignore_patterns("__pycache__"))
    write_tests_params(root / "params.yaml", **params_sections)
    (root / ".gitignore").write_text("/mlruns/\nmlflow.db\n__pycache__/\n")
    env = dvc_env()
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "tests"], [DVC, "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, env=env)
    shutil.copy(ROOT / ".dvc" / "config", root / ".dvc" / "config")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "pipeline"], cwd=root, check=True, env=env)
    return root


DVC = str(Path(__import__("sys").executable).with_name("dvc"))


def dvc_env(**extra) -> dict:
    """The environment the stages need: ``cyclegan`` (this venv) on PATH, the repo importable."""
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env
