"""hpo's modules import one way: no import circle, not even one hidden in a function-level
import (a ``TYPE_CHECKING`` block is not an import at run time), and the layers of the README's
map hold: the training package knows nothing of Optuna, the sampler nothing of PyTorch, and
what reads a study (report, dashboard, migrate, record) never imports the training code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hpo"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """The hpo modules and the top-level packages ``path`` imports anywhere in its code
    (function bodies too), leaving out ``if TYPE_CHECKING:`` blocks."""
    names: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            names.update(a.name for a in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module and not node.level:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return {n for n in names if n in modules}, {n.split(".")[0] for n in names}


def _graph() -> dict[str, set[str]]:
    """Module -> the hpo modules it imports; a module's own parent packages are left out
    (Python imports them first anyway: a submodule never closes a circle with them)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = _imports(path, modules)[0] - parents - {name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                circles.append(sorted([v, *group]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_no_import_circle_even_through_function_level_imports() -> None:
    graph = _graph()
    assert len(graph) > 40 and "hpo.record" in graph["hpo.runner"]
    assert _circles(graph) == []


def test_the_checker_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# loaded only when asked for: `hpo report --tensorboard` writes event files with torch's writer
OPT_IN_TORCH = {"hpo.report.tensorboard"}


@pytest.mark.parametrize(("where", "never"), [
    ("hpo.training", {"optuna", "hpo.sampler", "hpo.report", "hpo.runner", "hpo.objective"}),
    ("hpo.sampler", {"torch", "timm", "torchvision", "hpo.training", "hpo.report"}),
    # the report draws a trial's planned lr from the recipe's own (torch-free) schedule code
    ("hpo.report", {"torch", "timm", "torchvision", "hpo.training.trainer", "hpo.objective",
                    "hpo.runner", "hpo.data", "hpo.models"}),
    ("hpo.record", {"torch", "hpo.config", "hpo.sampler", "hpo.report", "hpo.storage"}),
])
def test_layers_import_one_way(where: str, never: set[str]) -> None:
    modules = _modules()
    for name, path in modules.items():
        if name in OPT_IN_TORCH:
            continue
        if name == where or name.startswith(where + "."):
            hpo_modules, packages = _imports(path, modules)
            reached = hpo_modules | packages
            bad = {n for n in reached for m in never if n == m or n.startswith(m + ".")}
            assert not bad, f"{name} imports {sorted(bad)}"
