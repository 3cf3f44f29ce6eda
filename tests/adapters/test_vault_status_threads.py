"""VaultLogin.status() from several threads at once (the daemon's /readyz and /metrics handlers, while a
job of the store may run).

status() moves the planned times back after a step of the clock (VaultLogin._now). Two threads that
both read what the step is measured from before either recorded it applied a step back twice: the
token's expiry moved an hour too early, and status said ok=false for a token with 40 minutes left.
The bookkeeping is behind a lock, never held across a call to Vault. And every time planned is planned
from a reading that the step bookkeeping records: one taken after a step during a call to Vault was moved
back by that step at the next read.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rotator.adapters.vault.auth import CredentialStatus, TokenAuth, VaultLogin
from tests.scripted_vault import ScriptedAuth

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: how long the first thread into the step arithmetic waits for the second (with the lock, it never comes)
MEET_S = 1.0


class _Meeting(datetime):
    """A time of day that, when the step is measured from it (``seen + real time passed``), waits until
    two threads do so at once (at most :data:`MEET_S`): both have then read what the step is measured
    from, and neither has moved a planned time yet."""

    barrier: threading.Barrier

    def __add__(self, other: Any) -> Any:
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            pass  # alone: the other thread waits for the lock
        return datetime.__add__(self, other)


def _meeting(at: datetime) -> _Meeting:
    meeting = _Meeting.combine(at.date(), at.timetz())
    meeting.barrier = threading.Barrier(2, timeout=MEET_S)
    return meeting


class _Clock:
    """The time of day (``value``) and the real time passed (``real``, what ``monotonic`` tells), each set."""

    def __init__(self) -> None:
        self.value = NOW
        self.real = 0.0

    def now(self) -> datetime:
        return self.value

    def sleep(self, seconds: float) -> None:
        self.value += timedelta(seconds=seconds)
        self.real += seconds

    def monotonic(self) -> float:
        return self.real


def _login(tmp_path: Path, clock: _Clock) -> VaultLogin:
    (tmp_path / "token").write_text("s.renewable-token-for-the-unit-test")
    return VaultLogin(TokenAuth.model_validate({"method": "token", "token": {"file": "token"}}), tmp_path, clock)


def _at_once(call: Any, count: int = 2) -> list[Any]:
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_a_clock_step_back_seen_by_two_status_calls_at_once_is_applied_once(tmp_path: Path) -> None:
    clock = _Clock()
    login = _login(tmp_path, clock)
    login.ensure(ScriptedAuth(lookup_self=[{"data": {"ttl": 3600, "creation_ttl": 3600, "renewable": True}}]))
    assert (login.due(), login.status()["expires_at"]) == (NOW + timedelta(minutes=40), NOW + timedelta(hours=1))
    clock.real += 1200  # 20 minutes pass; a /metrics scrape then reads the time (the step is measured from it)
    clock.value = _meeting(NOW + timedelta(minutes=20))
    login.status()
    clock.value = NOW + timedelta(minutes=20) - timedelta(hours=1)  # NTP steps the clock back an hour
    statuses: list[CredentialStatus] = _at_once(login.status)  # /readyz and /metrics at once
    assert login.status()["expires_at"] == clock.now() + timedelta(minutes=40), "Vault's count: 40 minutes left"
    assert login.due() == clock.now() + timedelta(minutes=20), "renewal 20 minutes before the expiry"
    assert [s["ok"] for s in statuses] == [True, True], statuses


def test_a_status_call_does_not_wait_for_a_call_to_vault(tmp_path: Path) -> None:
    """The lock guards the times only: /readyz answers while a renewal waits on Vault."""
    clock = _Clock()
    login = _login(tmp_path, clock)
    answered = threading.Event()

    def ask() -> None:
        login.status()
        login.due()
        answered.set()

    class SlowVault(ScriptedAuth):
        def lookup_self(self) -> Any:
            threading.Thread(target=ask).start()
            assert answered.wait(5), "status() waited for the lookup"
            return super().lookup_self()

    login.ensure(SlowVault(lookup_self=[{"data": {"ttl": 3600, "creation_ttl": 3600, "renewable": True}}]))
    assert login.status()["ok"] is True


def test_times_planned_after_a_step_during_a_call_to_vault_are_not_moved_back_by_it(tmp_path: Path) -> None:
    """A step back while the lookup waits on Vault: the expiry is planned from the time read after it, and
    was then moved back by the same step at the next read (it was measured from the time read before the
    call): an expiry an hour early, ok=false for a fresh token."""
    clock = _Clock()
    login = _login(tmp_path, clock)

    class SteppingVault(ScriptedAuth):
        def lookup_self(self) -> Any:
            clock.value -= timedelta(hours=1)  # NTP, while Vault answers
            return super().lookup_self()

    login.ensure(SteppingVault(lookup_self=[{"data": {"ttl": 3600, "creation_ttl": 3600, "renewable": True}}]))
    status = login.status()
    assert status["expires_at"] == clock.now() + timedelta(hours=1) and status["ok"] is True, status
    assert login.due() == clock.now() + timedelta(minutes=40)
