import pytest

from training.config import Config, load_config, parse_overrides
from training.errors import UserError


def test_defaults_follow_the_paper():
    cfg = Config()
    assert (cfg.model.netG, cfg.model.ngf, cfg.model.ndf, cfg.model.norm) == ("resnet_9blocks", 64, 64, "instance")
    assert (cfg.train.lr, cfg.train.beta1, cfg.train.pool_size, cfg.train.gan_mode) == (2e-4, 0.5, 50, "lsgan")
    assert (cfg.train.lambda_A, cfg.train.lambda_identity) == (10.0, 0.5)
    assert (cfg.data.load_size, cfg.data.crop_size, cfg.data.preprocess) == (286, 256, "resize_and_crop")


def test_params_file_and_overrides(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("train:\n  n_epochs: 3\nmodel:\n  ngf: 16\n")
    cfg = load_config(params, ["train.lr=0.001", "data.no_flip=true", "export.verify_sizes=[16, 32]"])
    assert cfg.train.n_epochs == 3 and cfg.model.ngf == 16
    assert cfg.train.lr == 0.001 and cfg.data.no_flip is True and cfg.export.verify_sizes == [16, 32]
    assert cfg.train.n_epochs_decay == 100  # untouched keys keep their defaults


def test_ints_are_accepted_for_floats():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize("override,message", [
    (["train.learning_rate=1"], "train.learning_rate"),
    (["training.lr=1"], "training"),
    (["train.n_epochs=many"], "train.n_epochs"),
    (["data.no_flip=3"], "data.no_flip"),
    (["model.norm=group"], "model.norm"),
    (["model.netG=resnet"], "model.netG"),
    (["noequals"], "noequals"),
    (["data.crop_size=300"], "data.crop_size"),
])
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        load_config(None, override)


def test_missing_explicit_params_file_is_an_error(tmp_path):
    with pytest.raises(UserError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml", required=True)


def test_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml"):
        load_config(bad)


def test_parse_overrides_keeps_strings():
    assert parse_overrides(["prepare.source=s3://bucket/x", "prepare.domain_a="]) == \
        {"prepare": {"source": "s3://bucket/x", "domain_a": ""}}
