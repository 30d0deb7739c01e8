"""The history of generated images (Shrivastava et al. 2017) that the discriminators
are updated on, so they do not chase the generators' latest output."""
from __future__ import annotations

import random

import torch


class ImagePool:
    """Stores up to ``size`` generated images. Until full, a query stores and returns each
    image. Once full, each image is swapped with probability 1/2: a random stored image is
    returned and the new one stored in its place; otherwise the new image is returned.
    ``size`` 0 disables the pool. The pool's own RNG is part of its state, so a resumed
    run draws the same swaps."""

    def __init__(self, size: int = 50, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self.rng.random() > 0.5:
                i = self.rng.randrange(self.size)
                out.append(self.images[i])
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"size": self.size, "images": [im.detach().cpu() for im in self.images],
                "rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.size = state["size"]
        self.images = [im.to(device) for im in state["images"]]
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
