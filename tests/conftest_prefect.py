"""A real Prefect server for the test session (SQLite, 127.0.0.1, its own PREFECT_HOME).

Loaded from tests/conftest.py via ``pytest_plugins``. Measured facts it works around:
``prefect server start --background`` dies on its next log line (so: Popen in its own
session, output to a log file, poll ``/api/health``); ``prefect server status --wait``
has no timeout; the server sends telemetry unless PREFECT_SERVER_ANALYTICS_ENABLED=false
(and DO_NOT_TRACK=1); runs start after ~15 s unless the poll intervals are lowered; a
worker ignores the first SIGTERM (``stop_process`` escalates to SIGKILL).

Use in a test::

    def test_x(prefect_server):
        subprocess.run([...], env=prefect_server.env)       # CLI / workers
        with prefect_server.settings():                       # in-process client calls
            ...
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.servers import free_port, wait_until_serving

BIN = Path(sys.executable).parent


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left (workers ignore one SIGTERM)."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout / 2 if sig != signal.SIGKILL else timeout)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class PrefectServer:
    url: str  # http://127.0.0.1:PORT/api
    home: Path
    log: Path
    env: dict[str, str] = field(repr=False)

    @contextlib.contextmanager
    def settings(self) -> Iterator[None]:
        """Point in-process Prefect clients at this server for the ``with`` body."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.url}):
            yield

    def cli(self, *args: str, cwd: str | Path | None = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run the ``prefect`` CLI against this server."""
        res = subprocess.run([str(BIN / "prefect"), *args], env=self.env, cwd=cwd, text=True,
                             capture_output=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stdout}\n{res.stderr}")
        return res

    def popen(self, *args: str, log: Path, cwd: str | Path | None = None,
              extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a long-running process (e.g. a worker) in its own session; stop it with
        ``stop_process``."""
        fh = open(log, "ab")
        try:
            return subprocess.Popen([*args], env={**self.env, **(extra_env or {})}, cwd=cwd,
                                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            fh.close()


def wait_flow_run(server: "PrefectServer", run_id: str, timeout: float = 240):
    """Poll the server until the flow run reaches a final state; fail after ``timeout`` s."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with server.settings(), get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {run_id} still {run.state} after {timeout} s")
            time.sleep(1)


def _server_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # fast pickup instead of the ~15 s defaults
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
    })
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_PROFILES_PATH", None)
    return env


@contextlib.contextmanager
def running_server(home: Path) -> Iterator[PrefectServer]:
    """``prefect server start`` on a free 127.0.0.1 port with its own ``home``, for the body."""
    port = free_port()
    env = _server_env(home)
    log = home / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until_serving(f"{url}/health", proc, log, name="prefect server", timeout=90, interval=0.5)
        yield PrefectServer(url=url, home=home, log=log, env={**env, "PREFECT_API_URL": url})
    finally:
        stop_process(proc, timeout=20)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server for the whole session; stopped after it."""
    with running_server(tmp_path_factory.mktemp("prefect-home")) as server:
        try:
            yield server
        finally:
            _drain_in_process_workers()


def _drain_in_process_workers() -> None:
    """Flush logs/events this test process still queues for the API before the server goes
    (otherwise Prefect prints 'Error logging to API' at interpreter exit)."""
    if "prefect" not in sys.modules:
        return
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
    except Exception:  # draining is best effort; never fail a test session on it
        pass
