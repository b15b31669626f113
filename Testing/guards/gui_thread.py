"""What a widget can reach on Slicer's GUI thread: HTTP, an engine run, a sleep or a child process?

Every function and method of the widget modules (MedAnnotAssist.py, widgets/) is a root: any of them may
run as a slot. From there the call graph (Testing/guards/callgraph.py) is followed through workflow/,
mrml/ and core/ until a sink, or ``core.jobs``, where work leaves the GUI thread. A function only ever
handed to ``core.jobs`` is a worker's, not a root. Sinks are named by pattern: calls outside the package
(``requests.get``, ``time.sleep``) and the package's own network and engine primitives.
"""

from __future__ import annotations

import fnmatch
from collections import deque
from dataclasses import dataclass

from Testing.guards.callgraph import CallGraph, Edge, Function

EXTERNAL_SINKS = {
    "requests.get": "HTTP",
    "requests.post": "HTTP",
    "requests.put": "HTTP",
    "requests.patch": "HTTP",
    "requests.delete": "HTTP",
    "requests.head": "HTTP",
    "requests.request": "HTTP",
    "requests.Session.*": "HTTP",
    "urllib.request.urlopen": "HTTP",
    "urllib.request.urlretrieve": "HTTP",
    "http.client.HTTP*Connection*": "HTTP",
    "urllib3.PoolManager*": "HTTP",
    "httpx.*": "HTTP",
    "socket.create_connection": "network",
    "socket.socket": "network",
    "dicomweb_client.*DICOMwebClient.search_*": "HTTP",
    "dicomweb_client.*DICOMwebClient.retrieve_*": "HTTP",
    "dicomweb_client.*DICOMwebClient.store_*": "HTTP",
    "time.sleep": "a sleep",
    "subprocess.*": "a child process",
}
PACKAGE_SINKS = {
    "MedAnnotAssistLib.core.queue_client.QueueClient._send": "HTTP to the task queue",
    "MedAnnotAssistLib.core.dicom.web.DicomWebClient._call": "HTTP to a DICOMweb server",
    "MedAnnotAssistLib.core.engines.*.run": "an engine run",
}


def sinkOf(target) -> str | None:
    name = target.qualname if isinstance(target, Function) else target if isinstance(target, str) else None
    if name is None:
        return None
    patterns = PACKAGE_SINKS if isinstance(target, Function) else EXTERNAL_SINKS
    return next((what for pattern, what in patterns.items() if fnmatch.fnmatchcase(name, pattern)), None)


@dataclass
class Report:
    violations: list[str]
    reached: set[str]
    handed: list[str]  # "where: what" handed to core.jobs


def analyse(graph: CallGraph, isRoot) -> Report:
    """Breadth-first from the roots; each sink reached is reported once per root with the shortest path."""
    cache = {f.qualname: graph.edges(f) for f in graph.functions()}
    workers = {f.qualname for _edges, handed in cache.values() for _line, _text, functions in handed for f in functions}
    roots = [f for f in graph.functions() if isRoot(f) and f.qualname not in workers]
    violations, reached, handedAll = [], set(), []
    for root in roots:
        parents: dict[str, tuple[str, Edge] | None] = {root.qualname: None}
        queue = deque([root])
        while queue:
            current = queue.popleft()
            reached.add(current.qualname)
            edges, handed = cache[current.qualname]
            handedAll += [f"{current.module.path}:{line} {text}" for line, text, _functions in handed]
            for edge in edges:
                what = sinkOf(edge.target)
                if what:
                    violations.append(_path(graph, parents, current, edge, what))
                    continue
                if isinstance(edge.target, Function) and edge.target.qualname not in parents:
                    parents[edge.target.qualname] = (current.qualname, edge)
                    queue.append(edge.target)
    return Report(sorted(set(violations)), reached, sorted(set(handedAll)))


def _path(graph: CallGraph, parents, current: Function, edge: Edge, what: str) -> str:
    steps, name = [], current.qualname
    while parents[name] is not None:
        caller, via = parents[name]
        steps.append(f"{graph.symbols[name].where} ({via.how} at line {via.line})")
        name = caller
    steps.append(graph.symbols[name].where)
    target = edge.target.where if isinstance(edge.target, Function) else edge.target
    steps.reverse()
    return " -> ".join(steps) + f" -> {target} ({edge.how} at line {edge.line}): {what}"
