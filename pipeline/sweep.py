"""The Kubeflow sweep: one training per variant of a search space, the best one registered.

  fingerprint -> prepare -> ParallelFor(variants): variant -> train -> select -> evaluate
                         -> select_best (lowest sweep objective) -> export -> register

Run-time parameters are the main pipeline's plus ``variants``: a list of ``{"section.key":
value}`` overrides of the data, model and train sections, e.g. ``[{"train.lr": 0.0002},
{"train.lr": 0.001}]`` (``cyclegan pipeline sweep --grid train.lr=0.0002,0.001`` builds the
grid's product). Each variant trains with the params document plus its overrides, on the one
prepared dataset, under its own train key (so a variant already trained with the same data,
params and code is a cache hit, and its checkpoint prefix is its own), and is evaluated with
the document's evaluate settings. The objective is the promotion gate's KID, both directions
averaged (``components.runtime.SWEEP_OBJECTIVE``); the best variant's run folder goes on to
export and register, where the gate compares it with the champion as in the main pipeline.
Every variant's MLflow run keeps its training and evaluation, so the sweep can be compared
there too; the leaderboard is a Markdown artifact of the select task.

``parallelism`` (compile time) caps the variants training at once: each train task requests
``gpus`` GPUs, so it is the number of GPU nodes the sweep may hold; 0 leaves it to the cluster.
"""
# No `from __future__ import annotations` here: KFP reads the pipeline's parameter types.
from pathlib import Path

from kfp import dsl

from components import DEFAULT_IMAGE
from components.best_variant import select_best as select_best_op
from components.variant import variant as variant_op

from .pipeline import PipelineOptions, StepTasks, default_params, one_line

SWEEP_NAME = "cyclegan-sweep"


def build_sweep_pipeline(options: "PipelineOptions | None" = None, params: "str | None" = None,
                         variants: "list[dict] | None" = None, parallelism: int = 0):
    """The sweep pipeline function, with ``options`` applied, ``params`` as the default document
    and ``variants`` as the default search space."""
    opts = options or PipelineOptions()
    document = default_params() if params is None else one_line(params)
    space = list(variants or [{}])

    @dsl.pipeline(name=SWEEP_NAME, description="CycleGAN sweep: train + evaluate each variant, register the "
                                               "lowest-KID one through the gate")
    def cyclegan_sweep(params: str = document, variants: list = space, image: str = DEFAULT_IMAGE, source: str = "",
                       n_epochs: int = -1, n_epochs_decay: int = -1, gpus: int = 1, checkpoint_prefix: str = "",
                       tracking_uri: str = "", promote: bool = True):
        tasks = StepTasks(opts, image, tracking_uri)
        keys = tasks.fingerprint(params, source, n_epochs, n_epochs_decay, gpus)
        prep = tasks.prepare(params, source, keys.outputs["data_key"])
        data = prep.outputs["data"]
        with dsl.ParallelFor(variants, parallelism=parallelism) as overrides:
            var = tasks.place(variant_op(params=params, overrides=overrides, data_key=keys.outputs["data_key"],
                                         n_epochs=n_epochs, n_epochs_decay=n_epochs_decay, gpus=gpus, image=image))
            var.set_caching_options(False).set_display_name("variant")
            tr = tasks.train(var.outputs["params"], data, n_epochs, n_epochs_decay, checkpoint_prefix,
                             var.outputs["train_key"], gpus)
            sel = tasks.select(params, data, tr.outputs["model"])
            ev = tasks.evaluate(params, data, tr.outputs["model"], sel.outputs["selected"])
        best = tasks.place(select_best_op(models=dsl.Collected(tr.outputs["model"]),
                                          selections=dsl.Collected(sel.outputs["selected"]),
                                          evaluations=dsl.Collected(ev.outputs["evaluation"])))
        best.set_caching_options(True).set_retry(1).set_display_name("select best")
        ex = tasks.export(params, data, best.outputs["model"], best.outputs["selected"], best.outputs["evaluation"])
        tasks.register(params, data, best.outputs["model"], best.outputs["selected"], ex.outputs["onnx"],
                       best.outputs["evaluation"], promote)

    return cyclegan_sweep


def compile_sweep(out: str | Path, options: PipelineOptions | None = None, params: str | None = None,
                  variants: list[dict] | None = None, parallelism: int = 0) -> Path:
    """Write the sweep pipeline's YAML (IR) to ``out``, atomically."""
    import os

    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.yaml")
    compiler.Compiler().compile(build_sweep_pipeline(options, params, variants, parallelism), str(tmp))
    os.replace(tmp, out)
    return out
