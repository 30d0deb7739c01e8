"""In-process trainer tests (fast: no subprocess, tests-profile networks)."""
import pytest
import torch

from conftest import TESTS_PROFILE
from training.checkpoint import FORMAT, atomic_torch_save
from training.config import load_config
from training.errors import UserError
from training.trainer import Trainer


def _cfg(*overrides):
    return load_config(TESTS_PROFILE, ["train.sample_every=0", *overrides], required=True)


def test_epoch_count_starts_the_schedule_later(tiny_data, tmp_path):
    # the authors run epochs epoch_count .. n_epochs + n_epochs_decay
    cfg = _cfg("train.n_epochs=2", "train.n_epochs_decay=2", "train.epoch_count=3", "train.max_iters_per_epoch=2")
    trainer = Trainer(cfg, tiny_data, tmp_path / "run", "cpu")
    assert trainer.total_epochs == 2
    summary = trainer.train(progress=False)
    assert summary["epochs"] == 2 and summary["iterations"] == 4
    assert summary["lr"] == pytest.approx(2e-4 * (1 - 2 / 3))   # 0-based epoch 1 is the authors' epoch 4


def test_resume_refuses_a_generators_only_checkpoint(tiny_data, tmp_path):
    cfg = _cfg()
    trainer = Trainer(cfg, tiny_data, tmp_path / "run", "cpu")
    state = trainer.state_dict()
    atomic_torch_save({"format": FORMAT, "config": state["config"],
                       "models": {k: state["models"][k] for k in ("G_A", "G_B")}},
                      tmp_path / "run" / "checkpoints" / "latest.pt")
    with pytest.raises(UserError, match="generators only"):
        trainer.resume()


def test_resume_refuses_a_different_model_config(tiny_data, tmp_path):
    Trainer(_cfg(), tiny_data, tmp_path / "run", "cpu").save(tmp_path / "run" / "checkpoints" / "latest.pt")
    other = Trainer(_cfg("model.ngf=16"), tiny_data, tmp_path / "run", "cpu")
    with pytest.raises(UserError, match="differs"):
        other.resume()


def test_resume_without_checkpoint_starts_fresh(tiny_data, tmp_path):
    trainer = Trainer(_cfg(), tiny_data, tmp_path / "run", "cpu")
    assert trainer.resume() is False and trainer.global_iter == 0


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "latest.pt"
    atomic_torch_save({"v": torch.ones(1)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"v": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.ones(1))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]
