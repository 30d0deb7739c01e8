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


def plateau_worker(rank: int, world_size: int, port: int, data: str, out_dir: str) -> None:
    """One torchrun-like process training with the plateau policy; saves the metric each
    scheduler step got and the generator loss of each of its own iterations."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from training.engine import trainer as trainer_module

    metrics, losses = [], []
    step_scheduler, step = trainer_module.step_scheduler, TrainingStep.__call__

    def record_metric(scheduler, metric=None):
        metrics.append(metric)
        step_scheduler(scheduler, metric)

    def record_loss(self, real_A, real_B):
        result = step(self, real_A, real_B)
        losses.append(result.losses["G"].item())
        return result

    trainer_module.step_scheduler = record_metric
    TrainingStep.__call__ = record_loss
    cfg = load_config(PROFILE, ["train.lr_policy=plateau", "train.sample_every=0", "train.max_iters_per_epoch=2"],
                      required=True)
    trainer_module.train(cfg, data, os.path.join(out_dir, "run"), device="cpu", progress=False)
    torch.save({"metrics": metrics, "losses": losses}, os.path.join(out_dir, f"plateau{rank}.pt"))
