"""An influxctl config put back from a backup holds a token rotator replaced two rotations ago: that
token is not revoked while the profile holds it, and is once a rotation has replaced it.

The sidecar kept only the entries of the value in the config and of the one it replaced. A config
restored from an older backup (or rewritten by configuration management with the token it knew)
then held a value no entry matched: the store read as holding no token, the revocation rule found
no store holding the restored token, and revoked it when its grace passed: the token influxctl
uses on that host. Vault and AWS payloads name their token id, so a rollback there was never
mistaken; the sidecar now keeps the entries of the last values it wrote, and the profile names the
restored token as they do.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rotator.adapters.influxctl.profile import InfluxctlProfileSettings, InfluxctlProfileStore
from rotator.config.policy_types import Policy, StoreBinding
from rotator.core.engine import Engine
from rotator.core.journal import RevocationState, open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from rotator.sandbox.influxctl_state import write_profile
from rotator.testing import FakeClock, MemoryIssuer, MemoryIssuerSettings

POLICY = "db-token"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
#: longer than the schedule: the token of the rotation before last may still wait for its revocation
GRACE = timedelta(days=3)


def _engine(tmp_path: Path, clock: FakeClock, issuer: MemoryIssuer, store: InfluxctlProfileStore) -> Engine:
    settings = InfluxctlProfileSettings(config=store.path, key="token")
    policy = Policy(name=POLICY, enabled=True, issuer_type="memory", issuer_settings=MemoryIssuerSettings(),
                    stores=(StoreBinding("profile", "influxctl-profile", settings),), schedule_text="1d",
                    window_text=None, grace=GRACE, lifetime=timedelta(days=10), verify_timeout=timedelta(seconds=30),
                    adopt=False, description="{tag}", base_dir=tmp_path)
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    return Engine(policy, journal, issuer=issuer, stores=[("profile", store)], clock=clock,
                  retry=RetryPolicy(1, 0.01, 0.01), holder="daemon")


def _active(issuer: MemoryIssuer) -> set[str]:
    return {t.token_id for t in issuer.tokens.active()}


def test_a_config_put_back_with_an_older_token_keeps_that_token_until_a_rotation_replaces_it(
    tmp_path: Path, caplog: Any
) -> None:
    clock = FakeClock(NOW)
    issuer = MemoryIssuer(clock=clock, check_credential=False)
    (tmp_path / "influxctl").mkdir()
    config = write_profile(tmp_path / "influxctl" / "config.toml")
    config.chmod(0o600)
    store = InfluxctlProfileStore(config, "default", clock, key="token")
    engine = _engine(tmp_path, clock, issuer, store)

    value, first = issuer.tokens.create("made by a human")
    engine.bootstrap(Secret(value), first, None)
    backup = config.read_bytes()  # the nightly backup: the profile holds the first token
    second = engine.rotate().new_token_id
    clock.advance(timedelta(days=1))
    third = engine.rotate().new_token_id
    assert len({first, second, third}) == 3 and None not in {second, third}
    assert sorted(r.token_id for r in engine.journal.pending_revocations(POLICY)) == sorted([first, second])

    config.write_bytes(backup)  # the config (not its sidecar) restored from that backup
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.influxctl_profile"):
        state = store.read_current()
    assert (state.token_id, state.managed) == (first, True)
    assert f"holds token {first}, which rotator wrote before token {third}" in caplog.text
    assert "changed by hand" not in caplog.text
    assert value not in caplog.text

    clock.advance(GRACE + timedelta(minutes=1))
    actions = engine.revoke_due()
    assert first in _active(issuer), f"revoked while the profile holds it: {actions}"
    assert second not in _active(issuer), "a replaced token no store holds is revoked"
    refused = [a for a in actions if a.startswith(f"token {first}:")]
    assert len(refused) == 1 and "is still current in store(s) profile; refusing to revoke it" in refused[0], actions
    assert [r.token_id for r in engine.journal.revocations(POLICY, RevocationState.FAILED)] == [first]

    # The next rotation starts from the token the profile holds (compare-and-set on its version),
    # writes the new one over it, and retires both it and the token published last.
    result = engine.rotate()
    fourth = result.new_token_id
    assert result.old_token_id == first and fourth not in (None, first, second, third)
    now = store.read_current()
    assert (now.token_id, now.managed) == (fourth, True)
    assert {first, third} <= _active(issuer), "replaced, and valid for the grace period"
    assert sorted(r.token_id for r in engine.journal.pending_revocations(POLICY)) == sorted([first, third])

    clock.advance(GRACE + timedelta(minutes=1))
    actions = engine.revoke_due()
    assert sorted(actions) == sorted([f"token {first}: revoked", f"token {third}: revoked"])
    assert _active(issuer) == {fourth}
