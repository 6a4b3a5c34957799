"""The placement lock holds across processes on one machine (two flow runs on one worker), and
across threads of one process. Outcomes are decided by ordering, not by timing: a process holds
the lock and says so on a pipe; the others' non-blocking attempts must fail until it is told to
release; a blocked waiter must find the mark its holder wrote just before releasing."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import threading

import pytest

import cusprun.engine.machine_lock as machine_lock
from cusprun.engine.machine_lock import lock_path, placement_lock

CHILD = """
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("machine_lock", os.environ["MACHINE_LOCK_PY"])
module = importlib.util.module_from_spec(spec)      # the module alone: no torch to import
spec.loader.exec_module(module)
placement_lock = module.placement_lock
say = lambda m: print(m, flush=True)
what = sys.argv[1]
if what == "hold":
    with placement_lock():
        say("held")
        sys.stdin.readline()          # until told to release
    say("released")
elif what == "try":
    try:
        with placement_lock(blocking=False):
            say("got")
    except BlockingIOError:
        say("busy")
else:                                 # wait MARK: block, then report what the holder wrote
    say("waiting")
    with placement_lock():
        say("got " + (open(sys.argv[2]).read() if os.path.exists(sys.argv[2]) else "early"))
"""


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CUSPRUN_LOCK_DIR", str(tmp_path / "locks"))
    return tmp_path / "locks"


def _child(*args: str) -> subprocess.Popen:
    env = {**os.environ, "MACHINE_LOCK_PY": machine_lock.__file__}
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def _line(proc: subprocess.Popen, timeout: float = 120) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no answer from the child in {timeout}s"
    return proc.stdout.readline().strip()


def _try_in_child() -> str:
    proc = _child("try")
    try:
        return _line(proc)
    finally:
        proc.wait(60)


def test_the_lock_file_is_per_user_under_the_lock_dir(lock_dir):
    assert lock_path() == lock_dir / "placement.lock" and lock_dir.is_dir()


def test_a_process_holding_the_lock_keeps_other_processes_out(lock_dir):
    holder = _child("hold")
    try:
        assert _line(holder) == "held"
        with pytest.raises(BlockingIOError):
            with placement_lock(blocking=False):
                pass
        assert _try_in_child() == "busy"
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert _line(holder) == "released"
    finally:
        holder.stdin.close()
        holder.wait(60)
    with placement_lock(blocking=False):      # free again, here and in another process
        pass
    assert _try_in_child() == "got"


def test_a_waiting_process_gets_the_lock_only_after_the_holder_releases(lock_dir, tmp_path):
    mark = tmp_path / "mark"
    with placement_lock():
        waiter = _child("wait", str(mark))
        assert _line(waiter) == "waiting"
        # give it a moment to reach the lock: a broken lock would let it report "early" now
        # (this wait can only hide a failure, never cause one)
        select.select([waiter.stdout], [], [], 1.0)
        mark.write_text("after the holder")
    try:
        assert _line(waiter) == "got after the holder"
    finally:
        waiter.wait(60)


def test_threads_of_one_process_exclude_each_other(lock_dir):
    seen: list[str] = []

    def attempt() -> None:
        try:
            with placement_lock(blocking=False):
                seen.append("got")
        except BlockingIOError:
            seen.append("busy")

    with placement_lock():
        t = threading.Thread(target=attempt)
        t.start()
        t.join()
    attempt()
    assert seen == ["busy", "got"]
