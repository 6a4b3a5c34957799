"""Pytest plugin (loaded by tests/conftest.py): one real `prefect server start`
subprocess per test session, on 127.0.0.1 and a free port, with its own PREFECT_HOME and SQLite
database in a temporary directory; always stopped at the end of the session.

Fixtures:
  prefect_api       (session) -> PrefectAPI(url, env, home): the server; while it runs, this
                    process's Prefect settings point at it (PREFECT_API_URL).
                    `env` is the environment for Prefect CLI/worker subprocesses.
  work_pools        (session) -> PrefectAPI once work pools cpu and gpu (type process) exist.
  deployed          (session) -> PrefectAPI after `prefect deploy --all --prefect-file
                    deployments/prefect.yaml` (work pools created first).
Helpers: prefect_cli(api, *args), start_worker(api, pool, log_path), start_prefect_server(home,
ui=...) for a server of a test's own (e.g. with the UI, which the session server leaves off).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.support.network import free_port
from tests.support.paths import REPO
from tests.support.wait import wait_until

PREFECT = str(Path(sys.executable).with_name("prefect"))
STARTUP_TIMEOUT_S = 180


class PrefectAPI(NamedTuple):
    url: str
    env: dict
    home: Path


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a subprocess started with start_new_session=True, and its children."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def prefect_cli(api: PrefectAPI, *args: str, timeout: float = 300, check: bool = True,
                cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run([PREFECT, *args], cwd=cwd, env=api.env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"prefect {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def start_worker(api: PrefectAPI, pool: str, log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """`prefect worker start --pool <pool> --type process`; stop it with stop_process()."""
    log = open(log_path, "w")
    return subprocess.Popen([PREFECT, "worker", "start", "--pool", pool, "--type", "process",
                             "--limit", "4"], cwd=REPO, env={**api.env, **(env or {})},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


stop_process = _stop


def _drain_prefect_clients() -> None:
    """Send buffered logs and events now (as prefect_test_harness does); otherwise they are
    retried against the stopped server at interpreter exit (slow, noisy)."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        except RuntimeError:
            pass  # never started
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


def _migrated_database(env: dict) -> Path:
    """An empty, migrated Prefect database for this Prefect version, made once (migrations take
    a minute on a busy machine) and copied for every session."""
    import prefect

    from cusprun.paths import cache_root

    template = cache_root() / "test-prefect" / f"prefect-{prefect.__version__}.db"
    if not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        tmp = template.with_suffix(f".tmp{os.getpid()}")
        tmp.unlink(missing_ok=True)
        subprocess.run([PREFECT, "server", "database", "upgrade", "-y"], check=True,
                       capture_output=True, timeout=STARTUP_TIMEOUT_S, env={
                           **env, "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp}"})
        os.replace(tmp, template)
    return template


def start_prefect_server(home: Path, *, ui: bool = False) -> tuple[subprocess.Popen, PrefectAPI]:
    """`prefect server start` on 127.0.0.1 and a free port, with its own PREFECT_HOME and a copy
    of the migrated database; returns once healthy. Stop it with stop_process()."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # no runs from cron schedules
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })
    shutil.copyfile(_migrated_database(env), home / "prefect.db")
    log = open(home / "server.log", "w")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port",
                               str(port), *([] if ui else ["--no-ui"]), "--no-scheduler",
                               "--no-late-runs", "--analytics-off"], cwd=home, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()

    def healthy() -> bool:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited ({server.returncode}):\n"
                               f"{(home / 'server.log').read_text()[-4000:]}")
        return _healthy(url)

    try:
        try:
            wait_until(healthy, what="the prefect server to be healthy", timeout=STARTUP_TIMEOUT_S,
                       every=0.5)
        except AssertionError as e:
            raise RuntimeError(f"{e}:\n{(home / 'server.log').read_text()[-4000:]}") from None
    except BaseException:
        _stop(server)
        raise
    return server, PrefectAPI(url, env, home)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> PrefectAPI:
    from prefect.settings import (PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED,
                                  temporary_settings)

    from tests.support.flow_helpers import record_task_run_states

    record_task_run_states()   # flow_helpers.settled_task_runs waits for what this process ran
    server, api = start_prefect_server(tmp_path_factory.mktemp("prefect-home"))
    try:
        with temporary_settings(updates={PREFECT_API_URL: api.url, PREFECT_HOME: str(api.home),
                                         PREFECT_SERVER_ANALYTICS_ENABLED: False}):
            yield api
            _drain_prefect_clients()  # while the server still listens
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def work_pools(prefect_api: PrefectAPI) -> PrefectAPI:
    """Work pools cpu and gpu of type process (what `prefect work-pool create NAME --type
    process` does, in-process to spare two CLI start-ups)."""
    import anyio
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    async def create() -> None:
        async with get_client() as client:
            for pool in ("cpu", "gpu"):
                await client.create_work_pool(WorkPoolCreate(
                    name=pool, type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template()), overwrite=True)

    anyio.run(create)
    return prefect_api


@pytest.fixture(scope="session")
def deployed(work_pools: PrefectAPI) -> PrefectAPI:
    """The repo's deployments/prefect.yaml deployed, exactly as the README says."""
    prefect_api = work_pools
    prefect_cli(prefect_api, "--no-prompt", "deploy", "--all", "--prefect-file",
                "deployments/prefect.yaml")
    return prefect_api
