"""Find the exported generators behind a model address.

Accepted addresses:
  * ``path/to/model.onnx``: one model file; its direction comes from its metadata
  * ``path/to/export``: a folder written by ``cyclegan export`` (searched recursively)
  * ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: a registered MLflow model version;
    its artifacts are downloaded and both generators are found anywhere inside (the registry
    keeps both in one model version).

Models are recognised by what they say about themselves: ``cyclegan export`` records each
model's ``direction`` and ``variant`` in its ONNX metadata, so serving needs no file names.

The tracking/registry URI is the one ``cyclegan serve`` passes (``MLFLOW_TRACKING_URI``,
else ``register.tracking_uri``), else MLflow's own default.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ServingError

DIRECTIONS = ("AtoB", "BtoA")
VARIANTS = ("fp32", "int8", "uint8", "fp16")
INT8_OPS = {"QLinearConv", "QuantizeLinear", "DequantizeLinear", "ConvInteger"}


@dataclass
class ModelInfo:
    """Where each direction's ONNX file is, and which registered version it came from."""

    uri: str
    files: dict[str, Path] = field(default_factory=dict)   # direction -> local .onnx
    name: str | None = None          # registered model name (models:/ only)
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    download_dir: Path | None = None  # a private temporary download this object owns (models:/ only)

    def path(self, direction: str) -> Path:
        if direction not in self.files:
            have = ", ".join(self.files) or "none"
            raise ServingError(f"{self.uri}: has no {direction} generator (found: {have})")
        return self.files[direction]

    def cleanup(self) -> None:
        """Remove the private download, if any (idempotent). ``cyclegan serve`` calls it on every
        exit path; the atexit hook only covers a normal interpreter exit."""
        if self.download_dir is not None:
            shutil.rmtree(self.download_dir, ignore_errors=True)

    def describe(self) -> dict[str, str]:
        """Registry fields for logs and the model metadata endpoint."""
        out = {"model_uri": self.uri}
        for key in ("name", "version", "alias", "run_id"):
            if getattr(self, key):
                out[f"registry_{key}"] = str(getattr(self, key))
        return out


def describe_file(path: Path) -> tuple[str | None, str]:
    """(direction, variant) an exported model says it is in its metadata. Models exported
    before the variant was recorded: uint8 input means the uint8 variant, quantised
    operators the int8 one, float16 weights the fp16 one, anything else fp32."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ServingError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None
    props = {p.key: p.value for p in model.metadata_props}
    variant = props.get("variant")
    if variant is None:
        elem = model.graph.input[0].type.tensor_type.elem_type if model.graph.input else 0
        if elem == onnx.TensorProto.UINT8:
            variant = "uint8"
        elif any(node.op_type in INT8_OPS for node in model.graph.node):
            variant = "int8"
        elif any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
            variant = "fp16"
        else:
            variant = "fp32"
    return props.get("direction"), variant


def find_models(folder: Path, variant: str = "fp32") -> dict[str, Path]:
    """direction -> the shallowest ONNX model under ``folder`` whose metadata names that
    direction and ``variant`` (what ``cyclegan export`` records in every model it writes)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.onnx"), key=lambda p: (len(p.parts), str(p))):
        direction, kind = describe_file(path)
        if direction in DIRECTIONS and kind == variant and direction not in found:
            found[direction] = path
    return found


def default_tracking_uri() -> str:
    """MLflow's own rule: ``MLFLOW_TRACKING_URI``, else its default store (``cyclegan serve``
    passes ``register.tracking_uri`` from params.yaml explicitly)."""
    import mlflow

    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


def resolve_registry(uri: str, variant: str = "fp32", tracking_uri: str | None = None,
                     dst: str | Path | None = None) -> ModelInfo:
    match = _MODELS_URI.match(uri)
    if not match:
        raise ServingError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, alias, version = match["name"], match["alias"], match["version"]
    tracking_uri = tracking_uri or default_tracking_uri()
    registry_uri = os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as e:
        raise ServingError(f"{uri}: not found in the MLflow registry at {tracking_uri} ({e.message.splitlines()[0][:200]})") from None
    private = None
    if dst is None:  # a private download: removed by ModelInfo.cleanup, else at interpreter exit
        dst = private = Path(tempfile.mkdtemp(prefix=f"cyclegan-{name}-v{mv.version}-"))
        atexit.register(shutil.rmtree, private, ignore_errors=True)
    try:
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        try:
            # The version's own storage location, fetched with our client: mlflow 3.17's models:/
            # download resolves the name against the process-wide registry URI, not the one given.
            source = client.get_model_version_download_uri(name, mv.version)
            with _process_uris(tracking_uri, registry_uri, needed=source.startswith(("models:/", "runs:/"))):
                local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                           tracking_uri=tracking_uri, registry_uri=registry_uri)
        except MlflowException as e:
            raise ServingError(f"{uri}: cannot download version {mv.version} "
                               f"({e.message.splitlines()[0][:200]})") from None
        files = find_models(Path(local), variant)
        if not files:
            raise ServingError(f"{uri}: version {mv.version} has no {variant} generator among its artifacts")
    except BaseException:  # a failed download, or a signal turned into an exception meanwhile
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
        raise
    return ModelInfo(uri=uri, files=files, name=name, version=str(mv.version), alias=alias, run_id=mv.run_id,
                     download_dir=private)


@contextlib.contextmanager
def _process_uris(tracking_uri: str, registry_uri: str, needed: bool):
    """Point MLflow's process-wide URIs at ours for a download that only reads those, then
    put them (and their environment variables) back."""
    if not needed:
        yield
        return
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri,
             {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")})
    tracking_utils._tracking_uri, registry_utils._registry_uri = tracking_uri, registry_uri
    os.environ.update(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_REGISTRY_URI=registry_uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved[0], saved[1]
        for key, value in saved[2].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def resolve_model(uri: str | Path, variant: str = "fp32", tracking_uri: str | None = None,
                  dst: str | Path | None = None) -> ModelInfo:
    """An ONNX file, an export folder or a ``models:/`` address -> :class:`ModelInfo`."""
    if variant not in VARIANTS:
        raise ServingError(f"serve.variant: {variant!r} is not one of {', '.join(VARIANTS)}")
    text = str(uri)
    if text.startswith("models:/"):
        return resolve_registry(text, variant, tracking_uri, dst)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix != ".onnx":
            raise ServingError(f"{path}: expected an .onnx file, an export folder or models:/NAME@ALIAS")
        direction, _ = describe_file(path)
        if direction not in DIRECTIONS:
            raise ServingError(f"{path}: cannot tell its direction (its metadata has no 'direction' AtoB or BtoA; "
                               "cyclegan export records it)")
        return ModelInfo(uri=text, files={direction: path})
    if path.is_dir():
        files = find_models(path, variant)
        if not files:
            raise ServingError(f"{path}: no {variant} generator (an ONNX model whose metadata names its direction "
                               "and variant, as cyclegan export writes) in this folder")
        return ModelInfo(uri=text, files=files)
    raise ServingError(f"{path}: model not found (expected an .onnx file, an export folder or models:/NAME@ALIAS)")
