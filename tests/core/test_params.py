"""params.yaml is the one place a user tunes the pipeline: it must list exactly the typed
config's keys, each with a comment, and mirror the dataclass defaults except where a comment
marks the value as the offline demo profile's."""
from __future__ import annotations

import re

import yaml

from helpers import ROOT, TESTS_PROFILE
from serving.config import ServeConfig, load_serve_config
from training.config import Config, config_from_dict, load_config


def all_defaults() -> dict:
    """Every section's defaults: the training sections' and the server's own (serving/config.py)."""
    return {**Config().to_dict(), "serve": ServeConfig().model_dump()}


def parse_all(raw: dict) -> dict:
    cfg = config_from_dict(raw)
    return {**cfg.to_dict(), "serve": load_serve_config(cfg.serve).model_dump()}

PARAMS = ROOT / "params.yaml"


def _key_lines(text: str) -> dict[str, str]:
    """``section.key`` -> the text of the line that defines it (for its comment)."""
    lines, section = {}, None
    for line in text.splitlines():
        if re.match(r"^[A-Za-z_]\w*:\s*(#.*)?$", line):
            section = line.split(":")[0]
        elif section and (m := re.match(r"^  ([A-Za-z_]\w*):", line)):
            lines[f"{section}.{m.group(1)}"] = line
    return lines


def test_params_has_exactly_the_config_keys():
    raw = yaml.safe_load(PARAMS.read_text())
    defaults = all_defaults()
    assert set(raw) == set(defaults), "sections differ"
    for section, values in defaults.items():
        assert set(raw[section]) == set(values), f"{section}: keys differ from training/config.py"


def test_params_loads_and_validates():
    cfg = load_config(PARAMS, required=True)
    assert cfg.register.gate_metrics, "the gate needs metrics"


def test_params_mirror_defaults_except_documented_demo_values():
    raw = yaml.safe_load(PARAMS.read_text())
    lines = _key_lines(PARAMS.read_text())
    defaults = all_defaults()
    parsed = parse_all(raw)
    differing = []
    for section, values in defaults.items():
        for key, default in values.items():
            if parsed[section][key] != default:
                differing.append(f"{section}.{key}")
                assert "demo" in lines[f"{section}.{key}"], (
                    f"params.yaml {section}.{key}: differs from the typed default {default!r} "
                    "without a 'demo' comment")
    # The demo profile is small on purpose: it must actually differ somewhere.
    assert differing


def test_every_params_key_has_a_comment_or_is_self_explaining():
    lines = _key_lines(PARAMS.read_text())
    uncommented = [k for k, line in lines.items() if "#" not in line]
    # A handful of keys (seed, batch_size, ...) speak for themselves; most must be explained.
    assert len(uncommented) <= len(lines) // 4, uncommented


def test_profiles_are_valid_partial_params():
    for profile in (TESTS_PROFILE, ROOT / "profiles" / "paper.yaml"):
        cfg = load_config(profile, required=True)
        assert isinstance(cfg, Config)


def test_paper_profile_restores_the_paper_settings():
    cfg = load_config(ROOT / "profiles" / "paper.yaml", required=True)
    assert (cfg.data.load_size, cfg.data.crop_size) == (286, 256)
    assert cfg.model.netG == "resnet_9blocks" and cfg.model.ngf == 64 and cfg.model.ndf == 64
    assert (cfg.train.n_epochs, cfg.train.n_epochs_decay) == (100, 100)
    assert cfg.train.device in ("auto", "cuda")


def test_register_section_keys_are_all_commented():
    lines = _key_lines(PARAMS.read_text())
    missing = [k for k, line in lines.items() if k.startswith("register.") and "#" not in line]
    assert not missing, missing


def test_readme_paper_overrides_match_the_paper_profile():
    """The README's one-command `dvc exp run -S ...` (and any copy of it in docs/) sets exactly
    profiles/paper.yaml."""
    paper = yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text())
    expected = {f"{s}.{k}": v for s, values in paper.items() for k, v in values.items()}
    readme = (ROOT / "README.md").read_text()
    assert [ln for ln in readme.splitlines() if ln.startswith("dvc exp run") and "resnet_9blocks" in ln]
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    lines = [ln for page in pages for ln in page.read_text().splitlines()
             if ln.startswith("dvc exp run") and "resnet_9blocks" in ln]
    for line in lines:
        pairs = dict(item.split("=", 1) for item in re.findall(r"-S (\S+)", line))
        assert {k: yaml.safe_load(v) for k, v in pairs.items()} == expected, line
