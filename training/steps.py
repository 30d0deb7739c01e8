"""The pipeline's six steps, each defined once: the commands it runs, what it reads and
writes, the params sections and code it depends on, and how it resumes.

Two runners read this table and nothing else:
  * DVC: ``dvc.yaml`` is generated from it (``cyclegan steps --write dvc.yaml``; a test fails
    when the file and the table disagree), with the step folders of ``layout.FOLDERS``;
  * Kubeflow: each component runs its step's commands (``components/runtime.py``) with the
    task's artifact paths as the folders, and keys the train task (its cache entry and
    checkpoint prefix) on what DVC watches for it: ``content_key`` over the step's params
    sections, code folders and input data.

Commands are argv templates. ``{data}``, ``{train}``, ``{select}``, ``{eval}``, ``{export}`` and
``{register}`` are the steps' folders; file names inside them come from ``layout``.
``When(option, args)`` adds ``args`` only when a runner sets ``option`` (DVC sets
``DVC_OPTIONS``; Kubeflow passes its pipeline parameters).

Resume, the same for both runners: ``cyclegan train --resume auto`` continues the run folder's
unfinished run when its settings and training images are unchanged (an interrupted
``dvc repro``, a retried or preempted Kubeflow task whose checkpoint the mirror restored) and
starts over otherwise (changed data, params or code, or a finished run). Every other step is
a pure function of its inputs and simply runs again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .export.triton import TritonSettings
from .layout import FOLDERS, Evaluation, Export, Registration, Selection, TrainRun


@dataclass(frozen=True)
class When:
    """argv added to a command only when the runner sets ``option``."""
    option: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Output:
    path: str
    persist: bool = False     # kept when the step re-runs (what resume continues from)
    cache: bool = True        # False: not stored in the DVC cache (small, or a pointer)
    metric: bool = False      # a DVC metrics file


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    commands: tuple[tuple[str | When, ...], ...]
    inputs: tuple[str, ...]
    outputs: tuple[Output, ...]
    params: tuple[str, ...]
    code: tuple[str, ...]
    comment: str = ""          # why the step is shaped the way it is (goes into dvc.yaml)

    def argv(self, folders: dict[str, str], options: dict[str, object] | None = None) -> list[list[str]]:
        """The step's commands with ``folders`` filled in and the ``When`` parts that
        ``options`` switches on."""
        options = options or {}
        commands = []
        for template in self.commands:
            argv: list[str] = []
            for token in template:
                if isinstance(token, When):
                    value = options.get(token.option)
                    if value not in (None, False, ""):
                        argv += [t.format(**folders, **{token.option: value}) for t in token.args]
                else:
                    argv.append(token.format(**folders))
            commands.append(argv)
        return commands

    def paths(self, templates: tuple[str, ...], folders: dict[str, str]) -> list[str]:
        return [t.format(**folders) for t in templates]


# Folders as templates: TrainRun("{train}").latest is the latest checkpoint under "{train}".
RUN, EVALUATION, EXPORT, REGISTRATION = TrainRun("{train}"), Evaluation("{eval}"), Export("{export}"), \
    Registration("{register}")
SELECTION = Selection("{select}")
RUN_ID = str(RUN.run_id)
# what evaluate, export and register read: the checkpoint the select step chose
SELECTED = str(SELECTION.checkpoint)

STEPS: tuple[Step, ...] = (
    Step("prepare", "any source -> trainA/ trainB/ testA/ testB/ + manifest",
         commands=(("cyclegan", "prepare", "--out", "{data}"),),
         inputs=(),
         outputs=(Output("{data}"),),
         params=("prepare",),
         code=("training/prepare",)),
    Step("train", "train both generators and discriminators; track the run in MLflow",
         commands=(("cyclegan", "train", "--data", "{data}", "--out", "{train}", "--resume", "auto", "--track",
                    When("nproc", ("--nproc-per-node", "{nproc}")), When("mirror", ("--mirror", "{mirror}"))),
                   ("cyclegan", "track", "train", "{train}", "--data", "{data}")),
         inputs=("{data}",),
         outputs=(Output(str(RUN.checkpoints), persist=True), Output(str(RUN.samples), persist=True),
                  Output(str(RUN.log), persist=True), Output(str(RUN.config)), Output(RUN_ID, cache=False)),
         params=("data", "model", "train"),
         code=("training/models", "training/engine", "training/data"),
         comment="--resume auto continues an interrupted run and starts over when the stage re-runs for another "
                 "reason (changed data, params or code, a finished run). The checkpoints, the log and the samples "
                 "persist because DVC would otherwise delete them before the stage runs; a resumed run keeps its "
                 "history (the trainer truncates the log to the checkpoint)."),
    Step("select", "score every kept epoch checkpoint on training images; the best (or the latest) goes on",
         commands=(("cyclegan", "select", "--data", "{data}", "--train", "{train}", "--out", "{select}"),
                   ("cyclegan", "track", "select", "{select}", "--train", "{train}")),
         inputs=("{data}", str(RUN.checkpoints), RUN_ID),
         outputs=(Output("{select}"),),
         params=("evaluate",),
         code=("training/evaluation",),
         comment="evaluate.select: best scores every kept epoch checkpoint on a fixed subset of the training images "
                 "(never the test split, so the test figures of the chosen epoch stay unbiased); latest takes the "
                 "latest checkpoint. Evaluate, export and register all read the chosen checkpoint."),
    Step("evaluate", "metrics on the test split, picture grids, an HTML report",
         commands=(("cyclegan", "evaluate", "--data", "{data}", "--checkpoint", SELECTED, "--selection",
                    str(SELECTION.scores), "--train-log", str(RUN.log), "--out", "{eval}"),
                   ("cyclegan", "track", "evaluate", "{eval}", "--train", "{train}")),
         inputs=("{data}", SELECTED, str(SELECTION.scores), str(RUN.log), RUN_ID),
         outputs=(Output(str(EVALUATION.report_dir)), Output(str(EVALUATION.grids)), Output(str(EVALUATION.plots)),
                  Output(str(EVALUATION.info)), Output(str(EVALUATION.metrics), cache=False, metric=True)),
         params=("evaluate",),
         code=("training/evaluation",)),
    Step("export", "both generators as verified ONNX models; the model into the MLflow run",
         commands=(("cyclegan", "export", "--checkpoint", SELECTED, "--data", "{data}", "--metrics",
                    str(EVALUATION.metrics), "--out", "{export}"),
                   ("cyclegan", "track", "export", "{export}", "--checkpoint", SELECTED, "--train", "{train}")),
         inputs=("{data}", SELECTED, RUN_ID, str(EVALUATION.metrics)),
         outputs=(Output("{export}"),),
         params=("export", *TritonSettings.serve_keys()),
         code=("training/export",),
         comment="The Triton model repository inside the export folder takes its names, batching and GPU "
                 "settings from these serve: keys, so changing one re-exports. --metrics: each model records the "
                 "evaluation's out-of-domain threshold (ood_cycle_psnr_*), which serving's quality signal compares "
                 "a translation's cycle PSNR against."),
    Step("register", "register the version as challenger; the gate decides whether champion moves",
         commands=(("cyclegan", "register", "--model", "{export}", "--metrics", str(EVALUATION.metrics),
                    "--checkpoint", SELECTED, "--data", "{data}", "--train", "{train}", "--out", "{register}",
                    When("promote", ("--promote",))),),
         inputs=("{export}", str(EVALUATION.metrics), SELECTED, RUN_ID, "{data}"),
         outputs=(Output(str(REGISTRATION.decision), cache=False),),
         params=("register",),
         code=("training/mlops",),
         comment="The gate (params.yaml register:) compares the challenger with the champion; the decision file "
                 "says why, metric by metric."),
)
BY_NAME = {step.name: step for step in STEPS}

# What `dvc repro` switches on: the gate may move champion. (The mirror and the one-process-per-GPU
# launcher, nproc, are Kubeflow's.)
DVC_OPTIONS = {"promote": True}

# The params keys a pipeline run takes by name (pipeline parameters, `cyclegan pipeline --source` ...);
# every other setting travels in the params document.
PIPELINE_OVERRIDES = {"source": "prepare.source", "n_epochs": "train.n_epochs",
                      "n_epochs_decay": "train.n_epochs_decay"}

PLOTS = [
    {"Training losses": {"template": "linear", "x": "iteration",
                         "y": {str(TrainRun(FOLDERS["train"]).log): ["loss_G", "loss_D_A", "loss_D_B",
                                                                     "loss_cycle_A", "loss_cycle_B"]}}},
    {"Metrics vs identity baseline": {"template": "bar_horizontal", "x": "checkpoint",
                                      "y": {str(Evaluation(FOLDERS["eval"]).metrics_plot): "metric"}}},
    {"Validation KID by epoch (checkpoint selection)": {
        "template": "linear", "x": "epoch",
        "y": {str(Selection(FOLDERS["select"]).scores_plot): ["kid_AtoB_mean", "kid_BtoA_mean"]}}},
    {"Validation domain success by epoch (checkpoint selection)": {
        "template": "linear", "x": "epoch",
        "y": {str(Selection(FOLDERS["select"]).scores_plot): ["domain_success_AtoB", "domain_success_BtoA"]}}},
]


# -- content keys (Kubeflow's caching and checkpoint prefix) ------------------------------------

# The folder holding the ``training`` package: Step.code paths are relative to it (the repo root
# in a checkout, site-packages in an installed image).
CODE_ROOT = Path(__file__).resolve().parents[1]


def code_version(paths: tuple[str, ...], root: str | Path = CODE_ROOT) -> str:
    """sha256 over the files under ``paths`` (relative to ``root``, as in ``Step.code``): each
    file's relative path and content hash, sorted; compiled caches are left out. A missing
    path counts as empty, so an image without a folder still gets a stable answer."""
    import hashlib

    from .utils import sha256_file

    root = Path(root)
    digest = hashlib.sha256()
    for base in paths:
        folder = root / base
        files = [folder] if folder.is_file() else sorted(folder.rglob("*")) if folder.is_dir() else []
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
                digest.update(f"{path.relative_to(root).as_posix()}\t{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def content_key(step: Step, config: dict, inputs: dict[str, str], code_root: str | Path = CODE_ROOT,
                **extra: object) -> str:
    """One sha256 over what ``step``'s result depends on, the things ``dvc repro`` watches for
    it: its params sections (``config`` is the typed config's dict, so a default spelled out and
    one left out agree), its code folders, the content hashes of its ``inputs``, and ``extra``
    (the image, the process count). Equal keys mean the step would compute the same thing."""
    import hashlib
    import json

    document = {"step": step.name, "params": {section: config[section] for section in step.params},
                "code": code_version(step.code, code_root), "inputs": inputs, "extra": extra}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def overrides_from(named: dict[str, object]) -> list[str]:
    """``{"n_epochs": 5, "source": ""}`` -> ``["train.n_epochs=5"]``; unset values (``""``,
    ``None``, a negative number) are skipped."""
    out = []
    for name, value in named.items():
        if name not in PIPELINE_OVERRIDES:
            raise ValueError(f"unknown pipeline override {name!r} (known: {', '.join(PIPELINE_OVERRIDES)})")
        if value is None or value == "" or (isinstance(value, int) and not isinstance(value, bool) and value < 0):
            continue
        out.append(f"{PIPELINE_OVERRIDES[name]}={value}")
    return out


# -- dvc.yaml -----------------------------------------------------------------------------------

DVC_HEADER = """\
# Generated from training/steps.py by `cyclegan steps --write dvc.yaml`: edit the table there,
# not this file (tests/test_steps.py fails when the two disagree).
# The six steps as DVC stages. Every cmd is the project's one CLI; params.yaml holds every
# tunable, so `dvc repro` re-runs exactly the stages whose code, data or params changed, and
# `dvc exp run -S train.n_epochs=10` tries a variant. Each step adds its part to the pipeline's
# one MLflow run (`cyclegan track`), whose id travels in the train folder.
"""


def dvc_stage(step: Step, folders: dict[str, str] | None = None) -> dict:
    folders = folders or FOLDERS
    commands = [" ".join(argv) for argv in step.argv(folders, DVC_OPTIONS)]
    stage: dict = {"cmd": commands[0] if len(commands) == 1 else commands}
    deps = step.paths(step.inputs, folders) + list(step.code)
    if deps:
        stage["deps"] = deps
    stage["params"] = list(step.params)
    outs, metrics = [], []
    for out in step.outputs:
        path = out.path.format(**folders)
        flags = {**({"persist": True} if out.persist else {}), **({} if out.cache else {"cache": False})}
        entry = {path: flags} if flags else path
        (metrics if out.metric else outs).append(entry)
    if outs:
        stage["outs"] = outs
    if metrics:
        stage["metrics"] = metrics
    return stage


def dvc_document(folders: dict[str, str] | None = None) -> dict:
    return {"stages": {step.name: dvc_stage(step, folders) for step in STEPS}, "plots": PLOTS}


def dvc_yaml(folders: dict[str, str] | None = None) -> str:
    """The whole dvc.yaml, comments included."""
    import yaml

    parts = [DVC_HEADER, "stages:\n"]
    for step in STEPS:
        if step.comment:
            parts.append("".join(f"  # {line}\n" for line in _wrap(step.comment)))
        body = yaml.safe_dump({step.name: dvc_stage(step, folders)}, sort_keys=False, width=110)
        parts.append("".join(f"  {line}\n" for line in body.splitlines()) + "\n")
    parts.append(yaml.safe_dump({"plots": PLOTS}, sort_keys=False, width=110))
    return "".join(parts)


def _wrap(text: str, width: int = 96) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)

