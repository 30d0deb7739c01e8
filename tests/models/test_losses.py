import math

import pytest
import torch

from training.models.losses import cycle_loss, discriminator_loss, gan_loss, identity_loss


def test_lsgan_is_mean_squared_distance_to_target():
    pred = torch.tensor([[0.0, 0.5], [1.0, 2.0]])
    assert gan_loss(pred, True).item() == pytest.approx((1 + 0.25 + 0 + 1) / 4)
    assert gan_loss(pred, False).item() == pytest.approx((0 + 0.25 + 1 + 4) / 4)


def test_vanilla_is_bce_on_logits():
    pred = torch.tensor([0.0, 2.0])
    expected_real = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    expected_fake = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert gan_loss(pred, True, "vanilla").item() == pytest.approx(expected_real, rel=1e-6)
    assert gan_loss(pred, False, "vanilla").item() == pytest.approx(expected_fake, rel=1e-6)


def test_wgangp_critic_terms():
    pred = torch.tensor([1.0, 3.0])
    assert gan_loss(pred, True, "wgangp").item() == -2.0
    assert gan_loss(pred, False, "wgangp").item() == 2.0


def test_discriminator_loss_is_halved_sum():
    real, fake = torch.tensor([0.5]), torch.tensor([0.5])
    assert discriminator_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.25))


def test_cycle_and_identity_losses_are_mean_absolute_error():
    a = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    b = torch.tensor([[0.0, -1.0], [0.0, 1.0]])
    assert cycle_loss(a, b).item() == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert identity_loss(b, b).item() == 0.0


def test_unknown_gan_mode_is_rejected():
    with pytest.raises(ValueError, match="hinge"):
        gan_loss(torch.zeros(1), True, "hinge")
