"""One recipe per step: dvc.yaml is the step table's, and the Kubeflow components run the very
same commands (and so resume the same way)."""
from __future__ import annotations

import inspect

import pytest
import yaml

from helpers import ROOT
from training import steps
from training.layout import FOLDERS


def test_dvc_yaml_is_the_step_tables():
    """Any difference in a command, an input, an output or a flag fails here (regenerate with
    `cyclegan steps --write dvc.yaml`)."""
    assert (ROOT / "dvc.yaml").read_text() == steps.dvc_yaml()
    parsed = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert parsed == steps.dvc_document()   # and the text says what the table says
    assert list(parsed["stages"]) == [step.name for step in steps.STEPS]


def test_the_check_command_notices_a_drifted_dvc_yaml(tmp_path, capsys):
    from training.cli import main

    drifted = tmp_path / "dvc.yaml"
    drifted.write_text(steps.dvc_yaml().replace("--resume auto", "--resume"))
    assert main(["steps", "--check", str(drifted)]) == 1
    assert "differs" in capsys.readouterr().err
    drifted.write_text(steps.dvc_yaml())
    assert main(["steps", "--check", str(drifted)]) == 0


def test_every_step_reads_what_an_earlier_step_writes():
    written = set()
    for step in steps.STEPS:
        for path in step.paths(step.inputs, FOLDERS):
            assert any(path == out or path.startswith(out.rstrip("/") + "/") for out in written), (step.name, path)
        written.update(o.path.format(**FOLDERS) for o in step.outputs)


@pytest.mark.parametrize("step", steps.STEPS, ids=lambda s: s.name)
def test_kubeflow_runs_the_dvc_commands(step, monkeypatch):
    """components.runtime.run_step, what every component body calls, runs exactly the commands
    DVC runs (with the task's artifact paths as folders), plus only --params/--set."""
    from components import runtime

    ran = []
    monkeypatch.setattr(runtime, "cyclegan", lambda argv: ran.append(argv))
    folders = {name: f"/kfp/{name}" for name in FOLDERS}
    runtime.run_step(step.name, "train: {n_epochs: 3}\n", folders, options=steps.DVC_OPTIONS,
                     overrides={"n_epochs": 7} if step.name == "train" else None)
    expected = step.argv(folders, steps.DVC_OPTIONS)
    assert len(ran) == len(expected)
    for got, want in zip(ran, expected):
        assert got[:len(want)] == want
        extra = got[len(want):]
        assert extra[0] == "--params" and all(a == "--set" for a in extra[2::2])
    if step.name == "train":
        assert ran[0][ran[0].index("--resume") + 1] == "auto"   # the same resume rule as dvc repro
        assert "train.n_epochs=7" in ran[0]


def test_optional_parts_appear_only_when_set():
    train = steps.BY_NAME["train"]
    (plain, _), (mirrored, _) = train.argv(FOLDERS), train.argv(FOLDERS, {"mirror": "s3://b/p"})
    assert "--mirror" not in plain and mirrored[-2:] == ["--mirror", "s3://b/p"]
    (launched, _) = train.argv(FOLDERS, {"nproc": 4, "mirror": "s3://b/p"})
    assert "--nproc-per-node" not in plain and launched[launched.index("--nproc-per-node") + 1] == "4"
    assert "--nproc-per-node" not in train.argv(FOLDERS, {"nproc": None})[0]
    assert "nproc" not in steps.DVC_OPTIONS   # dvc repro trains in one process
    assert "--promote" not in steps.BY_NAME["register"].argv(FOLDERS, {"promote": False})[0]


def test_every_pipeline_override_is_a_pipeline_parameter_and_a_cli_flag():
    from pipeline.pipeline import build_pipeline
    from training.cli import build_parser

    signature = inspect.signature(build_pipeline(params="").pipeline_func)
    assert set(steps.PIPELINE_OVERRIDES) <= set(signature.parameters)
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    flags = {opt for action in subparsers.choices["pipeline"]._actions for opt in action.option_strings}
    assert {f"--{name.replace('_', '-')}" for name in steps.PIPELINE_OVERRIDES} <= flags
    assert steps.overrides_from({"n_epochs": 5, "source": "", "n_epochs_decay": -1}) == ["train.n_epochs=5"]
    with pytest.raises(ValueError, match="unknown pipeline override"):
        steps.overrides_from({"lr": 1})


def test_params_yaml_validates_against_the_generated_schema():
    """params.schema.json is current, and params.yaml and the profiles satisfy it (the same
    schema rejects what the config rejects)."""
    import json

    import jsonschema

    from training.commands.params import schema

    committed = json.loads((ROOT / "params.schema.json").read_text())
    assert committed == schema(), "regenerate with: cyclegan params --schema params.schema.json"
    for path in (ROOT / "params.yaml", ROOT / "profiles" / "tests.yaml", ROOT / "profiles" / "paper.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), committed)
    bad = yaml.safe_load((ROOT / "params.yaml").read_text())
    bad["train"]["lr_policy"] = "sometimes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, committed)
    bad = yaml.safe_load((ROOT / "params.yaml").read_text())
    bad["serve"]["max_batch_size"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, committed)
