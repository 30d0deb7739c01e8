"""Find the exported generators behind a model address.

Accepted addresses:
  * ``path/to/G_AtoB.onnx``: one model file; its direction comes from its metadata
  * ``path/to/export``: a folder written by ``cyclegan export`` (searched recursively)
  * ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: a registered MLflow model version;
    its artifacts are downloaded and ``G_AtoB.onnx`` / ``G_BtoA.onnx`` are found anywhere
    inside (the registry keeps both generators in one model version).

The tracking/registry URI is MLflow's usual one (``MLFLOW_TRACKING_URI``), else
``register.tracking_uri`` from ``params.yaml``.
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

from training.errors import UserError

DIRECTIONS = ("AtoB", "BtoA")
VARIANTS = ("fp32", "int8", "uint8")


def file_name(direction: str, variant: str = "fp32") -> str:
    """The names ``cyclegan export`` writes (kept in step with ``training.export.variant_name``)."""
    return f"G_{direction}.onnx" if variant == "fp32" else f"G_{direction}_{variant}.onnx"


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
            raise UserError(f"{self.uri}: has no {direction} generator (found: {have})")
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


def _metadata_direction(path: Path) -> str | None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise UserError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None
    props = {p.key: p.value for p in model.metadata_props}
    return props.get("direction")


def find_models(folder: Path, variant: str = "fp32") -> dict[str, Path]:
    """direction -> the shallowest ``G_<direction>[_variant].onnx`` under ``folder``."""
    found = {}
    for direction in DIRECTIONS:
        matches = sorted(folder.rglob(file_name(direction, variant)), key=lambda p: (len(p.parts), str(p)))
        if matches:
            found[direction] = matches[0]
    return found


def default_tracking_uri() -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from training.config import load_config

    return load_config("params.yaml").register.tracking_uri


_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


def resolve_registry(uri: str, variant: str = "fp32", tracking_uri: str | None = None,
                     dst: str | Path | None = None) -> ModelInfo:
    match = _MODELS_URI.match(uri)
    if not match:
        raise UserError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
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
        raise UserError(f"{uri}: not found in the MLflow registry at {tracking_uri} ({e.message.splitlines()[0][:200]})") from None
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
            raise UserError(f"{uri}: cannot download version {mv.version} "
                            f"({e.message.splitlines()[0][:200]})") from None
        files = find_models(Path(local), variant)
        if not files:
            raise UserError(f"{uri}: version {mv.version} has no {file_name('AtoB', variant)} or "
                            f"{file_name('BtoA', variant)} among its artifacts")
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
        raise UserError(f"serve.variant: {variant!r} is not one of {', '.join(VARIANTS)}")
    text = str(uri)
    if text.startswith("models:/"):
        return resolve_registry(text, variant, tracking_uri, dst)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix != ".onnx":
            raise UserError(f"{path}: expected an .onnx file, an export folder or models:/NAME@ALIAS")
        direction = _metadata_direction(path)
        if direction not in DIRECTIONS:  # a foreign file: fall back to the exporter's file name
            direction = next((d for d in DIRECTIONS if path.name.startswith(f"G_{d}")), None)
        if direction is None:
            raise UserError(f"{path}: cannot tell its direction (no 'direction' metadata, name not G_AtoB/G_BtoA)")
        return ModelInfo(uri=text, files={direction: path})
    if path.is_dir():
        files = find_models(path, variant)
        if not files:
            raise UserError(f"{path}: no {file_name('AtoB', variant)} or {file_name('BtoA', variant)} in this folder")
        return ModelInfo(uri=text, files=files)
    raise UserError(f"{path}: model not found (expected an .onnx file, an export folder or models:/NAME@ALIAS)")
