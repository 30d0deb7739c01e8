"""Hand this machine's pip settings to a container build, so that pip inside the build installs
from the same places as the pip that built the project's virtual environment.

    python docker/pip_mirror.py OUTDIR
        writes OUTDIR/pip.conf and prints one ``--volume=HOST:CONTAINER:ro`` per line

Here the package index is reached through settings that exist only on the host: a CA bundle
holding the egress proxy's certificate, local PEP 503 indexes (``file:///opt/pypi/simple``, where
the CUDA torch wheel lies) and a find-links folder. This reads pip's effective configuration
(``pip config list``: config files and PIP_* variables, the variables winning as they do for
pip), and rewrites every local path under PREFIX (``/tmp/pip-host``) in the container. The
build mounts the written pip.conf and each local path there read-only, and points the
Dockerfile's PIP_CONFIG_FILE build argument at the pip.conf. Keeping every mount point below
one folder in /tmp means the images keep at most a few empty folders from it, and the settings
never reach an image's environment.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

PREFIX = "/tmp/pip-host"
# Options whose values are local files or folders (whitespace-separated lists in pip.conf).
PATH_OPTIONS = {"cert", "client-cert", "constraint", "requirement", "find-links", "index-url", "extra-index-url"}
# Options that describe the host's pip invocation rather than where packages come from.
SKIPPED = {"config-file"}
ENV = ":env:"


def parse_config_list(text: str) -> list[tuple[str, str, str]]:
    """``pip config list`` lines (``section.key='value'``, env as ``:env:.key``) ->
    (section, key, value), in pip's order."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, literal = line.partition("=")
        section, dot, key = name.rpartition(".")
        if not sep or not dot:
            raise ValueError(f"unexpected `pip config list` line: {line!r}")
        entries.append((section, key, str(ast.literal_eval(literal))))
    return entries


def effective(entries: list[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    """section -> key -> value as pip applies them: a PIP_* variable overrides the same option
    in every config-file section, so it goes to [global] and the file values are dropped."""
    env = {key: value for section, key, value in entries if section == ENV and key not in SKIPPED}
    sections: dict[str, dict[str, str]] = {}
    for section, key, value in entries:
        if section != ENV and key not in env and key not in SKIPPED:
            sections.setdefault(section, {})[key] = value
    sections.setdefault("global", {}).update(env)
    return sections


def _local_path(item: str, key: str) -> str | None:
    """The host path an option value refers to, or None for a remote URL."""
    if item.startswith("file://"):
        return unquote(urlparse(item).path)
    if "://" in item:
        return None
    if key in ("index-url", "extra-index-url"):
        return None
    return item


def _mount_source(path: str, key: str) -> str:
    # A PEP 503 tree keeps its files beside simple/ (links like ../../files/x.whl), so mount
    # the folder holding simple/, not simple/ alone.
    p = Path(path)
    if key in ("index-url", "extra-index-url") and p.name == "simple":
        return str(p.parent)
    return str(p)


def mirror(sections: dict[str, dict[str, str]], prefix: str = PREFIX) -> tuple[str, list[tuple[str, str]]]:
    """(pip.conf text with local paths under ``prefix``, [(host path, container path)])."""
    mounts: dict[str, str] = {}
    lines = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        for key, value in options.items():
            if key in PATH_OPTIONS:
                items = []
                for item in value.split():
                    local = _local_path(item, key)
                    if local is None:
                        items.append(item)
                        continue
                    source = _mount_source(local, key)
                    mounts[source] = prefix + source
                    items.append(("file://" + prefix + local) if item.startswith("file://") else prefix + local)
                value = " ".join(items)
            lines.append(f"{key} = {value}")
        lines.append("")
    return "\n".join(lines), list(mounts.items())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python docker/pip_mirror.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"pip_mirror: `pip config list` failed: {proc.stderr.strip()}", file=sys.stderr)
        return 1
    conf, mounts = mirror(effective(parse_config_list(proc.stdout)))
    for source, _ in mounts:
        if not Path(source).exists():
            print(f"pip_mirror: {source} (from pip's settings) does not exist", file=sys.stderr)
            return 1
    out.mkdir(parents=True, exist_ok=True)
    (out / "pip.conf").write_text(conf)
    print(f"--volume={out.resolve() / 'pip.conf'}:{PREFIX}/pip.conf:ro")
    for source, target in mounts:
        print(f"--volume={source}:{target}:ro")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
