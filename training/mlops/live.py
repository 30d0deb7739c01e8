"""Training made visible in MLflow while it runs: ``cyclegan train --track`` with
``register.live_metrics`` (the main process only).

The trainer tells a ``LiveLogger`` of each training-log row and sample grid it writes
(``engine.trainer.TrainingListener``), on the training thread. Those calls only append to a
deque and return: no I/O, no lock that I/O holds, no MLflow call on the training thread. One
background thread does the rest:

  - opens the pipeline's run (``tracking.open_run``: the one the train folder names, else a new
    one whose id it writes there) and starts MLflow's own system metrics monitor on it
    (``mlflow.system_metrics``: CPU, memory, disk, network, and GPU where ``pynvml`` finds
    one; every ``register.system_metrics_interval_s``, 0 = off);
  - every ``BATCH_INTERVAL_S`` sends the rows that arrived as one ``log_batch``
    (``train/<column>``, step = iteration, the row's own timestamp: ``tracking.row_metrics``)
    and each new grid as an image of key ``samples`` (step = iteration);
  - leaves out the (metric, step) pairs and image steps the run already holds: a resumed run
    trains again the iterations after its checkpoint, which the store may have received.

A failed request keeps everything buffered and the thread tries again after a backoff that
doubles from ``FIRST_BACKOFF_S`` to ``MAX_BACKOFF_S``, so a server that comes back mid-run
receives all of it. MLflow's HTTP client would retry one request for minutes
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``_BACKOFF_FACTOR``/``_TIMEOUT``); ``start`` bounds it for this
process (no retries of its own, ``REQUEST_TIMEOUT_S`` per request) so a dead server is noticed
in seconds. After ``start`` the train process makes no other MLflow call, so nothing else
is affected.

``close`` (end of training, also after an error) gives the thread ``register.live_flush_s`` to
deliver the rest, then says in one line on stderr what was not delivered. The step after train,
``cyclegan track train``, logs that: it adds only what the store lacks.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from ..config import Config

BATCH_INTERVAL_S = 1.0      # how often the thread sends what arrived
FIRST_BACKOFF_S = 1.0       # wait after a first failure, doubled after each further one
MAX_BACKOFF_S = 30.0
CLOSING_RETRY_S = 0.5       # while closing, retry this often until register.live_flush_s is spent
REQUEST_TIMEOUT_S = 10      # one HTTP request to the tracking server
MAX_METRICS_PER_BATCH = 1000   # MLflow's log_batch limit
MAX_MONITOR_RESTARTS = 10   # the system metrics monitor, after the server failed and came back

log = logging.getLogger(__name__)


def next_backoff(current: float, closing: bool) -> float:
    """The wait after the next failure: doubled up to ``MAX_BACKOFF_S``; short while closing,
    when ``register.live_flush_s`` bounds the retrying anyway."""
    return CLOSING_RETRY_S if closing else min(current * 2, MAX_BACKOFF_S)


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:300]}"


class LiveLogger:
    """Sends training-log rows and sample grids to the pipeline's MLflow run from its own
    thread. ``on_start`` / ``start`` begins (after the trainer has cleaned the train folder),
    ``on_log_row`` / ``on_sample`` queue, ``close`` flushes with a bounded wait.

    ``client`` and ``open_run`` default to the configured store (``tracking.client``,
    ``tracking.open_run``); tests pass stand-ins."""

    def __init__(self, cfg: Config, train_dir: str | Path, data_dir: str | Path | None = None, *,
                 client: Callable[[], object] | None = None, open_run: Callable[[], str] | None = None,
                 flush_s: float | None = None, system_metrics_interval_s: float | None = None):
        from . import tracking

        self.cfg, self.train_dir = cfg, Path(train_dir)
        self._make_client = client or (lambda: tracking.client(cfg))
        self._open_run = open_run or (lambda: tracking.open_run(cfg, train_dir, data_dir))
        self.flush_s = cfg.register.live_flush_s if flush_s is None else flush_s
        self.system_metrics_interval_s = (cfg.register.system_metrics_interval_s
                                          if system_metrics_interval_s is None else system_metrics_interval_s)
        # the training thread appends, the worker pops: deque's append/popleft are atomic
        self._rows: deque[dict] = deque()
        self._samples: deque[tuple[Path, int]] = deque()
        # taken from the deques, not yet delivered (the worker's alone)
        self._pending_rows: list[dict] = []
        self._pending_samples: list[tuple[Path, int]] = []
        self._present: dict[str, set[int]] | None = None   # metric -> steps the run holds
        self._image_steps: set[int] | None = None
        self._mlc = None
        self._monitor = None
        self._monitor_restarts = 0
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self.run_id: str | None = None
        self.delivered_rows = 0
        self.delivered_samples = 0
        self.failed_attempts = 0
        self.last_error: str | None = None

    # -- the training thread ----------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (the trainer's ``on_start``: OUT holds only this run)."""
        if self._thread is not None:
            return
        # One request fails in seconds instead of minutes; this thread does its own retrying.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(REQUEST_TIMEOUT_S)
        self._thread = threading.Thread(target=self._loop, name="cyclegan-live-mlflow", daemon=True)
        self._thread.start()

    def on_log_row(self, row: dict) -> None:
        self._rows.append(row)

    def on_sample(self, path: Path, iteration: int) -> None:
        self._samples.append((Path(path), iteration))

    def pending(self) -> tuple[int, int]:
        """(rows, sample grids) received and not yet delivered."""
        return (len(self._rows) + len(self._pending_rows), len(self._samples) + len(self._pending_samples))

    def close(self) -> dict:
        """Deliver what is left within ``flush_s``, say on stderr what was not, and return the
        tally (run_id, delivered_rows, delivered_samples, undelivered_rows, undelivered_samples,
        last_error)."""
        if self._thread is None:
            return self.tally()
        self._closing.set()
        self._wake.set()
        self._thread.join(self.flush_s)
        if self._thread.is_alive():
            self._abandon.set()   # stop retrying; a request in flight ends with the process
        tally = self.tally()
        message = self.undelivered_message(tally)
        if message:
            print(message, file=sys.stderr, flush=True)
        return tally

    def tally(self) -> dict:
        rows, samples = self.pending()
        return {"run_id": self.run_id, "delivered_rows": self.delivered_rows,
                "delivered_samples": self.delivered_samples, "undelivered_rows": rows,
                "undelivered_samples": samples, "last_error": self.last_error}

    def undelivered_message(self, tally: dict) -> str | None:
        from .tracking import tracking_uri

        rows, samples = tally["undelivered_rows"], tally["undelivered_samples"]
        if tally["run_id"] and not rows and not samples:
            return None
        where = tracking_uri(self.cfg)
        later = f"`cyclegan track train {self.train_dir}` logs"
        if tally["run_id"] is None:
            return (f"cyclegan train: the MLflow run could not be opened at {where} ({tally['last_error']}), so "
                    f"{rows} training-log row(s) and {samples} sample grid(s) were not logged while training; "
                    f"{later} everything")
        return (f"cyclegan train: MLflow at {where} did not receive {rows} training-log row(s) and {samples} "
                f"sample grid(s) within register.live_flush_s={self.flush_s:g}s (last error: "
                f"{tally['last_error'] or 'none; still sending'}); {later} them")

    # -- the background thread --------------------------------------------------------

    def _has_work(self) -> bool:
        return self.run_id is None or any(self.pending())

    def _loop(self) -> None:
        backoff, next_try, was_closing = FIRST_BACKOFF_S, 0.0, False
        while not self._abandon.is_set():
            closing = self._closing.is_set()
            if closing and not was_closing:   # a last attempt at once, then short retries
                was_closing, next_try, backoff = True, 0.0, CLOSING_RETRY_S
            if self._has_work() and time.monotonic() >= next_try:
                try:
                    self._deliver()
                    backoff = CLOSING_RETRY_S if closing else FIRST_BACKOFF_S
                except Exception as e:   # never into training: keep it, retry later
                    self.failed_attempts += 1
                    self.last_error = _short(e)
                    log.debug("live MLflow logging failed (%s); retrying in %.1f s", self.last_error, backoff)
                    next_try = time.monotonic() + backoff
                    backoff = next_backoff(backoff, closing)
            if closing and not self._has_work():
                break
            self._wake.wait(CLOSING_RETRY_S if closing else BATCH_INTERVAL_S)
            self._wake.clear()
        self._stop_system_metrics()

    def _take(self) -> None:
        while self._rows:
            self._pending_rows.append(self._rows.popleft())
        while self._samples:
            self._pending_samples.append(self._samples.popleft())

    def _deliver(self) -> None:
        from . import tracking

        if self._mlc is None:
            self._mlc = self._make_client()
        mlc = self._mlc
        if self.run_id is None:
            self.run_id = self._open_run()
            self._start_system_metrics()
        elif self._monitor is not None and not self._monitor_alive() and self._monitor_restarts < MAX_MONITOR_RESTARTS:
            self._monitor_restarts += 1   # MLflow's monitor stops when the server fails; it answers again
            self._start_system_metrics()
        self._take()
        while self._pending_rows:
            if self._present is None:
                keys = sorted(tracking.iteration_metrics(self._pending_rows[0]))
                self._present = tracking.logged_steps(mlc, self.run_id, keys)
            metrics, taken = [], 0
            for row in self._pending_rows:
                new = tracking.row_metrics(row, self._present)
                if metrics and len(metrics) + len(new) > MAX_METRICS_PER_BATCH:
                    break
                metrics += new
                taken += 1
            if metrics:
                mlc.log_batch(self.run_id, metrics=metrics, synchronous=True)
            for metric in metrics:
                self._present.setdefault(metric.key, set()).add(metric.step)
            del self._pending_rows[:taken]
            self.delivered_rows += taken
        while self._pending_samples:
            path, iteration = self._pending_samples[0]
            if self._image_steps is None:
                self._image_steps = tracking.logged_image_steps(mlc, self.run_id)
            if iteration not in self._image_steps and path.is_file():
                tracking.log_sample(mlc, self.run_id, path, iteration)
                self._image_steps.add(iteration)
            self._pending_samples.pop(0)
            self.delivered_samples += 1

    # -- MLflow's system metrics --------------------------------------------------------

    def _start_system_metrics(self) -> None:
        if self.system_metrics_interval_s <= 0 or self.run_id is None:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            from .tracking import tracking_uri

            # resume_logging: a continued run's system metrics go on from its last step
            monitor = SystemMetricsMonitor(self.run_id, sampling_interval=self.system_metrics_interval_s,
                                           resume_logging=True, tracking_uri=tracking_uri(self.cfg))
            monitor.start()
            self._monitor = monitor
        except Exception as e:   # system metrics are a nicety: training and the losses go on
            log.warning("MLflow system metrics not started: %s", _short(e))

    def _monitor_alive(self) -> bool:
        thread = getattr(self._monitor, "_process", None)
        return thread is not None and thread.is_alive()

    def _stop_system_metrics(self) -> None:
        if self._monitor is None:
            return
        try:
            self._monitor.finish()
        except Exception as e:
            log.warning("MLflow system metrics did not stop cleanly: %s", _short(e))
        self._monitor = None
