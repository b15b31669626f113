"""The server imports MedAnnotAssistLib.core only: never mrml, widgets, Slicer, VTK or Qt; and its own threads
live in three modules: ``worker`` (the job workers and their heartbeats), ``audit_keys`` (the audit
checkpoint timer and the lock of its append file) and ``group_commit`` (the writer that commits claims,
heartbeats and releases in batches, so the event loop never waits on the database)."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "Server" / "medannotassist_server"
FORBIDDEN_TOP = {"slicer", "vtk", "vtkmodules", "qt", "ctk", "PythonQt", "MedAnnotAssist"}
THREADS = {"threading", "_thread", "concurrent", "multiprocessing"}
THREAD_MODULES = {"worker.py", "audit_keys.py", "group_commit.py"}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno


def test_server_imports_only_core():
    sources = sorted(SERVER.rglob("*.py"))
    assert len(sources) > 10
    wrong = []
    for path in sources:
        for name, line in _imports(path):
            top = name.split(".")[0]
            if top in FORBIDDEN_TOP or (top in THREADS and path.relative_to(SERVER).as_posix() not in THREAD_MODULES):
                wrong.append(f"{path.relative_to(SERVER)}:{line}: {name}")
            if top == "MedAnnotAssistLib" and not name.startswith("MedAnnotAssistLib.core"):
                wrong.append(f"{path.relative_to(SERVER)}:{line}: {name} (only MedAnnotAssistLib.core)")
    assert wrong == []
