"""PostgreSQL for journal tests: the server on 127.0.0.1:5432 (trust auth, database `test`).

Each test gets its own schema (dropped afterwards), selected through the URL's
``options=-csearch_path=...``, so the journal code under test connects exactly as in production.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

PG_BASE = os.environ.get("ROTATOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_BASE, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_BASE else "?"
    return f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A journal URL on a fresh, empty schema of the local PostgreSQL."""
    if not pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_BASE}: .ci/run starts it (pg_ctlcluster)")
    schema = f"rotator_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema_url(schema)
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
