"""Shared helpers for the export and serving tests: a trained tests-profile checkpoint, an
export, an evaluation's thresholds, a free port, a server process, and the MLflow registry stand-up."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import CYCLEGAN, ROOT, TESTS_PROFILE, cli_env, make_data


def cli(*args: str, check: bool = True, extra_env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run([*CYCLEGAN, *args], cwd=ROOT, env={**cli_env(), **(extra_env or {})}, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"cyclegan {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def cli_main(*args: str) -> int:
    """The CLI in this process (no interpreter start-up and torch import per call)."""
    from training.cli import main

    return main(list(args))


_SHARED: dict[str, tuple[Path, Path, Path]] = {}


def train_and_export(tmp: Path, *export_args: str) -> tuple[Path, Path, Path]:
    """(data, checkpoint, export folder) with the tests profile, through the CLI in-process."""
    data = make_data(tmp / "data")
    assert cli_main("train", "--data", str(data), "--out", str(tmp / "run"), "--params", str(TESTS_PROFILE),
                    "--no-progress") == 0
    checkpoint = tmp / "run" / "checkpoints" / "latest.pt"
    assert cli_main("export", "--checkpoint", str(checkpoint), "--out", str(tmp / "export"), "--params",
                    str(TESTS_PROFILE), "--no-progress", *export_args) == 0
    return data, checkpoint, tmp / "export"


def shared_export(tmp_path_factory) -> tuple[Path, Path, Path]:
    """One trained + exported tests-profile model for every serving test module of a session
    (read-only: tests that change files copy them first)."""
    if "default" not in _SHARED:
        _SHARED["default"] = train_and_export(tmp_path_factory.mktemp("shared-export"))
    return _SHARED["default"]


def write_evaluation(folder: Path, checkpoint_sha: str, a: float, b: float) -> Path:
    """An evaluation's metrics file (with its info file) holding out-of-domain thresholds
    ``a`` and ``b`` for ``checkpoint_sha``: what ``cyclegan export --metrics`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"ood_cycle_psnr_A": a, "ood_cycle_psnr_B": b,
                                                      "ood_percentile": 5.0, "n_test_A": 3, "n_test_B": 3}))
    (folder / "eval_info.json").write_text(json.dumps({"checkpoint_sha256": checkpoint_sha}))
    return folder / "metrics.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``cyclegan serve`` in a subprocess on 127.0.0.1; logs go to a file."""

    def __init__(self, model: str, log_path: Path, *args: str, extra_env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([*CYCLEGAN, "serve", "--model", model, "--port", str(self.port),
                                      "--params", str(TESTS_PROFILE), *args],
                                     cwd=ROOT, env={**cli_env(), **(extra_env or {})}, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 90) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_records(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]


def register_export(export_dir: Path, tracking_uri: str, artifact_root: Path, name: str = "cyclegan",
                    alias: str = "champion") -> str:
    """Log ``export_dir`` as a run's artifacts in a real MLflow store (artifacts under
    ``artifact_root``), register them as a version of ``name`` and point ``alias`` at it;
    returns the version. Uses a client, so the process-wide tracking URI is left alone."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("serving-tests")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        "serving-tests", artifact_location=Path(artifact_root).as_uri())
    run = client.create_run(experiment_id)
    # as the registry's pyfunc lays them out: the graphs sit under model/artifacts/
    client.log_artifacts(run.info.run_id, str(export_dir), "model/artifacts")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # already registered by an earlier call
        pass
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def run_python(code: str, timeout: float = 60) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
