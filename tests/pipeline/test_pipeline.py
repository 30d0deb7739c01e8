"""The Kubeflow pipeline: compiled YAML (GPU request, node selector, images, retries, caching),
the arguments given to kfp.Client for submit and schedule (a stand-in client: no KFP server
runs here), and one local end-to-end run of the very same pipeline with the tests profile."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import CYCLEGAN
from helpers.mlops import write_tests_params, use_mlflow_store
from training.cli import main

IMAGE_PLACEHOLDER = "{{$.inputs.parameters['pipelinechannel--image']}}"


def _compile(tmp_path, *extra) -> tuple[dict, dict]:
    out = tmp_path / "pipeline.yaml"
    assert main(["pipeline", "compile", "--output", str(out), "--params", str(write_tests_params(tmp_path / "p.yaml")),
                 *extra]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return docs[0], platform


def test_compiled_pipeline_requests_a_gpu_node_for_train(tmp_path):
    spec, platform = _compile(tmp_path, "--gpu-node-selector", "cloud.google.com/gke-accelerator=nvidia-l4",
                              "--secret", "cyclegan-credentials")
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{s}" for s in ("fingerprint", "prepare", "train", "select", "evaluate",
                                                    "export", "register")}
    train = executors["exec-train"]["container"]["resources"]
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus']}}"
    assert train["resourceCpuRequest"] == "4" and train["resourceMemoryRequest"] == "16G"
    for name, executor in executors.items():
        assert executor["container"]["image"] == IMAGE_PLACEHOLDER, name
        if name != "exec-train":
            assert "accelerator" not in executor["container"].get("resources", {}), name
    assert platform["exec-train"]["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    tolerations = platform["exec-train"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}.items() <= tolerations[0].items()
    for name in executors:  # credentials reach every task
        assert platform[name]["secretAsEnv"][0]["secretName"] == "cyclegan-credentials"
    assert "nodeSelector" not in platform["exec-prepare"]

    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 3
    # evaluate, export and register take the checkpoint the select task chose
    for name in ("evaluate", "export", "register"):
        selected = tasks[name]["inputs"]["artifacts"]["selected"]["taskOutputArtifact"]
        assert selected == {"producerTask": "select", "outputArtifactKey": "selected"}, name
    assert tasks["register"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["train"]["cachingOptions"]["enableCache"] is True
    # the GPUs it requests are the processes it launches
    assert tasks["train"]["inputs"]["parameters"]["gpus"]["componentInputParameter"] == "gpus"
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert set(inputs) == {"params", "image", "source", "n_epochs", "n_epochs_decay", "gpus", "checkpoint_prefix",
                           "tracking_uri", "promote"}
    # the one params document is the tests profile given at compile time
    assert yaml.safe_load(inputs["params"]["defaultValue"])["model"]["ngf"] == 8


def test_compile_without_gpu_placement_options(tmp_path):
    _, platform = _compile(tmp_path, "--gpu-toleration", "", "--gpu-node-selector", "pool=gpu")
    assert "tolerations" not in platform.get("exec-train", {})
    assert platform["exec-train"]["nodeSelector"]["labels"] == {"pool": "gpu"}


class StandInClient:
    """Records what the CLI hands to kfp.Client; reads the package while it exists."""
    calls: list = []

    def __init__(self, **kwargs):
        StandInClient.calls.append(("__init__", kwargs))

    def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
        StandInClient.calls.append(("run", {"pipeline": yaml.safe_load_all(Path(pipeline_file).read_text()),
                                            **kwargs}))
        return type("Result", (), {"run_id": "run-123"})()

    def create_experiment(self, name, namespace=None):
        StandInClient.calls.append(("experiment", {"name": name, "namespace": namespace}))
        return type("Experiment", (), {"experiment_id": "exp-7"})()

    def create_recurring_run(self, **kwargs):
        kwargs["pipeline"] = yaml.safe_load_all(Path(kwargs["pipeline_package_path"]).read_text())
        StandInClient.calls.append(("recurring", kwargs))
        return type("Job", (), {"recurring_run_id": "job-9"})()


@pytest.fixture
def stand_in_client(monkeypatch):
    import kfp

    StandInClient.calls = []
    monkeypatch.setattr(kfp, "Client", StandInClient)
    return StandInClient


def test_submit_passes_params_document_overrides_and_image(tmp_path, stand_in_client, capsys):
    params = write_tests_params(tmp_path / "p.yaml")
    code = main(["pipeline", "submit", "--host", "https://kfp.example.org", "--namespace", "team-a",
                 "--params", str(params), "--set", "train.lr=0.001", "--image", "registry.example/cyclegan:1.2",
                 "--n-epochs", "5", "--checkpoint-prefix", "s3://ckpts/cyclegan", "--run-name", "nightly-1"])
    assert code == 0
    (init, init_kwargs), (kind, run) = stand_in_client.calls
    assert init_kwargs == {"host": "https://kfp.example.org", "namespace": "team-a"}
    assert kind == "run" and run["run_name"] == "nightly-1" and run["experiment_name"] == "cyclegan"
    assert run["namespace"] == "team-a"
    args = run["arguments"]
    assert args["image"] == "registry.example/cyclegan:1.2"
    assert args["n_epochs"] == 5 and args["checkpoint_prefix"] == "s3://ckpts/cyclegan"
    assert "source" not in args and "promote" not in args   # not given: pipeline defaults apply
    document = yaml.safe_load(args["params"])
    assert document["train"]["lr"] == 0.001 and document["model"]["ngf"] == 8
    spec = next(run["pipeline"])
    assert spec["pipelineInfo"]["name"] == "cyclegan"
    assert "run-123" in capsys.readouterr().out


def test_schedule_creates_a_recurring_run(tmp_path, stand_in_client):
    params = write_tests_params(tmp_path / "p.yaml")
    code = main(["pipeline", "schedule", "--host", "http://127.0.0.1:8888", "--cron", "30 2 * * 1",
                 "--params", str(params), "--source", "horse2zebra", "--no-promote", "--run-name", "weekly"])
    assert code == 0
    calls = dict((k, v) for k, v in stand_in_client.calls)
    assert calls["__init__"] == {"host": "http://127.0.0.1:8888"}
    assert calls["experiment"]["name"] == "cyclegan"
    job = calls["recurring"]
    assert job["experiment_id"] == "exp-7" and job["job_name"] == "weekly"
    assert job["cron_expression"] == "0 30 2 * * 1"      # KFP's six fields, seconds first
    assert job["max_concurrency"] == 1 and job["no_catchup"] is True and job["enabled"] is True
    assert job["params"]["source"] == "horse2zebra" and job["params"]["promote"] is False
    assert yaml.safe_load(job["params"]["params"])["model"]["ngf"] == 8
    assert next(job["pipeline"])["pipelineInfo"]["name"] == "cyclegan"


def test_bad_cron_and_bad_params_fail_before_contacting_the_server(tmp_path, stand_in_client, capsys):
    params = write_tests_params(tmp_path / "p.yaml")
    assert main(["pipeline", "schedule", "--host", "http://h", "--cron", "every night", "--params", str(params)]) == 2
    assert main(["pipeline", "submit", "--host", "http://h", "--params", str(params), "--set", "train.lr=fast"]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert main(["pipeline", "submit", "--params", str(params)]) == 2
    assert stand_in_client.calls == []


@pytest.mark.parametrize("flag, caching", [([], True), (["--no-cache"], False)])
def test_local_runs_use_kfp_local_caching_unless_told_not_to(tmp_path, monkeypatch, flag, caching):
    import kfp.local

    class Stop(Exception):
        pass

    seen = {}

    def init(**kwargs):
        seen.update(kwargs)
        raise Stop   # the settings are what this test is about; nothing needs to run

    monkeypatch.setattr(kfp.local, "init", init)
    with pytest.raises(Stop):
        main(["pipeline", "run", "--local", "--params", str(write_tests_params(tmp_path / "p.yaml")),
              "--pipeline-root", str(tmp_path / "root"), *flag])
    assert seen["enable_caching"] is caching and seen["pipeline_root"] == str((tmp_path / "root").resolve())


@pytest.mark.slow
def test_local_pipeline_run_end_to_end(tmp_path, monkeypatch, cli_env, s3_env, tiny_data):
    """`cyclegan pipeline run --local` runs the compiled pipeline's very components here, with
    the train checkpoint mirrored to the loopback S3 server under its train key. Run again on
    the same data, params and code, it trains nothing (kfp.local's cache, keyed like the
    cluster's); a new picture in the source trains again."""
    import shutil

    import mlflow

    uri = use_mlflow_store(tmp_path, monkeypatch)
    bucket = s3_env("kfp-checkpoints")
    source = shutil.copytree(tiny_data, tmp_path / "source")   # a folder that can gain a picture
    params = write_tests_params(tmp_path / "params.yaml", evaluate={"cache_dir": str(tmp_path / "features")})
    env = {k: v for k, v in cli_env.items() if not k.startswith("MLFLOW_")}
    env.update({k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MLFLOW_"))})
    env["MLFLOW_TRACKING_URI"] = uri
    env["CYCLEGAN_IMAGE"] = "local-venv"
    root = tmp_path / "root"

    def run_pipeline() -> tuple[str, Path]:
        before = set(root.glob("cyclegan-*"))
        proc = subprocess.run([*CYCLEGAN, "pipeline", "run", "--local", "--params", str(params), "--pipeline-root",
                               str(root), "--checkpoint-prefix", f"s3://{bucket}/cyclegan", "--source", str(source)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (run_dir,) = set(root.glob("cyclegan-*")) - before
        return proc.stdout, run_dir

    def train_keys() -> set[str]:
        keys = [o["Key"] for o in s3_env.client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        return {k.split("/")[1] for k in keys if k.endswith("/checkpoints/latest.pt")}

    out, run_dir = run_pipeline()
    assert "pipeline finished: gate pass, promoted" in out
    model = run_dir / "train" / "model"
    assert (model / "checkpoints" / "latest.pt").is_file()
    assert {p.name for p in (run_dir / "export" / "onnx").iterdir()} >= {"G_AtoB.onnx", "G_BtoA.onnx", "verify.json"}
    assert (run_dir / "select" / "selected" / "selected.pt").is_file()
    metrics = json.loads((run_dir / "evaluate" / "evaluation" / "metrics.json").read_text())
    assert "kid_AtoB_mean" in metrics
    assert "<table" in (run_dir / "evaluate" / "report").read_text()
    decision = json.loads((run_dir / "register" / "decision" / "decision.json").read_text())
    assert decision["verdict"] == "pass" and decision["champion_after"] == decision["challenger_version"]

    # the checkpoint was mirrored under the prefix, keyed on what was trained
    (key,) = train_keys()
    assert len(key) == 64
    keys = [o["Key"] for o in s3_env.client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert f"cyclegan/{key}/mlflow_run_id" in keys, keys

    # one MLflow run holds every step's part
    run_id = (model / "mlflow_run_id").read_text().strip()
    run = mlflow.MlflowClient(uri).get_run(run_id)
    assert run.data.params["model.ngf"] == "8"
    assert {"loss_G", "lr", "kid_AtoB_mean"} <= set(run.data.metrics)
    assert run.data.tags["container_image"] == "local-venv"
    assert {f"cyclegan.logged.{p}" for p in ("train", "select", "evaluate", "export")} <= set(run.data.tags)
    assert decision["run_id"] == run_id
    champion = mlflow.MlflowClient(uri).get_model_version_by_alias("cyclegan", "champion")
    assert champion.run_id == run_id

    # the next night, nothing changed: the fingerprint runs, train/evaluate/export are cache
    # hits (no task folder of this run), and register finds the very version it registered
    out, again = run_pipeline()
    assert not {"train", "evaluate", "export"} & {p.name for p in again.iterdir()}, sorted(again.iterdir())
    assert "reused from the cache: evaluate, export, prepare, select, train" in out
    second = json.loads((again / "register" / "decision" / "decision.json").read_text())
    assert second["challenger_version"] == decision["challenger_version"] and second["run_id"] == run_id
    assert second["action"] == "none: already champion"
    assert train_keys() == {key}
    assert len(mlflow.MlflowClient(uri).search_model_versions("name='cyclegan'")) == 1

    # a new picture in the source: new data, so the train task runs, under a new key
    from helpers import make_images

    make_images(source / "trainA", 1, seed=99)[0].rename(source / "trainA" / "new_horse.png")
    out, changed = run_pipeline()
    assert (changed / "train" / "model" / "checkpoints" / "latest.pt").is_file()
    assert "reused from the cache" not in out
    third = json.loads((changed / "register" / "decision" / "decision.json").read_text())
    assert third["challenger_version"] != decision["challenger_version"]
    assert len(train_keys()) == 2 and key in train_keys()
