"""`cyclegan import`: the authors' generator .pth files become checkpoints the rest accepts.

The authors' key format is built from the reference networks in
../shared/bench/reference_cyclegan.py (an ``nn.Sequential``, so its keys gain the
``model.`` prefix of the authors' ``ResnetGenerator``), with instance-norm running-stat
entries added as files from PyTorch < 0.4 carry them.
"""
from __future__ import annotations

import importlib.util
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from helpers import CYCLEGAN, ROOT, SHARED, TESTS_PROFILE, make_images
from training.engine.checkpoint import load_checkpoint, load_generators
from training.config import load_config
from training.errors import UserError
from training.engine.import_pth import import_config, import_generators
from training.models.registry import authors_layout
from training.models.unet import UnetGenerator

REFERENCE = SHARED / "bench" / "reference_cyclegan.py"


@pytest.fixture(scope="module")
def reference():
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} is absent (the shared reference implementation)")
    spec = importlib.util.spec_from_file_location("reference_cyclegan", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def authors_state_dict(net: nn.Sequential, old_format: bool = True) -> dict[str, torch.Tensor]:
    """The reference Sequential's state dict in the authors' ResnetGenerator key format.

    ``old_format`` adds the running_mean/running_var/num_batches_tracked entries that
    PyTorch < 0.4 wrote for every InstanceNorm2d.
    """
    state = {f"model.{k}": v.clone() for k, v in net.state_dict().items()}
    if old_format:
        for name, module in net.named_modules():
            if isinstance(module, nn.InstanceNorm2d):
                c = module.num_features
                state[f"model.{name}.running_mean"] = torch.randn(c)
                state[f"model.{name}.running_var"] = torch.rand(c) + 0.5
                state[f"model.{name}.num_batches_tracked"] = torch.tensor(7)
    return state


def params():
    """The tests profile's config (its model section is replaced by the import flags)."""
    return load_config(TESTS_PROFILE, required=True)


def save(state, path):
    torch.save(state, path)
    return path


@pytest.mark.reference
def test_imported_resnet_9blocks_equals_reference_output(reference, tmp_path, cli_env):
    torch.manual_seed(0)
    ref = reference.resnet_generator(ngf=64, n_blocks=9).eval()
    state = authors_state_dict(ref)
    assert "model.10.conv_block.1.weight" in state and "model.2.running_mean" in state
    pth = tmp_path / "latest_net_G_A.pth"
    torch.save(state, pth, _use_new_zipfile_serialization=False)  # the pre-1.6 file format, as old files have
    out = tmp_path / "imported"
    result = subprocess.run([*CYCLEGAN, "import", "--pth", str(pth), "--netG", "resnet_9blocks", "--ngf", "64",
                             "--out", str(out), "--params", str(TESTS_PROFILE)],
                            cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ckpt = out / "checkpoints" / "latest.pt"
    G_A, G_B, cfg = load_generators(ckpt)
    assert (cfg.model.netG, cfg.model.ngf, cfg.model.norm) == ("resnet_9blocks", 64, "instance")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = ref(x)
        got = G_A(x)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= 1e-6
    # No BtoA file: that direction runs a copy of the same weights, and the checkpoint says so.
    with torch.no_grad():
        assert torch.equal(G_B(x), got)
    stored = load_checkpoint(ckpt)
    assert stored["imported"]["BtoA"] == {"copy_of": "AtoB"}
    assert stored["imported"]["AtoB"]["dropped_keys"] == 3 * (3 + 2 * 9 + 2)  # 3 entries per instance norm
    assert set(stored["models"]) == {"G_A", "G_B"}


@pytest.mark.reference
def test_both_directions_and_translate(reference, tmp_path, cli_env):
    torch.manual_seed(1)
    ref_ab, ref_ba = reference.resnet_generator(ngf=8, n_blocks=2), reference.resnet_generator(ngf=8, n_blocks=2)
    pth_ab = save(authors_state_dict(ref_ab), tmp_path / "G_A.pth")
    pth_ba = save(authors_state_dict(ref_ba, old_format=False), tmp_path / "G_B.pth")
    out = tmp_path / "run"
    cmd = [*CYCLEGAN, "import", "--pth-AtoB", str(pth_ab), "--pth-BtoA", str(pth_ba), "--netG", "resnet_2blocks",
           "--ngf", "8", "--out", str(out)]
    result = subprocess.run(cmd, cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    G_A, G_B, _ = load_generators(out / "checkpoints" / "latest.pt")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert (G_A(x) - ref_ab(x)).abs().max() <= 1e-6
        assert (G_B(x) - ref_ba(x)).abs().max() <= 1e-6

    # Importing again into the same folder would replace a checkpoint: refused without --force.
    again = subprocess.run(cmd, cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr

    # translate runs on the imported checkpoint and gives the reference network's pictures.
    from PIL import Image

    from training.data.transforms import to_tensor, to_uint8

    images = make_images(tmp_path / "in", 2, size=(30, 28), seed=3)
    result = subprocess.run([*CYCLEGAN, "translate", "--checkpoint", str(out / "checkpoints" / "latest.pt"),
                             "--direction", "BtoA", "--input", str(tmp_path / "in"), "--output",
                             str(tmp_path / "translated"), "--no-progress"],
                            cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for path in images:
        with Image.open(path) as img:
            x = to_tensor(img).unsqueeze(0)
        padded = torch.nn.functional.pad(x, (0, 2, 0, 0), mode="reflect")  # 30 -> 32 wide, as translate pads
        with torch.no_grad():
            expected = to_uint8(ref_ba(padded)[0, :, :28, :30]).astype(int)
        with Image.open(tmp_path / "translated" / path.name) as img:
            got = np.asarray(img).astype(int)
        assert got.shape == (28, 30, 3)
        assert np.abs(got - expected).max() <= 1


@pytest.mark.reference
def test_single_file_for_BtoA_is_stored_as_G_B(reference, tmp_path):
    torch.manual_seed(2)
    ref = reference.resnet_generator(ngf=8, n_blocks=2)
    pth = save(authors_state_dict(ref), tmp_path / "zebra2horse.pth")
    cfg = import_config(params(), "resnet_2blocks", 8, "instance", False)
    summary = import_generators({"BtoA": pth}, cfg, tmp_path / "out")
    assert summary["imported"]["AtoB"] == {"copy_of": "BtoA"}
    G_A, G_B, _ = load_generators(summary["checkpoint"])
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert (G_B(x) - ref(x)).abs().max() <= 1e-6


@pytest.mark.reference
def test_wrong_architecture_lists_the_offending_keys(reference, tmp_path, cli_env):
    torch.manual_seed(3)
    pth = save(authors_state_dict(reference.resnet_generator(ngf=8, n_blocks=4)), tmp_path / "g.pth")
    result = subprocess.run([*CYCLEGAN, "import", "--pth", str(pth), "--netG", "resnet_2blocks", "--ngf", "8",
                             "--out", str(tmp_path / "out")],
                            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1  # the CLI's one-line error
    assert str(pth) in err and "unexpected keys" in err
    # a 4-block file read as 2 blocks: blocks 12 and 13 and the layers after them are out of place
    assert "model.12.conv_block.1.weight" in err and "model.13.conv_block.5.bias" in err
    assert "--netG resnet_4blocks --ngf 8" in err  # the hint
    assert not (tmp_path / "out" / "checkpoints" / "latest.pt").exists()

    cfg = import_config(params(), "resnet_4blocks", 16, "instance", False)
    mismatch = r"shape mismatches .*model\.1\.weight \(8, 3, 7, 7\) \(expected \(16, 3, 7, 7\)\)"
    with pytest.raises(UserError, match=mismatch):
        import_generators({"AtoB": pth}, cfg, tmp_path / "out")

    state = authors_state_dict(reference.resnet_generator(ngf=8, n_blocks=2))
    del state["model.10.conv_block.5.weight"]
    state["model.99.weight"] = torch.zeros(1)
    cfg = import_config(params(), "resnet_2blocks", 8, "instance", False)
    with pytest.raises(UserError) as info:
        import_generators({"AtoB": save(state, tmp_path / "broken.pth")}, cfg, tmp_path / "out")
    message = str(info.value)
    assert "missing keys (1): model.10.conv_block.5.weight" in message
    assert "unexpected keys (1): model.99.weight" in message


def test_batch_norm_running_stats_are_kept_and_norm_is_hinted(tmp_path):
    """Only instance-norm running stats are dropped; batch norm's are weights to load."""
    from training.models.resnet import ResnetGenerator

    torch.manual_seed(4)
    net = ResnetGenerator(3, 3, 8, 2, "batch")
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    pth = save(net.state_dict(), tmp_path / "bn.pth")
    cfg = import_config(params(), "resnet_2blocks", 8, "batch", False)
    summary = import_generators({"AtoB": pth}, cfg, tmp_path / "out")
    assert summary["imported"]["AtoB"]["dropped_keys"] == 0
    G_A, _, _ = load_generators(summary["checkpoint"])
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(G_A(x), net.eval()(x))
    wrong = import_config(params(), "resnet_2blocks", 8, "instance", False)
    with pytest.raises(UserError, match=r"unexpected keys.*model\.2\.weight.*looks like --netG "
                                        r"resnet_2blocks --ngf 8 --norm batch"):
        import_generators({"AtoB": pth}, wrong, tmp_path / "out2")


@pytest.mark.parametrize("netG,depth", [("unet_128", 7), ("unet_256", 8)])
def test_unet_files_import_with_the_authors_key_layout(tmp_path, netG, depth):
    torch.manual_seed(5)
    net = UnetGenerator(3, 3, depth, 4, "instance")
    state = net.state_dict()
    # The authors' layout: outermost [downconv, submodule, ReLU, upconv, Tanh] at model.model;
    # each inner level nests at .model.3 of its parent, the second level at model.model.1.
    innermost = "model.model.1" + ".model.3" * (depth - 3) + ".model.1.weight"
    for key in ("model.model.0.weight", "model.model.3.weight", "model.model.1.model.1.weight",
                "model.model.1.model.5.weight", innermost):
        assert key in state, key
    pth = save(state, tmp_path / f"{netG}.pth")
    assert authors_layout(torch.load(pth)) == f"--netG {netG} --ngf 4"
    cfg = import_config(params(), netG, 4, "instance", False)
    summary = import_generators({"AtoB": pth}, cfg, tmp_path / "out")
    G_A, _, stored = load_generators(summary["checkpoint"])
    assert (stored.model.netG, stored.data.crop_size) == (netG, 2 ** depth)
    x = torch.rand(1, 3, 2 ** depth, 2 ** depth)
    with torch.no_grad():
        assert torch.equal(G_A(x), net.eval()(x))
    other = "unet_256" if netG == "unet_128" else "unet_128"
    with pytest.raises(UserError, match=f"looks like --netG {netG} --ngf 4"):
        import_generators({"AtoB": pth}, import_config(params(), other, 4, "instance", False),
                          tmp_path / "out3")


def test_channel_counts_come_from_the_weights(tmp_path):
    from training.models.resnet import ResnetGenerator

    gray_to_rgb, rgb_to_gray = ResnetGenerator(1, 3, 4, 1), ResnetGenerator(3, 1, 4, 1)
    a = save(gray_to_rgb.state_dict(), tmp_path / "a.pth")
    b = save(rgb_to_gray.state_dict(), tmp_path / "b.pth")
    cfg = import_config(params(), "resnet_1blocks", 4, "instance", False)
    with pytest.raises(UserError, match="maps 1 to 3 channels.*--pth-BtoA"):
        import_generators({"AtoB": a}, cfg, tmp_path / "one")
    summary = import_generators({"AtoB": a, "BtoA": b}, cfg, tmp_path / "two")
    G_A, G_B, stored = load_generators(summary["checkpoint"])
    assert (stored.data.input_nc, stored.data.output_nc, stored.train.lambda_identity) == (1, 3, 0.0)
    assert G_A(torch.rand(1, 1, 8, 8)).shape == (1, 3, 8, 8)
    assert G_B(torch.rand(1, 3, 8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(UserError, match="not the two directions of one model"):
        import_generators({"AtoB": a, "BtoA": a}, cfg, tmp_path / "three")


def test_foreign_files_are_clear_errors(tmp_path):
    from training.models.resnet import ResnetGenerator

    cfg = import_config(params(), "resnet_1blocks", 4, "instance", False)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a pickle")
    with pytest.raises(UserError, match="junk.pth: not a readable PyTorch state dict"):
        import_generators({"AtoB": junk}, cfg, tmp_path / "o")
    with pytest.raises(UserError, match="missing.pth: .pth file not found"):
        import_generators({"AtoB": tmp_path / "missing.pth"}, cfg, tmp_path / "o")
    nested = save({"epoch": 3, "net": ResnetGenerator(3, 3, 4, 1).state_dict()}, tmp_path / "nested.pth")
    with pytest.raises(UserError, match="not tensors: epoch, net"):
        import_generators({"AtoB": nested}, cfg, tmp_path / "o")
    # DataParallel's module. prefix (a file saved without .module) is accepted.
    net = ResnetGenerator(3, 3, 4, 1)
    wrapped = save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "dp.pth")
    summary = import_generators({"AtoB": wrapped}, cfg, tmp_path / "dp")
    # The imported checkpoint is itself refused as an import source, with the reason.
    with pytest.raises(UserError, match="already a cyclegan checkpoint"):
        import_generators({"AtoB": summary["checkpoint"]}, cfg, tmp_path / "o")


def test_cli_needs_a_file(tmp_path, cli_env):
    result = subprocess.run([*CYCLEGAN, "import", "--netG", "resnet_9blocks"], cwd=tmp_path, env=cli_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "give at least one generator file" in result.stderr


def test_export_accepts_an_imported_checkpoint(tmp_path):
    """The imported checkpoint (generators only, one direction copied) exports to verified ONNX."""
    import json

    from training.export.onnx import export
    from training.models.resnet import ResnetGenerator

    torch.manual_seed(6)
    pth = save(ResnetGenerator(3, 3, 4, 1).state_dict(), tmp_path / "g.pth")
    cfg = import_config(params(), "resnet_1blocks", 4, "instance", False)
    summary = import_generators({"AtoB": pth}, cfg, tmp_path / "imported")
    export(summary["checkpoint"], str(tmp_path / "export"), cfg.export, progress=False)
    report = json.loads((tmp_path / "export" / "verify.json").read_text())
    assert {"G_AtoB.onnx", "G_BtoA.onnx"} <= {p.name for p in (tmp_path / "export").iterdir()}
    assert len(report["models"]) == 2 and all(m["passed"] for m in report["models"].values()), report
