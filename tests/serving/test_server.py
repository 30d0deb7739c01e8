"""`cyclegan serve` on 127.0.0.1 with an exported tests-profile model, driven by real clients:
tritonclient (binary and JSON tensors), curl-like uploads, headless Chromium; bad inputs;
a bounded load test; metrics, JSON logs and graceful shutdown."""
from __future__ import annotations

import concurrent.futures
import io
import json
import signal
import socket
import statistics
import struct
import time
import zlib

import numpy as np
import pytest

from helpers.serving import ServerProcess, shared_export

LIMITS = ["--set", "serve.max_upload_bytes=300000", "--set", "serve.max_infer_bytes=6000000",
          "--set", "serve.max_pixels=250000", "--set", "serve.max_batch_size=4"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return shared_export(tmp_path_factory)


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    proc = ServerProcess(str(exported[2]), tmp_path_factory.mktemp("server") / "serve.log", *LIMITS)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def sessions(exported):
    from serving.session import load_session

    return {d: load_session(exported[2] / f"G_{d}.onnx") for d in ("AtoB", "BtoA")}


@pytest.fixture
def http(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client
    # every test leaves the server serving
    assert server.proc.poll() is None
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/v2/health/ready").status_code == 200


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def triton(server):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=60)


def test_health_and_metadata_with_tritonclient(server):
    client = triton(server)
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    for direction in ("AtoB", "BtoA"):
        name = f"cyclegan-{direction}"
        assert client.is_model_ready(name)
        meta = client.get_model_metadata(name)
        assert meta["name"] == name and meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
        assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
        params = meta["parameters"]
        assert params["provider"] == "cpu" and params["providers_in_use"] == "CPUExecutionProvider"
        assert params["direction"] == direction and params["model_uri"].endswith("export")
        assert params["max_batch_size"] == 4
    assert not client.is_model_ready("cyclegan-nope")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 30, 22)])
def test_tritonclient_infer_matches_onnx_runtime(server, sessions, binary, shape):
    import tritonclient.http as httpclient

    client = triton(server)
    x = (np.random.default_rng(sum(shape)).random(shape, dtype=np.float32) * 2 - 1)
    expected = sessions["BtoA"].run_any_size(x)
    tensor = httpclient.InferInput("input", list(shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("cyclegan-BtoA", [tensor], outputs=[httpclient.InferRequestedOutput("output", binary_data=binary)],
                          request_id="r1")
    got = result.as_numpy("output")
    assert got.shape == shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5
    assert result.get_response()["model_name"] == "cyclegan-BtoA" and result.get_response()["id"] == "r1"
    # tritonclient's defaults (binary in, outputs unnamed -> binary out) and gzip request compression
    default = client.infer("cyclegan-BtoA", [tensor], request_compression_algorithm="gzip").as_numpy("output")
    assert np.abs(default - expected).max() <= 1e-5


def test_translate_endpoint_returns_same_size_png(server, http, exported, tmp_path):
    from PIL import Image

    from serving.translate import translate_model

    image = random_image(37, 26, seed=3)
    for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
        body = png_bytes(image, fmt)
        response = http.post("/v1/translate", params={"direction": "AtoB"}, content=body, headers={"Content-Type": mime})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png" and response.headers["x-model"] == "cyclegan-AtoB"
        got = np.asarray(Image.open(io.BytesIO(response.content)))
        assert got.shape == image.shape
        # the same pixels as `cyclegan translate --model` on the same file
        source = tmp_path / f"in.{fmt.lower()}"
        source.write_bytes(body)
        translate_model(str(exported[2]), "AtoB", str(source), str(tmp_path / fmt), progress=False)
        if fmt == "PNG":
            assert np.array_equal(got, np.asarray(Image.open(tmp_path / fmt / source.name)))
    # a multipart upload, as `curl -F image=@x.png` sends it
    response = http.post("/v1/translate?direction=BtoA", files={"image": ("x.png", png_bytes(image), "image/png")})
    assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).size == (26, 37)


def _infer_json(shape, datatype="FP32", data=None, **extra):
    count = int(np.prod(shape))
    tensor = {"name": "input", "shape": shape, "datatype": datatype, "data": data if data is not None else [0] * count}
    return {"inputs": [tensor], **extra}


def _binary_infer(shape):
    """A binary-extension request body as tritonclient builds it."""
    data = np.zeros(shape, dtype=np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(data)}}]}).encode()
    return {"content": head + data, "headers": {"Inference-Header-Content-Length": str(len(head)),
                                                 "Content-Type": "application/octet-stream"}}


BAD_REQUESTS = {
    "not an image": ("/v1/translate", dict(content=b"hello, not an image", headers={"Content-Type": "image/png"}), 400,
                     "not a PNG, JPEG or WebP"),
    "truncated png": ("/v1/translate", dict(content=png_bytes(random_image(64, 64))[:6000],
                                            headers={"Content-Type": "image/png"}), 400, "truncated"),
    "30000x30000 header": ("/v1/translate", dict(content=png_header_only(30000, 30000),
                                                 headers={"Content-Type": "image/png"}), 413, "pixels"),
    "over max_pixels": ("/v1/translate", dict(content=png_header_only(600, 600), headers={"Content-Type": "image/png"}),
                        413, "serve.max_pixels"),
    "wrong content type": ("/v1/translate", dict(content=png_bytes(random_image(8, 8)),
                                                 headers={"Content-Type": "text/plain"}), 415, "Content-Type"),
    "gif is not accepted": ("/v1/translate", dict(content=b"GIF89a" + b"\x00" * 32, headers={"Content-Type": "image/gif"}),
                            415, "image/gif"),
    "too large upload": ("/v1/translate", dict(content=b"\x00" * 400_000, headers={"Content-Type": "image/png"}), 413,
                         "serve.max_upload_bytes"),
    "bad direction": ("/v1/translate?direction=sideways", dict(content=png_bytes(random_image(8, 8)),
                                                               headers={"Content-Type": "image/png"}), 400, "direction"),
    "wrong tensor shape": ("/v2/models/cyclegan-AtoB/infer", dict(json=_infer_json([1, 4, 8, 8])), 400, "shape"),
    "wrong tensor rank": ("/v2/models/cyclegan-AtoB/infer", dict(json=_infer_json([3, 8, 8])), 400, "shape"),
    "wrong tensor dtype": ("/v2/models/cyclegan-AtoB/infer", dict(json=_infer_json([1, 3, 8, 8], "INT32")), 400,
                           "datatype"),
    "data does not fit shape": ("/v2/models/cyclegan-AtoB/infer", dict(json=_infer_json([1, 3, 8, 8], data=[0.0] * 5)),
                                400, "values for shape"),
    "batch over max_batch_size": ("/v2/models/cyclegan-AtoB/infer", dict(json=_infer_json([5, 3, 8, 8])), 400,
                                  "serve.max_batch_size"),
    "tensor over max_pixels": ("/v2/models/cyclegan-AtoB/infer", dict(**_binary_infer([1, 3, 600, 600])), 413,
                               "serve.max_pixels"),
    "too large infer body": ("/v2/models/cyclegan-AtoB/infer", dict(**_binary_infer([1, 3, 800, 800])), 413,
                             "serve.max_infer_bytes"),
    "wrong input name": ("/v2/models/cyclegan-AtoB/infer",
                         dict(json={"inputs": [{"name": "x", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0] * 192}]}),
                         400, "named 'input'"),
    "binary size mismatch": ("/v2/models/cyclegan-AtoB/infer", dict(
        content=b'{"inputs":[{"name":"input","shape":[1,3,8,8],"datatype":"FP32","parameters":{"binary_data_size":16}}]}'
        + b"\x00" * 16, headers={"Inference-Header-Content-Length": "102"}), 400, "binary bytes"),
    "not json": ("/v2/models/cyclegan-AtoB/infer", dict(content=b"{nope"), 400, "not valid JSON"),
    "unknown model (infer)": ("/v2/models/cyclegan-nope/infer", dict(json=_infer_json([1, 3, 8, 8])), 404, "not found"),
    "unknown output": ("/v2/models/cyclegan-AtoB/infer", dict(json=_infer_json([1, 3, 8, 8], outputs=[{"name": "y"}])), 400,
                       "no output 'y'"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_4xx_and_the_server_keeps_serving(http, case):
    path, kwargs, status, needle = BAD_REQUESTS[case]
    response = http.post(path, **kwargs)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]


def test_unknown_model_metadata_and_routes(http):
    for path in ("/v2/models/cyclegan-nope", "/v2/models/cyclegan-nope/ready", "/v2/models/cyclegan-AtoB/versions/7"):
        response = http.get(path)
        assert response.status_code == 404 and "error" in response.json()
    assert http.get("/no/such/route").status_code == 404


def test_web_page_in_headless_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    image = tmp_path / "upload.png"
    image.write_bytes(png_bytes(random_image(45, 30, seed=9)))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            assert page.locator("#direction option").all_inner_texts() == ["AtoB", "BtoA"]
            page.set_input_files("#file", str(image))
            page.select_option("#direction", "BtoA")
            page.click("#go")
            page.wait_for_function("document.getElementById('output').complete && "
                                   "document.getElementById('output').naturalWidth > 0", timeout=30_000)
            size = page.evaluate("[document.getElementById('output').naturalWidth, document.getElementById('output').naturalHeight]")
            assert size == [30, 45]
            assert page.evaluate("document.getElementById('input').naturalWidth") == 30
            assert "cyclegan-BtoA" in page.inner_text("#status")
        finally:
            browser.close()


def _metric(text: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_load_200_requests_at_concurrency_8(server, http):
    """Bounded load: zero errors; reports p50/p99 latency and throughput; the batch-size
    histogram accounts for every image."""
    import httpx

    before = http.get("/metrics").text
    body = png_bytes(random_image(32, 32, seed=1))
    latencies, errors = [], []

    def one(i):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            started = time.perf_counter()
            direction = "AtoB" if i % 2 else "BtoA"
            r = client.post(f"/v1/translate?direction={direction}", content=body, headers={"Content-Type": "image/png"})
            latencies.append(time.perf_counter() - started)
            if r.status_code != 200 or r.content[:4] != b"\x89PNG":
                errors.append((r.status_code, r.text[:200]))

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(200)))
    wall = time.perf_counter() - started
    assert errors == []
    q = statistics.quantiles(latencies, n=100)
    print(f"\nload: 200 requests, concurrency 8, 32x32 PNG: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, "
          f"{200 / wall:.1f} req/s")
    after = http.get("/metrics").text
    images = sum(_metric(after, "cyclegan_batch_size_sum", model=m) - _metric(before, "cyclegan_batch_size_sum", model=m)
                 for m in ("cyclegan-AtoB", "cyclegan-BtoA"))
    batches = sum(_metric(after, "cyclegan_batch_size_count", model=m) - _metric(before, "cyclegan_batch_size_count", model=m)
                  for m in ("cyclegan-AtoB", "cyclegan-BtoA"))
    assert images == 200 and 50 <= batches <= 200   # at most max_batch_size (4) images per call
    ok = _metric(after, "cyclegan_requests_total", route="/v1/translate", code="200") - \
        _metric(before, "cyclegan_requests_total", route="/v1/translate", code="200")
    assert ok == 200
    assert _metric(after, "cyclegan_request_latency_seconds_count", route="/v1/translate") >= 200


def test_metrics_count_errors_and_logs_are_json(server, http):
    http.post("/v2/models/cyclegan-nope/infer", json={})
    text = http.get("/metrics").text
    assert _metric(text, "cyclegan_requests_total", code="404") >= 1
    assert _metric(text, "cyclegan_model_ready", model="cyclegan-AtoB") == 1
    records = server.log_records()
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    loaded = [r for r in records if r["message"] == "model resolved"][0]
    assert loaded["provider"] == "cpu" and loaded["model_uri"].endswith("export")
    requests = [r for r in records if r["message"] == "request"]
    assert any(r["status"] == 404 and r["route"] == "/v2/models/{name}/infer" for r in requests)
    assert all(isinstance(r["ms"], float) for r in requests)


def test_graceful_shutdown_finishes_the_request_in_flight(exported, tmp_path):
    """SIGTERM while a request is half-sent: the server stops accepting, answers it, exits."""
    proc = ServerProcess(str(exported[2]), tmp_path / "serve.log")
    try:
        proc.wait_ready()
        body = png_bytes(random_image(20, 20))
        head = (f"POST /v1/translate?direction=AtoB HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", proc.port), timeout=30) as sock:
            sock.sendall(head + body[:10])
            time.sleep(0.5)                      # the request has started: headers are in
            proc.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(OSError):         # no new connections once shutting down
                socket.create_connection(("127.0.0.1", proc.port), timeout=2).close()
            sock.sendall(body[10:])
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response[:300]
        assert b"\r\n\r\n\x89PNG" in response
        # uvicorn re-raises the signal it handled once shutdown is complete, so the exit
        # status says "terminated by SIGTERM" (what a process manager expects), not a crash
        assert proc.proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        proc.stop()
    messages = [r["message"] for r in proc.log_records()]
    assert "shutting down" in messages and "stopped" in messages
    assert messages.index("shutting down") < messages.index("stopped")
