"""torch.distributed (gloo, CPU): 2 processes x batch 1 == 1 process x batch 2."""
import csv
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from helpers import distributed as helpers_distributed
from helpers import ROOT, TESTS_PROFILE
from training.models.cyclegan import CycleGAN
from training.config import load_config


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zero_gradient_biases() -> set[str]:
    """Conv biases right before an affine-free instance norm: true gradient 0, only noise."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("exactness", ROOT / "bench" / "exactness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = CycleGAN(load_config(TESTS_PROFILE, required=True))
    return {f"{name}.{p}" for name in ("G_A", "G_B", "D_A", "D_B")
            for p in module.zero_gradient_biases(getattr(model, name))}


def test_two_processes_batch_1_give_the_gradients_of_one_process_batch_2(tmp_path):
    torch.set_num_threads(1)
    single = helpers_distributed.one_step_gradients(*helpers_distributed.images(2), distributed=False)
    mp.spawn(helpers_distributed.worker, args=(2, _port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    noise = _zero_gradient_biases()
    assert set(ranks[0]) == set(single)
    checked = 0
    for name, grad in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name}: ranks disagree after all-reduce"
        if name in noise:
            continue
        diff = (ranks[0][name] - grad).norm() / grad.norm()
        assert diff < 1e-4, f"{name}: relative gradient difference {diff:.2e}"
        checked += 1
    assert checked > 20


def test_torchrun_trains_with_two_processes_and_only_rank_0_writes(tmp_path, tiny_data, cli_env):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = tmp_path / "run"
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_port()),
         "-m", "training.cli", "train", "--params", str(TESTS_PROFILE), "--data", str(tiny_data), "--out", str(out),
         "--no-progress", "--set", "train.log_every=1"],
        cwd=ROOT, env=dict(cli_env, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    # 6 items per epoch shared by 2 processes: 3 iterations per epoch, 2 epochs
    assert state["global_iter"] == 6 and state["epoch"] == 2
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]   # one writer: no duplicate rows


def test_the_plateau_metric_is_the_mean_over_every_process(tmp_path, tiny_data):
    """Each rank trains on other images, so its own mean loss differs; stepping the plateau policy
    on it would let the ranks' learning rates diverge. Every rank must step on the same mean."""
    torch.set_num_threads(1)
    mp.spawn(helpers_distributed.plateau_worker, args=(2, _port(), str(tiny_data), str(tmp_path)), nprocs=2,
             join=True)
    ranks = [torch.load(tmp_path / f"plateau{r}.pt", weights_only=True) for r in range(2)]
    # 2 epochs of 2 iterations per rank; G's and D's schedulers each step once per epoch
    assert [len(r["losses"]) for r in ranks] == [4, 4] and [len(r["metrics"]) for r in ranks] == [4, 4]
    assert ranks[0]["losses"] != ranks[1]["losses"]
    for epoch in range(2):
        own = [sum(r["losses"][2 * epoch:2 * epoch + 2]) / 2 for r in ranks]
        assert own[0] != own[1]
        for r in ranks:
            assert r["metrics"][2 * epoch] == r["metrics"][2 * epoch + 1]
            assert r["metrics"][2 * epoch] == pytest.approx(sum(own) / 2, rel=1e-6)
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
