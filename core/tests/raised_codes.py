"""Which ``ApplicationError`` codes a view can raise, read from the source (no import, no run).

From a view method, follow every project function or class it names (services, selectors,
validators, serializers, helpers; through module aliases, ``from x import y`` names, ``self.``
methods and class attributes), and collect each ``ApplicationError(...)`` (or subclass) built
on the way, with its HTTP status. An over-approximation: a branch the view never takes still
counts, which is what a contract wants (a code a client may see).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = (
    "accounts",
    "messaging",
    "payments",
    "appointments",
    "groups",
    "calls",
    "notifications",
    "core",
    "audit",
    "scheduled",
    "documents",
    "records",
    "ratings",
    "moderation",
)
# ApplicationError and its subclasses: default status, and where the code comes from.
ERROR_CLASSES: dict[str, tuple[int, str | None]] = {
    "core.errors.ApplicationError": (400, None),
    "core.errors.NotFound": (404, "not_found"),
    "core.errors.PermissionDenied": (403, "permission_denied"),
    "accounts.firebase.TokenError": (401, None),
}
# Calls the source cannot show: registries filled at start-up. Each entry: the function that
# runs the registered callables, and what is registered (checked against the live registry by
# core/tests/test_openapi_contract.py).
PLUGINS: dict[str, tuple[str, ...]] = {
    "messaging.reach.refusals": (
        "payments.selectors.consultation_reach_statement",
        "payments.selectors.consultation_reach_rule_orm",
    ),
}


@dataclass
class Module:
    name: str
    tree: ast.Module
    names: dict[str, str] = field(default_factory=dict)  # local name -> qualified name
    defs: dict[str, ast.AST] = field(default_factory=dict)  # "f" / "Class" / "Class.method"


def _package(module: str, level: int, target: str | None) -> str:
    base = module.split(".")[: -level or None] if level else []
    return ".".join([*base, *([target] if target else [])])


@cache
def load(name: str) -> Module | None:
    parts = name.split(".")
    path = ROOT.joinpath(*parts).with_suffix(".py")
    if not path.exists():
        path = ROOT.joinpath(*parts, "__init__.py")
        if not path.exists():
            return None
    module = Module(name, ast.parse(path.read_text()))
    # A package's __init__ resolves relative imports from the package itself.
    anchor = f"{name}.__init__" if path.name == "__init__.py" else name
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom):
            source = _package(anchor, node.level, node.module)
            for alias in node.names:
                module.names[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                module.names[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in module.tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            module.defs[node.name] = node
            module.names[node.name] = f"{name}.{node.name}"
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    module.defs[f"{node.name}.{item.name}"] = item
    return module


def resolve(qualified: str) -> tuple[Module, str] | None:
    """``pkg.mod.f`` / ``pkg.mod.Class`` / ``pkg.mod.Class.method`` → its module and local name."""
    parts = qualified.split(".")
    if parts[0] not in APPS or "models" in parts or "migrations" in parts:
        return None  # models: their methods are not what a view calls
    for cut in range(len(parts) - 1, 0, -1):
        module = load(".".join(parts[:cut]))
        if module is not None:
            local = ".".join(parts[cut:])
            if local in module.defs:
                return module, local
            if local in module.names and module.names[local] != f"{module.name}.{local}":
                return resolve(module.names[local])  # re-exported
            return None
    return None


def _qualify(module: Module, node: ast.expr, owner: str | None) -> str | None:
    if isinstance(node, ast.Name):
        return module.names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = node.value
        if owner and (
            (isinstance(base, ast.Name) and base.id in ("self", "cls"))
            or (isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "type")
        ):
            return f"{module.name}.{owner}.{node.attr}"
        prefix = _qualify(module, base, owner)
        return f"{prefix}.{node.attr}" if prefix else None
    return None


@dataclass(frozen=True)
class Raised:
    code: str
    status: int
    where: str


def _error(module: Module, call: ast.Call, owner: str | None, where: str) -> Raised | None:
    target = _qualify(module, call.func, owner)
    if target is None or target not in ERROR_CLASSES:
        return None
    status, code = ERROR_CLASSES[target]
    keywords = {k.arg: k.value for k in call.keywords if k.arg}
    if "status" in keywords:
        value = keywords["status"]
        status = value.value if isinstance(value, ast.Constant) and isinstance(value.value, int) else -1
    node: ast.expr | None = keywords.get("code")
    if node is None and code is None and call.args:
        node = call.args[0]
    if node is not None:
        code = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else "?"
    return Raised(code or "?", status, where)


def raised(module_name: str, local: str) -> set[Raised]:
    """Every error code reachable from ``module_name.local`` (a function, method or class)."""
    found: set[Raised] = set()
    seen: set[str] = set()

    def visit(module: Module, local: str) -> None:
        key = f"{module.name}.{local}"
        if key in seen:
            return
        seen.add(key)
        for plugged in PLUGINS.get(key, ()):
            hit = resolve(plugged)
            if hit:
                visit(*hit)
        node = module.defs[local]
        owner = local.split(".")[0] if "." in local or isinstance(node, ast.ClassDef) else None
        if isinstance(node, ast.ClassDef):
            # A class named: its methods, class attributes and project base classes.
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    visit(module, f"{node.name}.{item.name}")
            nodes: list[ast.AST] = [n for n in node.body if not isinstance(n, ast.FunctionDef)]
            nodes += node.bases
        else:
            nodes = [node]
        for top in nodes:
            for sub in ast.walk(top):
                if isinstance(sub, ast.Call):
                    error = _error(module, sub, owner, f"{module.name}:{sub.lineno}")
                    if error:
                        found.add(error)
                if isinstance(sub, ast.Name | ast.Attribute) and isinstance(sub.ctx, ast.Load):
                    target = _qualify(module, sub, owner)
                    if target and target not in ERROR_CLASSES:
                        hit = resolve(target)
                        if hit:
                            visit(*hit)

    hit = resolve(f"{module_name}.{local}")
    assert hit is not None, f"{module_name}.{local} not found"
    visit(*hit)
    return found


HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "trace"}


def raised_by_view(view: type, method: str) -> set[Raised]:
    """The codes ``view``'s ``method`` handler can raise: the handler (the nearest class
    defining it), every helper method and class attribute of the view's project classes."""
    found: set[Raised] = set()
    handler_done = False
    for cls in view.__mro__:
        module = load(cls.__module__)
        if module is None or cls.__name__ not in module.defs:
            continue
        node = module.defs[cls.__name__]
        assert isinstance(node, ast.ClassDef)
        for item in node.body:
            name = getattr(item, "name", None)
            if isinstance(item, ast.FunctionDef) and name in HTTP_METHODS:
                if name == method and not handler_done:
                    found |= raised(cls.__module__, f"{cls.__name__}.{name}")
                    handler_done = True
            elif isinstance(item, ast.FunctionDef):
                found |= raised(cls.__module__, f"{cls.__name__}.{name}")
        attributes = ast.Module(
            body=[i for i in node.body if not isinstance(i, ast.FunctionDef)], type_ignores=[]
        )
        found |= _raised_in(module, attributes, cls.__name__)
    return found


def _raised_in(module: Module, node: ast.AST, owner: str) -> set[Raised]:
    found: set[Raised] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name | ast.Attribute) and isinstance(sub.ctx, ast.Load):
            target = _qualify(module, sub, owner)
            if target and target not in ERROR_CLASSES:
                hit = resolve(target)
                if hit:
                    found |= raised(hit[0].name, hit[1])
    return found
