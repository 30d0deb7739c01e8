"""Runs that survive production: a torn or missing latest checkpoint, temporaries left by a
kill, another world size, CUDA RNG states of more devices than are visible, and kept epoch
checkpoints that hold the generators only (in-process, tests-profile networks)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TESTS_PROFILE
from training.config import load_config
from training.engine import checkpoint as checkpoint_module
from training.engine.checkpoint import FORMAT, is_training_state, load_checkpoint, load_generators
from training.engine.trainer import Trainer, train
from training.errors import UserError
from training.layout import TrainRun


def _cfg(*overrides):
    return load_config(TESTS_PROFILE, ["train.sample_every=0", "train.log_every=1", *overrides], required=True)


def _run_and_stop(out, iters: int, *overrides) -> Trainer:
    """A run that saved its latest checkpoint after each of ``iters`` iterations and was then
    stopped, as a kill leaves it: latest.pt at ``iters``, previous.pt at ``iters - 1``."""
    trainer = Trainer(_cfg("train.max_iters_per_epoch=4", *overrides), _run_and_stop.data, out, "cpu")
    out.mkdir(parents=True, exist_ok=True)
    for batch in trainer._loader(0):
        trainer.step(batch["A"], batch["B"])
        trainer.epoch_iter += 1
        trainer.global_iter += 1
        trainer.save(trainer.run.latest)
        if trainer.global_iter == iters:
            break
    return trainer


@pytest.fixture(autouse=True)
def _data(tiny_data):
    _run_and_stop.data = tiny_data


def _tear(path):
    """Keep the first half of a file: what a torn write or a full disk leaves."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


# -- item 2: an unreadable latest checkpoint -----------------------------------------------------

def test_a_save_keeps_the_previous_checkpoint_until_the_new_one_is_written(tmp_path):
    run = TrainRun(tmp_path / "run")
    _run_and_stop(run.root, 3)
    assert torch.load(run.latest, weights_only=True)["global_iter"] == 3
    assert torch.load(run.previous, weights_only=True)["global_iter"] == 2


def test_a_save_that_does_not_read_back_replaces_nothing(tmp_path, monkeypatch):
    run = TrainRun(tmp_path / "run")
    trainer = _run_and_stop(run.root, 2)
    before = {p.name: p.read_bytes() for p in (run.latest, run.previous)}

    def torn_save(obj, f, *args, **kwargs):   # torch.save "succeeds" but leaves half an archive
        real_save(obj, f, *args, **kwargs)
        _tear(Path(f))

    real_save = torch.save
    monkeypatch.setattr(checkpoint_module.torch, "save", torn_save)
    with pytest.raises(Exception):
        trainer.save(run.latest)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (run.latest, run.previous)} == before
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["latest.pt", "previous.pt"]


def test_auto_resume_falls_back_to_the_previous_checkpoint_when_latest_is_torn(tmp_path, capsys):
    run = TrainRun(tmp_path / "run")
    _run_and_stop(run.root, 3)
    _tear(run.latest)
    trainer = Trainer(_cfg("train.max_iters_per_epoch=4"), _run_and_stop.data, run.root, "cpu")
    assert trainer.resume("auto") is True
    assert (trainer.epoch, trainer.epoch_iter, trainer.global_iter) == (0, 2, 2)
    err = capsys.readouterr().err
    assert "latest.pt: not a readable cyclegan checkpoint" in err and "continuing from previous.pt" in err


def test_auto_resume_continues_from_previous_after_a_kill_between_the_two_renames(tmp_path, capsys):
    run = TrainRun(tmp_path / "run")
    _run_and_stop(run.root, 2)
    run.latest.unlink()   # the old latest is already previous.pt, the new one not yet renamed
    trainer = Trainer(_cfg("train.max_iters_per_epoch=4"), _run_and_stop.data, run.root, "cpu")
    with pytest.raises(UserError, match="previous.pt is there"):
        trainer.resume("exact")
    assert trainer.resume("auto") is True and trainer.global_iter == 1
    assert "continuing from previous.pt" in capsys.readouterr().err


def test_auto_resume_starts_over_when_no_checkpoint_reads_and_the_run_completes(tmp_path, capsys):
    run = TrainRun(tmp_path / "run")
    _run_and_stop(run.root, 3)
    _tear(run.latest)
    run.previous.write_bytes(b"")   # a full disk: nothing of it made it
    summary = train(_cfg("train.max_iters_per_epoch=2"), _run_and_stop.data, run.root, resume="auto",
                    progress=False)
    err = capsys.readouterr().err
    assert "no other readable training state" in err and "starting over" in err
    assert summary["iterations"] == 4 and torch.load(run.latest, weights_only=True)["global_iter"] == 4


def test_exact_resume_of_an_unreadable_checkpoint_says_the_whole_reason_on_one_line(tmp_path):
    run = TrainRun(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    # weights_only refuses NumPy arrays, with a reason of several lines and over 1000 characters
    torch.save({"format": FORMAT, "array": np.zeros(3)}, run.latest)
    with pytest.raises(Exception) as raw:
        torch.load(run.latest, weights_only=True)
    last_words = [line for line in str(raw.value).splitlines() if line.strip()][-1].strip()
    trainer = Trainer(_cfg(), _run_and_stop.data, run.root, "cpu")
    with pytest.raises(UserError) as error:
        trainer.resume("exact")
    message = str(error.value)
    assert "\n" not in message and "\x1b" not in message
    assert message.startswith(f"{run.latest}: not a readable cyclegan checkpoint")
    assert "Unsupported global" in message and last_words in message
    assert message.endswith("--resume auto falls back to the newest readable checkpoint")


# -- item 3: temporaries a kill left ------------------------------------------------------------

@pytest.mark.parametrize("resume", ["auto", False])
def test_temporaries_of_killed_writes_are_removed_when_a_run_continues_or_starts_over(tmp_path, resume, capsys):
    run = TrainRun(tmp_path / "run")
    _run_and_stop(run.root, 2)
    run.samples.mkdir()
    leftovers = [run.checkpoints / ".latest.pt.0badf00d.tmp", run.checkpoints / ".epoch_3.pt.12345678.tmp",
                 run.checkpoints / ".previous.pt.abcdef01.tmp", run.root / ".train_log.csv.deadbeef.tmp",
                 run.samples / ".iter_0000004.png.00c0ffee.tmp"]
    for path in leftovers:
        path.write_bytes(b"")   # SIGKILL during torch.save leaves 0 bytes: atomic_path never cleans up
    not_ours = [run.checkpoints / ".notes.txt.tmp", run.root / "my.tmp"]
    for path in not_ours:
        path.write_bytes(b"keep")
    train(_cfg("train.max_iters_per_epoch=4"), _run_and_stop.data, run.root, resume=resume, progress=False)
    assert [p for p in leftovers if p.exists()] == []
    assert all(p.read_bytes() == b"keep" for p in not_ours)
    assert "removed 5 temporary file(s)" in capsys.readouterr().err


# -- item 4: world size, CUDA RNG states ---------------------------------------------------------

def test_exact_resume_refuses_another_world_size_and_auto_starts_over(tmp_path, capsys):
    run = TrainRun(tmp_path / "run")
    trainer = Trainer(_cfg(), _run_and_stop.data, run.root, "cpu")
    trainer.world_size = 2   # as if saved by rank 0 of torchrun --nproc_per_node 2
    trainer.epoch_iter = trainer.global_iter = 1
    trainer.save(run.latest)
    assert torch.load(run.latest, weights_only=True)["world_size"] == 2
    single = Trainer(_cfg(), _run_and_stop.data, run.root, "cpu")
    with pytest.raises(UserError, match="saved by a run of 2 processes, this one has 1 process"):
        single.resume("exact")
    assert single.resume("auto") is False
    assert "it ran with 2 processes, this run has 1 process" in capsys.readouterr().err


class FakeCuda:
    """torch.cuda as a process sees it with ``visible`` GPUs: per-device RNG states, and
    IndexError for a device it cannot see (what torch raises)."""

    def __init__(self, visible: int):
        self.visible = visible
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(visible)}

    def _index(self, device) -> int:
        index = torch.device(device).index if device is not None else 0
        if index is None:
            index = 0
        if index >= self.visible:
            raise IndexError(f"device {index} of {self.visible}")
        return index

    def is_available(self):
        return True

    def device_count(self):
        return self.visible

    def current_device(self):
        return 0

    def get_rng_state(self, device="cuda"):
        return self.states[self._index(device)].clone()

    def get_rng_state_all(self):
        return [self.states[i].clone() for i in range(self.visible)]

    def set_rng_state(self, state, device="cuda"):
        self.states[self._index(device)] = state.clone()

    def set_rng_state_all(self, states):
        for i, state in enumerate(states):
            self.set_rng_state(state, torch.device("cuda", i))

    def install(self, monkeypatch):
        for name in ("is_available", "device_count", "current_device", "get_rng_state", "get_rng_state_all",
                     "set_rng_state", "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))


def _state_with_eight_cuda_states(tmp_path) -> dict:
    """A checkpoint's RNG state as a process that saw 8 GPUs saved it (older format: all)."""
    rng = checkpoint_module.rng_state()
    rng["cuda"] = [torch.full((16,), 100 + i, dtype=torch.uint8) for i in range(8)]
    torch.save({"rng": rng}, tmp_path / "rng.pt")
    return torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]


def test_rng_of_eight_cuda_devices_restores_on_cpu(tmp_path):
    state = _state_with_eight_cuda_states(tmp_path)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    state["torch"] = torch.get_rng_state()
    torch.manual_seed(99)
    checkpoint_module.set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)


def test_rng_of_eight_cuda_devices_restores_where_one_is_visible(tmp_path, monkeypatch):
    state = _state_with_eight_cuda_states(tmp_path)
    cuda = FakeCuda(visible=1)
    cuda.install(monkeypatch)
    checkpoint_module.set_rng_state(state)   # the current device, as the trainer's device cuda:0
    assert torch.equal(cuda.states[0], state["cuda"][0])
    # a run that trained on cuda:5 of 8 (train.device) gets device 5's state back on the one it has
    checkpoint_module.set_rng_state(state, torch.device("cuda", 0), saved_index=5)
    assert torch.equal(cuda.states[0], state["cuda"][5])


def test_rng_state_saves_only_the_device_the_process_uses(monkeypatch):
    cuda = FakeCuda(visible=8)
    cuda.install(monkeypatch)
    state = checkpoint_module.rng_state(torch.device("cuda", 3))
    assert torch.equal(state["cuda"], cuda.states[3])
    one = FakeCuda(visible=1)
    one.install(monkeypatch)
    checkpoint_module.set_rng_state(state, torch.device("cuda", 0))
    assert torch.equal(one.states[0], cuda.states[3])


# -- item 5: kept epoch checkpoints --------------------------------------------------------------

def test_kept_epoch_checkpoints_hold_the_generators_and_still_translate(tmp_path):
    from training.translate import translate_checkpoint

    run = TrainRun(tmp_path / "run")
    train(_cfg("train.max_iters_per_epoch=2", "train.save_epoch_freq=1"), _run_and_stop.data, run.root,
          progress=False)
    assert [p.name for p in run.epochs()] == ["epoch_1.pt", "epoch_2.pt"]
    latest = load_checkpoint(run.latest)
    assert is_training_state(latest) and not run.previous.exists()   # a finished run drops the fallback
    for path in run.epochs():
        state = load_checkpoint(path)
        assert set(state["models"]) == {"G_A", "G_B"} and not is_training_state(state)
        assert state["epoch"] == run.epoch_number(path) and state["config"] == latest["config"]
        assert os.path.getsize(path) < os.path.getsize(run.latest) / 2
    G_A, _, _ = load_generators(run.epoch(2))
    for key, value in G_A.state_dict().items():
        assert torch.equal(value, latest["models"]["G_A"][key])
    written = translate_checkpoint(run.epoch(1), "AtoB", _run_and_stop.data / "testA", tmp_path / "t",
                                   progress=False)
    assert len(written) == 3


def test_keep_full_state_keeps_resumable_epoch_checkpoints(tmp_path, capsys, monkeypatch):
    run = TrainRun(tmp_path / "run")
    cfg = _cfg("train.max_iters_per_epoch=2", "train.save_epoch_freq=1", "train.keep_full_state=true")
    with monkeypatch.context() as patch:   # stop after the first of the two epochs
        patch.setattr(Trainer, "total_epochs", property(lambda self: 1))
        train(cfg, _run_and_stop.data, run.root, progress=False)
    assert [p.name for p in run.epochs()] == ["epoch_1.pt"] and is_training_state(load_checkpoint(run.epoch(1)))
    # a full-state epoch checkpoint is also what auto-resume falls back to
    _tear(run.latest)
    trainer = Trainer(cfg, _run_and_stop.data, run.root, "cpu")
    assert trainer.resume("auto") is True and (trainer.epoch, trainer.global_iter) == (1, 2)
    assert "continuing from epoch_1.pt" in capsys.readouterr().err
