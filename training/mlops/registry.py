"""Model registry: register a version, gate its promotion to ``champion``, roll back.

The flow of ``cyclegan register --model EXPORT_DIR --metrics METRICS.json [--promote]``:
  1. The pipeline's run gets the evaluate and export parts if they are not there yet
     (``tracking.py``), so the run holds the metrics and the pyfunc model with both graphs.
  2. The model is registered under ``register.model_name`` unless a version with the same
     ONNX graphs (tag ``onnx_sha256``) exists: registering twice changes nothing. The version
     carries the metrics (``metric.<name>`` tags), the test manifest hash and the lineage tags,
     and gets the alias ``challenger``.
  3. The gate compares the challenger with the champion, metric by metric (``decide``). The
     champion's figures come from its tags when its test manifest hash equals the
     challenger's; otherwise the champion is re-evaluated on the challenger's test set first.
  4. The decision file lists each metric, rule, threshold, champion value and verdict; it is
     written atomically and logged to the run.
  5. With ``--promote`` and a passing gate, ``champion`` moves to the new version. A failed
     gate leaves it where it was. Promoting the champion again is a no-op.

The trail of who was champion when lives in model version tags: ``previous_champion`` (the
version a promotion replaced, which ``--rollback`` restores) and ``champion_trail``, a JSON list
of events (promoted, demoted, rolled back, restored) with UTC times and the user.
"""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import tracking
from ..config import Config
from ..errors import UserError
from ..layout import Evaluation, Export, Registration
from ..utils import atomic_write_json
from .gate import decide

CHAMPION, CHALLENGER = "champion", "challenger"
TRAIL_MAX_CHARS = 5000   # MLflow's limit on a tag value


# -- registry helpers -------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _user() -> str:
    import getpass

    try:
        return os.environ.get("CYCLEGAN_USER") or getpass.getuser()
    except Exception:  # no passwd entry inside some containers
        return "unknown"


def alias_version(mlc, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlc.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _versions(mlc, name: str) -> list:
    return list(mlc.search_model_versions(f"name = '{name}'"))


def _append_trail(mlc, name: str, version: str, event: str, **details) -> None:
    mv = mlc.get_model_version(name, version)
    trail = json.loads(mv.tags.get("champion_trail", "[]"))
    trail.append({"event": event, "at": _now(), "by": _user(), **details})
    text = json.dumps(trail)
    while len(text) > TRAIL_MAX_CHARS and len(trail) > 1:  # keep the newest events
        trail.pop(0)
        text = json.dumps(trail)
    mlc.set_model_version_tag(name, version, "champion_trail", text)


def trail(mlc, name: str, version: str) -> list[dict]:
    return json.loads(mlc.get_model_version(name, version).tags.get("champion_trail", "[]"))


def _move_champion(mlc, name: str, new: str, old: str | None, event: str, reason: str) -> None:
    """Point ``champion`` at ``new`` and record both sides of the change in the trail."""
    mlc.set_registered_model_alias(name, CHAMPION, new)
    if old is not None:
        _append_trail(mlc, name, old, "demoted" if event == "promoted" else "rolled back",
                      replaced_by=new, reason=reason)
    _append_trail(mlc, name, new, event, replaced=old, reason=reason)


# -- registration -----------------------------------------------------------------------------

def register_version(cfg: Config, run_id: str, model_uri: str, onnx_digest: str, metrics: dict[str, Any],
                     data_dir: str | Path | None = None):
    """The model version holding these graphs: found by ``onnx_sha256``, else registered."""
    import mlflow

    mlc = tracking.client(cfg)
    name = cfg.register.model_name
    for mv in _versions(mlc, name):
        if mv.tags.get("onnx_sha256") == onnx_digest:
            return mv
    tags = {"onnx_sha256": onnx_digest, "run_id": run_id, **tracking.lineage_tags(cfg, data_dir)}
    run_tags = mlc.get_run(run_id).data.tags
    for key in ("data_manifest_sha256", "container_image", "git_commit"):
        if key in run_tags and key not in tags:  # lineage recorded by the train step
            tags[key] = run_tags[key]
    if isinstance(metrics.get("test_manifest_sha256"), str):
        tags["test_manifest_sha256"] = metrics["test_manifest_sha256"]
    for key, value in tracking.numeric_metrics(metrics).items():
        tags[f"metric.{key}"] = repr(value)
    tags.pop("mlflow.source.git.commit", None)
    mv = mlflow.register_model(model_uri, name, tags=tags)
    return mlc.get_model_version(name, mv.version)


def version_metrics(mv) -> dict[str, float]:
    return {k[len("metric."):]: float(v) for k, v in mv.tags.items() if k.startswith("metric.")}


def champion_metrics(cfg: Config, champion, test_manifest: str | None,
                     data_dir: str | Path | None) -> tuple[dict[str, Any], str]:
    """The champion's figures on the challenger's test set, and where they came from."""
    if test_manifest is not None and champion.tags.get("test_manifest_sha256") == test_manifest:
        return version_metrics(champion), "registry tags (same test manifest)"
    if data_dir is None:
        raise UserError(f"champion version {champion.version} was evaluated on test manifest "
                        f"{champion.tags.get('test_manifest_sha256', 'unknown')}, not {test_manifest}; "
                        "pass --data DIR so it can be re-evaluated on the new test set")
    return reevaluate(cfg, champion, data_dir), "re-evaluated on the challenger's test set"


def reevaluate(cfg: Config, mv, data_dir: str | Path) -> dict[str, Any]:
    """Evaluate a registered version on ``data_dir``'s test split with ``cyclegan evaluate``'s
    library, from the generator weights the version carries (``Export.GENERATORS``, the source of
    its verified ONNX graphs)."""
    import mlflow

    from ..evaluation.evaluate import evaluate

    uri = f"models:/{cfg.register.model_name}/{mv.version}"
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        found = sorted(local.rglob(Export.GENERATORS))
        if not found:
            raise UserError(f"{uri}: carries no {Export.GENERATORS}, so it cannot be re-evaluated on the "
                            "new test set (it was logged without --checkpoint)")
        summary = evaluate(cfg, str(data_dir), str(found[0]), str(Path(tmp) / "eval"), progress=False)
        return dict(summary["metrics"])


# -- the command's library calls --------------------------------------------------------------

def register(cfg: Config, export_dir: str | Path, metrics_path: str | Path, *, promote: bool = False,
             run_id_file: str | Path | None = None, data_dir: str | Path | None = None,
             checkpoint: str | Path | None = None, out: str | Path = "runs/register") -> dict[str, Any]:
    """Register the exported model, run the gate, promote if asked and passed; see the module doc."""
    metrics = tracking.read_metrics(metrics_path)
    missing = [m for m in cfg.register.gate_metrics if m not in metrics]
    if missing:
        raise UserError(f"{metrics_path}: missing gate metric(s) {', '.join(missing)} "
                        "(register.gate_metrics names them)")
    paths = tracking.onnx_paths(export_dir)
    digest = tracking.files_sha256(paths)
    run_id = tracking.resolve_run(cfg, run_id_file)
    mlc = tracking.client(cfg)
    eval_dir = Path(metrics_path).parent
    if Evaluation(eval_dir).metrics.resolve() == Path(metrics_path).resolve():
        tracking.log_evaluate(cfg, run_id, eval_dir)
    model_uri = tracking.log_export(cfg, run_id, export_dir, checkpoint)
    name = cfg.register.model_name
    mv = register_version(cfg, run_id, model_uri, digest, metrics, data_dir)
    version = str(mv.version)
    mlc.set_registered_model_alias(name, CHALLENGER, version)

    champion = alias_version(mlc, name, CHAMPION)
    test_manifest = metrics.get("test_manifest_sha256")
    if champion is None:
        champ_values, source = None, "no champion yet"
    elif str(champion.version) == version:
        champ_values, source = version_metrics(champion), "the challenger is already the champion"
    else:
        champ_values, source = champion_metrics(cfg, champion, test_manifest, data_dir)
    gate = decide(metrics, champ_values, cfg.register)

    if champion is not None and str(champion.version) == version:
        action = "none: already champion"
    elif not promote:
        action = "none: --promote not given"
    elif gate["passed"]:
        _move_champion(mlc, name, version, str(champion.version) if champion else None, "promoted",
                       reason=f"gate passed ({len(gate['metrics'])} metrics)")
        if champion is not None:
            mlc.set_model_version_tag(name, version, "previous_champion", str(champion.version))
        action = "promoted"
    else:
        action = "none: gate failed, champion unchanged"
    now_champion = alias_version(mlc, name, CHAMPION)
    decision = {
        "model_name": name,
        "challenger_version": version,
        "champion_version": str(champion.version) if champion else None,
        "champion_after": str(now_champion.version) if now_champion else None,
        "test_manifest_sha256": test_manifest,
        "champion_metrics_source": source,
        "verdict": "pass" if gate["passed"] else "fail",
        "promote_requested": promote,
        "action": action,
        "run_id": run_id,
        "metrics": gate["metrics"],
    }
    mlc.set_model_version_tag(name, version, "gate_verdict", decision["verdict"])
    out_path = Registration(out).decision
    atomic_write_json(out_path, decision)
    mlc.log_artifact(run_id, str(out_path))
    tracking.end_run(cfg, run_id)
    return decision


def rollback(cfg: Config, out: str | Path | None = None) -> dict[str, Any]:
    """Move ``champion`` back to the version the current champion replaced."""
    mlc = tracking.client(cfg)
    name = cfg.register.model_name
    current = alias_version(mlc, name, CHAMPION)
    if current is None:
        raise UserError(f"register.model_name: model '{name}' has no champion to roll back")
    previous = current.tags.get("previous_champion")
    if not previous:
        raise UserError(f"models:/{name}@{CHAMPION} (version {current.version}) replaced no earlier "
                        "champion; there is nothing to roll back to")
    _move_champion(mlc, name, previous, str(current.version), "restored",
                   reason=f"rollback from version {current.version}")
    result = {"model_name": name, "action": "rolled back", "from_version": str(current.version),
              "champion_after": previous, "at": _now(), "by": _user()}
    if out is not None:
        atomic_write_json(Registration(out).rollback, result)
    return result


def status(cfg: Config) -> dict[str, Any]:
    """Aliases and each version's trail, for ``cyclegan register --status``."""
    mlc = tracking.client(cfg)
    name = cfg.register.model_name
    versions = sorted(_versions(mlc, name), key=lambda mv: int(mv.version))
    aliases = {}
    for alias in (CHAMPION, CHALLENGER):
        mv = alias_version(mlc, name, alias)
        aliases[alias] = str(mv.version) if mv else None
    return {"model_name": name, "aliases": aliases,
            "versions": [{"version": str(mv.version), "gate_verdict": mv.tags.get("gate_verdict"),
                          "previous_champion": mv.tags.get("previous_champion"),
                          "trail": json.loads(mv.tags.get("champion_trail", "[]"))} for mv in versions]}
