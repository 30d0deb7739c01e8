"""Which checkpoint of a training run the pipeline carries on with (``cyclegan select``).

GAN quality does not rise monotonically with training, so the last epoch is not necessarily
the best one. With ``evaluate.select: best`` every kept epoch checkpoint (``TrainRun.epochs()``)
is scored on one fixed validation subset and the best-scoring one is written as the checkpoint
that the evaluate, export and register steps read. ``latest`` takes the run's latest checkpoint
without scoring anything: the pipeline's behaviour before selection existed.

The validation subset: training images, never the test split. Choosing an epoch by its test
figures and then reporting that epoch's test figures would leak the choice into them (the
maximum of noisy scores is biased upwards), and the promotion gate would compare a number
chosen to be high. A held-out part of the training data would also avoid that, but it would
change the prepare step and take images away from training. So the selection uses:
  inputs     a seeded random subset of ``evaluate.select_images`` images per domain from
             trainA/ and trainB/ (its own random stream of ``evaluate.seed``), the same images
             for every epoch;
  reference  the other domain's training images that the evaluation fits its domain probe on
             (``probe_images``: at most ``evaluate.probe_max_per_domain``, seeded), whose
             features are cached by content hash and shared with the evaluation;
  probe      the evaluation's own linear probe (same features, same seed).
Per epoch and direction that gives KID of the translations against the reference and the
share of translations the probe assigns to the target domain. The generators have trained on
these images, so the figures measure how well each epoch fits the training distribution:
they rank epochs of one run and are not comparable with test figures.

``evaluate.select_metric`` ranks: ``kid`` takes the mean KID of both directions (lowest wins),
``domain_success`` the mean domain success (highest wins, ties to the lower mean KID). Any
remaining tie goes to the later epoch. A non-finite score ranks last.

Cost: the real sets' features once ever (the cache), then per kept epoch one generator pass
and one feature pass per validation image and direction.

Outputs (``layout.Selection``), written into a temporary folder and swapped into place:
  checkpoint   the chosen checkpoint's generators and config, with its ``epoch`` and a
               ``selection`` record (mode, epoch, metric, score, kept epochs, epochs trained)
  scores       the choice, the validation subset, the untranslated baseline and each epoch's figures
  scores_plot  one row per scored epoch, for ``dvc plots``
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import UserError
from ..layout import Selection, TrainRun

RECORD = "selection"          # the key of the choice's record inside the selected checkpoint
SUBSET_STREAM = 0x5E1EC7      # the validation subset's random stream, apart from the probe's
DIRECTIONS = (("AtoB", "A", "B"), ("BtoA", "B", "A"))
FIGURES = ("kid_AtoB_mean", "kid_AtoB_std", "kid_BtoA_mean", "kid_BtoA_std", "domain_success_AtoB",
           "domain_success_BtoA")
PLOT_COLUMNS = ("epoch", "kid_AtoB_mean", "kid_BtoA_mean", "domain_success_AtoB", "domain_success_BtoA", "score",
                "selected")


# -- the pure parts -----------------------------------------------------------------------

def validation_subset(n: int, count: int, seed: int, domain: int) -> list[int]:
    """Sorted indices of the validation images of one domain: ``count`` of ``n`` (all when
    ``n <= count``), drawn from a stream of their own so they do not follow the probe's subset."""
    if n <= count:
        return list(range(n))
    rng = np.random.default_rng([seed, SUBSET_STREAM, domain])
    return sorted(int(i) for i in rng.choice(n, count, replace=False))


def _finite(value) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.inf


def score(row: dict, metric: str) -> float:
    """The figure that ranks an epoch: mean KID (``kid``) or mean domain success."""
    if metric == "kid":
        return (row["kid_AtoB_mean"] + row["kid_BtoA_mean"]) / 2
    if metric == "domain_success":
        return (row["domain_success_AtoB"] + row["domain_success_BtoA"]) / 2
    raise UserError(f"evaluate.select_metric: {metric!r} is not kid or domain_success")


def choose(rows: list[dict], metric: str) -> dict:
    """The best row (see the module's notes for the order and the ties)."""
    if not rows:
        raise ValueError("nothing to choose from")

    def rank(row: dict) -> tuple:
        kid_mean = _finite(score(row, "kid"))
        if metric == "kid":
            return kid_mean, -row["epoch"]
        success = score(row, metric)
        return (-success if math.isfinite(success) else math.inf), kid_mean, -row["epoch"]

    best = min(rows, key=rank)
    if not math.isfinite(score(best, metric)):
        raise UserError(f"no epoch has a finite {metric} score (degenerate validation images or features?)")
    return best


# -- scoring ------------------------------------------------------------------------------

def validation_images(data: Path, count: int, seed: int) -> tuple[list[Path], list[Path]]:
    from .evaluate import training_subsets

    return training_subsets(data, "the checkpoint selection", "the checkpoint selection scores on training images",
                            lambda n, k: validation_subset(n, count, seed, k))


def _generators(checkpoint: Path, device):
    """(to_b, to_a, config): the generators by the data folders' names (A = trainA), whatever
    ``data.direction`` the run was trained with."""
    from ..engine.checkpoint import load_generators

    G_A, G_B, model_cfg = load_generators(checkpoint, device)
    to_b, to_a = (G_A, G_B) if model_cfg.data.direction == "AtoB" else (G_B, G_A)
    return to_b, to_a, model_cfg


def _translated_features(generator, paths: list[Path], size: int, channels: int, extractor, batch_size: int,
                         device) -> np.ndarray:
    import torch

    from ..translate import translate_tensor
    from .evaluate import iter_batches

    parts = []
    with torch.inference_mode():
        for x in iter_batches(paths, size, channels, batch_size):
            parts.append(extractor(translate_tensor(generator, x.to(device))).float().cpu())
    # float32 like the cached real sets (as evaluate.py does), so reruns agree to the bit
    return torch.cat(parts).numpy().astype(np.float64)


def score_epochs(cfg: Config, data: Path, checkpoints: list[Path], device, progress: bool = True) -> dict:
    """Every checkpoint's figures on the validation subset, and the untranslated baseline."""
    from tqdm import tqdm

    from .distances import kid
    from .evaluate import CountingExtractor, Timer, probe_images, real_features
    from .features import FeatureCache, build_extractor, files_digest
    from .probe import DomainProbe

    ecfg = cfg.evaluate
    timer = Timer(device)
    inputs = dict(zip("AB", validation_images(data, ecfg.select_images, ecfg.seed)))
    reference = dict(zip("AB", probe_images(data, ecfg.probe_max_per_domain, ecfg.seed)))
    to_b, to_a, model_cfg = _generators(checkpoints[0], device)
    size = ecfg.image_size or model_cfg.data.crop_size
    channels = {"A": next(to_b.parameters()).shape[1], "B": next(to_a.parameters()).shape[1]}
    extractor = CountingExtractor(build_extractor(ecfg.features, device))
    cache = FeatureCache(ecfg.cache_dir)
    real = {}
    for name, sets in (("reference", reference), ("inputs", inputs)):
        for domain, paths in sets.items():
            real[name, domain], _ = real_features(f"train{domain} ({name})", extractor, paths, size, channels[domain],
                                                  cache, ecfg.batch_size, device, timer, progress)
    probe = DomainProbe(seed=ecfg.seed).fit(real["reference", "A"], real["reference", "B"])
    kid_args = dict(subsets=ecfg.kid_subsets, subset_size=ecfg.kid_subset_size, seed=ecfg.seed)

    def figures(features: dict[str, np.ndarray]) -> dict:
        row = {}
        for direction, source, target in DIRECTIONS:
            row[f"kid_{direction}_mean"], row[f"kid_{direction}_std"] = kid(features[direction],
                                                                            real["reference", target], **kid_args)
            fraction = probe.fraction_b if target == "B" else probe.fraction_a
            row[f"domain_success_{direction}"] = fraction(features[direction])
        return row

    baseline = figures({"AtoB": real["inputs", "A"], "BtoA": real["inputs", "B"]})
    rows = []
    for path in tqdm(checkpoints, desc="select: epochs", unit="ckpt", disable=not progress, dynamic_ncols=True):
        t = time.perf_counter()
        to_b, to_a, run_cfg = _generators(path, device)
        if run_cfg.data.crop_size != model_cfg.data.crop_size or run_cfg.model != model_cfg.model:
            raise UserError(f"{path}: another model or image size than {checkpoints[0].name}; the epoch "
                            "checkpoints of one run share them (a stale file from an earlier run?)")
        fake = {"AtoB": _translated_features(to_b, inputs["A"], size, channels["A"], extractor, ecfg.batch_size,
                                             device),
                "BtoA": _translated_features(to_a, inputs["B"], size, channels["B"], extractor, ecfg.batch_size,
                                             device)}
        timer.add("epochs", t)
        rows.append({"epoch": TrainRun.epoch_number(path), "checkpoint": path.name, **figures(fake)})
    return {
        "validation": {
            "images": "training images (never the test split): a seeded subset per domain, translated; the "
                      "reference is the other domain's probe-training subset",
            "images_per_domain": {d: len(p) for d, p in inputs.items()},
            "reference_per_domain": {d: len(p) for d, p in reference.items()},
            "seed": ecfg.seed,
            "inputs_sha256": {d: files_digest(p) for d, p in inputs.items()},
            "reference_sha256": {d: files_digest(p) for d, p in reference.items()},
            "image_size": size,
            "features": ecfg.features,
            "kid_subsets": ecfg.kid_subsets,
            "kid_subset_size": ecfg.kid_subset_size,
        },
        "baseline": baseline,
        "epochs": rows,
        "feature_images": extractor.images,
        "timings_s": {k: round(v, 3) for k, v in timer.seconds.items()},
    }


# -- the command's library call -----------------------------------------------------------

def _selected_state(state: dict, source: Path, record: dict) -> dict:
    """The generators and config of checkpoint ``state`` (a full or a generators-only one, read
    from ``source``) with the record of the choice: what ``load_generators`` reads, without
    discriminators, optimizers and RNG state."""
    try:
        models = {name: state["models"][name] for name in ("G_A", "G_B")}
    except KeyError as e:
        raise UserError(f"{source}: checkpoint lacks generator {e}") from None
    return {"format": state["format"], "config": state["config"], "models": models, "epoch": state.get("epoch"),
            "global_iter": state.get("global_iter"), RECORD: record}


def record_of(checkpoint_state: dict) -> dict | None:
    """The selection record of a loaded checkpoint, or None (a trainer's own checkpoint)."""
    record = checkpoint_state.get(RECORD)
    return record if isinstance(record, dict) else None


def write_plot(path: Path, rows: list[dict], selected_epoch: int | None) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, PLOT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "selected": int(row["epoch"] == selected_epoch)})


def select(cfg: Config, data: str | None, train: str, out: str, device: str | None = None,
           progress: bool = True) -> dict:
    """Choose the checkpoint of the run in ``train`` by ``evaluate.select`` and write
    ``layout.Selection`` into ``out`` (paths local or object storage); returns the summary."""
    import contextlib

    from .. import storage
    from ..engine.checkpoint import atomic_torch_save, load_checkpoint
    from ..utils import resolve_device, sha256_file

    ecfg = cfg.evaluate
    mode = ecfg.select
    if mode == "best" and data is None:
        raise UserError("--data: evaluate.select=best scores the epochs on training images, so it needs the data "
                        "folder (evaluate.select=latest does not)")
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        local_train = stack.enter_context(storage.local_input(train))
        run = TrainRun(local_train)
        if mode == "latest":
            if not run.latest.is_file():
                raise UserError(f"{run.latest}: no latest checkpoint in the run folder {train}")
            source, rows, chosen, scored = run.latest, [], None, None
            state = load_checkpoint(source)
            epoch = state.get("epoch")
            kept = [TrainRun.epoch_number(p) for p in run.epochs()]
            trained = epoch
        else:
            epochs = run.epochs()
            if not epochs:
                raise UserError(f"{run.checkpoints}: no kept epoch checkpoints to choose from (train.save_epoch_freq "
                                "keeps them; evaluate.select=latest takes the latest checkpoint instead)")
            local_data = stack.enter_context(storage.local_input(data))
            device_ = resolve_device(device or ecfg.device, "evaluate.device")
            scored = score_epochs(cfg, local_data, epochs, device_, progress)
            rows = scored["epochs"]
            for row in rows:
                row["score"] = score(row, ecfg.select_metric)
            chosen = choose(rows, ecfg.select_metric)
            source, epoch = run.epoch(chosen["epoch"]), chosen["epoch"]
            state = load_checkpoint(source)
            kept = [row["epoch"] for row in rows]
            trained = max(kept)   # the trainer always keeps the last epoch
        record = {"mode": mode, "epoch": epoch, "checkpoint": source.name,
                  "metric": ecfg.select_metric if mode == "best" else None,
                  "score": chosen["score"] if chosen else None, "kept_epochs": kept, "epochs_trained": trained}
        summary = {"mode": mode, "selected_epoch": epoch, "selected_checkpoint": source.name,
                   "source_sha256": sha256_file(source), "metric": record["metric"], "score": record["score"],
                   "epochs_trained": trained, "kept_epochs": kept, "train": str(train),
                   "data": str(data) if data is not None else None}
        if scored:
            summary.update({k: scored[k] for k in ("validation", "baseline", "feature_images")})
        summary["epochs"] = rows
        summary["timings_s"] = {**(scored or {}).get("timings_s", {}), "total": round(time.perf_counter() - start, 3)}
        with storage.local_output(out) as tmp:
            files = Selection(tmp)
            atomic_torch_save(_selected_state(state, source, record), files.checkpoint)
            # names the file it describes, so a reader can tell the scores of another choice
            summary["checkpoint_sha256"] = sha256_file(files.checkpoint)
            files.scores.write_text(json.dumps(summary, indent=2) + "\n")
            write_plot(files.scores_plot, rows, epoch if mode == "best" else None)
    return summary
