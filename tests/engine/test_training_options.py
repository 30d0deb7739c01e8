"""The training options of the authors' code, each tested for what it means: GAN losses
(lsgan, vanilla, wgangp with its gradient penalty), learning-rate policies with
epoch_count, checkpoint frequencies, and other generators/discriminators/channel counts
in a real training step."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from helpers import TESTS_PROFILE, make_images
from training.config import TrainConfig, load_config
from training.models.cyclegan import CycleGAN, TrainingStep
from training.models.losses import discriminator_loss, gan_loss, gradient_penalty
from training.engine.schedule import build_scheduler, step_scheduler

# -- GAN losses ----------------------------------------------------------------------------

PRED = [0.3, -1.0, 2.0]


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


@pytest.mark.parametrize("mode,real,fake", [
    ("lsgan", sum((p - 1) ** 2 for p in PRED) / 3, sum(p ** 2 for p in PRED) / 3),
    # binary cross-entropy on logits: -log sigmoid(p) = softplus(-p), -log(1 - sigmoid(p)) = softplus(p)
    ("vanilla", sum(softplus(-p) for p in PRED) / 3, sum(softplus(p) for p in PRED) / 3),
    ("wgangp", -sum(PRED) / 3, sum(PRED) / 3),
])
def test_gan_loss_values(mode, real, fake):
    pred = torch.tensor(PRED).view(1, 1, 1, 3)
    assert gan_loss(pred, True, mode).item() == pytest.approx(real, rel=1e-6)
    assert gan_loss(pred, False, mode).item() == pytest.approx(fake, rel=1e-6)
    assert discriminator_loss(pred, pred, mode).item() == pytest.approx(0.5 * (real + fake), rel=1e-6)


def test_vanilla_and_lsgan_differ_where_they_should():
    zero = torch.zeros(1, 1, 2, 2)
    assert gan_loss(zero, True, "lsgan").item() == pytest.approx(1.0)
    assert gan_loss(zero, True, "vanilla").item() == pytest.approx(math.log(2))
    # far on the right side: lsgan still punishes overshoot, vanilla barely does
    big = torch.full((1, 1, 2, 2), 5.0)
    assert gan_loss(big, True, "lsgan").item() == pytest.approx(16.0)
    assert gan_loss(big, True, "vanilla").item() == pytest.approx(softplus(-5.0), rel=1e-5)


def test_gradient_penalty_of_a_linear_critic_is_hand_computable():
    """D(x) = w . x has gradient w everywhere: penalty = weight * (||w|| - 1)^2 for any interpolate."""
    critic = nn.Sequential(nn.Flatten(), nn.Linear(8, 1, bias=True))
    with torch.no_grad():
        critic[1].weight.copy_(torch.tensor([[0.5, -0.5, 0.5, 0.5, -0.5, 0.5, 0.5, 0.5]]))  # norm sqrt(2)
        critic[1].bias.fill_(3.0)
    real, fake = torch.randn(4, 2, 2, 2), torch.randn(4, 2, 2, 2)
    expected = 10.0 * (math.sqrt(2) - 1) ** 2
    assert gradient_penalty(critic, real, fake, weight=10.0).item() == pytest.approx(expected, rel=1e-6)
    assert gradient_penalty(critic, real, fake, weight=1.0, constant=0.0).item() == pytest.approx(2.0, rel=1e-6)


class HalfSquare(nn.Module):
    """D(x) = ||x||^2 / 2 per sample, whose gradient is x itself."""

    def forward(self, x):
        return 0.5 * x.pow(2).flatten(1).sum(1, keepdim=True)


def test_gradient_penalty_interpolates_between_real_and_fake():
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    alpha = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(5))
    x_hat = alpha * real + (1 - alpha) * fake
    norms = x_hat.flatten(1).norm(dim=1)
    expected = 10.0 * ((norms - 1) ** 2).mean().item()
    got = gradient_penalty(HalfSquare(), real, fake, 10.0, generator=torch.Generator().manual_seed(5))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert got.requires_grad  # created with create_graph: the penalty trains the critic


def tiny_config(**sections):
    overrides = [f"{s}.{k}={v}" for s, values in sections.items() for k, v in values.items()]
    return load_config(TESTS_PROFILE, overrides, required=True)


@pytest.mark.parametrize("mode", ["wgangp", "lsgan"])
def test_the_discriminator_step_adds_the_penalty_only_for_wgangp(mode):
    cfg = tiny_config(train={"gan_mode": mode, "lambda_gp": 7.0}, model={"netD": "n_layers", "n_layers_D": 2})
    torch.manual_seed(0)
    step = TrainingStep(CycleGAN(cfg), cfg.train, torch.device("cpu"))
    D = step.D_A
    real, fake = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    step.gp_generator = torch.Generator().manual_seed(11)
    got, _ = step.discriminator_losses(real, fake, real, fake)
    plain = discriminator_loss(D(real), D(fake), mode)
    penalty = gradient_penalty(D, real, fake, 7.0, generator=torch.Generator().manual_seed(11))
    expected = plain + penalty if mode == "wgangp" else plain
    assert penalty.item() > 0
    assert got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


# -- learning-rate policies ----------------------------------------------------------------

def rates(epochs: int, metrics=None, **train) -> list[float]:
    """The rate each 0-based epoch trains at, stepping once per epoch as the trainer does."""
    cfg = TrainConfig(lr=1.0, **train)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg)
    out = []
    for epoch in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # (a no-op without gradients) keeps torch's call-order check quiet
        step_scheduler(sched, None if metrics is None else metrics[epoch])
    return out


def test_linear_policy_and_epoch_count():
    assert rates(7, n_epochs=3, n_epochs_decay=4) == pytest.approx([1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    # epoch_count k continues the authors' schedule from their epoch k (1-based)
    assert rates(5, n_epochs=3, n_epochs_decay=4, epoch_count=3) == pytest.approx([1, 0.8, 0.6, 0.4, 0.2])
    assert rates(4, n_epochs=3, n_epochs_decay=4, epoch_count=5) == pytest.approx([0.6, 0.4, 0.2, 0.0])


def test_linear_policy_never_goes_negative():
    # past the authors' last epoch the factor would turn negative (gradient ascent); it stops at 0
    assert min(rates(6, n_epochs=1, n_epochs_decay=1, epoch_count=3)) == 0.0


def test_step_policy_divides_by_ten_every_lr_decay_iters_epochs():
    assert rates(7, lr_policy="step", lr_decay_iters=2) == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01, 0.001])


def test_plateau_policy_cuts_by_five_after_six_flat_epochs():
    flat = rates(14, metrics=[1.0] * 14, lr_policy="plateau")
    assert flat == pytest.approx([1.0] * 7 + [0.2] * 6 + [0.04])
    improving = rates(14, metrics=[0.95 ** e for e in range(14)], lr_policy="plateau")
    assert improving == [1.0] * 14  # a loss still falling by more than the 1% threshold keeps the rate


def test_cosine_policy_anneals_over_n_epochs():
    got = rates(5, lr_policy="cosine", n_epochs=4)
    assert got == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(5)], abs=1e-7)
    assert got[2] == pytest.approx(0.5) and got[4] == pytest.approx(0.0, abs=1e-12)


# -- the trainer: frequencies, rates in the log, other networks, grayscale ------------------

def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_checkpoint_frequencies_and_logged_rates(tiny_data, tmp_path, monkeypatch):
    from training.engine import trainer as trainer_module

    cfg = tiny_config(train={"n_epochs": 2, "n_epochs_decay": 1, "max_iters_per_epoch": 3, "save_epoch_freq": 2,
                             "save_latest_freq": 2, "log_every": 1, "sample_every": 0, "lr_policy": "step",
                             "lr_decay_iters": 1},
                      model={"netG": "resnet_1blocks", "ngf": 4, "ndf": 4})
    saves = []
    original = trainer_module.Trainer.save

    def record(self, path):
        saves.append((path.name, self.global_iter))
        original(self, path)

    monkeypatch.setattr(trainer_module.Trainer, "save", record)
    out = tmp_path / "run"
    trainer_module.train(cfg, tiny_data, out, progress=False)
    latest = [it for name, it in saves if name == "latest.pt"]
    # every 2nd iteration (save_latest_freq) and at each epoch end (iterations 3, 6, 9)
    assert latest == [2, 3, 4, 6, 6, 8, 9]
    kept = sorted(p.name for p in (out / "checkpoints").glob("epoch_*.pt"))
    assert kept == ["epoch_2.pt", "epoch_3.pt"]  # every save_epoch_freq epochs, and the last one
    by_epoch = {}
    for row in read_log(out / "train_log.csv"):
        by_epoch.setdefault(int(row["epoch"]), set()).add(float(row["lr"]))
    assert {e: sorted(v) for e, v in by_epoch.items()} == {1: [pytest.approx(2e-4)], 2: [pytest.approx(2e-5)],
                                                           3: [pytest.approx(2e-6)]}


@pytest.mark.parametrize("netG,netD,gan_mode,norm,size", [
    ("unet_128", "pixel", "wgangp", "instance", 128),
    ("unet_256", "n_layers", "vanilla", "batch", 256),
])
def test_a_training_step_with_other_networks_and_losses(netG, netD, gan_mode, norm, size):
    cfg = tiny_config(model={"netG": netG, "netD": netD, "n_layers_D": 2, "ngf": 2, "ndf": 4, "norm": norm},
                      data={"crop_size": size, "load_size": size}, train={"gan_mode": gan_mode})
    torch.manual_seed(0)
    model = CycleGAN(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = TrainingStep(model, cfg.train, torch.device("cpu"), norm=norm)
    result = step(torch.rand(1, 3, size, size) * 2 - 1, torch.rand(1, 3, size, size) * 2 - 1)
    assert all(torch.isfinite(v) for v in result.losses.values())
    assert result.visuals["fake_B"].shape == (1, 3, size, size)
    changed = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"G_A", "G_B", "D_A", "D_B"}


def test_grayscale_domain_end_to_end(tmp_path, cli_env):
    """input_nc=1: domain A is read as one channel, G_A maps 1 -> 3 and G_B 3 -> 1, and the
    trained checkpoint translates grayscale to colour and back."""
    import subprocess

    from PIL import Image

    from helpers import CYCLEGAN, ROOT
    from training.engine.checkpoint import load_generators
    from training.data.dataset import UnalignedDataset

    data = tmp_path / "data"
    make_images(data / "trainA", 4, size=(32, 32), seed=1)
    make_images(data / "trainB", 4, size=(32, 32), seed=2)
    cfg = tiny_config(data={"input_nc": 1}, train={"lambda_identity": 0.0})
    item = UnalignedDataset(data, cfg.data)[(0, 1, 5)]
    assert item["A"].shape == (1, 32, 32) and item["B"].shape == (3, 32, 32)
    out = tmp_path / "run"
    result = subprocess.run([*CYCLEGAN, "train", "--data", str(data), "--out", str(out), "--params",
                             str(TESTS_PROFILE), "--set", "data.input_nc=1", "--set", "train.lambda_identity=0",
                             "--set", "train.n_epochs_decay=0", "--set", "train.max_iters_per_epoch=2",
                             "--no-progress"], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    G_A, G_B, stored = load_generators(out / "checkpoints" / "latest.pt")
    assert (stored.data.input_nc, stored.data.output_nc) == (1, 3)
    with torch.no_grad():
        assert G_A(torch.rand(1, 1, 32, 32)).shape == (1, 3, 32, 32)
        assert G_B(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    from training.translate import translate_checkpoint

    written = translate_checkpoint(out / "checkpoints" / "latest.pt", "BtoA", data / "trainB",
                                   tmp_path / "to_gray", progress=False)
    with Image.open(written[0]) as img:
        assert img.mode == "L" and img.size == (32, 32)
    written = translate_checkpoint(out / "checkpoints" / "latest.pt", "AtoB", data / "trainA",
                                   tmp_path / "to_rgb", progress=False)
    with Image.open(written[0]) as img:
        assert img.mode == "RGB"
