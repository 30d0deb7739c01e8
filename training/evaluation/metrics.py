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


def _band(kernel: torch.Tensor, n: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(n - k + 1) x n matrix whose rows are ``kernel`` slid along: a valid 1-D filter as a
    matrix product, which BLAS runs several times faster than a depthwise convolution."""
    size = kernel.numel()
    rows = torch.arange(n - size + 1, device=device)
    band = torch.zeros(n - size + 1, n, dtype=dtype, device=device)
    for i in range(size):
        band[rows, rows + i] = kernel[i].to(dtype)
    return band


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per image (mean over the valid SSIM map and the channels)."""
    n, c, h, w = x.shape
    kernel = gaussian_kernel(sigma)
    size = kernel.numel()
    if min(h, w) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {h}x{w}")
    # Centre each image-channel on one constant shared by x and y: the variance terms are
    # differences of close numbers, and centring keeps float32 within ~1e-7 of scikit-image's float64.
    shift = (x.mean(dim=(2, 3), keepdim=True) + y.mean(dim=(2, 3), keepdim=True)) / 2
    xs, ys = (x - shift).float(), (y - shift).float()
    stack = torch.stack([xs, ys, xs * xs, ys * ys, xs * ys])              # (5, N, C, H, W)
    band_h = _band(kernel, h, torch.float32, x.device)
    band_w = _band(kernel, w, torch.float32, x.device)
    # separable filter over positions where the window fits entirely, as skimage crops
    filtered = band_h @ stack @ band_w.T
    ux, uy, uxx, uyy, uxy = filtered.unbind(0)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    mx, my = ux + shift.float(), uy + shift.float()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(n, c, -1).mean(dim=2).mean(dim=1).float()


def summarise(values: list[torch.Tensor]) -> float:
    """Mean of per-image values gathered over batches, as a plain float."""
    if not values:
        return math.nan
    return float(torch.cat(values).double().mean())
