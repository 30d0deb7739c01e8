"""The training loop: data, steps, logs, sample grids, checkpoints and exact resume.

Outputs under ``out`` (names in ``layout.TrainRun``):
  latest checkpoint     full state, rewritten every ``save_latest_freq`` iterations and each epoch
  previous checkpoint   the latest one before the last save, while the run goes on (a fallback)
  epoch checkpoints     kept every ``save_epoch_freq`` epochs and at the end: the generators and
                        config (what translate, evaluate and export read), or the full state
                        with ``train.keep_full_state``
  training log (CSV)    one row per ``log_every`` iterations (window means of the losses)
  sample grids (PNG)    real A | fake B | rec A | real B | fake A | rec B
  config                the effective configuration

Under ``torchrun --nproc_per_node N`` every process trains on its share of each epoch
(DistributedDataParallel averages the gradients) and only rank 0 writes anything. The epoch's
mean generator loss (the plateau policy's metric) is averaged over the processes, so every
rank's schedule stays the same. Resume needs the same world size, which the checkpoint records;
exact, bit-for-bit resume is a single-process property (the other ranks' image pools restart
from rank 0's).

Two ways to resume (``train(resume=...)``):
  "exact"  continue OUT's run, or fail with a one-line reason when it cannot continue.
  "auto"   continue only when that gives what starting over would: an unfinished run with the
           same training settings (RESUME_IGNORED aside), world size and training images.
           An unreadable latest checkpoint (a torn write, a full disk) falls back to the newest
           readable full state (the previous checkpoint, a full-state epoch checkpoint).
           Otherwise say why on stderr and start over. This is what `dvc repro` and retries
           want: a stage re-run because its data or params changed trains anew, an interrupted
           one continues.
Starting over (including a run without resume into a used OUT) first removes the previous run's
checkpoints, samples and log, so the folder never mixes two runs. Temporaries that a writer
killed mid-write left behind are removed whenever a run starts or continues.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Protocol

import torch

from .checkpoint import (FORMAT, atomic_torch_save, generators_state, is_training_state, load_checkpoint,
                         one_line, rng_state, save_latest, set_rng_state)
from ..config import Config, config_from_dict
from ..models.cyclegan import LOSS_NAMES, CycleGAN, TrainingStep
from ..data.dataset import EpochSampler, UnalignedDataset
from ..errors import UserError
from ..layout import TrainRun
from ..utils import atomic_path, atomic_write_text, resolve_device
from .schedule import build_scheduler, step_scheduler

# Settings that change how a run is watched, not what it computes; "auto" resumes across them.
RESUME_IGNORED = {"data.num_workers", "train.device", "train.log_every", "train.sample_every",
                  "train.save_latest_freq", "train.save_epoch_freq", "train.keep_full_state"}
RESUME_MODES = ("exact", "auto")

LOG_FIELDS = ["epoch", "iteration", *[f"loss_{n}" for n in LOSS_NAMES], "lr", "it_per_s", "time"]


class TrainingListener(Protocol):
    """Told, on the main process and on the training thread, what the trainer has just written.
    An implementation must return at once and never raise: it runs inside the training loop
    (``mlops/live.py`` only queues the item for its own thread)."""

    def on_log_row(self, row: dict) -> None:
        """A row (``LOG_FIELDS``) was appended to the training log."""

    def on_sample(self, path: Path, iteration: int) -> None:
        """A sample grid was written to ``path`` at ``iteration``."""


def distributed_setup(device_name: str) -> tuple[int, int, str]:
    """(rank, world_size, device) under torchrun; (0, 1, device_name) otherwise.

    torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; each process then drives one GPU
    (NCCL), or the CPU with the gloo backend.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device_name
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), f"cuda:{local_rank}" if use_cuda else "cpu"


def configure_backends(cfg: Config, device: torch.device) -> None:
    torch.manual_seed(cfg.train.seed)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
        torch.backends.cudnn.allow_tf32 = cfg.train.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = cfg.train.allow_tf32


def sample_grid(visuals: dict[str, torch.Tensor]) -> torch.Tensor:
    """First item of the batch: real A | fake B | rec A over real B | fake A | rec B."""
    def row(names):
        return torch.cat([visuals[n][0].float().expand(3, -1, -1) if visuals[n].shape[1] == 1
                          else visuals[n][0].float() for n in names], dim=2)
    top, bottom = row(("real_A", "fake_B", "rec_A")), row(("real_B", "fake_A", "rec_B"))
    if top.shape != bottom.shape:  # A and B images of different sizes: show them side by side
        return torch.cat([top, bottom], dim=2) if top.shape[1] == bottom.shape[1] else top
    return torch.cat([top, bottom], dim=1)


class Trainer:
    def __init__(self, cfg: Config, data: str | Path, out: str | Path, device: str | None = None,
                 listener: TrainingListener | None = None, threads=None):
        self.cfg, self.data, self.out = cfg, Path(data), Path(out)
        self.listener = listener
        self.threads = threads   # a utils.ThreadGovernor on a shared CPU, or None
        self.rank, self.world_size, device = distributed_setup(device or cfg.train.device)
        self.is_main = self.rank == 0   # only the main process logs, samples and checkpoints
        self.device = resolve_device(device, "train.device")
        configure_backends(cfg, self.device)
        self.dataset = UnalignedDataset(self.data, cfg.data, "train")
        torch.manual_seed(cfg.train.seed)   # the same initial weights in every process
        self.model = CycleGAN(cfg).to(self.device)
        self.step = TrainingStep(self.model, cfg.train, self.device, seed=cfg.train.seed + 1000 * self.rank,
                                 norm=cfg.model.norm, distributed=self.world_size > 1)
        self.sched_G = build_scheduler(self.step.opt_G, cfg.train)
        self.sched_D = build_scheduler(self.step.opt_D, cfg.train)
        self.epoch, self.epoch_iter, self.global_iter = 0, 0, 0
        self._data_hash: str | None = None
        self.run = TrainRun(self.out)
        self.log_path = self.run.log

    # -- state ------------------------------------------------------------------------
    @property
    def data_hash(self) -> str:
        """sha256 over the training images (manifest entries, or the files themselves)."""
        if self._data_hash is None:
            from ..prepare.manifest import manifest_hash

            self._data_hash = manifest_hash(self.data, ("trainA", "trainB"))
        return self._data_hash

    @property
    def total_epochs(self) -> int:
        """The authors run epochs epoch_count .. n_epochs + n_epochs_decay (1-based)."""
        cfg = self.cfg.train
        return max(0, cfg.n_epochs + cfg.n_epochs_decay - cfg.epoch_count + 1)

    @property
    def items_per_epoch(self) -> int:
        """Items one process sees per epoch."""
        n, cap, batch = len(self.dataset), self.cfg.train.max_iters_per_epoch, self.cfg.train.batch_size
        items = n if cap <= 0 else min(n, cap * batch * self.world_size)
        return items // self.world_size

    @property
    def iters_per_epoch(self) -> int:
        return -(-self.items_per_epoch // self.cfg.train.batch_size)

    def state_dict(self) -> dict:
        m = self.model
        return {
            "format": FORMAT,
            "config": self.cfg.to_dict(),
            "data_hash": self.data_hash,
            "world_size": self.world_size,
            "epoch": self.epoch, "epoch_iter": self.epoch_iter, "global_iter": self.global_iter,
            "models": {"G_A": m.G_A.state_dict(), "G_B": m.G_B.state_dict(),
                       "D_A": m.D_A.state_dict(), "D_B": m.D_B.state_dict()},
            "optimizers": {"G": self.step.opt_G.state_dict(), "D": self.step.opt_D.state_dict()},
            "schedulers": {"G": self.sched_G.state_dict(), "D": self.sched_D.state_dict()},
            "pools": {"A": self.step.pool_A.state_dict(), "B": self.step.pool_B.state_dict()},
            "rng": rng_state(self.device),
        }

    def load_state_dict(self, state: dict) -> None:
        m = self.model
        for name in ("G_A", "G_B", "D_A", "D_B"):
            getattr(m, name).load_state_dict(state["models"][name])
        self.step.opt_G.load_state_dict(state["optimizers"]["G"])
        self.step.opt_D.load_state_dict(state["optimizers"]["D"])
        self.sched_G.load_state_dict(state["schedulers"]["G"])
        self.sched_D.load_state_dict(state["schedulers"]["D"])
        self.step.pool_A.load_state_dict(state["pools"]["A"], self.device)
        self.step.pool_B.load_state_dict(state["pools"]["B"], self.device)
        set_rng_state(state["rng"], self.device, saved_index=_cuda_index(state["config"]))
        self.epoch, self.epoch_iter, self.global_iter = state["epoch"], state["epoch_iter"], state["global_iter"]

    def save(self, path: Path) -> None:
        """Write the latest checkpoint (full state, the old one kept as the previous one until
        the new one reads back) or a kept epoch checkpoint (generators and config, or the full
        state with ``train.keep_full_state``). Main process only."""
        if not self.is_main:
            return
        state = self.state_dict()
        if path == self.run.latest:
            save_latest(state, path, self.run.previous)
        else:
            atomic_torch_save(state if self.cfg.train.keep_full_state else generators_state(state), path)

    def resume(self, mode: str = "exact") -> bool:
        """Continue from the run's latest checkpoint; False when training starts over instead.

        See the module docstring for the two modes.
        """
        if mode not in RESUME_MODES:
            raise UserError(f"--resume: unknown mode {mode!r}; use one of {', '.join(RESUME_MODES)}")
        if mode == "exact":
            found = self._latest_for_exact()
        else:
            found = self._newest_readable()
        if found is None:
            return False
        path, state = found
        stored = config_from_dict(state["config"], f"{path} (stored config)")
        if mode == "exact":
            if stored.model != self.cfg.model or stored.data.direction != self.cfg.data.direction:
                raise UserError(f"{path}: stored model config differs from the current one; "
                                "resume with the same model.* and data.direction, use a new --out, "
                                "or --resume auto to start over")
            saved_world = state.get("world_size", 1)
            if saved_world != self.world_size:
                raise UserError(f"{path}: saved by a run of {_processes(saved_world)}, this one has "
                                f"{_processes(self.world_size)}, which would shift every position in the "
                                "epoch; resume with the same torchrun --nproc_per_node, use a new --out, "
                                "or --resume auto to start over")
        else:
            reasons = self._start_over_reasons(stored, state)
            if reasons:
                if self.is_main:
                    print(f"cyclegan train: starting over in {self.out}: its run cannot continue "
                          f"({'; '.join(reasons)})", file=sys.stderr, flush=True)
                return False
        self.load_state_dict(state)
        self._truncate_log()
        return True

    def _refuse_generators_only(self, path: Path, state: dict) -> None:
        if not is_training_state(state):
            raise UserError(f"{path}: holds generators only (imported?), not a training state to resume; "
                            "train into a new --out instead")

    def _latest_for_exact(self) -> tuple[Path, dict] | None:
        """The latest checkpoint, or None when the folder holds no run; unreadable is an error."""
        latest, previous = self.run.latest, self.run.previous
        if not latest.exists():
            if previous.exists():   # killed between the two renames of a save
                raise UserError(f"{latest}: checkpoint not found, but {previous.name} is there (a save was "
                                "interrupted); --resume auto continues from it")
            return None
        try:
            state = load_checkpoint(latest)
        except UserError as e:
            raise UserError(f"{e}; --resume auto falls back to the newest readable checkpoint") from None
        self._refuse_generators_only(latest, state)
        return latest, state

    def _newest_readable(self) -> tuple[Path, dict] | None:
        """The latest checkpoint when it reads; otherwise the newest readable full training
        state (the previous checkpoint, full-state epoch checkpoints), saying so on stderr.
        None when there is none, which starts over."""
        run = self.run
        latest_error = None
        if run.latest.exists():
            try:
                state = load_checkpoint(run.latest)
            except UserError as e:
                latest_error = str(e)
            else:
                self._refuse_generators_only(run.latest, state)
                return run.latest, state
        others = [p for p in (run.previous, *run.epochs()) if p.is_file()]
        if latest_error is None and not others:
            return None   # a fresh folder: nothing to say
        problem = latest_error or f"{run.latest}: checkpoint not found"
        # newest first: each save writes a new file, so the modification time orders them
        for path in sorted(others, key=lambda p: p.stat().st_mtime_ns, reverse=True):
            try:   # mapped, not read: most epoch checkpoints hold generators only
                full = is_training_state(load_checkpoint(path, mmap=True))
                state = load_checkpoint(path) if full else None
            except UserError:
                continue
            if state is not None:
                self._say(f"{problem}; continuing from {path.name} instead (iteration {state['global_iter']})")
                return path, state
        self._say(f"{problem}; no other readable training state in {run.checkpoints}, so starting over")
        return None

    def _say(self, message: str) -> None:
        if self.is_main:
            print(f"cyclegan train: {one_line(message)}", file=sys.stderr, flush=True)

    def _start_over_reasons(self, stored: Config, state: dict) -> list[str]:
        """Why continuing the stored run would not equal a fresh run with the current settings."""
        def flat(cfg: Config) -> dict:
            d = cfg.to_dict()
            return {f"{section}.{key}": value for section in ("data", "model", "train")
                    for key, value in d[section].items() if f"{section}.{key}" not in RESUME_IGNORED}

        old, new = flat(stored), flat(self.cfg)
        changed = sorted(k for k in new if old.get(k) != new[k])
        reasons = []
        if changed:
            shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
            reasons.append(f"changed settings: {shown}")
        if state.get("data_hash") != self.data_hash:
            reasons.append("other training images")
        saved_world = state.get("world_size", 1)
        if saved_world != self.world_size:
            reasons.append(f"it ran with {_processes(saved_world)}, this run has {_processes(self.world_size)}")
        if not changed and state["epoch"] >= self.total_epochs:
            reasons.append("it has already finished")
        return reasons

    def start_over(self) -> None:
        """Remove a previous run's checkpoints, samples, log and MLflow run id from OUT (main
        process only)."""
        if not self.is_main:
            return
        run = self.run
        stale = [run.log, run.latest, run.previous, *run.epochs(), *run.sample_files(), run.run_id,
                 *run.temporaries()]
        stale = [p for p in stale if p.exists()]
        for p in stale:
            p.unlink()
        if stale:
            print(f"cyclegan train: removed {len(stale)} file(s) of the previous run in {self.out}",
                  file=sys.stderr, flush=True)

    def remove_temporaries(self) -> None:
        """Remove what writers killed mid-write left (``.<checkpoint>.<hex>.tmp`` ...): never
        read, and as large as the checkpoint they were to become. Main process only."""
        if not self.is_main:
            return
        leftovers = self.run.temporaries()
        for path in leftovers:
            path.unlink(missing_ok=True)
        if leftovers:
            self._say(f"removed {len(leftovers)} temporary file(s) that an interrupted write left in {self.out}")

    def _truncate_log(self) -> None:
        """Drop log rows written after the checkpoint, so a resumed log has no duplicates."""
        if not self.is_main or not self.log_path.exists():
            return
        with open(self.log_path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= self.global_iter]
        self._write_log(rows, mode="w")

    def _write_log(self, rows: list[dict], mode: str = "a") -> None:
        if mode == "w":
            with atomic_path(self.log_path) as tmp:
                self._write_rows(tmp, rows, "w")
        else:
            self._write_rows(self.log_path, rows, "a")

    @staticmethod
    def _write_rows(path: Path, rows: list[dict], mode: str) -> None:
        new = mode == "w" or not path.exists()
        with open(path, mode, newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    # -- loop -------------------------------------------------------------------------
    def _loader(self, start: int):
        cfg = self.cfg
        sampler = EpochSampler(len(self.dataset.paths_A), len(self.dataset.paths_B), cfg.train.seed, self.epoch,
                               cfg.data.serial_batches, start * cfg.train.batch_size,
                               self.items_per_epoch * self.world_size, self.rank, self.world_size)
        workers = cfg.data.num_workers
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            prefetch_factor=4 if workers > 0 else None,
            # A private generator keeps the loader from drawing on the global torch RNG.
            generator=torch.Generator().manual_seed(cfg.train.seed))

    def train(self, progress: bool = True) -> dict:
        from tqdm import tqdm

        cfg = self.cfg.train
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run.config, json.dumps(self.cfg.to_dict(), indent=2))
        progress = progress and self.is_main
        total_iters = self.total_epochs * self.iters_per_epoch
        bar = tqdm(total=total_iters, initial=self.global_iter, disable=not progress, unit="it",
                   dynamic_ncols=True, desc="train")
        window, window_n, window_t = None, 0, time.perf_counter()
        last = {}
        while self.epoch < self.total_epochs:
            epoch_loss_G, epoch_n = torch.zeros((), device=self.device), 0
            for batch in self._loader(self.epoch_iter):
                real_A = batch["A"].to(self.device, non_blocking=True)
                real_B = batch["B"].to(self.device, non_blocking=True)
                result = self.step(real_A, real_B)
                if self.threads is not None:
                    self.threads.poll()
                self.epoch_iter += 1
                self.global_iter += 1
                stacked = torch.stack([result.losses[n] for n in LOSS_NAMES])
                window = stacked if window is None else window + stacked
                window_n += 1
                epoch_loss_G += result.losses["G"]
                epoch_n += 1
                bar.update(1)
                if self.global_iter % cfg.log_every == 0:
                    last = self._log(window / window_n, window_n / (time.perf_counter() - window_t))
                    bar.set_postfix_str(f"ep {self.epoch + 1}/{self.total_epochs} G {last['loss_G']:.3f} "
                                        f"D_A {last['loss_D_A']:.3f} D_B {last['loss_D_B']:.3f}")
                    window, window_n, window_t = None, 0, time.perf_counter()
                if cfg.sample_every > 0 and self.global_iter % cfg.sample_every == 0 and self.is_main:
                    self._save_sample(result.visuals)
                if cfg.save_latest_freq > 0 and self.global_iter % cfg.save_latest_freq == 0:
                    self.save(self.run.latest)
            if window_n:
                last = self._log(window / window_n, window_n / (time.perf_counter() - window_t))
                window, window_n, window_t = None, 0, time.perf_counter()
            mean_G = self._epoch_mean(epoch_loss_G, epoch_n)
            step_scheduler(self.sched_G, mean_G)
            step_scheduler(self.sched_D, mean_G)
            self.epoch += 1
            self.epoch_iter = 0
            self.save(self.run.latest)
            if self.epoch % max(cfg.save_epoch_freq, 1) == 0 or self.epoch == self.total_epochs:
                self.save(self.run.epoch(self.epoch))
        bar.close()
        if cfg.sample_every > 0 and "result" in locals() and self.is_main:
            self._save_sample(result.visuals)
        if self.is_main and self.epoch >= self.total_epochs:
            # finished: the fallback is not needed, and it is as large as the latest checkpoint
            self.run.previous.unlink(missing_ok=True)
        return {"epochs": self.epoch, "iterations": self.global_iter, **last,
                "checkpoint": str(self.run.latest)}

    def _epoch_mean(self, loss_sum: torch.Tensor, count: int) -> float:
        """The epoch's mean generator loss; under torchrun over every process's iterations, so
        that a metric-driven policy (plateau) steps the same on every rank."""
        if self.world_size > 1:
            import torch.distributed as dist

            totals = torch.stack([loss_sum.detach().float(),
                                  torch.tensor(float(count), device=loss_sum.device)])
            dist.all_reduce(totals)   # sum over ranks
            loss_sum, count = totals[0], int(totals[1].item())
        return (loss_sum / max(count, 1)).item()

    def _log(self, means: torch.Tensor, it_per_s: float) -> dict:
        values = means.tolist()  # the one host sync per logging window
        row = {"epoch": self.epoch + 1, "iteration": self.global_iter,
               **{f"loss_{n}": round(v, 6) for n, v in zip(LOSS_NAMES, values)},
               "lr": self.step.opt_G.param_groups[0]["lr"], "it_per_s": round(it_per_s, 3),
               "time": round(time.time(), 3)}
        if self.is_main:
            self._write_log([row])
            if self.listener is not None:
                self.listener.on_log_row(row)
        return row

    def _save_sample(self, visuals) -> None:
        from ..data.transforms import save_image

        path = self.run.sample(self.global_iter)
        with atomic_path(path, fsync=False) as tmp:
            save_image(sample_grid(visuals), tmp, format="PNG")
        if self.listener is not None:
            self.listener.on_sample(path, self.global_iter)

def _processes(n: int) -> str:
    return f"{n} process" + ("es" if n != 1 else "")


def _cuda_index(raw_config: dict) -> int:
    """The CUDA device a stored run's (main) process used: train.device's index, else 0."""
    name = str(raw_config.get("train", {}).get("device", ""))
    return int(name.split(":", 1)[1]) if name.startswith("cuda:") and name.split(":", 1)[1].isdigit() else 0


def train(cfg: Config, data: str | Path, out: str | Path, resume: bool | str = False, device: str | None = None,
          progress: bool = True, on_start: Callable[[], None] | None = None,
          listener: TrainingListener | None = None, threads=None) -> dict:
    """Train a CycleGAN on ``data`` (trainA/trainB) into ``out``; see the module docstring.

    ``resume``: False starts over, True or "exact" continues OUT's run exactly (or fails),
    "auto" continues only when that equals starting over. ``on_start`` runs on the main
    process once OUT holds only this run (e.g. to open its MLflow run); ``listener`` hears of
    each log row and sample grid the main process writes (``TrainingListener``); ``threads``
    (a ``utils.ThreadGovernor``) is polled after every step.
    """
    trainer = Trainer(cfg, data, out, device, listener, threads)
    trainer.remove_temporaries()
    mode = "exact" if resume is True else resume
    resumed = bool(mode) and trainer.resume(mode)
    if trainer.world_size > 1:
        import torch.distributed as dist

        dist.barrier()   # every rank has read the checkpoint before rank 0 may remove it
    if not resumed:
        trainer.start_over()
    if on_start is not None and trainer.is_main:
        on_start()
    summary = trainer.train(progress=progress)
    if trainer.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary
