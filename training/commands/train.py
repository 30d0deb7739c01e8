"""Train a CycleGAN on DIR/trainA and DIR/trainB, writing checkpoints, logs and samples to --out
(names in training/layout.py). Under torchrun, one process per GPU (docs/training.md).

``--nproc-per-node N`` (N > 1) makes this command a launcher: it restores and keeps syncing the
``--mirror`` (which must not run under torchrun: N processes would upload the same files),
then runs ``python -m torch.distributed.run --standalone --nproc_per_node N -m training.cli
train ...`` with the same arguments minus its own, and returns its exit status. The processes
use NCCL on GPUs and gloo on a CPU. With ``--track`` and ``register.live_metrics`` rank 0 sends
the training log and samples to the run as it trains (``mlops/live.py``). The MLflow run is opened by rank 0 of the workers, not here:
only the workers know, after reading OUT's checkpoint, whether the run continues (and keeps its
MLflow run) or starts over (and removes the old run id), exactly as in one process.
"""
import json

# The launcher's own options: consumed here, never passed to the workers.
LAUNCHER_OPTIONS = ("nproc_per_node", "mirror")


def add_arguments(parser):
    parser.add_argument("--data", required=True, help="prepared data folder with trainA/ and trainB/")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, training log, samples, config")
    parser.add_argument("--resume", nargs="?", const="exact", default=None, choices=("exact", "auto"),
                        help="continue from OUT's latest checkpoint. 'exact' (the default when given "
                             "bare) continues or fails; 'auto' continues only an unfinished run with the "
                             "same settings and images, and otherwise starts over (what `dvc repro` uses)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: train.device, auto)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: train.seed)")
    parser.add_argument("--mirror", metavar="PREFIX", default=None,
                        help="s3://... (or another object store) where the checkpoint is kept while training, "
                             "restored first: a retried task on another machine resumes from it")
    parser.add_argument("--track", action="store_true",
                        help="open the pipeline's MLflow run before training (or reuse the one OUT names), so a "
                             "retried task logs into the same run; with register.live_metrics, losses, lr, it/s, "
                             "sample grids and system metrics reach it while training (a down server never stops "
                             "training); `cyclegan track train` logs the rest")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                        help="N > 1: launch N training processes here with torchrun (one per GPU; gloo on a "
                             "CPU), this process keeping the --mirror in sync; each process takes batch_size "
                             "images per step, so the effective batch is N x train.batch_size")


def worker_argv(args) -> list[str]:
    """The arguments of a worker: everything the launcher was given except its own options."""
    argv = ["--params", args.params, "--data", args.data, "--out", args.out]
    for item in args.overrides:
        argv += ["--set", item]
    if args.resume:
        argv += ["--resume", args.resume]
    if args.device is not None:
        argv += ["--device", args.device]
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    if args.track:
        argv.append("--track")
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def run(args):
    import contextlib
    import os

    from .args import load_args_config
    from ..errors import UserError
    from ..engine.mirror import mirrored
    from ..utils import ThreadGovernor, configure_threads, usable_cpus

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.nproc_per_node < 1:
        raise UserError(f"--nproc-per-node {args.nproc_per_node}: must be 1 or more")
    if args.nproc_per_node > 1:
        if distributed:
            raise UserError("--nproc-per-node: this process already runs under torchrun; drop the option")
        return launch(args)
    if args.mirror and distributed:
        raise UserError("--mirror: run it in the process that starts torchrun, not under torchrun")
    if args.seed is not None:
        args.overrides.append(f"train.seed={args.seed}")
    cfg = load_args_config(args)
    # train.threads 0 means "the CPUs this process may use": processes sharing one machine
    # share those CPUs instead of each taking them all, and one process alone follows what
    # other jobs leave free while it trains (utils.ThreadGovernor), unless it must be
    # deterministic (the thread count can change a CPU kernel's summation order).
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    governor = None
    if cfg.train.threads:
        configure_threads(cfg.train.threads)
    elif local_world > 1 or cfg.train.deterministic:
        configure_threads(max(1, usable_cpus() // local_world))
    else:
        governor = ThreadGovernor(usable_cpus())
        configure_threads(governor.initial())
    from ..engine.trainer import train

    with contextlib.ExitStack() as stack:
        if args.mirror:
            stack.enter_context(mirrored(args.out, args.mirror))
        on_start, listener = None, None
        if args.track and cfg.register.live_metrics:
            from ..mlops.live import LiveLogger

            # closed before the mirror's last sync, so the run id file it writes is mirrored
            listener = LiveLogger(cfg, args.out, args.data)
            stack.callback(listener.close)
            on_start = listener.start
        elif args.track:
            on_start = _open_run(cfg, args)
        summary = train(cfg, args.data, args.out, resume=args.resume or False, device=args.device,
                        progress=not args.no_progress, on_start=on_start, listener=listener, threads=governor)
    if int(os.environ.get("RANK", "0")) == 0:   # the other ranks' losses are their own shard's
        print(json.dumps(summary))
    return 0


def launch(args) -> int:
    """Run ``args.nproc_per_node`` workers under torchrun on this machine; the mirror (if any) is
    restored before they start and synced while they train. Returns torchrun's exit status."""
    import contextlib
    import subprocess
    import sys

    from .args import load_args_config
    from ..engine.mirror import mirrored

    n = args.nproc_per_node
    argv = worker_argv(args)
    cfg = load_args_config(args)          # a bad params file fails here once, not in N workers
    _check_devices(args.device or cfg.train.device, n)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               "-m", "training.cli", "train", *argv]
    with contextlib.ExitStack() as stack:
        if args.mirror:
            stack.enter_context(mirrored(args.out, args.mirror))
        print(f"cyclegan train: launching {n} processes: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        worker = subprocess.Popen(command)
        try:
            code = worker.wait()
        except BaseException:
            # torchrun passes the signal on to its workers; give them a moment to stop
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            raise
    if code:
        print(f"cyclegan train: the {n} training processes failed (torchrun exit status {code})", file=sys.stderr)
    return code


def _check_devices(device: str, n: int) -> None:
    """One GPU per process: asking for more processes than visible GPUs is an error here, not a
    hang in N processes. On a CPU (device cpu, or auto without CUDA) any N runs, with gloo."""
    import torch

    from ..errors import UserError

    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        visible = torch.cuda.device_count()
        if visible < n:
            raise UserError(f"--nproc-per-node {n}: one process per GPU, but {visible} CUDA device(s) are visible")


def _open_run(cfg, args):
    """Called once training knows whether it continues OUT's run: opens the MLflow run (a run
    that continues keeps its own, whose id OUT holds)."""
    def on_start() -> None:
        from ..mlops import tracking

        tracking.open_run(cfg, args.out, args.data)

    return on_start
