import pytest
import torch

from helpers import make_images
from training.config import DataConfig
from training.data.dataset import EpochSampler, UnalignedDataset
from training.errors import UserError


def test_epoch_length_is_the_larger_domain(tiny_data):
    ds = UnalignedDataset(tiny_data, DataConfig(load_size=36, crop_size=32))
    assert (len(ds.paths_A), len(ds.paths_B), len(ds)) == (6, 5, 6)


def test_items_are_preprocessed_to_crop_size_in_range(tiny_data):
    ds = UnalignedDataset(tiny_data, DataConfig(load_size=36, crop_size=32))
    item = ds[(0, 1, 42)]
    assert item["A"].shape == (3, 32, 32) and item["B"].shape == (3, 32, 32)
    assert item["A"].min() >= -1 and item["A"].max() <= 1
    assert torch.equal(ds[(0, 1, 42)]["A"], item["A"])       # same key, same crop and flip
    assert not torch.equal(ds[(0, 1, 43)]["A"], item["A"])   # another seed, another crop/flip


def test_sampler_covers_A_once_and_draws_B_at_random():
    keys = EpochSampler(7, 4, seed=0, epoch=0).keys()
    assert sorted(k[0] for k in keys) == list(range(7))
    assert {k[1] for k in keys} <= set(range(4))
    assert keys != EpochSampler(7, 4, seed=0, epoch=1).keys()
    assert keys == EpochSampler(7, 4, seed=0, epoch=0).keys()


def test_serial_sampler_takes_both_domains_in_order():
    keys = EpochSampler(3, 5, seed=0, epoch=0, serial=True).keys()
    assert [(a, b) for a, b, _ in keys] == [(0, 0), (1, 1), (2, 2), (0, 3), (1, 4)]


def test_sampler_resumes_mid_epoch_with_the_same_items():
    full = list(EpochSampler(9, 9, seed=3, epoch=2))
    assert list(EpochSampler(9, 9, seed=3, epoch=2, start=4)) == full[4:]
    assert len(EpochSampler(9, 9, seed=3, epoch=2, limit=5)) == 5


def test_direction_BtoA_swaps_domains(tiny_data):
    ds = UnalignedDataset(tiny_data, DataConfig(direction="BtoA", load_size=36, crop_size=32))
    assert "trainB" in str(ds.paths_A[0]) and len(ds.paths_A) == 5


def test_missing_and_empty_domains_are_errors(tmp_path):
    with pytest.raises(UserError, match="data folder not found"):
        UnalignedDataset(tmp_path / "nope", DataConfig())
    make_images(tmp_path / "trainA", 2)
    (tmp_path / "trainB").mkdir()
    with pytest.raises(UserError, match="trainB: no images"):
        UnalignedDataset(tmp_path, DataConfig())


def test_grayscale_and_rgba_inputs_become_rgb(tmp_path):
    from PIL import Image

    for d in ("trainA", "trainB"):
        (tmp_path / d).mkdir()
    Image.new("L", (40, 40), 128).save(tmp_path / "trainA" / "gray.png")
    Image.new("RGBA", (40, 40), (255, 0, 0, 10)).save(tmp_path / "trainB" / "rgba.PNG")
    ds = UnalignedDataset(tmp_path, DataConfig(load_size=32, crop_size=32))
    item = ds[(0, 0, 1)]
    assert item["A"].shape == item["B"].shape == (3, 32, 32)
    assert item["B"][0].mean() > 0.99 and item["B"][1].mean() < -0.99   # red stays red
