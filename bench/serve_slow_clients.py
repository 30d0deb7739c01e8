"""`cyclegan serve` with slow and hostile clients beside normal ones, on loopback.

Each repeat starts a fresh server on 127.0.0.1 (default `serve.*` settings unless --set) and:
  1. N requests (POST /v1/translate, a 64x64 PNG) from C concurrent clients, alone;
  2. opens three slow clients that hold a connection each:
       headers_stalled   sends half of a request's headers, then nothing
       headers_trickled  sends a request's headers one byte a second, never finishing
       body_trickled     declares Content-Length: 1000, then sends one body byte a second
     and, while all three hold their connections, the same N requests at concurrency C again;
  3. waits until each slow client is cut off and records when and with what answer;
  4. the N requests again, alone (so that an order effect is not taken for the slow clients').

Reported per repeat: p50/p99 latency and errors of the three loads, whether the second load ran
entirely while the slow clients were held, the slow clients' cut-off times, and the
server's own counters (`cyclegan_connections_cut_total`, 408s). Goals: 0 errors, each slow
client cut off at its deadline (serve.header_timeout_s, serve.body_timeout_s), the normal
clients' latency unchanged.

The model is the tests profile's tiny generator (resnet_2blocks, ngf 8), trained for a few
iterations and exported through the CLI, so HTTP handling dominates each request: the load
is as sensitive as it can be to anything the slow clients hold up. --model uses an existing
export instead.

    .venv/bin/python bench/serve_slow_clients.py [--repeats 3] [--requests 300] [--concurrency 16]
        [--model runs/export] [--set serve.KEY=VALUE ...] [--json out.json]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "tests.yaml"
CLI = [sys.executable, "-m", "training.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "CYCLEGAN_LOG_LEVEL": "WARNING"}


def build_model(folder: Path) -> Path:
    """Prepare synthetic data, train and export the tests profile's generator, through the CLI."""
    steps = [["prepare", "--source", "synthetic", "--out", str(folder / "data")],
             ["train", "--data", str(folder / "data"), "--out", str(folder / "run")],
             ["export", "--checkpoint", str(folder / "run" / "checkpoints" / "latest.pt"),
              "--out", str(folder / "export")]]
    for step in steps:
        subprocess.run([*CLI, *step, "--params", str(PROFILE), "--no-progress"], cwd=ROOT, env=ENV, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return folder / "export"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, overrides: list[str]) -> tuple[subprocess.Popen, int]:
    import httpx

    port = free_port()
    sets = [arg for item in overrides for arg in ("--set", item)]
    proc = subprocess.Popen([*CLI, "serve", "--model", str(model), "--port", str(port), *sets], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the server did not become ready")
        time.sleep(0.2)


def png(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def load(port: int, requests: int, concurrency: int) -> dict:
    """``requests`` translations from ``concurrency`` keep-alive clients: latency and errors."""
    import httpx

    body, url = png(1), f"http://127.0.0.1:{port}/v1/translate?direction=AtoB"
    local = threading.local()
    errors: list[str] = []
    clients: list = []

    def one(_):
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=120)
            clients.append(local.client)
        started = time.perf_counter()
        try:
            r = local.client.post(url, content=body, headers={"Content-Type": "image/png"})
            if r.status_code != 200 or r.content[:4] != b"\x89PNG":
                errors.append(f"{r.status_code} {r.text[:100]}")
        except httpx.HTTPError as e:
            errors.append(repr(e))
        return time.perf_counter() - started

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(requests)))
    wall = time.monotonic() - started
    for client in clients:
        client.close()
    q = statistics.quantiles(latencies, n=100)
    return {"requests": requests, "concurrency": concurrency, "errors": len(errors), "error_samples": errors[:3],
            "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "max_ms": max(latencies) * 1000,
            "req_per_s": requests / wall, "started": started, "ended": started + wall}


SLOW_KINDS = {
    # (sent at once, then sent one byte a second)
    "headers_stalled": (b"POST /v1/translate?direction=AtoB HTTP/1.1\r\nHost: x\r\n", b""),
    "headers_trickled": (b"", b"POST /v1/translate?direction=AtoB HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                              b"X-Padding: " + b"a" * 4096),
    "body_trickled": (b"POST /v1/translate?direction=AtoB HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 1000\r\n\r\n", b"\x00" * 1000),
}


class SlowClient(threading.Thread):
    """One slow connection: records when the server cut it off and what it answered."""

    def __init__(self, kind: str, port: int, give_up_s: float):
        super().__init__(daemon=True)
        self.kind, self.port, self.give_up_s = kind, port, give_up_s
        self.connected = threading.Event()
        self.result: dict = {"kind": kind}

    def run(self):
        prefix, drip = SLOW_KINDS[self.kind]
        sock = socket.create_connection(("127.0.0.1", self.port))
        started = time.monotonic()
        self.result["connected"] = started
        self.connected.set()
        answer, how = b"", "not cut off"
        try:
            sock.sendall(prefix)
            for i in range(int(self.give_up_s)):
                if drip and i < len(drip):
                    sock.sendall(drip[i:i + 1])
                readable, _, _ = select.select([sock], [], [], 1.0)
                if readable:
                    how = "answered and closed"
                    sock.settimeout(10)
                    while chunk := sock.recv(65536):
                        answer += chunk
                    break
        except OSError as e:  # the server closed while we were sending: cut off without an answer read
            how = f"closed ({type(e).__name__})"
        cut = time.monotonic()
        sock.close()
        self.result.update(cut_s=cut - started, cut_at=cut, how=how,
                           status=answer.split(b"\r\n", 1)[0].decode(errors="replace") if answer else "")


def metrics(port: int) -> dict:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text):
        for s in family.samples:
            if s.name == "cyclegan_connections_cut_total":
                out[f"cut_{s.labels['reason']}"] = s.value
            elif s.name == "cyclegan_requests_total" and s.labels["code"] != "200":
                key = f"code_{s.labels['code']}"
                out[key] = out.get(key, 0) + s.value
    return out


def repeat(model: Path, overrides: list[str], requests: int, concurrency: int, give_up_s: float) -> dict:
    proc, port = start_server(model, overrides)
    try:
        load(port, concurrency, concurrency)  # warm the connections and the batch shapes
        baseline = load(port, requests, concurrency)
        slow = [SlowClient(kind, port, give_up_s) for kind in SLOW_KINDS]
        for client in slow:
            client.start()
            client.connected.wait(10)
        time.sleep(1.0)  # every slow client has sent something and holds its connection
        beside = load(port, requests, concurrency)
        for client in slow:
            client.join(give_up_s + 30)
        first_cut = min(c.result.get("cut_at", float("inf")) for c in slow)
        beside["all_while_slow_clients_held"] = beside["ended"] < first_cut
        after = load(port, requests, concurrency)  # the same again once they are gone: order effects show here
        counters = metrics(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    for run in (baseline, beside, after):
        del run["started"], run["ended"]
    return {"baseline": baseline, "beside_slow_clients": beside, "after_cut_off": after,
            "slow_clients": [{k: v for k, v in c.result.items() if k not in ("connected", "cut_at")} for c in slow],
            "server_counters": counters}


def spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--model", default=None, help="an export folder (default: build the tests-profile model)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="serve.KEY=VALUE for the server")
    parser.add_argument("--give-up", type=float, default=180, help="seconds a slow client waits to be cut off")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from serving.config import load_serve_config
    from training.config import load_config

    serve_cfg = load_serve_config(load_config(ROOT / "params.yaml", args.overrides).serve)
    with tempfile.TemporaryDirectory(prefix="serve-slow-") as tmp:
        model = Path(args.model) if args.model else build_model(Path(tmp))
        runs = [repeat(model, args.overrides, args.requests, args.concurrency, args.give_up)
                for _ in range(args.repeats)]

    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "loadavg_1m_at_end": os.getloadavg()[0]},
              "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
              "settings": {**vars(args), "header_timeout_s": serve_cfg.header_timeout_s,
                           "body_timeout_s": serve_cfg.body_timeout_s, "max_connections": serve_cfg.max_connections},
              "runs": runs}
    print(f"\n{args.repeats} repeats, {args.requests} requests at concurrency {args.concurrency}, 64x64 PNG, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; serve.header_timeout_s "
          f"{serve_cfg.header_timeout_s:g}, serve.body_timeout_s {serve_cfg.body_timeout_s:g}; median (min-max)")
    print("| load | p50 ms | p99 ms | req/s | errors |")
    print("| --- | --- | --- | --- | --- |")
    for key, label in (("baseline", "alone, before"), ("beside_slow_clients", "beside 3 slow clients"),
                       ("after_cut_off", "alone, after they were cut off")):
        rows = [r[key] for r in runs]
        print(f"| {label} | {spread([r['p50_ms'] for r in rows])} | {spread([r['p99_ms'] for r in rows])} | "
              f"{spread([r['req_per_s'] for r in rows])} | {', '.join(str(r['errors']) for r in rows)} |")
    held = [r["beside_slow_clients"]["all_while_slow_clients_held"] for r in runs]
    print(f"second load ran entirely while the slow clients were held: {held}")
    print("| slow client | cut off after s | answer |")
    print("| --- | --- | --- |")
    for i, kind in enumerate(SLOW_KINDS):
        results = [r["slow_clients"][i] for r in runs]
        answers = sorted({f"{c['status'] or '-'} ({c['how']})" for c in results})
        print(f"| {kind} | {spread([c.get('cut_s', float('nan')) for c in results], 2)} | "
              f"{'; '.join(answers)} |")
    print("server counters per run:", [r["server_counters"] for r in runs])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
