"""One helper for every step's inputs and outputs, local paths and ``s3://bucket/key`` alike.

Steps call two context managers and never look at the scheme themselves::

    with local_input("s3://bucket/data") as data:      # a local Path: the folder or file itself,
        ...                                             # or a temporary download of it
    with local_output("s3://bucket/runs/x") as out:   # an empty local temporary folder
        ...                                             # on a clean exit it becomes the output

S3 access goes through boto3, imported lazily. The endpoint URL, region and credentials come
from the standard AWS environment and config files (``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3``, ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ...),
so MinIO and other S3-compatible stores work unchanged. Large files go through boto3's
managed transfer (multipart above ``MULTIPART_THRESHOLD``), and every call retries
transient errors (botocore's standard retry mode, ``MAX_ATTEMPTS`` attempts).

Atomicity rules
  * Local outputs are written to a temporary folder next to the target and renamed into
    place only after the body finished without an exception; the previous output stays
    intact until then, and a failure removes the temporary folder. (The swap is two renames:
    only a crash between them leaves the previous output under ``.NAME.old-*``.)
  * An S3 object never looks complete before it is: a single PUT or a multipart upload
    becomes visible only once all of its bytes are stored.
  * An S3 *prefix* written by ``upload_dir`` / ``local_output`` is complete when its
    ``_SUCCESS`` marker exists. The marker is deleted first, every file is uploaded in full,
    objects left from an earlier output that the new one lacks are deleted, and the marker is
    written last. A failed upload therefore never leaves a prefix that has a marker but not
    its files. ``is_complete(uri)`` checks it; readers of a step's output should.

Every failure is a ``UserError`` that names the bucket and key (or the local path).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Iterator

from .errors import UserError

MARKER = "_SUCCESS"
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 64 * 1024 * 1024
MAX_ATTEMPTS = 8


# -- addresses -------------------------------------------------------------------------------

def is_s3(uri: str | os.PathLike) -> bool:
    return isinstance(uri, str) and uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; the key may be empty."""
    if not is_s3(uri):
        raise UserError(f"{uri}: not an s3:// address")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise UserError(f"{uri}: the s3:// address has no bucket")
    return bucket, key


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or an s3:// address."""
    if is_s3(uri):
        out = uri.rstrip("/")
        for part in parts:
            out = f"{out}/{part.strip('/')}"
        return out
    return str(Path(uri, *parts))


def safe_relpath(name: str) -> str | None:
    """The normalised relative POSIX path of an archive member or object key, or None when
    it is absolute or climbs out (``..``): the zip-slip rule, shared by zips and S3 keys."""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _where(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


# -- boto3 -------------------------------------------------------------------------------------

def client():
    """A boto3 S3 client configured from the standard AWS environment, with retries."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:  # pragma: no cover - boto3 is a dependency
        raise UserError("s3:// paths need boto3 (pip install boto3)") from None
    return boto3.client("s3", config=Config(retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"}))


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNKSIZE,
                          max_concurrency=4, use_threads=True)


def _s3_error(e: Exception, bucket: str, key: str, action: str) -> UserError:
    code = ""
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchKey", "NotFound"):
        what = "not found"
    elif code == "NoSuchBucket":
        what = f"bucket '{bucket}' does not exist"
    elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        what = f"access denied ({code})"
    else:
        what = f"{type(e).__name__}: {e}"
    return UserError(f"{_where(bucket, key)}: {action} failed: {what}")


def _s3_call(action: str, bucket: str, key: str, fn, *args, **kwargs):
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(*args, **kwargs)
    except (ClientError, BotoCoreError) as e:
        raise _s3_error(e, bucket, key, action) from None
    except Exception as e:  # S3Transfer wraps failures in its own types
        if type(e).__module__.startswith(("boto3", "botocore", "s3transfer")):
            raise _s3_error(e, bucket, key, action) from None
        raise


def _list_keys(s3, bucket: str, prefix: str) -> list[dict]:
    paginator = s3.get_paginator("list_objects_v2")
    objects: list[dict] = []

    def collect():
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            objects.extend(page.get("Contents", []))

    _s3_call("list", bucket, prefix, collect)
    return objects


def _dir_prefix(key: str) -> str:
    return key.rstrip("/") + "/" if key.strip("/") else ""


# -- single files ------------------------------------------------------------------------------

def upload_file(local: str | os.PathLike, uri: str) -> None:
    """Upload one file (multipart when large); a local ``uri`` gets an atomic copy."""
    local = Path(local)
    if not local.is_file():
        raise UserError(f"{local}: file not found")
    if not is_s3(uri):
        target = Path(uri).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    bucket, key = split_s3(uri)
    if not key or key.endswith("/"):
        raise UserError(f"{uri}: an object key is needed to upload {local.name}")
    s3 = client()
    _s3_call("upload", bucket, key, s3.upload_file, str(local), bucket, key, Config=_transfer_config())


def download_file(uri: str, local: str | os.PathLike) -> Path:
    """Download one object (or copy one local file) to ``local``, atomically."""
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            s3 = client()
            _s3_call("download", bucket, key, s3.download_file, bucket, key, str(tmp), Config=_transfer_config())
        else:
            source = Path(uri).expanduser()
            if not source.is_file():
                raise UserError(f"{source}: file not found")
            shutil.copyfile(source, tmp)
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)
    return local


def read_bytes(uri: str | os.PathLike) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3 = client()
        response = _s3_call("read", bucket, key, s3.get_object, Bucket=bucket, Key=key)
        return _s3_call("read", bucket, key, response["Body"].read)
    path = Path(uri).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write a whole object or file; local files are written to a temporary name and renamed."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3 = client()
        _s3_call("write", bucket, key, s3.put_object, Bucket=bucket, Key=key, Body=data)
        return
    path = Path(uri).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def exists(uri: str | os.PathLike) -> bool:
    """Whether a local path, an S3 object, or any object under an S3 prefix exists."""
    if not is_s3(uri):
        return Path(uri).expanduser().exists()
    bucket, key = split_s3(uri)
    s3 = client()
    if key and not key.endswith("/") and _head(s3, bucket, key) is not None:
        return True
    response = _s3_call("list", bucket, key, s3.list_objects_v2, Bucket=bucket, Prefix=_dir_prefix(key), MaxKeys=1)
    return response.get("KeyCount", 0) > 0


def is_complete(uri: str | os.PathLike) -> bool:
    """An S3 prefix is complete when its ``_SUCCESS`` marker exists; a local folder when it exists."""
    if not is_s3(uri):
        return Path(uri).expanduser().is_dir()
    return exists(join(str(uri), MARKER))


def _head(s3, bucket: str, key: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise _s3_error(e, bucket, key, "head") from None
    except Exception as e:
        raise _s3_error(e, bucket, key, "head") from None


# -- folders -----------------------------------------------------------------------------------

def upload_dir(local: str | os.PathLike, uri: str, marker: bool = True) -> int:
    """Upload every file under ``local`` to the prefix ``uri``; returns the number of files.

    With ``marker`` (the default) this follows the completion rule in the module docstring:
    delete ``_SUCCESS``, upload every file, delete stale objects, write ``_SUCCESS`` last.
    A local ``uri`` gets a copy of the folder swapped into place atomically.
    """
    local = Path(local)
    if not local.is_dir():
        raise UserError(f"{local}: folder not found")
    files = sorted(p for p in local.rglob("*") if p.is_file())
    if not is_s3(uri):
        with local_output(uri) as tmp:
            shutil.copytree(local, tmp, dirs_exist_ok=True)
        return len(files)
    bucket, key = split_s3(uri)
    prefix = _dir_prefix(key)
    if marker and not prefix:
        raise UserError(f"{uri}: write outputs under a prefix (s3://{bucket}/NAME), not the bucket root")
    s3 = client()
    marker_key = prefix + MARKER
    if marker:
        _s3_call("delete", bucket, marker_key, s3.delete_object, Bucket=bucket, Key=marker_key)
    config = _transfer_config()
    written = set()
    for path in files:
        rel = path.relative_to(local).as_posix()
        if marker and rel == MARKER:
            continue
        object_key = prefix + rel
        _s3_call("upload", bucket, object_key, s3.upload_file, str(path), bucket, object_key, Config=config)
        written.add(object_key)
    if marker:
        stale = [o["Key"] for o in _list_keys(s3, bucket, prefix) if o["Key"] not in written and o["Key"] != marker_key]
        for start in range(0, len(stale), 1000):
            batch = [{"Key": k} for k in stale[start:start + 1000]]
            _s3_call("delete", bucket, prefix, s3.delete_objects, Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        _s3_call("write", bucket, marker_key, s3.put_object, Bucket=bucket, Key=marker_key, Body=b"")
    return len(written)


def download_dir(uri: str, local: str | os.PathLike) -> int:
    """Download every object under the prefix ``uri`` into ``local``; returns the count.

    Keys that would land outside ``local`` (absolute or with ``..``) are refused, as are
    folder placeholder objects (keys ending in ``/``) and the ``_SUCCESS`` marker.
    """
    local = Path(local)
    local.mkdir(parents=True, exist_ok=True)
    bucket, key = split_s3(uri)
    prefix = _dir_prefix(key)
    s3 = client()
    config = _transfer_config()
    count = 0
    for obj in _list_keys(s3, bucket, prefix):
        object_key = obj["Key"]
        if object_key.endswith("/"):
            continue
        rel = safe_relpath(object_key[len(prefix):])
        if rel is None:
            raise UserError(f"{_where(bucket, object_key)}: unsafe key (absolute or '..'), refusing to download it")
        if rel == MARKER:
            continue
        target = local / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        _s3_call("download", bucket, object_key, s3.download_file, bucket, object_key, str(target), Config=config)
        count += 1
    return count


@contextlib.contextmanager
def local_input(uri: str | os.PathLike) -> Iterator[Path]:
    """Yield a local Path for ``uri``.

    A local path is yielded as it is (it must exist). An S3 object is downloaded into a
    temporary folder, keeping its file name; an S3 prefix is downloaded as a folder. The
    temporary copy is removed on exit.
    """
    if not is_s3(uri):
        path = Path(uri).expanduser()
        if not path.exists():
            raise UserError(f"{path}: not found")
        yield path
        return
    bucket, key = split_s3(str(uri))
    s3 = client()
    with tempfile.TemporaryDirectory(prefix="cyclegan-s3-") as tmp:
        if key and not key.endswith("/") and _head(s3, bucket, key) is not None:
            target = Path(tmp) / PurePosixPath(key).name
            _s3_call("download", bucket, key, s3.download_file, bucket, key, str(target), Config=_transfer_config())
            yield target
            return
        folder = Path(tmp) / (PurePosixPath(key.rstrip("/")).name or bucket)
        if download_dir(str(uri), folder) == 0:
            raise UserError(f"{_where(bucket, key)}: no objects found at this address")
        yield folder


@contextlib.contextmanager
def local_output(uri: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty local temporary folder that becomes the output ``uri`` on a clean exit.

    Local: the folder is created next to the target (same file system) and renamed into
    place; an existing target is replaced only then. S3: the folder is uploaded with
    ``upload_dir`` (completion marker last). On an exception (or KeyboardInterrupt) the
    temporary folder is removed and the previous output is left untouched.
    """
    if is_s3(uri):
        bucket, key = split_s3(str(uri))  # fail early on a malformed address or a bucket root
        if not key.strip("/"):
            raise UserError(f"{uri}: write outputs under a prefix (s3://{bucket}/NAME), not the bucket root")
        with tempfile.TemporaryDirectory(prefix="cyclegan-out-") as tmp:
            yield Path(tmp)
            upload_dir(tmp, str(uri))
        return
    target = Path(uri).expanduser()
    if target.exists() and not target.is_dir():
        raise UserError(f"{target}: exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the output is an ordinary folder
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: Path, target: Path) -> None:
    """Move the folder ``new`` to ``target``, replacing an existing ``target`` folder."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
