"""The README and docs/ against the code they describe.

Docs rot where nobody runs them, so these tests read them the way a person would copy from
them: every `cyclegan` subcommand and every one of its flags is documented, every flag the
docs show for a `cyclegan X` command exists on X, every shell example parses, the metrics
table agrees with the metric spec, every params key, repository path and relative link the
docs name exists, and the README stays a short entry page.

Where a command is shown (what the checks read):
  * inline code spans, anywhere (tables included);
  * shell blocks (```bash / sh / console): one command per line, `\\` continues a line;
  * synopsis blocks (``` with no language): a line that starts with whitespace continues the
    line before it, as in a usage message.
"""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from helpers import ROOT
from training.cli import build_parser

README = ROOT / "README.md"
DOCS_DIR = ROOT / "docs"
PAGES = [README, *sorted(DOCS_DIR.glob("*.md"))]
README_MAX_LINES = 220

SHELL = {"bash", "sh", "console", "shell"}
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
SPAN = re.compile(r"`([^`\n]+)`")
# `cyclegan X` or `python -m training.cli X`: X is the word after it
COMMAND = re.compile(r"(?:^|(?<=[\s(\[]))(?:cyclegan|training\.cli)[ \t]+([A-Za-z][\w-]*)")
LONG_FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
COMMENT = re.compile(r"(?:^|\s)#\s.*$")
SHELL_OPERATORS = {"&&", "||", "|", ";", ">", "2>", "&"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def long_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


# the flags every subcommand gets from training/cli.py, documented once for all of them
COMMON_FLAGS = {"--help", "--params", "--set"}


# -- reading the pages --------------------------------------------------------------------------

def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1).lower(), m.group(2)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def logical_lines(lang: str, body: str) -> list[str]:
    if lang in SHELL:
        return [COMMENT.sub("", line) for line in re.sub(r"\\\n", " ", body).splitlines()]
    lines: list[str] = []
    for line in body.splitlines():
        line = COMMENT.sub("", line)
        if lines and line[:1] in (" ", "\t") and line.strip():
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


def command_segments(text: str) -> list[tuple[str, str, str]]:
    """(kind, word after `cyclegan`, the rest up to the next command) for every command shown
    in ``text``; kind is "shell" for lines of shell blocks, else "text"."""
    pieces = [("text", span) for span in SPAN.findall(prose(text))]
    for lang, body in blocks(text):
        if lang in SHELL or lang == "":
            pieces += [("shell" if lang in SHELL else "text", line) for line in logical_lines(lang, body)]
    found = []
    for kind, piece in pieces:
        matches = list(COMMAND.finditer(piece))
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(piece)
            found.append((kind, m.group(1), piece[m.end():end]))
    return found


def all_segments() -> list[tuple[Path, str, str, str]]:
    return [(page, kind, word, rest) for page in PAGES for kind, word, rest in command_segments(page.read_text())]


# -- the CLI ------------------------------------------------------------------------------------

def test_every_subcommand_is_in_the_readme_and_every_flag_is_documented():
    commands = subcommands()
    readme_words = {word for _, word, _ in command_segments(README.read_text())}
    missing_commands = sorted(set(commands) - readme_words)
    assert not missing_commands, f"README.md lacks `cyclegan X` for {missing_commands}"

    shown: dict[str, set[str]] = {name: set() for name in commands}
    for _, _, word, rest in all_segments():
        if word in shown:
            shown[word] |= set(LONG_FLAG.findall(rest))
    everything = "\n".join(page.read_text() for page in PAGES)
    undocumented = [f"cyclegan {name} {flag}" for name, parser in commands.items()
                    for flag in sorted(long_flags(parser) - COMMON_FLAGS) if flag not in shown[name]]
    assert not undocumented, ("flags no page shows after their `cyclegan X` (in a code span, a shell "
                              f"line or a synopsis): {undocumented}")
    assert all(flag in everything for flag in COMMON_FLAGS - {"--help"})


def test_every_documented_command_and_flag_exists():
    commands = subcommands()
    problems = []
    for page, _, word, rest in all_segments():
        if word.isupper():                        # a placeholder: `cyclegan COMMAND --help`
            continue
        if word not in commands:
            problems.append(f"{rel(page)}: `cyclegan {word}` is not a subcommand")
            continue
        for flag in LONG_FLAG.findall(rest):
            if flag not in long_flags(commands[word]):
                problems.append(f"{rel(page)}: `cyclegan {word}` has no {flag}")
    assert not problems, "\n".join(problems)


def test_every_shell_example_parses():
    parser = build_parser()
    checked, problems = 0, []
    for page, kind, word, rest in all_segments():
        if kind != "shell":
            continue
        argv = [word]
        for token in shlex.split(rest):
            if token in SHELL_OPERATORS:
                break
            argv.append(token)
        checked += 1
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            problems.append(f"{rel(page)}: `cyclegan {' '.join(argv)}` does not parse")
            continue
        if not callable(getattr(args, "_run", None)):
            problems.append(f"{rel(page)}: `cyclegan {' '.join(argv)}` names no command")
    assert checked >= 20, f"only {checked} shell examples found: is the block syntax still ```bash?"
    assert not problems, "\n".join(problems)


def test_the_reader_sees_an_unknown_flag_and_an_unknown_command():
    """The checks above catch what they claim to: a stale flag, a removed subcommand, and a
    shell example that does not parse."""
    stale = "Log it with `cyclegan register --log-train`, or run:\n\n```bash\ncyclegan regster --model x\n```\n"
    segments = command_segments(stale)
    assert ("text", "register", " --log-train") in segments
    assert ("shell", "regster", " --model x") in segments
    assert "--log-train" not in long_flags(subcommands()["register"])
    assert "regster" not in subcommands()


# -- the metrics table --------------------------------------------------------------------------

def table_rows(text: str, must_have: set[str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first Markdown table whose header holds ``must_have``; cells keep
    escaped pipes (`\\|`)."""
    lines = prose(text).splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if line.startswith("|") and must_have <= set(cells):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))])
            return cells, rows
    raise AssertionError(f"no table with columns {sorted(must_have)}")


def test_metrics_table_matches_the_spec():
    from training.evaluation.specs import METRICS

    header, rows = table_rows((DOCS_DIR / "evaluation.md").read_text(), {"name", "better", "baseline", "gate"})
    col = {name: header.index(name) for name in ("name", "better", "baseline", "gate")}
    seen, problems = [], []
    for row in rows:
        m = re.fullmatch(r"`(\w+)`", row[col["name"]])
        assert m, f"docs/evaluation.md: a metrics row must name one metric in backticks: {row[0]!r}"
        name = m.group(1)
        seen.append(name)
        spec = METRICS.get(name)
        if spec is None:
            problems.append(f"{name}: not in training/evaluation/specs.py")
            continue
        better = {"higher": "higher", "lower": "lower", None: "—"}[spec.better]
        if row[col["better"]] != better:
            problems.append(f"{name}: better is {row[col['better']]!r}, the spec says {better!r}")
        if (row[col["baseline"]] == "✓") != spec.baseline:
            problems.append(f"{name}: baseline mark {row[col['baseline']]!r}, the spec says {spec.baseline}")
        gate = row[col["gate"]]
        expected = [f"`{key}`" for key in (spec.margin, spec.floor) if key]
        if any(key not in gate for key in expected) or (not expected and gate) or \
                ("(default)" in gate) != spec.gate:
            problems.append(f"{name}: gate cell {gate!r}, the spec says margin {spec.margin}, floor {spec.floor}, "
                            f"default {spec.gate}")
    problems += [f"{n}: listed twice" for n in sorted({n for n in seen if seen.count(n) > 1})]
    problems += [f"{n}: missing from the table" for n in METRICS if n not in seen]
    assert not problems, "docs/evaluation.md's metrics table against the spec:\n" + "\n".join(problems)


# -- params keys, paths, links --------------------------------------------------------------------

SECTIONS = ("prepare", "data", "model", "train", "evaluate", "export", "register", "serve")
PARAMS_KEY = re.compile(r"(?<![\w./-])(" + "|".join(SECTIONS) + r")\.([a-z_][A-Za-z0-9_]*)(?![\w.])")
FILE_SUFFIXES = {"py", "md", "yaml", "json", "csv", "pt", "pth", "onnx", "zip", "png", "html", "txt", "db", "toml"}
REPO_PATH = re.compile(r"(?<![\w./:-])((?:training|serving|components|pipeline|bench|docker|profiles|tests|docs)"
                       r"/[\w./*-]*)")


def code_text(text: str) -> list[str]:
    """Everything a reader would copy: inline spans and the lines of fenced blocks."""
    return SPAN.findall(prose(text)) + [body for _, body in blocks(text)]


def test_every_params_key_the_docs_name_exists():
    from serving.config import ServeConfig
    from training.config import Config

    known = {section: set(values) for section, values in Config().to_dict().items() if section != "serve"}
    known["serve"] = set(ServeConfig.model_fields)
    problems = set()
    for page in PAGES:
        for code in code_text(page.read_text()):
            # an error message quoted in the docs may name a bad key on purpose
            code = "\n".join(line for line in code.splitlines() if "error:" not in line)
            for section, key in PARAMS_KEY.findall(code):
                if key not in FILE_SUFFIXES and key not in known[section]:
                    problems.add(f"{rel(page)}: {section}.{key} is not a params key")
    assert not problems, "\n".join(sorted(problems))


def test_every_repository_path_the_docs_name_exists():
    problems = set()
    for page in PAGES:
        for code in code_text(page.read_text()):
            for path in REPO_PATH.findall(code):
                path = path.rstrip(".")
                if not (any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()):
                    problems.add(f"{rel(page)}: {path} does not exist")
    assert not problems, "\n".join(sorted(problems))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, counts = set(), {}
    for line in prose(page.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            base = slug(m.group(1))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def test_every_relative_link_points_at_something_that_exists():
    problems, checked = [], 0
    for page in PAGES:
        text = SPAN.sub("", prose(page.read_text()))
        for target in LINK.findall(text):
            if re.match(r"[a-z][\w+.-]*:", target):          # https:, mailto:, ...
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if ROOT.resolve() not in resolved.parents and resolved != ROOT.resolve():
                problems.append(f"{rel(page)}: {target} leaves the repository")
            elif not resolved.exists():
                problems.append(f"{rel(page)}: {target} does not exist")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{rel(page)}: {target}: no heading with that anchor")
    assert checked >= 20, f"only {checked} relative links found"
    assert not problems, "\n".join(problems)


def test_link_checks_see_a_missing_file_and_a_missing_anchor():
    assert slug("Pretrained generators: `cyclegan import`") == "pretrained-generators-cyclegan-import"
    assert slug("MLflow: one run per pipeline run") == "mlflow-one-run-per-pipeline-run"
    assert "nowhere.md" in LINK.findall("see [x](nowhere.md) and [y](https://example.com)")
    assert "no-such-heading" not in anchors(DOCS_DIR / "mlops.md")
    assert "promotion-and-rollback" in anchors(DOCS_DIR / "mlops.md")


def test_code_spans_stay_on_one_line():
    """The checks above read inline code spans line by line; a span broken over two lines would
    pair the wrong backticks and hide what follows."""
    broken = [f"{rel(page)}: {line.strip()[:80]}" for page in PAGES
              for line in prose(page.read_text()).splitlines() if line.count("`") % 2]
    assert not broken, "\n".join(broken)


# -- the README as an entry page ------------------------------------------------------------------

def test_readme_is_short_and_carries_no_section_owners():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    for page in PAGES:
        text = page.read_text()
        assert "owner:" not in text and "<!-- section:" not in text, f"{rel(page)} has section owner markers"


def test_readme_code_map_covers_the_training_package_map():
    import training

    readme = README.read_text()
    missing = []
    for line in training.__doc__.splitlines():
        m = re.match(r"  (\S.*?)\s{2,}\S", line)
        if m:
            missing += [f"training/{name.strip()}" for name in m.group(1).split(",")
                        if f"`training/{name.strip()}`" not in readme]
    assert not missing, f"README.md's code map lacks {missing} (training/__init__.py maps them)"


def test_readme_links_every_docs_page():
    pages = sorted(DOCS_DIR.glob("*.md"))
    assert len(pages) >= 7
    readme = README.read_text()
    unlinked = [rel(p) for p in pages if f"({rel(p)})" not in readme]
    assert not unlinked, f"README.md's 'where to go next' lacks {unlinked}"
