"""Nightly Kubeflow runs that do not retrain for nothing: the train task is keyed on content (the
prepared data's hash, the data/model/train params, the training code, the image, the number of
processes), never on the pipeline run, and so are the tasks it depends on. The end-to-end proof
(a second local run whose train task is a cache hit; a new picture in the source trains again)
is tests/pipeline/test_pipeline.py::test_local_pipeline_run_end_to_end."""
from __future__ import annotations

import shutil

import pytest
import yaml

from helpers import TESTS_PROFILE, make_images
from helpers.mlops import write_tests_params
from components import runtime
from training import steps
from training.cli import main


def _params(source, **sections) -> str:
    document = yaml.safe_load(TESTS_PROFILE.read_text())
    document["prepare"]["source"] = str(source)
    for section, values in sections.items():
        document.setdefault(section, {}).update(values)
    return yaml.safe_dump(document)


@pytest.fixture
def source(tmp_path, tiny_data):
    """A folder source (trainA/ trainB/ testA/ testB/) that can gain a picture."""
    return shutil.copytree(tiny_data, tmp_path / "source")


def test_keys_are_equal_for_the_same_content_and_change_with_it(source):
    data_key, train_key = runtime.fingerprint(_params(source))
    assert (data_key, train_key) == runtime.fingerprint(_params(source))   # a second nightly run
    assert len(data_key) == len(train_key) == 64

    def key(params=None, **kwargs):
        return runtime.train_key(params or _params(source), data_key, **kwargs)

    assert key() == train_key
    # what changes what is trained
    assert key(image="registry.example/cyclegan:1.3") != train_key
    assert key(_params(source, model={"ngf": 12})) != train_key
    assert key(_params(source, data={"crop_size": 24, "load_size": 24})) != train_key
    assert key(_params(source, train={"lr": 0.001})) != train_key
    assert key(overrides={"n_epochs": 3}) != train_key
    assert key(gpus=2) != train_key                     # two processes: twice the batch
    assert runtime.train_key(_params(source), "0" * 64) != train_key
    # and what does not
    assert key(gpus=1) == train_key                     # one GPU: one process, as on a CPU
    assert key(overrides={"n_epochs": -1, "source": ""}) == train_key   # unset overrides
    assert key(_params(source, train={"lr": 0.0002})) == train_key      # a default spelled out
    assert key(_params(source, evaluate={"batch_size": 2}, register={"kid_margin": 0.01})) == train_key


def test_a_new_picture_in_the_source_is_new_data(source):
    data_key, train_key = runtime.fingerprint(_params(source))
    make_images(source / "trainA", 1, seed=99)[0].rename(source / "trainA" / "new_horse.png")
    new_data, new_train = runtime.fingerprint(_params(source))
    assert new_data != data_key and new_train != train_key


def test_the_train_key_follows_the_training_code_wherever_it_is_installed(tmp_path):
    """The code part hashes the step table's code folders by their path inside the package
    root, so a checkout and an image with the same code agree, and any edit there is new code."""
    train = steps.BY_NAME["train"]
    copy = tmp_path / "site-packages"
    for folder in train.code:
        shutil.copytree(steps.CODE_ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    config = {section: {"x": 1} for section in train.params}
    key = steps.content_key(train, config, {"data": "d"})
    assert steps.content_key(train, config, {"data": "d"}, code_root=copy) == key
    (copy / train.code[0] / "__pycache__").mkdir(exist_ok=True)
    (copy / train.code[0] / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"compiled")
    assert steps.content_key(train, config, {"data": "d"}, code_root=copy) == key
    edited = sorted((copy / "training" / "engine").glob("*.py"))[0]
    edited.write_text(edited.read_text() + "\n# a change\n")
    assert steps.content_key(train, config, {"data": "d"}, code_root=copy) != key
    assert steps.code_version(("training/evaluation",)) != steps.code_version(train.code)


def test_prepare_refuses_data_other_than_its_key(tmp_path, source, monkeypatch):
    """prepare is cached on the data key, so what it hands on must be what the key names."""
    from types import SimpleNamespace

    from components.prepare import prepare

    params = _params(source)
    data_key, _ = runtime.fingerprint(params)
    out = SimpleNamespace(path=str(tmp_path / "prepared"), metadata={})
    prepare.python_func(params=params, source="", data=out, data_key=data_key)
    assert out.metadata["manifest_sha256"] == data_key
    with pytest.raises(RuntimeError, match="the source changed while the pipeline ran"):
        again = SimpleNamespace(path=str(tmp_path / "prepared-again"), metadata={})
        prepare.python_func(params=params, source="", data=again, data_key="f" * 64)


def _run_specific(value) -> list[str]:
    """Every placeholder in a task's inputs that the run fills in (``{{$.pipeline_job_uuid}}``,
    the job name, the task id, the times, ...); ``{{$.inputs...}}`` names a pipeline parameter."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in _run_specific(v)]
    if isinstance(value, list):
        return [p for v in value for p in _run_specific(v)]
    if isinstance(value, str):
        return [value] if value.replace("{{$.inputs.", "").count("{{$") else []
    return []


def test_the_compiled_pipeline_keys_cached_tasks_on_content_not_on_the_run(tmp_path):
    out = tmp_path / "pipeline.yaml"
    assert main(["pipeline", "compile", "--output", str(out), "--params",
                 str(write_tests_params(tmp_path / "p.yaml"))]) == 0
    tasks = yaml.safe_load_all(out.read_text()).__next__()["root"]["dag"]["tasks"]
    cached = {name for name, task in tasks.items() if task.get("cachingOptions", {}).get("enableCache")}
    assert cached == {"prepare", "train", "select", "evaluate", "export"}
    for name in cached:   # no job id, job name, task id or time among their inputs
        assert _run_specific(tasks[name]["inputs"]) == [], name
    # the keys come from the never-cached fingerprint task
    def output_of(task, parameter):
        return tasks[task]["inputs"]["parameters"][parameter]["taskOutputParameter"]
    assert output_of("train", "train_key") == {"producerTask": "fingerprint", "outputParameterKey": "train_key"}
    assert output_of("prepare", "data_key") == {"producerTask": "fingerprint", "outputParameterKey": "data_key"}
    assert tasks["train"]["inputs"]["artifacts"]["data"]["taskOutputArtifact"]["producerTask"] == "prepare"
    # the fingerprint sees what the train task will be given
    for parameter in ("params", "source", "n_epochs", "n_epochs_decay", "gpus", "image"):
        assert tasks["fingerprint"]["inputs"]["parameters"][parameter] == {"componentInputParameter": parameter}
