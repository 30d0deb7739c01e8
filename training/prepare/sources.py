"""Where ``cyclegan prepare`` reads from, and how a source's files map onto the domains.

A source is opened into a ``Source``: a local folder or zip archive plus the list of its
candidate files (relative POSIX paths), and the files refused while listing (zip-slip
members, links that point outside the source). ``assign`` then decides which files belong
to domain A and B, and to their train and test parts, from the detected layout or from
``prepare.domain_a`` / ``domain_b`` / ``test_a`` / ``test_b``.

Sources: ``synthetic``; a standard dataset NAME (downloaded from ``prepare.base_url``,
streamed, resumable, cached in ``prepare.cache_dir``); a local ``.zip``; a local folder;
``s3://bucket/prefix`` or any other ``training.storage`` address (a prefix of files, or one
``.zip`` object).
"""
from __future__ import annotations

import contextlib
import http.client
import os
import posixpath
import re
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .. import storage
from ..config import PrepareConfig
from ..errors import UserError

# The datasets on the official CycleGAN server (datasets/download_cyclegan_dataset.sh).
DATASETS = (
    "apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo", "ukiyoe2photo",
    "vangogh2photo", "maps", "cityscapes", "facades", "iphone2dslr_flower", "ae_photos",
    "mini", "mini_pix2pix", "mini_colorization", "grumpifycat",
)
# Files with these extensions (any case) or with none are decoded; others are listed as skipped.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm",
                    ".tif", ".tiff", ".webp", ".tga"}
IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
DOWNLOAD_ATTEMPTS = 5
DOWNLOAD_BACKOFF_S = 0.5
DOWNLOAD_TIMEOUT_S = 60
CHUNK = 1 << 20


# -- what a source is --------------------------------------------------------------------------

@dataclass
class Source:
    kind: str                                   # synthetic | download | zip | folder | s3
    name: str                                   # the source as the user gave it
    root: Path                                  # the local folder or zip file
    files: list[str] = field(default_factory=list)                     # candidate files, sorted
    skipped: list[tuple[str, str]] = field(default_factory=list)       # (path, reason) refused while listing
    targets: dict[str, str] = field(default_factory=dict)              # link -> member it reads (zips)
    archive_sha256: str = ""

    def spec(self, rel: str) -> tuple:
        """What a worker process needs to read ``rel``: ("zip", archive, member) or ("file", path)."""
        if self.root.is_dir():
            return ("file", str(self.root / rel))
        return ("zip", str(self.root), self.targets.get(rel, rel))


def read_spec(spec: tuple, _zips: dict = {}) -> bytes:  # noqa: B006 - a per-process cache of open archives
    if spec[0] == "file":
        with open(spec[1], "rb") as f:
            return f.read()
    key = (os.getpid(), spec[1])
    archive = _zips.get(key)
    if archive is None:
        archive = _zips[key] = zipfile.ZipFile(spec[1])
    return archive.read(archive.getinfo(_members(archive)[spec[2]]))


def _members(archive: zipfile.ZipFile, _cache: dict = {}) -> dict[str, str]:  # noqa: B006
    """Safe relative path -> the member's name as stored, per open archive."""
    names = _cache.get(id(archive))
    if names is None:
        names = _cache[id(archive)] = {}
        for info in archive.infolist():
            rel = storage.safe_relpath(info.filename)
            if rel is not None and not info.is_dir():
                names.setdefault(rel, info.filename)
    return names


def _ignored(rel: str) -> bool:
    return any(part.startswith(".") or part in IGNORED_NAMES for part in rel.split("/"))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def list_folder(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Candidate files under ``root`` (sorted relative POSIX paths) and refused links.

    Links are followed only when they resolve inside ``root``; a link to a folder that
    contains it (a loop) is not followed.
    """
    root_real = root.resolve()
    files: list[str] = []
    skipped: list[tuple[str, str]] = []

    def walk(folder: Path, rel: str, real: Path) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            relpath = rel + entry.name
            if _ignored(entry.name):
                continue
            if entry.is_symlink():
                target = Path(entry.path).resolve()
                if not _inside(target, root_real):
                    skipped.append((relpath, f"link outside the source: points to {os.readlink(entry.path)}"))
                    continue
                if not target.exists():
                    skipped.append((relpath, "broken link"))
                    continue
                if target.is_dir():
                    if _inside(real, target):
                        skipped.append((relpath, "link loop: points to a folder that contains it"))
                    else:
                        walk(Path(entry.path), relpath + "/", target)
                    continue
                files.append(relpath)
            elif entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), relpath + "/", real / entry.name)
            elif entry.is_file(follow_symlinks=False):
                files.append(relpath)

    walk(root, "", root_real)
    return sorted(files), skipped


def list_zip(path: Path) -> tuple[list[str], list[tuple[str, str]], dict[str, str]]:
    """Candidate members of a zip archive, refused members, and links that stay inside it.

    Members with absolute paths or ``..`` components (zip-slip) are refused and never
    read; so are symbolic links that point outside the archive.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path}: not a readable zip archive ({e})") from None
    with archive:
        files, skipped, links = [], [], {}
        seen: set[str] = set()
        for info in archive.infolist():
            if info.is_dir():
                continue
            rel = storage.safe_relpath(info.filename)
            if rel is None:
                skipped.append((info.filename, "unsafe path: absolute or '..' in the archive, not extracted"))
                continue
            if _ignored(rel):
                continue
            if rel in seen:
                skipped.append((info.filename, "duplicate archive member: only the first is used"))
                continue
            seen.add(rel)
            if stat.S_ISLNK(info.external_attr >> 16):
                target = archive.read(info).decode("utf-8", "replace")
                joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
                resolved = None if target.startswith("/") else storage.safe_relpath(joined)
                if resolved is None:
                    skipped.append((rel, f"link outside the source: points to {target}"))
                    continue
                links[rel] = resolved
            files.append(rel)
        members = set(files)
        for rel, target in list(links.items()):
            if target not in members or target in links:
                skipped.append((rel, f"broken link: points to {target}"))
                files.remove(rel)
                del links[rel]
    return sorted(files), skipped, links


def _open_local(path: Path, name: str, kind: str) -> Source:
    if path.is_dir():
        files, skipped = list_folder(path)
        return Source(kind=kind, name=name, root=path, files=files, skipped=skipped)
    if path.is_file() and zipfile.is_zipfile(path):
        files, skipped, links = list_zip(path)
        from ..utils import sha256_file

        return Source(kind=kind, name=name, root=path, files=files, skipped=skipped, targets=links,
                      archive_sha256=sha256_file(path))
    raise UserError(f"{name}: not a folder or a .zip archive")


@contextlib.contextmanager
def open_source(source: str, cfg: PrepareConfig, progress: bool = True) -> Iterator[Source]:
    """Resolve ``source`` to a local folder or zip (downloading when needed) and list it."""
    if source == "synthetic":
        from . import synthetic

        with tempfile.TemporaryDirectory(prefix="cyclegan-synthetic-") as tmp:
            synthetic.generate(tmp, cfg.synthetic_size, cfg.synthetic_train, cfg.synthetic_test, cfg.seed)
            yield _open_local(Path(tmp), source, "synthetic")
        return
    if storage.is_remote(source):
        with storage.local_input(source) as local:
            yield _open_local(local, source, storage.scheme(source))   # "s3", "gs", ...
        return
    path = Path(source).expanduser()
    if path.exists():
        yield _open_local(path, source, "zip" if path.is_file() else "folder")
        return
    if source in DATASETS:
        yield _open_local(download(source, cfg, progress), source, "download")
        return
    hint = "" if ("/" in source or "." in source) else f"; known dataset names: {', '.join(DATASETS)}"
    raise UserError(f"prepare source {source!r}: no such file or folder, and not 'synthetic', "
                    f"an object-storage address (s3://, gs://, ...) or a dataset name{hint}")


# -- downloads ---------------------------------------------------------------------------------

def zip_ok(path: Path) -> bool:
    """Whether ``path`` is a complete zip archive whose members all pass their CRC check."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def download(name: str, cfg: PrepareConfig, progress: bool = True) -> Path:
    """``NAME.zip`` from ``cfg.base_url`` into the cache; returns the cached archive.

    The bytes stream into ``NAME.zip.part`` (resumed with an HTTP Range request after a cut,
    in this run or a later one); only an archive that opens and passes its CRC checks is
    renamed to ``NAME.zip``. A failed download raises a UserError and leaves no archive.
    """
    cache = Path(cfg.cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{name}.zip"
    if target.exists():
        if zip_ok(target):
            return target
        target.unlink()
    url = f"{cfg.base_url.rstrip('/')}/{name}.zip"
    part = target.with_name(target.name + ".part")
    fetch(url, part, progress=progress, desc=name)
    if not zip_ok(part):
        part.unlink(missing_ok=True)
        raise UserError(f"{url}: the download is not a valid zip archive (removed; run again to retry)")
    os.replace(part, target)
    return target


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(match.group(1)) if match else None


def fetch(url: str, part: Path, progress: bool = True, desc: str = "") -> None:
    """Stream ``url`` into ``part``, resuming from its current size; retries transient errors."""
    from tqdm import tqdm

    last: Exception | None = None
    for attempt in range(DOWNLOAD_ATTEMPTS):
        if attempt:
            time.sleep(min(DOWNLOAD_BACKOFF_S * 2 ** (attempt - 1), 10.0))
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "cyclegan-pipeline"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=DOWNLOAD_TIMEOUT_S) as response:
                length = response.headers.get("Content-Length")
                if have and response.status == 206 and _content_range_start(response.headers.get("Content-Range")) == have:
                    mode = "ab"
                else:  # a full response: start over
                    mode, have = "wb", 0
                total = have + int(length) if length is not None else None
                with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                 unit_divisor=1024, desc=desc or url, disable=not progress,
                                                 leave=False) as bar:
                    while chunk := response.read(CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
            size = part.stat().st_size
            if total is not None and size != total:
                raise http.client.IncompleteRead(b"", total - size)
            return
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to send: the .part may already be whole
                if zip_ok(part):
                    return
                part.unlink(missing_ok=True)
                last = e
                continue
            if e.code < 500 and e.code not in (408, 429):
                raise UserError(f"{url}: download failed: HTTP {e.code} {e.reason}") from None
            last = e
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            last = e
    raise UserError(f"{url}: download failed after {DOWNLOAD_ATTEMPTS} attempts ({type(last).__name__}: {last}); "
                    f"the partial file {part} is kept and the next run resumes it")


# -- layouts -----------------------------------------------------------------------------------

@dataclass
class Item:
    domain: str        # A | B
    part: str          # train | test | all (no test split: split by content hash)
    source: str        # path in the source
    rel: str           # path inside the domain part (keeps nesting)


def is_candidate(rel: str) -> bool:
    """Files decoded as images: known image extensions (any case), or no extension."""
    suffix = posixpath.splitext(rel)[1].lower()
    return suffix in IMAGE_EXTENSIONS or suffix == ""


def _base(files: list[str]) -> str:
    """Skip wrapper folders: descend while there is exactly one folder and no image beside it."""
    known = {"traina", "trainb", "testa", "testb", "train", "test", "a", "b"}
    base = ""
    while True:
        rests = [f[len(base):] for f in files if f.startswith(base)]
        dirs = {r.split("/", 1)[0] for r in rests if "/" in r}
        loose = [r for r in rests if "/" not in r and is_candidate(r)]
        if len(dirs) != 1 or loose or next(iter(dirs)).lower() in known:
            return base
        base += next(iter(dirs)) + "/"


def _subdirs(files: list[str], base: str) -> dict[str, str]:
    """Lower-case name -> actual name of the folders directly under ``base``."""
    names: dict[str, str] = {}
    for f in files:
        if f.startswith(base) and "/" in f[len(base):]:
            name = f[len(base):].split("/", 1)[0]
            names.setdefault(name.lower(), name)
    return names


def _under(files: list[str], folder: str) -> list[tuple[str, str]]:
    prefix = folder.rstrip("/") + "/"
    return [(f, f[len(prefix):]) for f in files if f.startswith(prefix)]


def detect(files: list[str]) -> tuple[str, dict[tuple[str, str], str]] | None:
    """Recognise a common layout; returns (description, {(domain, part): folder}) or None."""
    base = _base(files)
    top = _subdirs(files, base)

    def sub(*names: str) -> dict[str, str]:
        return _subdirs(files, base + "/".join(names) + "/")

    if "traina" in top and "trainb" in top:
        folders = {("A", "train"): top["traina"], ("B", "train"): top["trainb"]}
        for d in "AB":
            if f"test{d.lower()}" in top:
                folders[(d, "test")] = top[f"test{d.lower()}"]
        desc = "trainA/trainB" + ("/testA/testB" if len(folders) == 4 else "")
    elif "train" in top and {"a", "b"} <= set(sub(top["train"])):
        train = sub(top["train"])
        folders = {(d, "train"): f"{top['train']}/{train[d.lower()]}" for d in "AB"}
        test = sub(top["test"]) if "test" in top else {}
        for d in "AB":
            if d.lower() in test:
                folders[(d, "test")] = f"{top['test']}/{test[d.lower()]}"
        desc = "train/{A,B}" + (" + test/{A,B}" if test else "")
    elif "a" in top and "b" in top:
        folders, desc = {}, "A/B"
        for d in "AB":
            inner = sub(top[d.lower()])
            if "train" in inner:
                folders[(d, "train")] = f"{top[d.lower()]}/{inner['train']}"
                if "test" in inner:
                    folders[(d, "test")] = f"{top[d.lower()]}/{inner['test']}"
                desc = "{A,B}/{train,test}"
            else:
                folders[(d, "all")] = top[d.lower()]
    else:
        return None
    return desc, {key: base + folder for key, folder in folders.items()}


_GLOB = re.compile(r"[*?\[]")


def _glob_regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1:j]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def match(files: list[str], pattern: str) -> list[tuple[str, str]]:
    """Files selected by a folder or glob ``pattern`` as (path, path inside the selection).

    A plain folder selects everything under it. A glob selects the files it matches and
    everything under the folders it matches; paths inside the selection are relative to the
    pattern's longest folder prefix without wildcards, so nesting is kept.
    """
    pattern = pattern.strip().strip("/").replace("\\", "/")
    if not _GLOB.search(pattern):
        return _under(files, pattern)
    parts = pattern.split("/")
    fixed = []
    for part in parts:
        if _GLOB.search(part):
            break
        fixed.append(part)
    prefix = "/".join(fixed) + "/" if fixed else ""
    regex = _glob_regex(pattern)
    selected = []
    for f in files:
        if not f.startswith(prefix):
            continue
        pieces = f.split("/")
        if any(regex.match("/".join(pieces[:k])) for k in range(1, len(pieces) + 1)):
            selected.append((f, f[len(prefix):]))
    return selected


def assign(source: Source, cfg: PrepareConfig) -> tuple[str, list[Item]]:
    """Which files are domain A and B, train or test: (layout description, items)."""
    files = source.files
    explicit = {("A", "train"): cfg.domain_a, ("B", "train"): cfg.domain_b,
                ("A", "test"): cfg.test_a, ("B", "test"): cfg.test_b}
    if cfg.domain_a or cfg.domain_b:
        if not (cfg.domain_a and cfg.domain_b):
            raise UserError("prepare.domain_a and prepare.domain_b: name both domains, or neither to detect the layout")
        selections: dict[tuple[str, str], list[tuple[str, str]]] = {}
        base = _base(files)
        for (domain, part), pattern in explicit.items():
            if not pattern:
                continue
            chosen = match(files, pattern) or (match(files, base + pattern) if base else [])
            if not chosen:
                key = {"train": "domain_", "test": "test_"}[part] + domain.lower()
                raise UserError(f"prepare.{key}: {pattern!r} matches no files in {source.name}")
            selections[(domain, part)] = chosen
        items = []
        for domain in "AB":
            test = selections.get((domain, "test"), [])
            test_paths = {f for f, _ in test}
            train_part = "train" if test else "all"
            items += [Item(domain, "test", f, rel) for f, rel in test]
            items += [Item(domain, train_part, f, rel) for f, rel in selections[(domain, "train")] if f not in test_paths]
        layout = "domain_a/domain_b" + ("/test_a/test_b" if cfg.test_a or cfg.test_b else "")
    else:
        found = detect(files)
        if found is None:
            folders = sorted(_subdirs(files, _base(files)).values())
            raise UserError(f"{source.name}: cannot detect the layout (folders found: {', '.join(folders) or 'none'}); "
                            "expected trainA/trainB[/testA/testB], train/{A,B}, A/B or {A,B}/{train,test}, "
                            "or name the domains with --set prepare.domain_a=FOLDER_OR_GLOB prepare.domain_b=...")
        layout, folders = found
        items = []
        for (domain, part), folder in sorted(folders.items()):
            has_test = (domain, "test") in folders
            p = "all" if part == "train" and not has_test else part
            items += [Item(domain, p, f, rel) for f, rel in _under(files, folder)]
    owners: dict[str, str] = {}
    for item in items:
        other = owners.setdefault(item.source, item.domain)
        if other != item.domain:
            raise UserError(f"{source.name}: {item.source} is selected for both domains; "
                            "make prepare.domain_a and prepare.domain_b disjoint")
    return layout, items
