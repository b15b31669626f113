"""A static call graph over the module's Python sources, for Testing/guards/gui_thread.py.

Edges are calls and references (a bound method passed to ``connect`` may run later on the same thread).
Work handed to ``core.jobs`` is cut off: a lambda or a function reference passed as an argument of a
``core.jobs`` call, or of any function that itself passes that parameter on to ``core.jobs`` (found by a
fixpoint, e.g. a model's ``Background.start(name, work)``), runs in a worker.

Receivers are typed from what the source says: ``self.x = Foo(...)``, class and parameter annotations,
return annotations, ``x = y or Foo()``. A method call on a receiver of unknown type is assumed to reach
every method of that name in the package (reported as "guessed": annotate the receiver to be precise).
Calls through plain callables held in variables are not followed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

JOBS = "MedAnnotAssistLib.core.jobs"


@dataclass
class Function:
    qualname: str
    module: Module
    cls: Class | None
    node: ast.FunctionDef | ast.AsyncFunctionDef
    parent: Function | None = None
    nested: dict[str, Function] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)
    locals: dict[str, set[str]] | None = None

    @property
    def where(self) -> str:
        return f"{self.module.path}:{self.node.lineno} {self.qualname.removeprefix(self.module.name + '.')}"

    def params(self) -> list[str]:
        a = self.node.args
        names = [p.arg for p in (*a.posonlyargs, *a.args)]
        return names[1:] if self.cls is not None and not self._static() and names else names

    def _static(self) -> bool:
        return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in self.node.decorator_list)

    def isProperty(self) -> bool:
        return any(isinstance(d, ast.Name) and d.id == "property" for d in self.node.decorator_list)


@dataclass
class Class:
    qualname: str
    module: Module
    node: ast.ClassDef
    methods: dict[str, Function] = field(default_factory=dict)
    attributes: dict[str, set[str]] | None = None


@dataclass
class Module:
    name: str
    path: str
    tree: ast.Module
    imports: dict[str, str] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    classes: dict[str, Class] = field(default_factory=dict)
    body: Function | None = None  # its module-level assignments, typed like a function's locals


@dataclass(frozen=True)
class Edge:
    target: object  # a Function, or a dotted name outside the package
    line: int
    how: str  # "calls", "refers to", "calls (guessed by name)"


def _imports(nodes, module: str, isPackage: bool) -> dict[str, str]:
    names = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".")
            if node.level:
                base = base[: len(base) - node.level + (1 if isPackage else 0)]
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            else:
                prefix = node.module
            for alias in node.names:
                names[alias.asname or alias.name] = f"{prefix}.{alias.name}"
    return names


def _pairs(target: ast.AST, value: ast.AST | None):
    """(name or attribute, value) of an assignment, ``a, b = x, y`` unpacked pairwise."""
    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
        for t, v in zip(target.elts, value.elts, strict=True):
            yield from _pairs(t, v)
    elif isinstance(target, ast.Name | ast.Attribute):
        yield target, value


def _walkShallow(nodes):
    """The nodes of a body without descending into nested functions and classes."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


class CallGraph:
    def __init__(self, sources: dict[str, tuple[str, str]], packages: set[str]):
        """``sources``: module name -> (source text, path for messages); ``packages``: names that are packages."""
        self.modules: dict[str, Module] = {}
        self.symbols: dict[str, object] = {}
        self.byName: dict[str, list[Function]] = {}
        for name, (text, path) in sources.items():
            self._index(name, ast.parse(text), path, name in packages)
        self.subclasses: dict[str, list[Class]] = {}
        for module in self.modules.values():
            for cls in module.classes.values():
                for base in self.bases(cls):
                    self.subclasses.setdefault(base.qualname, []).append(cls)
        self.jobParams: dict[str, set[str]] = {}
        self._dataNames: set[str] | None = None
        self._solveJobParams()

    # -- index -------------------------------------------------------------------------------------------
    def _index(self, name: str, tree: ast.Module, path: str, isPackage: bool) -> None:
        module = Module(name, path, tree)
        topLevel = [n for n in _walkShallow(tree.body) if isinstance(n, ast.Import | ast.ImportFrom)]
        module.imports = _imports(topLevel, name, isPackage)
        self.modules[name] = self.symbols[name] = module
        assignments = [n for n in tree.body if isinstance(n, ast.Assign | ast.AnnAssign)]
        pseudo = ast.FunctionDef("<module>", ast.arguments([], [], None, [], [], None, []), assignments, [], None)
        pseudo.lineno = 1
        module.body = Function(f"{name}.<module>", module, None, pseudo)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                module.functions[node.name] = self._function(f"{name}.{node.name}", module, None, node, isPackage)
            elif isinstance(node, ast.ClassDef):
                cls = Class(f"{name}.{node.name}", module, node)
                module.classes[node.name] = self.symbols[cls.qualname] = cls
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        method = self._function(f"{cls.qualname}.{item.name}", module, cls, item, isPackage)
                        cls.methods[item.name] = method
                        self.byName.setdefault(item.name, []).append(method)

    def _function(self, qualname, module, cls, node, isPackage, parent=None) -> Function:
        function = Function(qualname, module, cls, node, parent)
        body = list(_walkShallow(node.body))
        function.imports = _imports(
            [n for n in body if isinstance(n, ast.Import | ast.ImportFrom)], module.name, isPackage
        )
        for inner in body:
            if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                nested = self._function(f"{qualname}.<locals>.{inner.name}", module, cls, inner, isPackage, function)
                function.nested[inner.name] = nested
        self.symbols[qualname] = function
        return function

    def functions(self):
        def walk(function):
            yield function
            for inner in function.nested.values():
                yield from walk(inner)

        for module in self.modules.values():
            for function in module.functions.values():
                yield from walk(function)
            for cls in module.classes.values():
                for method in cls.methods.values():
                    yield from walk(method)

    # -- names and types ---------------------------------------------------------------------------------
    def resolve(self, dotted: str, depth: int = 0):
        """The package symbol a dotted name means (following re-exports), or the dotted name itself."""
        if dotted in self.symbols or depth > 20:
            return self.symbols.get(dotted, dotted)
        parts = dotted.split(".")
        for n in range(len(parts) - 1, 0, -1):
            head = self.symbols.get(".".join(parts[:n]))
            if isinstance(head, Module) and parts[n] in head.imports:
                return self.resolve(".".join([head.imports[parts[n]], *parts[n + 1 :]]), depth + 1)
            if isinstance(head, Class) and n == len(parts) - 1:
                found = self.method(head, parts[n])
                return found[0] if found else dotted
        return dotted

    def lookup(self, name: str, function: Function | None, module: Module):
        """What a bare name means in a function: a package symbol or an external dotted name (None: unknown)."""
        scope = function
        while scope is not None:
            if name in scope.nested:
                return scope.nested[name]
            if name in scope.imports:
                return self.resolve(scope.imports[name])
            scope = scope.parent
        if name in module.functions:
            return module.functions[name]
        if name in module.classes:
            return module.classes[name]
        if name in module.imports:
            return self.resolve(module.imports[name])
        return None

    def dotted(self, node: ast.AST, function: Function | None, module: Module):
        """``a.b.c`` as a symbol when ``a`` is an imported module or a class (None otherwise)."""
        if isinstance(node, ast.Name):
            if function is not None and self._isLocal(node.id, function):
                return None
            if function is None or node.id not in self.localTypes(module.body):
                # a name defined nowhere in the package is a builtin or comes from a star import: outside
                return self.lookup(node.id, function, module) or node.id
            return None
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value, function, module)
            if isinstance(base, Module):
                return self.resolve(f"{base.name}.{node.attr}")
            if isinstance(base, Class):
                found = self.method(base, node.attr)
                return found[0] if found else None
            if isinstance(base, str):
                return self.resolve(f"{base}.{node.attr}")
        return None

    def _isLocal(self, name: str, function: Function) -> bool:
        scope = function
        while scope is not None:
            if name in self.localTypes(scope):
                return True
            scope = scope.parent
        return False

    def bases(self, cls: Class) -> list[Class]:
        found = []
        for base in cls.node.bases:
            symbol = self.dotted(base, None, cls.module)
            if isinstance(symbol, Class):
                found.append(symbol)
        return found

    def method(self, cls: Class, name: str, seen=None) -> list[Function]:
        """``name`` as found on ``cls`` (its own or inherited)."""
        if name in cls.methods:
            return [cls.methods[name]]
        for base in self.bases(cls):
            found = self.method(base, name)
            if found:
                return found
        return []

    def dispatch(self, cls: Class, name: str) -> list[Function]:
        """Every implementation a call of ``name`` on a ``cls`` may run: inherited, or overridden below."""
        found, todo, seen = list(self.method(cls, name)), [cls], set()
        while todo:
            current = todo.pop()
            for sub in self.subclasses.get(current.qualname, []):
                if sub.qualname not in seen:
                    seen.add(sub.qualname)
                    todo.append(sub)
                    if name in sub.methods and sub.methods[name] not in found:
                        found.append(sub.methods[name])
        return found

    def annotationTypes(self, node, module: Module) -> set[str]:
        if node is None:
            return set()
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                return self.annotationTypes(ast.parse(node.value, mode="eval").body, module)
            except SyntaxError:
                return set()
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.annotationTypes(node.left, module) | self.annotationTypes(node.right, module)
        if isinstance(node, ast.Subscript):
            outer = self.dotted(node.value, None, module)
            if isinstance(outer, str) and outer.rsplit(".", 1)[-1] in ("Optional", "Union", "type"):
                inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
                return set().union(*(self.annotationTypes(i, module) for i in inner))
            return set()
        symbol = self.dotted(node, None, module)
        if isinstance(symbol, Class):
            return {symbol.qualname}
        return {symbol} if isinstance(symbol, str) and symbol not in ("None", "str", "int", "float", "bool") else set()

    def attributeTypes(self, cls: Class) -> dict[str, set[str]]:
        """``self.x`` -> types, from assignments in the class's methods and annotations in its body."""
        if cls.attributes is None:
            cls.attributes = {}
            for base in self.bases(cls):
                for name, types in self.attributeTypes(base).items():
                    cls.attributes.setdefault(name, set()).update(types)
            for item in cls.node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    cls.attributes.setdefault(item.target.id, set()).update(
                        self.annotationTypes(item.annotation, cls.module)
                    )
            for method in cls.methods.values():
                for node in _walkShallow(method.node.body):
                    if not isinstance(node, ast.Assign | ast.AnnAssign):
                        continue
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target, value in [pair for t in targets for pair in _pairs(t, node.value)]:
                        if isinstance(target, ast.Attribute) and _isSelf(target.value):
                            types = cls.attributes.setdefault(target.attr, set())
                            if isinstance(node, ast.AnnAssign):
                                types.update(self.annotationTypes(node.annotation, cls.module))
                            if value is not None:
                                types.update(self.typeOf(value, method))
        return cls.attributes

    def localTypes(self, function: Function) -> dict[str, set[str]]:
        if function.locals is None:
            function.locals = {}
            a = function.node.args
            for arg in [
                *a.posonlyargs,
                *a.args,
                *a.kwonlyargs,
                *([a.vararg] if a.vararg else []),
                *([a.kwarg] if a.kwarg else []),
            ]:
                function.locals[arg.arg] = self.annotationTypes(arg.annotation, function.module)
            for name in _boundNames(function.node.body):  # every name bound here is local; types follow
                function.locals.setdefault(name, set())
            for node in _walkShallow(function.node.body):
                if isinstance(node, ast.Assign):
                    for target, value in [pair for t in node.targets for pair in _pairs(t, node.value)]:
                        if isinstance(target, ast.Name):
                            function.locals[target.id].update(self.typeOf(value, function))
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    function.locals[node.target.id].update(self.annotationTypes(node.annotation, function.module))
        return function.locals

    def typeOf(self, node: ast.AST, function: Function) -> set[str]:
        """Qualified names of the classes ``node`` may be an instance of (empty: unknown)."""
        if isinstance(node, ast.Name):
            if node.id == "self" and function.cls is not None:
                return {function.cls.qualname}
            scope = function
            while scope is not None:
                if node.id in self.localTypes(scope):
                    return set(self.localTypes(scope)[node.id])
                scope = scope.parent
            module = function.module
            if function is not module.body and node.id in self.localTypes(module.body):
                return set(self.localTypes(module.body)[node.id])
            symbol = self.lookup(node.id, function, module)
            return {symbol.qualname} if isinstance(symbol, Class) else set()
        if isinstance(node, ast.Attribute):
            found = set()
            for owner in self.typeOf(node.value, function):
                cls = self.symbols.get(owner)
                if owner not in self.symbols:  # an attribute of something outside the package is outside too
                    found.add(f"{owner}.{node.attr}")
                elif isinstance(cls, Class):
                    found |= self.attributeTypes(cls).get(node.attr, set())
                    for method in self.method(cls, node.attr):
                        if method.isProperty():
                            found |= self.annotationTypes(method.node.returns, method.module)
            return found
        if isinstance(node, ast.Call):
            found = set()
            for edge in self.callTargets(node, function):
                if isinstance(edge.target, Function):
                    if edge.target.node.name == "__init__" and edge.target.cls is not None:
                        found.add(edge.target.cls.qualname)
                    else:
                        found |= self.annotationTypes(edge.target.node.returns, edge.target.module)
                elif isinstance(edge.target, Class):
                    found.add(edge.target.qualname)
                elif isinstance(edge.target, str):
                    found.add(edge.target)
            return found
        if isinstance(node, ast.BoolOp):
            return set().union(*(self.typeOf(v, function) for v in node.values))
        if isinstance(node, ast.IfExp):
            return self.typeOf(node.body, function) | self.typeOf(node.orelse, function)
        return set()

    # -- calls -------------------------------------------------------------------------------------------
    def constructors(self, cls: Class) -> list[Edge]:
        edges = [Edge(m, 0, "calls") for name in ("__init__", "__post_init__") for m in self.method(cls, name)]
        return edges or [Edge(cls, 0, "calls")]

    def callTargets(self, call: ast.Call, function: Function) -> list[Edge]:
        func, line = call.func, call.lineno
        if isinstance(func, ast.Call) and isinstance(func.func, ast.Name) and func.func.id == "super":
            return []
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call):
            inner = func.value.func
            if isinstance(inner, ast.Name) and inner.id == "super" and function.cls is not None:
                return [Edge(m, line, "calls") for b in self.bases(function.cls) for m in self.method(b, func.attr)]
        symbol = self.dotted(func, function, function.module)
        if isinstance(symbol, Function):
            return [Edge(symbol, line, "calls")]
        if isinstance(symbol, Class):
            return [Edge(e.target, line, "calls") for e in self.constructors(symbol)]
        if isinstance(symbol, str):
            return [Edge(symbol, line, "calls")]
        if isinstance(func, ast.Name):
            found = self.lookup(func.id, function, function.module)
            return (
                [Edge(found, line, "calls")]
                if isinstance(found, Function) and not self._isLocal(func.id, function)
                else []
            )
        if not isinstance(func, ast.Attribute):
            return []
        receivers = self.typeOf(func.value, function)
        if not receivers:
            if func.attr.startswith("__"):
                return []
            return [Edge(m, line, "calls (guessed by name)") for m in self.byName.get(func.attr, [])]
        edges = []
        for receiver in receivers:
            cls = self.symbols.get(receiver)
            if isinstance(cls, Class):
                edges += [Edge(m, line, "calls") for m in self.dispatch(cls, func.attr)]
            elif receiver not in self.symbols:
                edges.append(Edge(f"{receiver}.{func.attr}", line, "calls"))
        return edges

    def jobPositions(self, call: ast.Call, edges: list[Edge]) -> set:
        """Argument positions (int) and keywords (str) of ``call`` whose values run in a worker."""
        functions = [e.target for e in edges if isinstance(e.target, Function)]
        if not functions or len(functions) != len(edges):
            return set()
        everything = {*range(len(call.args)), *(k.arg for k in call.keywords)}
        positions = None
        for target in functions:
            if target.module.name == JOBS:
                found = everything
            else:
                params, jobParams = target.params(), self.jobParams.get(target.qualname, set())
                found = {i for i, p in enumerate(params) if p in jobParams and i < len(call.args)}
                found |= {k.arg for k in call.keywords if k.arg in jobParams}
            positions = found if positions is None else positions & found
        return positions or set()

    def _solveJobParams(self) -> None:
        changed = True
        while changed:
            changed = False
            for function in self.functions():
                params = set(function.params()) | {a.arg for a in function.node.args.kwonlyargs}
                for call in [n for n in _walkShallow(function.node.body) if isinstance(n, ast.Call)]:
                    positions = self.jobPositions(call, self.callTargets(call, function))
                    for position in positions:
                        value = (
                            call.args[position]
                            if isinstance(position, int)
                            else next(k.value for k in call.keywords if k.arg == position)
                        )
                        if isinstance(value, ast.Name) and value.id in params:
                            known = self.jobParams.setdefault(function.qualname, set())
                            if value.id not in known:
                                known.add(value.id)
                                changed = True

    def edges(self, function: Function) -> tuple[list[Edge], list[tuple[int, str, list[Function]]]]:
        """What ``function`` calls or refers to on its own thread, and what it hands to a worker."""
        edges, handed = [], []
        stack = list(function.node.body) if function.node.name != "<module>" else []
        while stack:
            node = stack.pop()
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if isinstance(node, ast.Call):
                targets = self.callTargets(node, function)
                edges += targets
                positions = self.jobPositions(node, targets)
                if isinstance(node.func, ast.Attribute):
                    stack.append(node.func.value)  # the receiver may hold calls of its own
                elif not isinstance(node.func, ast.Name):
                    stack.append(node.func)
                for i, value in [*enumerate(node.args), *((k.arg, k.value) for k in node.keywords)]:
                    if i in positions and isinstance(value, ast.Lambda | ast.Name | ast.Attribute):
                        functions = self.referenced(value, function)
                        if functions or isinstance(value, ast.Lambda):
                            handed.append((node.lineno, ast.unparse(value), functions))
                    else:
                        stack.append(value)
                continue
            if isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
                edges += self.referenceEdges(node, function)
            if isinstance(node, ast.Lambda):
                stack.append(node.body)
                continue
            stack.extend(ast.iter_child_nodes(node))
        outside = [e for e in edges if not (isinstance(e.target, Function) and e.target.module.name == JOBS)]
        return outside, handed

    def referenceEdges(self, node: ast.AST, function: Function) -> list[Edge]:
        """A method passed along (``button.clicked.connect(model.claim)``) may run later on this thread."""
        found = [
            Edge(m, node.lineno, "reads" if m.isProperty() else "refers to") for m in self.referenced(node, function)
        ]
        if found or not isinstance(node, ast.Attribute) or node.attr.startswith("__"):
            return found
        if node.attr in self.dataNames():  # e.g. ``item.consensus``: a field here, a QueueClient method there
            return []
        if self.dotted(node.value, function, function.module) is None and not self.typeOf(node.value, function):
            return [Edge(m, node.lineno, "refers to (guessed by name)") for m in self.byName.get(node.attr, [])]
        return []

    def dataNames(self) -> set[str]:
        """Attribute names some class of the package holds as data (fields, ``self.x = ...``)."""
        if self._dataNames is None:
            self._dataNames = set()
            for module in self.modules.values():
                for cls in module.classes.values():
                    self._dataNames |= {
                        i.target.id
                        for i in cls.node.body
                        if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)
                    }
                    for method in cls.methods.values():
                        for node in _walkShallow(method.node.body):
                            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                                self._dataNames.add(node.attr)
        return self._dataNames

    def referenced(self, node: ast.AST, function: Function) -> list[Function]:
        """The package functions a name or attribute (not called) stands for, when its receiver's type is known."""
        if isinstance(node, ast.Lambda):
            return []
        symbol = self.dotted(node, function, function.module)
        if isinstance(symbol, Function):
            return [symbol]
        found = []
        if isinstance(node, ast.Attribute):
            for owner in self.typeOf(node.value, function):
                cls = self.symbols.get(owner)
                found += self.dispatch(cls, node.attr) if isinstance(cls, Class) else []
        return found


def _boundNames(body) -> set[str]:
    names, stack = set(), list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue  # nested functions are symbols of their own
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.Lambda):
            names |= {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
        stack.extend(ast.iter_child_nodes(node))
    return names


def _isSelf(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"
