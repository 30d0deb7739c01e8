"""Worker for the DDP equivalence test: one training step per process, gradients saved."""
import os

import torch

from training.config import load_config
from training.models.cyclegan import CycleGAN, TrainingStep

PROFILE = os.path.join(os.path.dirname(__file__), "..", "..", "profiles", "tests.yaml")


def images(n: int = 2, size: int = 32):
    g = torch.Generator().manual_seed(123)
    return (torch.rand(n, 3, size, size, generator=g) * 2 - 1, torch.rand(n, 3, size, size, generator=g) * 2 - 1)


def one_step_gradients(real_A, real_B, distributed: bool) -> dict[str, torch.Tensor]:
    cfg = load_config(PROFILE, required=True)
    torch.manual_seed(0)
    model = CycleGAN(cfg)
    step = TrainingStep(model, cfg.train, torch.device("cpu"), distributed=distributed)
    step(real_A, real_B)
    # after one iteration, .grad holds the generators' and discriminators' gradients
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    real_A, real_B = images(world_size)
    grads = one_step_gradients(real_A[rank:rank + 1], real_B[rank:rank + 1], distributed=True)
    torch.save(grads, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()
