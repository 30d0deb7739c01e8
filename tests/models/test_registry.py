"""The generator registry is the one place that knows an architecture: a generator registered
from this test trains, exports and imports through the normal paths, with nothing else changed."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from helpers import TESTS_PROFILE
from training.config import config_from_dict, load_config
from training.errors import UserError
from training.models import registry


class ToyGenerator(nn.Module):
    """conv (stride 2) -> instance norm -> ReLU -> transposed conv -> tanh: sides must be even."""

    def __init__(self, input_nc: int, output_nc: int, ngf: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(input_nc, ngf, 3, stride=2, padding=1), nn.InstanceNorm2d(ngf),
                                  nn.ReLU(True), nn.ConvTranspose2d(ngf, output_nc, 4, stride=2, padding=1), nn.Tanh())

    def forward(self, x):
        return self.body(x)


def _toy_layout(state: dict) -> str | None:
    return registry.authors_flags("toy", state["body.0.weight"].shape[0]) if "body.0.weight" in state else None


@pytest.fixture
def toy(monkeypatch):
    spec = registry.GeneratorSpec(lambda m, i, o: ToyGenerator(i, o, m.ngf), size_multiple=2, min_size=2,
                                  authors_layout=_toy_layout)
    monkeypatch.setitem(registry.GENERATORS, "toy", spec)   # register_generator, undone after the test
    return spec


def test_an_unknown_generator_is_a_one_line_error_naming_the_known_ones():
    with pytest.raises(UserError, match=r"model\.netG: .*'nope' is not resnet_<N>blocks \| unet_128 \| unet_256"):
        config_from_dict({"model": {"netG": "nope"}})


def test_the_registry_says_what_the_rest_of_the_project_needs():
    assert (registry.size_multiple("resnet_9blocks"), registry.min_size("resnet_9blocks")) == (4, 8)
    assert (registry.size_multiple("unet_256"), registry.min_size("unet_256")) == (256, 256)
    net = registry.build_generator(config_from_dict({"model": {"netG": "resnet_2blocks", "ngf": 4}}).model)
    assert (net.size_multiple, net.min_size) == (4, 8)


def test_a_registered_toy_generator_trains_exports_and_imports(toy, tiny_data, tmp_path):
    from training.engine.checkpoint import load_generators
    from training.engine.import_pth import import_config, import_generators
    from training.engine.trainer import train
    from training.export.onnx import export_generators
    from training.layout import Export

    registry.register_generator("toy", toy)   # what a real architecture does at import time
    assert "toy" in registry.known_generators()
    cfg = load_config(TESTS_PROFILE, ["model.netG=toy", "model.ngf=4", "train.n_epochs=1", "train.n_epochs_decay=0",
                                      "train.max_iters_per_epoch=2", "data.num_workers=0"], required=True)

    # train through the normal loop
    summary = train(cfg, tiny_data, tmp_path / "run", progress=False)
    G_A, G_B, stored = load_generators(summary["checkpoint"])
    assert isinstance(G_A, ToyGenerator) and stored.model.netG == "toy"
    assert (G_A.size_multiple, G_A.min_size) == (2, 2)   # from the registry entry

    # export: the ONNX models record the registry's size multiple, and verification passes
    (tmp_path / "export").mkdir()
    report = export_generators(summary["checkpoint"], tmp_path / "export", cfg.export)
    assert len(report["models"]) == 2
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(Export(tmp_path / "export").onnx("AtoB"))).metadata_props}
    assert (meta["netG"], meta["size_multiple"], meta["min_size"]) == ("toy", "2", "2")

    # import an authors'-style .pth of the toy architecture
    pth = tmp_path / "toy.pth"
    torch.save(G_A.state_dict(), pth)
    imported = import_generators({"AtoB": pth}, import_config(cfg, "toy", 4, "instance", False), tmp_path / "imp")
    G_A2, _, _ = load_generators(imported["checkpoint"])
    x = torch.rand(1, 3, 10, 14) * 2 - 1
    with torch.no_grad():
        assert torch.equal(G_A2(x), G_A(x))

    # a file of another width is refused, and the message names what the file looks like
    torch.save(ToyGenerator(3, 3, 8).state_dict(), tmp_path / "wide.pth")
    with pytest.raises(UserError, match="looks like --netG toy --ngf 8"):
        import_generators({"AtoB": tmp_path / "wide.pth"}, import_config(cfg, "toy", 4, "instance", False),
                          tmp_path / "imp2")
    assert json.loads((tmp_path / "imp" / "config.json").read_text())["model"]["netG"] == "toy"
