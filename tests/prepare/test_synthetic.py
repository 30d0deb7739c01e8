"""The synthetic source: deterministic, fast, and measurable without labels."""
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


def test_translation_exists_and_content_is_measurable(synthetic_data):
    """Swapping red and blue is an exact A -> B translation: the score flips, the mask stays."""
    out, _ = synthetic_data
    a = _load(out / "testA")
    swapped = a[:, [2, 1, 0]]
    assert (synthetic.domain_score(swapped) > 0).all()
    mask_a, mask_swapped = synthetic.content_mask(a), synthetic.content_mask(swapped)
    assert mask_a.dtype == torch.bool and mask_a.shape == (50, 64, 64)
    assert torch.equal(mask_a, mask_swapped)
    assert (synthetic.mask_iou(mask_a, mask_swapped) == 1).all()
    # Every image has some foreground; the masks of two different images mostly disagree.
    assert (mask_a.sum(dim=(1, 2)) >= synthetic.MIN_MASK_PIXELS).all()
    other = synthetic.content_mask(_load(out / "testB"))
    assert synthetic.mask_iou(mask_a, other).mean() < 0.5


def test_grey_and_single_image_inputs():
    grey = torch.zeros(2, 3, 16, 16)
    assert torch.allclose(synthetic.domain_score(grey), torch.zeros(2))
    assert not synthetic.content_mask(grey).any()
    assert synthetic.domain_score(torch.zeros(3, 8, 8)).shape == (1,)
    with pytest.raises(ValueError):
        synthetic.domain_score(torch.zeros(2, 1, 8, 8))
