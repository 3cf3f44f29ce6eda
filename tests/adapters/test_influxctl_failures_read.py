"""How influxctl's failures are read, and where it runs.

- A server's NotFound is told by the error's class, and its hint fits the command: a revoke names a
  token id, a listing only the profile's account and cluster (the fake answers NotFound for a profile of
  another account, as a server does); a verification query's database has its own hint
  (tests/adapters/test_influxctl_database.py).
- An influxctl too old for a flag rotator passes: urfave/cli writes ``Incorrect Usage: flag provided but
  not defined: -timeout`` and the help to stdout; the message quoted the last help line.
- influxctl runs in an empty private directory: ``influxctl query QUERY`` reads a file named like QUERY
  in its working directory instead of the text.
- Lines are split at "\\n" alone, not at U+2028, \\v, \\f, \\x1c... (``str.splitlines``): the server's
  text may hold them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.influxctl.common import (
    HINT_NOT_FOUND,
    InfluxctlNotFound,
    error_for_exit,
    is_not_found,
    table_value,
)
from rotator.adapters.influxctl.database import InfluxctlDatabaseIssuer, InfluxctlDatabaseSettings
from rotator.adapters.influxctl.management import InfluxctlManagementIssuer, InfluxctlManagementSettings
from rotator.config.adapter_settings import validate_settings
from rotator.core.errors import PermanentError
from rotator.core.secret import Secret
from tests.fakes.fixtures import FakeInfluxctlFixture

CHECKOUT = Path(__file__).resolve().parents[2]
CLUSTERED = {"product": "clustered", "host": "influxdb.example.test"}
FOREIGN = "99999999-9999-4999-8999-999999999999"
UUID = "11111111-1111-4111-8111-111111111111"


def management(fake: FakeInfluxctlFixture, binary: Path | None = None, **profile: Any) -> InfluxctlManagementIssuer:
    model = validate_settings(InfluxctlManagementSettings,
                              {"influxctl": str(binary or fake.binary), "profile": profile or CLUSTERED})
    return InfluxctlManagementIssuer(model, base_dir=fake.workdir)


def failed(stderr: str = "", stdout: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["influxctl"], 1, stdout, stderr)


# ---------------------------------------------------------------------------------- NotFound
def test_not_found_is_told_by_its_class_and_its_hint_fits_the_command() -> None:
    stderr = "Error: rpc error: code = NotFound desc = management token not found\n"
    revoke = error_for_exit("influxctl management revoke", failed(stderr))
    assert isinstance(revoke, InfluxctlNotFound) and is_not_found(revoke)
    assert revoke.hint == HINT_NOT_FOUND  # a revoke names a token id
    listing = error_for_exit("influxctl management list", failed(stderr))
    assert is_not_found(listing) and "token id" not in listing.hint and "account_id and cluster_id" in listing.hint
    # a hint's text is no NotFound: another error given the same words is not taken for one
    assert not is_not_found(PermanentError("influxctl management revoke failed (exit 1)", hint=HINT_NOT_FOUND))


def test_a_profile_of_another_account_is_not_found_with_a_hint_about_the_profile(fake_influxctl) -> None:
    value, _ = fake_influxctl.state.add_token("bootstrap")
    issuer = management(fake_influxctl, product="dedicated", account_id=FOREIGN,
                        cluster_id=fake_influxctl.state.cluster_id)
    with pytest.raises(InfluxctlNotFound, match=f'account "{FOREIGN}" not found') as info:
        issuer.list_tokens(Secret(value))
    assert "account_id and cluster_id" in info.value.hint
    assert value not in f"{info.value} {info.value.hint}"


# ---------------------------------------------------------------------------------- an influxctl too old
def old_influxctl(tmp_path: Path, *missing: str) -> Path:
    """The fake as an influxctl that does not know the global flags ``missing`` yet (2.9.6: no --timeout)."""
    binary = tmp_path / "influxctl-old"
    binary.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(CHECKOUT)!r})\n"
        "from rotator.sandbox import influxctl_simulator as sim\n"
        f"for name in {list(missing)!r}:\n"
        "    del sim.GLOBAL_FLAGS[name]\n"
        "sys.exit(sim.main(sys.argv[1:]))\n"
    )
    binary.chmod(0o700)
    return binary


def test_an_influxctl_without_a_flag_rotator_passes_is_named_with_the_version_needed(fake_influxctl,
                                                                                     tmp_path) -> None:
    value, _ = fake_influxctl.state.add_token("bootstrap")
    issuer = management(fake_influxctl, old_influxctl(tmp_path, "timeout"))
    with pytest.raises(PermanentError) as info:
        issuer.list_tokens(Secret(value))
    message, hint = str(info.value), info.value.hint
    assert message.endswith("failed (exit 1): Incorrect Usage: flag provided but not defined: -timeout"), message
    assert "print the version" not in message, "the last help line"
    assert "does not know the flag --timeout (added in influxctl 2.9.7)" in hint
    assert "`influxctl version`" in hint


@pytest.mark.parametrize(("stderr", "stdout"), [
    ("", "Incorrect Usage: flag provided but not defined: -include-revoked\n\nNAME:\n   influxctl token list\n"),
    ("Incorrect Usage: flag provided but not defined: -include-revoked\n\nUSAGE:\n   influxctl token list\n"
     "   --format value  output format\n", ""),
])  # fmt: skip
def test_the_refused_flag_is_read_from_either_stream(stderr: str, stdout: str) -> None:
    """urfave/cli v2 writes the refusal to its App.Writer: stdout unless influxctl chose stderr."""
    error = error_for_exit("influxctl token list", failed(stderr, stdout))
    assert str(error) == ("influxctl token list failed (exit 1): "
                          "Incorrect Usage: flag provided but not defined: -include-revoked")  # fmt: skip
    assert "--include-revoked (added in influxctl 2.10.0)" in error.hint


def test_another_refused_command_line_is_quoted_with_the_versions_needed() -> None:
    error = error_for_exit("influxctl management create",
                           failed("", 'Incorrect Usage: invalid value "x" for flag -expires-at\n\nUSAGE:\n  ...\n'))
    assert str(error).endswith(': Incorrect Usage: invalid value "x" for flag -expires-at')
    assert "2.9.7" in error.hint and "`influxctl version`" in error.hint


def test_a_server_answer_is_not_read_as_a_refused_command_line() -> None:
    error = error_for_exit("influxctl management list", failed(
        "Error: rpc error: code = Unauthenticated desc = unauthorized\n", "Incorrect Usage: (some listed text)\n"))
    assert "Unauthenticated" in str(error) and "Incorrect Usage" not in str(error)


# ---------------------------------------------------------------------------------- the child's working directory
def test_a_file_named_like_the_verify_query_in_rotator_s_directory_is_not_the_query(fake_influxctl, tmp_path,
                                                                                    monkeypatch) -> None:
    """`influxctl query QUERY`: "command line string, path to file, or -". A file "SELECT 1" where rotator
    runs (a daemon started in /tmp, a shared directory) was the query verification ran."""
    value, _ = fake_influxctl.state.add_db_token("bootstrap", {"read": ["db1"]})
    (fake_influxctl.workdir / "mgmt.token").write_text("unused\n")
    workdir = tmp_path / "shared"
    workdir.mkdir()
    (workdir / "SELECT 1").write_text("SELECT * FROM someone_elses_table\n")
    monkeypatch.chdir(workdir)
    model = validate_settings(InfluxctlDatabaseSettings, {
        "influxctl": str(fake_influxctl.binary), "profile": CLUSTERED, "permissions": {"read": ["db1"]},
        "auth": {"method": "mgmt_token", "token": {"file": "mgmt.token"}}})  # fmt: skip
    InfluxctlDatabaseIssuer(model, base_dir=fake_influxctl.workdir).verify(Secret(value))
    [call] = [c for c in fake_influxctl.state.calls() if c["command"] == "query"]
    assert call["argv"][-1] == "SELECT 1"


def test_influxctl_runs_in_an_empty_private_directory(fake_influxctl, tmp_path) -> None:
    value, _ = fake_influxctl.state.add_token("bootstrap")
    record = tmp_path / "seen.txt"
    spy = tmp_path / "influxctl-spy"
    spy.write_text(f'#!/bin/sh\n{{ pwd; ls -A; }} > "{record}"\nexec "{fake_influxctl.binary}" "$@"\n')
    spy.chmod(0o700)
    management(fake_influxctl, spy).list_tokens(Secret(value))
    cwd, *entries = record.read_text().splitlines()
    assert Path(cwd).parent.name.startswith("rotator-influxctl-") and Path(cwd).name == "cwd"
    assert entries == []
    assert not Path(cwd).exists(), "removed with the call's private directory"


def test_a_binary_found_through_a_relative_path_entry_is_still_found(fake_influxctl, tmp_path, monkeypatch) -> None:
    """The child runs elsewhere: a name that PATH's relative entry finds from rotator's directory is made absolute."""
    value, token_id = fake_influxctl.state.add_token("bootstrap")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "influxctl-here").symlink_to(fake_influxctl.binary)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"bin{os.pathsep}{os.environ['PATH']}")
    model = validate_settings(InfluxctlManagementSettings, {"influxctl": "influxctl-here", "profile": CLUSTERED})
    issuer = InfluxctlManagementIssuer(model, base_dir=fake_influxctl.workdir)
    assert [t.token_id for t in issuer.list_tokens(Secret(value))] == [token_id]


def test_a_relative_ca_file_or_directory_is_read_where_rotator_runs(fake_influxctl, tmp_path, monkeypatch) -> None:
    """SSL_CERT_FILE=certs/ca.pem (a container's WORKDIR and a relative path) named a file of rotator's working
    directory; influxctl runs in a directory of its own, where the private CA was not found."""
    value, _ = fake_influxctl.state.add_token("bootstrap")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("a CA\n")
    record = tmp_path / "seen.txt"
    spy = tmp_path / "influxctl-spy"
    spy.write_text(f'#!/bin/sh\n{{ cat "$SSL_CERT_FILE"; echo "$SSL_CERT_DIR"; }} > "{record}"\n'
                   f'exec "{fake_influxctl.binary}" "$@"\n')
    spy.chmod(0o700)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", "certs/ca.pem")
    monkeypatch.setenv("SSL_CERT_DIR", f"certs{os.pathsep}/etc/ssl/certs")
    management(fake_influxctl, spy).list_tokens(Secret(value))
    assert record.read_text().splitlines() == ["a CA", f"{tmp_path / 'certs'}{os.pathsep}/etc/ssl/certs"]


# ---------------------------------------------------------------------------------- line ends
@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85"])
def test_a_server_text_with_a_unicode_line_end_keeps_its_code(separator: str) -> None:
    stderr = f'Error: rpc error: code = NotFound desc = database token "a{separator}b" not found\n'
    error = error_for_exit("influxctl token revoke", failed(stderr))
    assert is_not_found(error), error
    assert str(error).startswith("influxctl token revoke failed (exit 1): Error: rpc error: code = NotFound")


def test_a_carriage_return_before_the_line_end_is_no_part_of_the_line() -> None:
    error = error_for_exit("influxctl token revoke", failed("Error: rpc error: code = NotFound desc = gone\r\n"))
    assert is_not_found(error) and str(error).endswith("desc = gone")


def test_a_table_row_is_one_line_whatever_its_description_holds() -> None:
    """A description with U+2028 and a made-up row was read as a row of its own, before the real id."""
    real = "22222222-2222-4222-8222-222222222222"
    stdout = (f"+----+\n| description | x\u2028| id | {UUID} |\n|          id | {real} |\n+----+\n"
              "M.V1.0123456789abcdefghijklmnopqrstuvwxyz012345\n")
    assert table_value(stdout, "id") == real
