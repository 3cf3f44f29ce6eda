"""The stores' own credentials (a Vault token kept alive between runs) cost what is due (issue 12).

A pass asked every Vault policy's stores for their credential_due() (300 calls at 300 policies,
600 at 600), and each /metrics scrape asked every one for its credential_status() and wrote their
10,006 lines through prometheus_client (74 ms at 5,000 policies). The daemon now reads a policy's
credentials after each job of it, at start, at a reload, after a clock step back and when their
queued time comes, and LiveText keeps the lines of those that did not change. Counted, not timed.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.core.clock import FakeClock
from rotator.core.journal import RunRecord, open_journal
from rotator.runners.daemon import Daemon
from tests.runners.test_daemon import POLICY, T0, FakeEngine, InlineExecutor

TTL = timedelta(minutes=30)
N = 40


class _Token:
    """A store's credential like VaultLogin's: due (and renewed) when a third of its TTL is left, not ok
    once less than a sixth is; each call of the daemon is counted."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.renewed_at: datetime | None = None
        self.dues = self.statuses = 0
        self.kept_alive: list[datetime] = []

    @property
    def expires_at(self) -> datetime | None:
        return None if self.renewed_at is None else self.renewed_at + TTL

    def credential_due(self) -> datetime:
        self.dues += 1
        return T0 if self.expires_at is None else self.expires_at - TTL / 3

    def keep_alive(self) -> None:
        self.renew()
        self.kept_alive.append(self.clock.now())

    def renew(self) -> None:
        self.renewed_at = self.clock.now()

    def credential_status(self) -> dict[str, Any]:
        self.statuses += 1
        expires = self.expires_at
        ok = expires is not None and expires - self.clock.now() > TTL / 6
        return {"ok": ok, "failures": 0, "error": None, "expires_at": expires}


@pytest.fixture
def made(tmp_path: Path) -> Iterator[Callable[..., tuple[Daemon, FakeClock, dict[str, _Token]]]]:
    daemons: list[Daemon] = []

    def make(n: int = N, token: Callable[[FakeClock], _Token] = _Token,
             engine: Callable[[FakeEngine], None] | None = None,
             p0: tuple[str, datetime] = ("30d", T0)) -> tuple[Daemon, FakeClock, dict[str, _Token]]:
        """``p0``: the first policy's schedule and last publication (the others': 30 days, T0)."""
        (tmp_path / "vault-token").write_text("x")
        config = tmp_path / "rotator.toml"
        config.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
                          'sweep_interval = "10m"\n'
                          + "".join(POLICY.format(name=f"p{i}", schedule=p0[0] if i == 0 else "30d", extra="")
                                    for i in range(n)))
        journal = open_journal("sqlite:///" + str(tmp_path / "journal.db"))
        for i in range(n):
            at = p0[1] if i == 0 else T0
            journal.begin_run(RunRecord(f"boot-p{i}", f"p{i}", "done", "bootstrap", at, at, published_at=at))
        journal.close()
        clock = FakeClock(T0)
        tokens: dict[str, _Token] = {}

        def factory(policy: Any, cfg: Any, jr: Any, listener: Any) -> FakeEngine:
            fake = FakeEngine(policy.name, jr, clock, [])
            tokens[policy.name] = token(clock)
            fake.stores = [("vault", tokens[policy.name])]  # type: ignore[attr-defined]
            if engine is not None:
                engine(fake)
            return fake

        d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, executor=InlineExecutor(),
                   handle_signals=False)
        d.start()
        daemons.append(d)
        d.tick(clock.now())  # every store is due at start: each logs in
        d.tick(clock.now())  # the pass their jobs' ends wake: each policy looked at again
        return d, clock, tokens

    yield make
    for d in daemons:
        d.shutdown()


def calls(tokens: dict[str, _Token]) -> tuple[int, int]:
    return sum(t.dues for t in tokens.values()), sum(t.statuses for t in tokens.values())


def reset(tokens: dict[str, _Token]) -> None:
    for t in tokens.values():
        t.dues = t.statuses = 0


def credential_samples(d: Daemon) -> dict[tuple[str, str, str], float]:
    return {(s.name, s.labels["policy"], s.labels["store"]): s.value
            for family in text_string_to_metric_families(d.metrics.exposition().decode())
            for s in family.samples if s.name.startswith("rotator_credential_")}


def expected(tokens: dict[str, _Token]) -> dict[tuple[str, str, str], float]:
    """What the stores say now, as the rotator_credential_* samples (asked outside the count)."""
    out = {}
    for name, token in tokens.items():
        status = token.credential_status()
        token.statuses -= 1
        if status["expires_at"] is not None:
            out[("rotator_credential_expiry_timestamp_seconds", name, "vault")] = status["expires_at"].timestamp()
        out[("rotator_credential_ok", name, "vault")] = float(status["ok"])
        out[("rotator_credential_renewal_failures", name, "vault")] = 0.0
    return out


def test_a_pass_with_nothing_due_asks_no_store_and_the_keep_alives_still_run_on_time(made: Any) -> None:
    d, clock, tokens = made()
    assert all(len(t.kept_alive) == 1 for t in tokens.values())
    reset(tokens)
    for _ in range(3):
        clock.advance(timedelta(minutes=5))
        wait = d.tick(clock.now())
        assert calls(tokens) == (0, 0), "an idle pass asks no store (it asked every one: O(policies))"
    due = T0 + TTL * 2 / 3
    assert wait == pytest.approx((due - clock.now()).total_seconds()), "it wakes when the first one is due"
    clock.advance(due - clock.now())
    d.tick(clock.now())
    assert all(t.kept_alive[-1] == due for t in tokens.values()), "every keep-alive at its due time"
    d.tick(clock.now())  # their ends: each policy looked at again, once
    reset(tokens)
    clock.advance(timedelta(seconds=1))
    d.tick(clock.now())
    assert calls(tokens) == (0, 0)


def test_a_scrape_asks_no_store_and_shows_each_keep_alive(made: Any) -> None:
    d, clock, tokens = made()
    before = expected(tokens)
    reset(tokens)
    assert credential_samples(d) == before
    assert calls(tokens) == (0, 0), "a scrape asks no store (it asked every one)"
    clock.advance(TTL * 2 / 3)
    d.tick(clock.now())  # every keep-alive
    d.tick(clock.now())
    after = expected(tokens)
    assert after != before, "renewed: a later expiry"
    reset(tokens)
    assert credential_samples(d) == after
    assert calls(tokens) == (0, 0)


def test_a_runs_store_calls_that_renew_the_token_move_its_keep_alive_and_its_metrics(made: Any) -> None:
    """A rotation's Vault calls renew the token on use: the keep-alive is then due later, and the
    metrics show the new expiry, though no keep-alive job ran."""

    def renewing(engine: FakeEngine) -> None:
        rotate = engine.rotate

        def rotate_and_renew(**kw: Any) -> Any:
            engine.stores[0][1].renew()  # type: ignore[attr-defined]
            return rotate(**kw)

        engine.rotate = rotate_and_renew  # type: ignore[method-assign]

    d, clock, tokens = made(n=2, engine=renewing, p0=("1h", T0 + TTL / 2 - timedelta(hours=1)))
    clock.advance(TTL / 2)  # p0's rotation is due
    d.tick(clock.now())
    assert d._engines["p0"].calls == ["rotate p0"]  # type: ignore[attr-defined]
    d.tick(clock.now())  # the pass the run's end wakes
    assert credential_samples(d)[("rotator_credential_expiry_timestamp_seconds", "p0", "vault")] == (
        clock.now() + TTL).timestamp()
    clock.advance(TTL / 6)  # p1's keep-alive is due; p0's renewal at its run moved its own
    d.tick(clock.now())
    assert [len(t.kept_alive) for t in tokens.values()] == [1, 2]
    clock.advance(TTL * 2 / 3 - TTL / 6)
    d.tick(clock.now())
    assert [len(t.kept_alive) for t in tokens.values()] == [2, 2], "p0's, at 2/3 of the TTL after its run"


def test_a_credential_is_asked_live_while_its_policys_run_holds_it(made: Any) -> None:
    """A long run holds its policy's keep-alive back, and its Vault calls may renew the token or fail
    meanwhile: the scrape asks that store (only that one), so its credential shows as it is now."""
    d, clock, tokens = made(n=3)
    clock.advance(timedelta(minutes=5))
    with d._lock:
        d._busy["p1"] = ("rotate", concurrent.futures.Future())
    try:
        tokens["p1"].renew()  # a call of p1's run renewed its token
        reset(tokens)
        assert credential_samples(d) == expected(tokens)
        assert [t.statuses for t in tokens.values()] == [0, 1, 0]
    finally:
        with d._lock:
            del d._busy["p1"]


class _Turning(_Token):
    """A credential that says when its ``ok`` turns false with time alone (``ok_until``)."""

    def credential_status(self) -> dict[str, Any]:
        status = super().credential_status()
        expires = status["expires_at"]
        return {**status, "ok_until": expires - TTL / 6 if status["ok"] else None}

    def credential_due(self) -> datetime:  # later than the turn: a token at its max TTL
        self.dues += 1
        return T0 if self.expires_at is None else self.expires_at - TTL / 12


def test_a_status_that_turns_with_time_alone_is_read_again_then(made: Any) -> None:
    d, clock, tokens = made(n=2, token=_Turning)
    assert credential_samples(d)[("rotator_credential_ok", "p0", "vault")] == 1
    clock.advance(TTL * 5 / 6)
    reset(tokens)
    d.tick(clock.now())
    assert calls(tokens) == (2, 2), "both looked at, once, at their turn"
    assert all(not t.kept_alive[1:] for t in tokens.values()), "not due yet"
    assert credential_samples(d)[("rotator_credential_ok", "p0", "vault")] == 0


class _SteppedBack(_Token):
    """Like VaultLogin: moves its planned times back by as much as the clock stepped back, as it reads it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.seen = clock.now()

    def credential_due(self) -> datetime:
        now = self.clock.now()
        if now < self.seen and self.renewed_at is not None:
            self.renewed_at -= self.seen - now
        self.seen = now
        return super().credential_due()


def test_after_a_clock_step_back_the_keep_alives_follow_the_clock(made: Any) -> None:
    d, clock, tokens = made(n=2, token=_SteppedBack)
    clock.advance(-timedelta(hours=6))
    d.tick(clock.now())
    clock.advance(TTL * 2 / 3)
    d.tick(clock.now())
    assert all(len(t.kept_alive) == 2 for t in tokens.values()), "due 20 min after the step, not 6 h later"


def test_a_reload_drops_a_removed_policys_credential_and_reads_the_new_stores(made: Any) -> None:
    d, clock, tokens = made(n=3)
    text = d.path.read_text()
    d.path.write_text(text[:text.index("[[policy]]\nname = \"p2\"")])
    assert d.reload("test", full=True)
    d.tick(clock.now())  # the new stores log in at once
    d.tick(clock.now())
    got = credential_samples(d)
    assert {policy for _, policy, _ in got} == {"p0", "p1"}
    assert got == {k: v for k, v in expected({n: tokens[n] for n in ("p0", "p1")}).items()}
