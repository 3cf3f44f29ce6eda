"""A postgresql:// journal URL that libpq would refuse is a problem at `rotator validate`, not an internal error later.

libpq refuses a query key that is not one of its connection parameters (psycopg's ``conninfo_to_dict``
raises ``ProgrammingError``), and reads ``host1:port1,host2:port2`` as its multi-host failover form. Each check
runs with psycopg (the loaded libpq's own parameters and parser) and without it (the postgres extra is
optional: a fixed list of libpq's documented parameters).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import pq

from rotator.config import policy
from rotator.config.policy import PolicyFileError, parse_config
from tests.harness import REPO

MULTI_HOST = "postgresql://rotator@db1.example.com:5432,db2.example.com:5432/rotator?target_session_attrs=read-write"


@pytest.fixture(params=["psycopg", "no-psycopg"])
def libpq(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test twice: with psycopg importable, and as if the postgres extra were not installed."""
    if request.param == "no-psycopg":
        for name in [n for n in sys.modules if n == "psycopg" or n.startswith("psycopg.")] + ["psycopg"]:
            monkeypatch.setitem(sys.modules, name, None)  # an import of it raises ImportError
    yield request.param


def _problems(url: str) -> list[str]:
    try:
        parse_config({"rotator": {"journal": url}}, Path("/etc/rotator/policies.toml"))
    except PolicyFileError as exc:
        return [str(p) for p in exc.problems]
    return []


@pytest.mark.parametrize("url", [
    MULTI_HOST,
    "postgres://rotator@db1,db2/rotator?target_session_attrs=read-write",
    "postgresql://rotator@db1:5432,db2/rotator",
    "postgresql://rotator@[2001:db8::1]:5432,[2001:db8::2]:6432/rotator",
    "postgresql://rotator@/rotator?host=db1,db2&port=5432,5433",
    "postgresql://rotator@db:/rotator",
    "postgresql:///rotator",
    "postgresql://rotator@db.example:5432/rotator?sslmode=verify-full&connect_timeout=5&application_name=r",
    "postgresql://rotator@db/rotator?options=-csearch_path%3Drotator",
    "postgresql://rotator@db/rotator?ssl%6dode=require",  # libpq decodes the key
    "postgresql://rotator@db/rotator?ssl=true",  # libpq's URI alias of sslmode=require
])  # fmt: skip
def test_urls_libpq_reads_are_valid(url: str, libpq: str) -> None:
    assert _problems(url) == [], url


@pytest.mark.parametrize(("url", "fragments"), [
    ("postgresql://rotator@127.0.0.1:1/db?search_path=rotator",
     ["rotator.journal", "query key 'search_path'", "not a libpq connection parameter", "LIBPQ-PARAMKEYWORDS",
      "options=-csearch_path%3Drotator"]),
    ("postgresql://rotator@127.0.0.1:1/db?foo=bar", ["query key 'foo'", "not a libpq connection parameter"]),
    ("postgresql://rotator@db/rotator?sslmode=require&sslmdoe=verify-full",
     ["query key 'sslmdoe' (did you mean 'sslmode'?)"]),
    ("postgresql://rotator@db/rotator?Sslmode=require", ["query key 'Sslmode' (did you mean 'sslmode'?)"]),
    ("postgresql://rotator@db1:5432,db2:0/rotator",
     ["rotator.journal", "port is not a number from 1 to 65535 for host 'db2'", "host1:5432,host2:5432"]),
    ("postgresql://rotator@db1:5432,db2:65536/rotator", ["port is not a number", "for host 'db2'"]),
    ("postgresql://rotator@db1,db2:x5432/rotator", ["port is not a number", "for host 'db2'"]),
    ("postgresql://rotator@db1:abc,db2:5432/rotator", ["port is not a number", "for host 'db1'"]),
    ("postgresql://rotator@[::1]:5432,[::2]:99999/rotator", ["port is not a number", "for host '::2'"]),
    ("postgresql://rotator@db:" + "9" * 5000 + "/rotator", ["port is not a number", "for host 'db'"]),
    ("postgresql://rotator@[::1/rotator", ["the IPv6 address '[::1' has no closing ']'"]),
])  # fmt: skip
def test_urls_libpq_refuses_are_a_problem_naming_the_part(url: str, fragments: list[str], libpq: str) -> None:
    problems = _problems(url)
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], f"{fragment!r} not in {problems[0]!r}"


@pytest.mark.parametrize(("url", "fragment"), [
    ("postgresql://rotator@db/rotator?sslmode", 'missing key/value separator "=" in URI query parameter'),
    ("postgresql://rotator@db/rotator?ssl=false", 'invalid URI query parameter: "ssl"'),
    ("postgresql://rotator@db/rotator%zz", "invalid percent-encoded token"),
])  # fmt: skip
def test_what_only_libpq_reads_is_checked_by_libpq_itself(url: str, fragment: str) -> None:
    problems = _problems(url)
    assert len(problems) == 1 and "libpq cannot read the URL" in problems[0] and fragment in problems[0], problems
    assert "LIBPQ-CONNSTRING-URIS" in problems[0]


def test_without_psycopg_the_fixed_list_is_used(libpq: str) -> None:
    keywords = policy._libpq_keywords()
    if libpq == "no-psycopg":
        assert keywords is policy._LIBPQ_KEYWORDS
    else:
        assert keywords == {option.keyword.decode() for option in pq.Conninfo.get_defaults()} | {"ssl"}


def test_every_parameter_of_the_loaded_libpq_is_in_the_fixed_list() -> None:
    """The list used without psycopg must not refuse what the libpq psycopg ships accepts."""
    loaded = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    assert loaded <= policy._LIBPQ_KEYWORDS, sorted(loaded - policy._LIBPQ_KEYWORDS)


@pytest.mark.parametrize(("journal", "code", "expected"), [
    ("postgresql://rotator@127.0.0.1:1/db?search_path=rotator", 2, "query key 'search_path'"),
    ("postgresql://rotator@127.0.0.1:1/db?foo=bar", 2, "query key 'foo'"),
    (MULTI_HOST, 0, "valid, 0 policies"),
])  # fmt: skip
def test_validate_answers_what_every_later_command_would_meet(tmp_path: Path, journal: str, code: int,
                                                              expected: str) -> None:
    """The reviewer's files: validate said 0 and each later command then ended in "internal error"."""
    path = tmp_path / "policies.toml"
    path.write_text(f'[rotator]\njournal = "{journal}"\n')
    commands = [["validate", str(path)]] + ([["status", "-c", str(path)]] if code else [])  # no server to reach
    for command in commands:
        proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", *command], capture_output=True,
                              text=True, cwd=REPO, timeout=60)
        assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == code, f"{command[0]}: {proc.stdout}{proc.stderr}"
        assert expected in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_a_journal_path_starting_with_a_tilde_is_refused_not_made_a_directory_named_tilde(tmp_path: Path) -> None:
    """``journal = "~/j.db"`` passed validate, and `recover` made a directory named ``~`` beside the policy
    file for it (one ``rm -rf ~`` there from disaster)."""
    path = tmp_path / "policies.toml"
    path.write_text('[rotator]\njournal = "~/rotator-review-j.db"\n')
    for command in (["validate", str(path)], ["recover", "-c", str(path)]):
        proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", *command], capture_output=True,
                              text=True, cwd=REPO, timeout=60)
        assert proc.returncode == 2, f"{command[0]}: {proc.stdout}{proc.stderr}"
        assert "starts with ~, which is not expanded" in proc.stderr, proc.stderr
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("command", [["status"], ["rotate", "--all", "--dry-run"], ["recover"]])
def test_a_journal_path_that_is_a_directory_says_so(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "policies.toml"
    path.write_text(f'[rotator]\njournal = "{tmp_path}"\n')
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", *command, "-c", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, f"{command[0]}: {proc.stdout}{proc.stderr}"
    assert f"the journal path {tmp_path} is a directory" in proc.stderr, proc.stderr
