"""Compute threads come from the CPUs this process may really use, and OpenMP waits passively
(spinning threads crawl on a shared or throttled CPU: bench/RESULTS.md, "threads")."""
from __future__ import annotations

import os

import pytest
import torch

from training.utils import cgroup_cpu_quota, configure_threads, usable_cpus


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
        assert configure_threads(0) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_command_makes_openmp_wait_passively_unless_told_otherwise(monkeypatch, capsys):
    from training.cli import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["steps"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["steps"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_serve_threads_zero_resolves_to_the_usable_cpus(monkeypatch):
    from training.commands.serve import serve_section
    from training.config import load_config

    monkeypatch.setattr("training.utils.usable_cpus", lambda *a: 3)
    assert serve_section(load_config(None))["threads"] == 3
    assert serve_section(load_config(None, ["serve.threads=5"]))["threads"] == 5
