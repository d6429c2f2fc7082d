"""The layers of selfish_lib, read from the source with ``ast`` (nothing is imported):

- the import graph (module-level imports, imports inside functions, relative imports)
  has no circle;
- dependencies point down: report -> study -> engine; no engine module imports a study
  or report module, and no study module imports a report module;
- an import inside a function body is only for a heavy optional dependency (the
  ``DEFERRABLE`` list) and says why, in a comment on its line or the line above (a run of
  consecutive imports shares one comment);
- the package docstring maps every module, one line each.

The scanner is checked on small synthetic packages first, so a planted violation is
known to fail.
"""

from __future__ import annotations

import ast
import io
import re
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "selfish_lib"
LAYERS = ("engine", "study", "report")  # bottom to top: a layer imports only those before it
# Dependencies heavy enough, and needed by few enough code paths, to import on first use.
DEFERRABLE = frozenset(
    {"IPython", "ipywidgets", "jinja2", "jupytext", "nbconvert", "nbformat", "papermill"}
    | {"sklearn"}
    | {"ray"}  # optional (the ray extra): imported only by executor='ray'
    | {"elotl"}  # the corpora of a real second language: imported only to load one
)


@dataclass(frozen=True)
class Import:
    """One import statement's target, as the scanner resolved it."""

    target: str  # absolute dotted name: a module of the package, or an external module
    line: int
    in_function: bool
    relative: bool
    internal: bool  # a module of the scanned package


@dataclass
class Module:
    name: str  # dotted, e.g. selfish_lib.report.pipeline
    path: Path
    is_package: bool
    imports: list[Import] = field(default_factory=list)
    comment_lines: set[int] = field(default_factory=set)
    import_lines: dict[int, int] = field(default_factory=dict)  # first line -> last line


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module below ``root`` (the folder of ``package``), by dotted name."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package, *parts])] = path
    return names


def _resolve(module: Module, node: ast.ImportFrom, known: set[str]) -> list[str]:
    """The absolute targets of a ``from ... import ...`` (relative or not)."""
    if node.level:
        base = module.name.split(".")
        if not module.is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    targets = []
    for alias in node.names:
        sub = f"{prefix}.{alias.name}"
        targets.append(sub if sub in known else prefix)
    return list(dict.fromkeys(targets))


def _scan_module(name: str, path: Path, known: set[str]) -> Module:
    source = path.read_text()
    module = Module(name, path, path.name == "__init__.py")
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    module.comment_lines = {t.start[0] for t in tokens if t.type == tokenize.COMMENT}
    package = name.split(".")[0]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                module.import_lines[child.lineno] = child.end_lineno or child.lineno
                if isinstance(child, ast.Import):
                    targets = [alias.name for alias in child.names]
                else:
                    targets = _resolve(module, child, known)
                relative = isinstance(child, ast.ImportFrom) and child.level > 0
                for target in targets:
                    internal = target.split(".")[0] == package
                    module.imports.append(
                        Import(target, child.lineno, in_function, relative, internal)
                    )
            visit(child, inside)

    visit(ast.parse(source), False)
    return module


def scan_package(root: Path, package: str | None = None) -> dict[str, Module]:
    """Every module of the package in ``root``, with its imports resolved."""
    package = package or root.name
    names = module_names(root, package)
    return {name: _scan_module(name, path, set(names)) for name, path in names.items()}


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """module -> the modules of the package it imports (anywhere in its body)."""
    graph = {name: set() for name in modules}
    for name, module in modules.items():
        for imp in module.imports:
            target = imp.target
            while target not in modules and "." in target:  # `import pkg.mod.Name` style
                target = target.rsplit(".", 1)[0]
            if imp.internal and target in modules and target != name:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for every import that points up a layer (or sideways into a higher one)."""
    bad = []
    for name, targets in sorted(graph.items()):
        low = layer_of(name)
        for target in sorted(targets):
            high = layer_of(target)
            if low and high and LAYERS.index(high) > LAYERS.index(low):
                bad.append(f"{name} -> {target}")
    return bad


def _explained(module: Module, line: int, seen: set[int] | None = None) -> bool:
    """A comment on the import's line(s) or on the line above; an import directly above
    that is itself explained carries its comment down (one comment for a run of imports)."""
    end = module.import_lines.get(line, line)
    if any(n in module.comment_lines for n in range(line, end + 1)):
        return True
    above = line - 1
    if above in module.comment_lines:
        return True
    starts = [start for start, stop in module.import_lines.items() if stop == above]
    return bool(starts) and _explained(module, starts[0])


def function_import_violations(modules: dict[str, Module]) -> list[str]:
    """'path:line target (why)' for every import in a function that breaks the rule."""
    bad = []
    for module in modules.values():
        for imp in module.imports:
            if not imp.in_function:
                continue
            where = f"{module.path.name}:{imp.line} {imp.target}"
            top = imp.target.split(".")[0]
            if imp.relative or imp.internal or top not in DEFERRABLE:
                bad.append(f"{where} (not a heavy optional dependency: import it at the top)")
            elif not _explained(module, imp.line):
                bad.append(f"{where} (deferred without a comment saying why)")
    return bad


# --- the scanner on synthetic packages -------------------------------------------------------


def make_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            (root / parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(text))
    return root


CLEAN = {
    "engine/base.py": "import math\n",
    "engine/model.py": "from . import base\nfrom .base import math\n",
    "study/chapter.py": "from ..engine import model\nfrom pkg.engine.base import math\n",
    "report/view.py": """\
        from ..study.chapter import model
        from . import other


        def render():
            # nbconvert is slow to import and only needed to render
            import nbconvert
            from nbconvert import HTMLExporter

            import jinja2  # templates, only to render
            return nbconvert, HTMLExporter, jinja2
        """,
    "report/other.py": "import json\n",
}


def test_the_scanner_resolves_relative_absolute_and_function_imports(tmp_path):
    modules = scan_package(make_package(tmp_path / "pkg", CLEAN))
    graph = import_graph(modules)
    assert graph["pkg.engine.model"] == {"pkg.engine.base"}
    assert graph["pkg.study.chapter"] == {"pkg.engine.model", "pkg.engine.base"}
    assert graph["pkg.report.view"] == {"pkg.study.chapter", "pkg.report.other"}
    deferred = [i.target for i in modules["pkg.report.view"].imports if i.in_function]
    assert deferred == ["nbconvert", "nbconvert", "jinja2"]
    assert find_cycle(graph) is None
    assert layer_violations(graph) == []
    assert function_import_violations(modules) == []


@pytest.mark.parametrize(
    ("planted", "check", "expected"),
    [
        ({"engine/base.py": "from ..study import chapter\n"}, "cycle", "pkg.study.chapter"),
        ({"engine/late.py": "def f():\n    from ..report import view\n"}, "layer", "late"),
        ({"study/peek.py": "from pkg.report.other import json\n"}, "layer", "peek"),
        ({"report/lazy.py": "def f():\n    from . import other\n"}, "function", "lazy.py:2"),
        ({"report/lazy.py": "def f():\n    import json  # fast\n"}, "function", "lazy.py:2"),
        (
            {"report/lazy.py": "def f():\n    x = 1\n    import papermill\n"},
            "function",
            "without a comment",
        ),
        (
            {"report/lazy.py": "class A:\n    def f(self):\n        import torch\n"},
            "function",
            "heavy optional",
        ),
    ],
)
def test_the_scanner_catches_a_planted_violation(tmp_path, planted, check, expected):
    modules = scan_package(make_package(tmp_path / "pkg", {**CLEAN, **planted}))
    graph = import_graph(modules)
    if check == "cycle":
        cycle = find_cycle(graph)
        assert cycle is not None and cycle[0] == cycle[-1] and expected in cycle, cycle
    elif check == "layer":
        assert any(expected in v for v in layer_violations(graph)), layer_violations(graph)
    else:
        found = function_import_violations(modules)
        assert any(expected in v for v in found), found
    assert check == "cycle" or find_cycle(graph) is None


# --- selfish_lib ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def library() -> dict[str, Module]:
    return scan_package(PACKAGE_DIR)


def test_every_module_belongs_to_a_layer(library):
    outside = [n for n in library if n != "selfish_lib" and layer_of(n) is None]
    assert outside == []
    assert {layer_of(n) for n in library} - {None} == set(LAYERS)


def test_the_library_has_no_import_circle(library):
    assert find_cycle(import_graph(library)) is None


def test_dependencies_point_down_the_layers(library):
    assert layer_violations(import_graph(library)) == []


def test_function_bodies_import_only_deferred_heavy_dependencies_and_say_why(library):
    assert function_import_violations(library) == []


def test_the_package_docstring_maps_every_module_one_line_each():
    doc = ast.get_docstring(ast.parse((PACKAGE_DIR / "__init__.py").read_text())) or ""
    listed = re.findall(r"^\s*((?:engine|study|report)\.[\w.]+)\s+\S", doc, flags=re.MULTILINE)
    names = module_names(PACKAGE_DIR, "selfish_lib")
    expected = sorted(n.split(".", 1)[1] for n in names if layer_of(n) and n.count(".") > 1)
    assert sorted(listed) == expected
    for layer in LAYERS:  # each layer has its heading line
        assert re.search(rf"^{layer}: \S", doc, flags=re.MULTILINE), layer
