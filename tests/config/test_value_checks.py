"""Values a policy file must not get through validation with, because each failed later (an internal
error at every run, a retry loop without backoff, a token "out of compliance" at each rotation), or
meant something else than written (``attempts = true`` as 1, ``"٣٠d"`` as 30 days); and `validate`
reporting every problem at once. The reviewer's repro files are in the policy review of this page."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rotator.config import registry
from rotator.config.policy import Config, PolicyFileError, load_config_bytes
from rotator.config.schedule import parse_duration, parse_schedule, parse_window
from rotator.core.credentials import CredentialRef
from rotator.core.errors import ConfigError
from tests.config.test_validate import GOOD_ISSUER as ISSUER
from tests.config.test_validate import GOOD_STORE as VAULT
from tests.harness import REPO

PROFILE = """
[[policy.store]]
type = "influxctl-profile"
config = "influxctl/config.toml"
"""


def _issuer(extra: str) -> str:
    """ISSUER with ``extra`` lines in its own table (not its profile's)."""
    return ISSUER.replace('type = "influxctl-management"\n', f'type = "influxctl-management"\n{extra}\n')


def _vault(extra: str) -> str:
    """VAULT with ``extra`` lines in its own table (not its auth's)."""
    return VAULT.replace('path = "influx/mgmt"\n', f'path = "influx/mgmt"\n{extra}\n')


def _text(head: str = 'name = "p1"\nschedule = "30d"', issuer: str = ISSUER, store: str = VAULT, top: str = "") -> str:
    return f"{top}\n[[policy]]\n{head}\n{issuer}\n{store}"


def _load(tmp_path: Path, text: str) -> Config:
    return load_config_bytes(text.encode(), tmp_path / "rotator.toml")


def _problems(tmp_path: Path, text: str) -> list[str]:
    """Every problem of ``text`` as `validate` prints it; fails when the file loads, or with another error."""
    with pytest.raises(PolicyFileError) as caught:
        _load(tmp_path, text)
    return [str(p) for p in caught.value.problems]


def _one(tmp_path: Path, text: str, where: str, *fragments: str) -> None:
    problems = _problems(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"policy[0] 'p1'.{where}:") or problems[0].startswith(f"{where}:"), problems
    for fragment in fragments:
        assert fragment in problems[0], problems


# -- 1 and 3: a NUL or an empty path in an adapter's settings ----------------------------------------------------

NUL_CASES = [
    # (what, issuer, store, where); each was valid, then a ValueError at validate (profile) or at every run
    ("profile config", ISSUER, PROFILE.replace("influxctl/config.toml", "sub/config.toml\\u0000"), "store[0].config"),
    ("influxctl binary", _issuer('influxctl = "bin/influx\\u0000ctl"'), VAULT, "issuer.influxctl"),
    ("Kubernetes jwt_file", ISSUER,
     VAULT.replace('method = "token"\ntoken = { env = "VAULT_TOKEN" }',
                   'method = "kubernetes"\nrole = "r"\njwt_file = "/var/run/token\\u0000"'), "store[0].auth.jwt_file"),
    ("CA bundle", ISSUER, _vault('ca_bundle = "ca\\u0000.pem"'), "store[0].ca_bundle"),
    ("profile TLS CA", ISSUER + 'tls = { ca = "ca.pem\\u0000" }\n', VAULT, "issuer.profile.tls.ca"),
    ("credential file", ISSUER, VAULT.replace('{ env = "VAULT_TOKEN" }', '{ file = "/etc/passwd\\u0000x" }'),
     "store[0].auth.token.file"),
]


@pytest.mark.parametrize(("what", "issuer", "store", "where"), NUL_CASES, ids=[c[0] for c in NUL_CASES])
def test_a_nul_in_an_adapter_setting_is_a_problem_at_that_key(tmp_path: Path, what: str, issuer: str, store: str,
                                                               where: str) -> None:
    _one(tmp_path, _text(issuer=issuer, store=store), where, "NUL character")


@pytest.mark.parametrize(("daemon", "where"), [
    ('[daemon.audit]\nfile = "audit\\u0000.jsonl"', "daemon.audit.file"),
    ('[[daemon.hooks]]\ncommand = ["systemctl", "reload\\u0000", "app"]', "daemon.hooks[0].command[1]"),
])
def test_a_nul_in_the_daemon_table_is_a_problem_at_that_key(tmp_path: Path, daemon: str, where: str) -> None:
    _one(tmp_path, _text(top=daemon + "\n"), where, "NUL character")


EMPTY_PATH_CASES = [
    ("profile config", ISSUER, PROFILE.replace('"influxctl/config.toml"', '""'), "store[0].config"),
    ("Kubernetes jwt_file", ISSUER,
     VAULT.replace('method = "token"\ntoken = { env = "VAULT_TOKEN" }',
                   'method = "kubernetes"\nrole = "r"\njwt_file = ""'),
     "store[0].auth.jwt_file"),
    ("CA bundle", ISSUER, _vault('ca_bundle = ""'), "store[0].ca_bundle"),
    ("profile TLS CA", ISSUER + 'tls = { ca = "" }\n', VAULT, "issuer.profile.tls.ca"),
]


@pytest.mark.parametrize(("what", "issuer", "store", "where"), EMPTY_PATH_CASES, ids=[c[0] for c in EMPTY_PATH_CASES])
def test_an_empty_path_setting_is_a_problem_not_the_directory(tmp_path: Path, what: str, issuer: str, store: str,
                                                              where: str) -> None:
    """pydantic reads "" as Path("."): the policy file's directory, read as a file at run time."""
    _one(tmp_path, _text(issuer=issuer, store=store), where, "is empty")


def test_an_empty_audit_file_is_a_problem_not_the_directory(tmp_path: Path) -> None:
    _one(tmp_path, _text(top='[daemon.audit]\nfile = ""\n'), "daemon.audit.file", "is empty")


@dataclass(frozen=True)
class _Located:
    error: str = "value"

    def secret_locations(self, base_dir: Path) -> list[str]:
        if self.error == "value":
            raise ValueError("embedded null byte")
        raise PermissionError(13, "Permission denied")


class _LocatedStore:
    """A third party's store whose ``secret_locations`` hook raises."""

    settings_model: ClassVar[type[Any]] = _Located

    @classmethod
    def from_config(cls, settings: Any, ctx: Any) -> Any:
        raise AssertionError("not built")

    def read_current(self) -> Any:
        raise AssertionError("not called")

    def publish(self, *args: Any) -> str:
        raise AssertionError("not called")


@pytest.mark.parametrize("error", ["value", "os"])
def test_a_secret_locations_hook_that_raises_is_a_problem_of_its_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      error: str) -> None:
    monkeypatch.setitem(registry._forced, ("store", "test-located"), _LocatedStore)
    store = f'[[policy.store]]\ntype = "test-located"\nerror = "{error}"\n'
    _one(tmp_path, _text(store=store), "store[0]", "where it writes cannot be worked out",
         "embedded null byte" if error == "value" else "Permission denied")


@pytest.mark.parametrize(("value", "fragment"), [
    ("json:JSONDecoder", "does not implement the contract"),  # a class without the adapter's methods
    ("json:NoSuchAdapter", "cannot be loaded"),  # an entry point naming an attribute its module lacks
])
def test_an_installed_adapter_that_breaks_the_contract_is_a_problem_not_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, fragment: str
) -> None:
    found = registry._entry_points

    def with_broken(kind: registry.Kind) -> dict[str, EntryPoint]:
        eps = dict(found(kind))
        if kind == "store":
            eps["test-broken"] = EntryPoint(name="test-broken", value=value, group="rotator.stores")
        return eps

    monkeypatch.setattr(registry, "_entry_points", with_broken)
    problems = _problems(tmp_path, _text(store='[[policy.store]]\ntype = "test-broken"\n'))
    assert len(problems) == 1 and problems[0].startswith("policy[0] 'p1'.store[0].type:"), problems
    assert fragment in problems[0] and "upgrade or uninstall it" in problems[0], problems


# -- 2: credential references ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("reference", "fragment"), [
    ('{ file = "" }', "`file` is empty"),
    ('{ file = "." }', "`file` is empty"),
    ('{ env = "A=B" }', "`env` must name an environment variable"),
])
def test_a_credential_reference_that_names_nothing_readable_is_refused(tmp_path: Path, reference: str,
                                                                      fragment: str) -> None:
    store = VAULT.replace('{ env = "VAULT_TOKEN" }', reference)
    _one(tmp_path, _text(store=store), "store[0].auth.token", fragment)


@pytest.mark.parametrize("kwargs", [{"file": Path("/etc/passwd\x00x")}, {"file": Path("")}, {"env": "A=B"},
                                    {"env": "A\x00"}])
def test_a_credential_ref_refuses_what_could_never_be_read(kwargs: dict[str, Any]) -> None:
    """Also where no policy file's scan ran first: a [daemon] webhook's secret, a Python caller."""
    with pytest.raises(ValueError, match="`(file|env)`"):
        CredentialRef(**kwargs)


@pytest.mark.parametrize("name", ['"A=B"', '"A\\u0000"', '""', '"=x"'])
def test_a_hook_env_name_that_names_no_variable_is_refused(tmp_path: Path, name: str) -> None:
    """As a credential's `env` is: Popen raised ValueError at every publication, and the hook never ran."""
    daemon = f'[[daemon.hooks]]\ncommand = ["true"]\nenv = {{ OK = "1", {name} = "x" }}\n'
    _one(tmp_path, _text(top=daemon), "daemon.hooks[0].env", "cannot name an environment variable")


def test_resolving_a_credential_under_a_path_with_a_nul_is_a_config_error(tmp_path: Path) -> None:
    """os.open raises ValueError, not OSError: it escaped resolve() as an internal error."""
    with pytest.raises(ConfigError, match="holds a NUL character"):
        CredentialRef(file=Path("token")).resolve(tmp_path / "dir\x00")


# -- 3: a description with a control character -----------------------------------------------------------------


@pytest.mark.parametrize("description", ["auto {tag}\\u0000", "auto\\n{tag}", "{tag}\\tx", "{tag}\\u009b"])
def test_a_description_with_a_control_character_is_refused(tmp_path: Path, description: str) -> None:
    """A NUL passed validation, then failed every mint and left an open run."""
    _one(tmp_path, _text(head=f'name = "p1"\nschedule = "30d"\ndescription = "{description}"'), "description",
         "control character")


# -- 4: retry delays ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("retry", "where", "fragment"), [
    ('base_delay = "0s"', "rotator.retry.base_delay", "at least 1s"),
    ('max_delay = "0s"', "rotator.retry.max_delay", "at least 1s"),
    ('base_delay = "2m"\nmax_delay = "1m"', "rotator.retry", "base_delay (2m) is longer than max_delay (1m)"),
])
def test_retry_delays_that_remove_the_backoff_are_refused(tmp_path: Path, retry: str, where: str,
                                                          fragment: str) -> None:
    _one(tmp_path, _text(top=f"[rotator.retry]\n{retry}\n"), where, fragment)


def test_the_shortest_retry_delays_stay_valid(tmp_path: Path) -> None:
    config = _load(tmp_path, _text(top='[rotator.retry]\nbase_delay = "1s"\nmax_delay = "1s"\n'))
    assert config.settings.retry.base_delay == config.settings.retry.max_delay == timedelta(seconds=1)


# -- 5: max_age within one VERIFY of the longest gap -------------------------------------------------------------


def test_a_max_age_within_verify_timeout_of_the_gap_is_a_warning_naming_both(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rotator.config"):
        _load(tmp_path, _text(head='name = "p1"\nschedule = "30d"\nmax_age = "30d3m"'))
    [warning] = [r.getMessage() for r in caplog.records if r.name == "rotator.config"]
    assert "policy[0] 'p1'.max_age: 30d3m" in warning and "longest gap (30d) + verify_timeout (5m)" in warning
    assert "raise max_age above 30d5m" in warning


def test_a_max_age_beyond_one_verify_is_not_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rotator.config"):
        _load(tmp_path, _text(head='name = "p1"\nschedule = "30d"\nmax_age = "30d6m"'))
    assert not [r for r in caplog.records if r.name == "rotator.config"]


def test_validate_prints_the_max_age_warning_and_exits_0(tmp_path: Path) -> None:
    (tmp_path / "rotator.toml").write_text(_text(head='name = "p1"\nschedule = "30d"\nmax_age = "30d5m"'))
    done = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "validate", str(tmp_path / "rotator.toml")],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "WARNING" in done.stderr and "max_age: 30d5m is not longer than" in done.stderr, done.stderr


def test_validate_json_lists_the_warnings_for_a_ci_job_that_reads_stdout(tmp_path: Path) -> None:
    """The max_age warning reached only stderr, as a log line: `validate --output json` said
    {"valid": true} and nothing of it."""
    (tmp_path / "rotator.toml").write_text(_text(head='name = "p1"\nschedule = "30d"\nmax_age = "30d5m"'))
    done = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "validate", "--output", "json",
                           str(tmp_path / "rotator.toml")], capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["valid"] is True and shown["policies"] == ["p1"]
    [warning] = shown["warnings"]
    assert "policy[0] 'p1'.max_age: 30d5m is not longer than" in warning and "raise max_age above 30d5m" in warning


# -- 6: every problem at once ------------------------------------------------------------------------------------


def test_a_bad_policy_name_does_not_hide_its_window_and_lifetime_problems(tmp_path: Path) -> None:
    """f1.toml: only the name was reported; f2.toml (a good name) had the other two."""
    head = 'name = "p 1"\nschedule = "30d"\nwindow = "25:00-26:00"\nlifetime = "1d"'
    problems = _problems(tmp_path, _text(head=head))
    assert [p.split(":")[0] for p in problems] == ["policy[0] 'p 1'.name", "policy[0] 'p 1'.window",
                                                   "policy[0] 'p 1'.lifetime"], problems


def test_a_bad_timing_field_keeps_the_other_checks_but_adds_no_false_one(tmp_path: Path) -> None:
    """grace failed: the window is still parsed; the lifetime is not compared with the default grace."""
    head = 'name = "p1"\nschedule = "30d"\ngrace = 5\nwindow = "25:00-26:00"\nlifetime = "31d"\nadopt = 1'
    problems = _problems(tmp_path, _text(head=head))
    assert [p.split(":")[0] for p in problems] == ["policy[0] 'p1'.grace", "policy[0] 'p1'.adopt",
                                                   "policy[0] 'p1'.window"], problems


def test_keep_history_is_checked_when_another_rotator_key_is_bad(tmp_path: Path) -> None:
    """f3.toml: a bad lease_ttl hid keep_history = "1m" (the default 400d was checked instead)."""
    problems = _problems(tmp_path, _text(top='[rotator]\nlease_ttl = "1s"\nkeep_history = "1m"\n'))
    assert [p.split(":")[0] for p in problems] == ["rotator.lease_ttl", "rotator.keep_history"], problems


# -- 7: digits other than 0-9 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["0 3 * * ²", "0 ³-5 * * *", "٣٠d", "１d", "0 ٣ * * *", "cron(٣ 3 ? * MON *)",
                                      "rate(٣ days)"])
def test_a_schedule_with_other_digits_than_0_to_9_is_refused_with_a_hint(schedule: str) -> None:
    with pytest.raises(ValueError, match="is not one of the digits 0-9"):
        parse_schedule(schedule)


def test_durations_and_windows_take_digits_0_to_9_only(tmp_path: Path) -> None:
    for parse, text in ((parse_duration, "٣٠d"), (parse_duration, "１h"), (parse_window, "０2:00-04:00")):
        with pytest.raises(ValueError, match="is not one of the digits 0-9"):
            parse(text)  # type: ignore[operator]
    _one(tmp_path, _text(head='name = "p1"\nschedule = "0 3 * * ²"'), "schedule", "'²' (U+00B2)")


# -- 8: values of another TOML type than the setting's -----------------------------------------------------------

LAX_CASES = [
    ("retry attempts = true", _text(top="[rotator.retry]\nattempts = true\n"), "rotator.retry.attempts"),
    ('enabled = "no"', _text(head='name = "p1"\nschedule = "30d"\nenabled = "no"'), "enabled"),
    ('adopt = "yes"', _text(head='name = "p1"\nschedule = "30d"\nadopt = "yes"'), "adopt"),
    ("influxctl timeout_s = true", _text(issuer=_issuer("timeout_s = true")), "issuer.timeout_s"),
    ("port = 443.0", _text(issuer=ISSUER + "port = 443.0\n"), "issuer.profile.port"),
    ('vault timeout_s = "10"', _text(store=_vault('timeout_s = "10"')), "store[0].timeout_s"),
    ('tls_verify = "false"', _text(store=_vault('tls_verify = "false"')), "store[0].tls_verify"),
    ('[daemon] watch = "no"', _text(top='[daemon]\nwatch = "no"\n'), "daemon.watch"),
    ("[daemon] workers = 4.0", _text(top="[daemon]\nworkers = 4.0\n"), "daemon.workers"),
]


@pytest.mark.parametrize(("what", "text", "where"), LAX_CASES, ids=[c[0] for c in LAX_CASES])
def test_a_value_of_another_type_than_the_setting_is_refused(tmp_path: Path, what: str, text: str,
                                                             where: str) -> None:
    _one(tmp_path, text, where)


def test_whole_numbers_for_number_settings_stay_valid(tmp_path: Path) -> None:
    config = _load(tmp_path, _text(issuer=_issuer("timeout_s = 30") + "port = 443\n", store=_vault("timeout_s = 2.5"),
                                   top="[rotator.retry]\nattempts = 3\n"))
    policy = config.policies[0]
    assert policy.issuer_settings.profile.port == 443 and policy.issuer_settings.timeout_s == 30
    assert policy.stores[0].settings.timeout_s == 2.5 and config.settings.retry.attempts == 3


def test_an_empty_schedule_is_refused_not_the_defaults_one(tmp_path: Path) -> None:
    """`schedule = ""` silently inherited [defaults] while "   " was an error."""
    _one(tmp_path, _text(head='name = "p1"\nschedule = ""', top='[defaults]\nschedule = "1d"\n'), "schedule",
         "schedule is empty")


def _address_settings(what: str, url: str) -> None:
    """Validate the settings of one adapter whose server address is ``url``."""
    from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings
    from rotator.adapters.http.influxdb3 import InfluxDB3Settings
    from rotator.adapters.http.management_api import ManagementApiSettings
    from rotator.adapters.vault.kv2 import VaultKV2Settings

    if what == "vault-kv2 url":
        VaultKV2Settings.model_validate({"url": url, "path": "influx/mgmt",
                                         "auth": {"method": "token", "token": {"env": "VAULT_TOKEN"}}})
    elif what == "aws endpoint_url":
        AwsSecretsManagerSettings(secret_id="influx/mgmt", region="eu-west-1", endpoint_url=url)
    elif what == "aws sts_endpoint_url":
        AwsSecretsManagerSettings(secret_id="influx/mgmt", region="eu-west-1", sts_endpoint_url=url,
                                  role_arn="arn:aws:iam::123456789012:role/rotator")
    elif what == "influxdb3 base_url":
        InfluxDB3Settings.model_validate({"base_url": url, "credential": "self"})
    else:
        ManagementApiSettings.model_validate({
            "product": "clustered", "cluster_host": url, "management_token": {"env": "T"},
            "verify": {"database": "telemetry"}, "permissions": [{"action": "read", "resource": "telemetry"}]})


ADDRESSES = ["vault-kv2 url", "aws endpoint_url", "aws sts_endpoint_url", "influxdb3 base_url",
             "management-api cluster_host"]


@pytest.mark.parametrize("what", ADDRESSES)
@pytest.mark.parametrize("port", ["abc", "0", "99999"])
def test_a_server_address_with_a_port_no_server_can_have_is_refused(what: str, port: str) -> None:
    # Each passed validation before: then Vault's was "unreachable" through five retries (exit 1, "check
    # that Vault is up"), the AWS endpoints an internal error from botocore.
    with pytest.raises(ValueError, match="port"):
        _address_settings(what, f"https://server.example:{port}")


@pytest.mark.parametrize("what", ADDRESSES)
def test_a_server_address_with_a_usable_port_or_none_stays_valid(what: str) -> None:
    _address_settings(what, "https://server.example:65535")
    _address_settings(what, "https://server.example")


def test_a_vault_url_with_a_query_or_fragment_is_refused() -> None:
    for url in ("https://vault.example:8200?x=1", "https://vault.example:8200/#f"):
        with pytest.raises(ValueError, match="query or fragment"):
            _address_settings("vault-kv2 url", url)
