"""The HTTP app: Open Inference Protocol v2, an image endpoint, a web page, metrics.

Routes
  GET  /v2/health/live, /v2/health/ready          liveness, readiness (503 until warmed up)
  GET  /v2                                        server metadata
  GET  /v2/models/{name}[/versions/{v}]           model metadata (provider, registry version)
  GET  /v2/models/{name}[/versions/{v}]/ready     model readiness
  POST /v2/models/{name}[/versions/{v}]/infer     tensors, JSON or binary extension
  POST /v1/translate?direction=AtoB|BtoA          PNG/JPEG/WebP of any size -> PNG, same size
       [&quality=true] [&job=ID]                  cycle PSNR headers; progress under ID
  GET  /v1/progress/{job}                         what the translation ``job`` has done (the page polls)
  GET  /                                          a page to try it in a browser
  GET  /metrics                                   Prometheus

Each direction is one model, ``<serve.model_name>-AtoB`` and ``-BtoA``; its tensor is
float32 N x C x H x W in [-1, 1] (uint8 N x H x W x C for the uint8 variant) of any H and W:
the server pads to the size multiple and crops back, as ``cyclegan translate`` does.
Images above ``serve.tile_above_pixels`` are translated in tiles (``serving/tiling.py``), one
such image at a time, so memory stays bounded. ``quality`` (a query parameter, or the infer
request parameter ``{"quality": true}``) also runs the return generator and reports the cycle
PSNR and the out-of-domain flag (``serving/quality.py``): headers ``X-Cycle-PSNR``,
``X-Out-Of-Domain`` (and ``X-Quality-Threshold``), or the infer outputs ``cycle_psnr_db``
(FP32 [N]) and ``out_of_domain`` (BOOL [N], only from a model that records its threshold).

Why not the kserve package: its model server (0.21) binds 0.0.0.0 only, and this server
must be able to listen on loopback alone (the default); it would also pull pandas and
psutil down a major version. The protocol is small enough to implement here.

Every bad request gets a 4xx ``{"error": "..."}`` naming what is wrong, and nothing about
it reaches the model: sizes are checked from headers (Content-Length, the image header)
before bodies are buffered or images decoded.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
import re
import time
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from .config import ServeConfig

from .batching import DynamicBatcher
from .metrics import Metrics
from .protocol import HEADER_LENGTH, ProtocolError, datatype, decode_inputs, decompress, encode_response, \
    split_body, wants_binary
from .quality import Quality, assess, threshold_of
from .session import GeneratorSession
from .tiling import ProgressBoard, TiledGenerator, load_tiler

log = logging.getLogger("cyclegan.serving")
STATIC = Path(__file__).parent / "static"
# nginx's status for "the client closed the connection before the answer": counted apart from 5xx
CLIENT_CLOSED = 499
FORMAT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# the exported model's metadata_props repeated in the model metadata endpoint
SHOWN_METADATA = ("training_size", "size_multiple", "min_size", "normalisation", "layout", "netG",
                  "source_checkpoint_sha256")
QUALITY_OUTPUTS = ("cycle_psnr_db", "out_of_domain")    # the infer outputs quality adds
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass
class ServedModel:
    name: str
    direction: str
    version: str
    session: GeneratorSession
    batcher: DynamicBatcher
    parameters: dict
    tiler: TiledGenerator | None = None     # None: every image runs whole

    def metadata(self) -> dict:
        s = self.session
        dt = datatype(s.dtype)
        return {
            "name": self.name, "versions": [self.version], "platform": "onnxruntime_onnx",
            "inputs": [{"name": s.input_name, "datatype": dt, "shape": s.input_shape()}],
            "outputs": [{"name": s.output_name, "datatype": dt, "shape": s.output_shape()}],
            "parameters": self.parameters,
        }


def model_name(base: str, direction: str) -> str:
    return f"{base}-{direction}"


def _content_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


async def read_body(request, limit: int, key: str) -> bytes:
    """The request body, refused with 413 once it is known to exceed ``limit`` bytes:
    from Content-Length before reading anything, else while streaming."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_n = int(declared)
        except ValueError:
            raise ProtocolError(f"Content-Length: {declared!r} is not an integer") from None
        if declared_n > limit:
            raise ProtocolError(f"request body: {declared_n} bytes is more than {key} ({limit})", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"request body: more than {key} ({limit}) bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_image(data: bytes, declared_type: str, cfg: ServeConfig, channels: int) -> np.ndarray:
    """Upload bytes -> uint8 H x W x C, refusing wrong types and oversized images before decoding."""
    from PIL import Image, UnidentifiedImageError

    accepted = ", ".join(cfg.content_types)
    if declared_type not in cfg.content_types:
        raise ProtocolError(f"Content-Type: {declared_type or 'none'!r} is not accepted (serve.content_types: {accepted})", 415)
    if not data:
        raise ProtocolError("image: the upload is empty")
    try:
        img = Image.open(io.BytesIO(data), formats=list(FORMAT_TYPES))  # reads the header only
    except Image.DecompressionBombError as e:
        raise ProtocolError(f"image: too many pixels ({e})", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ProtocolError(f"image: not a PNG, JPEG or WebP image (serve.content_types: {accepted})") from None
    with img:
        actual = FORMAT_TYPES.get(img.format, "")
        if actual not in cfg.content_types:
            raise ProtocolError(f"image: is {img.format}, not accepted (serve.content_types: {accepted})", 415)
        width, height = img.size
        if width * height > cfg.max_pixels:
            raise ProtocolError(f"image: {width}x{height} = {width * height} pixels is more than "
                                f"serve.max_pixels ({cfg.max_pixels})", 413)
        try:
            img.load()
        except Exception as e:  # truncated or corrupt data; Pillow raises OSError, SyntaxError, ...
            raise ProtocolError(f"image: cannot decode this {img.format} (truncated or corrupt: {e})") from None
        from .images import image_to_uint8

        return image_to_uint8(img, channels)


def encode_png(array: np.ndarray) -> bytes:
    from .images import uint8_to_image

    buffer = io.BytesIO()
    uint8_to_image(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def check_tensor(x: np.ndarray, model: ServedModel, cfg: ServeConfig) -> None:
    """Shape and dtype of an infer input against the model and the limits."""
    s = model.session
    expected = s.input_shape()
    if x.dtype != s.dtype:
        raise ProtocolError(f"inputs[{s.input_name}].datatype: {datatype(x.dtype)} but {model.name} takes "
                            f"{datatype(s.dtype)}")
    if x.ndim != 4 or any(e != -1 and d != e for d, e in zip(x.shape, expected)):
        raise ProtocolError(f"inputs[{s.input_name}].shape: {list(x.shape)} does not match {expected}")
    n = x.shape[0]
    h, w = (x.shape[2], x.shape[3]) if s.layout == "NCHW" else (x.shape[1], x.shape[2])
    if min(n, h, w) < 1:
        raise ProtocolError(f"inputs[{s.input_name}].shape: {list(x.shape)} has an empty dimension")
    if n > cfg.max_batch_size:
        raise ProtocolError(f"inputs[{s.input_name}].shape: batch {n} is more than serve.max_batch_size "
                            f"({cfg.max_batch_size})")
    if h * w > cfg.max_pixels:
        raise ProtocolError(f"inputs[{s.input_name}].shape: {h}x{w} is more than serve.max_pixels ({cfg.max_pixels})", 413)
    if (problem := s.size_error(h, w)) is not None:
        raise ProtocolError(f"inputs[{s.input_name}].shape: {problem}", 413)


def create_app(sessions: dict[str, GeneratorSession], cfg: ServeConfig | None = None,
               registry: dict[str, str] | None = None):
    """The app for ``sessions`` (direction -> loaded session). ``registry`` holds the model's
    address and registry name/version/alias, shown in the metadata and logs."""
    cfg = cfg or ServeConfig()
    registry = registry or {}
    metrics = Metrics(cfg.max_batch_size)
    version = str(registry.get("registry_version", "1"))
    models: dict[str, ServedModel] = {}
    for direction, session in sessions.items():
        name = model_name(cfg.model_name, direction)

        def on_batch(size, seconds, name=name):
            metrics.batch_size.labels(name).observe(size)
            metrics.inference.labels(name).observe(seconds)

        exported = {k: v for k, v in session.metadata.items() if k in SHOWN_METADATA}
        # protocol parameters are flat strings, numbers and booleans: the options travel as JSON
        parameters = {"direction": direction, "provider": cfg.provider,
                      "providers_in_use": ",".join(session.providers_in_use),
                      "provider_options": json.dumps(dict(session.provider_options), sort_keys=True),
                      "io_binding": session.io_binding, "variant": cfg.variant,
                      "max_batch_size": cfg.max_batch_size, **registry, **exported}
        models[name] = ServedModel(name, direction, version, session,
                                   DynamicBatcher(session.run_any_size, cfg.max_batch_size,
                                                  cfg.max_batch_delay_ms / 1000, on_batch, name), parameters)
        models[name].tiler, models[name].parameters["tiling"] = load_tiler(
            session, cfg.tile_size, cfg.tile_overlap, cfg.tile_above_pixels, cfg.tile_exact_norms)
        if threshold_of(session.metadata) is not None:
            models[name].parameters["quality_threshold_db"] = threshold_of(session.metadata)
    page = (STATIC / "index.html").read_text()
    # Tiled images run one at a time in one thread (ORT uses every core for one call already),
    # and wait for their turn before they are decoded: that is what bounds the memory.
    tile_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort-tiles")
    tiled_slot = asyncio.Semaphore(1)
    progress = ProgressBoard()

    @asynccontextmanager
    async def lifespan(app):
        for model in models.values():
            model.batcher.start()
            metrics.ready.labels(model.name).set(1)
        app.state.ready = bool(models)
        log.info("ready", extra={"fields": {"models": {m.name: m.parameters for m in models.values()}}})
        yield
        app.state.ready = False
        for model in models.values():
            metrics.ready.labels(model.name).set(0)
            await model.batcher.stop()
        tile_executor.shutdown(wait=True)
        log.info("stopped", extra={"fields": {"models": list(models)}})

    app = FastAPI(title="CycleGAN serving", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ready = False
    app.state.models = models
    app.state.metrics = metrics

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ProtocolError)
    async def protocol_error(request, exc: ProtocolError):
        return error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):
        log.exception("internal error", extra={"fields": {"path": request.url.path}})
        return error(500, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request, exc: ClientDisconnect):
        # The client left before its request was complete, or the connection guard cut it
        # off at serve.body_timeout_s: nobody reads this answer. It only sets the status the
        # request is logged and counted with: the client's doing, so no traceback, no 500.
        cut_off = request.scope.get("state", {}).get("cut_off")
        request.scope["cyclegan.outcome"] = cut_off or "client disconnected before the request was complete"
        return Response(status_code=408 if cut_off else CLIENT_CLOSED)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(request.scope.get("route"), "path", "unmatched")
            name = request.scope.get("path_params", {}).get("name", "")
            if route == "/v1/translate":
                name = model_name(cfg.model_name, request.query_params.get("direction", "AtoB"))
            label = name if name in models else ""
            if route != "/metrics":
                metrics.requests.labels(request.method, route, label, str(status)).inc()
                metrics.latency.labels(request.method, route).observe(elapsed)
            outcome = request.scope.get("cyclegan.outcome")
            if not route.startswith(("/v2/health", "/metrics", "/v1/progress")) or outcome:
                log.info("request", extra={"fields": {
                    "method": request.method, "path": request.url.path, "route": route, "model": label,
                    "status": status, "ms": round(elapsed * 1000, 2),
                    "client": request.client.host if request.client else None,
                    **({"error": outcome} if outcome else {})}})

    def get_model(name: str) -> ServedModel:
        if name not in models:
            raise ProtocolError(f"model {name!r} not found (served: {', '.join(models) or 'none'})", 404)
        return models[name]

    def check_version(model: ServedModel, version: str | None) -> None:
        if version is not None and version != model.version:
            raise ProtocolError(f"model {model.name!r} has no version {version!r} (served: {model.version})", 404)

    def tiled(model: ServedModel, h: int, w: int) -> bool:
        return model.tiler is not None and h * w > cfg.tile_above_pixels

    def return_model(model: ServedModel) -> ServedModel:
        back = model_name(cfg.model_name, "BtoA" if model.direction == "AtoB" else "AtoB")
        if back not in models:
            raise ProtocolError(f"quality: needs the return generator {back}, which is not served", 409)
        return models[back]

    async def run_leg(model: ServedModel, x: np.ndarray, job: str | None, stage: str, done_before: int,
                      total: int) -> np.ndarray:
        """One generator on ``x`` (N images of one size): whole through the batcher, or in tiles."""
        h, w = (x.shape[a] for a in model.session.spatial_axes)
        if not tiled(model, h, w):
            y = await model.batcher.submit(x)
        else:
            def report(done, _total):
                progress.update(job, stage, done_before + done, total)

            call = model.tiler.translate
            y = await asyncio.get_running_loop().run_in_executor(
                tile_executor, lambda: call(x, report if job else None))
        if job:
            progress.update(job, stage, done_before + calls(model, x), total)
        return y

    def calls(model: ServedModel, x: np.ndarray) -> int:
        """Model calls ``run_leg`` makes for ``x``: what progress counts."""
        h, w = (x.shape[a] for a in model.session.spatial_axes)
        return model.tiler.plan(h, w).calls * len(x) if tiled(model, h, w) else 1

    async def translate_array(model: ServedModel, x: np.ndarray, quality: bool,
                              job: str | None) -> tuple[np.ndarray, list[Quality] | None, int]:
        """(translation, quality per image or None, tiles per image: 0 when run whole)."""
        h, w = (x.shape[a] for a in model.session.spatial_axes)
        back = return_model(model) if quality else None
        first = calls(model, x)
        total = first + (calls(back, x) if back is not None else 0)
        if job:
            progress.start(job, "translate", total)
        try:
            y = await run_leg(model, x, job, "translate", 0, total)
            found = None
            if back is not None:
                rec = await run_leg(back, y, job, "quality", first, total)
                found = await run_in_threadpool(assess, x, rec, model.session.layout,
                                                threshold_of(model.session.metadata))
        finally:
            if job:
                progress.finish(job)
        return y, found, model.tiler.plan(h, w).tiles if tiled(model, h, w) else 0

    def job_id(job: str | None) -> str | None:
        if job is not None and not JOB_ID.fullmatch(job):
            raise ProtocolError(f"job: {job[:80]!r} is not 1-64 letters, digits, '-' or '_'")
        return job

    @app.get("/v1/progress/{job}")
    async def job_progress(job: str):
        entry = progress.get(job_id(job))
        if entry is None:
            raise ProtocolError(f"job {job!r}: not known (not started yet, or finished over a minute ago)", 404)
        return entry

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    def all_ready() -> bool:
        return bool(app.state.ready) and all(m.batcher.running for m in models.values())

    @app.get("/v2/health/ready")
    async def ready():
        if not all_ready():
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata():
        return {"name": "cyclegan-serving", "version": "1", "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None):
        model = get_model(name)
        check_version(model, version)
        return model.metadata()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None):
        model = get_model(name)
        check_version(model, version)
        ok = bool(app.state.ready) and model.batcher.running
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None):
        model = get_model(name)
        check_version(model, version)
        body = await read_body(request, cfg.max_infer_bytes, "serve.max_infer_bytes")

        def parse():
            raw = decompress(body, request.headers.get("content-encoding"), cfg.max_infer_bytes)
            header, tail = split_body(raw, request.headers.get(HEADER_LENGTH))
            arrays = decode_inputs(header, tail)
            if set(arrays) != {model.session.input_name}:
                raise ProtocolError(f"inputs: {model.name} takes exactly one tensor named "
                                    f"{model.session.input_name!r}, got {sorted(arrays)}")
            requested = [o.get("name") for o in header.get("outputs") or [] if isinstance(o, dict)]
            known = (model.session.output_name, *QUALITY_OUTPUTS)
            unknown = [o for o in requested if o not in known]
            if unknown:
                raise ProtocolError(f"outputs: {model.name} has no output {unknown[0]!r} "
                                    f"(it has {', '.join(map(repr, known))})")
            x = arrays[model.session.input_name]
            check_tensor(x, model, cfg)
            return header, x, requested

        header, x, requested = await run_in_threadpool(parse) if len(body) > 65536 else parse()
        params = header.get("parameters") or {}
        asked = params.get("quality", False) if isinstance(params, dict) else False
        if not isinstance(asked, bool):
            raise ProtocolError(f"parameters.quality: expected true or false, got {asked!r}")
        quality = asked or any(o in QUALITY_OUTPUTS for o in requested)
        threshold = threshold_of(model.session.metadata)
        if "out_of_domain" in requested and threshold is None:
            raise ProtocolError(f"outputs: out_of_domain needs a quality threshold, which {model.name} does not "
                                "record (cyclegan export --metrics records it from an evaluation)")
        h, w = (x.shape[a] for a in model.session.spatial_axes)
        async with tiled_slot if tiled(model, h, w) else nullcontext():
            y, found, _ = await translate_array(model, x, quality, None)
        output = model.session.output_name
        outputs = {output: y}
        if found is not None:
            outputs["cycle_psnr_db"] = np.array([q.cycle_psnr_db for q in found], dtype=np.float32)
            if threshold is not None:
                outputs["out_of_domain"] = np.array([q.out_of_domain for q in found], dtype=np.bool_)
        if requested:
            outputs = {k: v for k, v in outputs.items() if k in requested}
        binary = {name: wants_binary(header, name) for name in outputs}
        rid = header.get("id") if isinstance(header.get("id"), str) else None
        content, headers = await run_in_threadpool(encode_response, model.name, model.version, rid, outputs, binary)
        return Response(content=content, headers=headers, media_type=headers["Content-Type"])

    @app.post("/v1/translate")
    async def translate(request: Request, direction: str = "AtoB", quality: bool = False, job: str | None = None):
        name = model_name(cfg.model_name, direction)
        if direction not in ("AtoB", "BtoA"):
            raise ProtocolError(f"direction: {direction!r} is not AtoB or BtoA")
        model = get_model(name)
        job = job_id(job)
        if quality:
            return_model(model)
        body = await read_body(request, cfg.max_upload_bytes, "serve.max_upload_bytes")
        declared = _content_type(request.headers.get("content-type"))
        if declared == "multipart/form-data":
            body, declared = await _form_file(request, body, cfg)
        from .images import peek_size

        h, w = await run_in_threadpool(peek_size, body)
        if job:
            progress.start(job, "waiting", 1)
        try:
            whole = not tiled(model, h, w)
            if whole and (problem := model.session.size_error(h, w)) is not None:
                raise ProtocolError(f"image: {problem}", 413)
            async with nullcontext() if whole else tiled_slot:
                image = await run_in_threadpool(decode_image, body, declared, cfg, model.session.channels_in)
                x = model.session.to_model_input(image[None])
                del image
                y, found, tiles = await translate_array(model, x, quality, job)
                del x
                png = await run_in_threadpool(encode_png, model.session.to_images(y)[0])
        finally:
            if job:
                progress.finish(job)
        headers = {"X-Model": model.name, "X-Model-Version": model.version, "X-Tiles": str(tiles)}
        if found is not None:
            headers.update(found[0].headers())
        return Response(content=png, media_type="image/png", headers=headers)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        options = "".join(f'<option value="{m.direction}">{m.direction}</option>' for m in models.values())
        return page.replace("{{DIRECTIONS}}", options).replace("{{MAX_BYTES}}", str(cfg.max_upload_bytes))

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _form_file(request, body: bytes, cfg: ServeConfig) -> tuple[bytes, str]:
    """The first file part of a multipart body that was already read (within the limit)."""
    from starlette.datastructures import UploadFile

    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=1, max_fields=8, max_part_size=cfg.max_upload_bytes)
    except Exception as e:  # malformed multipart
        raise ProtocolError(f"multipart body: cannot parse it ({e})") from None
    for _, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read()
            return data, _content_type(value.content_type)
    raise ProtocolError("multipart body: no file part (send the image as a file field, e.g. curl -F image=@x.png)")
