"""LiteLLM's proxy as a reproducible, offline benchmark peer.

The benchmark compares our gateway with LiteLLM's proxy, both forwarding to the same local
upstream. This module owns everything about the LiteLLM side:

* `ensure_litellm` installs a pinned LiteLLM into its own virtual environment (never the
  project's `.venv`) from the frozen `bench/litellm/requirements.txt`, once: a stamp file holds
  the hash of the requirements that were installed.
* `litellm_config` renders the proxy's YAML config: one model, `bench`, forwarded either through
  LiteLLM's Bedrock Converse provider (SigV4-signed, like our gateway) or its OpenAI provider.
  No database, no callbacks, no spend logs, no master key.
* `litellm_env` holds the environment that keeps the proxy offline and quiet: the bundled model
  cost map instead of the remote one, offline mode, telemetry vetoed, no release checks, no
  `.env` loading, no instance-metadata lookups.
* `start_litellm`, `wait_ready` and `stop` run one worker process on 127.0.0.1 (optionally pinned
  to a core) and time its startup, which is a benchmark figure of its own.

Clients talk to it in OpenAI format: `POST /v1/chat/completions` with `"model": "bench"`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, Literal

import yaml

__all__ = [
    "BEDROCK_MODEL_ID",
    "DEFAULT_VENV",
    "LITELLM_VERSION",
    "MODEL_NAME",
    "READY_PATH",
    "REQUIREMENTS",
    "Route",
    "child_env",
    "ensure_litellm",
    "litellm_config",
    "litellm_env",
    "non_loopback_connects",
    "start_litellm",
    "stop",
    "wait_ready",
]

LITELLM_VERSION: Final = "1.109.1"

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
REQUIREMENTS: Final = REPO_ROOT / "bench" / "litellm" / "requirements.txt"
DEFAULT_VENV: Final = REPO_ROOT / "bench" / ".litellm-venv"
STAMP_NAME: Final = ".bench-requirements.sha256"
INSTALL_LOG_NAME: Final = "pip-install.log"

MODEL_NAME: Final = "bench"
"""The one model the proxy serves; clients send `"model": "bench"`."""
BEDROCK_MODEL_ID: Final = "anthropic.claude-3-5-sonnet-20240620-v1:0"
"""The Bedrock model id forwarded upstream (the same one our gateway's demo config uses)."""
OPENAI_UPSTREAM_MODEL: Final = "bench-model"
BEDROCK_REGION: Final = "eu-central-1"
# The simulator's public, fake demo key pair: a simulator that verifies SigV4 accepts it, and it
# is valid nowhere else.
DUMMY_ACCESS_KEY_ID: Final = "AKIAHYBRIDROUTESIM01"
DUMMY_SECRET_ACCESS_KEY: Final = "hybridroute-simulator-secret-key"
DUMMY_OPENAI_KEY: Final = "sk-bench-dummy"

READY_PATH: Final = "/health/liveliness"
"""LiteLLM's unauthenticated liveness probe; uvicorn serves it only after app startup is done."""

Route = Literal["bedrock", "openai"]

# Environment variables the proxy inherits from us; everything else is dropped so that an
# ambient DATABASE_URL, LITELLM_MASTER_KEY, REDIS_HOST, provider key or HTTP(S)_PROXY cannot
# change what is being measured.
_INHERITED_ENV: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _requirement_count(requirements: Path) -> int:
    lines = requirements.read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.strip() and not line.lstrip().startswith("#"))


def _venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def _create_venv(venv_dir: Path, python: str, progress: Callable[[str], None]) -> None:
    if venv_dir.exists() and any(venv_dir.iterdir()) and not (venv_dir / "pyvenv.cfg").exists():
        raise RuntimeError(f"{venv_dir} exists and is not a virtual environment; refusing to clear")
    interpreter = shutil.which(python)
    if interpreter is None:
        raise RuntimeError(f"{python!r} not found on PATH; cannot create {venv_dir}")
    progress(f"litellm: creating virtual environment {venv_dir} with {interpreter}")
    subprocess.run([interpreter, "-m", "venv", "--clear", str(venv_dir)], check=True)


def _pip_install(venv_dir: Path, requirements: Path, progress: Callable[[str], None]) -> None:
    """Install the frozen set with --no-deps: it is already complete and exact."""
    total = _requirement_count(requirements)
    log_path = venv_dir / INSTALL_LOG_NAME
    command = [
        str(_venv_python(venv_dir)),
        "-m",
        "pip",
        "install",
        "--require-virtualenv",
        "--no-deps",
        "--only-binary=:all:",
        "-r",
        str(requirements),
    ]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    progress(f"litellm: installing {total} pinned packages (log: {log_path})")
    collected = 0
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if line.startswith(("Collecting ", "Processing ")):
                collected += 1
                if collected % 20 == 0 or collected == total:
                    progress(f"litellm: fetched {collected}/{total} packages")
            elif line.startswith("Installing collected packages"):
                progress("litellm: unpacking into the virtual environment")
        code = process.wait()
    if code != 0:
        tail = "".join(log_path.read_text(encoding="utf-8").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"pip install failed with exit code {code}; see {log_path}:\n{tail}")


def _installed_version(venv_dir: Path) -> str:
    probe = "import importlib.metadata as m; print(m.version('litellm'))"
    result = subprocess.run(
        [str(_venv_python(venv_dir)), "-c", probe], check=True, capture_output=True, text=True
    )
    return result.stdout.strip()


def ensure_litellm(
    venv_dir: Path,
    *,
    progress: Callable[[str], None] = print,
    requirements: Path = REQUIREMENTS,
    python: str = "python3",
) -> Path:
    """Make `venv_dir` hold the pinned LiteLLM proxy and return its `litellm` executable.

    Idempotent: when the stamp in `venv_dir` matches the requirements' hash and the executable
    exists, nothing runs. Otherwise the environment is recreated from scratch with `python`
    (the system `python3` by default) and the frozen requirements are installed, so a changed
    pin never leaves stale packages behind. Takes about a minute and ~780 MB.
    """
    venv_dir = venv_dir.resolve()
    if venv_dir == (REPO_ROOT / ".venv").resolve():
        raise ValueError("LiteLLM gets its own environment, never the project's .venv")
    executable = venv_dir / "bin" / "litellm"
    stamp = venv_dir / STAMP_NAME
    digest = _sha256(requirements)
    if executable.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        progress(f"litellm: {venv_dir} already has litellm {LITELLM_VERSION}")
        return executable
    started = time.monotonic()
    stamp.unlink(missing_ok=True)
    _create_venv(venv_dir, python, progress)
    _pip_install(venv_dir, requirements, progress)
    version = _installed_version(venv_dir)
    if version != LITELLM_VERSION:
        raise RuntimeError(f"installed litellm {version}, expected {LITELLM_VERSION}")
    if not executable.is_file():
        raise RuntimeError(f"{executable} missing after install")
    stamp.write_text(digest + "\n")
    progress(f"litellm: {LITELLM_VERSION} ready in {time.monotonic() - started:.0f} s")
    return executable


def litellm_config(
    upstream_url: str,
    *,
    route: Route,
    model_id: str = BEDROCK_MODEL_ID,
    aws_access_key_id: str = DUMMY_ACCESS_KEY_ID,
    aws_secret_access_key: str = DUMMY_SECRET_ACCESS_KEY,
) -> str:
    """The proxy's YAML config: one model, `bench`, forwarded to `upstream_url` over `route`.

    `bedrock` uses LiteLLM's Converse provider (`bedrock/converse/<model id>`; SigV4-signed,
    `aws_bedrock_runtime_endpoint` replaces the regional AWS endpoint, so requests go to
    `<upstream_url>/model/<model id>/converse[-stream]`). `openai` uses its OpenAI provider
    against `<upstream_url>/v1/chat/completions`. The settings are the ones LiteLLM documents
    for a lean proxy: no database, no logging callbacks, no spend logs, nothing verbose.
    """
    base = upstream_url.rstrip("/")
    params: dict[str, object]
    if route == "bedrock":
        params = {
            "model": f"bedrock/converse/{model_id}",
            "aws_bedrock_runtime_endpoint": base,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_region_name": BEDROCK_REGION,
        }
    elif route == "openai":
        params = {
            "model": f"openai/{OPENAI_UPSTREAM_MODEL}",
            "api_base": f"{base}/v1",
            "api_key": DUMMY_OPENAI_KEY,
        }
    else:
        raise ValueError(f"unknown route {route!r}; expected 'bedrock' or 'openai'")
    config: dict[str, object] = {
        "model_list": [{"model_name": MODEL_NAME, "litellm_params": params}],
        "litellm_settings": {
            "set_verbose": False,
            "json_logs": False,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "cache": False,
            "request_timeout": 600,
        },
        "general_settings": {
            # No master_key, like our gateway (which has no inbound auth). This LiteLLM
            # refuses to start without one unless this documented switch is on.
            "dangerously_permit_weak_or_unset_master_key": True,
            # No database_url: nothing is stored. These keep the per-request path from even
            # queueing spend/error rows or budget reservations.
            "disable_spend_logs": True,
            "disable_spend_updates": True,
            "disable_error_logs": True,
            "disable_budget_reservation": True,
            "background_health_checks": False,
            # Nothing sits in front of the proxy on loopback; also silences a startup warning.
            "trusted_proxy_ranges": [],
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


def litellm_env() -> dict[str, str]:
    """Environment variables that keep the proxy offline, quiet and independent of the cwd.

    Every variable here is read by LiteLLM 1.109.1 itself (see bench/litellm/README.md).
    """
    return {
        # Use the model cost map bundled in the wheel: by default LiteLLM downloads it from
        # GitHub at import time (even `litellm --help` tries).
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        # Master switch: every catalog/check/tokenizer LiteLLM fetches on its own (cost map,
        # Anthropic beta headers, blog posts, policy templates, auto-router presets, release
        # check, breached-password check, HF tokenizers) uses its bundled copy or is skipped.
        "LITELLM_OFFLINE_MODE": "true",
        "LITELLM_DISABLE_LATEST_RELEASE_CHECK": "true",
        # Usage telemetry: off by default without a database; the veto makes that explicit.
        "LITELLM_TELEMETRY_DISABLED": "true",
        # Only errors on stdout; this also sets uvicorn's level, which drops its access log.
        "LITELLM_LOG": "ERROR",
        # Do not read a stray .env from the working directory.
        "LITELLM_MODE": "PRODUCTION",
        # Never ask the EC2 instance-metadata service (169.254.169.254) for credentials.
        "AWS_EC2_METADATA_DISABLED": "true",
        # Tokenizers come from the wheel; never from the Hugging Face hub.
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The proxy's whole environment: a few basics from `base` (default os.environ), plus
    `litellm_env()`. Nothing else is inherited."""
    source = os.environ if base is None else base
    env = {name: source[name] for name in _INHERITED_ENV if name in source}
    env.update(litellm_env())
    return env


def start_litellm(
    executable: Path,
    config_path: Path,
    port: int,
    *,
    cpu: int | None = None,
    log_path: Path | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start the proxy: one uvicorn worker on 127.0.0.1:`port`, serving `config_path`.

    `cpu` pins it with `taskset -c`. Output goes to `log_path` (default: the config path with a
    `.log` suffix). `prefix` is put in front of the whole command (e.g. an strace invocation).
    The proxy runs in its own session and working directory (the config's), so `stop` can
    signal its whole process group and no stray `.env` or module is picked up.
    """
    command = [
        str(executable),
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    if cpu is not None:
        taskset = shutil.which("taskset")
        if taskset is None:
            raise RuntimeError("taskset not found (Debian package util-linux)")
        command = [taskset, "-c", str(cpu), *command]
    command = [*prefix, *command]
    log_file = config_path.with_suffix(".log") if log_path is None else log_path
    with log_file.open("wb") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=config_path.parent,
            start_new_session=True,
        )


def wait_ready(
    port: int,
    timeout_s: float = 120,
    *,
    process: subprocess.Popen[bytes] | None = None,
    since: float | None = None,
) -> float:
    """Seconds until `GET /health/liveliness` on `port` answers 200.

    Counted from `since` (a `time.monotonic()` value, e.g. taken just before `start_litellm`)
    or from this call. With `process`, fails at once if the proxy exits while starting.
    """
    started = time.monotonic() if since is None else since
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{port}{READY_PATH}"
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"litellm exited with code {process.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"litellm on port {port} not ready after {timeout_s:.0f} s")
        _pause(0.05)


def _pause(seconds: float) -> None:
    # A blocking wait between probes from the (synchronous) harness thread.
    time.sleep(seconds)  # noqa: TID251


def stop(process: subprocess.Popen[bytes], *, grace_s: float = 10.0) -> int:
    """Stop the proxy: SIGTERM to its process group, SIGKILL after `grace_s`. Returns its code."""
    if process.poll() is not None:
        return process.returncode
    _signal_group(process, signal.SIGTERM)
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        return process.wait(timeout=grace_s)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


_CONNECT_FAMILY = re.compile(r"connect\(\d+, \{sa_family=(AF_\w+)")
_INET_ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


def non_loopback_connects(strace_log: str) -> list[str]:
    """The `connect()` calls in an `strace -e trace=connect` log that leave the machine.

    Allowed: IPv4 127.0.0.0/8, IPv6 ::1 and ::ffff:127.x, and local families (AF_UNIX,
    AF_NETLINK, AF_UNSPEC disconnects). Any other address family or address is returned.
    """
    offending: list[str] = []
    for line in strace_log.splitlines():
        family = _CONNECT_FAMILY.search(line)
        if family is None:
            continue
        if family.group(1) in ("AF_UNIX", "AF_NETLINK", "AF_UNSPEC"):
            continue
        if family.group(1) not in ("AF_INET", "AF_INET6"):
            offending.append(line)
            continue
        address = _INET_ADDRESS.search(line)
        host = None if address is None else (address.group(1) or address.group(2))
        if host is None or not _is_loopback(host):
            offending.append(line)
    return offending


def _is_loopback(host: str) -> bool:
    return host.startswith(("127.", "::ffff:127.")) or host == "::1"
