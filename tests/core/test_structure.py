"""The architecture as rules the code must keep (read from the source with ``ast``, every import
statement counted, function-level ones included):

  * the library (``training``) imports nothing of ``serving``, ``pipeline`` or ``components``;
  * ``serving`` imports neither torch nor the training library (the serve image has neither);
  * no import cycle between the project's modules;
  * the file names of a run, an evaluation and an export are spelled only in ``training/layout.py``.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGES = ("training", "serving", "components", "pipeline")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from package import module` imports the module too
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path) for name, path in modules.items()}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_library_imports_no_outer_package(graph):
    offenders = sorted(f"{m} imports {i}" for m, imports in graph.items() if _top(m) == "training"
                       for i in imports if _top(i) in ("serving", "pipeline", "components"))
    assert not offenders, offenders


def test_serving_imports_neither_torch_nor_the_library(graph):
    offenders = sorted(f"{m} imports {i}" for m, imports in graph.items() if _top(m) == "serving"
                       for i in imports if _top(i) in ("torch", "torchvision", "training"))
    assert not offenders, offenders


def test_no_two_modules_import_each_other(graph):
    """No cycle at all in the module graph (a mutual import is the shortest cycle)."""
    modules = set(graph)
    edges = {m: {i for i in imports if i in modules and i != m} for m, imports in graph.items()}
    # a package's __init__ is imported with its modules: edges to it from its own children are not
    # cycles in practice, but the rule is simplest kept strict
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_the_walk_sees_what_it_must(graph):
    """The rules above are only as good as the walk: it must see relative, nested and
    function-level imports."""
    assert "training.models.registry" in graph["training.config"]            # relative, module level
    assert "training.engine.mirror" in graph["training.commands.train"]     # inside a function
    assert "torch" in graph["training.models.layers"]
    assert "training.mlops.tracking" in graph["training.commands.track"]    # from ..mlops import tracking


LAYOUT_NAMES = ("latest.pt", "train_log.csv", "mlflow_run_id", "G_AtoB.onnx", "G_BtoA.onnx", "metrics.json",
                "eval_info.json", "verify.json", "decision.json", "generators.pt", "selected.pt", "selection.json")


def test_run_file_names_live_only_in_the_layout_module():
    layout = ROOT / "training" / "layout.py"
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path == layout:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for name in LAYOUT_NAMES:
                    if re.search(rf"(?<![\w.]){re.escape(name)}", line):
                        found.append(f"{path.relative_to(ROOT)}:{number}: {name}")
    assert not found, found
    # and the layout module is where they come from
    from training.layout import Evaluation, Export, Registration, Selection, TrainRun

    run, evaluation, export, selection = TrainRun("r"), Evaluation("e"), Export("x"), Selection("s")
    defined = {run.latest.name, run.log.name, run.run_id.name, *(p.name for p in export.onnx_pair()),
               evaluation.metrics.name, evaluation.info.name, export.verify.name, Registration("g").decision.name,
               Export.GENERATORS, selection.checkpoint.name, selection.scores.name}
    assert defined == set(LAYOUT_NAMES)
