"""The live MLflow logger (training/mlops/live.py): queueing on the training thread, delivery,
buffering, retry and backoff from its own thread, the one-line report of what was not
delivered, and ``track train`` catching up with one point per step (a real SQLite store).
The end-to-end runs of ``cyclegan train --track`` against real stores are in
tests/e2e/test_live_tracking.py."""
from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import TESTS_PROFILE, make_images
from helpers.mlops import use_mlflow_store
from training.config import load_config
from training.engine.trainer import LOG_FIELDS
from training.layout import TrainRun
from training.mlops import live, tracking

LOSS_KEYS = [f for f in LOG_FIELDS if f.startswith("loss_")]


@pytest.fixture(autouse=True)
def http_settings_restored(monkeypatch):
    """``LiveLogger.start`` bounds MLflow's HTTP retries in os.environ; keep that in the test."""
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(key, "7" if key.endswith("RETRIES") else "120")


@pytest.fixture
def fast(monkeypatch):
    """Short intervals, so the thread's retries happen within a test."""
    monkeypatch.setattr(live, "BATCH_INTERVAL_S", 0.02)
    monkeypatch.setattr(live, "FIRST_BACKOFF_S", 0.02)
    monkeypatch.setattr(live, "MAX_BACKOFF_S", 0.1)
    monkeypatch.setattr(live, "CLOSING_RETRY_S", 0.02)


def log_row(iteration: int, epoch: int = 1) -> dict:
    return {"epoch": epoch, "iteration": iteration, **{k: 1.0 + iteration / 100 for k in LOSS_KEYS},
            "lr": 2e-4, "it_per_s": 5.0, "time": 1_800_000_000.0 + iteration}


class FlakyStore:
    """A stand-in for an MLflow client behind a network: every call is recorded with the thread
    that made it, and the first ``failures`` calls raise ConnectionError (a network fault: a
    refused connection, a reset), as many times as asked, before the store answers again. It
    keeps metrics and image steps like a store, so deliveries can be counted."""

    def __init__(self, failures: int = 0, always_fail: bool = False):
        self.failures, self.always_fail = failures, always_fail
        self.calls: list[tuple[str, str]] = []       # (method, thread name)
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.image_steps: list[int] = []
        self.lock = threading.Lock()

    def _call(self, name: str) -> None:
        with self.lock:
            self.calls.append((name, threading.current_thread().name))
            if self.always_fail or self.failures > 0:
                self.failures -= 1
                raise ConnectionError(f"{name}: connection refused (simulated)")

    def get_run(self, run_id):
        self._call("get_run")
        latest = {k: v[-1][1] for k, v in self.metrics.items()}
        return SimpleNamespace(data=SimpleNamespace(metrics=latest))

    def get_metric_history(self, run_id, key):
        self._call("get_metric_history")
        return [SimpleNamespace(step=s, value=v) for s, v in self.metrics.get(key, [])]

    def list_artifacts(self, run_id, path):
        self._call("list_artifacts")
        return [SimpleNamespace(path=f"images/samples+step+{s}+timestamp+1+0a-1.png") for s in self.image_steps]

    def log_batch(self, run_id, metrics=(), synchronous=None):
        self._call("log_batch")
        for m in metrics:
            self.metrics.setdefault(m.key, []).append((m.step, m.value))

    def log_image(self, run_id, image, key=None, step=None, synchronous=None):
        self._call("log_image")
        self.image_steps.append(step)


def make_logger(cfg, tmp_path, store, open_failures: int = 0, **kw) -> live.LiveLogger:
    remaining = [open_failures]

    def open_run():
        store._call("open_run")
        if remaining[0] > 0:
            remaining[0] -= 1
            raise ConnectionError("open_run: connection refused (simulated)")
        return "r" * 32

    return live.LiveLogger(cfg, tmp_path / "train", client=lambda: store, open_run=open_run,
                           system_metrics_interval_s=0, **kw)


@pytest.fixture
def cfg():
    return load_config(TESTS_PROFILE, required=True)


def samples(tmp_path, iterations) -> list[tuple[Path, int]]:
    folder = tmp_path / "train" / "samples"
    made = make_images(folder, len(iterations), size=(12, 8))
    out = []
    for path, iteration in zip(made, iterations):
        target = TrainRun(tmp_path / "train").sample(iteration)
        path.rename(target)
        out.append((target, iteration))
    return out


def test_the_training_thread_only_queues_and_another_thread_delivers(fast, cfg, tmp_path):
    store = FlakyStore()
    logger = make_logger(cfg, tmp_path, store)
    logger.start()
    for i in (5, 10, 15):
        logger.on_log_row(log_row(i))
    for path, i in samples(tmp_path, [10, 15]):
        logger.on_sample(path, i)
    tally = logger.close()
    assert tally["undelivered_rows"] == tally["undelivered_samples"] == 0
    assert (tally["delivered_rows"], tally["delivered_samples"]) == (3, 2)
    assert store.calls and {thread for _, thread in store.calls} == {"cyclegan-live-mlflow"}
    assert [s for s, _ in store.metrics["train/loss_G"]] == [5, 10, 15]
    assert set(store.metrics) == {f"train/{k}" for k in (*LOSS_KEYS, "lr", "it_per_s")}
    assert sorted(store.image_steps) == [10, 15]


def test_a_failing_store_keeps_everything_and_gets_it_once_when_it_answers_again(fast, cfg, tmp_path):
    store = FlakyStore(failures=4)
    logger = make_logger(cfg, tmp_path, store, open_failures=2, flush_s=30)
    logger.start()
    for i in range(1, 41):
        logger.on_log_row(log_row(i))
    for path, i in samples(tmp_path, [20, 40]):
        logger.on_sample(path, i)
    tally = logger.close()
    assert tally["run_id"] == "r" * 32 and tally["undelivered_rows"] == 0 and tally["undelivered_samples"] == 0
    assert logger.failed_attempts >= 3 and "ConnectionError" in logger.last_error
    for key, points in store.metrics.items():
        assert [s for s, _ in points] == list(range(1, 41)), key      # each step once, in order
    assert sorted(store.image_steps) == [20, 40]


def test_a_dead_store_never_raises_and_the_rest_is_reported_in_one_line(fast, cfg, tmp_path, capsys):
    store = FlakyStore(always_fail=True)
    logger = make_logger(cfg, tmp_path, store, flush_s=0.3)
    logger.start()
    for i in (5, 10):
        logger.on_log_row(log_row(i))
    tally = logger.close()
    assert tally["run_id"] is None and tally["undelivered_rows"] == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "could not be opened" in err and "ConnectionError" in err
    assert f"cyclegan track train {tmp_path / 'train'}" in err


def test_a_store_that_fails_after_the_run_opened_is_reported_with_the_counts(fast, cfg, tmp_path, capsys):
    store = FlakyStore()
    logger = make_logger(cfg, tmp_path, store, flush_s=0.3)
    logger.start()
    logger.on_log_row(log_row(5))
    deadline = time.monotonic() + 30
    while logger.delivered_rows < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    store.always_fail = True                       # the network goes away mid-run
    for i in (10, 15, 20):
        logger.on_log_row(log_row(i))
    (sample,) = samples(tmp_path, [20])
    logger.on_sample(*sample)
    tally = logger.close()
    assert (tally["delivered_rows"], tally["undelivered_rows"], tally["undelivered_samples"]) == (1, 3, 1)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "did not receive 3 training-log row(s) and 1 sample grid(s)" in err and "live_flush_s=0.3s" in err


def test_backoff_doubles_up_to_its_cap_and_is_short_while_closing():
    waits = [live.FIRST_BACKOFF_S]
    for _ in range(8):
        waits.append(live.next_backoff(waits[-1], closing=False))
    assert waits[:4] == [live.FIRST_BACKOFF_S * 2 ** n for n in range(4)]
    assert max(waits) == waits[-1] == live.MAX_BACKOFF_S
    assert live.next_backoff(live.MAX_BACKOFF_S, closing=True) == live.CLOSING_RETRY_S


def test_steps_the_run_already_holds_are_not_sent_again(fast, cfg, tmp_path):
    """A resumed run trains again the iterations after its checkpoint; the store may have them."""
    store = FlakyStore()
    store.metrics = {f"train/{k}": [(5, 0.5), (10, 0.5)] for k in (*LOSS_KEYS, "lr", "it_per_s")}
    store.image_steps = [10]
    logger = make_logger(cfg, tmp_path, store)
    logger.start()
    for i in (5, 10, 15):
        logger.on_log_row(log_row(i))
    for path, i in samples(tmp_path, [10, 20]):
        logger.on_sample(path, i)
    logger.close()
    assert [s for s, _ in store.metrics["train/loss_G"]] == [5, 10, 15]
    assert sorted(store.image_steps) == [10, 20]


def test_trainer_tells_its_listener_of_every_row_and_sample(cfg, tiny_data, tmp_path):
    from training.engine.trainer import train

    class Recorder:
        def __init__(self):
            self.rows, self.samples = [], []

        def on_log_row(self, row):
            self.rows.append(row)

        def on_sample(self, path, iteration):
            self.samples.append((Path(path), iteration))

    recorder = Recorder()
    train(cfg, tiny_data, tmp_path / "run", progress=False, listener=recorder)
    with open(TrainRun(tmp_path / "run").log, newline="") as f:
        written = list(csv.DictReader(f))
    assert [r["iteration"] for r in recorder.rows] == [int(r["iteration"]) for r in written]
    assert recorder.rows[0]["loss_G"] == pytest.approx(float(written[0]["loss_G"]))
    assert {p for p, _ in recorder.samples} == set(TrainRun(tmp_path / "run").sample_files())
    assert all(p.is_file() and tracking.sample_step(p) == i for p, i in recorder.samples)


def fake_train_folder(root: Path, cfg, iterations: list[int], sample_at: list[int]) -> Path:
    """A train output folder (config, training log, sample grids) without training."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(cfg.to_dict()))
    with open(TrainRun(root).log, "w", newline="") as f:
        writer = csv.DictWriter(f, LOG_FIELDS)
        writer.writeheader()
        writer.writerows(log_row(i, epoch=1 + i // 10) for i in iterations)
    TrainRun(root).samples.mkdir()
    for path, i in zip(make_images(root / "tmp", len(sample_at), size=(12, 8)), sample_at):
        path.rename(TrainRun(root).sample(i))
    return root


class Outage:
    """Wraps a real MLflow client; while ``down`` every call raises ConnectionError, a stand-in
    for the tracking server going away mid-run."""

    def __init__(self, client):
        self.client, self.down = client, False

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise ConnectionError(f"{name}: connection refused (simulated outage)")
            return attr(*args, **kwargs)
        return call


def test_track_train_catches_up_after_a_partial_delivery_with_one_point_per_step(fast, cfg, tmp_path, monkeypatch):
    use_mlflow_store(tmp_path, monkeypatch)
    iterations, sample_at = [5, 10, 15, 20, 25, 30], [10, 20, 30]
    out = fake_train_folder(tmp_path / "train", cfg, iterations, sample_at)
    outage = Outage(tracking.client(cfg))
    logger = live.LiveLogger(cfg, out, client=lambda: outage, flush_s=0.3, system_metrics_interval_s=0)
    with open(TrainRun(out).log, newline="") as f:
        rows = list(csv.DictReader(f))
    logger.start()
    for row in rows[:3]:
        logger.on_log_row(row)
    logger.on_sample(TrainRun(out).sample(10), 10)
    deadline = time.monotonic() + 60
    while (logger.delivered_rows, logger.delivered_samples) != (3, 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (logger.delivered_rows, logger.delivered_samples) == (3, 1)
    outage.down = True
    for row in rows[3:]:
        logger.on_log_row(row)
    for i in sample_at[1:]:
        logger.on_sample(TrainRun(out).sample(i), i)
    tally = logger.close()
    assert (tally["undelivered_rows"], tally["undelivered_samples"]) == (3, 2)
    run_id = TrainRun(out).run_id.read_text().strip()
    assert run_id == tally["run_id"]

    assert tracking.log_train(cfg, out) == run_id                   # the catch-up
    assert tracking.log_train(cfg, out) == run_id                   # and again: nothing new
    mlc = tracking.client(cfg)
    for key in ("train/loss_G", "train/lr", "train/it_per_s"):
        assert sorted(m.step for m in mlc.get_metric_history(run_id, key)) == iterations, key
    assert sorted(m.step for m in mlc.get_metric_history(run_id, "loss_G")) == [1, 2, 3, 4]   # epochs
    assert tracking.logged_images(mlc, run_id) == sample_at          # each grid once
