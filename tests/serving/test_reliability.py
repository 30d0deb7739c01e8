"""`cyclegan serve` under slow, broken and hostile clients (raw sockets against a real server):
header and body deadlines, the connection cap, a client that leaves mid-upload, non-finite
tensors; EXIF orientation on every image path in; the models:/ download folder removed on
every way the server ends."""
from __future__ import annotations

import io
import json
import signal
import socket
import threading
import time

import numpy as np
import pytest

from helpers.serving import ServerProcess, free_port, register_export, shared_export

HEADER_TIMEOUT_S, BODY_TIMEOUT_S, MAX_CONNECTIONS = 2.0, 3.0, 6
GUARDS = ["--set", f"serve.header_timeout_s={HEADER_TIMEOUT_S}", "--set", f"serve.body_timeout_s={BODY_TIMEOUT_S}",
          "--set", f"serve.max_connections={MAX_CONNECTIONS}"]
# far longer than any deadline above: a server without deadlines fails the test, it does not hang it
PATIENCE_S = 30


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return shared_export(tmp_path_factory)


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    proc = ServerProcess(str(exported[2]), tmp_path_factory.mktemp("server") / "serve.log", *GUARDS)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def healthy(server):
    """Every test leaves the server serving."""
    yield server
    import httpx

    assert server.proc.poll() is None
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200


def png_bytes(array: np.ndarray, fmt: str = "PNG", **save) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts as closed)."""
    data = b""
    sock.settimeout(PATIENCE_S)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {PATIENCE_S} s; got {data[:200]!r}") from None
    return data


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a keep-alive connection."""
    sock.settimeout(PATIENCE_S)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data + body!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def metric(server, name: str, **labels) -> float:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def translate_request(image: bytes) -> bytes:
    return (f"POST /v1/translate?direction=AtoB HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(image)}\r\n\r\n").encode()


class NormalClient(threading.Thread):
    """Translates an image again and again while the hostile clients hold their connections."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.url, self.statuses, self.stop = server.url, [], threading.Event()
        self.body = png_bytes(random_image(16, 16, seed=4))

    def run(self):
        import httpx

        with httpx.Client(base_url=self.url, timeout=PATIENCE_S) as client:
            while not self.stop.is_set():
                r = client.post("/v1/translate?direction=AtoB", content=self.body,
                                headers={"Content-Type": "image/png"})
                self.statuses.append(r.status_code if r.content[:4] == b"\x89PNG" else -r.status_code)


# -- issue 13 item 9: header and body deadlines, the connection cap ------------------------------------------

def test_slow_headers_and_trickled_body_are_cut_off_while_others_are_served(healthy):
    server = healthy
    cut_before = {r: metric(server, "cyclegan_connections_cut_total", reason=r)
                  for r in ("header_timeout", "body_timeout")}
    timed_out_before = metric(server, "cyclegan_requests_total", route="/v1/translate", code="408")
    normal = NormalClient(server)
    normal.start()

    started = time.monotonic()
    slow_headers = socket.create_connection(("127.0.0.1", server.port))
    slow_headers.sendall(b"POST /v1/translate?direction=AtoB HTTP/1.1\r\nHost: x\r\n")  # never finished

    trickle = socket.create_connection(("127.0.0.1", server.port))
    trickle.sendall(translate_request(b"\x00" * 1000))   # declares 1000 bytes, then sends one every 0.25 s

    def drip():
        try:
            for _ in range(int(PATIENCE_S / 0.25)):
                trickle.sendall(b"\x00")
                time.sleep(0.25)
        except OSError:  # the server closed it: what this test wants
            pass

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    header_answer = read_until_closed(slow_headers)
    header_elapsed = time.monotonic() - started
    body_answer = read_until_closed(trickle)
    body_elapsed = time.monotonic() - started
    normal.stop.set()
    normal.join(PATIENCE_S)
    slow_headers.close()
    trickle.close()

    assert header_answer.startswith(b"HTTP/1.1 408 "), header_answer[:200]
    assert b"serve.header_timeout_s" in header_answer and header_elapsed >= HEADER_TIMEOUT_S
    assert body_answer.startswith(b"HTTP/1.1 408 "), body_answer[:200]
    assert b"serve.body_timeout_s" in body_answer and body_elapsed >= BODY_TIMEOUT_S
    # the normal client was answered all along, and more than once while both were held
    assert len(normal.statuses) >= 3 and set(normal.statuses) == {200}, normal.statuses[:20]
    for reason in ("header_timeout", "body_timeout"):
        assert metric(server, "cyclegan_connections_cut_total", reason=reason) == cut_before[reason] + 1
    # the request whose body never came is counted as a 408 of its route, logged once, no traceback
    assert metric(server, "cyclegan_requests_total", route="/v1/translate", code="408") == timed_out_before + 1
    records = [r for r in server.log_records() if r.get("status") == 408 and r["message"] == "request"]
    assert records and "serve.body_timeout_s" in records[-1]["error"]
    assert "Traceback" not in server.log_path.read_text()


def test_an_idle_connection_is_closed_quietly(healthy):
    """Nothing of a request arrived: closed as a keep-alive ends, with no 408 nobody asked for."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", healthy.port)) as idle:
        assert read_until_closed(idle) == b""
    assert time.monotonic() - started >= HEADER_TIMEOUT_S


def test_the_deadline_restarts_for_each_keep_alive_request(healthy):
    """A client that was answered once and then trickles its next request's headers is cut off too."""
    with socket.create_connection(("127.0.0.1", healthy.port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 200 ") and b'{"live":true}' in first
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_connections_over_the_cap_get_503_and_the_server_recovers(healthy):
    import httpx

    before = metric(healthy, "cyclegan_connections_cut_total", reason="over_capacity")
    held, refused = [], None
    try:
        for _ in range(MAX_CONNECTIONS + 3):
            sock = socket.create_connection(("127.0.0.1", healthy.port))
            sock.settimeout(PATIENCE_S)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: the connection stays
            answer = read_response(sock)
            if answer.startswith(b"HTTP/1.1 503 "):
                refused = answer
                assert read_until_closed(sock) == b""  # and then closed
                sock.close()
                break
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
            held.append(sock)
    finally:
        for sock in held:
            sock.close()
    assert refused is not None, f"{len(held)} connections held, none refused"
    assert 1 <= len(held) <= MAX_CONNECTIONS
    body = json.loads(refused.split(b"\r\n\r\n", 1)[1])
    assert "serve.max_connections" in body["error"]
    assert metric(healthy, "cyclegan_connections_cut_total", reason="over_capacity") == before + 1
    # the held connections are gone: new ones are served again (their closing is asynchronous)
    deadline = time.monotonic() + PATIENCE_S
    while httpx.get(f"{healthy.url}/v2/health/live", timeout=10).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


# -- issue 13 item 10: a client that leaves mid-upload -------------------------------------------------------

def test_client_leaving_mid_upload_is_a_499_logged_once_without_traceback(healthy):
    server = healthy
    before_499 = metric(server, "cyclegan_requests_total", route="/v1/translate", code="499")
    before_500 = metric(server, "cyclegan_requests_total", code="500")
    log_before = len(server.log_path.read_text().splitlines())
    image = png_bytes(random_image(24, 24, seed=2))
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(translate_request(image) + image[: len(image) // 2])
        time.sleep(0.3)  # let the app start reading the body before the client leaves
    deadline = time.monotonic() + PATIENCE_S
    while metric(server, "cyclegan_requests_total", route="/v1/translate", code="499") == before_499:
        assert time.monotonic() < deadline, "the request that lost its client was never counted as 499"
        time.sleep(0.1)
    assert metric(server, "cyclegan_requests_total", route="/v1/translate", code="499") == before_499 + 1
    assert metric(server, "cyclegan_requests_total", code="500") == before_500
    new_lines = server.log_path.read_text().splitlines()[log_before:]
    assert not any("Traceback" in line for line in new_lines), new_lines
    records = [json.loads(line) for line in new_lines if line.startswith("{")]
    about_it = [r for r in records if r.get("path") == "/v1/translate" or r["level"] == "error"]
    assert len(about_it) == 1, about_it
    assert about_it[0]["status"] == 499 and about_it[0]["level"] == "info" and "disconnected" in about_it[0]["error"]


# -- issue 13 item 11: NaN and Infinity ----------------------------------------------------------------------

def strict_json(data: bytes):
    """json.loads that refuses NaN/Infinity, as JSON parsers other than Python's do."""
    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(data, parse_constant=refuse)


def binary_request(x: np.ndarray, binary_output: bool = False) -> dict:
    blob = x.astype(np.float32).tobytes()
    header = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                          "parameters": {"binary_data_size": len(blob)}}]}
    if binary_output:
        header["outputs"] = [{"name": "output", "parameters": {"binary_data": True}}]
    head = json.dumps(header).encode()
    return {"content": head + blob, "headers": {"Inference-Header-Content-Length": str(len(head)),
                                                 "Content-Type": "application/octet-stream"}}


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("form", ["json", "binary"])
def test_non_finite_input_is_a_400_naming_the_input(healthy, value, form):
    import httpx

    x = np.zeros((1, 3, 8, 8), dtype=np.float32)
    x[0, 1, 2, 3] = float(value.replace("Infinity", "inf"))
    if form == "json":  # as Python's json.dumps writes it
        data = ", ".join(value if np.isnan(v) or np.isinf(v) else "0.0" for v in x.ravel())
        kwargs = {"content": '{"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", '
                             f'"data": [{data}]}}]}}'}
    else:
        kwargs = binary_request(x)
    r = httpx.post(f"{healthy.url}/v2/models/cyclegan-AtoB/infer", timeout=PATIENCE_S, **kwargs)
    assert r.status_code == 400, r.text[:300]
    error = strict_json(r.content)["error"]
    assert "inputs[0] (input)" in error and "NaN or Infinity" in error and "1 of 192" in error


def test_every_infer_response_is_strict_json(healthy):
    """Finite input far outside [-1, 1] overflows the network to NaN: the JSON answer must
    still be JSON (an error naming the output), and the binary answer carries the raw values."""
    import httpx

    x = np.full((1, 3, 8, 8), 3e38, dtype=np.float32)
    url = f"{healthy.url}/v2/models/cyclegan-AtoB/infer"
    as_json = httpx.post(url, json={"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32",
                                                 "data": x.ravel().tolist()}]}, timeout=PATIENCE_S)
    body = strict_json(as_json.content)
    assert as_json.status_code == 500 and "outputs[output]" in body["error"] and "binary_data" in body["error"]
    as_binary = httpx.post(url, timeout=PATIENCE_S, **binary_request(x, binary_output=True))
    assert as_binary.status_code == 200
    n = int(as_binary.headers["Inference-Header-Content-Length"])
    header = strict_json(as_binary.content[:n])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 192 * 4 == len(as_binary.content) - n
    # and an ordinary request still answers in JSON, strictly
    ok = httpx.post(url, json={"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32",
                                            "data": [0.25] * 192}]}, timeout=PATIENCE_S)
    assert ok.status_code == 200 and len(strict_json(ok.content)["outputs"][0]["data"]) == 192


# -- issue 13 item 12: EXIF orientation ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def sideways(tmp_path_factory):
    """(a JPEG stored sideways with EXIF orientation 6, the same pixels upright as a PNG).

    Orientation 6: the stored 40 x 24 (w x h) pixels are shown turned 90 degrees clockwise,
    24 x 40. Random pixels, so no rotation or flip maps the image onto itself."""
    from PIL import Image, ImageOps

    folder = tmp_path_factory.mktemp("exif")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    stored = folder / "sideways" / "phone.jpg"
    stored.parent.mkdir()
    Image.fromarray(random_image(24, 40, seed=12)).save(stored, quality=95, exif=exif)
    with Image.open(stored) as img:
        assert img.size == (40, 24) and img.getexif()[0x0112] == 6
        upright = ImageOps.exif_transpose(img)   # what the phone shows, decoded from the same JPEG
    assert upright.size == (24, 40)
    reference = folder / "upright" / "phone.png"
    reference.parent.mkdir()
    upright.save(reference)
    return stored, reference


def _pixels(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _assert_upright(got: np.ndarray, expected: np.ndarray) -> None:
    """The transposed size, and the content turned the right way: the translation of the upright
    image, which is nothing like the translation turned half round (orientation 8's result)."""
    assert got.shape == (40, 24, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(got.astype(int) - np.rot90(expected, 2).astype(int)).mean() > 5


@pytest.mark.parametrize("source", ["model", "checkpoint"])
def test_exif_orientation_in_cyclegan_translate(exported, sideways, tmp_path, source):
    """`cyclegan translate --model` (ONNX) and `--checkpoint` (torch)."""
    from helpers.serving import cli_main

    stored, reference = sideways
    _, checkpoint, export_dir = exported
    flag = str(export_dir) if source == "model" else str(checkpoint)
    for name, image in (("sideways", stored), ("upright", reference)):
        assert cli_main("translate", f"--{source}", flag, "--direction", "AtoB", "--input", str(image),
                        "--output", str(tmp_path / name), "--no-progress") == 0
    # the output keeps the input's name, so the sideways one is written as a JPEG: compare it
    # with the upright translation written the same way
    expected = _pixels(io.BytesIO(png_bytes(_pixels(tmp_path / "upright" / "phone.png"), "JPEG")))
    _assert_upright(_pixels(tmp_path / "sideways" / "phone.jpg"), expected)


def test_exif_orientation_in_the_translate_endpoint(healthy, exported, sideways, tmp_path):
    import httpx

    from serving.translate import translate_model

    stored, reference = sideways
    r = httpx.post(f"{healthy.url}/v1/translate?direction=AtoB", content=stored.read_bytes(),
                   headers={"Content-Type": "image/jpeg"}, timeout=PATIENCE_S)
    assert r.status_code == 200, r.text[:300]
    translate_model(str(exported[2]), "AtoB", str(reference), str(tmp_path / "upright"), progress=False)
    _assert_upright(_pixels(io.BytesIO(r.content)), _pixels(tmp_path / "upright" / "phone.png"))


# -- issue 13 item 13: the models:/ download folder ----------------------------------------------------------

@pytest.fixture(scope="module")
def registry(exported, tmp_path_factory):
    """A real SQLite MLflow store with the export registered as cyclegan, alias champion."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    register_export(exported[2], uri, root / "artifacts")
    return uri


def _downloads(tmpdir) -> list:
    return sorted(tmpdir.glob("cyclegan-cyclegan-v*"))


@pytest.mark.parametrize("ending", ["SIGTERM", "SIGINT", "SIGTERM while loading", "port in use"])
def test_registry_download_is_removed_however_the_server_ends(registry, tmp_path, ending):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"MLFLOW_TRACKING_URI": registry, "TMPDIR": str(tmpdir)}
    holder = None
    args = []
    if ending == "port in use":
        holder = socket.socket()
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        args = ["--port", str(holder.getsockname()[1])]   # the last --port wins
    proc = ServerProcess("models:/cyclegan@champion", tmp_path / "serve.log", *args, extra_env=env)
    try:
        if ending == "port in use":
            status = proc.proc.wait(PATIENCE_S * 4)
            assert status != 0
        elif ending == "SIGTERM while loading":
            deadline = time.monotonic() + PATIENCE_S * 4
            while not _downloads(tmpdir):   # the download folder exists: the model is being fetched or loaded
                assert proc.proc.poll() is None and time.monotonic() < deadline, proc.log_path.read_text()[-2000:]
                time.sleep(0.01)
            proc.proc.send_signal(signal.SIGTERM)
            assert proc.proc.wait(PATIENCE_S) == -signal.SIGTERM
        else:
            proc.wait_ready(PATIENCE_S * 4)
            folders = _downloads(tmpdir)
            assert len(folders) == 1 and list(folders[0].rglob("G_AtoB.onnx")), folders
            sig = getattr(signal, ending)
            proc.proc.send_signal(sig)
            # SIGTERM: the process ends "terminated by SIGTERM", as uvicorn leaves it; SIGINT: the CLI's 130
            assert proc.proc.wait(PATIENCE_S) == (-signal.SIGTERM if sig == signal.SIGTERM else 130)
    finally:
        proc.stop()
        if holder is not None:
            holder.close()
    log = proc.log_path.read_text()
    if ending == "port in use":  # the model was downloaded and loaded before the bind failed
        assert "model resolved" in log and str(tmpdir) in log and "address already in use" in log.lower(), log[-2000:]
    assert _downloads(tmpdir) == [], log[-2000:]
