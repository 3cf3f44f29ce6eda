"""What a policy file's problems say: a daemon audit file that would destroy the policy file or the journal,
input that reaches the terminal only as inert text, and pydantic's internals (union member labels, regular
expressions) written out in the file's own terms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rotator.config.policy import PolicyFileError, load_config
from tests.config.test_validate import GOOD_STORE, _policy

_DAEMON = '[rotator]\njournal = "{journal}"\n[daemon]\n[daemon.audit]\nfile = "{audit}"\n'


def _write(tmp_path: Path, text: str, name: str = "rotator.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(path: Path) -> list[tuple[str, str, str]]:
    with pytest.raises(PolicyFileError) as caught:
        load_config(path)
    return [(p.where, p.message, p.hint) for p in caught.value.problems]


# -- [daemon.audit] file ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("audit", "what"), [
    ("rotator.toml", "the policy file itself"),
    ("./sub/../rotator.toml", "the policy file itself"),
    ("journal.db", "the journal"),
    ("journal.db-wal", "the journal's -wal file"),
    ("journal.db-shm", "the journal's -shm file"),
    ("{dir}/journal.db-journal", "the journal's -journal file"),
])  # fmt: skip
def test_an_audit_file_that_is_the_policy_file_or_the_journal_is_refused(tmp_path: Path, audit: str,
                                                                         what: str) -> None:
    """The daemon appends JSON lines to its audit file: to the policy file they make it invalid TOML (every
    command then fails), to the journal's files SQLite overwrites them (the events lost). `validate` said
    valid; the file need not exist yet (a first start creates the journal)."""
    (tmp_path / "sub").mkdir()
    path = _write(tmp_path, _policy(top=_DAEMON.format(journal="journal.db", audit=audit.format(dir=tmp_path))))
    problems = _problems(path)
    assert [where for where, _, _ in problems] == ["daemon.audit.file"], problems
    _, message, hint = problems[0]
    assert f"is {what}" in message and "appends its JSON audit lines" in message, message
    assert hint == "name a file of its own, e.g. /var/log/rotator/audit.jsonl"


def test_an_audit_file_that_is_an_existing_journal_by_another_name_is_refused(tmp_path: Path) -> None:
    """An existing file is compared by inode: a symbolic link to the journal is the journal."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "journal.db").write_bytes(b"")
    os.symlink(tmp_path / "data" / "journal.db", tmp_path / "audit.jsonl")
    path = _write(tmp_path, _policy(top=_DAEMON.format(journal=f"sqlite:///{tmp_path}/data/journal.db",
                                                       audit="audit.jsonl")))
    problems = _problems(path)
    assert [where for where, _, _ in problems] == ["daemon.audit.file"]
    assert "is the journal (" in problems[0][1]


def test_an_audit_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, _policy(top=_DAEMON.format(journal="journal.db", audit=str(tmp_path))))
    problems = _problems(path)
    assert [where for where, _, _ in problems] == ["daemon.audit.file"]
    assert "is a directory" in problems[0][1]


@pytest.mark.parametrize("audit", ["audit.jsonl", "journal.db.audit", "/var/log/rotator/audit.jsonl"])
def test_an_audit_file_of_its_own_is_valid(tmp_path: Path, audit: str) -> None:
    path = _write(tmp_path, _policy(top=_DAEMON.format(journal="journal.db", audit=audit)))
    assert load_config(path).daemon.audit.file == Path(audit)


# -- control characters ----------------------------------------------------------------------------------


def test_control_characters_of_the_file_reach_the_terminal_written_out(tmp_path: Path) -> None:
    """A key holding escape sequences erased the lines above it and printed a false "valid" line; a line
    break started a line that looked like a problem of its own."""
    fake = "\\u001b[1A\\u001b[2Kbase.toml: valid, 1 policy: p1\\u001b[8m"
    head = f'name = "p1"\nschedule = "30d"\n"x{fake}" = 1\n"y\\n  - all good" = 2\n'
    path = _write(tmp_path, _policy(head=head))
    with pytest.raises(PolicyFileError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "\x1b" not in text and "\\x1b[1A" in text, text
    problems = caught.value.problems
    assert len(problems) == 2
    assert text.splitlines()[1:] == [f"  - {p}" for p in problems], text
    for problem in problems:
        assert all(c.isprintable() for c in f"{problem.where}{problem.message}{problem.hint}"), problem


# -- union members, patterns -------------------------------------------------------------------------------

_APPROLE = GOOD_STORE.replace('method = "token"\ntoken = { env = "VAULT_TOKEN" }',
                              'method = "approle"\nrole_id = {role_id}\nsecret_id = {{ file = "/run/secrets/s" }}')


@pytest.mark.parametrize(("role_id", "detail"), [
    ('{ fil = "/x" }', "fil: not a key it takes"),
    ("5", None),
    ('{ file = "/x", env = "Y" }', "give exactly one of `file` or `env`"),
])  # fmt: skip
def test_a_value_no_member_of_a_union_takes_is_one_problem_at_its_key(tmp_path: Path, role_id: str,
                                                                      detail: str | None) -> None:
    """`role_id = { fil = "/x" }` gave `auth.role_id.str: Input should be a valid string` and
    `auth.role_id.CredentialRef.fil: Unexpected keyword argument`: neither `str` nor `CredentialRef` is a key."""
    path = _write(tmp_path, _policy(store=_APPROLE.format(role_id=role_id)))
    problems = _problems(path)
    assert [where for where, _, _ in problems] == ["policy[0] 'p1'.store[0].auth.role_id"], problems
    _, message, hint = problems[0]
    assert message.startswith('must be a quoted string, or a table { file = "/path/to/file" } / { env = "VAR" }')
    if detail is None:
        assert "as written" not in message and hint.startswith("write it in one of these forms"), message
    else:
        assert f"(as written: {detail})" in message, message
    assert "CredentialRef" not in message + hint and ".str" not in message, message


def test_a_misspelt_key_inside_a_credential_reference_keeps_its_place(tmp_path: Path) -> None:
    """Not a union: `token` takes only a reference, whose own key is named under it."""
    path = _write(tmp_path, _policy(store=GOOD_STORE.replace('{ env = "VAULT_TOKEN" }', '{ fil = "t" }')))
    assert [where for where, _, _ in _problems(path)] == ["policy[0] 'p1'.store[0].auth.token.fil"]


def test_a_bad_policy_name_says_what_a_name_is_not_a_regular_expression(tmp_path: Path) -> None:
    path = _write(tmp_path, _policy(head='name = "my policy!"\nschedule = "30d"'))
    problems = _problems(path)
    assert [where for where, _, _ in problems] == ["policy[0] 'my policy!'.name"], problems
    _, message, hint = problems[0]
    assert message == "is not a valid name" and "[A-Za-z0-9]" not in message + hint, problems
    assert hint.startswith("write 1 to 63 letters, digits, '.', '_' or '-', beginning with a letter or digit")
