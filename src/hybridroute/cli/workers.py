"""`hybridroute serve --workers N`: N gateway processes serving one port.

The parent binds the port first (so a taken port is reported once, clearly), makes a fresh
directory for the workers' metric files (`PROMETHEUS_MULTIPROC_DIR`, so `/metrics` from any
worker counts every worker's requests), and starts N `hybridroute serve` processes. On Linux
each worker listens on the port itself (`SO_REUSEPORT`: the kernel spreads new connections
evenly across them) while the parent only holds the port, bound but not listening; elsewhere
the workers accept on the parent's listening socket, which they inherit. On Linux a worker also
stops by itself when the parent dies, so none is left serving unsupervised.

Worker 0, the leader, also serves on a loopback port of its own: the other workers ship their
request events there (so its traffic window, SLO figures, alerts and rollups count every
worker's requests) and forward admin requests there (so the admin API answers the same from any
worker). Only the leader evaluates alert rules, sends notifications and writes rollups; every
worker serves requests. A worker that dies is started again (after 1 s, doubling
to 30 s while it keeps dying) and its live gauges are dropped from the metrics; SIGINT or
SIGTERM stops them all (SIGTERM, then SIGKILL after 10 s) and removes the metrics directory.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from types import FrameType

from prometheus_client import multiprocess

from hybridroute.observability.metrics import MULTIPROC_ENV
from hybridroute.runtime import STANDALONE, WorkerRole
from hybridroute.serving import REUSE_PORT, bind_socket

__all__ = ["LEADER_PORT_ENV", "WORKER_TOKEN_ENV", "WorkerPool", "worker_role"]

LEADER_PORT_ENV = "HYBRIDROUTE_WORKER_LEADER_PORT"
WORKER_TOKEN_ENV = "HYBRIDROUTE_WORKER_TOKEN"


def worker_role(index: int | None) -> tuple[WorkerRole, int | None]:
    """This process's role (from its index and the parent's environment) and, for the
    leader, the loopback port it also serves on for the followers."""
    if index is None:
        return STANDALONE, None
    port = int(os.environ[LEADER_PORT_ENV])
    token = os.environ[WORKER_TOKEN_ENV]
    role = WorkerRole(index=index, leader_url=f"http://127.0.0.1:{port}", token=token)
    return role, port if role.leader else None


_STOP_GRACE_S = 10.0
_RESTART_MIN_S, _RESTART_MAX_S = 1.0, 30.0
_READY_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before it runs: ask Linux for SIGTERM when the parent dies."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # no prctl here: the parent's stop still applies
        pass


class _Worker:
    __slots__ = ("backoff_s", "index", "process", "restart_at")

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.backoff_s = _RESTART_MIN_S
        self.restart_at = 0.0


class WorkerPool:
    """Starts, watches and stops the gateway's worker processes."""

    def __init__(
        self,
        config_file: str,
        *,
        host: str,
        port: int,
        workers: int,
        echo: Callable[[str], None],
    ) -> None:
        self._config_file = config_file
        self._host, self._port = host, port
        self._workers = [_Worker(i) for i in range(workers)]
        self._echo = echo
        self._stopping = False
        self._bound_port = port

    def run(self) -> int:
        """Serve until SIGINT/SIGTERM; the exit status."""
        sock = bind_socket(self._host, self._port, reuse_port=REUSE_PORT, listen=not REUSE_PORT)
        sock.set_inheritable(True)
        port = sock.getsockname()[1]
        self._bound_port = port
        metrics_dir = tempfile.mkdtemp(prefix="hybridroute-metrics-")
        # The leader (worker 0) also serves on a loopback port the followers reach it on; the
        # token (in the environment, not the command line) proves a caller is a worker.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            leader_port = probe.getsockname()[1]
        env = {
            **os.environ,
            MULTIPROC_ENV: metrics_dir,
            LEADER_PORT_ENV: str(leader_port),
            WORKER_TOKEN_ENV: secrets.token_urlsafe(32),
        }
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for worker in self._workers:
                self._start(worker, sock.fileno(), env)
            host = f"[{self._host}]" if ":" in self._host else self._host
            url = f"http://{host}:{port}"
            if not self._wait_ready(url):
                if self._stopping:
                    return 0  # told to stop while starting: not a failure
                self._echo(f"hybridroute: no worker answered {url}/health; see the log above")
                return 1
            self._echo(f"hybridroute serving on {url} ({len(self._workers)} worker processes)")
            while not self._stopping:
                self._watch(sock.fileno(), env, metrics_dir)
                time.sleep(0.2)  # noqa: TID251 - the supervisor process has nothing else to do
            return 0
        finally:
            self._stop_all()
            sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _start(self, worker: _Worker, fd: int, env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "hybridroute", "serve", "--config", self._config_file]
        command += ["--worker-index", str(worker.index)]
        if REUSE_PORT:
            command += ["--host", self._host, "--port", str(self._bound_port), "--reuse-port"]
            fds: tuple[int, ...] = ()
        else:
            command += ["--worker-fd", str(fd)]
            fds = (fd,)
        worker.process = subprocess.Popen(
            command, env=env, pass_fds=fds, preexec_fn=_die_with_parent
        )

    def _wait_ready(self, url: str) -> bool:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline and not self._stopping:
            if all(w.process is not None and w.process.poll() is not None for w in self._workers):
                return False  # every worker exited before answering
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)  # noqa: TID251 - polling a child process from the supervisor
        return False

    def _watch(self, fd: int, env: dict[str, str], metrics_dir: str) -> None:
        """Start again any worker that died (with backoff)."""
        now = time.monotonic()
        for worker in self._workers:
            process = worker.process
            if process is None:
                if now >= worker.restart_at:
                    self._start(worker, fd, env)
                continue
            status = process.poll()
            if status is None:
                if now - worker.restart_at > 60:
                    worker.backoff_s = _RESTART_MIN_S  # it has stayed up: forget its history
                continue
            multiprocess.mark_process_dead(process.pid, metrics_dir)  # type: ignore[no-untyped-call]
            self._echo(
                f"hybridroute: worker {worker.index} (pid {process.pid}) exited with status "
                f"{status}; starting it again in {worker.backoff_s:.0f} s"
            )
            worker.process = None
            worker.restart_at = now + worker.backoff_s
            worker.backoff_s = min(worker.backoff_s * 2, _RESTART_MAX_S)

    def _stop_all(self) -> None:
        running = [w.process for w in self._workers if w.process and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
