"""A due revocation meets a captive portal's HTTP 200 in front of Secrets Manager: the token the secret holds as
AWSCURRENT is not revoked.

An operator moved AWSCURRENT back to the replaced token's version (the new one misbehaved), so the revocation rule
must find the store holding it and refuse. The host's network then answered every request with a portal's sign-in
page, HTTP 200: botocore parsed it as {"message": <page>}, DescribeSecret "said" the secret had no AWSCURRENT
value, the store held no token, nothing stopped the revocation, and the consumers' token was revoked. The store's
read fails instead (not Secrets Manager's answer); the revocation stays pending and says why, and once Secrets
Manager answers again it is refused: the secret holds the token.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings, AwsSecretsManagerStore
from rotator.config.policy_types import Policy, StoreBinding
from rotator.core.contracts import AdapterContext
from rotator.core.engine import Engine
from rotator.core.journal import RevocationState, open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from rotator.testing import FakeClock, MemoryIssuer, MemoryIssuerSettings, MemoryStoreSettings
from tests.adapters.test_vault_non_vault_answers import _serving
from tests.aws_server import MotoServer

POLICY = "aws-behind-portal"
SECRET = "tests/portal"
GRACE = timedelta(hours=1)
PORTAL = (200, "text/html", b"<html><body>Sign in to continue</body></html>")


def test_a_portal_200_does_not_let_the_token_the_secret_holds_be_revoked(tmp_path: Path, aws: MotoServer) -> None:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    issuer = MemoryIssuer(clock=clock, check_credential=False)
    policy = Policy(name=POLICY, enabled=True, issuer_type="memory", issuer_settings=MemoryIssuerSettings(),
                    stores=(StoreBinding("aws", "memory", MemoryStoreSettings("aws")),), schedule_text="1d",
                    window_text=None, grace=GRACE, lifetime=timedelta(days=3), verify_timeout=timedelta(seconds=30),
                    adopt=False, description="{tag}", base_dir=tmp_path)  # fmt: skip
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    with _serving({}, aws.url) as ingress:  # passes every request on to moto, until told otherwise
        settings = AwsSecretsManagerSettings(secret_id=SECRET, region=aws.region, endpoint_url=ingress.url,
                                             max_attempts=1)  # fmt: skip
        store = AwsSecretsManagerStore.from_config(settings, AdapterContext(policy=POLICY, clock=clock))
        engine = Engine(policy, journal, issuer=issuer, stores=[("aws", store)], clock=clock,
                        retry=RetryPolicy(1, 0.01, 0.01), holder="daemon")  # fmt: skip
        value, first = issuer.tokens.create("made by a human")
        engine.bootstrap(Secret(value), first, None)
        second = engine.rotate().new_token_id
        assert second is not None and second != first
        assert [r.token_id for r in journal.pending_revocations(POLICY)] == [first]

        # The operator moves AWSCURRENT back to the first token's version (AWSPREVIOUS).
        sm = aws.client()
        labels = sm.describe_secret(SecretId=SECRET)["VersionIdsToStages"]
        current = next(v for v, s in labels.items() if "AWSCURRENT" in s)
        previous = next(v for v, s in labels.items() if "AWSPREVIOUS" in s)
        sm.update_secret_version_stage(SecretId=SECRET, VersionStage="AWSCURRENT", MoveToVersionId=previous,
                                       RemoveFromVersionId=current)  # fmt: skip
        assert store.read_current().token_id == first

        clock.advance(GRACE + timedelta(minutes=1))
        ingress.default = PORTAL  # the network answers with its sign-in page for a moment
        actions = engine.revoke_due()
        assert first in {t.token_id for t in issuer.tokens.active()}, f"revoked while the secret holds it: {actions}"
        assert len(actions) == 1 and actions[0].startswith(f"token {first}: revocation postponed until "), actions
        assert f"the answer of {ingress.url} to DescribeSecret is not Secrets Manager's" in actions[0], actions
        assert "Sign in" not in actions[0]
        pending = journal.revocations(POLICY, RevocationState.PENDING)
        assert [(r.token_id, r.attempts) for r in pending] == [(first, 1)]
        assert "is not Secrets Manager's" in (pending[0].last_error or "")

        ingress.default = aws.url  # Secrets Manager answers again: the store names the token it holds, and keeps it
        assert store.read_current().token_id == first
        actions = engine.revoke_due(retry_failed=True)
        assert first in {t.token_id for t in issuer.tokens.active()}, actions
        assert len(actions) == 1 and f"token {first} is still current in store(s) aws; refusing to revoke it" in (
            actions[0]), actions
        assert second in {t.token_id for t in issuer.tokens.active()}
        assert not journal.revocations(POLICY, RevocationState.DONE), actions
