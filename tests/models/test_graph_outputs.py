"""Under CUDA graphs (train.cuda_graphs) a network's outputs are static buffers that the next
replay overwrites in place. Nothing the step keeps or hands out may share memory with them:
the history pools (which store images for up to 50 iterations) and the visuals the sample
grids are drawn from. Without CUDA, a wrapper stands in for the replay: each call writes its
outputs into the previous call's output tensors, as a replay writes into the same buffers."""
from __future__ import annotations

import torch
from torch import nn

from helpers import TESTS_PROFILE
from training.config import load_config
from training.models.cyclegan import CycleGAN, TrainingStep


class FakeReplay(nn.Module):
    """Wraps a pass; from the second call on, the previous call's outputs are overwritten with
    the new values (what a CUDA graph replay does to whoever still holds them)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.previous = inner, None

    def forward(self, *args, **kwargs):
        outputs = self.inner(*args, **kwargs)
        if self.previous is not None:
            with torch.no_grad():
                for old, new in zip(self.previous, outputs):
                    if old is not None:
                        old.copy_(new)
        self.previous = outputs
        return outputs


def _images(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, torch.rand(1, 3, 32, 32, generator=g) * 2 - 1


def test_pool_and_visuals_survive_a_replay_of_the_generator_pass():
    cfg = load_config(TESTS_PROFILE, ["train.pool_size=2"], required=True)
    torch.manual_seed(0)
    step = TrainingStep(CycleGAN(cfg), cfg.train, torch.device("cpu"))
    step.generate = FakeReplay(step.generate)
    step.judge = FakeReplay(step.judge)

    first = step(*_images(1))
    visuals = {k: (v, v.clone()) for k, v in first.visuals.items()}
    pooled = [(im, im.clone()) for pool in (step.pool_A, step.pool_B) for im in pool.images]
    assert len(pooled) == 2

    second = step(*_images(2))
    # the replay really overwrote the first call's outputs...
    assert torch.equal(step.generate.previous[0], second.visuals["fake_B"])
    assert not torch.equal(second.visuals["fake_B"], visuals["fake_B"][1])
    # ...and neither what the pools stored nor the first step's visuals changed with them
    for image, snapshot in pooled:
        assert torch.equal(image, snapshot)
    for name, (tensor, snapshot) in visuals.items():
        assert torch.equal(tensor, snapshot), f"visual {name} was overwritten by the next replay"
