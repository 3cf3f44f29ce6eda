"""A token lives until its replacement is published + grace, however long both runs verify (review5 #3).

A token's expiry counts from its MINT, the schedule from its PUBLISH, which follows up to
``verify_timeout`` of VERIFY; the run that replaces it verifies as long again before it publishes.
Validation therefore counts twice ``verify_timeout`` in the shortest lifetime it accepts and in the
default one: with ``grace`` and ``margin`` of 0 the default lifetime was the interval, and the
store's token had expired when its rotation came due.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.config.policy import load_config_bytes
from rotator.config.policy_types import Policy, StoreBinding
from rotator.core.due import due_now
from rotator.core.engine import Engine
from rotator.core.journal import open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from rotator.testing import FakeClock, MemoryIssuer, MemoryIssuerSettings, MemoryStore, MemoryStoreSettings
from tests.config.policy_text import POLICY

VERIFY_TIMEOUT = timedelta(minutes=10)


class SlowToVerify(MemoryIssuer):
    """A new token that takes all but a second of ``verify_timeout`` to be accepted (as a new token may
    answer 401 for minutes): each verify moves the clock on that far, then succeeds."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.clock = clock

    def verify(self, token: Secret) -> None:
        self.clock.advance(VERIFY_TIMEOUT - timedelta(seconds=1))
        super().verify(token)


def _policy(tmp_path: Path, extra: str) -> Policy:
    """The policy as validation builds it (its lifetime the loader's), on memory adapters."""
    text = POLICY.format(name="p", schedule="1d", extra=f'verify_timeout = "10m"\n{extra}')
    policy = load_config_bytes(text.encode(), tmp_path / "rotator.toml").policy("p")
    return policy._replace(issuer_type="memory", issuer_settings=MemoryIssuerSettings(),
                           stores=(StoreBinding("memory", "memory", MemoryStoreSettings("s")),))


@pytest.mark.parametrize("extra", [
    'grace = "0s"\nmargin = "0s"',  # the default lifetime, with nothing to spare
    'grace = "1h"\nlifetime = "1d1h20m1s"',  # a second above the shortest lifetime validation accepts
])  # fmt: skip
def test_the_current_token_outlives_its_replacements_publication_and_grace(tmp_path: Path, extra: str) -> None:
    policy = _policy(tmp_path, extra)
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    issuer = SlowToVerify(clock)
    store = MemoryStore("s")
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")

    def engine() -> Engine:
        return Engine(policy, journal, issuer=issuer, stores=[("memory", store)], clock=clock,
                      retry=RetryPolicy(5, 1.0, 60.0))

    value, token_id = issuer.tokens.create("human")
    engine().bootstrap(Secret(value), token_id, None)
    first = engine().rotate().new_token_id
    assert first is not None and store.read_current().record is not None
    assert store.read_current().record.token_id == first  # type: ignore[union-attr]

    due = due_now(policy, journal, clock)
    assert due.next_due is not None
    clock.advance(due.next_due - clock.now())
    info = issuer.tokens.info(first)
    assert info is not None and info.is_active(clock.now()), "expired when its rotation came due"

    second = engine().rotate().new_token_id
    assert second not in (None, first)
    published = clock.now()  # PUBLISH takes no time on the fake clock: it ended the run
    info = issuer.tokens.info(first)
    assert info is not None and info.expires_at is not None
    assert info.expires_at > published + policy.grace - timedelta(microseconds=1), (
        f"token {first} expires at {info.expires_at}, before its replacement's publication ({published}) + grace "
        f"({policy.grace})")
