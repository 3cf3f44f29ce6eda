"""One token left valid is one orphan: a failed run's candidate whose revocation fails again at every
recovery was counted (rotator_orphans_total) and notified (an ``orphan`` webhook, a new webhook-id each)
once per retry. Its first failure writes ``revoke_new`` / ``failed``; every later one ``failed_again``,
read from the run's journal record, so that a restarted daemon does not report it again either."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from rotator.config.daemon_config import DaemonSettings
from rotator.core.engine import Engine
from rotator.core.errors import NeedsAttention, RotatorError, TransientError
from rotator.core.journal import RunRecord, RunState
from rotator.core.secret import Secret
from rotator.observe.metrics import Metrics
from rotator.observe.notify import Notifier, event_kinds
from tests.engine.test_state_machine import POLICY, START, World
from tests.webhook_receiver import receiver

KEY = "webhook-signing-key-for-tests"


class _Daemon:
    """What a daemon process hears of an engine's events: its metrics, its webhooks, and the events."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        (tmp_path / "hmac-key").write_text("whsec_" + base64.b64encode(KEY.encode()).decode() + "\n")
        settings = DaemonSettings.model_validate({"audit": {"file": "audit.jsonl"}, "webhooks": [
            {"url": url, "secret": {"file": "hmac-key"}, "on": ["orphan"], "backoff": "0s"}]})
        self.metrics = Metrics()
        self.metrics.add_policies([POLICY])
        self.notifier = Notifier(settings, tmp_path)
        self.events: list[dict[str, Any]] = []

    def listen(self, engine: Engine) -> Engine:
        engine.listeners += [self.events.append, self.metrics.on_event, self.notifier]
        return engine

    @property
    def orphans(self) -> float:
        return self.metrics.registry.get_sample_value("rotator_orphans_total", {"policy": POLICY}) or 0

    def discards(self) -> list[str]:
        return [e["result"] for e in self.events if e["step"] == "revoke_new"]


def test_a_candidate_its_recoveries_cannot_revoke_is_one_orphan(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    world.bootstrap()
    down = [True]
    revoke = world.issuer.revoke

    def revoking(token_id: str, credential: Secret | None) -> None:
        if down[0]:
            raise TransientError("issuer down")
        revoke(token_id, credential)

    monkeypatch.setattr(world.issuer, "revoke", revoking)
    world.issuer.fail_next("verify", TransientError("issuer down"), times=100)
    with receiver() as rx:
        daemon = _Daemon(tmp_path, rx.url)
        engine = daemon.listen(world.engine())
        with pytest.raises(RotatorError):
            engine.rotate()  # verify fails, then the candidate's revocation: the first failure
        for _ in range(3):
            with pytest.raises(TransientError):
                engine.recover()
        assert daemon.discards() == ["start", "failed"] + ["start", "failed_again"] * 3
        assert daemon.orphans == 1
        # A restarted daemon: a new engine and new metrics; the run's record says it was reported
        restarted = _Daemon(tmp_path, rx.url)
        engine = restarted.listen(world.engine())
        with pytest.raises(TransientError):
            engine.recover()
        assert restarted.discards() == ["start", "failed_again"] and restarted.orphans == 0
        down[0] = False
        engine.recover()  # revoked at last: closed, and no further orphan
        assert restarted.discards() == ["start", "failed_again", "start", "ok"] and restarted.orphans == 0
        assert daemon.notifier.close(10) and restarted.notifier.close(10)
        orphans = [d.json for d in rx.deliveries if d.json["event"] == "orphan"]
    (run,) = world.journal.runs(POLICY, limit=1)
    assert len(orphans) == 1, orphans
    assert (orphans[0]["step"], orphans[0]["result"], orphans[0]["token_id"]) == ("revoke_new", "failed",
                                                                                 run.new_token_id)


def test_a_failed_again_event_raises_no_orphan_metric_or_webhook() -> None:
    metrics = Metrics()
    metrics.on_event({"policy": "p", "run_id": "r1", "step": "revoke_new", "result": "failed_again", "token_id": "t"})
    assert (metrics.registry.get_sample_value("rotator_orphans_total", {"policy": "p"}) or 0) == 0
    assert "orphan" not in event_kinds({"step": "revoke_new", "result": "failed_again"})


def test_a_recovery_that_fails_for_another_reason_keeps_the_reported_mark() -> None:
    """A store found holding the token, the issuer pointing elsewhere: the recovery's own error replaces the
    run's, which must still say its candidate's revocation failed (else the next failed try is a new orphan)."""
    from rotator.core.engine import _recovery_error  # (here: the module's other tests run on an engine without it)

    run = RunRecord("r1", POLICY, RunState.REVOKING_NEW, "rotate", START, START, new_token_id="t1",
                    error="recovery failed: run r1: the unpublished token could not be revoked yet; "
                    "revoking the candidate failed: issuer down")
    error = _recovery_error(run, NeedsAttention("store a holds its token t1", hint="restore the previous token"))
    assert error.startswith("recovery failed: store a holds its token t1")
    assert error.endswith("; revoking the candidate failed: issuer down") and error.count("candidate") == 1
    fresh = RunRecord("r2", POLICY, RunState.MINTED, "rotate", START, START)
    assert _recovery_error(fresh, NeedsAttention("x")) == "recovery failed: x"


def test_each_token_left_valid_is_one_orphan_webhook_naming_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """"Reported" is per token: the run's candidate, and a token carrying its tag that a recovery finds
    later (a retried mint's first try), each raise one orphan webhook with their own id; a tag listing
    that fails (no token known to be left valid) raises none."""
    world = World(tmp_path)
    world.bootstrap()
    revoke = world.issuer.revoke
    down: set[str] = set()

    def revoking(token_id: str, credential: Secret | None) -> None:
        if token_id in down:
            raise TransientError("issuer down")
        revoke(token_id, credential)

    monkeypatch.setattr(world.issuer, "revoke", revoking)
    world.issuer.fail_next("verify", TransientError("issuer down"), times=100)
    with receiver() as rx:
        daemon = _Daemon(tmp_path, rx.url)
        engine = daemon.listen(world.engine())
        world.issuer.fail_next("revoke", TransientError("issuer down"), times=3)  # (every retry: the candidate)
        with pytest.raises(RotatorError):
            engine.rotate()
        (run,) = world.journal.open_runs(POLICY)
        _value, late = world.issuer.tokens.create(f"rotator:{POLICY}:{run.run_id}")
        down.add(late)  # (the candidate is revoked by the next try, then its tag search finds this one)
        for _ in range(2):
            with pytest.raises(TransientError):
                engine.recover()
        world.issuer.fail_next("list_tokens", TransientError("issuer down"), times=3)
        with pytest.raises(TransientError):
            engine.recover()
        assert daemon.discards() == ["start", "failed", "start", "failed", "start", "failed_again",
                                     "start", "search_failed"]
        assert daemon.orphans == 2
        assert daemon.notifier.close(10)
        orphans = [(d.json["step"], d.json["result"], d.json["token_id"]) for d in rx.deliveries
                   if d.json["event"] == "orphan"]
    assert orphans == [("revoke_new", "failed", run.new_token_id), ("revoke_new", "failed", late)], orphans


def test_a_search_failed_event_raises_no_orphan_metric_or_webhook() -> None:
    metrics = Metrics()
    metrics.on_event({"policy": "p", "run_id": "r1", "step": "revoke_new", "result": "search_failed"})
    assert (metrics.registry.get_sample_value("rotator_orphans_total", {"policy": "p"}) or 0) == 0
    assert "orphan" not in event_kinds({"step": "revoke_new", "result": "search_failed"})


def test_a_recovery_that_fails_for_another_reason_keeps_the_tokens_reported() -> None:
    from rotator.core.engine import _recovery_error, _reported_tokens

    run = RunRecord("r1", POLICY, RunState.REVOKING_NEW, "rotate", START, START, new_token_id="t1",
                    error='process stopped in state revoking_new; revoking the candidate failed: issuer down; '
                    'reported as left valid: ["t1", "t7"]')
    error = _recovery_error(run, NeedsAttention("store a holds its token t1"))
    assert error == ('recovery failed: store a holds its token t1; revoking the candidate failed: issuer down; '
                     'reported as left valid: ["t1", "t7"]')
    assert _reported_tokens(RunRecord("r1", POLICY, RunState.REVOKING_NEW, "rotate", START, START,
                                      error=error)) == ["t1", "t7"]
