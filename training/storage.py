"""One helper for every step's inputs and outputs: local paths and object storage
(``s3://``, ``gs://``, ``az://``, ``memory://``, any fsspec scheme) behind one interface.

Steps call two context managers and never look at the scheme themselves::

    with local_input("s3://bucket/data") as data:      # a local Path: the folder or file itself,
        ...                                             # or a temporary download of it
    with local_output("gs://bucket/runs/x") as out:   # an empty local temporary folder
        ...                                             # on a clean exit it becomes the output

What users must know
  * Transfers go through fsspec. ``s3://`` uses s3fs (installed); ``gs://`` needs ``gcsfs`` and
    ``az://`` / ``abfs://`` need ``adlfs`` installed in the image that runs the step (a missing
    one is a one-line error saying which to install). Credentials come from each backend's
    standard sources: for S3 the AWS environment and config files (``AWS_ACCESS_KEY_ID``,
    ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, instance roles, ...); for GCS application default
    credentials / workload identity; for Azure ``AZURE_STORAGE_ACCOUNT_NAME`` with a key, a
    connection string or ``DefaultAzureCredential``.
  * S3-compatible stores (MinIO, ...): ``AWS_ENDPOINT_URL_S3`` or else ``AWS_ENDPOINT_URL`` is
    passed to s3fs as its endpoint (unless ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true``).
  * Retries (S3): every request retries transient failures in botocore's ``standard`` mode up
    to ``MAX_ATTEMPTS`` attempts; around that, s3fs retries a whole call ``S3FS_RETRIES`` times
    for the failures botocore cannot see (a response body cut off while it is read, SlowDown).
  * Large files are uploaded in parts of ``MULTIPART_CHUNKSIZE`` bytes (s3fs switches to a
    multipart upload at twice that size), at most ``PART_CONCURRENCY`` parts of one file at a
    time; a folder moves ``TRANSFER_THREADS`` files at a time.

Atomicity rules
  * Local outputs are written to a temporary folder next to the target and renamed into
    place only after the body finished without an exception; the previous output stays
    intact until then, and a failure removes the temporary folder. (The swap is two renames:
    only a crash between them leaves the previous output under ``.NAME.old-*``.)
  * An object never looks complete before it is: a single PUT, a multipart upload (S3), a
    resumable upload (GCS) or a block list (Azure) becomes visible only once all its bytes are.
  * A *prefix* written by ``upload_dir`` / ``local_output`` is complete when its ``_SUCCESS``
    marker exists. The marker is deleted first, every file is uploaded in full, objects left
    from an earlier output that the new one lacks are deleted, and the marker is written last.
    A failed upload therefore never leaves a prefix that has a marker but not its files.
    ``is_complete(uri)`` checks it; readers of a step's output should.
  * Downloads go to a temporary name and are renamed into place; object keys that would land
    outside the target folder (absolute, or with ``..``) are refused.

Every failure is a ``UserError`` that names the object (``scheme://bucket/key``) or the local
path: not found (``NotFound``, a ``UserError`` subclass callers may catch), the bucket does not
exist, access denied, or the backend's own reason.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from .errors import UserError

MARKER = "_SUCCESS"
MULTIPART_CHUNKSIZE = 64 * 1024 * 1024
PART_CONCURRENCY = 4      # parts of one file in memory at once: 4 x 64 MiB
MAX_ATTEMPTS = 8          # botocore attempts per request (standard retry mode)
S3FS_RETRIES = 3          # s3fs attempts per call, around botocore's own retries
TRANSFER_THREADS = 8      # files of one folder transferred at a time

class NotFound(UserError):
    """The object, file or folder is not there (the bucket is: a missing bucket is a plain
    UserError, since it is a typo rather than nothing written yet)."""


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "BlobNotFound", "ResourceNotFound"}
_NO_BUCKET = {"NoSuchBucket", "ContainerNotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "AuthorizationFailure", "AuthorizationPermissionMismatch", "AuthenticationFailed"}
# Exceptions of these packages (and any OSError) are transfer failures, turned into UserErrors;
# anything else is a bug of ours and keeps its traceback.
_BACKEND_PACKAGES = {"botocore", "aiobotocore", "s3fs", "fsspec", "aiohttp", "gcsfs", "google", "adlfs",
                     "azure", "urllib3", "requests"}


# -- addresses -------------------------------------------------------------------------------

def scheme(uri: str | os.PathLike) -> str | None:
    """``"s3"`` for ``s3://bucket/key``; None for a local path (``file://`` counts as local)."""
    if not isinstance(uri, str):
        return None
    match = _SCHEME.match(uri)
    if match is None or match.group(1).lower() == "file":
        return None
    return match.group(1).lower()


def is_remote(uri: str | os.PathLike) -> bool:
    """Whether ``uri`` is an object-storage address (``s3://``, ``gs://``, ...), not a local path."""
    return scheme(uri) is not None


def split(uri: str) -> tuple[str, str, str]:
    """``s3://bucket/some/key`` -> ``("s3", "bucket", "some/key")``; the key may be empty."""
    name = scheme(uri)
    if name is None:
        raise UserError(f"{uri}: not an object-storage address (scheme://bucket/key)")
    bucket, _, key = uri[len(name) + 3:].partition("/")
    if not bucket:
        raise UserError(f"{uri}: the {name}:// address has no bucket")
    return name, bucket, key


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or an object-storage address."""
    if is_remote(uri):
        out = uri.rstrip("/")
        for part in parts:
            out = f"{out}/{part.strip('/')}"
        return out
    return str(Path(_local(uri), *parts))


def safe_relpath(name: str) -> str | None:
    """The normalised relative POSIX path of an archive member or object key, or None when
    it is absolute or climbs out (``..``): the zip-slip rule, shared by zips and object keys."""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _local(uri: str | os.PathLike) -> Path:
    if isinstance(uri, str) and uri.lower().startswith("file://"):
        uri = uri[len("file://"):]
    return Path(uri).expanduser()


def _dir_key(key: str) -> str:
    return key.strip("/")


# -- the transfer layer (fsspec) ----------------------------------------------------------------

def _options(name: str) -> dict:
    """Constructor options of the fsspec file system for scheme ``name``."""
    if name not in ("s3", "s3a"):
        return {}
    options: dict = {
        "config_kwargs": {"retries": {"max_attempts": MAX_ATTEMPTS, "mode": "standard"}},
        "max_concurrency": PART_CONCURRENCY,
        # objects written by other processes (the trainer's retry, another step) must be seen
        "use_listings_cache": False,
    }
    # Recent botocore reads these itself; passing them keeps older ones and any other client
    # of this session (aiobotocore inside s3fs) pointed at the same S3-compatible server.
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
    return options


def _put_options(name: str) -> dict:
    return {"chunksize": MULTIPART_CHUNKSIZE} if name in ("s3", "s3a") else {}


def filesystem(uri: str):
    """The fsspec file system for ``uri``'s scheme and the path of ``uri`` inside it."""
    import fsspec

    name, _, _ = split(uri)
    try:
        fs, path = fsspec.core.url_to_fs(uri, **_options(name))
    except ImportError as e:
        raise UserError(f"{uri}: {name}:// needs a package that is not installed ({e})") from None
    except ValueError as e:
        if "protocol" in str(e).lower():
            raise UserError(f"{uri}: unknown storage scheme '{name}'") from None
        raise UserError(f"{uri}: {e}") from None
    if hasattr(fs, "retries") and name in ("s3", "s3a"):
        fs.retries = S3FS_RETRIES   # s3fs has no constructor option for its own retry loop
    return fs, path


def _error_code(e: BaseException) -> str:
    """The service's error code (``NoSuchBucket``, ``AccessDenied``, ...) anywhere in the chain:
    s3fs turns botocore's ClientError into an OSError and keeps it as the cause."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
        code = getattr(e, "error_code", None)   # azure-core
        if isinstance(code, str) and code:
            return code
        e = e.__cause__ or e.__context__
    return ""


def _is_transfer_error(e: BaseException) -> bool:
    return isinstance(e, (OSError, TimeoutError)) or type(e).__module__.split(".")[0] in _BACKEND_PACKAGES


def remote_error(e: BaseException, uri: str, action: str) -> UserError:
    """A one-line UserError naming ``uri`` and why ``action`` failed."""
    code = _error_code(e)
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    bucket = split(uri)[1] if is_remote(uri) else ""
    if code in _NO_BUCKET or "bucket does not exist" in message.lower():
        what = f"bucket '{bucket}' does not exist"
    elif code in _NOT_FOUND or isinstance(e, FileNotFoundError):
        return NotFound(f"{uri}: {action} failed: not found")
    elif code in _DENIED or isinstance(e, PermissionError):
        what = f"access denied ({code or message or type(e).__name__})"
    else:
        what = f"{type(e).__name__}: {message}"[:300]
    return UserError(f"{uri}: {action} failed: {what}")


def _call(action: str, uri: str, fn: Callable, *args, **kwargs):
    """Run one transfer-layer call; its failure becomes a UserError naming ``uri``."""
    try:
        return fn(*args, **kwargs)
    except UserError:
        raise
    except Exception as e:
        if _is_transfer_error(e):
            raise remote_error(e, uri, action) from None
        raise


def _call_all(action: str, jobs: list[tuple[str, Callable, tuple]]) -> None:
    """Run ``(uri, fn, args)`` jobs, ``TRANSFER_THREADS`` at a time; the first failure is raised
    (naming its object) once the running ones have stopped, and the queued ones are dropped."""
    if len(jobs) <= 1:
        for uri, fn, args in jobs:
            _call(action, uri, fn, *args)
        return
    with ThreadPoolExecutor(TRANSFER_THREADS, thread_name_prefix="storage") as pool:
        futures = [pool.submit(_call, action, uri, fn, *args) for uri, fn, args in jobs]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _list_files(fs, path: str, uri: str) -> list[str]:
    """Paths (inside ``fs``) of every object under the prefix ``path``; none when it is empty."""
    found = _call("list", uri, fs.find, path)
    return [p for p in found if p.startswith(path.rstrip("/") + "/")]


def _get_atomic(fs, path: str, uri: str, local: Path) -> Path:
    """Download ``path`` to a temporary name beside ``local``, then rename it into place."""
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        _call("download", uri, fs.get_file, path, str(tmp))
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)
    return local


# -- single files ------------------------------------------------------------------------------

def upload_file(local: str | os.PathLike, uri: str) -> None:
    """Upload one file (multipart when large); a local ``uri`` gets an atomic copy."""
    local = Path(local)
    if not local.is_file():
        raise NotFound(f"{local}: file not found")
    if not is_remote(uri):
        _atomic_copy(local, _local(uri))
        return
    name, _, key = split(uri)
    if not key or key.endswith("/"):
        raise UserError(f"{uri}: an object key is needed to upload {local.name}")
    fs, path = filesystem(uri)
    _call("upload", uri, fs.put_file, str(local), path, **_put_options(name))


def download_file(uri: str, local: str | os.PathLike) -> Path:
    """Download one object (or copy one local file) to ``local``, atomically."""
    local = Path(local)
    if is_remote(uri):
        fs, path = filesystem(uri)
        return _get_atomic(fs, path, uri, local)
    source = _local(uri)
    if not source.is_file():
        raise NotFound(f"{source}: file not found")
    _atomic_copy(source, local)
    return local


def read_bytes(uri: str | os.PathLike) -> bytes:
    if is_remote(uri):
        fs, path = filesystem(uri)
        return _call("read", uri, fs.cat_file, path)
    path = _local(uri)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path}: file not found") from None


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write a whole object or file; local files are written to a temporary name and renamed."""
    if is_remote(uri):
        fs, path = filesystem(uri)
        _call("write", uri, fs.pipe_file, path, data)
        return
    path = _local(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy one object to another key of the same store (server-side), or one local file to
    another atomically."""
    if is_remote(src) != is_remote(dst) or (is_remote(src) and split(str(src))[:2] != split(str(dst))[:2]):
        raise UserError(f"{src} -> {dst}: copy works within one bucket or on local paths only")
    if not is_remote(src):
        source = _local(src)
        if not source.is_file():
            raise NotFound(f"{source}: file not found")
        _atomic_copy(source, _local(dst))
        return
    fs, path = filesystem(str(src))
    _, target = filesystem(str(dst))
    _call("copy", str(src), fs.cp_file, path, target)


def delete(uri: str | os.PathLike) -> None:
    """Delete one object or local file; one that is not there is fine."""
    if not is_remote(uri):
        _local(uri).unlink(missing_ok=True)
        return
    fs, path = filesystem(str(uri))
    with contextlib.suppress(NotFound):
        _call("delete", str(uri), fs.rm_file, path)


def exists(uri: str | os.PathLike) -> bool:
    """Whether a local path, an object, or any object under a prefix exists. A bucket that
    does not exist is an error (a typo), not a missing object."""
    if not is_remote(uri):
        return _local(uri).exists()
    _, _, key = split(str(uri))
    fs, path = filesystem(str(uri))
    try:
        if not _dir_key(key):
            return bool(_call("list", str(uri), fs.ls, path, detail=False))
        _call("stat", str(uri), fs.info, path)
        return True
    except NotFound:
        return False


def is_complete(uri: str | os.PathLike) -> bool:
    """A prefix is complete when its ``_SUCCESS`` marker exists; a local folder when it exists."""
    if not is_remote(uri):
        return _local(uri).is_dir()
    return exists(join(str(uri), MARKER))


def _atomic_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# -- folders -----------------------------------------------------------------------------------

def upload_dir(local: str | os.PathLike, uri: str, marker: bool = True) -> int:
    """Upload every file under ``local`` to the prefix ``uri``; returns the number of files.

    With ``marker`` (the default) this follows the completion rule in the module docstring:
    delete ``_SUCCESS``, upload every file, delete stale objects, write ``_SUCCESS`` last.
    A local ``uri`` gets a copy of the folder swapped into place atomically.
    """
    local = Path(local)
    if not local.is_dir():
        raise NotFound(f"{local}: folder not found")
    files = sorted(p for p in local.rglob("*") if p.is_file())
    if not is_remote(uri):
        with local_output(uri) as tmp:
            shutil.copytree(local, tmp, dirs_exist_ok=True)
        return len(files)
    name, bucket, key = split(uri)
    if marker and not _dir_key(key):
        raise UserError(f"{uri}: write outputs under a prefix ({name}://{bucket}/NAME), not the bucket root")
    fs, path = filesystem(uri)
    path = path.rstrip("/")
    marker_uri = join(uri, MARKER)
    if marker:
        delete(marker_uri)
    put_file = functools.partial(fs.put_file, **_put_options(name))
    jobs, written = [], set()
    for file in files:
        rel = file.relative_to(local).as_posix()
        if marker and rel == MARKER:
            continue
        jobs.append((join(uri, rel), put_file, (str(file), f"{path}/{rel}")))
        written.add(f"{path}/{rel}")
    _call_all("upload", jobs)
    if marker:
        stale = [p for p in _list_files(fs, path, uri) if p not in written and p != f"{path}/{MARKER}"]
        if stale:
            _call("delete", uri, fs.rm, stale)
        write_bytes(marker_uri, b"")
    return len(written)


def download_dir(uri: str, local: str | os.PathLike) -> int:
    """Download every object under the prefix ``uri`` into ``local``; returns the count.

    Keys that would land outside ``local`` (absolute or with ``..``) are refused before anything
    is downloaded; folder placeholder objects (keys ending in ``/``) and the ``_SUCCESS`` marker
    are skipped.
    """
    local = Path(local)
    if not is_remote(uri):
        source = _local(uri)
        if not source.is_dir():
            raise NotFound(f"{source}: folder not found")
        shutil.copytree(source, local, dirs_exist_ok=True)
        return sum(1 for p in local.rglob("*") if p.is_file())
    local.mkdir(parents=True, exist_ok=True)
    fs, path = filesystem(uri)
    path = path.rstrip("/")
    jobs = []
    for found in _list_files(fs, path, uri):
        rel_key = found[len(path) + 1:]
        if rel_key.endswith("/"):
            continue
        rel = safe_relpath(rel_key)
        if rel is None:
            raise UserError(f"{join(uri, rel_key)}: unsafe key (absolute or '..'), refusing to download it")
        if rel == MARKER:
            continue
        object_uri = join(uri, rel_key)
        jobs.append((object_uri, _get_atomic, (fs, found, object_uri, local / rel)))
    _call_all("download", jobs)
    return len(jobs)


@contextlib.contextmanager
def local_input(uri: str | os.PathLike) -> Iterator[Path]:
    """Yield a local Path for ``uri``.

    A local path is yielded as it is (it must exist). An object is downloaded into a
    temporary folder, keeping its file name; a prefix is downloaded as a folder. The
    temporary copy is removed on exit.
    """
    if not is_remote(uri):
        path = _local(uri)
        if not path.exists():
            raise NotFound(f"{path}: not found")
        yield path
        return
    _, bucket, key = split(str(uri))
    fs, path = filesystem(str(uri))
    with tempfile.TemporaryDirectory(prefix="cyclegan-remote-") as tmp:
        if key and not key.endswith("/") and _is_file(fs, path, str(uri)):
            yield _get_atomic(fs, path, str(uri), Path(tmp) / PurePosixPath(key).name)
            return
        folder = Path(tmp) / (PurePosixPath(key.rstrip("/")).name or bucket)
        if download_dir(str(uri), folder) == 0:
            raise UserError(f"{uri}: no objects found at this address")
        yield folder


def _is_file(fs, path: str, uri: str) -> bool:
    try:
        return _call("stat", uri, fs.info, path).get("type") == "file"
    except NotFound:
        return False


@contextlib.contextmanager
def local_output(uri: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty local temporary folder that becomes the output ``uri`` on a clean exit.

    Local: the folder is created next to the target (same file system) and renamed into
    place; an existing target is replaced only then. Object storage: the folder is uploaded
    with ``upload_dir`` (completion marker last). On an exception (or KeyboardInterrupt) the
    temporary folder is removed and the previous output is left untouched.
    """
    if is_remote(uri):
        name, bucket, key = split(str(uri))  # fail early on a malformed address or a bucket root
        if not _dir_key(key):
            raise UserError(f"{uri}: write outputs under a prefix ({name}://{bucket}/NAME), not the bucket root")
        with tempfile.TemporaryDirectory(prefix="cyclegan-out-") as tmp:
            yield Path(tmp)
            upload_dir(tmp, str(uri))
        return
    target = _local(uri)
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
