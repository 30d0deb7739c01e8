"""The unaligned two-domain dataset and the resumable sampler that feeds it.

Layout: ``DIR/trainA``, ``DIR/trainB`` (and ``testA``/``testB``), images in any nesting.
An epoch has max(|A|, |B|) items. A is visited in a shuffled order (in order with
``serial_batches``); B is drawn at random per item (in order with ``serial_batches``).
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from ..config import DataConfig
from ..errors import UserError
from .transforms import IMAGE_EXTENSIONS, preprocess, to_tensor


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def domain_folders(root: str | Path, phase: str = "train") -> tuple[Path, Path]:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found")
    folders = root / f"{phase}A", root / f"{phase}B"
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"{folder}: domain folder not found (expected {phase}A/ and {phase}B/ in {root})")
    return folders


def _mix(*values: int) -> int:
    """A stable 63-bit seed from integers (splitmix64-style), independent of Python's hash."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class UnalignedDataset(Dataset):
    """Items are keyed by (index_A, index_B, item_seed) tuples from ``EpochSampler``."""

    def __init__(self, root: str | Path, cfg: DataConfig, phase: str = "train"):
        folder_a, folder_b = domain_folders(root, phase)
        if cfg.direction == "BtoA":
            folder_a, folder_b = folder_b, folder_a
        self.paths_A, self.paths_B = list_images(folder_a), list_images(folder_b)
        if cfg.max_dataset_size > 0:
            self.paths_A = self.paths_A[:cfg.max_dataset_size]
            self.paths_B = self.paths_B[:cfg.max_dataset_size]
        for folder, paths in ((folder_a, self.paths_A), (folder_b, self.paths_B)):
            if not paths:
                raise UserError(f"{folder}: no images in this domain")
        self.cfg, self.train = cfg, phase == "train"
        self.nc_A, self.nc_B = ((cfg.input_nc, cfg.output_nc) if cfg.direction == "AtoB"
                                else (cfg.output_nc, cfg.input_nc))

    def __len__(self) -> int:
        return max(len(self.paths_A), len(self.paths_B))

    def _load(self, path: Path, rng: random.Random, channels: int) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except Exception as e:
            raise UserError(f"{path}: cannot read image ({e})") from None
        return to_tensor(preprocess(img, self.cfg, rng, self.train), channels)

    def __getitem__(self, key):
        index_A, index_B, item_seed = key
        rng = random.Random(item_seed)
        path_A, path_B = self.paths_A[index_A], self.paths_B[index_B]
        return {"A": self._load(path_A, rng, self.nc_A), "B": self._load(path_B, rng, self.nc_B),
                "A_path": str(path_A), "B_path": str(path_B)}


class EpochSampler(Sampler):
    """Yields the keys of one epoch, from position ``start`` on.

    The order is a pure function of (seed, epoch), so a resumed run that restarts the
    sampler at the saved position sees exactly the items the interrupted run would have.
    """

    def __init__(self, n_A: int, n_B: int, seed: int, epoch: int, serial: bool = False, start: int = 0,
                 limit: int = 0, rank: int = 0, world_size: int = 1):
        self.n_A, self.n_B, self.seed, self.epoch, self.serial = n_A, n_B, seed, epoch, serial
        self.length = max(n_A, n_B) if limit <= 0 else min(limit, max(n_A, n_B))
        self.start = start
        # Under torchrun each process takes every world_size-th key of the one global order,
        # like DistributedSampler; positions (start, len) count this process's items.
        self.rank, self.world_size = rank, world_size

    def keys(self) -> list[tuple[int, int, int]]:
        n = max(self.n_A, self.n_B)
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, 1))
        if self.serial:
            order = list(range(n))
            b_indices = [i % self.n_B for i in range(n)]
        else:
            order = torch.randperm(n, generator=g).tolist()
            b_indices = torch.randint(self.n_B, (n,), generator=g).tolist()
        return [(order[k] % self.n_A, b_indices[k], _mix(self.seed, self.epoch, k, 2))
                for k in range(self.length)]

    def local_keys(self) -> list[tuple[int, int, int]]:
        keys = self.keys()
        per_rank = len(keys) // self.world_size
        return keys[self.rank::self.world_size][:per_rank]

    def __iter__(self):
        return iter(self.local_keys()[self.start:])

    def __len__(self) -> int:
        return self.length // self.world_size - self.start
