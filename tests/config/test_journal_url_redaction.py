"""The PostgreSQL journal URL as messages show it (Journal.location: every JournalError, the daemon's
start log; the URL problems `rotator validate` reports): never a secret, never an exception.

Finding: the location was built with urlsplit, which missed a password given as ``?password=`` (libpq
takes it from there too) and raised a bare ValueError ("Port could not be cast to integer") for a
multi-host URL with a password in its user-info (``u:pw@h1:1,h2:2/db``). The policy loader refuses a
password in the URL (rotator/config/inline_secrets.py), but open_journal is the boundary.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from psycopg.conninfo import conninfo_to_dict

from rotator.core.errors import JournalError
from rotator.core.journal import Journal, _redact_url, open_journal, postgres_url_problem

SECRET = "S3CRETQ"


@pytest.mark.parametrize("url", [
    f"postgresql://postgres@127.0.0.1:1/db?password={SECRET}&connect_timeout=2",
    f"postgresql://postgres:{SECRET}@127.0.0.1:1,127.0.0.1:2/db?connect_timeout=2",
    f"postgresql://postgres:{SECRET}@127.0.0.1:1,127.0.0.1:2/db?password={SECRET}x&connect_timeout=2",
    f"postgres://postgres@127.0.0.1:1/db?sslpassword={SECRET}&connect_timeout=2",
])  # fmt: skip
def test_an_unreachable_journal_names_its_url_without_the_password(url: str) -> None:
    with pytest.raises(JournalError) as info:  # JournalUnavailable: nothing listens there; never a ValueError
        open_journal(url)
    text = f"{info.value} {info.value.hint}"
    assert SECRET not in text, text
    assert "127.0.0.1:1" in str(info.value), "the message still says where"


@pytest.mark.parametrize(("url", "shown"), [
    (f"postgresql://u@h/db?password={SECRET}", "postgresql://u:***@h/db"),
    (f"postgresql://u:{SECRET}@h1:1,h2:2/db", "postgresql://u:***@h1:1,h2:2/db"),
    (f"postgresql://u:{SECRET}@h1,h2:5433/db", "postgresql://u:***@h1,h2:5433/db"),
    (f"postgresql://u@h/db?pass%77ord={SECRET}", "postgresql://u:***@h/db"),  # libpq decodes the key
    (f"postgresql://u@h:5432/db?sslpassword={SECRET}&sslmode=require",  # (in libpq's order of its keys)
     "postgresql://u@h:5432/db?sslmode=require&sslpassword=***"),
    ("postgres://u@[::1]:5432/db?options=-csearch_path%3Drotator",
     "postgres://u@[::1]:5432/db?options=-csearch_path%3Drotator"),
    ("postgresql:///db?host=/run/postgresql&port=5432", "postgresql:///db?host=/run/postgresql&port=5432"),
    ("postgresql://rotator@db.example.com:5432/rotator?sslmode=verify-full",
     "postgresql://rotator@db.example.com:5432/rotator?sslmode=verify-full"),
])  # fmt: skip
def test_the_shown_url_is_what_libpq_reads_with_secrets_hidden(url: str, shown: str) -> None:
    assert _redact_url(url) == shown


@pytest.mark.parametrize("url", [
    f"postgresql://u:{SECRET}@h1:1,h2:2/db?bogus=1",  # a key libpq refuses, and ports urlsplit cannot read
    f"postgresql://u@h/db?password={SECRET}&bogus=1",
    f"postgresql://u@h/db?password={SECRET}%zz",  # libpq quotes the part it cannot decode
    f"postgresql://u@h/db?sslpassword={SECRET}=x",
    f"postgresql://u:{SECRET}[@h/db?bogus=1",  # not even Python reads it
    f"postgresql://u:{SECRET}/x@h/db?bogus=1",  # a / in the password: libpq and Python split it apart
])  # fmt: skip
def test_a_url_libpq_cannot_read_is_reported_without_its_secrets(url: str) -> None:
    problem = postgres_url_problem(url)
    assert problem is not None and "cannot be read by libpq" in problem
    assert SECRET not in problem, problem
    assert SECRET not in _redact_url(url)


@pytest.fixture
def journal_with_secrets(pg_url: str) -> Iterator[tuple[Journal, str]]:
    """A journal opened through a URL that also carries ``?sslpassword=`` (used only with an encrypted
    client key: harmless here) and ``?password=``: the server's own password if the test server needs
    one, else a made-up one (a server that trusts the connection never asks for it)."""
    secret = conninfo_to_dict(pg_url).get("password") or os.environ.get("PGPASSWORD") or SECRET
    journal = open_journal(f"{pg_url}&password={secret}&sslpassword={SECRET}")
    try:
        yield journal, str(secret)
    finally:
        journal.close()


def test_an_open_journal_shows_no_secret_in_its_location_or_errors(journal_with_secrets: tuple[Journal, str]) -> None:
    journal, secret = journal_with_secrets
    assert secret not in journal.location and SECRET not in journal.location, journal.location
    assert "sslpassword=***" in journal.location
    with pytest.raises(JournalError) as info, journal._tx() as cur:
        cur.execute("SELECT * FROM no_such_table")
    assert str(info.value).startswith(f"journal {journal.location}:")
    assert secret not in f"{info.value} {info.value.hint}" and SECRET not in str(info.value)
