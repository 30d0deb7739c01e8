"""Pure loss functions of the CycleGAN objective (Zhu et al. 2017, eq. 1-3 and 6)."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def gan_loss(prediction: torch.Tensor, target_is_real: bool, mode: str = "lsgan") -> torch.Tensor:
    """Adversarial loss of discriminator outputs against a real (1) or fake (0) target.

    lsgan: mean squared error (the paper's choice); vanilla: binary cross-entropy on
    logits; wgangp: the Wasserstein critic's -mean for real, +mean for fake.
    """
    if mode == "lsgan":
        return F.mse_loss(prediction, torch.full_like(prediction, 1.0 if target_is_real else 0.0))
    if mode == "vanilla":
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        return F.binary_cross_entropy_with_logits(prediction, target)
    if mode == "wgangp":
        return -prediction.mean() if target_is_real else prediction.mean()
    raise ValueError(f"unknown gan_mode {mode!r}")


def cycle_loss(reconstructed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between F(G(x)) and x."""
    return F.l1_loss(reconstructed, real)


def identity_loss(same: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between G(y) and y for y already in G's target domain."""
    return F.l1_loss(same, real)


def discriminator_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor, mode: str = "lsgan") -> torch.Tensor:
    """The authors' D objective: the mean of the real and fake terms (the loss is halved)."""
    return 0.5 * (gan_loss(pred_real, True, mode) + gan_loss(pred_fake, False, mode))


def gradient_penalty(discriminator, real: torch.Tensor, fake: torch.Tensor, weight: float = 10.0,
                     constant: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): weight * E[(||grad D(x_hat)||_2 - constant)^2]
    on random interpolates x_hat between real and fake samples, as the authors'
    ``cal_gradient_penalty(type='mixed')``."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator)
    interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = discriminator(interpolates)
    (grad,) = torch.autograd.grad(out, interpolates, grad_outputs=torch.ones_like(out), create_graph=True)
    norms = (grad.flatten(1) + 1e-16).norm(2, dim=1)
    return weight * ((norms - constant) ** 2).mean()
