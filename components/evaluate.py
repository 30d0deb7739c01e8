"""The evaluate step as a KFP component: Dataset + Model (run folder) + Model (the selected
checkpoint) -> Metrics, HTML report, evaluation folder."""
from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(params: str, data: Input[Dataset], model: Input[Model], selected: Input[Model], metrics: Output[Metrics],
             report: Output[HTML], evaluation: Output[Artifact], image: str = "", tracking_uri: str = ""):
    """The evaluate step of training/steps.py; the metrics and the report also as KFP artifacts."""
    import json
    import shutil
    from pathlib import Path

    from components.runtime import metrics_of, report_of, run_step

    run_step("evaluate", params, {"data": data.path, "train": model.path, "select": selected.path,
                                  "eval": evaluation.path}, image=image, tracking_uri=tracking_uri)
    Path(report.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report_of(evaluation.path), report.path)   # the page is self-contained
    values = metrics_of(evaluation.path)
    for name, value in values.items():
        metrics.log_metric(name, value)
    # The values live in the artifact's metadata; a file at its path as well, because kfp.local's
    # cache treats an output whose local file is missing as no cache entry at all.
    Path(metrics.path).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics.path).write_text(json.dumps(values, indent=1))
