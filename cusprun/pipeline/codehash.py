"""Code versions that cannot be forgotten: a stage's version is a hash of the code it runs.

The code a stage runs is its root modules plus every cusprun module they import, directly or
through others, at module level or inside functions (a deferred import runs too); `from package
import name` counts the module that defines `name`, not every module the package's __init__
re-exports; an import under `if TYPE_CHECKING:` counts nothing (it never runs). Each module counts by its syntax tree without docstrings and pydantic field
descriptions, so an edit that changes what runs changes the version of every stage that reaches
it, and a comment or documentation edit changes none. Modules that only move bytes (the artifact
store, commits) are left out: they decide where a result lives, not what it is. The torch and
transformers releases are part of every version (their kernels and model code compute the
numbers; a CPU and a CUDA build of one release count alike, the device is in every key), and
stages that tokenize add the tokenizers release (it decides token ids)."""
from __future__ import annotations

import ast
import copy
import hashlib
import importlib.util
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

PACKAGE = "cusprun"
EXCLUDED = ("cusprun.storage", "cusprun.pipeline.artifacts", "cusprun.pipeline.context",
            "cusprun.pipeline.keys", "cusprun.pipeline.codehash", "cusprun.cli")


def _excluded(name: str) -> bool:
    return any(name == e or name.startswith(e + ".") for e in EXCLUDED)


@lru_cache(maxsize=None)
def module_file(name: str) -> Path | None:
    """The source file of a cusprun module (None for what is not one)."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


DOC_KEYWORDS = ("description", "title", "examples")
"""Keywords of pydantic's Field() that only document a setting (the UI form's text)."""


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Drop what documents code without running: docstrings, and the description/title of
    pydantic Field()s (an edited field description must not rerun a statistics pass)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                      ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Field":
            node.keywords = [k for k in node.keywords if k.arg not in DOC_KEYWORDS]
    return tree


def source(name: str) -> str:
    return module_file(name).read_text()


def _absolute(name: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    """The absolute module name of a (possibly relative) `from ... import`."""
    if not node.level:
        return node.module or ""
    parts = name.split(".")
    parts = parts if is_pkg else parts[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


@lru_cache(maxsize=None)
def _tree(name: str) -> ast.Module:
    return ast.parse(source(name), filename=str(module_file(name)))


@lru_cache(maxsize=None)
def defining_module(package: str, attr: str) -> str:
    """The module whose code defines `attr` as seen from `package`: a submodule of that name, or,
    when the package's __init__ only re-exports it (`from .sub import attr`), the module it comes
    from, followed through further re-exports; else the package itself."""
    if module_file(f"{package}.{attr}") is not None:
        return f"{package}.{attr}"
    path = module_file(package)
    if path is None or path.name != "__init__.py":
        return package
    for node in _tree(package).body:
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                if (a.asname or a.name) == attr:
                    src = _absolute(package, node, True)
                    return defining_module(src, a.name) if module_file(src) else package
    return package


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks (annotations only)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (getattr(node.test, "id", None) == "TYPE_CHECKING"
                                         or getattr(node.test, "attr", None) == "TYPE_CHECKING"):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


@lru_cache(maxsize=None)
def _parsed(name: str) -> tuple[str, tuple[str, ...]]:
    """(hash of the module's docstring-free syntax tree, cusprun modules whose code it runs).

    `from pkg import name` counts the module that defines `name`, not every module a package's
    __init__ re-exports: a stage then depends on the code it calls, not on whole packages."""
    path = module_file(name)
    tree = _tree(name)
    deps: set[str] = set()
    is_pkg = path.name == "__init__.py"
    typing_only = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, node, is_pkg)
            if module_file(base) is None:
                continue
            deps.update(defining_module(base, a.name) for a in node.names if a.name != "*")
            if any(a.name == "*" for a in node.names):
                deps.add(base)
    deps = {d for d in deps if module_file(d) is not None and not _excluded(d)}
    digest = hashlib.sha256(ast.dump(_strip_docstrings(copy.deepcopy(tree))).encode()).hexdigest()
    return digest, tuple(sorted(deps - {name}))


def closure(roots: Iterable[str]) -> list[str]:
    """The root modules and every cusprun module they reach (sorted)."""
    seen: set[str] = set()
    todo = [r for r in roots if module_file(r) is not None]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(d for d in _parsed(name)[1] if d not in seen)
    return sorted(seen)


def library_versions(tokenizes: bool = False) -> str:
    """The third-party releases that compute a stage's numbers ('+cpu' / '+cu128' local build tags
    dropped: a GPU worker and a CPU flow runner of one release agree)."""
    from importlib import metadata

    import torch
    import transformers

    out = f"torch={torch.__version__.split('+')[0]};transformers={transformers.__version__}"
    return out + (f";tokenizers={metadata.version('tokenizers')}" if tokenizes else "")


def code_version(roots: Iterable[str], tokenizes: bool = False) -> str:
    """Hash of the code the roots run (see module docstring)."""
    h = hashlib.sha256(library_versions(tokenizes).encode())
    for name in closure(roots):
        h.update(f"\x00{name}:{_parsed(name)[0]}".encode())
    return h.hexdigest()[:16]


def forget() -> None:
    """Drop the parsed modules (after their sources changed in this process)."""
    for cached in (_parsed, _tree, defining_module):
        cached.cache_clear()
