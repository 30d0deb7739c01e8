"""End-to-end CPU tests of `cyclegan train` / `translate` on tiny generated images (tests profile)."""
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from helpers import CYCLEGAN, ROOT, TESTS_PROFILE, make_images

TRAIN = [*CYCLEGAN, "train", "--params", str(TESTS_PROFILE), "--no-progress"]


def run(args, env, check=True, **kw):
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import os

    from helpers import make_images as mk

    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    for i, (name, n) in enumerate((("trainA", 6), ("trainB", 5), ("testA", 3), ("testB", 3))):
        mk(data / name, n, seed=i)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run([*TRAIN, "--data", str(data), "--out", str(root / "run")], env)
    return root, data, env


def test_training_writes_finite_logs_samples_and_config(trained):
    import csv
    import json

    root, _, _ = trained
    rows = list(csv.DictReader(open(root / "run" / "train_log.csv")))
    # an epoch is max(|A|, |B|) = 6 items; a row every 5 iterations and at each epoch end
    assert [int(r["iteration"]) for r in rows] == [5, 6, 10, 12]
    for row in rows:
        for key, value in row.items():
            if key.startswith("loss_"):
                assert math.isfinite(float(value)), (key, value)
    assert float(rows[-1]["lr"]) == pytest.approx(2e-4 / 2)   # second epoch = first decay epoch of 1
    samples = sorted((root / "run" / "samples").glob("*.png"))
    assert samples and Image.open(samples[0]).size == (3 * 32, 2 * 32)
    assert json.loads((root / "run" / "config.json").read_text())["model"]["ngf"] == 8


def test_checkpoint_holds_the_full_training_state(trained):
    root, _, _ = trained
    state = torch.load(root / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert state["format"] == "cyclegan-checkpoint/1"
    assert (state["epoch"], state["epoch_iter"], state["global_iter"]) == (2, 0, 12)
    assert set(state["models"]) == {"G_A", "G_B", "D_A", "D_B"}
    for opt in ("G", "D"):
        adam = state["optimizers"][opt]
        assert adam["state"] and all(int(s["step"]) == 12 for s in adam["state"].values())
        assert state["schedulers"][opt]["last_epoch"] == 2
    assert len(state["pools"]["A"]["images"]) == 12 and state["pools"]["B"]["size"] == 50
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    assert state["config"]["model"]["netG"] == "resnet_2blocks"
    assert (root / "run" / "checkpoints" / "epoch_2.pt").exists()


def test_resume_after_sigkill_mid_epoch_matches_uninterrupted_run(tmp_path, tiny_data, cli_env):
    # with loader worker processes: the augmentation draws must not depend on which worker
    # (or which attempt) loads an item
    args = [*TRAIN, "--data", str(tiny_data), "--set", "train.deterministic=true",
            "--set", "train.max_iters_per_epoch=30", "--set", "train.save_latest_freq=4",
            "--set", "data.max_dataset_size=0", "--set", "data.num_workers=2"]
    make_images(tiny_data / "trainA", 30, seed=9)  # 30 items per epoch: room to be killed mid-epoch
    run([*args, "--out", str(tmp_path / "full")], cli_env)

    latest = tmp_path / "killed" / "checkpoints" / "latest.pt"
    proc = subprocess.Popen([*args, "--out", str(tmp_path / "killed")], cwd=ROOT, env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(latest, weights_only=True)
    assert killed_at["epoch"] == 0 and 0 < killed_at["epoch_iter"] < 30, "not killed mid-epoch"

    run([*args, "--out", str(tmp_path / "killed"), "--resume"], cli_env)
    full = torch.load(tmp_path / "full" / "checkpoints" / "latest.pt", weights_only=True)
    resumed = torch.load(latest, weights_only=True)
    assert resumed["global_iter"] == full["global_iter"] == 60
    for net in ("G_A", "G_B", "D_A", "D_B"):
        for key, value in full["models"][net].items():
            assert torch.equal(value, resumed["models"][net][key]), f"{net}.{key} differs after resume"
    # the resumed log has each iteration once
    log = (tmp_path / "killed" / "train_log.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[1]) for line in log] == list(range(5, 61, 5))
    # nothing of the kill is left: no temporaries, no fallback checkpoint once the run finished
    left = sorted(p.name for p in (tmp_path / "killed").rglob("*"))
    assert not [n for n in left if n.endswith(".tmp")] and "previous.pt" not in left, left


# Runs `cyclegan train` with torch.save killing the process (SIGKILL) halfway through its
# KILL_AT-th call, after writing part of the file: what a kill during a checkpoint save leaves.
KILLED_DURING_SAVE = """
import os, signal, sys, torch
from training.cli import main
save, calls = torch.save, [0]
def save_then_die(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == int(os.environ["KILL_AT"]):
        with open(f, "wb") as out:
            out.write(b"PK\\x03\\x04 the first bytes of a zip archive")
        os.kill(os.getpid(), signal.SIGKILL)
    return save(obj, f, *args, **kwargs)
torch.save = save_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_during_a_save_leaves_nothing_behind_after_auto_resume(tmp_path, tiny_data, cli_env):
    out = tmp_path / "run"
    args = ["train", "--params", str(TESTS_PROFILE), "--no-progress", "--data", str(tiny_data), "--out", str(out)]
    # 6 iterations per epoch (6 images); saves: latest at iteration 5, at the end of epoch 1 (6),
    # at iteration 10: killed during that third one
    proc = run([sys.executable, "-c", KILLED_DURING_SAVE, *args], dict(cli_env, KILL_AT="3"), check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    checkpoints = out / "checkpoints"
    leftovers = [p for p in checkpoints.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".latest.pt."), sorted(checkpoints.iterdir())
    assert torch.load(checkpoints / "latest.pt", weights_only=True)["global_iter"] == 6
    assert torch.load(checkpoints / "previous.pt", weights_only=True)["global_iter"] == 5

    resumed = run([*CYCLEGAN, *args, "--resume", "auto"], cli_env)
    assert "removed 1 temporary file(s)" in resumed.stderr and "starting over" not in resumed.stderr
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_2.pt", "latest.pt"]
    assert torch.load(checkpoints / "latest.pt", weights_only=True)["global_iter"] == 12


def test_translate_keeps_size_and_name_of_odd_images(trained, tmp_path):
    root, _, env = trained
    src = tmp_path / "in"
    src.mkdir()
    sizes = {"odd one.png": (37, 23), "tall.jpg": (18, 61), "tiny.png": (3, 2)}
    for name, size in sizes.items():
        Image.new("RGB", size, (200, 30, 30)).save(src / name)
    Image.new("RGBA", (21, 19), (0, 0, 255, 128)).save(src / "alpha.png")
    sizes["alpha.png"] = (21, 19)
    ckpt = root / "run" / "checkpoints" / "latest.pt"
    for direction in ("AtoB", "BtoA"):
        out = tmp_path / direction
        run([*CYCLEGAN, "translate", "--checkpoint", str(ckpt), "--direction", direction,
             "--input", str(src), "--output", str(out), "--no-progress"], env)
        for name, size in sizes.items():
            with Image.open(out / name) as img:
                assert img.size == size and img.mode == "RGB"


def test_translate_single_file(trained, tmp_path):
    root, data, env = trained
    image = sorted((data / "testA").iterdir())[0]
    run([*CYCLEGAN, "translate", "--checkpoint", str(root / "run" / "checkpoints" / "latest.pt"),
         "--direction", "AtoB", "--input", str(image), "--output", str(tmp_path / "o"), "--no-progress"], env)
    assert (tmp_path / "o" / image.name).exists()


def _error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_bad_inputs_give_one_line_errors(trained, tmp_path):
    root, data, env = trained
    line = _error(run([*TRAIN, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], env, check=False))
    assert "missing" in line and "not found" in line

    empty = tmp_path / "empty"
    make_images(empty / "trainA", 2)
    (empty / "trainB").mkdir()
    line = _error(run([*TRAIN, "--data", str(empty), "--out", str(tmp_path / "o")], env, check=False))
    assert "trainB" in line and "no images" in line

    line = _error(run([*TRAIN, "--data", str(data), "--out", str(tmp_path / "o"), "--set", "train.lrr=1"],
                      env, check=False))
    assert "train.lrr" in line

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((root / "run" / "checkpoints" / "latest.pt").read_bytes()[:5000])
    line = _error(run([*CYCLEGAN, "translate", "--checkpoint", str(corrupt), "--direction", "AtoB",
                       "--input", str(data / "testA"), "--output", str(tmp_path / "t")], env, check=False))
    assert "corrupt.pt" in line

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    line = _error(run([*CYCLEGAN, "translate", "--checkpoint", str(foreign), "--direction", "AtoB",
                       "--input", str(data / "testA"), "--output", str(tmp_path / "t")], env, check=False))
    assert "foreign.pt" in line and "not a cyclegan checkpoint" in line

    resume_dir = tmp_path / "resume"
    (resume_dir / "checkpoints").mkdir(parents=True)
    (resume_dir / "checkpoints" / "latest.pt").write_bytes(b"garbage")
    line = _error(run([*TRAIN, "--data", str(data), "--out", str(resume_dir), "--resume"], env, check=False))
    assert "latest.pt" in line


def test_summary_reports_counts_and_macs(cli_env):
    proc = run([*CYCLEGAN, "summary", "--params", str(TESTS_PROFILE), "--json", "--size", "32"], cli_env)
    import json

    out = json.loads(proc.stdout)
    assert out["parameters"]["G_A"] == out["parameters"]["G_B"] > 0 and out["generator_macs"] > 0


def _cache_objects(repo) -> dict[tuple[int, int], str]:
    """(device, inode) -> md5 name of every file object in the repo's DVC cache."""
    root = repo / ".dvc" / "cache" / "files" / "md5"
    return {(p.stat().st_dev, p.stat().st_ino): p.parent.name + p.name for p in root.rglob("*")
            if p.is_file() and not p.name.endswith(".dir")}


def _corrupt_cache_objects(repo) -> list[str]:
    """Cache objects whose content no longer has the md5 they are named by (written in place)."""
    import hashlib

    root = repo / ".dvc" / "cache" / "files" / "md5"
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".dir")
            and hashlib.md5(p.read_bytes()).hexdigest() != p.parent.name + p.name]


def test_dvc_keeps_one_copy_of_the_checkpoints_and_resuming_in_the_workspace_keeps_the_cache_intact(tmp_path):
    """The repo's .dvc/config links the workspace to the cache instead of copying (a paper-scale
    latest checkpoint is ~418 MB): after `dvc repro` each checkpoint is its cache object. The
    trainer replaces files by rename and never writes one in place, so continuing the run in the
    workspace, and a re-run of the stage (persist: DVC unprotects, the trainer starts over),
    leave every cached version as it was."""
    import os

    from helpers.mlops import DVC, dvc_env, make_dvc_repo

    repo = make_dvc_repo(tmp_path / "repo")
    env = dvc_env()

    def dvc(*args):
        proc = subprocess.run([DVC, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"dvc {args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    dvc("repro", "train")
    objects = _cache_objects(repo)
    checkpoints = sorted((repo / "runs" / "train" / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["epoch_2.pt", "latest.pt"]
    for path in checkpoints:   # a link to the cache object, not a second copy
        st = os.stat(path)
        assert path.is_symlink() or (st.st_dev, st.st_ino) in objects, f"{path.name} is a copy of its cache object"

    # continue the run by hand in the workspace, whose files are the cache's objects
    proc = subprocess.run([*TRAIN, "--data", "data/prepared", "--out", "runs/train", "--resume",
                           "--set", "train.n_epochs=2"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(repo / "runs/train/checkpoints/latest.pt", weights_only=True)["epoch"] == 3
    assert _corrupt_cache_objects(repo) == []

    # a changed setting: DVC re-runs the stage and the trainer starts over in the persisted folder
    params = (repo / "params.yaml").read_text()
    assert "n_epochs_decay: 1\n" in params
    (repo / "params.yaml").write_text(params.replace("n_epochs_decay: 1\n", "n_epochs_decay: 2\n"))
    dvc("repro", "train")
    assert _corrupt_cache_objects(repo) == []
    assert "train" not in dvc("status", "train")
