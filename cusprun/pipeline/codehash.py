"""Code versions that cannot be forgotten: a stage's version is a hash of the code it runs.

The code a stage runs is its root modules plus every cusprun module they import, directly or
through others, at module level or inside functions (a deferred import runs too). Each module
counts by its syntax tree with docstrings removed, so an edit that changes what runs changes the
version of every stage that reaches it, and a comment or docstring edit changes none. Modules
that only move bytes (the artifact store, commits) are left out: they decide where a result
lives, not what it is. Torch and transformers versions are part of every version (their kernels
and model code compute the numbers)."""
from __future__ import annotations

import ast
import hashlib
import importlib.util
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

PACKAGE = "cusprun"
EXCLUDED = ("cusprun.storage", "cusprun.pipeline.artifacts", "cusprun.pipeline.context",
            "cusprun.cli")


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


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                      ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source(name: str) -> str:
    return module_file(name).read_text()


@lru_cache(maxsize=None)
def _parsed(name: str) -> tuple[str, tuple[str, ...]]:
    """(hash of the module's docstring-free syntax tree, cusprun modules it imports)."""
    path = module_file(name)
    tree = ast.parse(source(name), filename=str(path))
    deps: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                parts = parts if is_pkg else parts[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            deps.add(base)
            deps.update(f"{base}.{a.name}" for a in node.names)   # `from pkg import module`
    deps = {d for d in deps if module_file(d) is not None and not _excluded(d)}
    digest = hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).hexdigest()
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


def code_version(roots: Iterable[str]) -> str:
    """Hash of the code the roots run (see module docstring)."""
    import torch
    import transformers

    h = hashlib.sha256(f"torch={torch.__version__};transformers={transformers.__version__}".encode())
    for name in closure(roots):
        h.update(f"\x00{name}:{_parsed(name)[0]}".encode())
    return h.hexdigest()[:16]


def forget() -> None:
    """Drop the parsed modules (after their sources changed in this process)."""
    _parsed.cache_clear()
