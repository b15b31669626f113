"""Architecture rules, read from the source: widgets -> workflow -> mrml -> core, threads only in core/jobs.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from Testing.conftest import MODULE_DIR, REPO

LIB = MODULE_DIR / "MedAnnotAssistLib"
WEB = REPO / "Web" / "medannotassist_web"  # the browser annotator: workflow (and mrml, core) only, never Qt
WEB_FORBIDDEN = ({"qt", "ctk", "PythonQt", "PySide6", "MedAnnotAssist"}, {"widgets", "cli"})
SLICER_ONLY_IN_APP = (
    "slicer.app",
    "slicer.modules",
    "slicer.util",
    "slicer.mrmlScene",
    "slicer.ScriptedLoadableModule",
    "slicer.parameterNodeWrapper",
    "slicer.qMRML",
    "slicer.i18n",
)

FORBIDDEN = {
    # layer: (top-level modules it must not import, relative sub-packages it must not import, attributes)
    "core": (
        {"slicer", "vtk", "vtkmodules", "qt", "ctk", "PythonQt", "MedAnnotAssist"},
        {"mrml", "workflow", "widgets"},
        (),
    ),
    "mrml": ({"qt", "ctk", "PythonQt", "MedAnnotAssist"}, {"workflow", "widgets"}, SLICER_ONLY_IN_APP),
    # the panel models: the scene only through mrml, no Qt, no application (Slicer's and trame's alike)
    "workflow": (
        {"slicer", "vtk", "vtkmodules", "qt", "ctk", "PythonQt", "MedAnnotAssist", "trame", "PySide6"},
        {"widgets", "cli"},
        SLICER_ONLY_IN_APP,
    ),
    "cli": ({"qt", "ctk", "PythonQt"}, {"widgets"}, SLICER_ONLY_IN_APP),
}


def _layer(relative: Path) -> str:
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(tree: ast.AST, relative: Path, root: str = "MedAnnotAssistLib"):
    """(absolute module name, line) for each import, relative imports resolved inside the package."""
    package = (root, *relative.parent.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                module = ".".join(base + ([node.module] if node.module else []))
                names = [f"{module}.{a.name}" for a in node.names] if not node.module else [module]
                for name in names:
                    yield name, node.lineno
            else:
                yield node.module, node.lineno
                for alias in node.names:
                    yield f"{node.module}.{alias.name}", node.lineno


def _attribute_chains(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            yield f"{node.value.id}.{node.attr}", node.lineno


def _sources():
    return sorted(LIB.rglob("*.py"))


def test_the_rules_see_every_layer():
    layers = {_layer(p.relative_to(LIB)) for p in _sources()}
    assert {"core", "mrml", "workflow", "widgets", "cli"} <= layers


def _violations(source: str, relative: Path) -> list[str]:
    layer = _layer(relative)
    if layer not in FORBIDDEN:
        return []
    modules, subpackages, attributes = FORBIDDEN[layer]
    tree = ast.parse(source)
    wrong = []
    for name, line in _imports(tree, relative):
        top = name.split(".")[0]
        inner = name.split(".")[1] if top == "MedAnnotAssistLib" and "." in name else None
        if top in modules or inner in subpackages or name.startswith(attributes):
            wrong.append(f"{relative}:{line} imports {name}")
    for chain, line in _attribute_chains(tree):
        if chain.startswith(attributes):
            wrong.append(f"{relative}:{line} uses {chain}")
    return wrong


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(LIB)))
def test_layer_imports(path):
    assert not _violations(path.read_text(), path.relative_to(LIB))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(LIB)))
def test_threads_only_in_core_jobs(path):
    if path.relative_to(LIB).as_posix() == "core/jobs.py":
        return
    tree = ast.parse(path.read_text())
    names = {name.split(".")[0] for name, _ in _imports(tree, path.relative_to(LIB))}
    assert not names & {"threading", "concurrent", "multiprocessing", "_thread"}, path


def _web_violations(source: str, relative: Path) -> list[str]:
    """The browser annotator binds the workflow models: no Qt, no Slicer widgets (their behaviour is in workflow)."""
    modules, subpackages = WEB_FORBIDDEN
    wrong = []
    for name, line in _imports(ast.parse(source), relative, "medannotassist_web"):
        parts = (name or "").split(".")
        inner = parts[1] if parts[0] == "MedAnnotAssistLib" and len(parts) > 1 else None
        if parts[0] in modules or inner in subpackages:
            wrong.append(f"{relative}:{line} imports {name}")
    return wrong


def _web_sources():
    return sorted(WEB.rglob("*.py"))


@pytest.mark.parametrize("path", _web_sources(), ids=lambda p: str(p.relative_to(WEB)))
def test_web_imports_workflow_never_widgets_or_qt(path):
    assert not _web_violations(path.read_text(), path.relative_to(WEB))


def test_web_files_stay_readable():
    assert len(_web_sources()) >= 5
    assert not {p.name: n for p in _web_sources() if (n := len(p.read_text().splitlines())) >= 600}


def test_the_web_checker_catches_violations():
    source = (
        "import qt\nfrom MedAnnotAssistLib.widgets.task_panel import TaskPanel\n"
        "from MedAnnotAssistLib.workflow import task\n"
    )
    assert _web_violations(source, Path("probe.py")) == [
        "probe.py:1 imports qt",
        "probe.py:2 imports MedAnnotAssistLib.widgets.task_panel",
        "probe.py:2 imports MedAnnotAssistLib.widgets.task_panel.TaskPanel",
    ]


def test_the_checker_catches_violations():
    """The guard itself can fail: each forbidden import or use is reported."""
    core = "import vtk\nfrom ..mrml import scene\nfrom .protocol import load_protocol\n"
    assert _violations(core, Path("core/probe.py")) == [
        "core/probe.py:1 imports vtk",
        "core/probe.py:2 imports MedAnnotAssistLib.mrml",
    ]
    mrml = "import slicer\nfrom ..widgets import panel\nnode = slicer.mrmlScene.GetFirstNode()\nimport qt\n"
    assert _violations(mrml, Path("mrml/probe.py")) == [
        "mrml/probe.py:2 imports MedAnnotAssistLib.widgets",
        "mrml/probe.py:4 imports qt",
        "mrml/probe.py:3 uses slicer.mrmlScene",
    ]
    assert _violations("from ..workflow.task import TaskModel\n", Path("mrml/probe.py")) == [
        "mrml/probe.py:1 imports MedAnnotAssistLib.workflow.task"
    ]
    workflow = "import vtk\nfrom ..mrml.review import ReviewSession\nfrom ..widgets import panel\nimport slicer.app\n"
    assert _violations(workflow, Path("workflow/probe.py")) == [
        "workflow/probe.py:1 imports vtk",
        "workflow/probe.py:3 imports MedAnnotAssistLib.widgets",
        "workflow/probe.py:4 imports slicer.app",
    ]


def test_module_files_stay_readable():
    module = MODULE_DIR / "MedAnnotAssist.py"
    assert len(module.read_text().splitlines()) < 500
    too_long = {p.name: n for p in _sources() if (n := len(p.read_text().splitlines())) >= 600}
    assert not too_long


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = (package, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(sources: dict[str, tuple[str, Path]], root: str = "MedAnnotAssistLib") -> dict[str, set[str]]:
    """Module -> the modules of the same packages it imports (at any depth: function-level imports too)."""
    known = set(sources)
    graph = {}
    for module, (source, relative) in sources.items():
        edges = set()
        for name, _line in _imports(ast.parse(source), relative, root):
            parts = (name or "").split(".")
            target = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in known), None)
            if target and target != module:
                edges.add(target)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize(
    "root, package",
    [
        (LIB, "MedAnnotAssistLib"),
        (REPO / "Server" / "medannotassist_server", "medannotassist_server"),
        (WEB, "medannotassist_web"),
    ],
)
def test_no_import_circles(root, package):
    """No two modules import each other, directly or through others (function-level imports included)."""
    paths = sorted(root.rglob("*.py"))
    sources = {_module_name(p, root, package): (p.read_text(), p.relative_to(root)) for p in paths}
    assert len(sources) > (5 if package == "medannotassist_web" else 10)  # the checker sees the package
    assert not _cycles(_import_graph(sources, package))


def test_the_circle_checker_catches_a_circle():
    sources = {
        "MedAnnotAssistLib.cli": ("from .cli_dicom import add\n", Path("cli.py")),
        "MedAnnotAssistLib.cli_dicom": ("def f():\n    from .cli import _resolve\n", Path("cli_dicom.py")),
        "MedAnnotAssistLib.core.protocol": ("import json\n", Path("core/protocol.py")),
    }
    assert _cycles(_import_graph(sources)) == [["MedAnnotAssistLib.cli", "MedAnnotAssistLib.cli_dicom"]]
