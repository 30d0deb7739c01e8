"""Per-image reconstruction metrics on images in [0, 1], as pure functions of tensors.

Every function takes two N x C x H x W float tensors in [0, 1] and returns N values, one
per image, so the caller can stream batches and average at the end.

SSIM follows Wang et al. (2004) and scikit-image's ``structural_similarity`` with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1``: an 11 x 11
Gaussian window (sigma 1.5, truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, the SSIM map
averaged over the positions where the window fits entirely (scikit-image crops the same
border), then over channels.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

PSNR_CAP_DB = 100.0      # PSNR of identical images is infinite; JSON and DVC need a number


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] network range -> [0, 1], clamped as the saved images are."""
    return ((x.float() + 1) * 0.5).clamp_(0, 1)


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per image."""
    return (x - y).abs().flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, capped at ``PSNR_CAP_DB``."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    floor = data_range ** 2 / 10 ** (PSNR_CAP_DB / 10)
    return (10 * torch.log10(data_range ** 2 / mse.clamp_min(floor))).float()


def gaussian_kernel(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """1-D Gaussian weights as ``scipy.ndimage.gaussian_filter`` builds them."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per image (mean over the valid SSIM map and the channels)."""
    n, c, h, w = x.shape
    kernel = gaussian_kernel(sigma)
    size = kernel.numel()
    if min(h, w) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {h}x{w}")
    # float64 keeps the variance terms (differences of close numbers) exact enough to
    # match scikit-image to 1e-6; the cost is small next to a generator pass.
    xs, ys = x.double().reshape(n * c, 1, h, w), y.double().reshape(n * c, 1, h, w)
    stack = torch.cat([xs, ys, xs * xs, ys * ys, xs * ys], dim=1)          # (NC, 5, H, W)
    kh = kernel.view(1, 1, size, 1).expand(5, 1, size, 1).contiguous()
    kw = kernel.view(1, 1, 1, size).expand(5, 1, 1, size).contiguous()
    # separable filter without padding: only positions where the window fits, as skimage crops
    filtered = F.conv2d(F.conv2d(stack, kh, groups=5), kw, groups=5)
    ux, uy, uxx, uyy, uxy = filtered.unbind(1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(n, c, -1).mean(dim=(1, 2)).float()


def summarise(values: list[torch.Tensor]) -> float:
    """Mean of per-image values gathered over batches, as a plain float."""
    if not values:
        return math.nan
    return float(torch.cat(values).double().mean())
