"""Model registry: register a version, gate its promotion to ``champion``, roll back.

The flow of ``cyclegan register --model EXPORT_DIR --metrics METRICS.json [--promote]``:
  1. The pipeline's run gets the evaluate and export parts if they are not there yet
     (``tracking.py``), so the run holds the metrics and the pyfunc model with both graphs.
  2. The model is registered under ``register.model_name`` unless a version with the same
     ONNX graphs (tag ``onnx_sha256``) exists: registering twice changes nothing. The version's
     tags hold lineage (run, data and test manifest hashes, commit, image, licence, the selected
     epoch) and what automation filters on: ``onnx_sha256``, the ``evaluation_fingerprint``, the
     gate's verdict and trail, and one compact tag ``evaluation.<fingerprint>`` with the gateable
     figures the gate reads later (all metrics are on the run). It gets the alias ``challenger``.
  3. The champion's figures are needed on the challenger's evaluation fingerprint (what exactly
     was measured: ``evaluation/evaluate.py``). Stored figures are reused only on an equal
     fingerprint and when every gate metric is there and finite; otherwise the champion is
     re-evaluated like the challenger (the settings of its evaluation info file, ``--data``) from the
     generators it carries. A re-evaluation is kept on the version (tag
     ``evaluation.<fingerprint>``), so the next challenger measured the same way reuses it.
     A champion that cannot be re-evaluated, or whose re-evaluation still measures something
     else, fails the gate with the reason; without ``--data`` it is an error.
  4. The gate compares metric by metric (``gate.decide``) against the champion and against the
     best value any promoted version reached on the same fingerprint. Promoted means champion
     now, or once and not rolled back since (the ``champion_trail``). When the fingerprint is
     new, the versions that held the best values of the previous one (registered-model tag
     ``gate.reference``) are re-evaluated too, so a new test set does not reset the bound.
  5. The decision file lists each metric, rule, threshold, champion value, best promoted value
     and verdict, the fingerprints compared and the reasons for a failure; it is written
     atomically and logged to the run.
  6. With ``--promote`` and a passing gate, ``champion`` moves to the new version. A failed
     gate leaves it where it was. Promoting the champion again is a no-op.
  7. The version's description becomes its model card (``card.py``): data set, epochs, the
     selected checkpoint, the headline metrics against the champion and the untranslated
     baseline, the verdict, a link to the report, the fingerprint.

Versions registered before the card kept their figures as ``metric.<name>`` tags; the gate
still reads those.

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
from .card import model_card
from ..config import Config
from ..errors import UserError
from ..evaluation.specs import FINGERPRINT, METRICS, gateable
from ..layout import Evaluation, Export, Registration
from ..utils import atomic_write_json
from .gate import finite, decide

CHAMPION, CHALLENGER = "champion", "challenger"
TRAIL_MAX_CHARS = 5000   # MLflow's limit on a tag value
# a version's gateable figures under an evaluation fingerprint (its own evaluation's, or a later
# re-evaluation's): + fingerprint
EVALUATION_TAG = "evaluation."
LEGACY_METRIC_TAG = "metric."   # one tag per figure, on versions registered before the model card
# run tags a version inherits when the registration itself does not know them
RUN_LINEAGE = ("data_manifest_sha256", "container_image", "git_commit")
SELECTION_LINEAGE = ("selected_epoch", "selection_mode", "selection_metric")
# registered-model tag: the fingerprint of the last comparison and who held the best values then
REFERENCE_TAG = "gate.reference"


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

def gate_figures(metrics: dict[str, Any]) -> str:
    """The compact tag value: the gateable figures of an evaluation (JSON)."""
    return json.dumps({k: v for k, v in tracking.numeric_metrics(metrics).items() if k in gateable()})


def register_version(cfg: Config, run_id: str, model_uri: str, onnx_digest: str, metrics: dict[str, Any],
                     data_dir: str | Path | None = None, selection: dict[str, str] | None = None):
    """The model version holding these graphs: found by ``onnx_sha256``, else registered.
    ``selection``: the registered checkpoint's selection tags (``tracking.selection_tags``); None
    (no checkpoint given) takes the run's, which the select step set."""
    import mlflow

    mlc = tracking.client(cfg)
    name = cfg.register.model_name
    for mv in _versions(mlc, name):
        if mv.tags.get("onnx_sha256") == onnx_digest:   # measured again, maybe another way: keep that too
            record_measurement(mlc, name, mv, metrics)
            return mlc.get_model_version(name, mv.version)
    tags = {"onnx_sha256": onnx_digest, "run_id": run_id, **tracking.lineage_tags(cfg, data_dir),
            **(selection or {})}
    run_tags = mlc.get_run(run_id).data.tags
    for key in RUN_LINEAGE + (SELECTION_LINEAGE if selection is None else ()):
        if key in run_tags and key not in tags:  # lineage recorded by the train and select steps
            tags[key] = run_tags[key]
    for key in ("test_manifest_sha256", FINGERPRINT):
        if isinstance(metrics.get(key), str):
            tags[key] = metrics[key]
    if isinstance(metrics.get(FINGERPRINT), str):
        tags[EVALUATION_TAG + metrics[FINGERPRINT]] = gate_figures(metrics)
    tags.pop("mlflow.source.git.commit", None)
    mv = mlflow.register_model(model_uri, name, tags=tags)
    return mlc.get_model_version(name, mv.version)


def legacy_metrics(mv) -> dict[str, float]:
    """The ``metric.<name>`` tags of a version registered before the model card."""
    return {k[len(LEGACY_METRIC_TAG):]: float(v) for k, v in mv.tags.items() if k.startswith(LEGACY_METRIC_TAG)}


def measurement(mv, fingerprint: str) -> dict[str, float] | None:
    """A version's figures under ``fingerprint``: its own evaluation's or a later re-evaluation's
    (tag ``evaluation.<fingerprint>``; an older version's own are its ``metric.*`` tags); None when
    it was never measured that way."""
    raw = mv.tags.get(EVALUATION_TAG + fingerprint)
    if raw is None:
        return legacy_metrics(mv) if mv.tags.get(FINGERPRINT) == fingerprint else None
    try:
        values = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(values, dict):
        return None
    return {k: float(v) for k, v in values.items() if finite(v) is not None}


def record_measurement(mlc, name: str, mv, metrics: dict[str, Any]) -> None:
    """Keep the gateable figures of an evaluation of ``mv`` under its fingerprint on the version,
    unless they are its own evaluation's."""
    fingerprint = metrics.get(FINGERPRINT)
    if not isinstance(fingerprint, str) or mv.tags.get(FINGERPRINT) == fingerprint:
        return
    mlc.set_model_version_tag(name, str(mv.version), EVALUATION_TAG + fingerprint, gate_figures(metrics))


def counts_as_promoted(mv, champion_version: str | None) -> bool:
    """Champion now, or champion once and not rolled back since: its figures set the bar."""
    if champion_version is not None and str(mv.version) == champion_version:
        return True
    events = json.loads(mv.tags.get("champion_trail", "[]"))
    return bool(events) and events[-1].get("event") != "rolled back"


def best_promoted(versions: list, fingerprint: str, names: list[str],
                  champion_version: str | None) -> dict[str, dict[str, Any]]:
    """Per metric, the best value a promoted version reached under ``fingerprint`` and which."""
    best: dict[str, dict[str, Any]] = {}
    for mv in sorted(versions, key=lambda v: int(v.version)):
        values = measurement(mv, fingerprint) if counts_as_promoted(mv, champion_version) else None
        for name in names if values else ():
            value = finite(values.get(name))
            if value is None:
                continue
            held = best.get(name)
            if held is None or (value < held["value"] if METRICS[name].lower_is_better else value > held["value"]):
                best[name] = {"value": value, "version": str(mv.version)}
    return best


def reevaluate(cfg: Config, mv, data_dir: str | Path) -> dict[str, Any]:
    """Evaluate a registered version on ``data_dir``'s test split with ``cyclegan evaluate``'s
    library, from the generator weights the version carries (``Export.GENERATORS``, the source of
    its verified ONNX graphs). Returns the evaluation's summary: ``metrics`` (with the
    ``evaluation_fingerprint``) and ``fingerprint_parts``."""
    import mlflow

    from ..evaluation.evaluate import evaluate

    uri = f"models:/{cfg.register.model_name}/{mv.version}"
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        found = sorted(local.rglob(Export.GENERATORS))
        if not found:
            raise UserError(f"{uri}: carries no {Export.GENERATORS}, so it cannot be re-evaluated "
                            "(it was registered without --checkpoint)")
        return evaluate(cfg, str(data_dir), str(found[0]), str(Path(tmp) / "eval"), progress=False)


def evaluate_like(cfg: Config, challenger_info: dict | None) -> Config:
    """``cfg`` with the challenger's ``evaluate:`` settings (from its evaluation info), so that a
    re-evaluation measures the same way; where caches live stays ours."""
    from pydantic import ValidationError

    settings = (challenger_info or {}).get("evaluate_config")
    if not isinstance(settings, dict):
        return cfg
    fields = type(cfg.evaluate).model_fields
    merged = {**cfg.evaluate.model_dump(), **{k: v for k, v in settings.items() if k in fields and k != "cache_dir"}}
    try:
        return cfg.model_copy(update={"evaluate": type(cfg.evaluate).model_validate(merged)})
    except ValidationError:   # written by another version of the code: measure with ours
        return cfg


def remeasure(cfg: Config, mlc, mv, fingerprint: str, data_dir: str | Path,
              challenger_parts: dict | None) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """Re-evaluate ``mv`` and keep the figures on it: (figures, their fingerprint, why they
    cannot be compared or None)."""
    from ..evaluation.evaluate import fingerprint_differences

    try:
        summary = reevaluate(cfg, mv, data_dir)
    except UserError as e:
        return None, None, f"version {mv.version} cannot be re-evaluated: {e}"
    figures = summary["metrics"]
    record_measurement(mlc, cfg.register.model_name, mv, figures)
    got = figures.get(FINGERPRINT)
    if got != fingerprint:
        parts = (", ".join(fingerprint_differences(challenger_parts, summary["fingerprint_parts"]))
                 if challenger_parts else "unknown: the challenger's evaluation info is not beside its metrics")
        return None, got, (f"version {mv.version} re-evaluated here measures something else than the challenger's "
                           f"evaluation (fingerprint {str(got)[:12]} vs {fingerprint[:12]}; parts that differ: {parts})")
    return figures, got, None


def _challenger_info(metrics_path: str | Path, fingerprint: str) -> dict | None:
    """The evaluation info beside the metrics (``layout.Evaluation``), if it belongs to them
    (same fingerprint)."""
    from ..evaluation.evaluate import fingerprint as fingerprint_of

    path = Evaluation(Path(metrics_path).parent).info
    try:
        info = json.loads(path.read_text())
        parts = info["fingerprint_parts"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if isinstance(parts, dict) and fingerprint_of(parts) == fingerprint else None


def _holes(values: dict[str, Any], names: list[str]) -> list[str]:
    return [n for n in names if finite(values.get(n)) is None]


def carry_reference(cfg: Config, mlc, fingerprint: str, champion_version: str | None, data_dir, info) -> list[str]:
    """Measure the versions that held the best values of the last comparison's fingerprint under
    this one too, so that a new test set does not reset the bound; returns notes on those that
    could not be."""
    name = cfg.register.model_name
    try:
        reference = json.loads(mlc.get_registered_model(name).tags.get(REFERENCE_TAG, "null")) or {}
    except ValueError:
        reference = {}
    if not reference or reference.get("fingerprint") == fingerprint:
        return []
    holders = sorted({str(e.get("version")) for e in reference.get("best", {}).values()}, key=int)
    notes = []
    for version in holders:
        mv = mlc.get_model_version(name, version)
        if not counts_as_promoted(mv, champion_version) or measurement(mv, fingerprint) is not None:
            continue
        if data_dir is None:
            notes.append(f"best-promoted version {version} not re-measured on this fingerprint: no --data")
            continue
        _, _, why = remeasure(evaluate_like(cfg, info), mlc, mv, fingerprint, data_dir,
                              (info or {}).get("fingerprint_parts"))
        if why:
            notes.append(f"best-promoted reference: {why}")
    return notes


def reevaluation_needed(champion, fingerprint: str, names: list[str]) -> str | None:
    """Why the champion's stored figures cannot be compared with the challenger's, or None."""
    stored = measurement(champion, fingerprint)
    if stored is None:
        return (f"champion version {champion.version} was measured under another evaluation fingerprint "
                f"({champion.tags.get(FINGERPRINT, 'none recorded')[:12]}, not {fingerprint[:12]})")
    if _holes(stored, names):
        return (f"champion version {champion.version}'s stored figures lack or have non-finite "
                f"{', '.join(_holes(stored, names))}")
    return None


def champion_figures(cfg: Config, mlc, champion, fingerprint: str, data_dir, info: dict | None
                     ) -> tuple[dict[str, Any] | None, str | None, str, str | None]:
    """The champion's figures on the challenger's fingerprint: (figures or None, their
    fingerprint, where they came from, why they cannot be compared or None)."""
    stored = measurement(champion, fingerprint)
    need = reevaluation_needed(champion, fingerprint, cfg.register.gate_metrics)
    if need is None:
        return stored, fingerprint, "registry tags (same evaluation fingerprint)", None
    if data_dir is None:
        raise UserError(f"{need}; pass --data DIR so it can be re-evaluated like the challenger")
    figures, got, why = remeasure(evaluate_like(cfg, info), mlc, champion, fingerprint, data_dir,
                                  (info or {}).get("fingerprint_parts"))
    if why:
        if stored is not None:   # comparable where not missing: each hole fails its own metric
            return stored, fingerprint, f"not re-evaluated: {need}; the stored figures where present", why
        return None, got, f"not re-evaluated: {need}", why
    return figures, got, f"re-evaluated like the challenger: {need}", None


def _keep_reference(mlc, cfg: Config, fingerprint: str) -> None:
    """Note on the registered model who holds the best values under this fingerprint now (after
    a promotion), so that a later comparison under another one can measure them again."""
    name = cfg.register.model_name
    champion = alias_version(mlc, name, CHAMPION)
    best = best_promoted(_versions(mlc, name), fingerprint, cfg.register.gate_metrics,
                         str(champion.version) if champion else None)
    if best:
        mlc.set_registered_model_tag(name, REFERENCE_TAG, json.dumps({"fingerprint": fingerprint, "best": best}))


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
    fingerprint = metrics.get(FINGERPRINT)
    if not isinstance(fingerprint, str) or not fingerprint:
        raise UserError(f"{metrics_path}: no {FINGERPRINT}, so the gate cannot tell what was measured "
                        "(re-run cyclegan evaluate, which writes it)")
    if data_dir is not None and "://" not in str(data_dir) and not Path(data_dir).is_dir():
        raise UserError(f"--data {data_dir}: data folder not found")
    paths = tracking.onnx_paths(export_dir)
    digest = tracking.files_sha256(paths)
    mlc = tracking.client(cfg)
    name = cfg.register.model_name
    # before anything is logged or registered: a champion that must be re-evaluated needs the data
    champion = alias_version(mlc, name, CHAMPION)
    if data_dir is None and champion is not None and champion.tags.get("onnx_sha256") != digest:
        need = reevaluation_needed(champion, fingerprint, cfg.register.gate_metrics)
        if need:
            raise UserError(f"{need}; pass --data DIR so it can be re-evaluated like the challenger")
    record, checkpoint_epoch = _checkpoint_record(checkpoint)   # a bad checkpoint fails before anything is logged
    run_id = tracking.resolve_run(cfg, run_id_file)
    eval_dir = Path(metrics_path).parent
    if Evaluation(eval_dir).metrics.resolve() == Path(metrics_path).resolve():
        tracking.log_evaluate(cfg, run_id, eval_dir)
    model_uri = tracking.log_export(cfg, run_id, export_dir, checkpoint)
    # a checkpoint says which epoch it holds; only without one does the run's choice stand in
    selection = None if checkpoint is None else tracking.selection_tags(record or {"epoch": checkpoint_epoch})
    mv = register_version(cfg, run_id, model_uri, digest, metrics, data_dir, selection)
    version = str(mv.version)
    mlc.set_registered_model_alias(name, CHALLENGER, version)

    info = _challenger_info(metrics_path, fingerprint)
    champion = alias_version(mlc, name, CHAMPION)
    champion_version = str(champion.version) if champion else None
    reasons: list[str] = []
    champ_values, champ_fingerprint, source = None, None, "no champion yet"
    if champion_version == version:
        champ_values, champ_fingerprint = metrics, fingerprint
        source = "the challenger is already the champion"
    elif champion is not None:
        champ_values, champ_fingerprint, source, why = champion_figures(cfg, mlc, champion, fingerprint, data_dir,
                                                                        info)
        if why:
            reasons.append(why)
    notes = carry_reference(cfg, mlc, fingerprint, champion_version, data_dir, info) if champion else []
    best = best_promoted(_versions(mlc, name), fingerprint, cfg.register.gate_metrics, champion_version)
    # a champion whose figures could not be had is an empty one: every metric fails, with its reason
    gate = decide(metrics, {} if champion is not None and champ_values is None else champ_values, cfg.register,
                  best=best)
    passed = gate["passed"] and not reasons
    reasons += [f"{row['metric']}: {row['reason']}" for row in gate["metrics"] if row["reason"]]

    if champion is not None and str(champion.version) == version:
        action = "none: already champion"
    elif not promote:
        action = "none: --promote not given"
    elif passed:
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
        "test_manifest_sha256": metrics.get("test_manifest_sha256"),
        "evaluation_fingerprint": {"challenger": fingerprint, "champion": champ_fingerprint,
                                   "equal": None if champion is None else champ_fingerprint == fingerprint},
        "champion_metrics_source": source,
        "verdict": "pass" if passed else "fail",
        "promote_requested": promote,
        "action": action,
        "run_id": run_id,
        "checkpoint": {"epoch": checkpoint_epoch, **({"selection": record} if record else {})},
        "metrics": gate["metrics"],
        "best_promoted": best,
        "best_promoted_notes": notes,
        "reasons": reasons,
    }
    mlc.set_model_version_tag(name, version, "gate_verdict", decision["verdict"])
    _keep_reference(mlc, cfg, fingerprint)
    mlc.update_model_version(name, version, description=model_card(
        model_name=name, version=version, decision=decision, metrics=metrics,
        data=_data_facts(mlc, run_id, data_dir), training=_training_facts(mlc, run_id, record, checkpoint_epoch),
        selection=record, checkpoint_epoch=checkpoint_epoch, report=_report_link(cfg, mlc, run_id)))
    out_path = Registration(out).decision
    atomic_write_json(out_path, decision)
    mlc.log_artifact(run_id, str(out_path))
    tracking.end_run(cfg, run_id)
    return decision


# -- the model card's facts -------------------------------------------------------------------

def _checkpoint_record(checkpoint: str | Path | None) -> tuple[dict | None, int | None]:
    """(selection record, epoch) of the registered checkpoint; (None, None) without one."""
    if checkpoint is None:
        return None, None
    from ..engine.checkpoint import load_checkpoint
    from ..evaluation.select import record_of

    state = load_checkpoint(checkpoint)
    record = record_of(state)
    epoch = record.get("epoch") if record else state.get("epoch")
    return record, epoch if isinstance(epoch, int) else None


def _data_facts(mlc, run_id: str, data_dir: str | Path | None) -> dict[str, Any]:
    """Source, manifest hash and split sizes: from the prepared data's manifest when at hand,
    else from the run (its params and lineage tags)."""
    run = mlc.get_run(run_id).data
    facts: dict[str, Any] = {"source": run.params.get("prepare.source"),
                             "manifest_sha256": run.tags.get("data_manifest_sha256")}
    if data_dir is not None and "://" not in str(data_dir):
        from ..evaluation.evaluate import read_manifest, source_kind

        manifest = read_manifest(Path(data_dir))
        source = manifest.get("source")
        named = source.get("source") if isinstance(source, dict) else None
        kind = source_kind(manifest)
        if kind or named:
            facts["source"] = f"{named} ({kind})" if named and kind and named != kind else (named or kind)
        if isinstance(manifest.get("counts"), dict):
            facts["counts"] = manifest["counts"]
        facts["manifest_sha256"] = tracking.manifest_sha256(data_dir) or facts["manifest_sha256"]
    return facts


def _training_facts(mlc, run_id: str, record: dict | None, checkpoint_epoch: int | None) -> dict[str, Any]:
    params = mlc.get_run(run_id).data.params
    epochs = (record or {}).get("epochs_trained")
    if epochs is None and "train.n_epochs" in params and "train.n_epochs_decay" in params:
        try:   # the authors' epochs epoch_count .. n_epochs + n_epochs_decay
            epochs = (int(params["train.n_epochs"]) + int(params["train.n_epochs_decay"])
                      - int(params.get("train.epoch_count", "1")) + 1)
        except ValueError:
            epochs = None
    return {"run_id": run_id, "epochs": epochs if epochs is not None else checkpoint_epoch}


def _report_link(cfg: Config, mlc, run_id: str) -> dict[str, str] | None:
    """The evaluation report among the run's artifacts: its path, ``runs:/`` URI and a link
    that opens it in the MLflow UI (relative to the UI unless the tracking URI is a server)."""
    path = tracking.report_artifact_path()
    folder = path.rpartition("/")[0]
    if path not in {a.path for a in mlc.list_artifacts(run_id, folder)}:
        return None
    experiment = mlc.get_run(run_id).info.experiment_id
    link = f"#/experiments/{experiment}/runs/{run_id}/artifactPath/{path}"
    uri = tracking.tracking_uri(cfg)
    if uri.startswith(("http://", "https://")):
        link = f"{uri.rstrip('/')}/{link}"
    return {"path": path, "uri": f"runs:/{run_id}/{path}", "link": link}


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
