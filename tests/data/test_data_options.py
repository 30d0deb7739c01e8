"""The data options of the authors' code, each tested for what it means: the preprocess
modes and their output sizes, no_flip, max_dataset_size, serial_batches and direction."""
from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from helpers import make_images
from training.config import DataConfig
from training.data.dataset import EpochSampler, UnalignedDataset
from training.data.transforms import preprocess


def gradient_image(w: int, h: int) -> Image.Image:
    """Every pixel distinct and no symmetry, so crops and flips can be located exactly."""
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    array = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x * 7 + y * 13) % 256], axis=2)
    return Image.fromarray(array.astype("uint8"))


def run(img, **data):
    cfg = DataConfig(**{"no_flip": True, **data})
    return preprocess(img, cfg, random.Random(0))


@pytest.mark.parametrize("size,expected", [
    ((80, 40), (64, 32)),    # width to load_size, height keeps the aspect ratio
    ((40, 80), (64, 128)),
    ((64, 20), (64, 32)),    # never shorter than crop_size
    ((64, 48), (64, 48)),    # already load_size wide: untouched
])
def test_scale_width_sizes(size, expected):
    out = run(gradient_image(*size), preprocess="scale_width", load_size=64, crop_size=32)
    assert out.size == expected


def test_scale_width_keeps_an_image_that_is_already_the_right_width():
    img = gradient_image(64, 48)
    out = run(img, preprocess="scale_width", load_size=64, crop_size=32)
    assert np.array_equal(np.asarray(out), np.asarray(img))


@pytest.mark.parametrize("size", [(80, 40), (40, 80), (64, 20)])
def test_scale_width_and_crop_gives_square_crops(size):
    out = run(gradient_image(*size), preprocess="scale_width_and_crop", load_size=64, crop_size=32)
    assert out.size == (32, 32)


def locate(crop: np.ndarray, full: np.ndarray) -> list[tuple[int, int]]:
    h, w = crop.shape[:2]
    return [(x, y) for y in range(full.shape[0] - h + 1) for x in range(full.shape[1] - w + 1)
            if np.array_equal(full[y:y + h, x:x + w], crop)]


def test_crop_takes_a_random_window_of_the_original():
    img = gradient_image(50, 40)
    full = np.asarray(img)
    offsets = set()
    for seed in range(12):
        out = preprocess(img, DataConfig(preprocess="crop", crop_size=32, no_flip=True), random.Random(seed))
        assert out.size == (32, 32)
        found = locate(np.asarray(out), full)
        assert len(found) == 1  # an unscaled window of the original image
        offsets.add(found[0])
    assert len(offsets) > 3  # and a random one


def test_resize_and_crop_resizes_to_load_size_first():
    img = gradient_image(100, 60)
    resized = np.asarray(img.resize((40, 40), Image.BICUBIC))
    out = run(img, preprocess="resize_and_crop", load_size=40, crop_size=32)
    assert out.size == (32, 32)
    assert len(locate(np.asarray(out), resized)) == 1


@pytest.mark.parametrize("size,expected", [((42, 30), (40, 32)), ((64, 48), (64, 48)), ((3, 9), (4, 8))])
def test_none_only_rounds_sides_to_multiples_of_4(size, expected):
    img = gradient_image(*size)
    out = run(img, preprocess="none", load_size=8, crop_size=4)
    assert out.size == expected  # round(side / 4) * 4, as the authors' __make_power_2 (at least 4)
    if size == expected:
        assert np.array_equal(np.asarray(out), np.asarray(img))


@pytest.mark.parametrize("no_flip", [False, True])
def test_no_flip(no_flip):
    img = gradient_image(24, 16)
    original, mirrored = np.asarray(img), np.asarray(img)[:, ::-1]
    flips = 0
    for seed in range(40):
        out = np.asarray(preprocess(img, DataConfig(preprocess="none", no_flip=no_flip), random.Random(seed)))
        assert np.array_equal(out, original) or np.array_equal(out, mirrored)
        flips += np.array_equal(out, mirrored)
    if no_flip:
        assert flips == 0
    else:
        assert 8 < flips < 32  # a fair coin per image
    # flips are for training only
    out = preprocess(img, DataConfig(preprocess="none", no_flip=no_flip), random.Random(1), train=False)
    assert np.array_equal(np.asarray(out), original)


def domains(root, n_a=6, n_b=4):
    make_images(root / "trainA", n_a, size=(8, 8), seed=1)
    make_images(root / "trainB", n_b, size=(8, 8), seed=2)
    return root


def test_max_dataset_size(tmp_path):
    root = domains(tmp_path, 6, 4)
    full = UnalignedDataset(root, DataConfig(load_size=8, crop_size=8))
    capped = UnalignedDataset(root, DataConfig(load_size=8, crop_size=8, max_dataset_size=3))
    assert capped.paths_A == full.paths_A[:3] and capped.paths_B == full.paths_B[:3]
    assert len(capped) == 3 and len(full) == 6  # an epoch is max(|A|, |B|) items


def test_serial_batches_walk_both_domains_in_order():
    serial = EpochSampler(6, 4, seed=0, epoch=0, serial=True).keys()
    assert [(a, b) for a, b, _ in serial] == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 0), (5, 1)]
    shuffled = [[(a, b) for a, b, _ in EpochSampler(6, 4, seed=0, epoch=e).keys()] for e in range(3)]
    assert all(sorted(a for a, _ in keys) == list(range(6)) for keys in shuffled)  # still each A once
    assert any([a for a, _ in keys] != list(range(6)) for keys in shuffled)
    assert any([b for _, b in keys] != [0, 1, 2, 3, 0, 1] for keys in shuffled)


def test_direction_BtoA_swaps_the_domains(tmp_path):
    root = domains(tmp_path, 6, 4)
    ab = UnalignedDataset(root, DataConfig(load_size=8, crop_size=8, input_nc=1, output_nc=3))
    ba = UnalignedDataset(root, DataConfig(load_size=8, crop_size=8, input_nc=1, output_nc=3, direction="BtoA"))
    assert ba.paths_A == ab.paths_B and ba.paths_B == ab.paths_A
    assert all(p.parent.name == "trainB" for p in ba.paths_A)
    # input_nc stays the channel count of trainA images, whichever way the model translates
    item_ab, item_ba = ab[(0, 0, 1)], ba[(0, 0, 1)]
    assert item_ab["A"].shape[0] == 1 and item_ab["B"].shape[0] == 3
    assert item_ba["A"].shape[0] == 3 and item_ba["B"].shape[0] == 1
    assert item_ba["A_path"].endswith(".png") and "trainB" in item_ba["A_path"]


def test_direction_BtoA_builds_G_A_from_B_to_A():
    from training.config import load_config
    from training.models.cyclegan import CycleGAN

    from helpers import TESTS_PROFILE

    cfg = load_config(TESTS_PROFILE, ["data.direction=BtoA", "data.input_nc=1", "train.lambda_identity=0"],
                      required=True)
    model = CycleGAN(cfg, init=False)
    assert model.G_A.model[1].in_channels == 3 and model.G_A.model[-2].out_channels == 1
    assert model.D_A.model[0].in_channels == 1  # D_A judges G_A's outputs: trainA images
