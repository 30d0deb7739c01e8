"""GPU provider options: what reaches onnxruntime.InferenceSession for cuda and tensorrt (no GPU
runs here, so the session is captured, then the loud fallback check fires), I/O binding, the
TensorRT profile's size limit as a 413, and the options shown by /v2/models/{name} and the log."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import numpy as np
import pytest

from helpers.serving import shared_export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return shared_export(tmp_path_factory)


@pytest.fixture
def captured(monkeypatch):
    """Record the providers each InferenceSession is asked for, and open it on the CPU (the
    only device here): load_session must then refuse, as it does on a GPU-less node."""
    import onnxruntime as ort

    import serving.session as session_module

    calls = []
    real = ort.InferenceSession

    def capture(path, options=None, providers=None, **kwargs):
        calls.append(providers)
        return real(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", capture)
    # loading the CUDA libraries is not what these tests are about (and pulls GBs into memory)
    monkeypatch.setattr(session_module, "_preload_cuda_libraries", lambda: "")
    return calls


def test_cuda_options_reach_onnxruntime_and_the_fallback_stays_loud(exported, captured):
    from serving.config import ServeConfig
    from serving.errors import ServingError
    from serving.session import load_session

    settings = ServeConfig(provider="cuda", cudnn_conv_algo_search="HEURISTIC")
    with pytest.raises(ServingError, match="cuda was requested but ONNX Runtime fell back"):
        load_session(exported[2] / "G_AtoB.onnx", "cuda", settings=settings, warm_up=False)
    assert captured == [[("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}),
                         ("CPUExecutionProvider", {})]]


def test_tensorrt_options_cache_fp16_and_a_profile_from_serve_keys(exported, captured, tmp_path):
    """Engine cache folder (created, one prefix per model file), fp16, and min/opt/max shapes:
    min the model's smallest side, opt serve.trt_opt_side, max serve.trt_max_side, both rounded
    up to the size multiple, batches 1 and serve.max_batch_size."""
    from serving.config import ServeConfig
    from serving.errors import ServingError
    from serving.session import load_session

    model = exported[2] / "G_AtoB.onnx"   # resnet_2blocks: size multiple 4, min_size 8, input "input"
    cache = tmp_path / "cache" / "trt"    # two levels: ONNX Runtime itself creates only one
    settings = ServeConfig(provider="tensorrt", trt_fp16=True, trt_cache_dir=str(cache), trt_opt_side=30,
                           trt_max_side=98, max_batch_size=4, cudnn_conv_algo_search="DEFAULT")
    with pytest.raises(ServingError, match="tensorrt was requested but ONNX Runtime fell back"):
        load_session(model, "tensorrt", settings=settings, warm_up=False)
    prefix = "cyclegan_" + hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    assert captured == [[
        ("TensorrtExecutionProvider", {
            "trt_fp16_enable": "True",
            "trt_profile_min_shapes": "input:1x3x8x8",
            "trt_profile_opt_shapes": "input:4x3x32x32",
            "trt_profile_max_shapes": "input:4x3x100x100",
            "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
            "trt_engine_cache_prefix": prefix,
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache)}),
        ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "DEFAULT"}),
        ("CPUExecutionProvider", {})]]
    assert cache.is_dir()

    # without a cache folder and without an opt side: no cache options, opt = the training size (32)
    captured.clear()
    with pytest.raises(ServingError, match="fell back"):
        load_session(model, "tensorrt", settings=ServeConfig(trt_cache_dir=""), warm_up=False)
    options = dict(captured[0])["TensorrtExecutionProvider"]
    assert not any(key.startswith(("trt_engine_cache", "trt_timing_cache")) for key in options)
    assert options["trt_profile_opt_shapes"] == "input:8x3x32x32" and options["trt_fp16_enable"] == "False"


@pytest.mark.parametrize("interface, settings, expected", [
    # uint8 models are NHWC: the profile follows the layout
    (("input", 3, "NHWC", 4, 8, 32), {"max_batch_size": 2, "trt_max_side": 50},
     ("input:1x8x8x3", "input:2x32x32x3", "input:2x52x52x3")),
    # a U-Net's multiple is its whole input size: every side rounds up to 256
    (("input", 1, "NCHW", 256, 256, 256), {"max_batch_size": 8, "trt_opt_side": 300, "trt_max_side": 1000},
     ("input:1x1x256x256", "input:8x1x512x512", "input:8x1x1024x1024")),
    # a max side below the model's smallest: the profile still covers what the server sends
    (("x", 3, "NCHW", 4, 8, 256), {"max_batch_size": 1, "trt_max_side": 4},
     ("x:1x3x8x8", "x:1x3x8x8", "x:1x3x8x8")),
])
def test_tensorrt_profile_shapes(interface, settings, expected):
    from serving.config import ServeConfig
    from serving.session import ModelInterface, trt_profile

    profile = trt_profile(ModelInterface(*interface), ServeConfig(**settings))
    assert (profile["trt_profile_min_shapes"], profile["trt_profile_opt_shapes"],
            profile["trt_profile_max_shapes"]) == expected


def test_cpu_provider_has_no_gpu_options_and_no_binding(exported):
    from serving.config import ServeConfig
    from serving.session import load_session

    session = load_session(exported[2] / "G_AtoB.onnx", "cpu", settings=ServeConfig(io_binding=True),
                           warm_up=False)
    assert session.provider_options == [("CPUExecutionProvider", {})]
    assert session.io_binding is False and session.max_side == 0


def test_io_binding_run_path_gives_the_same_output(exported):
    """The bound run (device input value, output allocated by ONNX Runtime, one copy back) on
    the CPU device, the one this machine has: the same numbers as a plain run, and it really
    goes through run_with_iobinding."""
    from serving.session import load_session

    plain = load_session(exported[2] / "G_AtoB.onnx", warm_up=False)

    class NoPlainRun:
        def __init__(self, inner):
            self.inner = inner

        def run(self, *args, **kwargs):
            raise AssertionError("the bound path must not call InferenceSession.run")

        def __getattr__(self, name):
            return getattr(self.inner, name)

    bound = dataclasses.replace(plain, session=NoPlainRun(plain.session), io_binding=True, binding_device="cpu")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 36)).astype(np.float32)
    np.testing.assert_array_equal(bound.run(x), plain.run(x))
    np.testing.assert_array_equal(bound.run_any_size(x[:, :, :29, :31]), plain.run_any_size(x[:, :, :29, :31]))


def _png(height: int, width: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_beyond_the_tensorrt_profile_are_refused_with_413(exported, tmp_path):
    """A TensorRT engine cannot run a side above its profile: /v2 infer, /v1/translate and
    cyclegan translate refuse it naming serve.trt_max_side, before it reaches the model."""
    import tritonclient.http as httpclient
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.config import ServeConfig
    from serving.errors import ServingError
    from serving.session import load_session
    from serving.translate import translate_folder

    sessions = {d: dataclasses.replace(load_session(exported[2] / f"G_{d}.onnx"), max_side=40)
                for d in ("AtoB", "BtoA")}

    def infer(client, height, width):
        tensor = httpclient.InferInput("input", [1, 3, height, width], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 3, height, width), np.float32), binary_data=True)
        body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
        return client.post("/v2/models/cyclegan-AtoB/infer", content=body,
                           headers={"Inference-Header-Content-Length": str(json_size)})

    with TestClient(create_app(sessions, ServeConfig())) as client:
        assert infer(client, 40, 37).status_code == 200
        refused = infer(client, 41, 20)
        assert refused.status_code == 413 and "serve.trt_max_side (40)" in refused.json()["error"]
        assert client.post("/v1/translate", content=_png(24, 40), headers={"content-type": "image/png"}).status_code == 200
        refused = client.post("/v1/translate", content=_png(44, 24), headers={"content-type": "image/png"})
        assert refused.status_code == 413 and "serve.trt_max_side" in refused.json()["error"]

    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.open(__import__("io").BytesIO(_png(48, 16))).save(tmp_path / "in" / "wide.png")
    with pytest.raises(ServingError, match=r"wide\.png: 48x16 has a side above serve\.trt_max_side"):
        translate_folder(sessions["AtoB"], [tmp_path / "in" / "wide.png"], tmp_path / "in", tmp_path / "out", 4,
                         progress=False)
    assert not (tmp_path / "out").exists()


def test_metadata_and_startup_log_show_the_provider_options(exported, caplog):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.config import ServeConfig
    from serving.server import load_app

    cfg = ServeConfig(io_binding=True)
    with caplog.at_level(logging.INFO, logger="cyclegan.serving"):
        app, info = load_app(str(exported[2]), cfg)
    resolved = next(r for r in caplog.records if r.getMessage() == "model resolved")
    assert resolved.fields["provider_options"] == {d: {"CPUExecutionProvider": {}} for d in ("AtoB", "BtoA")}
    assert resolved.fields["io_binding"] == {"AtoB": False, "BtoA": False}   # the CPU provider never binds
    with TestClient(app) as client:
        params = client.get("/v2/models/cyclegan-AtoB").json()["parameters"]
    assert json.loads(params["provider_options"]) == {"CPUExecutionProvider": {}} and params["io_binding"] is False

    # what a TensorRT session would report (its options as load_session built them)
    session = app.state.models["cyclegan-AtoB"].session
    trt = [("TensorrtExecutionProvider", {"trt_fp16_enable": "True"}),
           ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "EXHAUSTIVE"}), ("CPUExecutionProvider", {})]
    gpu = dataclasses.replace(session, provider="tensorrt", provider_options=trt, io_binding=True)
    with TestClient(create_app({"AtoB": gpu}, ServeConfig(provider="tensorrt"))) as client:
        params = client.get("/v2/models/cyclegan-AtoB").json()["parameters"]
    assert params["provider"] == "tensorrt" and params["io_binding"] is True
    assert json.loads(params["provider_options"]) == dict(trt)


def test_gpu_settings_errors_name_the_key():
    from serving.config import load_serve_config
    from serving.errors import ServingError

    with pytest.raises(ServingError, match=r"serve.trt_opt_side \(2048\) is more than serve.trt_max_side \(1024\)"):
        load_serve_config({"trt_opt_side": 2048})
    with pytest.raises(ServingError, match="serve.cudnn_conv_algo_search"):
        load_serve_config({"cudnn_conv_algo_search": "FASTEST"})
    with pytest.raises(ServingError, match="serve.variant"):
        load_serve_config({"variant": "bf16"})
