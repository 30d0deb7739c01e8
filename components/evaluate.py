"""The evaluate step as a KFP component: Dataset + Model -> Metrics, HTML report, evaluation folder."""
from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(params: str, data: Input[Dataset], model: Input[Model], metrics: Output[Metrics],
             report: Output[HTML], evaluation: Output[Artifact], image: str = "", tracking_uri: str = ""):
    """cyclegan evaluate, then the evaluate part of the MLflow run."""
    from components.runtime import evaluate_step

    values = evaluate_step(params, data.path, model.path, evaluation.path, report.path, image=image,
                           tracking_uri=tracking_uri)
    for name, value in values.items():
        metrics.log_metric(name, value)
