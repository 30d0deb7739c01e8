"""A Triton Inference Server model repository of the exported generators.

``cyclegan export`` (``export.triton``, on by default) writes it into the export folder
(``layout.Export.triton``)::

    triton/cyclegan-AtoB/config.pbtxt
    triton/cyclegan-AtoB/1/model.onnx
    triton/cyclegan-BtoA/...

so that ``tritonserver --model-repository triton`` (or KServe's Triton runtime with
``storageUri`` at that folder) serves the same two models as ``cyclegan serve``: the names
``<serve.model_name>-AtoB``/``-BtoA``, the ONNX graph's input and output names, datatypes and
shapes (batch, height and width dynamic), version 1. A client written for one works against
the other. The difference: ``cyclegan serve`` pads any image to the model's size multiple and
crops back; Triton runs the graph as it is, so there sides must already be multiples of the
model's ``size_multiple`` (4 for the ResNet generators) and at least its ``min_size``.

``config.pbtxt`` (Triton's model configuration, text protobuf) follows the ``serve:`` section:
``max_batch_size`` and ``dynamic_batching`` from the server's batching keys, one instance
per GPU (``KIND_GPU``), ``cudnn_conv_algo_search`` for ONNX Runtime's CUDA provider, and, when
``serve.provider`` is tensorrt, the TensorRT accelerator (``precision_mode`` FP16 with
``serve.trt_fp16``). No explicit TensorRT shape profile: Triton cannot refuse an image
outside one (``cyclegan serve`` does), so ONNX Runtime's own rule applies there, which
widens the engine's profile when a larger input arrives.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import UserError
from ..layout import DIRECTIONS, Export, TritonRepository, served_model_name
from ..utils import atomic_write_text, sha256_file

PLATFORM = "onnxruntime_onnx"
# cudnn_conv_algo_search as the ONNX Runtime backend's model parameter takes it
CONV_ALGO_SEARCH = {"EXHAUSTIVE": "0", "HEURISTIC": "1", "DEFAULT": "2"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TritonSettings:
    """The ``serve:`` keys the repository follows. The defaults are ``serving/config.py``'s
    (a test checks that they agree); ``cyclegan export`` passes the validated section."""
    model_name: str = "cyclegan"
    max_batch_size: int = 8
    max_batch_delay_ms: float = 5.0
    provider: str = "cpu"
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    trt_fp16: bool = False

    @classmethod
    def serve_keys(cls) -> tuple[str, ...]:
        """The ``serve.*`` params the repository depends on (the export step's DVC params)."""
        return tuple(f"serve.{f.name}" for f in fields(cls))

    @classmethod
    def from_serve(cls, serve: dict | None) -> TritonSettings:
        """The settings in a (validated) ``serve:`` section; other keys are not Triton's business."""
        serve = serve or {}
        return cls(**{f.name: serve[f.name] for f in fields(cls) if f.name in serve})

    def checked(self) -> TritonSettings:
        """Self, once the names are known to make Triton model folders (before any export work)."""
        if not _NAME.fullmatch(self.model_name):
            raise UserError(f"serve.model_name: {self.model_name!r} cannot name a Triton model folder "
                            "(letters, digits, '_', '.', '-')")
        return self


def _onnx_types() -> dict[int, str]:
    import onnx

    return {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
            onnx.TensorProto.UINT8: "TYPE_UINT8"}


def tensor_config(value) -> dict:
    """One graph input or output as Triton declares it: name, data type, and the dimensions
    after the batch (which ``max_batch_size`` > 0 makes implicit), -1 where dynamic."""
    tensor = value.type.tensor_type
    data_type = _onnx_types().get(tensor.elem_type)
    if data_type is None:
        raise UserError(f"{value.name}: ONNX element type {tensor.elem_type} has no Triton datatype here")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return {"name": value.name, "data_type": data_type, "dims": dims[1:]}


def _tensor_block(kind: str, tensors: list[dict]) -> str:
    entries = ",\n".join(f'  {{\n    name: "{t["name"]}"\n    data_type: {t["data_type"]}\n'
                         f'    dims: [ {", ".join(map(str, t["dims"]))} ]\n  }}' for t in tensors)
    return f"{kind} [\n{entries}\n]\n"


def config_text(name: str, model_path: Path, settings: TritonSettings) -> str:
    """``config.pbtxt`` of the model ``name`` whose graph is ``model_path``."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    inputs = [tensor_config(v) for v in graph.input if v.name not in initializers]
    outputs = [tensor_config(v) for v in graph.output]
    delay_us = int(round(settings.max_batch_delay_ms * 1000))
    text = (f"# Written by cyclegan export from params.yaml serve: (model_name, max_batch_size, max_batch_delay_ms,\n"
            f"# provider, cudnn_conv_algo_search, trt_fp16); see training/export/triton.py.\n"
            f'name: "{name}"\nplatform: "{PLATFORM}"\nmax_batch_size: {settings.max_batch_size}\n'
            + _tensor_block("input", inputs) + _tensor_block("output", outputs)
            + f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay_us}\n}}\n"
            + "instance_group [\n  {\n    count: 1\n    kind: KIND_GPU\n  }\n]\n"
            + 'parameters {\n  key: "cudnn_conv_algo_search"\n'
            + f'  value: {{ string_value: "{CONV_ALGO_SEARCH[settings.cudnn_conv_algo_search]}" }}\n}}\n')
    if settings.provider == "tensorrt":
        precision = "FP16" if settings.trt_fp16 else "FP32"
        text += ("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator [\n"
                 '      {\n        name: "tensorrt"\n'
                 f'        parameters {{ key: "precision_mode" value: "{precision}" }}\n'
                 "      }\n    ]\n  }\n}\n")
    return text


def write_repository(export_dir: str | Path, settings: TritonSettings, variant: str = "fp32") -> dict:
    """Write ``Export(export_dir).triton`` from the exported ``variant`` models; returns the
    report entry (models, files and their hashes)."""
    export = Export(export_dir)
    repository = TritonRepository(export.triton)
    settings.checked()
    if repository.root.exists():
        shutil.rmtree(repository.root)   # an export folder is written whole; never mix two repositories
    report: dict = {"path": repository.root.name, "variant": variant, "platform": PLATFORM, "models": {}}
    for direction in DIRECTIONS:
        source = export.onnx(direction, variant)
        if not source.is_file():
            raise UserError(f"{source}: missing; export.triton_variant {variant} needs this model exported")
        name = served_model_name(settings.model_name, direction)
        target = repository.model_file(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        atomic_write_text(repository.config(name), config_text(name, target, settings))
        report["models"][name] = {"direction": direction, "source": source.name,
                                  "model_sha256": sha256_file(target),
                                  "config_sha256": sha256_file(repository.config(name))}
    return report
