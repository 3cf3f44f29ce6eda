"""influxctl children never outlive rotator (issue 10 §1b); private configs never outlive their process (11.3).

A supervisor or the OOM killer kills rotator's process alone (``kill -9 PID``, not the group):
its influxctl child must die with it, before it can complete a ``create`` that recovery has
already looked for. The fake influxctl's ``pause`` fault stands for a slow RPC: it writes its
pid to a marker, sleeps, and then creates the token (the side effect happens *after* the pause).

The private config directories (each holds a token) are swept by lock, not by pid: rotator runs
as PID 1 in containers and pids are reused (a Lambda sandbox, a restarted pod).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.adapters.influxctl import common as influxctl_common
from rotator.adapters.influxctl.common import (
    InfluxctlIssuer,
    default_run,
    private_config,
    sweep_stale_configs,
)
from rotator.adapters.influxctl.database import InfluxctlDatabaseIssuer, InfluxctlDatabaseSettings
from rotator.adapters.influxctl.management import InfluxctlManagementIssuer, InfluxctlManagementSettings
from rotator.config.adapter_settings import validate_settings
from rotator.core.errors import TransientError
from rotator.core.journal import open_journal
from tests.fakes.fixtures import FakeInfluxctlFixture
from tests.harness import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal and /proc: Linux")

DESCRIPTION = "rotator:slow:run-killed"
#: The paused create lands this long after its marker: far longer than the kill takes (~0.1 s).
PAUSE_S = 1.5

#: A stand-in for ``rotator rotate``: the issuer's mint, in a process of its own that the test kills.
DRIVER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    from rotator.adapters.influxctl.database import InfluxctlDatabaseIssuer, InfluxctlDatabaseSettings
    from rotator.adapters.influxctl.management import InfluxctlManagementIssuer, InfluxctlManagementSettings
    from rotator.config.adapter_settings import validate_settings
    from rotator.core.child_process import start_children_within
    from rotator.core.contracts import MintRequest

    kind, binary, description, timeout_s, side_effect = sys.argv[1:6]
    common = {
        "influxctl": binary,
        "timeout_s": float(timeout_s),
        "profile": {"product": "clustered", "host": "influxdb.example.test"},
        "auth": {"method": "mgmt_token", "token": {"env": "DRIVER_MGMT_TOKEN"}},
    }
    if kind == "management":
        issuer = InfluxctlManagementIssuer(validate_settings(InfluxctlManagementSettings, common))
    else:
        settings = validate_settings(InfluxctlDatabaseSettings, {**common, "permissions": {"read": ["db1"]}})
        issuer = InfluxctlDatabaseIssuer(settings)
    expires = datetime.now(UTC) + timedelta(days=1)
    if side_effect == "yes":  # as the engine mints: right after its lease check (Engine._fenced_call)
        with start_children_within(30):
            issuer.mint(MintRequest("slow", "killed", description, expires), None)
    else:
        issuer.mint(MintRequest("slow", "killed", description, expires), None)
    print("minted: the test should have killed this process")
    """
)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not: it can do nothing more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _wait_dead(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return not _alive(pid)


def _wait_for(path: Path, within_s: float = 20) -> str:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {within_s}s")


def _ignores_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def _term_ignoring_wrapper(tmp_path: Path, fake: FakeInfluxctlFixture) -> Path:
    """An influxctl that ignores SIGTERM (``trap '' TERM`` survives ``exec``)."""
    wrapper = tmp_path / "influxctl-ignores-term"
    wrapper.write_text(f'#!/bin/sh\ntrap \'\' TERM\nexec "{fake.binary}" "$@"\n')
    wrapper.chmod(0o700)
    return wrapper


def _start_driver(fake: FakeInfluxctlFixture, tmp_path: Path, manager: str, kind: str, binary: Path | str,
                  *, timeout_s: float = 60, side_effect: bool = False) -> subprocess.Popen[bytes]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**fake.env, "DRIVER_MGMT_TOKEN": manager, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(script), kind, str(binary), DESCRIPTION, str(timeout_s), "yes" if side_effect else "no"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the driver's own group: the test's kill must not reach the child by group
    )


@pytest.mark.parametrize("side_effect", [False, True], ids=["call", "side-effect"])
@pytest.mark.parametrize("ignore_term", [False, True], ids=["plain", "ignores-SIGTERM"])
@pytest.mark.parametrize("kind", ["management", "database"])
def test_kill_9_of_rotator_alone_kills_the_influxctl_child_before_it_creates(
    fake_influxctl: FakeInfluxctlFixture, tmp_path: Path, kind: str, ignore_term: bool, side_effect: bool
) -> None:
    """Also for a side effect's child, which runs under the watchdog (the watchdog's death signal is
    SIGTERM, on which it kills its group)."""
    state = fake_influxctl.state
    manager, _ = state.add_token("automation manager")
    state.add_database("db1")
    marker = tmp_path / "create-started"
    command = "management create" if kind == "management" else "token create"
    state.add_fault(command, "pause", seconds=PAUSE_S, marker=marker)
    binary = _term_ignoring_wrapper(tmp_path, fake_influxctl) if ignore_term else fake_influxctl.binary
    before = {t["id"] for t in state.tokens()} | {t["id"] for t in state.db_tokens()}
    driver = _start_driver(fake_influxctl, tmp_path, manager, kind, binary, side_effect=side_effect)
    try:
        child = int(_wait_for(marker))
        paused_at = time.monotonic()  # the pause began before the marker was seen: the create would land before
        assert _alive(child)
        group, driver_group = os.getpgid(child), os.getpgid(driver.pid)
        if ignore_term:
            assert _ignores_sigterm(child)
        started = time.monotonic()
        os.kill(driver.pid, signal.SIGKILL)  # the rotator process only, as a supervisor or the OOM killer does
        driver.wait(timeout=10)
        assert _wait_dead(child, within_s=1.0), "the influxctl child outlived the killed rotator"
        died_after = time.monotonic() - started
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    # Past the moment the paused create would have completed: nothing was created.
    time.sleep(max(0.0, paused_at + PAUSE_S + 0.5 - time.monotonic()))
    after = {t["id"]: t for t in state.tokens()} | {t["id"]: t for t in state.db_tokens()}
    assert set(after) == before, "the killed rotator's influxctl child created a token after all"
    assert not [t for t in after.values() if t.get("description") == DESCRIPTION]
    assert died_after < 1.0
    assert group != driver_group, "influxctl runs in a process group of its own (killed as a whole)"
    if not side_effect:
        assert group == child, "influxctl leads its group"


@pytest.mark.parametrize("kind", ["management", "database"])
def test_a_side_effects_child_ends_at_its_timeout_while_rotator_is_paused(
    fake_influxctl: FakeInfluxctlFixture, tmp_path: Path, kind: str
) -> None:
    """rotator is stopped (SIGSTOP) while its influxctl ``create`` runs: rotator's own timeout cannot
    fire, and recovery elsewhere waits only the call's timeout (its mint window) before it searches
    the run's tag. The watchdog kills the child at that timeout (+1 s), while rotator is still
    stopped, so the create never lands after recovery looked. Before, it slept its pause out and minted."""
    state = fake_influxctl.state
    manager, _ = state.add_token("automation manager")
    state.add_database("db1")
    marker = tmp_path / "create-started"
    # The create would land at 6 s, well past the watchdog's kill at the 2 s timeout (+1 s).
    state.add_fault("management create" if kind == "management" else "token create", "pause", seconds=6,
                    marker=marker)
    before = {t["id"] for t in state.tokens()} | {t["id"] for t in state.db_tokens()}
    driver = _start_driver(fake_influxctl, tmp_path, manager, kind, fake_influxctl.binary, timeout_s=2,
                           side_effect=True)
    try:
        child = int(_wait_for(marker))
        os.kill(driver.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        assert _wait_dead(child, within_s=6.0), "the child of a stopped rotator outlived its timeout"
        killed_after = time.monotonic() - stopped_at
        assert Path(f"/proc/{driver.pid}/stat").read_text().rpartition(")")[2].split()[0] == "T", \
            "rotator was stopped all along"
        time.sleep(6.5 - killed_after)  # past the moment the paused create would have landed
        after = {t["id"]: t for t in state.tokens()} | {t["id"]: t for t in state.db_tokens()}
        assert set(after) == before, "the stopped rotator's child created a token after its timeout"
        os.kill(driver.pid, signal.SIGCONT)
        _out, err = driver.communicate(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode != 0 and b"minted" not in _out
    assert b"TransientError" in err, err  # killed at its deadline, or past rotator's own timeout: retried


def test_a_side_effects_child_reports_exit_codes_signals_output_and_exec_errors_as_a_plain_child_does(
    tmp_path: Path,
) -> None:
    from rotator.core.child_process import start_children_within

    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\nexit 0\n")
    cases = [
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"],
    ]
    for argv in cases:
        plain = default_run(argv, 10)
        with start_children_within(30):
            watched = default_run(argv, 10)
        assert (watched.args, watched.returncode, watched.stdout, watched.stderr) == (
            plain.args, plain.returncode, plain.stdout, plain.stderr), argv
    assert [default_run(argv, 10).returncode for argv in cases] == [3, -signal.SIGTERM]
    for argv, error in ([str(tmp_path / "missing")], FileNotFoundError), ([str(script)], PermissionError):
        with pytest.raises(error):
            default_run(argv, 10)
        with start_children_within(30), pytest.raises(error) as raised:
            default_run(argv, 10)
        assert raised.value.strerror, raised.value


def test_the_watchdog_and_its_caller_agree_on_how_it_reports_a_command_it_could_not_execute() -> None:
    from rotator.core import child_process, child_watchdog

    assert child_watchdog.EXIT_NOT_EXECUTED == child_process._WATCHDOG_NOT_EXECUTED
    assert child_watchdog.ERRNO_PREFIX == child_process._WATCHDOG_ERRNO_PREFIX
    assert child_watchdog.EXIT_PAST_DEADLINE == child_process.EXIT_PAST_DEADLINE
    assert child_process.exec_error(127, f"{child_watchdog.ERRNO_PREFIX}2\n").errno == 2  # type: ignore[union-attr]
    assert child_process.exec_error(127, "influxctl: some error\n") is None
    assert child_process.exec_error(1, f"{child_watchdog.ERRNO_PREFIX}2\n") is None


def test_a_timed_out_call_kills_the_whole_process_group(fake_influxctl: FakeInfluxctlFixture, tmp_path: Path) -> None:
    """A child that hangs is killed with everything it started (SIGKILL: SIGTERM could be ignored)."""
    grandchild_pid = tmp_path / "grandchild.pid"
    wrapper = tmp_path / "influxctl-with-grandchild"
    wrapper.write_text(
        f'#!/bin/sh\ntrap \'\' TERM\nsleep 60 & echo $! > "{grandchild_pid}"\nexec "{fake_influxctl.binary}" "$@"\n'
    )
    wrapper.chmod(0o700)
    manager, _ = fake_influxctl.state.add_token("automation manager")
    fake_influxctl.state.add_fault("management list", "hang", seconds=60)
    settings = validate_settings(
        InfluxctlManagementSettings,
        {"influxctl": str(wrapper), "timeout_s": 1, "profile": {"product": "clustered", "host": "h.example.test"}},
    )
    issuer = InfluxctlManagementIssuer(settings)
    from rotator.core.secret import Secret

    started = time.monotonic()
    with pytest.raises(TransientError, match="did not finish within 1s"):
        issuer.list_tokens(Secret(manager))
    assert time.monotonic() - started < 5
    grandchild = int(_wait_for(grandchild_pid))
    assert _wait_dead(grandchild, within_s=1.0), "a process the influxctl child started outlived the call"



def test_a_timed_out_call_returns_though_a_process_in_another_session_holds_its_output(tmp_path: Path) -> None:
    """The group kill misses a process started with setsid (a wrapper's background job); it holds
    the pipes, and reading them to the end waited for it: the call hung past its timeout."""
    grandchild_pid = tmp_path / "grandchild.pid"
    wrapper = tmp_path / "influxctl-with-a-session-of-its-own"
    wrapper.write_text(f'#!/bin/sh\nsetsid sleep 60 & echo $! > "{grandchild_pid}"\nsleep 60\n')
    wrapper.chmod(0o700)
    started = time.monotonic()
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            default_run([str(wrapper)], 1)
        assert time.monotonic() - started < 1 + 2 + 3  # timeout, then at most PIPE_DRAIN_S of reading
    finally:
        if grandchild_pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(grandchild_pid.read_text()), signal.SIGKILL)


def test_a_finished_command_whose_background_process_holds_its_output_is_not_a_timeout(tmp_path: Path) -> None:
    """A wrapper that exits (its create done) but left a process in a session of its own holding
    stdout: the call returned only at its timeout, as a TimeoutExpired (a finished create or revoke
    reported as unknown). Now its exit code and output come back once the pipes had a moment."""
    grandchild_pid = tmp_path / "grandchild.pid"
    wrapper = tmp_path / "influxctl-exits-leaving-a-session"
    wrapper.write_text(f'#!/bin/sh\necho created\nsetsid sleep 60 & echo $! > "{grandchild_pid}"\nexit 3\n')
    wrapper.chmod(0o700)
    started = time.monotonic()
    try:
        done = default_run([str(wrapper)], 20)
        assert (done.returncode, done.stdout) == (3, "created\n")
        assert time.monotonic() - started < 8  # the exit, then at most PIPE_DRAIN_S of reading
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.kill(int(grandchild_pid.read_text()), signal.SIGKILL)

@pytest.mark.parametrize("stream", ["stdout", "stderr"])
@pytest.mark.parametrize("side_effect", [False, True], ids=["list", "revoke"])
def test_a_command_that_writes_too_much_is_stopped_at_the_output_cap(
        tmp_path: Path, stream: str, side_effect: bool) -> None:
    """A policy's `influxctl` naming another program (or a debug setting) that writes on and on:
    communicate() kept all of it in memory, up to the call's timeout. Reading stops at the cap, the
    group is killed, and the error says what happened; a side effect stopped mid-way may have taken
    effect, so it is not a definite refusal."""
    from rotator.core.child_process import start_children_within
    from rotator.core.errors import IssuerOutputError
    from rotator.core.secret import Secret

    binary = tmp_path / "not-influxctl"
    binary.write_text(f"#!/bin/sh\nexec {sys.executable} -c "
                      f"'import sys; sys.{stream}.buffer.write(b\"x\" * (64 * 1024 * 1024 + 65536))'\n")
    binary.chmod(0o700)
    settings = validate_settings(
        InfluxctlManagementSettings,
        {"influxctl": str(binary), "timeout_s": 60, "profile": {"product": "clustered", "host": "h.example.test"}},
    )
    issuer = InfluxctlManagementIssuer(settings)
    what = "list" if not side_effect else "revoke"
    message = f"influxctl management {what} wrote more than 64 MiB to {stream} and was stopped"
    if side_effect:
        with start_children_within(30), pytest.raises(TransientError, match=f"{message}; it may have taken effect"):
            issuer.revoke("11111111-1111-4111-8111-111111111111", Secret("m" * 40))
    else:
        with pytest.raises(IssuerOutputError, match=message) as raised:
            issuer.list_tokens(Secret("m" * 40))
        assert "names the influxctl binary" in (raised.value.hint or "")


def test_output_reads_as_text_mode_gave_it(tmp_path: Path) -> None:
    """Read as bytes now (to cap it): still UTF-8 with bad bytes replaced, and universal newlines."""
    done = default_run([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'a\\r\\nb\\rc\\xff\\n'); "
                        "sys.stderr.buffer.write(b'e\\r\\n')"], 10)
    assert (done.stdout, done.stderr) == ("a\nb\nc\ufffd\n", "e\n")


def test_a_finished_call_leaves_no_process_of_its_group(fake_influxctl: FakeInfluxctlFixture, tmp_path: Path) -> None:
    grandchild_pid = tmp_path / "grandchild.pid"
    wrapper = tmp_path / "influxctl-leaves-a-grandchild"
    wrapper.write_text(f'#!/bin/sh\nsleep 60 >/dev/null 2>&1 & echo $! > "{grandchild_pid}"\nexit 0\n')
    wrapper.chmod(0o700)
    done = default_run([str(wrapper)], 10)
    assert done.returncode == 0
    assert _wait_dead(int(_wait_for(grandchild_pid)), within_s=1.0)


@pytest.mark.parametrize(
    ("issuer", "timeout_s", "expected"),
    [(InfluxctlManagementIssuer, 60, 130.0), (InfluxctlDatabaseIssuer, 7.5, 25.0)],
)
def test_call_timeout_seconds_bounds_an_issuer_call(
    issuer: type[InfluxctlIssuer], timeout_s: float, expected: float
) -> None:  # type: ignore[type-arg]
    common = {
        "timeout_s": timeout_s,
        "profile": {"product": "clustered", "host": "h.example.test"},
        "auth": {"method": "mgmt_token", "token": {"env": "UNUSED"}},
    }
    if issuer is InfluxctlDatabaseIssuer:
        built = issuer(validate_settings(InfluxctlDatabaseSettings, {**common, "permissions": {"read": ["db1"]}}))
    else:
        built = issuer(validate_settings(InfluxctlManagementSettings, common))
    # Two influxctl commands (create + list for the id; revoke + list), each timeout_s + 5 s to start and kill.
    assert built.call_timeout_seconds == expected
    assert getattr(built, "call_timeout_seconds", 300.0) == expected  # how the engine reads it


# --- private configs: swept by lock, not by pid (issue 11.3) ----------------------------------


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    yield directory


def _leftover(tmp: Path, name: str, *, lock: bool = True) -> Path:
    """A private config as a process killed mid-call leaves it: the token file and its (now free) lock."""
    directory = tmp / name
    directory.mkdir(mode=0o700)
    (directory / "config.toml").write_text('[[profile]]\nmgmt_token = "M.V1.leftover-0123456789"\n')
    if lock:
        (directory / "lock").write_text("")
    return directory


def test_a_dead_processs_config_is_removed_even_when_its_pid_is_ours_or_1(private_tmp: Path) -> None:
    # The names the pid-based sweep trusted: our own pid (a reused pid; PID 1 in a container) and pid 1.
    reused = _leftover(private_tmp, f"rotator-influxctl-{os.getpid()}-abcd1234")
    init = _leftover(private_tmp, "rotator-influxctl-1-efgh5678")
    plain = _leftover(private_tmp, "rotator-influxctl-zz9x")
    sweep_stale_configs()
    assert not reused.exists() and not init.exists() and not plain.exists()


def test_a_live_processs_config_is_kept(private_tmp: Path) -> None:
    other = _leftover(private_tmp, "rotator-influxctl-held-by-another")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX);"
            " print('locked', flush=True); time.sleep(60)",
            str(other / "lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        sweep_stale_configs()
        assert (other / "config.toml").exists()
        with private_config("x = 1\n") as mine:  # this process's own, in use: a sweep meanwhile keeps it
            sweep_stale_configs()
            assert mine.exists()
            assert (mine.parent / "lock").exists()
        assert not mine.parent.exists()
    finally:
        holder.kill()
        holder.wait()
    sweep_stale_configs()  # the holder died (SIGKILL): its lock went with it
    assert not other.exists()


def test_a_directory_without_a_lock_is_kept_while_young(private_tmp: Path) -> None:
    young = _leftover(private_tmp, "rotator-influxctl-young", lock=False)
    old = _leftover(private_tmp, "rotator-influxctl-1234-old", lock=False)  # an older rotator's leftover
    long_ago = time.time() - 3600
    os.utime(old, (long_ago, long_ago))
    sweep_stale_configs()
    assert young.exists() and not old.exists()


def test_symlinks_and_files_are_left_alone(private_tmp: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "lock").write_text("")
    (private_tmp / "rotator-influxctl-link").symlink_to(target)
    (private_tmp / "rotator-influxctl-file").write_text("")
    sweep_stale_configs()
    assert target.exists() and (private_tmp / "rotator-influxctl-file").exists()


def test_a_lock_held_by_this_process_through_another_descriptor_counts_as_alive(private_tmp: Path) -> None:
    directory = _leftover(private_tmp, "rotator-influxctl-other-thread")
    fd = os.open(directory / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        sweep_stale_configs()
        assert directory.exists()
    finally:
        os.close(fd)


POLICY = """\
[rotator]
journal = "journal.db"

[[policy]]
name = "mgmt"
schedule = "30d"

[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster.example.test"

[[policy.store]]
type = "vault-kv2"
url = "https://vault.example.test:8200"
path = "influx/mgmt"
auth = { method = "token", token = { env = "VAULT_TOKEN" } }
"""


@pytest.mark.parametrize("command", [["status"], ["plan"], ["validate"]])
def test_every_command_that_loads_a_policy_file_sweeps(tmp_path: Path, command: list[str]) -> None:
    """docs/policy.md: the file is "deleted by the next rotator process", whatever it does."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    leftover = _leftover(tmp, "rotator-influxctl-1-deadbeef")
    (tmp_path / "rotator.toml").write_text(POLICY)
    open_journal(f"sqlite:///{tmp_path / 'journal.db'}").close()  # status and plan read an existing journal
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "rotator.runners.cli", *command, "-c", str(tmp_path / "rotator.toml")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not leftover.exists()


def test_the_sweep_never_raises(private_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _leftover(private_tmp, "rotator-influxctl-x")

    def refuse(*_args: object, **_kw: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(influxctl_common.os, "open", refuse)
    sweep_stale_configs()  # logs at debug, raises nothing


def test_a_side_effects_child_gets_sigpipe_as_a_plain_child_does() -> None:
    """Python ignores SIGPIPE, and an ignored signal stays ignored across exec: the watchdog restores
    it before it runs the command, as subprocess does (`yes | head -1` ends by SIGPIPE, not with 1)."""
    from rotator.core.child_process import start_children_within

    argv = ["/bin/sh", "-c", "yes | head -1 >/dev/null; grep SigIgn /proc/self/status"]
    plain = default_run(argv, 10)
    with start_children_within(30):
        watched = default_run(argv, 10)
    assert watched.stdout == plain.stdout and int(plain.stdout.split()[1], 16) & (1 << (signal.SIGPIPE - 1)) == 0


def test_when_the_watchdog_cannot_fork_the_caller_gets_the_errno_as_from_a_plain_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A watchdog that cannot start its command (no descriptor, no memory, too many processes) says
    so with the errno, which the caller raises as the OSError a plain Popen would: EAGAIN and ENOMEM
    stay transient (the mint is retried, not discarded)."""
    import errno as errno_module

    from rotator.core import child_process
    from rotator.core.child_process import start_children_within

    monkeypatch.setattr(child_process, "_watchdog_works", True)  # (its self-test would find out the same)
    script = tmp_path / "watchdog_without_fork.py"
    script.write_text(
        "import os, runpy, sys\n"
        "def no_fork():\n    raise OSError(11, 'Resource temporarily unavailable')\n"
        "os.fork = no_fork\n"
        f"sys.argv = [{str(child_process._WATCHDOG)!r}] + sys.argv[1:]\n"
        f"runpy.run_path({str(child_process._WATCHDOG)!r}, run_name='__main__')\n")
    original = child_process._WATCHDOG
    child_process._WATCHDOG = str(script)
    try:
        with start_children_within(30), pytest.raises(OSError) as raised:
            default_run([sys.executable, "-c", "print('ran')"], 10)
    finally:
        child_process._WATCHDOG = original
    assert raised.value.errno == errno_module.EAGAIN


def test_where_the_watchdog_cannot_run_children_run_as_before_and_the_log_says_so(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from rotator.core import child_process
    from rotator.core.child_process import start_children_within

    monkeypatch.setattr(child_process, "_WATCHDOG", str(tmp_path / "missing.py"))
    monkeypatch.setattr(child_process, "_watchdog_works", None)
    with start_children_within(30):
        first = child_process.side_effect_command(["influxctl", "management", "create"], 10)
        second = child_process.side_effect_command(["influxctl", "management", "create"], 10)
    assert first == second == (["influxctl", "management", "create"], signal.SIGKILL)
    warnings = [r.getMessage() for r in caplog.records if "cannot run here" in r.getMessage()]
    assert len(warnings) == 1, "found out once per process"
    monkeypatch.setattr(child_process, "_watchdog_works", None)
    monkeypatch.setattr(child_process, "_WATCHDOG", str(Path(child_process.__file__).with_name("child_watchdog.py")))
    with start_children_within(30):
        assert child_process.side_effect_command(["influxctl"], 10)[0][-2:] == ["--", "influxctl"]


def test_the_watchdog_self_test_runs_in_a_process_group_of_its_own(tmp_path: Path) -> None:
    """The watchdog kills its whole process group (at its deadline, or on SIGTERM): the self-test's
    must lead a group of its own, or it kills rotator with it. Here the 'watchdog' kills its group at
    once; the process that ran the self-test must live on, and a failure by a signal (which says
    nothing of the watchdog) is not kept."""
    killer = tmp_path / "killer.py"
    killer.write_text("import os, signal\nos.killpg(0, signal.SIGKILL)\n")
    code = ("from rotator.core import child_process as c\n"
            f"c._WATCHDOG = {str(killer)!r}\n"
            "print(c._watchdog_usable(None), c._watchdog_works)\nprint('alive')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    assert done.returncode == 0 and done.stdout.splitlines() == ["False None", "alive"], (done.returncode, done.stdout,
                                                                                        done.stderr[-2000:])


def test_the_watchdog_self_test_runs_on_a_read_not_inside_a_side_effect_s_start_window(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The self-test runs once per process. Run by the first side effect, it used up that side
    effect's start window on a slow machine, and the mint was refused as "not started". A read comes
    first in every rotation (PLAN's issuer check): it runs the self-test there. Here the self-test
    takes 1 s and the mint's window is 0.5 s."""
    from rotator.core import child_process
    from rotator.core.child_process import start_children_within

    watchdog = Path(child_process.__file__).with_name("child_watchdog.py")
    slow_probe = tmp_path / "slow_probe_watchdog.py"
    slow_probe.write_text(
        "import runpy, sys, time\n"
        "if sys.argv[-2:] == ['-c', '']:\n    time.sleep(1.0)  # the self-test's probe\n"
        f"runpy.run_path({str(watchdog)!r}, run_name='__main__')\n")
    monkeypatch.setattr(child_process, "_WATCHDOG", str(slow_probe))
    monkeypatch.setattr(child_process, "_watchdog_works", None)
    monkeypatch.setattr(child_process, "_watchdog_prepared", False)
    listed = default_run([sys.executable, "-c", "print('listed')"], 10)
    assert listed.returncode == 0 and listed.stdout.strip() == "listed"
    assert child_process._watchdog_works is True, "the read ran the self-test"
    with start_children_within(0.5):
        minted = default_run([sys.executable, "-c", "print('minted')"], 10)
    assert minted.returncode == 0 and minted.stdout.strip() == "minted", (minted.returncode, minted.stderr)


def test_reads_run_the_watchdog_self_test_once_whatever_its_outcome(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A self-test that fails by a signal is not kept (it says nothing of the watchdog): the next side
    effect tries again. Reads must not, or each list and verify would start a probe (up to 30 s) and
    log a warning about a child that never runs under the watchdog."""
    from rotator.core import child_process

    counted = tmp_path / "probes"
    killed = tmp_path / "killed_probe.py"
    killed.write_text(f"import os, signal, sys\nopen({str(counted)!r}, 'a').write('x')\n"
                      "if sys.argv[-2:] == ['-c', '']:\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    monkeypatch.setattr(child_process, "_WATCHDOG", str(killed))
    monkeypatch.setattr(child_process, "_watchdog_works", None)
    monkeypatch.setattr(child_process, "_watchdog_prepared", False)
    for _ in range(3):
        assert default_run([sys.executable, "-c", "print('listed')"], 10).stdout.strip() == "listed"
    assert counted.read_text() == "x", "one self-test for three reads"
    assert child_process._watchdog_works is None, "a failure by a signal is not kept"
    assert len([r for r in caplog.records if "cannot run here" in r.getMessage()]) == 1


def test_a_watchdog_that_starts_past_its_deadline_starts_nothing_and_says_so(tmp_path: Path) -> None:
    """rotator paused between building the command and the watchdog's start, past the call's whole
    timeout: the command never ran, and the watchdog says so with the exit status of a child started
    past its start deadline ("not started", retried), not as a killed command (whose mint may have
    landed)."""
    from rotator.core import child_process

    ran = tmp_path / "ran"
    done = subprocess.run([sys.executable, "-I", "-S", child_process._WATCHDOG, repr(time.monotonic() - 1), "--",
                           sys.executable, "-c", f"open({str(ran)!r}, 'w')"], capture_output=True, timeout=30,
                          start_new_session=True, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (child_process.EXIT_PAST_DEADLINE, b"", b"")
    assert not ran.exists()


def test_a_deadline_that_fires_after_the_command_ended_does_not_report_it_killed(tmp_path: Path) -> None:
    """The alarm can fire between the command's exit and the watchdog reaping it or cancelling its timer
    (the watchdog paused in between). The command finished: its status must come through, not a SIGKILL
    of the group. Here the deadline's handler is called on a command that has exited, in a process
    group of its own (a kill would end that group)."""
    code = textwrap.dedent("""
        import os, sys, time
        from rotator.core import child_watchdog as w
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        time.sleep(0.3)  # exited, not reaped
        w._child = pid
        w._at_deadline()
        print("alive", os.waitstatus_to_exitcode(w._reaped))
        w._at_deadline()  # reaped already (as by the main flow): nothing to kill either
        print("alive")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    assert done.stdout.splitlines() == ["alive 3", "alive"], (done.returncode, done.stdout, done.stderr[-2000:])


def test_a_watchdog_paused_before_it_starts_the_command_still_ends_it_at_the_deadline(tmp_path: Path) -> None:
    """The watchdog measured the time left once, before the fork: paused (or starved) between that and
    the fork, it started the command late and let it run the whole stale time, past its deadline.
    Here a 1.5 s pause before the fork and a 2 s deadline: the command must be gone by the deadline
    (with a margin for a busy machine), not 1.5 s after it."""
    from rotator.core import child_process

    wrapper = tmp_path / "paused_watchdog.py"
    wrapper.write_text("import os, runpy, time\n_fork = os.fork\n"
                       "def fork():\n    time.sleep(1.5)\n    return _fork()\n"
                       f"os.fork = fork\nrunpy.run_path({child_process._WATCHDOG!r}, run_name='__main__')\n")
    beat = tmp_path / "beat"
    # Each beat replaces the file whole: a kill between open('w')'s truncation and its write left it empty.
    command = [sys.executable, "-c", "import os, time\nwhile True:\n"
               f"    open({str(beat) + '.new'!r}, 'w').write(repr(time.monotonic()))\n"
               f"    os.replace({str(beat) + '.new'!r}, {str(beat)!r})\n    time.sleep(0.05)"]
    deadline = time.monotonic() + 2.0
    done = subprocess.run([sys.executable, "-I", "-S", str(wrapper), repr(deadline), "--", *command],
                          capture_output=True, timeout=30, start_new_session=True, check=False)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-2000:])
    time.sleep(0.3)  # a command left running would write again
    assert float(beat.read_text()) < deadline + 0.75, "killed at its deadline"
