"""Translate with the exported ONNX model (file, folder, models:/ URI, s3://), no torch on that side;
the NumPy padding rule; model resolution; provider checks."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import make_images
from helpers.serving import cli, register_export, run_python, shared_export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return shared_export(tmp_path_factory)


@pytest.fixture(scope="module")
def registry(exported, tmp_path_factory):
    """A real SQLite MLflow store with the export registered as cyclegan v1, alias champion."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    return uri, register_export(exported[2], uri, root / "artifacts")


def _images(folder):
    from PIL import Image

    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


@pytest.mark.parametrize("shape", [(1, 3, 40, 40), (2, 3, 37, 29), (1, 3, 3, 2), (1, 1, 6, 9), (1, 3, 4, 8)])
def test_numpy_padding_matches_torch(shape):
    import torch

    from serving.images import crop, pad_to_multiple
    from training.models.registry import min_size, size_multiple
    from training.translate import pad_to_multiple as torch_pad

    multiple, min_side = size_multiple("resnet_9blocks"), min_size("resnet_9blocks")  # 4 and 8
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    expected, size = torch_pad(x, multiple, min_side)
    got, got_size = pad_to_multiple(x.numpy(), min_size=min_side)
    assert got_size == size and np.array_equal(got, expected.numpy())
    assert np.array_equal(crop(got, size), x.numpy())
    # NHWC, as the uint8 models use it
    got_nhwc, _ = pad_to_multiple(np.moveaxis(x.numpy(), 1, -1), axes=(1, 2), min_size=min_side)
    assert np.array_equal(np.moveaxis(got_nhwc, -1, 1), expected.numpy())


def test_translate_model_matches_checkpoint_translate(exported, tmp_path):
    """Same pixels as `translate --checkpoint`, for a folder (nested, several sizes) and a file."""
    data, checkpoint, export_dir = exported
    inputs = tmp_path / "in"
    make_images(inputs, 3, size=(40, 40), seed=5)
    make_images(inputs / "nested", 2, size=(37, 22), seed=6)
    from serving.translate import translate_model
    from training.translate import translate_checkpoint

    for direction in ("AtoB", "BtoA"):
        onnx_out, torch_out = tmp_path / f"onnx-{direction}", tmp_path / f"torch-{direction}"
        written = translate_model(str(export_dir), direction, str(inputs), str(onnx_out), progress=False)
        assert len(written) == 5
        translate_checkpoint(checkpoint, direction, inputs, torch_out, progress=False)
        got, expected = _images(onnx_out), _images(torch_out)
        assert got.keys() == expected.keys() and len(got) == 5
        for name in got:
            assert got[name].shape == expected[name].shape
            assert np.abs(got[name].astype(int) - expected[name].astype(int)).max() <= 1, name
    # tiny images work too (padded up to the generator's smallest input, 8), keeping their size
    tiny = make_images(tmp_path / "tiny", 1, size=(5, 3), seed=7)[0]
    translate_model(str(export_dir), "AtoB", str(tiny), str(tmp_path / "tiny-out"), progress=False)
    assert _images(tmp_path / "tiny-out")["img_000.png"].shape == (3, 5, 3)
    # a single .onnx file and a single image
    single = translate_model(str(export_dir / "G_BtoA.onnx"), "BtoA", str(inputs / "img_000.png"), str(tmp_path / "one"),
                             progress=False)
    assert [p.name for p in single] == ["img_000.png"]
    assert np.array_equal(_images(tmp_path / "one")["img_000.png"], _images(tmp_path / "onnx-BtoA")["img_000.png"])


def test_translate_and_serve_without_torch(exported, tmp_path):
    """The serve image has no torch: `cyclegan translate --model` and the server's whole path
    (resolve, load, warm up, a /v1/translate request) run with torch made unimportable."""
    _, _, export_dir = exported
    inputs = tmp_path / "in"
    make_images(inputs, 2, seed=1)
    out = run_python(
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "from training.cli import main\n"
        f"assert main(['translate', '--model', {str(export_dir)!r}, '--direction', 'AtoB', '--input', {str(inputs)!r},"
        f" '--output', {str(tmp_path / 'out')!r}, '--no-progress']) == 0\n"
        "from starlette.testclient import TestClient\n"
        "from serving.server import load_app\n"
        "from serving.config import ServeConfig\n"
        f"app, _ = load_app({str(export_dir)!r}, ServeConfig())\n"
        "with TestClient(app) as client:\n"
        f"    r = client.post('/v1/translate', content=open({str(inputs / 'img_000.png')!r}, 'rb').read(),"
        " headers={'Content-Type': 'image/png'})\n"
        "    print(r.status_code, r.content[:4])\n")
    assert "translated 2 image(s)" in out and "200 b'\\x89PNG'" in out


def test_translate_from_registry_alias(exported, registry, tmp_path):
    """`cyclegan translate --model models:/cyclegan@champion` against a real MLflow store."""
    data, _, export_dir = exported
    uri, version = registry
    result = cli("translate", "--model", "models:/cyclegan@champion", "--direction", "AtoB",
                 "--input", str(data / "testA"), "--output", str(tmp_path / "out"), extra_env={"MLFLOW_TRACKING_URI": uri})
    assert "translated 3 image(s)" in result.stdout
    from serving.translate import translate_model

    translate_model(str(export_dir), "AtoB", str(data / "testA"), str(tmp_path / "direct"), progress=False)
    got, expected = _images(tmp_path / "out"), _images(tmp_path / "direct")
    assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in got)


def test_resolve_model_records_registry_fields(exported, registry, tmp_path):
    from serving.model_store import resolve_model
    from serving.errors import ServingError as UserError

    uri, version = registry
    by_alias = resolve_model("models:/cyclegan@champion", tracking_uri=uri, dst=tmp_path / "a")
    assert (by_alias.name, by_alias.version, by_alias.alias) == ("cyclegan", version, "champion")
    assert by_alias.run_id and set(by_alias.files) == {"AtoB", "BtoA"}
    assert by_alias.path("AtoB").name == "G_AtoB.onnx" and by_alias.path("AtoB").read_bytes() == \
        (exported[2] / "G_AtoB.onnx").read_bytes()
    by_version = resolve_model(f"models:/cyclegan/{version}", tracking_uri=uri, dst=tmp_path / "v")
    assert by_version.version == version and by_version.alias is None
    assert by_version.describe()["registry_version"] == version
    for bad in ("models:/cyclegan@nope", "models:/nothere/1", "models:/cyclegan"):
        with pytest.raises(UserError, match="models:/"):
            resolve_model(bad, tracking_uri=uri, dst=tmp_path / "x")


def test_server_metadata_shows_the_registry_version(registry, tmp_path):
    """`cyclegan serve --model models:/cyclegan@champion`: name, version and alias in the metadata."""
    from starlette.testclient import TestClient

    from serving.server import load_app
    from serving.config import ServeConfig

    uri, version = registry
    app, info = load_app("models:/cyclegan@champion", ServeConfig(), uri)
    assert (info.name, info.version, info.alias) == ("cyclegan", version, "champion")
    with TestClient(app) as client:
        assert client.get("/v2/health/ready").status_code == 200
        meta = client.get("/v2/models/cyclegan-BtoA").json()
        assert meta["versions"] == [version]
        params = meta["parameters"]
        assert (params["registry_name"], params["registry_version"], params["registry_alias"]) == \
            ("cyclegan", version, "champion")
        assert params["model_uri"] == "models:/cyclegan@champion" and params["provider"] == "cpu"
        assert client.get(f"/v2/models/cyclegan-BtoA/versions/{version}/ready").json()["ready"] is True
        assert client.get("/v2/models/cyclegan-BtoA/versions/999/ready").status_code == 404


def test_resolve_model_files_and_folders(exported, tmp_path):
    from serving.model_store import resolve_model
    from serving.errors import ServingError as UserError

    _, _, export_dir = exported
    nested = tmp_path / "deep" / "er"
    nested.mkdir(parents=True)
    shutil.copy(export_dir / "G_BtoA.onnx", nested / "renamed.onnx")  # direction from the metadata
    info = resolve_model(nested / "renamed.onnx")
    assert info.files == {"BtoA": nested / "renamed.onnx"}
    with pytest.raises(UserError, match="no AtoB generator"):
        info.path("AtoB")
    assert set(resolve_model(export_dir).files) == {"AtoB", "BtoA"}
    # folders are searched by what each model's metadata says, whatever the file is called
    assert resolve_model(tmp_path / "deep").files == {"BtoA": nested / "renamed.onnx"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no fp32 generator"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(UserError, match="not found"):
        resolve_model(tmp_path / "missing")
    with pytest.raises(UserError, match="no int8 generator"):
        resolve_model(export_dir, variant="int8")


def test_translate_errors(exported, tmp_path):
    _, _, export_dir = exported
    wrong = cli("translate", "--model", str(export_dir / "G_BtoA.onnx"), "--direction", "AtoB", "--input",
                str(tmp_path), "--output", str(tmp_path / "o"), check=False)
    assert wrong.returncode == 2 and "no AtoB generator" in wrong.stderr
    (tmp_path / "bad.png").write_bytes(b"not a png")
    bad = cli("translate", "--model", str(export_dir), "--direction", "AtoB", "--input", str(tmp_path / "bad.png"),
              "--output", str(tmp_path / "o"), "--no-progress", check=False)
    assert bad.returncode == 2 and "bad.png" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_missing_gpu_provider_is_a_loud_error(exported, provider, tmp_path):
    """onnxruntime-gpu lists CUDA/TensorRT even without a GPU and would fall back to the CPU."""
    import onnxruntime as ort

    from serving.config import ServeConfig
    from serving.errors import ServingError as UserError
    from serving.session import load_session

    settings = ServeConfig(trt_cache_dir=str(tmp_path / "trt"))   # not the user's ~/.cache
    try:
        session = load_session(exported[2] / "G_AtoB.onnx", provider, warm_up=False, settings=settings)
    except UserError as e:
        assert provider in str(e) and ("fell back" in str(e) or "lacks" in str(e))
    else:  # a machine with a working GPU: then it must really run there
        required = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[provider]
        assert required in session.providers_in_use and required in ort.get_available_providers()


def test_translate_s3_input_and_output(exported, s3_env, tmp_path):
    """`cyclegan translate --model` with s3:// input and output (the command fetches and uploads
    around serving's local translate)."""
    from serving.translate import translate_model
    from training.cli import main

    _, _, export_dir = exported
    bucket = s3_env("translate-bucket")
    for p in make_images(tmp_path / "in", 2, seed=3):
        s3_env.client.upload_file(str(p), bucket, f"inputs/{p.name}")
    assert main(["translate", "--model", str(export_dir), "--direction", "AtoB", "--input", f"s3://{bucket}/inputs",
                 "--output", f"s3://{bucket}/outputs", "--no-progress"]) == 0
    keys = {o["Key"] for o in s3_env.client.list_objects_v2(Bucket=bucket, Prefix="outputs/")["Contents"]}
    assert keys == {"outputs/img_000.png", "outputs/img_001.png", "outputs/_SUCCESS"}
    translate_model(str(export_dir), "AtoB", str(tmp_path / "in"), str(tmp_path / "local"), progress=False)
    body = s3_env.client.get_object(Bucket=bucket, Key="outputs/img_001.png")["Body"].read()
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    import io

    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), _images(tmp_path / "local")["img_001.png"])
