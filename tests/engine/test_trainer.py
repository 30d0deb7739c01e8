"""In-process trainer tests (fast: no subprocess, tests-profile networks)."""
import pytest
import torch

from helpers import TESTS_PROFILE, make_images
from training.engine.checkpoint import FORMAT, atomic_torch_save
from training.config import load_config
from training.errors import UserError
from training.models.cyclegan import LOSS_NAMES
from training.engine.trainer import Trainer


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


def _interrupted_run(cfg, data, out, iters: int):
    """A run stopped after ``iters`` iterations with its checkpoint saved, as a kill would leave it."""
    trainer = Trainer(cfg, data, out, "cpu")
    out.mkdir(parents=True, exist_ok=True)
    for batch in trainer._loader(0):
        trainer.step(batch["A"], batch["B"])
        trainer.epoch_iter += 1
        trainer.global_iter += 1
        trainer._log(torch.zeros(len(LOSS_NAMES)), 1.0)
        if trainer.global_iter == iters:
            break
    trainer.save(trainer.run.latest)
    return trainer


def test_resume_auto_continues_an_unfinished_run_with_the_same_settings(tiny_data, tmp_path, capsys):
    cfg = _cfg("train.max_iters_per_epoch=3", "train.log_every=1")
    _interrupted_run(cfg, tiny_data, tmp_path / "run", 2)
    # settings that only change how the run is watched do not stop it from continuing
    trainer = Trainer(_cfg("train.max_iters_per_epoch=3", "train.log_every=2", "data.num_workers=0"),
                      tiny_data, tmp_path / "run", "cpu")
    assert trainer.resume("auto") is True
    assert (trainer.epoch, trainer.epoch_iter, trainer.global_iter) == (0, 2, 2)
    assert "starting over" not in capsys.readouterr().err


@pytest.mark.parametrize("change, reason", [
    ("params", "changed settings: model.ngf"),
    ("data", "other training images"),
    ("finished", "already finished"),
])
def test_resume_auto_starts_over_and_says_why(tiny_data, tmp_path, capsys, change, reason):
    from training.engine.trainer import train

    base = ["train.max_iters_per_epoch=2", "train.log_every=1"]
    out = tmp_path / "run"
    if change == "finished":
        train(_cfg(*base), tiny_data, out, progress=False)
    else:
        _interrupted_run(_cfg(*base), tiny_data, out, 1)
    (out / "samples").mkdir(exist_ok=True)
    (out / "samples" / "iter_0000099.png").write_bytes(b"stale")
    (out / "checkpoints" / "epoch_99.pt").write_bytes(b"stale")
    if change == "data":
        make_images(tiny_data / "trainA", 1, seed=42)   # one new training image
    overrides = [*base, "model.ngf=16"] if change == "params" else base
    summary = train(_cfg(*overrides), tiny_data, out, resume="auto", progress=False)
    err = capsys.readouterr().err
    assert "starting over" in err and reason in err
    # a fresh run from iteration 0, and nothing of the previous run left in the folder
    assert summary["iterations"] == 4
    iterations = [int(line.split(",")[1]) for line in (out / "train_log.csv").read_text().splitlines()[1:]]
    assert iterations == [1, 2, 3, 4]
    assert not (out / "samples" / "iter_0000099.png").exists()
    assert not (out / "checkpoints" / "epoch_99.pt").exists()
    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert state["config"]["model"]["ngf"] == (16 if change == "params" else 8)


def test_fresh_run_into_a_used_folder_replaces_its_log(tiny_data, tmp_path):
    from training.engine.trainer import train

    cfg = _cfg("train.max_iters_per_epoch=2", "train.log_every=1")
    train(cfg, tiny_data, tmp_path / "run", progress=False)
    train(cfg, tiny_data, tmp_path / "run", progress=False)
    rows = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,iteration") and len(rows) == 1 + 4


def test_resume_rejects_an_unknown_mode(tiny_data, tmp_path):
    with pytest.raises(UserError, match="--resume"):
        Trainer(_cfg(), tiny_data, tmp_path / "run", "cpu").resume("sometimes")


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
