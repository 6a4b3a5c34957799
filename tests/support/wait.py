"""Waiting in tests without sleeping a guessed time: poll a condition until it holds.

    from tests.support.wait import wait_until
    runs = wait_until(lambda: read_runs() or None, what="the trigger's flow run", timeout=120)

The deadline only bounds a hang: a loaded machine makes the wait longer, never the test wrong,
so give it generously. On timeout the AssertionError names what never happened."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, what: str, timeout: float = 60.0,
               every: float = 0.05) -> T:
    """Call `predicate` every `every` seconds until it returns something truthy, and return
    that; after `timeout` seconds raise AssertionError("timed out after ... waiting for <what>").
    An exception from `predicate` propagates at once (fail early, e.g. a process that died)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
