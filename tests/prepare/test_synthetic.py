"""The synthetic source: deterministic, fast, measurable without labels, and two domains that
differ where a feature network looks (texture), not only in a colour it barely sees."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from training.prepare import synthetic


def _load(folder) -> torch.Tensor:
    from PIL import Image

    arrays = [np.array(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    start = time.perf_counter()
    synthetic.generate(out, size=64, n_train=150, n_test=50, seed=3)
    return out, time.perf_counter() - start


def test_generate_layout_and_speed(synthetic_data):
    out, seconds = synthetic_data
    for split, n in (("trainA", 150), ("trainB", 150), ("testA", 50), ("testB", 50)):
        assert len(list((out / split).glob("*.png"))) == n
    assert seconds < 20  # a few hundred images in seconds, even on a slow CI core


def test_generate_is_deterministic(tmp_path):
    synthetic.generate(tmp_path / "a", size=32, n_train=5, n_test=2, seed=7)
    synthetic.generate(tmp_path / "b", size=32, n_train=5, n_test=2, seed=7)
    synthetic.generate(tmp_path / "c", size=32, n_train=5, n_test=2, seed=8)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 14
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert any((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files)


def test_domain_score_separates_real_a_from_real_b(synthetic_data):
    out, _ = synthetic_data
    a = torch.cat([_load(out / "trainA"), _load(out / "testA")])
    b = torch.cat([_load(out / "trainB"), _load(out / "testB")])
    score_a, score_b = synthetic.domain_score(a), synthetic.domain_score(b)
    assert score_a.shape == (200,) and score_b.shape == (200,)
    accuracy = ((score_a < 0).float().sum() + (score_b > 0).float().sum()) / 400
    assert accuracy >= 0.99
    assert score_a.max() < -0.1 and score_b.min() > 0.1  # with a clear margin, not by luck


def test_small_images_separate_too(tmp_path):
    synthetic.generate(tmp_path, size=32, n_train=100, n_test=0, seed=1)
    assert (synthetic.domain_score(_load(tmp_path / "trainA")) < 0).all()
    assert (synthetic.domain_score(_load(tmp_path / "trainB")) > 0).all()


def _background_gradients(images: torch.Tensor) -> tuple[float, float]:
    """Mean |horizontal| and |vertical| neighbour difference of the grey level (0..1) between
    background pixels (outside ``content_mask``)."""
    background = ~synthetic.content_mask(images)
    grey = (images.mean(dim=1) + 1.0) / 2.0
    dx = (grey[:, :, 1:] - grey[:, :, :-1]).abs()[background[:, :, 1:] & background[:, :, :-1]]
    dy = (grey[:, 1:, :] - grey[:, :-1, :]).abs()[background[:, 1:, :] & background[:, :-1, :]]
    return float(dx.mean()), float(dy.mean())


@pytest.mark.parametrize("size", [32, 64])
def test_b_has_vertical_stripes_and_a_a_plain_background(tmp_path, size):
    synthetic.generate(tmp_path, size=size, n_train=40, n_test=0, seed=2)
    a_dx, a_dy = _background_gradients(_load(tmp_path / "trainA"))
    b_dx, b_dy = _background_gradients(_load(tmp_path / "trainB"))
    # A: only the faint noise, the same both ways (measured 0.034 / 0.034)
    assert a_dx < 0.05 and abs(a_dx - a_dy) < 0.2 * a_dx
    # B: stripes across x (measured 0.12 at 64, 0.22 at 32), along y hardly more than the noise
    assert b_dx > 3 * a_dx and b_dx > 2 * b_dy


def test_content_is_drawn_alike_in_both_domains(synthetic_data):
    """Same shapes, sizes and positions in distribution: only colour and texture differ."""
    out, _ = synthetic_data
    area_a = synthetic.content_mask(_load(out / "trainA")).float().mean(dim=(1, 2))
    area_b = synthetic.content_mask(_load(out / "trainB")).float().mean(dim=(1, 2))
    assert 0.08 < area_a.mean() < 0.25 and abs(area_a.mean() - area_b.mean()) < 0.03
    grey_a = (_load(out / "trainA").mean(dim=(1, 2, 3)) + 1) / 2
    grey_b = (_load(out / "trainB").mean(dim=(1, 2, 3)) + 1) / 2
    assert abs(grey_a.mean() - grey_b.mean()) < 0.05   # the stripes swing both ways around the level


@pytest.mark.slow   # about 20 s on the shared 2-core machine (EfficientNet on 90 images)
def test_the_feature_network_sees_the_domains_apart(tmp_path):
    """The evaluation's distances must measure the translation, not the generator's artefacts:
    real A is far from real B in EfficientNet-Lite0 features (KID about 0.7; a colour
    difference alone scored 0.03), while two draws of A are close."""
    from training.evaluation.distances import kid
    from training.evaluation.features import EffNetLite0Features

    synthetic.generate(tmp_path, size=64, n_train=30, n_test=30, seed=5)
    net = EffNetLite0Features()
    features = {name: net(_load(tmp_path / name)).double().numpy() for name in ("trainA", "testA", "testB")}
    between = kid(features["testA"], features["testB"], subsets=10, subset_size=30)[0]
    within = kid(features["trainA"], features["testA"], subsets=10, subset_size=30)[0]
    assert between > 0.3 and abs(within) < 0.05, (between, within)


def test_stripe_texture_is_deterministic_and_bounded():
    first = synthetic.stripe_texture(np.random.default_rng(1), 64)
    assert first.shape == (64, 64) and np.abs(first).max() <= 1.0 and first.std() > 0.5
    assert np.array_equal(first, synthetic.stripe_texture(np.random.default_rng(1), 64))
    assert not np.array_equal(first, synthetic.stripe_texture(np.random.default_rng(2), 64))


def test_translation_exists_and_content_is_measurable(synthetic_data):
    """Swapping red and blue and adding stripes to the background is an A -> B translation:
    the score flips, the mask stays."""
    out, _ = synthetic_data
    a = _load(out / "testA")
    mask_a = synthetic.content_mask(a)
    rng = np.random.default_rng(0)
    stripes = torch.from_numpy(np.stack([synthetic.stripe_texture(rng, 64) for _ in range(len(a))])).float()
    translated = a[:, [2, 1, 0]] + 2 * synthetic.STRIPE_AMPLITUDE * stripes[:, None] * (~mask_a)[:, None]
    translated = translated.clamp(-1, 1)
    assert (synthetic.domain_score(translated) > 0).all()
    mask_translated = synthetic.content_mask(translated)
    assert mask_a.dtype == torch.bool and mask_a.shape == (50, 64, 64)
    assert torch.equal(mask_a, mask_translated)
    assert (synthetic.mask_iou(mask_a, mask_translated) == 1).all()
    assert _background_gradients(translated)[0] > 3 * _background_gradients(a)[0]
    # Every image has some foreground; the masks of two different images mostly disagree.
    assert (mask_a.sum(dim=(1, 2)) >= synthetic.MIN_MASK_PIXELS).all()
    other = synthetic.content_mask(_load(out / "testB"))
    assert synthetic.mask_iou(mask_a, other).mean() < 0.5


def test_grey_and_single_image_inputs():
    grey = torch.zeros(2, 3, 16, 16)
    assert torch.allclose(synthetic.domain_score(grey), torch.zeros(2))
    assert not synthetic.content_mask(grey).any()
    striped = torch.from_numpy(synthetic.stripe_texture(np.random.default_rng(0), 16)).float().expand(2, 3, 16, 16)
    assert torch.allclose(synthetic.domain_score(striped * 0.5), torch.zeros(2))   # grey stripes: no colour
    assert not synthetic.content_mask(striped * 0.5).any()
    assert synthetic.domain_score(torch.zeros(3, 8, 8)).shape == (1,)
    with pytest.raises(ValueError):
        synthetic.domain_score(torch.zeros(2, 1, 8, 8))
