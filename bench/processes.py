"""The benchmark's processes: starting them pinned to a core, waiting until they serve, and
reading what they cost (CPU time and resident memory from /proc)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Process",
    "ProcessGroup",
    "cpu_seconds",
    "free_port",
    "pinned",
    "rss_mb",
    "wait_http",
]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """`command` run on one CPU core (via taskset), when a core is given and taskset exists."""
    if cpu is None or shutil.which("taskset") is None:
        return list(command)
    return ["taskset", "-c", str(cpu), *command]


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _tree(pid: int) -> list[int]:
    """`pid` and every live descendant (a gateway may run its workers as child processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants."""
    total = 0
    for member in _tree(pid):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident set size of a process and its live descendants, in MiB."""
    total = 0
    for member in _tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(x.split()[1]) for x in lines if x.startswith("VmRSS:")), 0)
    return total / 1024.0


def wait_http(url: str, timeout_s: float, *, ready_key: str | None = None) -> float:
    """Seconds until `url` answers 200 (and, for /ready, every route is ready)."""
    start = time.monotonic()
    deadline = start + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read()
                if ready_key is None:
                    return time.monotonic() - start
                data = json.loads(body)
                routes = data.get(ready_key, {})
                if all(r.get("ready") for r in routes.values()):
                    return time.monotonic() - start
                last = f"routes not ready: {data}"
        except (OSError, urllib.error.URLError, ValueError) as error:
            last = str(error)
        time.sleep(0.01)  # noqa: TID251 - polling another process from a plain function
    raise RuntimeError(f"{url} did not become ready within {timeout_s:g}s ({last})")


@dataclass
class Process:
    """A started process and what it is called in progress messages."""

    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


class ProcessGroup:
    """Every process the benchmark starts; all are stopped when the group closes."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._processes: list[Process] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        cpu: int | None = None,
        env: dict[str, str] | None = None,
        capture_stdout: bool = False,
    ) -> Process:
        log = (self._log_dir / f"{name}.log").open("wb")
        popen = subprocess.Popen(
            pinned(command, cpu),
            stdout=subprocess.PIPE if capture_stdout else log,
            stderr=log,
            env={**os.environ, **(env or {})},
        )
        log.close()
        process = Process(name, popen)
        self._processes.append(process)
        return process

    def start_python_module(
        self, name: str, module: str, args: Sequence[str], *, cpu: int | None = None
    ) -> Process:
        return self.start(name, [sys.executable, "-m", module, *args], cpu=cpu)

    def read_line(self, process: Process, timeout_s: float = 30.0) -> str:
        """The next line the process printed (for `ready <port>` handshakes)."""
        assert process.popen.stdout is not None
        deadline = time.monotonic() + timeout_s
        os.set_blocking(process.popen.stdout.fileno(), False)
        buffer = b""
        while time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError, TypeError):
                chunk = process.popen.stdout.read()
                if chunk:
                    buffer += chunk
            if b"\n" in buffer:
                return buffer.split(b"\n", 1)[0].decode()
            if not process.alive():
                break
            time.sleep(0.01)  # noqa: TID251 - polling another process from a plain function
        log = self._log_dir / f"{process.name}.log"
        raise RuntimeError(f"{process.name} did not start; see {log}")

    def stop(self, process: Process) -> None:
        if process.alive():
            process.popen.send_signal(signal.SIGTERM)
            try:
                process.popen.wait(10)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(10)
        if process.popen.stdout is not None:
            process.popen.stdout.close()
        with contextlib.suppress(ValueError):
            self._processes.remove(process)

    def close(self) -> None:
        for process in list(reversed(self._processes)):
            self.stop(process)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Process]:
        return iter(self._processes)
