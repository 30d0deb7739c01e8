"""``cyclegan train --track`` makes training visible in MLflow while it runs, against real
stores: a SQLite file, and a real ``mlflow server`` on 127.0.0.1 that is killed mid-run, never
there, or behind a proxy that delays every request (issue 16 item 1)."""
from __future__ import annotations

import contextlib
import csv
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import CYCLEGAN, ROOT, TESTS_PROFILE, make_images
from training.layout import TrainRun

TRAIN = [*CYCLEGAN, "train", "--params", str(TESTS_PROFILE), "--no-progress", "--track"]
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
# A run long enough to be watched: 200 images a side, every one an iteration
LONG = ["--set", "train.max_iters_per_epoch=0", "--set", "train.n_epochs_decay=0", "--set", "train.sample_every=25",
        "--set", "train.save_latest_freq=100"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def long_data(root: Path) -> Path:
    for i, name in enumerate(("trainA", "trainB")):
        make_images(root / name, 200, size=(32, 32), seed=i)
    return root


def env_for(uri: str, **extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=uri, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.update(extra)
    return env


@contextlib.contextmanager
def mlflow_server(port: int, root: Path):
    """A real tracking server (SQLite backend, artifacts served by it) on 127.0.0.1:port."""
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / f"server-{time.monotonic_ns()}.log", "w")
    proc = subprocess.Popen([MLFLOW, "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            assert proc.poll() is None, (root / log.name).read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not start within 180 s"
            time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)   # its own session: the server and its workers
        proc.wait()
        log.close()


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def log_iterations(out: Path) -> list[int]:
    with open(TrainRun(out).log, newline="") as f:
        return [int(r["iteration"]) for r in csv.DictReader(f)]


def wait_for(condition, proc, timeout: float, what: str):
    """Poll ``condition()`` while ``proc`` runs; returns its first truthy value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = condition()
            if value:
                return value
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended (exit {proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout} s")


def test_losses_samples_and_system_metrics_arrive_while_training_runs(tmp_path):
    """The issue's test: metrics arrive in MLflow before training ends (SQLite store)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data, out = long_data(tmp_path / "data"), tmp_path / "run"
    proc = subprocess.Popen([*TRAIN, "--data", str(data), "--out", str(out), *LONG, "--set", "train.n_epochs=20",
                             "--set", "register.system_metrics_interval_s=1"],
                            cwd=tmp_path, env=env_for(uri), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = wait_for(lambda: TrainRun(out).run_id.read_text().strip(), proc, 240, "run id")
        mlc = client(uri)

        def seen():
            losses = mlc.get_metric_history(run_id, "train/loss_G")
            images = [a.path for a in mlc.list_artifacts(run_id, "images") if a.path.endswith(".png")]
            system = [k for k in mlc.get_run(run_id).data.metrics if k.startswith("system/")]
            return (losses, images, system) if len(losses) >= 2 and images and system else None

        losses, images, system = wait_for(seen, proc, 240, "loss points, a sample grid and system metrics")
        assert proc.poll() is None                               # training still runs
        assert all(m.step % 5 == 0 for m in losses)              # step = iteration (log_every 5)
        assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system
        assert "samples+step+" in images[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_server_killed_mid_run_does_not_stop_training_and_track_train_catches_up(tmp_path):
    """The issue's test: a dead tracking server does not stop training."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    data, out, store = long_data(tmp_path / "data"), tmp_path / "run", tmp_path / "store"
    env = env_for(uri)
    with mlflow_server(port, store) as server:
        proc = subprocess.Popen([*TRAIN, "--data", str(data), "--out", str(out), *LONG, "--set", "train.n_epochs=3",
                                 "--set", "register.live_flush_s=3", "--set", "register.system_metrics_interval_s=1"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_id = wait_for(lambda: TrainRun(out).run_id.read_text().strip(), proc, 240, "run id")
        mlc = client(uri)
        wait_for(lambda: mlc.get_metric_history(run_id, "train/loss_G"), proc, 240, "loss points")
        os.killpg(server.pid, signal.SIGKILL)                   # the server dies mid-run
        server.wait()
        assert proc.poll() is None
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert TrainRun(out).latest.is_file() and TrainRun(out).epoch(3).is_file()
    assert log_iterations(out)[-1] == 600
    lines = [line for line in err.splitlines() if "did not receive" in line]
    assert len(lines) == 1 and f"cyclegan track train {out}" in lines[0], err[-3000:]

    with mlflow_server(port, store):                            # back again
        for _ in range(2):                                      # the second call adds nothing
            subprocess.run([*CYCLEGAN, "track", "train", str(out), "--params", str(TESTS_PROFILE)], cwd=tmp_path,
                           env=env, check=True, capture_output=True, timeout=300)
        mlc = client(uri)
        iterations = log_iterations(out)
        for key in ("train/loss_G", "train/loss_D_A", "train/lr", "train/it_per_s"):
            assert sorted(m.step for m in mlc.get_metric_history(run_id, key)) == iterations, key
        assert sorted(m.step for m in mlc.get_metric_history(run_id, "loss_G")) == [1, 2, 3]
        from training.mlops.tracking import logged_images

        grids = [int(p.stem.split("_")[1]) for p in TrainRun(out).sample_files()]
        assert logged_images(mlc, run_id) == grids                # every grid once (24 of them, under 50)


def test_a_server_that_is_never_there_does_not_stop_training(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"                     # nothing listens there
    data = long_data(tmp_path / "data")
    proc = subprocess.run([*TRAIN, "--data", str(data), "--out", str(tmp_path / "run"), "--set", "register.live_flush_s=2"],
                          cwd=tmp_path, env=env_for(uri), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert TrainRun(tmp_path / "run").latest.is_file()
    lines = [line for line in proc.stderr.splitlines() if "could not be opened" in line]
    assert len(lines) == 1 and uri in lines[0] and "ConnectionError" in lines[0], proc.stderr[-3000:]
    assert not TrainRun(tmp_path / "run").run_id.exists()        # track train opens the run later


class DelayingProxy:
    """An HTTP proxy on 127.0.0.1 that holds every request ``delay`` seconds before passing it
    to the server: a slow tracking server."""

    def __init__(self, upstream: int, delay: float):
        class Handler(BaseHTTPRequestHandler):
            def forward(self):
                time.sleep(delay)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=120)
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_a_slow_server_never_holds_up_the_training_thread(tmp_path, tiny_data, monkeypatch):
    """In process, so the test sees which thread made each HTTP request."""
    import requests

    from training.config import load_config
    from training.engine.trainer import train
    from training.mlops.live import LiveLogger

    port = free_port()
    with mlflow_server(port, tmp_path / "store"):
        proxy = DelayingProxy(port, delay=2.0)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
        for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "120"),
                           ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")):
            monkeypatch.setenv(key, value)   # restored after the test (start() bounds the first two)
        requests_by_thread = []
        send = requests.Session.send

        def recording_send(self, request, **kwargs):
            requests_by_thread.append(threading.current_thread().name)
            return send(self, request, **kwargs)

        monkeypatch.setattr(requests.Session, "send", recording_send)
        cfg = load_config(TESTS_PROFILE, required=True)
        out = tmp_path / "run"
        logger = LiveLogger(cfg, out, tiny_data, flush_s=300, system_metrics_interval_s=0)
        left_when_training_ended = {}
        try:
            train(cfg, tiny_data, out, progress=False, on_start=logger.start, listener=logger)
            left_when_training_ended["pending"] = logger.pending()
        finally:
            tally = logger.close()
            proxy.close()
        # the training thread made no request; it left the rows to the logger's thread, which
        # was still on its first requests (each held 2 s) when training ended
        assert "MainThread" not in requests_by_thread and requests_by_thread
        rows, grids = left_when_training_ended["pending"]
        assert rows >= 1 and grids >= 1
        # and everything arrived in the end, once
        assert (tally["undelivered_rows"], tally["undelivered_samples"]) == (0, 0)
        mlc = client(f"http://127.0.0.1:{port}")                 # the server itself: the proxy is closed
        steps = [m.step for m in mlc.get_metric_history(tally["run_id"], "train/loss_G")]
        assert steps == log_iterations(out)
