"""Find a project's WSGI/ASGI app object by reading its source, for `pydeploy init` and
for the plan when `tool.pydeploy.app` is not set.

Everything here is static (the `ast` module): importing user code would run it, and its
dependencies are usually not installed on the host. A detection is a guess: the plan
records it with its reason (`app.origin`), and the build's app check imports the target
inside the builder before any image is made, so a wrong guess fails the build, never
the container.
"""

from __future__ import annotations

import ast
import keyword
import re
import warnings
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from pydeploy.config.toml import read_toml
from pydeploy.errors import ConfigError
from pydeploy.plan import skiplist
from pydeploy.plan.importnames import SourceRoot, module_parts, source_roots

__all__ = [
    "Candidate",
    "Detection",
    "Factory",
    "Framework",
    "Interface",
    "Route",
    "Scan",
    "detect_app",
    "display_name",
    "interface_of",
    "scan_project",
    "scan_routes",
]

Framework = Literal["flask", "django", "fastapi", "starlette", "quart", "litestar", "wsgi"]
Interface = Literal["wsgi", "asgi"]

# Bounds keep `init` fast on a repository that holds far more than an app.
MAX_PY_FILES = 2000
MAX_DIRS = 5000
MAX_FILE_BYTES = 1024 * 1024


# The app classes, by where they are defined or re-exported.
_CONSTRUCTORS: Mapping[str, Framework] = {
    "flask.Flask": "flask",
    "flask.app.Flask": "flask",
    "fastapi.FastAPI": "fastapi",
    "fastapi.applications.FastAPI": "fastapi",
    "starlette.applications.Starlette": "starlette",
    "quart.Quart": "quart",
    "quart.app.Quart": "quart",
    "litestar.Litestar": "litestar",
    "litestar.app.Litestar": "litestar",
}
_DJANGO_HANDLERS: Mapping[str, Interface] = {
    "django.core.wsgi.get_wsgi_application": "wsgi",
    "django.core.asgi.get_asgi_application": "asgi",
}
_DISPLAY: Mapping[Framework, str] = {
    "flask": "Flask",
    "django": "Django",
    "fastapi": "FastAPI",
    "starlette": "Starlette",
    "quart": "Quart",
    "litestar": "Litestar",
    "wsgi": "WSGI",
}
# Text every file holding an app must contain (a constructor's name appears in its import
# or its call): files without it are never parsed, which keeps big trees fast.
_MARKERS = re.compile(
    "|".join(
        sorted(
            {q.rpartition(".")[2] for q in _CONSTRUCTORS}
            | {"_application", "_APPLICATION", "DJANGO_SETTINGS_MODULE", "start_response"}
        )
    ).encode()
)
_ASGI_FRAMEWORKS = frozenset({"fastapi", "starlette", "quart", "litestar"})
# Conventional entry-point module names: `main.py` beats `helpers.py` at equal depth.
_PREFERRED_MODULES = frozenset({"main", "app", "wsgi", "asgi", "server", "api"})
_PREFERRED_ATTRS = frozenset({"app", "application"})
_PREFERRED_FACTORIES = frozenset({"create_app", "make_app", "get_app", "get_application"})


@dataclass(frozen=True)
class Detection:
    """An app object usable as the `app = "module:attribute"` target."""

    target: str
    framework: Framework
    interface: Interface
    source: str  # POSIX path relative to the project directory
    reason: str  # one line, for `init` to show


@dataclass(frozen=True)
class Candidate:
    """Something app-like that cannot be a target as is (an app factory that needs
    arguments only the user knows, or an async one no server can call)."""

    target: str  # "module:function"
    framework: Framework
    source: str
    reason: str


@dataclass(frozen=True)
class Factory:
    """A module-level function that builds a framework's app and returns it."""

    reference: str  # "module:function", without the call
    framework: Framework
    source: str
    required: tuple[str, ...]  # parameters without a default
    is_async: bool

    @property
    def callable_bare(self) -> bool:
        """A server can call it as `module:function()`."""
        return not self.required and not self.is_async


@dataclass(frozen=True)
class DjangoStatic:
    """A Django project whose static files must be collected at build: its settings
    (through `from .base import *` chains) list `django.contrib.staticfiles` and set
    STATIC_ROOT, as the Heroku buildpack decides."""

    settings: str  # dotted settings module, as DJANGO_SETTINGS_MODULE names it
    source: str  # the file that sets STATIC_ROOT
    manage_py: bool  # a manage.py at the project root runs the command


@dataclass(frozen=True)
class Scan:
    """Everything one walk of a project found; `detections` are ordered best first:
    module-level app objects (and Django projects), then app factories a server can call
    with no arguments (`module:create_app()`)."""

    detections: tuple[Detection, ...]
    candidates: tuple[Candidate, ...]
    skipped: tuple[str, ...]  # "path: why", for files that could not be parsed
    truncated: bool  # the walk hit MAX_PY_FILES or MAX_DIRS
    factories: tuple[Factory, ...] = ()
    django_static: DjangoStatic | None = None

    def factory(self, reference: str) -> Factory | None:
        """The factory `module:function` names, if the scan found it."""
        return next((f for f in self.factories if f.reference == reference), None)

    @property
    def best(self) -> Detection | None:
        return self.detections[0] if self.detections else None


def display_name(framework: Framework) -> str:
    """`Flask`, `FastAPI`..., for messages."""
    return _DISPLAY[framework]


def interface_of(framework: Framework) -> Interface:
    """The server interface a framework's app object speaks (Django's default is WSGI)."""
    return "asgi" if framework in _ASGI_FRAMEWORKS else "wsgi"


def detect_app(project_dir: Path) -> Detection | None:
    """The most likely app object in `project_dir`, or None (see `scan_project`)."""
    return scan_project(project_dir).best


def scan_project(project_dir: Path) -> Scan:
    """Parse the project's Python files and rank every app object found.

    Preference: an explicit Django project (the settings module DJANGO_SETTINGS_MODULE
    names, then any module setting WSGI_/ASGI_APPLICATION), then the shallowest module
    (main/app/wsgi/asgi/server/api first at equal depth, so a top-level one of those
    beats everything), then path order; within one file attributes named app/application,
    then the first defined.
    """
    paths, truncated = _python_files(project_dir)
    everything, skipped = _read_all(project_dir, paths)
    by_name = {m.name: m for m in everything}
    marked = [m for m in everything if _MARKERS.search(m.data)]
    factories = _find_factories(marked)
    # A module calling a project's factory (`app = create_app()`) names it, not a marker.
    factory_names = [f.reference.partition(":")[2].encode() for f in factories.values()]
    marked_set = set(marked)
    modules = [m for m in everything if m in marked_set or any(n in m.data for n in factory_names)]

    found: list[tuple[tuple[int, int, int, str, int, int], Detection]] = []
    used_factories: set[str] = set()
    for module in modules:
        for detection, lineno, via in _module_level_apps(module, factories):
            if via is not None:
                used_factories.add(via)
            found.append((_rank(module, detection, lineno, kind=2), detection))
    for module, detection, named in _django_projects(marked, by_name):
        found.append((_rank(module, detection, 0, kind=0 if named else 1), detection))
    for factory, module, lineno in _factory_detections(factories, by_name):
        found.append((_rank(module, factory, lineno, kind=3), factory))
    skipped.extend(f"{m.source}: {m.error}" for m in everything if m.error)

    found.sort(key=lambda item: item[0])
    detections: dict[str, Detection] = {}
    for _, detection in found:
        detections.setdefault(detection.target, detection)

    candidates = tuple(
        Candidate(f.reference, f.framework, f.source, _why_not_callable(f))
        for qualname, f in sorted(factories.items())
        if qualname not in used_factories and not f.callable_bare
    )
    return Scan(
        tuple(detections.values()),
        candidates,
        tuple(sorted(skipped)),
        truncated,
        tuple(f for _, f in sorted(factories.items())),
        _django_static(project_dir, marked, by_name),
    )


def _why_not_callable(factory: Factory) -> str:
    module, _, name = factory.reference.partition(":")
    display = _DISPLAY[factory.framework]
    if factory.is_async:
        return (
            f"`async def {name}()` in {factory.source} builds a {display} app, but servers "
            f"call a factory without awaiting it: add `app = ...` at module level instead"
        )
    needs = ", ".join(factory.required)
    return (
        f"`def {name}({needs})` in {factory.source} builds a {display} app from arguments: "
        f'set `app = "{module}:{name}(...)"` with literal values for {needs}'
    )


def _factory_detections(
    factories: Mapping[str, Factory], by_name: Mapping[str, _Module]
) -> Iterator[tuple[Detection, _Module, int]]:
    """A factory callable with no arguments, as the target `module:function()`."""
    for factory in factories.values():
        if not factory.callable_bare:
            continue
        module_name, _, name = factory.reference.partition(":")
        display = _DISPLAY[factory.framework]
        reason = (
            f"`def {name}()` in {factory.source} returns a {display} app "
            "(an app factory: the server calls it in each worker)"
        )
        target = f"{factory.reference}()"
        detection = Detection(
            target, factory.framework, interface_of(factory.framework), factory.source, reason
        )
        yield detection, by_name[module_name], 0


# --- walking and parsing -------------------------------------------------------------


class _Module:
    """One importable file, parsed on first use (most files never are)."""

    def __init__(self, name: str, source: str, is_package: bool, data: bytes) -> None:
        self.name = name  # dotted import name
        self.source = source  # POSIX path relative to the project
        self.is_package = is_package
        self.data = data
        self.error: str | None = None
        self._tree: ast.Module | None = None

    @property
    def tree(self) -> ast.Module:
        """The parsed module; empty (and `error` set) when it does not parse."""
        if self._tree is None:
            self._tree = ast.Module(body=[], type_ignores=[])
            try:
                # User code may hold invalid escapes and the like: their warnings aren't ours.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._tree = ast.parse(self.data, filename=self.source)
            except SyntaxError as exc:
                self.error = f"{exc.msg} (line {exc.lineno})"
            except (ValueError, RecursionError) as exc:  # NUL bytes, absurd nesting
                self.error = str(exc) or type(exc).__name__
        return self._tree


def _skip_dir(path: Path) -> bool:
    name = path.name
    return (
        name in skiplist.DETECT_SKIP_DIRS
        or name.startswith(".")
        or path.is_symlink()  # may loop, or point outside the project
        or (path / skiplist.VENV_CONFIG).exists()  # a virtualenv under any name
    )


def _python_files(root: Path) -> tuple[list[Path], bool]:
    """Breadth-first, sorted, so shallow files survive the bounds and order is stable."""
    files: list[Path] = []
    queue = deque([root])
    dirs_seen = 0
    while queue:
        directory = queue.popleft()
        dirs_seen += 1
        if dirs_seen > MAX_DIRS:
            return files, True
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir():
                if not _skip_dir(entry):
                    queue.append(entry)
            elif entry.suffix == ".py" and entry.is_file():
                if len(files) == MAX_PY_FILES:
                    return files, True
                files.append(entry)
    return files, False


def _module_name(
    relative: PurePosixPath, strip_src: bool, roots: tuple[SourceRoot, ...] = ()
) -> tuple[str, bool] | None:
    parts = list(module_parts(relative, roots, strip_src))
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    if not parts or not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        return None  # not importable under this name, so never a target
    return ".".join(parts), is_package


def _source_roots(root: Path) -> tuple[SourceRoot, ...]:
    """The build backend's renames (importnames); none when pyproject.toml is unreadable
    (the config check reports that, not detection)."""
    try:
        return source_roots(read_toml(root / "pyproject.toml"))
    except ConfigError:
        return ()


def _read_all(root: Path, paths: list[Path]) -> tuple[list[_Module], list[str]]:
    # A src/ directory that is not itself a package is a src layout: modules live below it.
    strip_src = (root / "src").is_dir() and not (root / "src" / "__init__.py").exists()
    roots = _source_roots(root) if (root / "pyproject.toml").is_file() else ()
    modules: list[_Module] = []
    seen: set[str] = set()
    skipped: list[str] = []
    for path in paths:
        relative = PurePosixPath(path.relative_to(root).as_posix())
        named = _module_name(relative, strip_src, roots)
        if named is None or named[0] in seen:
            continue
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                skipped.append(f"{relative}: larger than {MAX_FILE_BYTES} bytes")
                continue
            data = path.read_bytes()
        except OSError as exc:
            skipped.append(f"{relative}: {exc.strerror or exc}")
            continue
        seen.add(named[0])
        modules.append(_Module(named[0], str(relative), named[1], data))
    return modules, skipped


# --- names and imports ---------------------------------------------------------------


def _is_main_guard(stmt: ast.stmt) -> bool:
    test = stmt.test if isinstance(stmt, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _module_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run at import: through if/try/with blocks, not defs or `__main__`."""
    for stmt in body:
        if _is_main_guard(stmt):
            continue
        yield stmt
        if isinstance(stmt, ast.If | ast.With | ast.Try):
            yield from _module_statements(stmt.body)
            yield from _module_statements(getattr(stmt, "orelse", []))
            if isinstance(stmt, ast.Try):
                yield from _module_statements(stmt.finalbody)
                for handler in stmt.handlers:
                    yield from _module_statements(handler.body)


def _import_base(module: _Module, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        return node.module
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    if node.level - 1 > len(package):
        return None
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])]) or None


def _bind_import(module: _Module, node: ast.AST, names: dict[str, str]) -> None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname:
                names[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                names[top] = top
    elif isinstance(node, ast.ImportFrom):
        base = _import_base(module, node)
        if base is None:
            return
        for alias in node.names:
            if alias.name == "*":
                # Only a framework's own star export is knowable without importing it.
                for qualname in _CONSTRUCTORS:
                    owner, _, attr = qualname.rpartition(".")
                    if owner == base:
                        names[attr] = qualname
            else:
                names[alias.asname or alias.name] = f"{base}.{alias.name}"


def _module_names(module: _Module) -> dict[str, str]:
    """Local name -> dotted name, for imports and functions defined at module level."""
    names: dict[str, str] = {}
    for stmt in _module_statements(module.tree.body):
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[stmt.name] = f"{module.name}.{stmt.name}"
        else:
            _bind_import(module, stmt, names)
    return names


def _qualname(node: ast.expr, names: Mapping[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _qualname(node.value, names)
        return f"{base}.{node.attr}" if base else None
    return None


def _call_text(call: ast.Call) -> str:
    args = "..." if call.args or call.keywords else ""
    return f"{ast.unparse(call.func)}({args})"


# --- app objects and factories -------------------------------------------------------


def _own_nodes(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """The function's nodes, not those of functions or classes defined inside it."""
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


def _required(function: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, ...]:
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    without_default = positional[: len(positional) - len(args.defaults)]
    keyword_only = [a for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    return tuple(a.arg for a in [*without_default, *keyword_only])


def _find_factories(modules: list[_Module]) -> dict[str, Factory]:
    """Module-level functions that construct a framework app and return something:
    `def create_app(): app = Flask(__name__); ...; return app`."""
    factories: dict[str, Factory] = {}
    for module in modules:
        module_names = _module_names(module)
        for stmt in _module_statements(module.tree.body):
            if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            names = dict(module_names)
            for node in ast.walk(stmt):  # factories often import the framework inside
                _bind_import(module, node, names)
            own = list(_own_nodes(stmt))
            if not any(isinstance(n, ast.Return) and n.value is not None for n in own):
                continue  # builds an app and runs it (`def main(): app.run()`), say
            for node in ast.walk(stmt):
                framework = (
                    _CONSTRUCTORS.get(_qualname(node.func, names) or "")
                    if isinstance(node, ast.Call)
                    else None
                )
                if framework is not None:
                    factories[f"{module.name}.{stmt.name}"] = Factory(
                        f"{module.name}:{stmt.name}",
                        framework,
                        module.source,
                        _required(stmt),
                        isinstance(stmt, ast.AsyncFunctionDef),
                    )
                    break
    return factories


def _assigned(stmt: ast.stmt) -> tuple[list[str], ast.expr | None]:
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)], stmt.value
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id], stmt.value
    return [], None


def _wsgi_function(stmt: ast.stmt) -> ast.FunctionDef | None:
    """A hand-written `def application(environ, start_response)` callable."""
    if not isinstance(stmt, ast.FunctionDef) or stmt.name not in _PREFERRED_ATTRS:
        return None
    params = [*stmt.args.posonlyargs, *stmt.args.args]
    return stmt if len(params) == 2 and params[1].arg == "start_response" else None


def _module_level_apps(
    module: _Module, factories: Mapping[str, Factory]
) -> Iterator[tuple[Detection, int, str | None]]:
    """(detection, line, factory it was built by) for each module-level app object."""
    names = _module_names(module)
    for stmt in _module_statements(module.tree.body):
        function = _wsgi_function(stmt)
        if function is not None:
            reason = f"`def {function.name}(environ, start_response)` in {module.source}"
            target = f"{module.name}:{function.name}"
            yield Detection(target, "wsgi", "wsgi", module.source, reason), stmt.lineno, None
            continue
        targets, value = _assigned(stmt)
        if not targets or not isinstance(value, ast.Call):
            continue
        qualname = _qualname(value.func, names) or ""
        via: str | None = None
        framework: Framework
        if qualname in _CONSTRUCTORS:
            framework = _CONSTRUCTORS[qualname]
            interface = interface_of(framework)
            how = ""
        elif qualname in _DJANGO_HANDLERS:
            framework, interface, how = "django", _DJANGO_HANDLERS[qualname], ""
        elif qualname in factories:
            factory = factories[qualname]
            framework = factory.framework
            interface, via = interface_of(framework), qualname
            how = f" (a {_DISPLAY[framework]} factory in {factory.source})"
        else:
            continue
        for name in targets:
            reason = f"`{name} = {_call_text(value)}` in {module.source}{how}"
            detection = Detection(
                f"{module.name}:{name}", framework, interface, module.source, reason
            )
            yield detection, stmt.lineno, via


# --- Django --------------------------------------------------------------------------

# ASGI_APPLICATION first: only projects that need ASGI (Channels, websockets) set it.
_DJANGO_SETTINGS: tuple[tuple[str, Interface], ...] = (
    ("ASGI_APPLICATION", "asgi"),
    ("WSGI_APPLICATION", "wsgi"),
)
_DJANGO_ENTRY_MODULES: tuple[tuple[str, Interface], ...] = (("wsgi", "wsgi"), ("asgi", "asgi"))


def _settings_references(module: _Module) -> Iterator[str]:
    """`os.environ.setdefault("DJANGO_SETTINGS_MODULE", "x.settings")` and `[...] =`."""
    for node in ast.walk(module.tree):
        key = value = None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setdefault"
            and ast.unparse(node.func.value).endswith("environ")
            and len(node.args) == 2
        ):
            key, value = node.args
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Subscript)
            and ast.unparse(node.targets[0].value).endswith("environ")
        ):
            key, value = node.targets[0].slice, node.value
        if (
            isinstance(key, ast.Constant)
            and key.value == "DJANGO_SETTINGS_MODULE"
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            yield value.value


def _settings_values(
    module: _Module, by_name: Mapping[str, _Module], seen: frozenset[str] = frozenset()
) -> dict[str, tuple[str, _Module]]:
    """WSGI_/ASGI_APPLICATION as set at module level, following `from .base import *`."""
    values: dict[str, tuple[str, _Module]] = {}
    for stmt in _module_statements(module.tree.body):
        if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
            base = by_name.get(_import_base(module, stmt) or "")
            if base is not None and base.name not in seen:
                values.update(_settings_values(base, by_name, seen | {module.name}))
            continue
        targets, value = _assigned(stmt)
        for name in targets:
            if name in dict(_DJANGO_SETTINGS):
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    values[name] = (value.value, module)
                else:
                    values.pop(name, None)
    return values


def _django_projects(
    modules: list[_Module], by_name: Mapping[str, _Module]
) -> Iterator[tuple[_Module, Detection, bool]]:
    """(module, detection, whether DJANGO_SETTINGS_MODULE names the settings) per project."""
    referenced = {
        name for module in modules for name in _settings_references(module) if name in by_name
    }
    # A module setting WSGI_/ASGI_APPLICATION is Django settings even if nothing names it.
    settings_modules = referenced | {m.name for m in modules if _settings_values(m, by_name)}

    for name in sorted(settings_modules):
        named = name in referenced
        settings = by_name[name]
        values = _settings_values(settings, by_name)
        for setting, interface in _DJANGO_SETTINGS:
            if setting in values:
                dotted, holder = values[setting]
                owner, _, attr = dotted.rpartition(".")
                if owner and attr.isidentifier():
                    reason = f'`{setting} = "{dotted}"` in {holder.source}'
                    target = f"{owner}:{attr}"
                    detection = Detection(target, "django", interface, holder.source, reason)
                    yield holder, detection, named
                    break
        else:
            fallback = _django_fallback(settings, by_name)
            if fallback is not None:
                yield (*fallback, named)


_STATICFILES_APP = "django.contrib.staticfiles"


def _django_static(
    project_dir: Path, modules: list[_Module], by_name: Mapping[str, _Module]
) -> DjangoStatic | None:
    """The first settings module (as DJANGO_SETTINGS_MODULE names it) whose chain lists
    the staticfiles app and sets STATIC_ROOT to something other than None."""
    referenced = sorted(
        {name for module in modules for name in _settings_references(module) if name in by_name}
    )
    for name in referenced:
        chain = _settings_chain(by_name[name], by_name)
        apps = any(
            isinstance(node, ast.Constant) and node.value == _STATICFILES_APP
            for module in chain
            for node in ast.walk(module.tree)
        )
        root = None
        for module in chain:  # bases first: the last assignment wins, as at import
            for stmt in _module_statements(module.tree.body):
                targets, value = _assigned(stmt)
                if "STATIC_ROOT" in targets:
                    unset = isinstance(value, ast.Constant) and value.value in (None, "")
                    root = None if unset else module
        if apps and root is not None:
            return DjangoStatic(name, root.source, (project_dir / "manage.py").is_file())
    return None


def _settings_chain(
    module: _Module, by_name: Mapping[str, _Module], seen: frozenset[str] = frozenset()
) -> list[_Module]:
    """The settings module after every module it star-imports (bases first)."""
    chain: list[_Module] = []
    for stmt in _module_statements(module.tree.body):
        if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
            base = by_name.get(_import_base(module, stmt) or "")
            if base is not None and base.name not in seen and base is not module:
                chain += _settings_chain(base, by_name, seen | {module.name})
    return [*chain, module]


def _django_fallback(
    settings: _Module, by_name: Mapping[str, _Module]
) -> tuple[_Module, Detection] | None:
    """No WSGI_/ASGI_APPLICATION: the `wsgi.py` (else `asgi.py`) nearest the settings."""
    parts = settings.name.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:depth])
        for leaf, interface in _DJANGO_ENTRY_MODULES:
            entry = by_name.get(f"{prefix}.{leaf}" if prefix else leaf)
            if entry is not None:
                reason = f"Django settings {settings.source} beside {entry.source}"
                return entry, Detection(
                    f"{entry.name}:application", "django", interface, entry.source, reason
                )
    return None


def _rank(
    module: _Module, detection: Detection, lineno: int, *, kind: int
) -> tuple[int, int, int, str, int, int]:
    target_module, _, attr = detection.target.partition(":")
    return (
        kind,
        target_module.count("."),
        0 if target_module.rsplit(".", 1)[-1] in _PREFERRED_MODULES else 1,
        module.source,
        0 if attr in _PREFERRED_ATTRS or attr.removesuffix("()") in _PREFERRED_FACTORIES else 1,
        lineno,
    )


# --- routes ----------------------------------------------------------------------------
# Literal GET routes whose full path the source alone makes certain (the healthcheck's
# choice reads them, plan/health.py): decorators and `add_url_rule`/`add_api_route` on an
# app object itself (a blueprint's or router's prefix is decided elsewhere), and Django's
# root URLconf (an included one sits under a prefix).

_ROUTED_FRAMEWORKS = frozenset({"flask", "fastapi", "quart"})
_ROUTE_DECORATORS = frozenset({"route", "get", "api_route"})
_ROUTE_CALLS = frozenset({"add_url_rule", "add_api_route"})
_DJANGO_PATHS = frozenset({"django.urls.path", "django.urls.re_path", "django.conf.urls.url"})
# A path the server serves as written: no converters, parameters or regex syntax.
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")


@dataclass(frozen=True)
class Route:
    """A GET route found in the source."""

    path: str
    framework: Framework
    where: str  # `@app.get("/health")` in main.py:12


def scan_routes(project_dir: Path, wanted: re.Pattern[bytes]) -> tuple[Route, ...]:
    """The certain GET routes in files whose text matches `wanted` (a cheap filter: most
    files are never parsed), in path order."""
    paths, _ = _python_files(project_dir)
    modules, _ = _read_all(project_dir, paths)
    urlconfs = {
        value
        for module in modules
        if b"ROOT_URLCONF" in module.data
        for value in _string_settings(module, "ROOT_URLCONF")
    }
    found: list[Route] = []
    for module in modules:
        if not wanted.search(module.data):
            continue
        found.extend(_app_routes(module))
        if module.name in urlconfs:
            found.extend(_django_routes(module))
    return tuple(found)


def _string_settings(module: _Module, name: str) -> Iterator[str]:
    for stmt in _module_statements(module.tree.body):
        targets, value = _assigned(stmt)
        if name in targets and isinstance(value, ast.Constant) and isinstance(value.value, str):
            yield value.value


def _app_objects(module: _Module) -> dict[str, Framework]:
    """Names bound to an app constructor's call anywhere in the module (a factory's
    `app = Flask(__name__)` too)."""
    names = _module_names(module)
    apps: dict[str, Framework] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            framework = _CONSTRUCTORS.get(_qualname(node.value.func, names) or "")
            if framework in _ROUTED_FRAMEWORKS:
                apps.update({t.id: framework for t in node.targets if isinstance(t, ast.Name)})
    return apps


def _serves_get(call: ast.Call, default: bool) -> bool:
    """Whether a route's `methods=` (absent: `default`) includes GET; unknowable: no."""
    methods = next((k.value for k in call.keywords if k.arg == "methods"), None)
    if methods is None:
        return default
    if not isinstance(methods, ast.List | ast.Tuple | ast.Set):
        return False
    return any(isinstance(e, ast.Constant) and str(e.value).upper() == "GET" for e in methods.elts)


def _literal_path(call: ast.Call) -> str | None:
    first = call.args[0] if call.args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value if _PLAIN_PATH.match(first.value) else None
    return None


def _app_routes(module: _Module) -> Iterator[Route]:
    apps = _app_objects(module)
    if not apps:
        return
    for node in ast.walk(module.tree):
        calls: list[tuple[ast.Call, bool]] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            calls = [(d, True) for d in node.decorator_list if isinstance(d, ast.Call)]
        elif isinstance(node, ast.Call):
            calls = [(node, False)]
        for call, decorator in calls:
            func = call.func
            if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
                continue
            framework = apps.get(func.value.id)
            kinds = _ROUTE_DECORATORS if decorator else _ROUTE_CALLS
            if framework is None or func.attr not in kinds:
                continue
            path = _literal_path(call)
            if path is not None and _serves_get(call, default=True):
                shown = f"{'@' if decorator else ''}{func.value.id}.{func.attr}({path!r})"
                yield Route(path, framework, f"`{shown}` in {module.source}:{call.lineno}")


def _django_routes(module: _Module) -> Iterator[Route]:
    names = _module_names(module)
    for node in ast.walk(module.tree):
        kind = _qualname(node.func, names) if isinstance(node, ast.Call) else None
        if not isinstance(node, ast.Call) or kind not in _DJANGO_PATHS:
            continue
        view = node.args[1] if len(node.args) > 1 else None
        if isinstance(view, ast.Call) and (_qualname(view.func, names) or "").endswith("include"):
            continue  # the included URLconf's routes sit below this prefix
        first = node.args[0] if node.args else None
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        route = first.value
        if kind == "django.urls.path":
            path = "/" + route
        elif route.startswith("^") and route.endswith("$"):  # a regex: an anchored literal
            path = "/" + route[1:-1]
        else:
            continue
        if _PLAIN_PATH.match(path):
            func = ast.unparse(node.func)
            yield Route(path, "django", f"`{func}({route!r})` in {module.source}:{node.lineno}")
