"""The scheduled revoke-expired and an operator's rollback (`aws secretsmanager update-secret-version-stage`
moving AWSCURRENT back to the AWSPREVIOUS version) during the pass: the token AWSCURRENT holds again is never
revoked. The pass took its holders from the AWSCURRENT it read first, and revoked the rolled-back token though
its own later DescribeSecret showed the rollback (moto in server mode, the fake influxctl)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.runners import test_aws_lambda
from tests.runners.test_aws_lambda import GRACE, Scene

scene = test_aws_lambda.scene  # the fixture: a secret bootstrapped on moto, its policy, the fake influxctl


class _Before:
    """The real client; ``hook`` runs once, just before the first call of ``name`` that comes after a call of
    ``after`` (None: after nothing)."""

    def __init__(self, real: Any, name: str, hook: Callable[[], None], after: str | None = None) -> None:
        self._real, self._name, self._hook, self._after, self._seen = real, name, hook, after, after is None

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)

        def call(**kw: Any) -> Any:
            if name == self._name and self._seen and self._hook is not None:
                hook, self._hook = self._hook, None
                hook()
            if name == self._after:
                self._seen = True
            return method(**kw)

        return call


@pytest.mark.parametrize(("name", "after"), [
    ("describe_secret", "get_secret_value"),  # seen by the pass's second DescribeSecret
    ("list_secret_version_ids", None),  # after it: only the look just before the revocation sees it
])  # fmt: skip
def test_a_rollback_during_the_pass_keeps_the_token_awscurrent_holds_again(
        scene: Scene, name: str, after: str | None) -> None:  # fmt: skip
    token = scene.rotate()
    previous = next(v for v, stages in scene.stages().items() if "AWSPREVIOUS" in stages)
    scene.clock.advance(GRACE + timedelta(minutes=20))  # the bootstrap token's revocation is due

    def rollback() -> None:
        scene.client().update_secret_version_stage(SecretId=scene.name, VersionStage="AWSCURRENT",
                                                   MoveToVersionId=previous, RemoveFromVersionId=token)

    report = scene.invoke({"action": "revoke-expired"}, client=_Before(scene.client(), name, rollback, after))
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id, "rolled back"
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is None, report
