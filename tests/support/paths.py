"""Where things are, for tests that read repository files or start `cusprun` processes.

  REPO                 the repository root
  CUSPRUN              the `cusprun` console script of this environment
  cusprun_env(base, **extra)   an environment for a subprocess that imports this checkout
  render_script()      deployments/render.py, imported (it is a script, not a package module)
"""
from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
CUSPRUN = str(Path(sys.executable).with_name("cusprun"))


def user_cache() -> str:
    """The cache the session's own process uses (converted models, parsed corpora): a child that
    shares it finds them made instead of making them again."""
    return os.environ.get("CUSPRUN_CACHE", str(Path.home() / ".cache" / "cusprun"))


def cusprun_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`base` (default: this process's environment) with this checkout first on PYTHONPATH,
    the hub offline and the session's cache (CUSPRUN_CACHE), then `extra` on top."""
    return {**(os.environ if base is None else base), "PYTHONPATH": str(REPO),
            "HF_HUB_OFFLINE": "1", "CUSPRUN_CACHE": user_cache(), **extra}


def render_script() -> ModuleType:
    """deployments/render.py as a module (a fresh import each call)."""
    spec = importlib.util.spec_from_file_location("cusprun_render",
                                                  REPO / "deployments" / "render.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
