"""Shared fixtures: real servers (tests/servers.py, tests/aws_server.py), the fake influxctl
(tests/fakes/fixtures.py) and the OpenAPI-validated HTTP fakes (tests/fakes/http_fixtures.py).

The exhaustive matrices are marked ``slow`` here, in one place: the default run (the README's test
command) keeps a sample of each that covers every mechanism, so it stays within about ten minutes
on two cores; ``pytest -m slow`` runs the rest, and .ci/run runs both.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Generator, Iterator

import pytest

from rotator.observe.logs import QUIET_LOGGERS

pytest_plugins = ["tests.servers", "tests.pg", "tests.aws_server", "tests.fakes.fixtures", "tests.fakes.http_fixtures"]

#: Node ids (regular expressions matched from the start of the test name) that only ``-m slow`` runs.
SLOW = [
    # Pause (SIGSTOP) at every boundary x recover/rotate x SQLite/PostgreSQL: 36 cases of ~15 s. The
    # default run keeps the reported reproduction (paused after VERIFY) once per backend and per
    # action, a paused mint, a paused publish and a paused revocation.
    r"test_pause_at_step_boundary_while_another_process_acts\[(?!"
    r"verified-rotate-sqlite|verified-recover-postgresql|minting-rotate-sqlite|publishing-recover-sqlite|"
    r"revoking-rotate-postgresql)",
    # The Vault outage matrix: every fault at every step; the default run keeps "down" and "http503".
    r"test_cli_with_vault_failing_at_each_step\[(reset|blackhole|http429|latency)\]",
    r"test_cli_with_the_journal_hanging_at_each_step\[latency\]",
    # A real daemon renewing a 15 s Vault token past its first TTL (~23 s); VaultLogin's renewal
    # rules run in the default run as unit tests (tests/e2e/test_outages.py, "VaultLogin, unit").
    r"test_vault_token_renewal_survives_a_failed_first_lookup$",
    # Kill -9 at every step boundary for every issuer of tests/e2e/test_issuer_matrix.py (the
    # Management API's own, in tests/e2e/test_e2e_management_api.py, stays: its id has no
    # parameter, and it is the one whole HTTP issuer walk of the default run). The default run has the
    # influxctl management issuer's boundaries, one test each
    # (tests/e2e/test_crash_matrix.py::test_kill_at_step_boundary), and the HTTP issuers' kills after
    # MINTED and after PUBLISHED (tests/e2e/test_e2e_http_issuers.py).
    r"test_kill_at_every_step_boundary_then_recover\[",
    # valgrind counting a few rotations (~20 s where valgrind is installed; skipped where it is not)
    r"test_the_instruction_bench_rotates_in_its_child_and_counts_under_callgrind$",
]
_SLOW = re.compile("|".join(f"(?:{pattern})" for pattern in SLOW))

#: ROTATOR_REQUIRE_ALL=1 (.ci/run sets it, having installed every tool the tests call) turns a skipped
#: test into a failure: a skip there means a check CI claims to make was silently not made. Without it
#: (the README's test command) a test whose tool is missing skips, saying what to install.
REQUIRE_ALL = "ROTATOR_REQUIRE_ALL"
#: Skip reasons (regular expressions searched in the reason) that stay skips under ROTATOR_REQUIRE_ALL=1:
#: only a limit CI's machine kind (Debian bookworm, x86-64 Linux, root, IPv6 loopback, a boot id,
#: apt lists) cannot lift. Empty: every pytest.skip/skipif/importorskip of tests/ was judged, and on
#: that machine kind each runs once .ci/run has installed its tool (run with -rs there: none skipped);
#: the platform ones (/proc, Linux, root, ::1, boot id) hold there, so a skip would mean a broken machine.
ALLOWED_SKIPS: list[str] = []
_ALLOWED = re.compile("|".join(f"(?:{pattern})" for pattern in ALLOWED_SKIPS)) if ALLOWED_SKIPS else None


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # (path, line, "Skipped: <reason>") for a skip
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_a_required_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if os.environ.get(REQUIRE_ALL) != "1" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if _ALLOWED is not None and _ALLOWED.search(reason):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"{report.nodeid} skipped ({reason}), but {REQUIRE_ALL}=1 says every test must run: install what it "
        "needs (.ci/run installs the tools the tests call), or, for a limit CI's machine kind cannot lift, "
        "add the reason to ALLOWED_SKIPS in tests/conftest.py"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_a_required_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
        collector: pytest.Collector) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield  # a module-level skip or importorskip skips at collection
    _fail_a_required_skip(report)
    return report


@pytest.fixture(autouse=True, scope="session")
def _status_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`rotator status` caches each policy file's summary (rotator/config/policy_summary.py): in the
    session's temporary directory, never the user's ~/.cache (subprocesses inherit the variable)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROTATOR_CACHE_DIR", str(tmp_path_factory.mktemp("rotator-cache")))
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _SLOW.match(item.name):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Undo what an in-process CLI run's ``setup_logging`` did to the process-wide logging tree.

    It replaces the root's handlers (with one bound to the test's captured stderr, closed after
    the test) and quiets the SDK loggers (httpx, ...); left as they are, a later test in the same
    worker would log into a closed stream and miss the SDK records it asserts on.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    # setup_logging also routes uncaught thread exceptions to the log: pytest's own hook (installed
    # once a session) must come back, or later tests' thread exceptions go unreported
    thread_hook = threading.excepthook
    yield
    threading.excepthook = thread_hook
    # pytest's own capture handlers come and go by phase: leave them to pytest.
    for handler in [h for h in root.handlers if h not in handlers and not type(h).__module__.startswith("_pytest")]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        if handler not in root.handlers and not type(handler).__module__.startswith("_pytest"):
            root.addHandler(handler)
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


@pytest.fixture
def umask_000() -> Iterator[None]:
    """The process's umask 0 for the test: what a file rotator makes must not depend on the umask."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)
