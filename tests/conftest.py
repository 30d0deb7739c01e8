"""Shared fixtures: tiny generated image folders, a loopback S3 server, the repo root."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TESTS_PROFILE = ROOT / "profiles" / "tests.yaml"
CYCLEGAN = [sys.executable, "-m", "training.cli"]


def make_images(folder: Path, count: int, size=(40, 40), seed: int = 0, fmt: str = "png") -> list[Path]:
    """``count`` random RGB images of ``size`` (w, h) in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        array = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
        path = folder / f"img_{i:03d}.{fmt}"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """trainA 6 / trainB 5 / testA 3 / testB 3 random 40x40 images."""
    root = tmp_path / "data"
    for i, (name, n) in enumerate((("trainA", 6), ("trainB", 5), ("testA", 3), ("testB", 3))):
        make_images(root / name, n, seed=i)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1 for the whole session.

    Yields its endpoint URL. Tests that use it should also use ``s3_env``.
    """
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point boto3, MLflow and DVC at the loopback server with dummy credentials; yields a
    ``make_bucket(name) -> name`` helper."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_server, "AWS_ENDPOINT_URL_S3": s3_server, "MLFLOW_S3_ENDPOINT_URL": s3_server,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")

    def make_bucket(name: str) -> str:
        client.create_bucket(Bucket=name)
        return name

    make_bucket.client = client
    make_bucket.endpoint = s3_server
    yield make_bucket


@pytest.fixture
def cli_env():
    """Environment for running ``python -m training.cli`` in a subprocess from the repo root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
