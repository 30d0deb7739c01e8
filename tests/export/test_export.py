"""cyclegan export: single-file verified ONNX models with metadata, variants, atomic output."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from helpers import TESTS_PROFILE
from helpers.serving import cli, cli_main, shared_export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return shared_export(tmp_path_factory)


def test_export_writes_two_verified_single_file_models(exported):
    import onnx

    from training.utils import sha256_file as file_sha256

    _, checkpoint, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["G_AtoB.onnx", "G_BtoA.onnx", "triton", "verify.json"]
    report = json.loads((out / "verify.json").read_text())
    assert report["checkpoint_sha256"] == file_sha256(checkpoint)
    for name, direction in (("G_AtoB.onnx", "AtoB"), ("G_BtoA.onnx", "BtoA")):
        entry = report["models"][name]
        assert entry["passed"] and entry["max_abs_diff"] <= 1e-4 and entry["opset"] >= 17
        # every configured size x batch, plus the non-square case
        assert {tuple(c["input_shape"]) for c in entry["cases"]} >= {(1, 3, 32, 32), (2, 3, 32, 32), (1, 3, 32, 36)}
        model = onnx.load(str(out / name))
        onnx.checker.check_model(model, full_check=True)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"]
        out_dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
        assert out_dims == ["batch", 3, "height", "width"]
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["direction"] == direction
        assert meta["source_checkpoint_sha256"] == file_sha256(checkpoint)
        assert meta["size_multiple"] == "4" and meta["training_size"] == "32"
        assert "[-1, 1]" in meta["normalisation"]
        assert entry["sha256"] == file_sha256(out / name)


def test_onnx_any_size_matches_the_checkpoint_path(exported):
    """The ONNX model behind serving's padding equals translate_tensor on sizes never verified."""
    import torch

    from serving.session import load_session
    from training.engine.checkpoint import load_generators
    from training.translate import translate_tensor

    _, checkpoint, out = exported
    G_A, G_B, _ = load_generators(checkpoint)
    for direction, G in (("AtoB", G_A), ("BtoA", G_B)):
        session = load_session(out / f"G_{direction}.onnx")
        for shape in [(1, 3, 37, 29), (3, 3, 44, 52), (1, 3, 5, 6)]:
            x = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape))) * 2 - 1
            expected = translate_tensor(G, x).numpy()
            got = session.run_any_size(x.numpy())
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() <= 1e-4


def test_failed_verification_writes_nothing(exported, tmp_path, monkeypatch):
    """A model whose ONNX output drifts from PyTorch is refused; the old output stays."""
    import onnx
    from onnx import numpy_helper

    import training.export.onnx as export_module
    from training.config import ExportConfig
    from training.errors import UserError

    _, checkpoint, _ = exported
    original = export_module.export_onnx

    def drifting_export(net, path, *args, **kwargs):
        original(net, path, *args, **kwargs)
        model = onnx.load(str(path))
        weight = next(t for t in model.graph.initializer if len(t.dims) == 4)
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 0.05, weight.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(export_module, "export_onnx", drifting_export)
    out = tmp_path / "out"
    out.mkdir()
    (out / "G_AtoB.onnx").write_bytes(b"previous model")
    with pytest.raises(UserError, match="verification failed"):
        export_module.export(str(checkpoint), str(out), ExportConfig(verify_sizes=[32], verify_batches=[1]),
                             progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["G_AtoB.onnx"]
    assert (out / "G_AtoB.onnx").read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "temporary folders left behind"


def test_uint8_and_int8_variants(exported, tmp_path, capsys):
    """uint8 NHWC in/out with the normalisation inside; int8 reported with its PSNR."""
    import onnxruntime as ort
    from PIL import Image

    from serving.images import image_to_uint8
    from serving.session import load_session

    data, checkpoint, _ = exported
    out = tmp_path / "variants"
    assert cli_main("export", "--checkpoint", str(checkpoint), "--out", str(out), "--params", str(TESTS_PROFILE),
                    "--data", str(data), "--set", "export.uint8_variant=true", "--set", "export.quantize=true",
                    "--no-progress") == 0
    assert "int8 PSNR" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["G_AtoB.onnx", "G_AtoB_int8.onnx", "G_AtoB_uint8.onnx", "G_BtoA.onnx", "G_BtoA_int8.onnx",
                     "G_BtoA_uint8.onnx", "triton", "verify.json"]
    report = json.loads((out / "verify.json").read_text())
    for direction in ("AtoB", "BtoA"):
        int8 = report["models"][f"G_{direction}_int8.onnx"]
        assert int8["images"] == 3 and int8["psnr_split"] == "test"   # the three test images of the domain
        assert math.isfinite(int8["psnr_db_mean"]) and int8["psnr_db_min"] <= int8["psnr_db_mean"]
        assert int8["meets_goal"] == (int8["psnr_db_mean"] >= 30.0)
        assert report["models"][f"G_{direction}_uint8.onnx"]["max_abs_diff"] <= 1

    # the uint8 model equals the float model followed by the usual uint8 conversion
    image = image_to_uint8(Image.open(data / "testA" / "img_000.png"))[None, :32, :32]
    uint8 = ort.InferenceSession(str(out / "G_AtoB_uint8.onnx"), providers=["CPUExecutionProvider"])
    got = uint8.run(None, {"input": image})[0]
    for value in (uint8.get_inputs()[0], uint8.get_outputs()[0]):
        assert value.shape == ["batch", "height", "width", 3] and value.type == "tensor(uint8)"
    assert got.dtype == np.uint8 and got.shape == image.shape
    expected = load_session(out / "G_AtoB.onnx").translate(image)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    # the uint8 variant served: UINT8 NHWC tensors over the protocol, PNG in and out
    from starlette.testclient import TestClient

    from serving.app import create_app
    from serving.model_store import resolve_model
    from serving.config import ServeConfig

    files = resolve_model(out, variant="uint8").files
    assert files == {"AtoB": out / "G_AtoB_uint8.onnx", "BtoA": out / "G_BtoA_uint8.onnx"}
    odd = image_to_uint8(Image.open(data / "testA" / "img_001.png"))[None, :30, :22]
    with TestClient(create_app({"AtoB": load_session(files["AtoB"])}, ServeConfig(variant="uint8"))) as client:
        meta = client.get("/v2/models/cyclegan-AtoB").json()
        assert meta["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
        response = client.post("/v2/models/cyclegan-AtoB/infer", json={"inputs": [
            {"name": "input", "shape": [1, 30, 22, 3], "datatype": "UINT8", "data": odd.ravel().tolist()}]})
        assert response.status_code == 200, response.text
        y = np.array(response.json()["outputs"][0]["data"], dtype=np.uint8).reshape(odd.shape)
        assert np.abs(y.astype(int) - load_session(out / "G_AtoB.onnx").translate(odd).astype(int)).max() <= 1
        wrong = client.post("/v2/models/cyclegan-AtoB/infer", json={"inputs": [
            {"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0.0] * 192}]})
        assert wrong.status_code == 400 and "UINT8" in wrong.json()["error"]
    # the int8 model is a real quantised graph
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "G_AtoB_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_export_errors_are_one_line(exported, tmp_path):
    _, checkpoint, _ = exported
    missing = cli("export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o"), check=False)
    assert missing.returncode == 2 and "nope.pt" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, needle", [
    (["--set", "export.quantize=true"], "--data"),
    (["--set", "export.opset=16"], "export.opset"),
    (["--set", "export.tolerance=-1"], "export.tolerance"),
])
def test_export_config_errors(exported, tmp_path, capsys, args, needle):
    _, checkpoint, _ = exported
    assert cli_main("export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), *args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_export_from_and_to_s3(exported, s3_env):
    """--checkpoint and --out as s3:// addresses on the loopback S3 server."""
    from training.config import ExportConfig
    from training.export.onnx import export

    _, checkpoint, _ = exported
    bucket = s3_env("export-bucket")
    s3_env.client.upload_file(str(checkpoint), bucket, "runs/latest.pt")
    export(f"s3://{bucket}/runs/latest.pt", f"s3://{bucket}/export", ExportConfig(verify_sizes=[32], verify_batches=[1]),
           progress=False)
    keys = {o["Key"] for o in s3_env.client.list_objects_v2(Bucket=bucket, Prefix="export/")["Contents"]}
    assert {"export/G_AtoB.onnx", "export/G_BtoA.onnx", "export/verify.json", "export/_SUCCESS"} <= keys
    report = json.loads(s3_env.client.get_object(Bucket=bucket, Key="export/verify.json")["Body"].read())
    assert report["checkpoint"] == f"s3://{bucket}/runs/latest.pt"


def test_unet_generator_exports_with_dynamic_sizes(tiny_data, tmp_path):
    """A U-Net's size multiple is its whole input (128): the export still keeps sizes dynamic."""
    import onnx

    from training.config import ExportConfig, load_config
    from training.export.onnx import export
    from training.engine.trainer import Trainer

    cfg = load_config(TESTS_PROFILE, ["model.netG=unet_128", "model.ngf=4", "model.norm=batch",
                                      "data.load_size=128", "data.crop_size=128"], required=True)
    checkpoint = tmp_path / "unet.pt"
    Trainer(cfg, tiny_data, tmp_path / "run", "cpu").save(checkpoint)
    export(str(checkpoint), str(tmp_path / "out"), ExportConfig(fp16_variant=True), str(tiny_data), progress=False)
    report = json.loads((tmp_path / "out" / "verify.json").read_text())
    entry = report["models"]["G_AtoB.onnx"]
    assert entry["passed"]
    assert report["models"]["G_AtoB_fp16.onnx"]["psnr_db_mean"] >= 40   # Concat and LeakyRelu convert too
    assert {tuple(c["input_shape"]) for c in entry["cases"]} >= {(1, 3, 128, 128), (1, 3, 128, 256)}
    model = onnx.load(str(tmp_path / "out" / "G_AtoB.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["size_multiple"] == "128"
