"""Compute threads come from the CPUs this process may really use (affinity, cgroup quota) and,
while training, follow the CPUs other processes leave free (``ThreadGovernor``): spinning OpenMP
threads crawl on a CPU shared with another job, and waiting passively instead halves the speed
on CPUs of our own (bench/RESULTS.md, "threads")."""
from __future__ import annotations

import os

import pytest
import torch

from training.utils import ThreadGovernor, cgroup_cpu_quota, configure_threads, usable_cpus


def _cgroup(tmp_path, v2: str | None = None, v1: tuple[int, int] | None = None):
    if v2 is not None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return tmp_path


@pytest.mark.parametrize("v2,v1,quota", [("150000 100000", None, 1.5), ("max 100000", None, None),
                                         (None, (200000, 100000), 2.0), (None, (-1, 100000), None),
                                         (None, None, None)])
def test_cgroup_quota_v1_and_v2(tmp_path, v2, v1, quota):
    assert cgroup_cpu_quota(_cgroup(tmp_path, v2, v1)) == quota


def test_a_cpu_limit_caps_the_threads_below_the_cores_we_see(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert usable_cpus(_cgroup(tmp_path / "a", "150000 100000")) == 1    # limit 1.5 CPUs: one thread
    assert usable_cpus(_cgroup(tmp_path / "b", "300000 100000")) == 3
    assert usable_cpus(_cgroup(tmp_path / "c", "max 100000")) == 8      # no limit: the affinity mask
    assert usable_cpus(_cgroup(tmp_path / "d", "50000 100000")) == 1     # never below one
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert usable_cpus(_cgroup(tmp_path / "e", "max 100000")) == 1      # taskset / cpuset


def test_configure_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr("training.utils.usable_cpus", lambda *a: 2)
        monkeypatch.setattr("training.utils._cpu_seconds", lambda *a: 100.0)   # nobody else busy
        assert configure_threads(0) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


class Machine:
    """The machine-wide busy CPU seconds and this process's own, advanced by hand (a stand-in
    for /proc/stat and the kernel's accounting, which a test cannot control)."""

    def __init__(self):
        self.now, self.busy, self.own = 0.0, 1000.0, 5.0

    def run(self, seconds: float, ours: float, others: float) -> None:
        """``seconds`` pass with ``ours`` and ``others`` CPUs busy."""
        self.now += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds


@pytest.fixture
def machine(monkeypatch):
    m = Machine()
    monkeypatch.setattr("training.utils._cpu_seconds", lambda *a: m.busy)
    before = torch.get_num_threads()
    yield m
    torch.set_num_threads(before)


def test_the_governor_leaves_a_busy_neighbour_its_core_and_takes_it_back(machine):
    governor = ThreadGovernor(2, interval_s=10, clock=lambda: machine.now, own_cpu=lambda: machine.own)
    assert governor.poll() is None                      # the first call only marks the start
    machine.run(5, ours=2, others=0)
    assert governor.poll() is None and governor.threads == 2   # not an interval yet: nothing read
    machine.run(5, ours=2, others=0)
    assert governor.poll() is None and governor.threads == 2   # alone: both CPUs stay ours
    machine.run(10, ours=2, others=1)                   # a job beside us holds a core
    assert governor.poll() == 1 and torch.get_num_threads() == 1
    machine.run(10, ours=1, others=1)
    assert governor.poll() is None and governor.threads == 1
    machine.run(10, ours=1, others=0.2)                 # it ended: a little noise only
    assert governor.poll() == 2 and torch.get_num_threads() == 2


def test_the_governor_never_goes_below_one_or_above_its_limit(machine):
    governor = ThreadGovernor(4, interval_s=1, clock=lambda: machine.now, own_cpu=lambda: machine.own)
    governor.poll()
    machine.run(1, ours=4, others=7)                    # others want more than the machine has
    assert governor.poll() == 1
    machine.run(1, ours=1, others=0)
    assert governor.poll() == 4
    machine.run(1, ours=4, others=1.4)                  # 2.6 free rounds to 3
    assert governor.poll() == 3


def test_the_first_count_comes_from_a_short_sample(machine, monkeypatch):
    governor = ThreadGovernor(2, clock=lambda: machine.now, own_cpu=lambda: machine.own)
    monkeypatch.setattr("time.sleep", lambda s: machine.run(s, ours=0, others=1))
    assert governor.initial() == 1
    monkeypatch.setattr("time.sleep", lambda s: machine.run(s, ours=0, others=0))
    assert ThreadGovernor(2, clock=lambda: machine.now, own_cpu=lambda: machine.own).initial() == 2


def test_without_proc_stat_the_limit_stands(tmp_path):
    assert ThreadGovernor(3, stat=tmp_path / "missing").initial() == 3


def test_training_polls_the_governor_every_step(tiny_data, tmp_path):
    from training.config import load_config
    from training.engine.trainer import train

    class Counting:
        polls = 0

        def poll(self):
            self.polls += 1

    cfg = load_config(None, ["model.ngf=4", "model.ndf=4", "model.netG=resnet_1blocks", "data.load_size=32",
                             "data.crop_size=32", "train.n_epochs=1", "train.n_epochs_decay=0",
                             "train.max_iters_per_epoch=3", "data.num_workers=0", "train.sample_every=0"])
    governor = Counting()
    summary = train(cfg, tiny_data, tmp_path / "run", progress=False, threads=governor)
    assert governor.polls == summary["iterations"] == 3


def test_the_command_leaves_the_openmp_wait_policy_alone(monkeypatch):
    """Waiting passively halved the demo's speed on free CPUs; the governor handles contention."""
    from training.cli import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["steps"]) == 0
    assert "OMP_WAIT_POLICY" not in os.environ


def test_serve_threads_zero_resolves_to_the_usable_cpus(monkeypatch):
    from training.commands.serve import serve_section
    from training.config import load_config

    monkeypatch.setattr("training.utils.usable_cpus", lambda *a: 3)
    assert serve_section(load_config(None))["threads"] == 3
    assert serve_section(load_config(None, ["serve.threads=5"]))["threads"] == 5
