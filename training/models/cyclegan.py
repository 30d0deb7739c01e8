"""The CycleGAN model and its training step.

Naming follows the authors: G_A maps A -> B, G_B maps B -> A, D_A judges domain B
(real B against G_A's output) and D_B judges domain A.

One iteration, as the authors' ``optimize_parameters``:
  1. G step: adversarial + cycle + identity losses, D frozen, both G updated together.
  2. D step: each D on real images and on fakes drawn from its history pool, loss halved,
     both D updated together.

``merge_passes`` runs independent calls of one network as a single call on a concatenated
batch: G_A on [real A, real B] gives fake B and identity A. Instance normalisation works
per sample, so this is exact; with batch normalisation it would not be, and it is off.

With ``train.deterministic`` the generators' reflection pads are swapped for one whose backward
is deterministic on CUDA too (``padding.py``; the same numbers as the CPU kernel, bit for bit).

Nothing a step returns or keeps shares memory with the networks' outputs: the pools store
clones and the visuals are copies, so a CUDA graph replay (``train.cuda_graphs``), which
overwrites its output buffers in place, never changes a pooled image or a sample grid.
This module imports torch alone so benchmarks can run it on bare GPU machines.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ..config import Config, TrainConfig
from ..errors import UserError
from .losses import cycle_loss, discriminator_loss, gan_loss, gradient_penalty, identity_loss
from .padding import use_deterministic_padding
from .registry import build_discriminator, build_generator
from .pool import ImagePool

LOSS_NAMES = ("G", "G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B")


class CycleGAN(nn.Module):
    def __init__(self, cfg: Config, init: bool = True):
        super().__init__()
        a_nc, b_nc = cfg.data.input_nc, cfg.data.output_nc
        if cfg.data.direction == "BtoA":
            a_nc, b_nc = b_nc, a_nc
        self.G_A = build_generator(cfg.model, a_nc, b_nc, init)
        self.G_B = build_generator(cfg.model, b_nc, a_nc, init)
        self.D_A = build_discriminator(cfg.model, b_nc, init)
        self.D_B = build_discriminator(cfg.model, a_nc, init)

    def generators(self):
        return [self.G_A, self.G_B]

    def discriminators(self):
        return [self.D_A, self.D_B]


def make_optimizers(model: CycleGAN, cfg: TrainConfig, device: torch.device):
    """One Adam for both generators and one for both discriminators, as the authors."""
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    if cfg.fused_adam and device.type == "cuda":
        kwargs["fused"] = True
    else:
        # On CPU the per-tensor loop is the fast path: measured here (torch 2.14.1, 2 cores) the
        # foreach path was 12x and the fused CPU kernel 3x slower for a 9-block generator.
        kwargs["foreach"] = False
    opt_G = torch.optim.Adam([*model.G_A.parameters(), *model.G_B.parameters()], **kwargs)
    opt_D = torch.optim.Adam([*model.D_A.parameters(), *model.D_B.parameters()], **kwargs)
    return opt_G, opt_D


@dataclass
class StepResult:
    losses: dict[str, torch.Tensor]   # detached, still on the device: reading them syncs
    visuals: dict[str, torch.Tensor]  # detached copies of the images, in [-1, 1]


def _set_requires_grad(nets, flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class GeneratorPass(nn.Module):
    """Every generator output of one iteration in one ``forward``.

    One call per iteration is what DistributedDataParallel needs (it averages gradients
    once per forward/backward), and it is the unit ``torch.compile`` captures.
    Returns fake_B, rec_A, fake_A, rec_B, idt_A, idt_B (identities None when off).
    """

    def __init__(self, G_A: nn.Module, G_B: nn.Module, merge: bool):
        super().__init__()
        self.G_A, self.G_B, self.merge = G_A, G_B, merge

    def forward(self, real_A, real_B, identity: bool = True):
        G_A, G_B = self.G_A, self.G_B
        if self.merge:
            n, m = real_A.shape[0], real_B.shape[0]
            if identity:
                fake_B, idt_A = G_A(torch.cat([real_A, real_B])).split([n, m])
                fake_A, idt_B = G_B(torch.cat([real_B, real_A])).split([m, n])
            else:
                fake_B, fake_A, idt_A, idt_B = G_A(real_A), G_B(real_B), None, None
            return fake_B, G_B(fake_B), fake_A, G_A(fake_A), idt_A, idt_B
        # the authors' order of calls, which keeps fp32 results bit-identical to theirs
        fake_B = G_A(real_A)
        rec_A = G_B(fake_B)
        fake_A = G_B(real_B)
        rec_B = G_A(fake_A)
        idt_A = G_A(real_B) if identity else None
        idt_B = G_B(real_A) if identity else None
        return fake_B, rec_A, fake_A, rec_B, idt_A, idt_B


class DiscriminatorPass(nn.Module):
    """Both discriminators on real and pooled fake images, in one ``forward``.

    Returns predictions (D_A on real B, D_A on fake B, D_B on real A, D_B on fake A).
    """

    def __init__(self, D_A: nn.Module, D_B: nn.Module, merge: bool):
        super().__init__()
        self.D_A, self.D_B, self.merge = D_A, D_B, merge

    def _judge(self, D, real, fake):
        if self.merge and real.shape[1:] == fake.shape[1:]:
            return D(torch.cat([real, fake])).split([real.shape[0], fake.shape[0]])
        return D(real), D(fake)

    def forward(self, real_B, fake_B, real_A, fake_A):
        return (*self._judge(self.D_A, real_B, fake_B), *self._judge(self.D_B, real_A, fake_A))


class TrainingStep:
    """Owns the model, optimisers and pools; ``__call__(real_A, real_B)`` runs one iteration.

    With ``distributed=True`` (inside ``torch.distributed``), both passes run under
    DistributedDataParallel, which averages gradients over the processes: P processes
    x batch 1 give the gradients of 1 process x batch P.
    """

    def __init__(self, model: CycleGAN, cfg: TrainConfig, device: torch.device, seed: int = 0,
                 norm: str = "instance", distributed: bool = False):
        self.model, self.cfg, self.device = model, cfg, device
        self.opt_G, self.opt_D = make_optimizers(model, cfg, device)
        self.pool_A = ImagePool(cfg.pool_size, seed=seed * 2 + 1)   # fake A images, for D_B
        self.pool_B = ImagePool(cfg.pool_size, seed=seed * 2 + 2)   # fake B images, for D_A
        # Merging changes batch statistics under batch norm, so it keeps the math only for per-sample norms.
        merge = cfg.merge_passes and norm != "batch"
        # instance_norm backward on CPU at batch 1 with channels_last is wrong in torch 2.14.1.
        self.channels_last = cfg.channels_last and device.type == "cuda"
        self.autocast = cfg.amp_bf16
        self.gp_generator = None
        if cfg.deterministic:
            # torch has no deterministic CUDA backward for reflection padding
            for net in model.generators():
                use_deterministic_padding(net)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.D_A, self.D_B = model.D_A, model.D_B
        self.generate = GeneratorPass(model.G_A, model.G_B, merge)
        self.judge = DiscriminatorPass(model.D_A, model.D_B, merge)
        if distributed:
            if cfg.gan_mode == "wgangp":
                raise UserError("train.gan_mode: wgangp's gradient penalty is not supported with torchrun "
                                "(double backward under DistributedDataParallel); train on one process")
            ids = [device.index] if device.type == "cuda" else None
            self.generate = nn.parallel.DistributedDataParallel(self.generate, device_ids=ids)
            self.judge = nn.parallel.DistributedDataParallel(self.judge, device_ids=ids)
        if cfg.compile:
            mode = "reduce-overhead" if cfg.cuda_graphs else None
            self.generate = torch.compile(self.generate, mode=mode)
            self.judge = torch.compile(self.judge, mode=mode)
            self.D_A, self.D_B = torch.compile(model.D_A, mode=mode), torch.compile(model.D_B, mode=mode)

    def _amp(self):
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def discriminator_losses(self, real_B, fake_B, real_A, fake_A):
        """(loss of D_A, loss of D_B), each halved, plus the gradient penalty under wgangp."""
        mode = self.cfg.gan_mode
        with self._amp():
            real_B_pred, fake_B_pred, real_A_pred, fake_A_pred = self.judge(real_B, fake_B, real_A, fake_A)
            loss_D_A = discriminator_loss(real_B_pred, fake_B_pred, mode)
            loss_D_B = discriminator_loss(real_A_pred, fake_A_pred, mode)
            if mode == "wgangp":
                loss_D_A = loss_D_A + gradient_penalty(self.model.D_A, real_B, fake_B, self.cfg.lambda_gp,
                                                       generator=self.gp_generator)
                loss_D_B = loss_D_B + gradient_penalty(self.model.D_B, real_A, fake_A, self.cfg.lambda_gp,
                                                       generator=self.gp_generator)
        return loss_D_A, loss_D_B

    def __call__(self, real_A: torch.Tensor, real_B: torch.Tensor) -> StepResult:
        cfg = self.cfg
        if self.channels_last:
            real_A = real_A.contiguous(memory_format=torch.channels_last)
            real_B = real_B.contiguous(memory_format=torch.channels_last)
        identity = cfg.lambda_identity > 0
        mode = cfg.gan_mode

        # 1. generators, with the discriminators frozen
        _set_requires_grad(self.model.discriminators(), False)
        self.opt_G.zero_grad(set_to_none=True)
        with self._amp():
            fake_B, rec_A, fake_A, rec_B, idt_A, idt_B = self.generate(real_A, real_B, identity)
            loss_G_A = gan_loss(self.D_A(fake_B), True, mode)
            loss_G_B = gan_loss(self.D_B(fake_A), True, mode)
            loss_cycle_A = cycle_loss(rec_A, real_A) * cfg.lambda_A
            loss_cycle_B = cycle_loss(rec_B, real_B) * cfg.lambda_B
            loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B
            if identity:
                loss_idt_A = identity_loss(idt_A, real_B) * cfg.lambda_B * cfg.lambda_identity
                loss_idt_B = identity_loss(idt_B, real_A) * cfg.lambda_A * cfg.lambda_identity
                loss_G = loss_G + loss_idt_A + loss_idt_B
            else:
                loss_idt_A = loss_idt_B = torch.zeros((), device=real_A.device)
        loss_G.backward()
        self.opt_G.step()

        # 2. discriminators, on fakes drawn from the history pools; each loss is halved
        _set_requires_grad(self.model.discriminators(), True)
        self.opt_D.zero_grad(set_to_none=True)
        pooled_B = self.pool_B.query(fake_B.detach())
        pooled_A = self.pool_A.query(fake_A.detach())
        loss_D_A, loss_D_B = self.discriminator_losses(real_B, pooled_B, real_A, pooled_A)
        # one backward for both: the two losses share no parameters, so the gradients are
        # the same as two separate backward calls, and DDP sees one backward per forward
        (loss_D_A + loss_D_B).backward()
        self.opt_D.step()

        values = (loss_G, loss_G_A, loss_G_B, loss_cycle_A, loss_cycle_B, loss_idt_A, loss_idt_B,
                  loss_D_A, loss_D_B)
        losses = {name: v.detach().float() for name, v in zip(LOSS_NAMES, values)}
        visuals = {"real_A": real_A, "fake_B": fake_B, "rec_A": rec_A,
                   "real_B": real_B, "fake_A": fake_A, "rec_B": rec_B}
        # copies: under CUDA graphs these outputs are buffers the next replay overwrites
        return StepResult(losses, {k: v.detach().clone() for k, v in visuals.items()})
