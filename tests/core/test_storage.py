"""training.storage: local and s3:// paths, atomic outputs, the completion marker."""
from __future__ import annotations

import pytest

from training import storage
from training.errors import UserError


def test_split_and_join():
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/tmp/x")
    assert storage.split_s3("s3://bucket/a/b.png") == ("bucket", "a/b.png")
    assert storage.split_s3("s3://bucket") == ("bucket", "")
    assert storage.join("s3://b/p/", "x", "y.json") == "s3://b/p/x/y.json"
    with pytest.raises(UserError):
        storage.split_s3("s3:///key")


@pytest.mark.parametrize("name,expected", [
    ("a/b.png", "a/b.png"), ("./a//b.png", "a/b.png"), ("a\\b.png", "a/b.png"),
    ("/etc/passwd", None), ("../x.png", None), ("a/../../x.png", None), ("C:/x.png", None), ("", None),
])
def test_safe_relpath(name, expected):
    assert storage.safe_relpath(name) == expected


def test_local_output_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with storage.local_output(target) as tmp:
        (tmp / "a.txt").write_text("one")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "one"

    with pytest.raises(RuntimeError):
        with storage.local_output(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left

    with storage.local_output(target) as tmp:
        (tmp / "b.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_local_files(tmp_path):
    storage.write_bytes(tmp_path / "x" / "f.bin", b"abc")
    assert storage.read_bytes(tmp_path / "x" / "f.bin") == b"abc"
    assert storage.exists(tmp_path / "x" / "f.bin")
    storage.upload_file(tmp_path / "x" / "f.bin", str(tmp_path / "y" / "g.bin"))
    assert storage.download_file(str(tmp_path / "y" / "g.bin"), tmp_path / "z.bin").read_bytes() == b"abc"
    with pytest.raises(UserError, match="not found"):
        storage.read_bytes(tmp_path / "missing")
    with storage.local_input(tmp_path / "x") as path:
        assert path == tmp_path / "x"
    with pytest.raises(UserError, match="not found"):
        with storage.local_input(tmp_path / "nope"):
            pass


def test_s3_roundtrip(s3_env, tmp_path):
    bucket = s3_env("storage-roundtrip")
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub dir" / "ü.txt").write_text("u")
    assert storage.upload_dir(src, f"s3://{bucket}/out") == 2
    keys = sorted(o["Key"] for o in s3_env.client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["out/_SUCCESS", "out/a.txt", "out/sub dir/ü.txt"]
    assert storage.is_complete(f"s3://{bucket}/out") and storage.exists(f"s3://{bucket}/out/a.txt")
    assert not storage.exists(f"s3://{bucket}/other")

    with storage.local_input(f"s3://{bucket}/out") as local:
        assert (local / "sub dir" / "ü.txt").read_text() == "u"
        assert not (local / "_SUCCESS").exists()
    with storage.local_input(f"s3://{bucket}/out/a.txt") as local:
        assert local.name == "a.txt" and local.read_text() == "a"

    # A second output to the same prefix replaces the first: stale objects are removed.
    with storage.local_output(f"s3://{bucket}/out") as tmp:
        (tmp / "b.txt").write_text("b")
    keys = sorted(o["Key"] for o in s3_env.client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["out/_SUCCESS", "out/b.txt"]

    storage.write_bytes(f"s3://{bucket}/one/x.bin", b"xyz")
    assert storage.read_bytes(f"s3://{bucket}/one/x.bin") == b"xyz"
    storage.upload_file(src / "a.txt", f"s3://{bucket}/one/a.txt")
    assert storage.download_file(f"s3://{bucket}/one/a.txt", tmp_path / "dl.txt").read_text() == "a"


def test_s3_failed_output_leaves_no_marker(s3_env, tmp_path, monkeypatch):
    bucket = s3_env("storage-fail")
    with pytest.raises(RuntimeError):
        with storage.local_output(f"s3://{bucket}/run") as tmp:
            (tmp / "a.txt").write_text("a")
            raise RuntimeError("the step failed")
    assert not storage.exists(f"s3://{bucket}/run")

    # An upload that dies half-way leaves no _SUCCESS marker (and so no complete-looking output).
    src = tmp_path / "src"
    src.mkdir()
    for name in "abc":
        (src / f"{name}.txt").write_text(name)
    real_upload = storage._s3_call
    calls = {"n": 0}

    def flaky(action, bucket_, key, fn, *args, **kwargs):
        if action == "upload":
            calls["n"] += 1
            if calls["n"] == 2:
                raise UserError(f"s3://{bucket_}/{key}: upload failed: simulated")
        return real_upload(action, bucket_, key, fn, *args, **kwargs)

    monkeypatch.setattr(storage, "_s3_call", flaky)
    with pytest.raises(UserError, match="simulated"):
        storage.upload_dir(src, f"s3://{bucket}/half")
    monkeypatch.setattr(storage, "_s3_call", real_upload)
    assert not storage.is_complete(f"s3://{bucket}/half")


def test_s3_errors_name_bucket_and_key(s3_env, tmp_path):
    bucket = s3_env("storage-errors")
    with pytest.raises(UserError, match=f"s3://{bucket}/missing.bin"):
        storage.read_bytes(f"s3://{bucket}/missing.bin")
    with pytest.raises(UserError, match="s3://no-such-bucket-xyz/k"):
        storage.read_bytes("s3://no-such-bucket-xyz/k")
    with pytest.raises(UserError, match=f"s3://{bucket}/nothing"):
        with storage.local_input(f"s3://{bucket}/nothing"):
            pass


def test_s3_download_refuses_unsafe_keys(s3_env, tmp_path):
    bucket = s3_env("storage-unsafe")
    s3_env.client.put_object(Bucket=bucket, Key="p/../../evil.txt", Body=b"x")
    s3_env.client.put_object(Bucket=bucket, Key="p/ok.txt", Body=b"x")
    with pytest.raises(UserError, match="unsafe key"):
        storage.download_dir(f"s3://{bucket}/p", tmp_path / "dl")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_s3_outputs_need_a_prefix(s3_env, tmp_path):
    bucket = s3_env("storage-root")
    s3_env.client.put_object(Bucket=bucket, Key="keep.txt", Body=b"x")
    with pytest.raises(UserError, match="not the bucket root"):
        with storage.local_output(f"s3://{bucket}"):
            pass
    with pytest.raises(UserError, match="not the bucket root"):
        storage.upload_dir(tmp_path, f"s3://{bucket}/")
    assert storage.exists(f"s3://{bucket}/keep.txt")
