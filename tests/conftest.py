"""Shared fixtures: tiny generated image folders, a loopback S3 server, the CLI's environment.
Plain helpers (paths, image makers) are in tests/helpers/.

Markers: ``slow`` (end-to-end runs that train or run a pipeline; every test under tests/e2e/
is slow): `pytest -m "not slow"` runs the rest in a few minutes. ``reference`` needs
../shared/bench/reference_cyclegan.py; under CI=true its absence fails those tests.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from helpers import REFERENCE, cli_env as _cli_env, make_data

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item):
    """Tests marked ``reference`` need the authors' step beside the repo. On a developer's
    machine without ../shared they skip, saying why; in CI a missing file is a failure, never
    a silent skip."""
    if item.get_closest_marker("reference") and not REFERENCE.is_file():
        message = f"{REFERENCE} is missing (../shared must sit beside the repository)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """trainA 6 / trainB 5 / testA 3 / testB 3 random 40x40 images."""
    return make_data(tmp_path / "data")


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
    return _cli_env()
