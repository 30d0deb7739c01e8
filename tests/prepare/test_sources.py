"""cyclegan prepare from archives, downloads and S3: zip-slip, links, resume, failures."""
from __future__ import annotations

import http.server
import io
import json
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from helpers.prepare import cfg, write_rgb
from training import storage
from training.prepare import prepare as prep
from training.prepare import sources
from training.prepare.manifest import MANIFEST
from training.errors import UserError


def _image_bytes(seed: int, fmt: str = "JPEG") -> bytes:
    from PIL import Image

    from helpers.prepare import rgb_array

    buffer = io.BytesIO()
    Image.fromarray(rgb_array(32, 32, seed)).save(buffer, fmt)
    return buffer.getvalue()


def official_zip(path: Path, name: str = "tinyset", counts=(5, 4, 2, 2), extra=()) -> Path:
    """A zip in the official layout: NAME/trainA, NAME/trainB, NAME/testA, NAME/testB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/", b"")
        for k, (split, n) in enumerate(zip(("trainA", "trainB", "testA", "testB"), counts)):
            for i in range(n):
                archive.writestr(f"{name}/{split}/{i:03d}_{split}.jpg", _image_bytes(100 * k + i))
        for member, data in extra:
            archive.writestr(member, data)
    return path


def _manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


# -- zips ------------------------------------------------------------------------------------------

def test_official_zip(tmp_path):
    archive = official_zip(tmp_path / "tinyset.zip")
    summary = prep.prepare(cfg(), str(archive), str(tmp_path / "out"), progress=False)
    assert summary["kind"] == "zip" and summary["layout"] == "trainA/trainB/testA/testB"
    assert summary["counts"] == {"trainA": 5, "trainB": 4, "testA": 2, "testB": 2}
    assert summary["copied"] == 13
    manifest = _manifest(tmp_path / "out")
    assert manifest["source"]["archive_sha256"]
    assert manifest["splits"]["trainA"][0] == {
        "path": "trainA/000_trainA.jpg", "size": len(_image_bytes(0)), "sha256": manifest["splits"]["trainA"][0]["sha256"],
        "source": "tinyset/trainA/000_trainA.jpg"}
    assert (tmp_path / "out" / "trainA" / "000_trainA.jpg").read_bytes() == _image_bytes(0)


def test_zip_slip_members_are_rejected(tmp_path):
    archive = official_zip(tmp_path / "src" / "evil.zip", extra=[
        ("../../escaped.jpg", _image_bytes(900)),
        ("/abs/escaped.jpg", _image_bytes(901)),
        ("tinyset/trainA/../../../escaped2.jpg", _image_bytes(902)),
    ])
    prep.prepare(cfg(), str(archive), str(tmp_path / "work" / "out"), progress=False)
    manifest = _manifest(tmp_path / "work" / "out")
    refused = {e["path"]: e["reason"] for e in manifest["skipped"]}
    for member in ("../../escaped.jpg", "/abs/escaped.jpg", "tinyset/trainA/../../../escaped2.jpg"):
        assert refused[member].startswith("unsafe path"), member
    assert not list(tmp_path.rglob("escaped*"))
    assert manifest["counts"]["trainA"] == 5


def test_zip_links_outside_the_archive_are_rejected(tmp_path):
    archive = official_zip(tmp_path / "links.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        for name, target in (("tinyset/trainA/passwd.jpg", "/etc/passwd"),
                             ("tinyset/trainA/up.jpg", "../../../outside.jpg"),
                             ("tinyset/trainB/alias.jpg", "../trainA/001_trainA.jpg")):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    prep.prepare(cfg(), str(archive), str(tmp_path / "out"), progress=False)
    manifest = _manifest(tmp_path / "out")
    reasons = {e["path"]: e["reason"] for e in manifest["skipped"]}
    assert reasons["tinyset/trainA/passwd.jpg"].startswith("link outside the source")
    assert reasons["tinyset/trainA/up.jpg"].startswith("link outside the source")
    # A link that stays inside the archive reads its target.
    alias = [e for e in manifest["splits"]["trainB"] if e["source"] == "tinyset/trainB/alias.jpg"]
    assert alias and (tmp_path / "out" / alias[0]["path"]).read_bytes() == _image_bytes(1)


def test_not_a_zip(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 but not really")
    with pytest.raises(UserError, match="broken.zip: not a folder or a .zip archive"):
        prep.prepare(cfg(), str(bad), str(tmp_path / "out"), progress=False)


# -- downloads -------------------------------------------------------------------------------------

class DatasetServer:
    """Serves ``/NAME.zip`` on 127.0.0.1 with HTTP Range support; can cut responses short."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests, self.cut_first = files, [], 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404, "no such dataset")
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut_first > 0:  # promise everything, send a third, hang up
                    server.cut_first -= 1
                    self.wfile.write(body[: len(body) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/datasets"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def horse_zip(tmp_path) -> bytes:
    return official_zip(tmp_path / "served" / "horse2zebra.zip", name="horse2zebra", counts=(6, 5, 2, 2)).read_bytes()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(sources, "DOWNLOAD_BACKOFF_S", 0.01)


def _fix_paths(requests):
    return [(name.removeprefix("datasets/"), rng) for name, rng in requests]


def test_download_by_name_and_cache(tmp_path, horse_zip):
    with DatasetServer({"datasets/horse2zebra.zip": horse_zip}) as server:
        c = cfg(base_url=server.url, cache_dir=str(tmp_path / "cache"))
        summary = prep.prepare(c, "horse2zebra", str(tmp_path / "out"), progress=True)
        assert summary["kind"] == "download"
        assert summary["counts"] == {"trainA": 6, "trainB": 5, "testA": 2, "testB": 2}
        assert (tmp_path / "cache" / "horse2zebra.zip").read_bytes() == horse_zip
        # The second run uses the cache and sends no request.
        prep.prepare(c, "horse2zebra", str(tmp_path / "out2"), progress=False)
        assert len(server.requests) == 1
    assert (tmp_path / "out" / MANIFEST).read_bytes() == (tmp_path / "out2" / MANIFEST).read_bytes()


def test_download_resumes_after_a_cut(tmp_path, horse_zip):
    with DatasetServer({"datasets/horse2zebra.zip": horse_zip}) as server:
        server.cut_first = 1
        c = cfg(base_url=server.url, cache_dir=str(tmp_path / "cache"))
        prep.prepare(c, "horse2zebra", str(tmp_path / "out"), progress=False)
        requests = _fix_paths(server.requests)
    assert requests[0] == ("horse2zebra.zip", None)
    assert requests[1] == ("horse2zebra.zip", f"bytes={len(horse_zip) // 3}-")
    assert (tmp_path / "cache" / "horse2zebra.zip").read_bytes() == horse_zip
    assert not (tmp_path / "cache" / "horse2zebra.zip.part").exists()


def test_download_resumes_a_part_file_from_an_earlier_run(tmp_path, horse_zip):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "horse2zebra.zip.part").write_bytes(horse_zip[:1000])
    with DatasetServer({"datasets/horse2zebra.zip": horse_zip}) as server:
        c = cfg(base_url=server.url, cache_dir=str(tmp_path / "cache"))
        prep.prepare(c, "horse2zebra", str(tmp_path / "out"), progress=False)
        assert _fix_paths(server.requests) == [("horse2zebra.zip", "bytes=1000-")]
    assert (tmp_path / "cache" / "horse2zebra.zip").read_bytes() == horse_zip


def test_failed_download_leaves_no_dataset(tmp_path, horse_zip):
    previous = tmp_path / "out"
    prep.prepare(cfg(), "synthetic", str(previous), progress=False)
    before = {p: p.read_bytes() for p in previous.rglob("*") if p.is_file()}
    with DatasetServer({"datasets/horse2zebra.zip": horse_zip}) as server:
        server.cut_first = 100  # every attempt is cut
        c = cfg(base_url=server.url, cache_dir=str(tmp_path / "cache"))
        with pytest.raises(UserError, match="download failed after 5 attempts"):
            prep.prepare(c, "horse2zebra", str(previous), progress=False)
        with pytest.raises(UserError, match="HTTP 404"):
            prep.prepare(c, "monet2photo", str(tmp_path / "other"), progress=False)
    assert not (tmp_path / "cache" / "horse2zebra.zip").exists()
    assert not (tmp_path / "other").exists()
    assert {p: p.read_bytes() for p in previous.rglob("*") if p.is_file()} == before  # untouched


def test_corrupt_download_is_discarded(tmp_path, horse_zip):
    broken = bytearray(horse_zip)
    broken[200:260] = b"\x00" * 60  # damage a member: the CRC check fails
    with DatasetServer({"datasets/horse2zebra.zip": bytes(broken)}) as server:
        c = cfg(base_url=server.url, cache_dir=str(tmp_path / "cache"))
        with pytest.raises(UserError, match="not a valid zip archive"):
            prep.prepare(c, "horse2zebra", str(tmp_path / "out"), progress=False)
    assert not list((tmp_path / "cache").iterdir())
    assert not (tmp_path / "out").exists()


# -- S3 --------------------------------------------------------------------------------------------

def test_s3_source_and_s3_output(s3_env, tmp_path):
    bucket = s3_env("prepare-data")
    src = tmp_path / "local"
    for k, split in enumerate(("A", "B")):
        for i in range(6):
            write_rgb(src / split / f"img {i}.png", seed=10 * k + i)
    storage.upload_dir(src, f"s3://{bucket}/raw/horses", marker=False)
    summary = prep.prepare(cfg(test_fraction=0.3), f"s3://{bucket}/raw/horses", f"s3://{bucket}/prepared/v1",
                           progress=False)
    assert summary["kind"] == "s3" and summary["layout"] == "A/B"
    assert sum(summary["counts"].values()) == 12
    assert storage.is_complete(f"s3://{bucket}/prepared/v1")
    manifest = json.loads(storage.read_bytes(f"s3://{bucket}/prepared/v1/{MANIFEST}"))
    assert manifest["source"]["source"] == f"s3://{bucket}/raw/horses"
    entry = manifest["splits"]["trainA"][0]
    assert storage.read_bytes(f"s3://{bucket}/prepared/v1/{entry['path']}") == \
        (src / entry["source"]).read_bytes()
    from training.prepare.manifest import manifest_hash

    assert manifest_hash(f"s3://{bucket}/prepared/v1") == summary["test_set_hash"]
    # A prefix that holds other data is never replaced; a prepared one is.
    with pytest.raises(UserError, match="not a prepared dataset"):
        prep.prepare(cfg(), "synthetic", f"s3://{bucket}/raw/horses", progress=False)
    assert storage.exists(f"s3://{bucket}/raw/horses/A/img 0.png")
    prep.prepare(cfg(), "synthetic", f"s3://{bucket}/prepared/v1", progress=False)
    assert json.loads(storage.read_bytes(f"s3://{bucket}/prepared/v1/{MANIFEST}"))["source"]["kind"] == "synthetic"
    assert not storage.exists(f"s3://{bucket}/prepared/v1/{entry['path']}")  # stale objects are gone


def test_s3_zip_object(s3_env, tmp_path):
    bucket = s3_env("prepare-zip")
    archive = official_zip(tmp_path / "tinyset.zip")
    storage.upload_file(archive, f"s3://{bucket}/zips/tinyset.zip")
    summary = prep.prepare(cfg(), f"s3://{bucket}/zips/tinyset.zip", str(tmp_path / "out"), progress=False)
    assert summary["counts"] == {"trainA": 5, "trainB": 4, "testA": 2, "testB": 2}


def test_s3_missing_source(s3_env, tmp_path):
    bucket = s3_env("prepare-empty")
    with pytest.raises(UserError, match=f"s3://{bucket}/nothing/here"):
        prep.prepare(cfg(), f"s3://{bucket}/nothing/here", str(tmp_path / "out"), progress=False)
