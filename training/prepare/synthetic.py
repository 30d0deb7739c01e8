"""The ``synthetic`` source: a generated unpaired dataset for the offline demo and the tests.

Both domains draw the *content* from one distribution: a grey background (a level between
0.3 and 0.55, a little grey noise) and one to three flat-coloured shapes (discs, squares,
triangles) at random sizes and positions. They differ in the shapes' colour and in the
background's texture, like horses and zebras:

* domain A: warm shapes (hue 0-50 degrees: red, orange, amber) on a plain background;
* domain B: cool shapes (hue 190-240 degrees: cyan, azure, blue) on a background with grey,
  zebra-like vertical stripes (``stripe_texture``: narrow-band noise, period 7/64 of the side,
  +-0.2 around the background level).

Why both: a colour change alone is nearly invisible to the evaluation's feature network
(EfficientNet-Lite0: KID between real A and real B about 0.03), so KID, the Fréchet distance
and the domain probe would measure the generator's artefacts instead of the translation; the
stripes make the untranslated A about as far from B as a different data set (KID about 0.7).
Both changes are within reach of a small CycleGAN on a CPU: swapping the red and blue
channels maps one hue range onto the other, and the stripes are band-passed noise, which a
convolution can make out of domain A's background noise (and B -> A removes them).

Measurable without labels:

* ``content_mask(images)`` marks the shapes: pixels whose saturation (max minus min over the
  channels, on a 0..1 scale) exceeds 0.25. Backgrounds are grey in both domains, the stripes
  included (saturation 0), and every shape has saturation >= 0.42, so the mask is computed
  the same way on real A, real B and on translations; the IoU of the masks of x and G(x)
  measures content preservation.
* ``domain_score(images)`` is the mean of (blue - red) / 2 over the masked pixels (over the
  whole image when fewer than 8 pixels are masked): in [-1, 1], > 0 reads as domain B
  (cool), < 0 as domain A (warm). It reads the shapes' colour only; the texture is what the
  feature-network metrics see. Its sign separates real A from real B without error: the grey
  background adds nothing to blue - red, the last shape drawn is never covered and masks
  about 20 pixels or more even at size 32, and on every masked pixel, antialiased edges and
  overlaps included, blue - red is minus (A) or plus (B) its saturation. It is what the
  evaluation's synthetic domain-success rate and the demo's "visibly working" check count.
"""
from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

HUES = {"A": (0.0, 50.0), "B": (190.0, 240.0)}
BACKGROUND_GREY = (0.3, 0.55)   # background level, both domains
NOISE_STD = 0.03                # grey noise of every background
STRIPE_AMPLITUDE = 0.2          # domain B's stripes: background +- this
STRIPE_PERIOD = 7.0 / 64.0      # stripe period as a share of the image side
STRIPE_BANDWIDTH = 0.18         # width of the pass band relative to the stripe frequency
STRIPE_SHARPNESS = 2.5          # tanh gain: soft-edged black-and-white stripes
SATURATION_THRESHOLD = 0.25
MIN_MASK_PIXELS = 8
SPLITS = {"train": 0, "test": 1}
DOMAINS = {"A": 0, "B": 1}


def _shape_mask(rng: np.random.Generator, size: int, supersample: int = 4) -> np.ndarray:
    """A float coverage mask (size x size, 0..1) of one random shape, antialiased.

    The shape is rasterised at ``supersample`` times the resolution inside its bounding box
    only, then averaged down.
    """
    n = size * supersample
    radius = rng.uniform(0.12, 0.24) * n
    cx, cy = rng.uniform(radius, n - radius), rng.uniform(radius, n - radius)
    kind = rng.integers(3)
    angle = rng.uniform(0, 2 * np.pi)
    x0 = max(0, int((cx - radius) // supersample) - 1)
    y0 = max(0, int((cy - radius) // supersample) - 1)
    x1 = min(size, int((cx + radius) // supersample) + 2)
    y1 = min(size, int((cy + radius) // supersample) + 2)
    yy, xx = np.mgrid[y0 * supersample:y1 * supersample, x0 * supersample:x1 * supersample].astype(np.float32) + 0.5
    if kind == 0:  # disc
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2
    elif kind == 1:  # square, rotated
        c, s = np.cos(angle), np.sin(angle)
        u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
        half = radius * 0.85
        mask = (np.abs(u) <= half) & (np.abs(v) <= half)
    else:  # triangle, rotated
        corners = [(cx + radius * np.cos(angle + k * 2 * np.pi / 3), cy + radius * np.sin(angle + k * 2 * np.pi / 3))
                   for k in range(3)]
        mask = np.ones_like(xx, dtype=bool)
        for k in range(3):
            (ax, ay), (bx, by) = corners[k], corners[(k + 1) % 3]
            mask &= (bx - ax) * (yy - ay) - (by - ay) * (xx - ax) >= 0
    coverage = np.zeros((size, size), dtype=np.float32)
    coverage[y0:y1, x0:x1] = mask.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3))
    return coverage


def stripe_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Zebra-like stripes (size x size, in -1..1): narrow-band noise, then a soft threshold.

    White noise filtered in the Fourier domain by a Gaussian bump around one spatial
    frequency (period ``STRIPE_PERIOD`` of the side, wave vector along x: vertical stripes,
    which a horizontal flip, the training-time augmentation, leaves vertical), so the
    stripes wander and fork like a zebra's instead of repeating exactly. A filter applied to
    noise is what a convolutional generator can learn: it sees the faint noise of domain A's
    background and can band-pass and amplify it into these stripes.
    """
    white = rng.normal(size=(size, size))
    period = STRIPE_PERIOD * size
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    width = STRIPE_BANDWIDTH / period
    bump = (np.exp(-((fx - 1.0 / period) ** 2 + fy ** 2) / (2 * width ** 2))
            + np.exp(-((fx + 1.0 / period) ** 2 + fy ** 2) / (2 * width ** 2)))
    field = np.real(np.fft.ifft2(np.fft.fft2(white) * bump))
    return np.tanh(STRIPE_SHARPNESS * field / max(field.std(), 1e-12))


def render(rng: np.random.Generator, size: int, domain: str) -> np.ndarray:
    """One image (size x size x 3, uint8) of ``domain`` ("A" or "B")."""
    grey = rng.uniform(*BACKGROUND_GREY)
    background = grey + rng.normal(0.0, NOISE_STD, (size, size))
    if domain == "B":
        background = background + STRIPE_AMPLITUDE * stripe_texture(rng, size)
    image = np.repeat(np.clip(background, 0.0, 1.0)[:, :, None], 3, axis=2)
    lo, hi = HUES[domain]
    for _ in range(rng.integers(1, 4)):
        coverage = _shape_mask(rng, size)[:, :, None]
        hue = rng.uniform(lo, hi) / 360.0
        colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)))
        image = image * (1.0 - coverage) + colour * coverage
    return np.round(image * 255.0).astype(np.uint8)


def image_rng(seed: int, split: str, domain: str, index: int) -> np.random.Generator:
    """Each image has its own stream, so any image is a pure function of where it sits."""
    return np.random.default_rng([seed, SPLITS[split], DOMAINS[domain], index])


def generate(out_dir: str | Path, size: int = 64, n_train: int = 200, n_test: int = 40, seed: int = 0) -> Path:
    """Write ``trainA/ trainB/ testA/ testB/`` PNGs (``00000.png`` ...) under ``out_dir``.

    Deterministic for a given (size, counts, seed); a few hundred images take about a second.
    """
    from PIL import Image

    out = Path(out_dir)
    for split, count in (("train", n_train), ("test", n_test)):
        for domain in ("A", "B"):
            folder = out / f"{split}{domain}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                array = render(image_rng(seed, split, domain, i), size, domain)
                Image.fromarray(array).save(folder / f"{i:05d}.png", compress_level=1)
    return out


def _unit(images):
    import torch

    images = torch.as_tensor(images)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images N x 3 x H x W, got {tuple(images.shape)}")
    return (images.detach().float().clamp(-1.0, 1.0) + 1.0) / 2.0


def content_mask(images):
    """Shape mask, bool N x H x W, of images N x 3 x H x W in [-1, 1]: saturation > 0.25.

    The same rule in both domains (the background is grey, plain in A, striped in B; shapes
    are saturated), so ``iou(content_mask(x), content_mask(G(x)))`` measures whether G kept
    the content.
    """
    x = _unit(images)
    return (x.amax(dim=1) - x.amin(dim=1)) > SATURATION_THRESHOLD


def domain_score(images):
    """One float per image N x 3 x H x W in [-1, 1]: > 0 "looks like B", < 0 "looks like A".

    The mean of (blue - red) / 2 over ``content_mask`` pixels, or over the whole image when
    fewer than 8 pixels are masked: the shapes' colour, blind to the background's stripes.
    Warm (A) shapes give about -0.2 to -0.5, cool (B) shapes +0.2 to +0.5; a grey image,
    striped or not, gives 0.
    """
    import torch

    x = _unit(images)
    diff = (x[:, 2] - x[:, 0]) / 2.0
    mask = (x.amax(dim=1) - x.amin(dim=1)) > SATURATION_THRESHOLD
    weight = mask.float()
    count = weight.sum(dim=(1, 2))
    masked = (diff * weight).sum(dim=(1, 2)) / count.clamp(min=1.0)
    return torch.where(count >= MIN_MASK_PIXELS, masked, diff.mean(dim=(1, 2)))


def mask_iou(a, b):
    """Per-image IoU of two bool masks N x H x W (1.0 where both are empty)."""
    import torch

    inter = (a & b).float().sum(dim=(1, 2))
    union = (a | b).float().sum(dim=(1, 2))
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(union))
