"""Kubeflow Pipelines components: one lightweight ``@dsl.component`` per step.

  fingerprint  -> data key, train key          components/fingerprint.py (never cached)
  prepare      data key -> Dataset              components/prepare.py
  train        Dataset, train key -> Model (run folder)   components/train.py
  select       Dataset, Model -> Model (the chosen checkpoint and every epoch's scores)
  evaluate     Dataset, Model, Model -> Metrics, HTML, Artifact (evaluation folder)
  export       Dataset, Model, Model -> Model (ONNX folder)
  register     Dataset, Model, Model, Model, Artifact -> Artifact (the gate's decision)
  variant      params, overrides -> params, train key   (a sweep's variant; components/variant.py)
  select_best  [Model], [Model], [Artifact] -> Model, Model, Artifact   (a sweep's winner;
               components/best_variant.py)

Lightweight Python components (not container components) because the SDK's local
subprocess runner only runs those, and so ``cyclegan pipeline run --local`` runs the very
same pipeline as the cluster. Each body imports ``components.runtime`` and calls ``run_step``,
which runs its step's commands from the step table (``training/steps.py``), the table
``dvc.yaml`` is generated from: DVC and Kubeflow run the same commands and resume the same way. ``base_image`` is only a default: the
pipeline sets every task's image from its ``image`` parameter (``task.set_container_image``).
``install_kfp_package=False``: the project image already has the pinned kfp, so nothing is
installed when a task starts.

Import the components from their modules (``from components.train import train``).
"""
DEFAULT_IMAGE = "cyclegan:train"
# No component is imported here: a task's body imports components.runtime, and inside a task
# the SDK's executor provides a reduced ``kfp.dsl`` in which the decorators do not exist.
