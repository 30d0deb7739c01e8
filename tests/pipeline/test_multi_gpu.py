"""More than one GPU in the Kubeflow train task: ``cyclegan train --nproc-per-node N`` launches N
processes with torchrun (the launcher keeps the checkpoint mirror), and the train component
asks for it when ``gpus > 1``. On a CPU the processes use gloo, so the local runner shows that
two processes train exactly what one process trains at batch 2."""
# No `from __future__ import annotations`: KFP reads the test pipeline's parameter types.

import importlib.util
from types import SimpleNamespace

import pytest
import torch
import yaml

from helpers import ROOT, TESTS_PROFILE
from helpers.mlops import use_mlflow_store
from training.cli import build_parser, main
from training.commands import train as train_command


def _train_parser():
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    return subparsers.choices["train"]


def test_the_launcher_passes_every_train_option_to_the_workers_but_its_own():
    """A new `cyclegan train` option that the launcher forgot to forward fails here."""
    parser = build_parser()
    given = ["train", "--params", "p.yaml", "--set", "train.lr=0.001", "--set", "model.ngf=4", "--data", "d",
             "--out", "o", "--resume", "auto", "--device", "cpu", "--seed", "3", "--mirror", "s3://b/p", "--track",
             "--no-progress", "--nproc-per-node", "2"]
    args = parser.parse_args(given)
    worker = parser.parse_args(["train", *train_command.worker_argv(args)])
    options = {a.dest for a in _train_parser()._actions if a.option_strings and a.dest != "help"}
    assert set(train_command.LAUNCHER_OPTIONS) < options
    for name in options - set(train_command.LAUNCHER_OPTIONS) - {"_run"}:
        assert getattr(worker, name) == getattr(args, name), name
    # the launcher's own options keep their defaults in a worker: no nested launcher, no second mirror
    assert worker.nproc_per_node == 1 and worker.mirror is None
    for option in ("--params", "--set", "--data", "--out", "--resume", "--device", "--seed", "--track",
                   "--no-progress"):   # every option above was given, so every one must be forwarded
        assert option in train_command.worker_argv(args), option


def test_the_train_component_asks_for_one_process_per_gpu_only_with_more_than_one(monkeypatch):
    from components import runtime
    from components.train import train
    from training import steps

    options = {}
    monkeypatch.setattr(runtime, "run_step", lambda name, params, folders, **kw: options.update(kw["options"]))
    for gpus, expected in ((0, None), (1, None), (2, "2"), (8, "8")):
        model = SimpleNamespace(path="/kfp/model", metadata={})
        train.python_func(params="", data=SimpleNamespace(path="/kfp/data"), model=model, gpus=gpus)
        argv = steps.BY_NAME["train"].argv({"data": "/kfp/data", "train": "/kfp/model"}, options)[0]
        launched = argv[argv.index("--nproc-per-node") + 1] if "--nproc-per-node" in argv else None
        assert launched == expected, gpus
        assert model.metadata["processes"] == max(gpus, 1)


def test_bad_launcher_requests_fail_with_one_line(tmp_path, tiny_data, monkeypatch, capsys):
    base = ["train", "--params", str(TESTS_PROFILE), "--data", str(tiny_data), "--out", str(tmp_path / "run")]
    assert main([*base, "--nproc-per-node", "0"]) == 2
    assert "--nproc-per-node 0: must be 1 or more" in capsys.readouterr().err
    # one process per GPU: more processes than visible GPUs is refused before anything starts
    assert main([*base, "--nproc-per-node", "2", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert f"--nproc-per-node 2: one process per GPU, but {torch.cuda.device_count()} CUDA device(s)" in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*base, "--nproc-per-node", "2"]) == 2
    assert "already runs under torchrun" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_bad_params_file_fails_in_the_launcher_not_in_the_workers(tmp_path, tiny_data, capsys):
    code = main(["train", "--params", str(TESTS_PROFILE), "--set", "train.lr=fast", "--data", str(tiny_data),
                 "--out", str(tmp_path / "run"), "--nproc-per-node", "2"])
    captured = capsys.readouterr()
    assert code == 2 and "train.lr" in captured.err
    assert "launching" not in captured.err


def _noise_parameters() -> set[tuple[str, str]]:
    """Conv biases right before an affine-free instance norm: their true gradient is 0, so what
    Adam makes of them is summation-order noise (bench/exactness.py)."""
    from training.config import load_config
    from training.models.cyclegan import CycleGAN

    spec = importlib.util.spec_from_file_location("exactness", ROOT / "bench" / "exactness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = CycleGAN(load_config(TESTS_PROFILE, required=True))
    return {(net, p) for net in ("G_A", "G_B", "D_A", "D_B") for p in module.zero_gradient_biases(getattr(model, net))}


@pytest.mark.slow
def test_local_pipeline_train_task_with_two_gpus_trains_like_one_process_at_batch_2(tmp_path, monkeypatch, cli_env,
                                                                                     s3_env, capfd):
    """The train component under kfp.local's subprocess runner with gpus=2 launches two gloo
    processes (torchrun) that end with the weights of one process at train.batch_size=2 from the
    same seed; its checkpoint is mirrored by the launcher.

    Why the two set-ups are the same computation: the epoch order is one global list of (A, B,
    augmentation seed) keys; process r takes keys r, r+2, ..., so step i of the two processes
    sees keys 2i and 2i+1, the very pair of the batch-2 step i. Instance norm and the losses are
    per image and averaged over the batch, and DistributedDataParallel averages the two
    processes' gradients. The image pools differ only once full (each process draws from its
    own pool with its own generator); with a few fakes per pool against a pool of 50 they return
    every fake as is, as one pool at batch 2 does.

    Why a short run: the two differ in fp32 summation order, and GAN training amplifies such
    noise fast. Measured on the synthetic tests data: after 4 steps the weights agree to 1e-6
    (relative); after 12 steps to about 3e-3, which is also how far two one-process batch-2 runs
    that differ only in summation order (train.merge_passes) drift apart, while a run with
    another seed is 1.5 away."""
    import kfp.local
    from kfp import dsl

    from components.prepare import prepare as prepare_op
    from components.train import train as train_op

    use_mlflow_store(tmp_path, monkeypatch)
    monkeypatch.setenv("PYTHONPATH", cli_env["PYTHONPATH"])   # the tasks and their workers import the repo
    bucket = s3_env("multi-gpu")
    # 2 epochs of 2 steps: the order across an epoch boundary, the learning-rate decay, the epoch
    # checkpoints. One compute thread per process in both set-ups (the same summation order).
    short = {"deterministic": True, "threads": 1, "max_iters_per_epoch": 2}
    profile = yaml.safe_load(TESTS_PROFILE.read_text())
    profile["train"].update(short)
    one_process = yaml.safe_load(TESTS_PROFILE.read_text())
    one_process["train"].update(short, batch_size=2)

    @dsl.pipeline(name="multi-gpu")
    def two_ways(params: str, params_batch_2: str, checkpoint_prefix: str):
        prep = prepare_op(params=params, source="")
        train_op(params=params, data=prep.outputs["data"], gpus=2, checkpoint_prefix=checkpoint_prefix,
                 train_key="two-gpus").set_display_name("two-processes")
        train_op(params=params_batch_2, data=prep.outputs["data"], gpus=0).set_display_name("one-process")

    root = tmp_path / "root"
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    two_ways(params=yaml.safe_dump(profile), params_batch_2=yaml.safe_dump(one_process),
             checkpoint_prefix=f"s3://{bucket}/ckpt")

    states = {}
    for path in root.glob("multi-gpu-*/train*/model/checkpoints/latest.pt"):
        state = torch.load(path, weights_only=True)
        states[state["config"]["train"]["batch_size"]] = state
    two, one = states[1], states[2]
    assert two["global_iter"] == one["global_iter"] == 4
    # the task launched two processes (one process at batch 1 would see half the images per step)
    assert "cyclegan train: launching 2 processes" in capfd.readouterr().out   # kfp.local prints task output
    assert max(len(two["pools"][d]["images"]) for d in "AB") < two["pools"]["A"]["size"]

    noise, checked = _noise_parameters(), 0
    for net in ("G_A", "G_B", "D_A", "D_B"):
        for name, weight in one["models"][net].items():
            if (net, name) in noise:
                continue
            other = two["models"][net][name]
            difference = ((other - weight).norm() / weight.norm()).item()
            assert difference < 1e-4, f"{net}.{name}: relative difference {difference:.2e}"
            checked += 1
    assert checked > 30

    # the launcher restored (nothing yet) and synced the mirror: the final checkpoint is there
    s3_env.client.download_file(bucket, "ckpt/two-gpus/checkpoints/latest.pt", str(tmp_path / "mirrored.pt"))
    mirrored = torch.load(tmp_path / "mirrored.pt", weights_only=True)
    assert mirrored["global_iter"] == 4
    assert torch.equal(mirrored["models"]["G_A"]["model.1.weight"], two["models"]["G_A"]["model.1.weight"])
