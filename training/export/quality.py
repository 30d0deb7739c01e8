"""What export records for serving's quality signal: each generator's out-of-domain threshold.

The evaluation measures it (``ood_cycle_psnr_A``/``_B``: a low percentile of per-image cycle
PSNR on the test split, ``evaluation/specs.py``); ``cyclegan export --metrics`` (the evaluation's
metrics file) copies it into the metadata of the generator whose input domain it was measured on, as
``quality_threshold_db``. Serving reports a translation's cycle PSNR and flags it out of domain
below that (``serving/quality.py``, which reads the key by the same name).

Taking the evaluation's figure rather than recomputing it keeps one measurement: the one the
report shows and MLflow logs. The evaluation records which checkpoint it measured
(``layout.Evaluation.info`` beside the metrics); a threshold of another checkpoint is refused.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import UserError
from ..layout import Evaluation

THRESHOLD_KEY = "quality_threshold_db"


def thresholds(metrics_uri: str, data_direction: str, checkpoint_sha256: str) -> dict[str, dict[str, str]]:
    """direction -> the metadata entries that direction's model gets from the evaluation's
    metrics at ``metrics_uri`` (local or s3://). ``data_direction`` is the checkpoint's
    ``data.direction``: with BtoA its G_A (the AtoB model) reads folder B, so testB's figure
    is the AtoB model's."""
    from .. import storage

    try:
        metrics = json.loads(storage.read_bytes(metrics_uri))
    except ValueError as e:
        raise UserError(f"{metrics_uri}: not valid JSON ({e})") from None
    if not isinstance(metrics, dict):
        raise UserError(f"{metrics_uri}: expected a JSON object of metrics")
    _same_checkpoint(metrics_uri, checkpoint_sha256)
    source = {"AtoB": "A", "BtoA": "B"} if data_direction == "AtoB" else {"AtoB": "B", "BtoA": "A"}
    percentile = metrics.get("ood_percentile", "?")
    out = {}
    for direction, domain in source.items():
        key = f"ood_cycle_psnr_{domain}"
        value = metrics.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise UserError(f"{metrics_uri}: {key} is missing or not a number (evaluated before the out-of-domain "
                            "threshold existed? run cyclegan evaluate again)")
        out[direction] = {
            THRESHOLD_KEY: f"{float(value):.4f}",
            "quality_threshold_source": f"evaluate: {percentile}th percentile of per-image cycle PSNR over "
                                        f"test{domain} ({metrics.get(f'n_test_{domain}', '?')} images)",
        }
    return out


def _same_checkpoint(metrics_uri: str, checkpoint_sha256: str) -> None:
    """Refuse the metrics of an evaluation of another checkpoint, when its info file says so."""
    from .. import storage

    info_uri = str(Evaluation(_parent(metrics_uri)).info)
    if storage.is_remote(metrics_uri):
        info_uri = storage.join(_parent(metrics_uri), Path(info_uri).name)
    if not storage.exists(info_uri):
        return
    try:
        evaluated = json.loads(storage.read_bytes(info_uri)).get("checkpoint_sha256")
    except (ValueError, AttributeError):
        return
    if evaluated and evaluated != checkpoint_sha256:
        raise UserError(f"{metrics_uri}: these metrics are of checkpoint {evaluated[:12]}..., not of the one being "
                        f"exported ({checkpoint_sha256[:12]}...); evaluate this checkpoint first")


def _parent(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0] if "/" in uri.rstrip("/") else "."
