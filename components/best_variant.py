"""The end of a sweep as a KFP component: every variant's run folder, selected checkpoint and
evaluation -> the best one (copied: its log, config and MLflow run id, its selection and its
evaluation), a leaderboard, and the objective as KFP metrics.

The objective is the promotion gate's KID, both directions averaged (components.runtime,
``SWEEP_OBJECTIVE``). Variants are matched to their evaluations by the checkpoint's SHA-256
the evaluation recorded, and to their selections by the source checkpoint's SHA-256 the selection
recorded, not by list position: a collected list's order is the backend's.
"""
from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def select_best(models: Input[List[Model]], selections: Input[List[Model]], evaluations: Input[List[Artifact]],
                model: Output[Model], selected: Output[Model], evaluation: Output[Artifact],
                leaderboard: Output[Markdown], objective: Output[Metrics]):
    """The variant with the lowest objective, ties to the first."""
    from pathlib import Path

    from components.runtime import copy_candidate, leaderboard_markdown, rank_candidates

    ranked = rank_candidates([m.path for m in models], [s.path for s in selections], [e.path for e in evaluations])
    best = ranked[0]
    copy_candidate(best, model.path, selected.path, evaluation.path)
    model.metadata.update({"framework": "pytorch", "objective": best["objective"], "run_id": best["run_id"]})
    Path(leaderboard.path).parent.mkdir(parents=True, exist_ok=True)
    Path(leaderboard.path).write_text(leaderboard_markdown(ranked))
    for name in ("objective", *best["terms"]):
        objective.log_metric(name, best["objective"] if name == "objective" else best["terms"][name])
    objective.log_metric("variants", len(ranked))
    # a file at the path too: kfp.local's cache drops an entry whose local output file is missing
    Path(objective.path).write_text(leaderboard_markdown(ranked))
    print(leaderboard_markdown(ranked), flush=True)
