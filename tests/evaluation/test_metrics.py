"""Correctness of the evaluation's pure parts: PSNR, SSIM, Fréchet distance, KID, the probe."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.evaluation import distances as D
from training.evaluation import metrics as M


def test_psnr_of_a_known_perturbation():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 24, 24, generator=gen) * 0.6 + 0.2           # room for +-0.1 without clipping
    signs = torch.randint(0, 2, x.shape, generator=gen).float() * 2 - 1
    y = x + 0.1 * signs                                                 # MSE exactly 0.01 -> 20 dB
    assert torch.allclose(M.psnr(y, x), torch.full((3,), 20.0), atol=1e-4)
    # halving the error adds 20 log10(2) dB
    assert torch.allclose(M.psnr(x + 0.05 * signs, x), torch.full((3,), 20 + 20 * math.log10(2)), atol=1e-4)
    assert torch.allclose(M.l1(y, x), torch.full((3,), 0.1), atol=1e-6)
    assert torch.all(M.psnr(x, x) == M.PSNR_CAP_DB)


def test_to_unit_maps_network_range():
    x = torch.tensor([-1.0, 0.0, 1.0, 1.5]).view(1, 1, 2, 2)
    assert M.to_unit(x).flatten().tolist() == [0.0, 0.5, 1.0, 1.0]


def _smooth_pair(seed=0, size=48):
    rng = np.random.default_rng(seed)
    base = rng.random((size // 4, size // 4, 3))
    a = np.kron(base, np.ones((4, 4, 1)))                               # blocky structure
    b = np.clip(a * 0.8 + 0.1 + rng.normal(0, 0.08, a.shape), 0, 1)     # contrast change + noise
    return a, b


def test_ssim_of_an_image_with_itself_is_one():
    a, _ = _smooth_pair()
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float()
    assert M.ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    for seed in (0, 1):
        a, b = _smooth_pair(seed)
        expected = structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False)
        to_t = lambda arr: torch.from_numpy(arr).permute(2, 0, 1)[None].float()  # noqa: E731
        got = M.ssim(to_t(b), to_t(a)).item()
        assert 0.1 < expected < 0.95                                    # a pair that is neither equal nor unrelated
        assert got == pytest.approx(expected, abs=1e-6)


def test_ssim_is_per_image_in_a_batch():
    a, b = _smooth_pair()
    x, y = (torch.from_numpy(v).permute(2, 0, 1)[None].float() for v in (a, b))
    batch = M.ssim(torch.cat([x, y]), torch.cat([x, x]))
    assert batch[0].item() == pytest.approx(1.0, abs=1e-6)
    assert batch[1].item() == pytest.approx(M.ssim(y, x).item(), abs=1e-7)


def test_frechet_distance_self_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 64))
    assert D.frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-6)
    values = [D.frechet_distance_features(x, x + shift) for shift in (0.1, 0.5, 1.0)]
    # a pure mean shift by s in 64 dims moves the distance by 64 s^2 exactly
    assert values == pytest.approx([64 * 0.01, 64 * 0.25, 64 * 1.0], rel=1e-6)
    assert values[0] < values[1] < values[2]


def test_frechet_small_sample_route_matches_full_covariance():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 100)), rng.normal(size=(30, 100)) * 1.5 + 0.2   # n < d: rank-deficient
    small = D.frechet_distance_features(x, y)
    full = D.frechet_distance(*D.gaussian_stats(x), *D.gaussian_stats(y))
    assert small == pytest.approx(full, rel=1e-6)
    assert small > 10


def test_kid_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 64)), rng.normal(size=(200, 64))
    c = rng.normal(size=(200, 64)) * 1.2 + 0.5
    same_mean, same_std = D.kid(a, b, subsets=20, subset_size=100, seed=0)
    diff_mean, diff_std = D.kid(a, c, subsets=20, subset_size=100, seed=0)
    assert abs(same_mean) < 3 * same_std + 1e-3       # unbiased: zero within its noise
    assert diff_mean > 0.1 and diff_mean > 20 * abs(same_mean) and diff_mean > 5 * diff_std
    assert D.kid(a, c, subsets=20, subset_size=100, seed=0) == (diff_mean, diff_std)   # seeded


def test_kid_subset_size_shrinks_to_the_smaller_set():
    rng = np.random.default_rng(0)
    mean, _ = D.kid(rng.normal(size=(5, 8)), rng.normal(size=(50, 8)) + 3, subsets=3, subset_size=100)
    assert mean > 0
    with pytest.raises(ValueError):
        D.kid(rng.normal(size=(1, 8)), rng.normal(size=(5, 8)))


def _domain_images(kind: str, n: int, seed: int, size: int = 32) -> torch.Tensor:
    """Two clearly different synthetic domains: warm horizontal stripes vs cool vertical ones."""
    gen = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(n):
        period = int(torch.randint(3, 8, (1,), generator=gen))
        phase = float(torch.rand(1, generator=gen)) * 6.28
        t = torch.arange(size).float()
        wave = torch.sin(2 * math.pi * t / period + phase)
        pattern = wave.view(-1, 1).expand(size, size) if kind == "A" else wave.view(1, -1).expand(size, size)
        colour = torch.tensor([0.8, 0.3, -0.6]) if kind == "A" else torch.tensor([-0.6, 0.2, 0.8])
        img = colour.view(3, 1, 1) * 0.6 + 0.4 * pattern + 0.1 * torch.randn(3, size, size, generator=gen)
        images.append(img.clamp(-1, 1))
    return torch.stack(images)


def test_probe_separates_two_synthetic_domains():
    from training.evaluation.features import EffNetLite0Features
    from training.evaluation.probe import DomainProbe

    extractor = EffNetLite0Features()
    feats = {(d, split): extractor(_domain_images(d, n, seed)).double().numpy()
             for d, (n, seeds) in (("A", (16, (1, 2))), ("B", (16, (3, 4))))
             for split, seed in zip(("train", "test"), seeds)}
    assert feats["A", "train"].shape == (16, 1280)
    probe = DomainProbe(seed=0).fit(feats["A", "train"], feats["B", "train"])
    assert probe.accuracy(feats["A", "test"], feats["B", "test"]) == 1.0
    assert probe.fraction_b(feats["B", "test"]) == 1.0 and probe.fraction_a(feats["A", "test"]) == 1.0
    # labels shuffled between the two training sets: the probe must no longer be perfect
    mixed_a = np.concatenate([feats["A", "train"][:8], feats["B", "train"][:8]])
    mixed_b = np.concatenate([feats["A", "train"][8:], feats["B", "train"][8:]])
    shuffled = DomainProbe(seed=0).fit(mixed_a, mixed_b)
    assert shuffled.fraction_b(feats["B", "test"]) - shuffled.fraction_b(feats["A", "test"]) < 0.9


def test_effnet_features_are_deterministic_and_size_independent_in_shape():
    from training.evaluation.features import EffNetLite0Features

    extractor = EffNetLite0Features()
    x = _domain_images("A", 3, 0, size=40)
    first, second = extractor(x), extractor(x)
    assert torch.equal(first, second)
    assert extractor(_domain_images("A", 2, 0, size=64)).shape == (2, 1280)
    gray = extractor(x[:, :1])                          # one-channel images are repeated to RGB
    assert gray.shape == (3, 1280) and torch.isfinite(gray).all()


def test_feature_cache_round_trip(tmp_path):
    from training.evaluation.features import FeatureCache

    cache = FeatureCache(tmp_path / "cache")
    key = cache.key(features="x", images="abc")
    assert cache.get(key) is None
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    cache.put(key, value)
    assert np.array_equal(cache.get(key), value)
    assert FeatureCache("").get(key) is None               # an empty folder turns caching off
    assert not list((tmp_path / "cache").glob(".*"))        # no temporary files left behind


def test_gate_keys_and_baselines_are_metrics_of_the_spec():
    # (the docs' metrics table against the spec is tests/core/test_docs.py's)
    from training.evaluation.specs import GATE_KEYS, METRICS, WITH_BASELINE

    assert set(GATE_KEYS) <= set(METRICS) and set(WITH_BASELINE) <= set(METRICS)
