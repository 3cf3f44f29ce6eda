"""A test-only issuer whose tokens live in a PostgreSQL table, for the many-replica daemon test.

Fifty policies rotating every few seconds through the fake influxctl would need more CPU than
this 2-core machine has (each call is a Python process); this issuer keeps the same contract
(mint / verify / revoke / list_tokens, tags in descriptions, revocation confirmed) at the cost of
one SQL statement, so the test measures the daemon's coordination, not subprocess start-up.
Registered with ``registry.force_register`` by :func:`run_daemon` in each replica process.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import psycopg
from pydantic import BaseModel, ConfigDict

from rotator.core.contracts import AdapterContext, MintedToken, MintRequest, TokenInfo
from rotator.core.errors import PermanentError, TransientError
from rotator.core.secret import Secret

DDL = """
CREATE TABLE IF NOT EXISTS test_tokens (
    id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, policy TEXT NOT NULL, description TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ, revoked_at TIMESTAMPTZ
)
"""


class PgIssuerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dsn: str


class PgIssuer:
    kind: ClassVar[str] = "test-pg"
    settings_model: ClassVar[type[BaseModel]] = PgIssuerSettings
    #: One SQL statement, no child process: a dead replica's mint lands within seconds, if at all.
    call_timeout_seconds: ClassVar[float] = 5.0

    def __init__(self, dsn: str, policy: str) -> None:
        self.dsn = dsn
        self.policy = policy

    @classmethod
    def from_config(cls, settings: BaseModel, ctx: AdapterContext) -> PgIssuer:
        assert isinstance(settings, PgIssuerSettings)
        return cls(settings.dsn, ctx.policy)

    def _sql(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                cur = conn.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        except psycopg.OperationalError as exc:
            raise TransientError(f"test issuer unreachable: {type(exc).__name__}") from None

    def mint(self, request: MintRequest, credential: Secret | None) -> MintedToken:
        self._authenticate(credential)
        value = "pgtok_" + secrets.token_urlsafe(32)
        token_id = str(uuid.uuid4())
        self._sql("INSERT INTO test_tokens VALUES (%s, %s, %s, %s, now(), %s, NULL)",
                  (token_id, _hash(value), self.policy, request.description, request.expires_at))
        return MintedToken(Secret(value), token_id, request.expires_at)

    def verify(self, token: Secret) -> None:
        self._authenticate(token)

    def revoke(self, token_id: str, credential: Secret | None) -> None:
        self._authenticate(credential)
        self._sql("UPDATE test_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %s", (token_id,))

    def list_tokens(self, credential: Secret | None) -> list[TokenInfo]:
        self._authenticate(credential)
        rows = self._sql("SELECT id, description, created_at, expires_at, revoked_at FROM test_tokens "
                         "WHERE policy = %s", (self.policy,))
        return [TokenInfo(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def _authenticate(self, credential: Secret | None) -> None:
        if credential is None:
            raise PermanentError("test issuer: no credential")
        rows = self._sql("SELECT 1 FROM test_tokens WHERE sha256 = %s AND revoked_at IS NULL AND "
                         "(expires_at IS NULL OR expires_at > now())", (_hash(credential.reveal()),))
        if not rows:
            raise PermanentError("test issuer: credential not active")


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def setup(dsn: str, policies: list[str]) -> dict[str, tuple[str, str]]:
    """Create the table and one human-made bootstrap token per policy: {policy: (value, id)}."""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(DDL)
        for policy in policies:
            value, token_id = "pgtok_" + secrets.token_urlsafe(32), str(uuid.uuid4())
            conn.execute("INSERT INTO test_tokens VALUES (%s, %s, %s, %s, %s, NULL, NULL)",
                         (token_id, _hash(value), policy, "bootstrap", datetime.now(UTC)))
            out[policy] = (value, token_id)
    return out


def run_daemon(argv: list[str]) -> int:
    from rotator.config import registry
    from rotator.runners.daemon import main

    registry.force_register("issuer", "test-pg", PgIssuer)
    return main(argv)


if __name__ == "__main__":
    sys.exit(run_daemon(sys.argv[1:]))
