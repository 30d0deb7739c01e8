"""The Triton model repository cyclegan export writes: each config.pbtxt parsed with Triton's own
schema (model_config.proto, as tritonclient ships it) and checked against the ONNX graphs and
against what `cyclegan serve` reports for the same model; its settings follow serve:; the
registered model version carries it. Also the fp16 variant, which Triton may serve."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from helpers import TESTS_PROFILE
from helpers.serving import cli_main, shared_export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return shared_export(tmp_path_factory)


@functools.cache
def model_config_pb2():
    """Triton's ModelConfig message. tritonclient ships it as tritonclient/grpc/model_config_pb2.py,
    whose package imports grpc (not installed here); the generated file itself needs only
    protobuf, so it is loaded by path."""
    import importlib.util
    from pathlib import Path

    import tritonclient

    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_config(path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2().ModelConfig())


def onnx_datatype(elem_type: int) -> str:
    import onnx

    return {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.UINT8: "TYPE_UINT8",
            onnx.TensorProto.FLOAT16: "TYPE_FP16"}[elem_type]


def check_against_graph(config, model_path) -> None:
    """Every declared input/output is the graph's, with its element type, and its dims after a
    dynamic batch (-1 where the graph's dimension is symbolic)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    pb2 = model_config_pb2()
    for declared, values in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in declared] == [v.name for v in values]
        for tensor, value in zip(declared, values):
            dims = value.type.tensor_type.shape.dim
            assert pb2.DataType.Name(tensor.data_type) == onnx_datatype(value.type.tensor_type.elem_type)
            assert dims[0].dim_param, "the batch must be dynamic for max_batch_size > 0"
            assert list(tensor.dims) == [d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:]]


def triton_metadata(config) -> dict:
    """What Triton's GET /v2/models/{name} reports for this configuration: the datatype without
    its TYPE_ prefix, the shape with the batch dimension (-1) in front."""
    pb2 = model_config_pb2()

    def tensors(declared):
        return [{"name": t.name, "datatype": pb2.DataType.Name(t.data_type).removeprefix("TYPE_"),
                 "shape": [-1, *t.dims]} for t in declared]

    return {"name": config.name, "platform": config.platform, "inputs": tensors(config.input),
            "outputs": tensors(config.output)}


def served_metadata(export_dir, cfg, names) -> dict[str, dict]:
    """GET /v2/models/{name} of `cyclegan serve` on this export folder with these serve: settings."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.model_store import resolve_model
    from serving.session import load_session

    files = resolve_model(str(export_dir), cfg.variant).files
    sessions = {d: load_session(p, warm_up=False) for d, p in files.items()}
    with TestClient(create_app(sessions, cfg)) as client:
        return {name: client.get(f"/v2/models/{name}").json() for name in names}


def test_repository_layout_and_configs_match_the_onnx_graphs(exported):
    from serving.config import ServeConfig
    from training.layout import Export, TritonRepository
    from training.utils import sha256_file

    _, _, out = exported
    repository = TritonRepository(Export(out).triton)
    assert repository.models() == ["cyclegan-AtoB", "cyclegan-BtoA"]
    assert sorted(str(p.relative_to(repository.root)) for p in repository.root.rglob("*") if p.is_file()) == [
        "cyclegan-AtoB/1/model.onnx", "cyclegan-AtoB/config.pbtxt",
        "cyclegan-BtoA/1/model.onnx", "cyclegan-BtoA/config.pbtxt"]
    defaults = ServeConfig()
    pb2 = model_config_pb2()
    report = json.loads((out / "verify.json").read_text())["triton"]
    for direction in ("AtoB", "BtoA"):
        name = f"cyclegan-{direction}"
        config = parse_config(repository.config(name))
        assert config.name == name and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == defaults.max_batch_size
        assert config.dynamic_batching.max_queue_delay_microseconds == round(defaults.max_batch_delay_ms * 1000)
        assert [(g.kind, g.count) for g in config.instance_group] == [(pb2.ModelInstanceGroup.KIND_GPU, 1)]
        assert config.parameters["cudnn_conv_algo_search"].string_value == "0"    # EXHAUSTIVE
        assert not config.optimization.execution_accelerators.gpu_execution_accelerator  # provider cpu: no TensorRT
        # the repository's model is the exported one, byte for byte
        assert sha256_file(repository.model_file(name)) == sha256_file(out / f"G_{direction}.onnx")
        assert report["models"][name]["model_sha256"] == sha256_file(repository.model_file(name))
        check_against_graph(config, repository.model_file(name))


def test_a_client_sees_the_same_models_on_triton_and_cyclegan_serve(exported):
    """Names, platform, input/output names, datatypes and shapes of /v2/models/{name} agree."""
    from serving.config import ServeConfig
    from training.layout import Export, TritonRepository

    _, _, out = exported
    repository = TritonRepository(Export(out).triton)
    served = served_metadata(out, ServeConfig(), repository.models())
    for name in repository.models():
        triton = triton_metadata(parse_config(repository.config(name)))
        assert triton == {k: served[name][k] for k in triton}
        assert served[name]["versions"] == [str(repository.VERSION)]


@pytest.mark.slow
def test_variants_and_serve_settings_shape_the_repository(exported, tmp_path, capsys):
    """fp16 and uint8 variants, Triton serving the uint8 one, and the serve: keys it follows
    (model name, batching, TensorRT with fp16, cuDNN search). The fp16 models: float16 weights,
    float32 in and out, >= 40 dB against fp32 on the test images, served by `cyclegan serve`."""
    import onnx

    from serving.config import ServeConfig
    from serving.model_store import resolve_model
    from serving.session import load_session
    from training.layout import Export, TritonRepository

    data, checkpoint, _ = exported
    out = tmp_path / "export"
    serve = {"model_name": "h2z", "max_batch_size": 4, "max_batch_delay_ms": 2.5, "provider": "tensorrt",
             "trt_fp16": True, "cudnn_conv_algo_search": "HEURISTIC"}
    assert cli_main("export", "--checkpoint", str(checkpoint), "--out", str(out), "--params", str(TESTS_PROFILE),
                    "--data", str(data), "--no-progress", "--set", "export.uint8_variant=true",
                    "--set", "export.fp16_variant=true", "--set", "export.triton_variant=uint8",
                    *[a for k, v in serve.items() for a in ("--set", f"serve.{k}={json.dumps(v).strip(chr(34))}")]) == 0
    printed = capsys.readouterr().out
    assert "G_AtoB_fp16.onnx: fp16 PSNR vs fp32" in printed and "triton/: Triton model repository" in printed

    repository = TritonRepository(Export(out).triton)
    assert repository.models() == ["h2z-AtoB", "h2z-BtoA"]
    pb2 = model_config_pb2()
    for direction in ("AtoB", "BtoA"):
        config = parse_config(repository.config(f"h2z-{direction}"))
        assert config.max_batch_size == 4 and config.dynamic_batching.max_queue_delay_microseconds == 2500
        assert config.parameters["cudnn_conv_algo_search"].string_value == "1"    # HEURISTIC
        (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert accelerator.name == "tensorrt" and dict(accelerator.parameters) == {"precision_mode": "FP16"}
        assert pb2.DataType.Name(config.input[0].data_type) == "TYPE_UINT8" and list(config.input[0].dims) == [-1, -1, 3]
        check_against_graph(config, repository.model_file(f"h2z-{direction}"))
    served = served_metadata(out, ServeConfig(model_name="h2z", variant="uint8", max_batch_size=4),
                             repository.models())
    for name in repository.models():
        triton = triton_metadata(parse_config(repository.config(name)))
        assert triton == {k: served[name][k] for k in triton}

    report = json.loads((out / "verify.json").read_text())
    fp16 = resolve_model(str(out), "fp16").files
    assert {d: p.name for d, p in fp16.items()} == {"AtoB": "G_AtoB_fp16.onnx", "BtoA": "G_BtoA_fp16.onnx"}
    for direction, path in fp16.items():
        entry = report["models"][path.name]
        assert entry["variant"] == "fp16" and entry["psnr_split"] == "test" and entry["images"] == 3
        assert entry["psnr_db_min"] >= 40.0 and entry["provider"] == "CPUExecutionProvider"
        model = onnx.load(str(path))
        meta = {p.key: p.value for p in model.metadata_props}
        assert (meta["variant"], meta["dtype"], meta["precision"], meta["direction"]) == (
            "fp16", "float32", "float16", direction)
        weights = [t for t in model.graph.initializer if len(t.dims) == 4]
        assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
        assert path.stat().st_size < 0.7 * (out / f"G_{direction}.onnx").stat().st_size
        # float32 in and out, any batch and size through the server's padding, close to fp32
        half, full = load_session(path, warm_up=False), load_session(out / f"G_{direction}.onnx", warm_up=False)
        x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 29, 38)).astype(np.float32)
        y = half.run_any_size(x)
        assert y.dtype == np.float32 and y.shape == x.shape
        assert np.abs(y - full.run_any_size(x)).max() < 0.02


def test_triton_settings_errors_are_one_line_and_early(exported, tmp_path, capsys):
    _, checkpoint, _ = exported
    base = ("export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--params",
            str(TESTS_PROFILE), "--no-progress")
    cases = [
        (["--set", "export.triton_variant=fp16"], "export.triton_variant: fp16 needs export.fp16_variant: true"),
        (["--set", "export.fp16_variant=true"], "export.fp16_variant: needs --data DIR"),
        (["--set", "serve.model_name=my model"], "serve.model_name: 'my model' cannot name a Triton model folder"),
        (["--set", "serve.max_batch_size=0"], "serve.max_batch_size"),
    ]
    for args, needle in cases:
        assert cli_main(*base, *args) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_triton_defaults_and_names_agree_with_the_server():
    """training/ cannot import serving/: the two places that spell a default or a rule agree."""
    import dataclasses

    from serving.app import model_name
    from serving.config import ServeConfig
    from training.export.triton import TritonSettings
    from training.layout import served_model_name

    defaults = ServeConfig()
    for field in dataclasses.fields(TritonSettings):
        assert getattr(TritonSettings(), field.name) == getattr(defaults, field.name), field.name
    assert TritonSettings.from_serve(defaults.model_dump()) == TritonSettings()
    assert served_model_name("x", "BtoA") == model_name("x", "BtoA")


def test_registered_version_carries_the_repository(tmp_path, monkeypatch):
    """models:/cyclegan@champion downloads with artifacts/triton/ ready for tritonserver; the
    address KServe's storageUri needs is the version's download URI + /artifacts/triton;
    `cyclegan serve` still picks the top-level graphs, not the repository's copies."""
    import mlflow
    import onnx
    from helpers.mlops import make_export, make_metrics, use_mlflow_store

    from serving.model_store import resolve_model
    from training.config import Config
    from training.export.triton import TritonSettings, write_repository
    from training.layout import Export
    from training.mlops import registry, tracking

    use_mlflow_store(tmp_path, monkeypatch)
    export_dir = make_export(tmp_path / "e", 0.5)
    for direction in ("AtoB", "BtoA"):   # what cyclegan export records, so that serving finds them
        path = Export(export_dir).onnx(direction)
        model = onnx.load(str(path))
        model.metadata_props.add(key="direction", value=direction)
        model.metadata_props.add(key="variant", value="fp32")
        onnx.save(model, str(path))
    write_repository(export_dir, TritonSettings())
    cfg = Config()
    registry.register(cfg, export_dir, make_metrics(tmp_path / "m"), promote=True, out=tmp_path / "r")

    local = mlflow.artifacts.download_artifacts(artifact_uri="models:/cyclegan@champion", dst_path=str(tmp_path / "dl"))
    triton = next(p for p in __import__("pathlib").Path(local).rglob("triton") if p.is_dir())
    assert triton.relative_to(local).as_posix() == "artifacts/triton"
    files = sorted(p.relative_to(triton).as_posix() for p in triton.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(Export(export_dir).triton).as_posix()
                           for p in Export(export_dir).triton.rglob("*") if p.is_file())
    for name in ("cyclegan-AtoB", "cyclegan-BtoA"):
        config = parse_config(triton / name / "config.pbtxt")
        assert config.name == name and [t.name for t in config.input] == ["image"]
        check_against_graph(config, triton / name / "1" / "model.onnx")

    mlc = tracking.client(cfg)
    version = mlc.get_model_version_by_alias("cyclegan", "champion").version
    uri = mlc.get_model_version_download_uri("cyclegan", version)
    listed = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/artifacts/triton/cyclegan-AtoB/config.pbtxt",
                                                 dst_path=str(tmp_path / "one"))
    assert parse_config(__import__("pathlib").Path(listed)).name == "cyclegan-AtoB"

    info = resolve_model("models:/cyclegan@champion")
    try:
        assert {d: p.name for d, p in info.files.items()} == {"AtoB": "G_AtoB.onnx", "BtoA": "G_BtoA.onnx"}
    finally:
        info.cleanup()

    # logging the same export again changes nothing; a changed repository is logged anew
    run_id = mlc.get_model_version("cyclegan", version).run_id
    uri_before = tracking.log_export(cfg, run_id, export_dir)
    assert tracking.log_export(cfg, run_id, export_dir) == uri_before
    write_repository(export_dir, TritonSettings(max_batch_size=2))
    assert tracking.log_export(cfg, run_id, export_dir) != uri_before
