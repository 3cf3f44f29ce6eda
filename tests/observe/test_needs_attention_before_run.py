"""A rotation that stops with NeedsAttention before its run is journaled (PLAN: the stores disagree on
the current token) left no trace where the daemon's metrics and status page look: the journal's last
run still read "done", so rotator_needs_attention stayed 0 (the critical RotatorNeedsAttention never
fired) and the page showed the policy healthy. The daemon keeps it (rotator/runners/daemon.py,
Daemon.attention) until a rotation succeeds, its own or another process's."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from rotator.core.engine import Engine
from rotator.core.errors import NeedsAttention, TransientError
from rotator.core.journal import RunRecord
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from rotator.observe.status_page import StatusPage, render_html
from rotator.runners.daemon import Daemon
from rotator.testing import FakeClock, MemoryIssuer
from tests.engine.test_state_machine import World
from tests.runners.test_daemon import POLICY, T0, Harness, InlineExecutor
from tests.runners.test_daemon import harness as harness  # noqa: F401

#: token-shaped text a server wrote (no registered Secret: the redactor misses it, the page masks it)
SERVER_TOKEN = "apiv1_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA=="


def needs_attention(d: Daemon, policy: str) -> float | None:
    text = d.metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "rotator_needs_attention" and s.labels.get("policy") == policy:
                return float(s.value)
    return None


def fresh_page(d: Daemon) -> dict[str, Any]:
    """The page as the daemon wires it, read now (the daemon's own caches its read for CACHE_S)."""
    page = StatusPage(lambda: d.policies, lambda: d.journal, d.clock.now, cache_s=0, attention=d.attention)
    row: dict[str, Any] = page.data()["policies"][0]
    return row


def test_stores_that_disagree_set_needs_attention_until_a_rotation_succeeds(tmp_path: Path) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
                      'failure_backoff = "10s"\n' + POLICY.format(name="a", schedule="1h", extra=""))
    clock = FakeClock(T0)
    world = World(tmp_path)
    world.clock = clock
    world.issuer = MemoryIssuer(clock=clock, check_credential=True)
    world.journal.close()
    made: dict[str, Engine] = {}

    def factory(policy: Any, cfg: Any, jr: Any, listener: Any) -> Engine:
        made["a"] = Engine(world.policy._replace(name="a"), jr, issuer=world.issuer,
                           stores=list(world.stores.items()), clock=clock, retry=RetryPolicy(2, 0.01, 0.02),
                           holder="daemon-1", listeners=[listener])
        return made["a"]

    d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, executor=InlineExecutor(),
               handle_signals=False)
    d.start()
    try:
        value, token_id = world.issuer.tokens.create("made by a human")
        assert made["a"].bootstrap(Secret(value), token_id, None).ok
        # Someone writes another (valid) token into store b only: the stores disagree.
        other, other_id = world.issuer.tokens.create("someone else's")
        b = world.stores["b"]
        agreed = b.read_current().record
        b.publish(agreed._replace(value=Secret(other), token_id=other_id), b.read_current().version)
        clock.advance(timedelta(hours=1, seconds=1))
        d.tick(clock.now())

        assert d.journal.latest_run("a").state == "done", "the rotation stopped before its run was journaled"
        assert needs_attention(d, "a") == 1
        row = d.status_page.data()["policies"][0]
        assert row["needs_attention"] is True
        (problem,) = row["problems"]
        assert problem.startswith("its last rotation stopped where only a person can decide: stores disagree on "
                                  "the current token"), problem
        html = render_html(d.status_page.data())
        assert "needs attention" in html and "stores disagree on the current token" in html

        # A person makes the stores agree again: the next try rotates, and the policy is healthy.
        b.publish(agreed, b.read_current().version)
        clock.advance(timedelta(hours=1))
        d.tick(clock.now())
        assert d.journal.last_success("a").new_token_id not in (token_id, other_id), "rotated"
        assert needs_attention(d, "a") == 0
        assert d.attention("a") is None
        row = fresh_page(d)
        assert row["needs_attention"] is False and row["problems"] == []
    finally:
        d.shutdown()


def test_needs_attention_outlasts_a_plain_failure_and_ends_with_another_process_rotation(
        harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1d", "")])
    h.engines["a"].fail = [NeedsAttention(f"stores disagree <b>(a=t1, b=t2)</b>: b holds {SERVER_TOKEN}",
                                          hint="make every store hold the same token"),
                           TransientError("database is locked")]
    h.tick()
    h.clock.advance(timedelta(days=1))
    h.tick()
    assert h.calls == ["rotate a"]
    assert needs_attention(h.daemon, "a") == 1

    row = fresh_page(h.daemon)
    assert row["needs_attention"] is True
    assert row["problems"] == ["its last rotation stopped where only a person can decide: stores disagree "
                               "<b>(a=t1, b=t2)</b>: b holds *** (fix: make every store hold the same token)"]
    html = render_html({"generated_at": None, "policies": [row], "inventory": None})
    assert SERVER_TOKEN not in html and SERVER_TOKEN not in json.dumps(row)
    assert "&lt;b&gt;(a=t1, b=t2)&lt;/b&gt;" in html and "<b>(a=t1" not in html

    # The retry fails for another reason: what a person must decide is still undecided.
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert h.calls == ["rotate a"]
    assert needs_attention(h.daemon, "a") == 1

    # Another replica (or `rotator rotate`) rotates it: the sweep sees its run, and the policy is fine.
    now = h.clock.now()
    h.daemon.journal.begin_run(RunRecord("elsewhere-1", "a", "done", "rotate", now, now, published_at=now,
                                         finished_at=now))
    h.clock.advance(timedelta(minutes=2))
    h.tick()
    assert needs_attention(h.daemon, "a") == 0
    assert h.daemon.attention("a") is None
    assert fresh_page(h.daemon)["problems"] == []
