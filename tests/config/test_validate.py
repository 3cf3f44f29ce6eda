"""`rotator validate`: a table of broken policy files and the message each must produce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

GOOD_ISSUER = """
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h.example"
"""
GOOD_STORE = """
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example:8200"
path = "influx/mgmt"
[policy.store.auth]
method = "token"
token = { env = "VAULT_TOKEN" }
"""


INFLUXDB3 = """
[policy.issuer]
type = "influxdb3"
base_url = "https://influx3.example:8181"
credential = "self"
"""


def _policy(head: str = 'name = "p1"\nschedule = "30d"', issuer: str = GOOD_ISSUER, store: str = GOOD_STORE,
            top: str = "") -> str:
    return f"{top}\n[[policy]]\n{head}\n{issuer}\n{store}"


CASES = [
    ("not toml", "[[policy]\nname=", ["not valid TOML"]),
    ("unknown top-level key", _policy(top="[rotatr]\njournal='x'"), ["rotatr", "Extra inputs are not permitted"]),
    ("bad schedule", _policy(head='name = "p1"\nschedule = "every month"'),
     ["policy[0] 'p1'.schedule", "'every month' is not a schedule", "rate(30 days)"]),
    ("no schedule anywhere", _policy(head='name = "p1"'), ["policy[0] 'p1'.schedule", "no schedule"]),
    ("bad cron", _policy(head='name = "p1"\nschedule = "61 * * * *"'), ["not a valid 5-field cron"]),
    ("bad grace", _policy(head='name = "p1"\nschedule = "30d"\ngrace = "two days"'),
     ["grace", "'two days' is not a duration"]),
    ("lifetime too short", _policy(head='name = "p1"\nschedule = "30d"\ngrace = "1d"\nlifetime = "20d"'),
     ["lifetime", "tokens would expire while still in use"]),
    ("description without tag", _policy(head='name = "p1"\nschedule = "30d"\ndescription = "mine"'),
     ["description", "must contain {tag}"]),
    ("unknown issuer type", _policy(issuer='[policy.issuer]\ntype = "influxctl-magic"'),
     ["issuer.type", "no issuer adapter named 'influxctl-magic'", "influxctl-management"]),
    ("no store", _policy(store=""), ["store", "Field required"]),
    ("inline vault token",
     _policy(store=GOOD_STORE.replace('token = { env = "VAULT_TOKEN" }', 'token = "hvs.abcdefghijkl"')),
     ["store[0].auth.token", "inline secrets are refused", '{ file = "/path/to/file" }']),
    ("inline mgmt token in the issuer", _policy(issuer=GOOD_ISSUER + 'mgmt_token = "M.V1.abcdefghijklmnop"'),
     ["issuer.profile.mgmt_token", "inline secrets are refused"]),
    ("clustered without host", _policy(issuer=GOOD_ISSUER.replace('host = "h.example"', "")),
     ["issuer.profile", "host"]),
    ("misspelled store key", _policy(store=GOOD_STORE.replace("path =", "pth =")), ["store[0]", "pth"]),
    ("one [policy] table", '[policy]\nname = "p1"\nschedule = "30d"\n',
     ["policy: Input should be a valid list", "write each one as [[policy]], with two brackets"]),
    ("one [policy.store] table", _policy(store=GOOD_STORE.replace("[[policy.store]]", "[policy.store]")),
     ["store: Input should be a valid list", "write each one as [[policy.store]]"]),
    ("a token in a key that takes no reference",
     _policy(store=GOOD_STORE.replace('path = "influx/mgmt"', 'path = "influx/M.V1.abcdefghijklmnop"')),
     ["store[0].path", "looks like a token", "take the token out of `path`"]),
    ("duplicate policy names", _policy() + "\n" + _policy(), ["duplicate policy name"]),
    ("bad policy name", _policy(head='name = "has space"\nschedule = "30d"'), ["name", "pattern"]),
    ("two policies reading the same InfluxDB 3 token names",
     _policy(issuer=INFLUXDB3) + "\n" + _policy(head='name = "p2"\nschedule = "30d"',
                                                issuer=INFLUXDB3 + 'former_token_name_prefixes = ["rotator-p1"]\n'),
     ["policy[1] 'p2'.issuer", "reads the same tokens as the issuer of policy[0] 'p1' (token names "
      "rotator-p1-<run id> on "
      "https://influx3.example:8181)", "give each policy its own token_name_prefix"]),
    ("two policies with one token_name_prefix on one server spelled two ways",
     _policy(issuer=INFLUXDB3 + 'token_name_prefix = "svc"\n') + "\n"
     + _policy(head='name = "p2"\nschedule = "30d"',
               issuer=INFLUXDB3.replace("https://influx3.example:8181", "https://INFLUX3.example.:8181/")
               + 'token_name_prefix = "svc"\n'),
     ["policy[1] 'p2'.issuer", "(token names svc-<run id> on https://influx3.example:8181)"]),
]


def _validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "policies.toml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "rotator.runners.cli", "validate", str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


@pytest.mark.parametrize(("reason", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_broken_policy_file(reason: str, text: str, expected: list[str], tmp_path: Path) -> None:
    proc = _validate(tmp_path, text)
    assert proc.returncode == 2, f"{reason}: {proc.stdout}{proc.stderr}"
    for fragment in expected:
        assert fragment in proc.stderr, f"{reason}: {fragment!r} not in:\n{proc.stderr}"
    assert "hvs.abcdefghijkl" not in proc.stderr and "M.V1.abcdefghijklmnop" not in proc.stderr


def test_two_policies_of_one_name_are_a_duplicate_not_a_shared_token_namespace(tmp_path: Path) -> None:
    proc = _validate(tmp_path, _policy(issuer=INFLUXDB3) + "\n" + _policy(issuer=INFLUXDB3))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "policy[1] 'p1'" in proc.stderr and "duplicate policy name" in proc.stderr
    assert "reads the same tokens" not in proc.stderr, "the fix is a new name, not a token_name_prefix"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = _policy(head='name = "p1"\nschedule = "whenever"\ngrace = "x"',
                   store=GOOD_STORE.replace('token = { env = "VAULT_TOKEN" }', 'token = "inline-secret-value"'))
    proc = _validate(tmp_path, text)
    assert proc.returncode == 2
    assert "problem(s)" in proc.stderr
    assert "grace" in proc.stderr and "inline secrets are refused" in proc.stderr


def test_valid_file(tmp_path: Path) -> None:
    proc = _validate(tmp_path, _policy())
    assert proc.returncode == 0, proc.stderr
    assert "valid, 1 policy: p1" in proc.stdout


def test_policies_on_one_influxdb3_server_with_their_own_prefixes_are_valid(tmp_path: Path) -> None:
    other_server = INFLUXDB3.replace("influx3.example", "other.example")
    text = (_policy(issuer=INFLUXDB3 + 'token_name_prefix = "svc"\nformer_token_name_prefixes = ["rotator-p1"]\n')
            + "\n" + _policy(head='name = "p2"\nschedule = "30d"', issuer=INFLUXDB3)
            + "\n" + _policy(head='name = "p3"\nschedule = "30d"', issuer=other_server + 'token_name_prefix = "svc"\n'))
    text += "\n" + _policy(head='name = "op"\nschedule = "30d"',
                           issuer=INFLUXDB3 + 'kind = "operator"\nallow_no_grace = true\n')
    text += "\n" + _policy(head='name = "p4"\nschedule = "30d"',
                           issuer=INFLUXDB3 + 'token_name_prefix = "rotator-op"\n')  # the operator reads no name
    proc = _validate(tmp_path, text)
    assert proc.returncode == 0, proc.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "validate", str(tmp_path / "nope.toml")],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "cannot read policy file" in proc.stderr


def test_an_auth_key_is_named_where_it_is_written_not_under_its_method(tmp_path: Path) -> None:
    """pydantic puts the auth method (the tagged union's variant) in the location: users looked for
    a [policy.store.auth.token] table to fix `auth.token.tokn`."""
    proc = _validate(tmp_path, _policy(store=GOOD_STORE.replace("token = {", "tokn = {")))
    assert proc.returncode == 2
    assert "store[0].auth.tokn: " in proc.stderr and "store[0].auth.token: Field required" in proc.stderr, proc.stderr
    assert "auth.token.tokn" not in proc.stderr and "auth.token.token" not in proc.stderr, proc.stderr
    proc = _validate(tmp_path, _policy(store=GOOD_STORE.replace('token = { env = "VAULT_TOKEN" }', "token = {}")))
    assert "store[0].auth.token: give exactly one of" in proc.stderr, proc.stderr
    proc = _validate(tmp_path, _policy(store=GOOD_STORE.replace('{ env = "VAULT_TOKEN" }', '{ fil = "t" }')))
    assert "store[0].auth.token.fil: " in proc.stderr, "a real table under the method's name keeps its name"


def test_a_policy_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "policies.toml"
    path.write_bytes(b"\xef\xbb\xbf" + _policy().encode())
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "validate", str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0 and "valid, 1 policy" in proc.stdout, proc.stderr


@pytest.mark.parametrize("what", ["fifo", "directory", "device", "too large"])
def test_a_policy_path_that_is_not_a_policy_file_is_refused_at_once(tmp_path: Path, what: str) -> None:
    """A FIFO blocked `validate` for ever, /dev/zero used up memory (MemoryError: an internal error)."""
    path = tmp_path / "policies.toml"
    if what == "fifo":
        os.mkfifo(path)
    elif what == "directory":
        path.mkdir()
    elif what == "device":
        path = Path("/dev/zero")
    else:
        with path.open("wb") as f:
            f.truncate(17 * 1024 * 1024)  # sparse: no 17 MB written
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "validate", str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stderr
    expected = {"fifo": "is not a regular file", "directory": "is a directory", "device": "is not a regular file",
                "too large": "is larger than 16 MiB"}[what]
    assert f"rotator: error: policy file {path} {expected}" in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr


def test_a_missing_default_policy_file_says_where_the_path_came_from(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "status"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60, env={**env, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert "cannot read policy file rotator.toml: No such file or directory" in proc.stderr
    assert "without -c, rotator reads the file $ROTATOR_CONFIG names, else ./rotator.toml" in proc.stderr


def test_bad_cli_argument_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "rotate", "--bogus"], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr


def test_an_unknown_option_before_any_command_is_named() -> None:
    """argparse stopped at the missing command and never named the option the user mistyped."""
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "--output=json", "--bogus"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2
    assert "rotator: error: unrecognized arguments: --bogus; and a command is required" in proc.stderr, proc.stderr


def test_schema_is_published_and_matches_docs() -> None:
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "schema"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    titles = {v["title"] for v in schema["$defs"]["StoreAdapter"]["oneOf"]}
    assert "store vault-kv2" in titles
    assert {v["title"] for v in schema["$defs"]["IssuerAdapter"]["oneOf"]} >= {"issuer influxctl-management"}
    published = json.loads((REPO / "docs" / "policy.schema.json").read_text())
    assert published == schema, "docs/policy.schema.json is stale: run `rotator schema > docs/policy.schema.json`"


def test_a_profile_key_that_does_not_fit_the_issuer_is_refused(tmp_path: Path) -> None:
    store = """
[[policy.store]]
type = "influxctl-profile"
config = "influxctl.toml"
profile = "default"
key = "token"
"""
    proc = _validate(tmp_path, _policy(store=store))
    assert proc.returncode == 2, proc.stderr
    assert "store[0]" in proc.stderr and "mgmt_token" in proc.stderr


def test_a_nested_store_reference_may_name_an_aws_secret(tmp_path: Path) -> None:
    """`secret_id` of an aws-secretsmanager table is a secret's name, even nested in an issuer."""
    issuer = """
[policy.issuer]
type = "management-api"
product = "clustered"
cluster_host = "https://cluster.example"
permissions = [{action = "read", resource = "db1"}]
verify = {database = "db1"}
[policy.issuer.management_token_from]
type = "aws-secretsmanager"
secret_id = "prod/influx-mgmt"
region = "eu-west-1"
"""
    proc = _validate(tmp_path, _policy(issuer=issuer))
    assert proc.returncode == 0, proc.stderr


def test_a_cron_schedule_without_apscheduler_is_a_validation_problem(tmp_path: Path) -> None:
    """The Lambda zip has no APScheduler; a cron schedule there is a problem with a fix, not a crash."""
    path = tmp_path / "rotator.toml"
    path.write_text(_policy(head='name = "p1"\nschedule = "0 3 * * 1"'))
    probe = ("import sys; sys.modules['apscheduler'] = None\n"
             f"from rotator.runners.cli import main; raise SystemExit(main(['validate', {str(path)!r}]))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 2, result.stderr
    assert "policy[0] 'p1'.schedule" in result.stderr and "cron schedules need APScheduler" in result.stderr
    assert "rotator[daemon]" in result.stderr and "internal error" not in result.stderr


# -- issue 11 items 5 and 10: inline secrets by pattern, and bad input that escaped as "internal error" ---------

_HOOK = '[[daemon.hooks]]\ncommand = ["systemctl", "reload", "app"]\n'
_HOOK_FIX = 'VAULT_TOKEN_FILE = "/run/secrets/vault-token"'
_WEBHOOK = '[[daemon.webhooks]]\nsecret = { file = "/run/secrets/k" }\n'
HARDENING_CASES = [
    # (reason, text, fragments expected in stderr, a value that must not be echoed)
    ("hook env VAULT_TOKEN", _policy(top=_HOOK + 'env = { VAULT_TOKEN = "q1w2e3r4t5" }'),
     ["daemon.hooks[0].env", "VAULT_TOKEN", "inline secrets are refused", _HOOK_FIX], "q1w2e3r4t5"),
    ("hook env BAO_TOKEN", _policy(top=_HOOK + 'env = { BAO_TOKEN = "q1w2e3r4t5" }'),
     ["BAO_TOKEN", "inline secrets are refused"], "q1w2e3r4t5"),
    ("hook env AWS_SECRET_ACCESS_KEY", _policy(top=_HOOK + 'env = { AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI" }'),
     ["AWS_SECRET_ACCESS_KEY", "inline secrets are refused"], "wJalrXUtnFEMI"),
    ("hook env value that is a token", _policy(top=_HOOK + 'env = { MODE = "M.V1.abcdefghijklmnopqrst" }'),
     ["MODE", "looks like a token"], "M.V1.abcdefghijklmnopqrst"),
    ("hook argument --token=", _policy(top='[[daemon.hooks]]\ncommand = ["curl", "--token=q1w2e3r4t5"]'),
     ["daemon.hooks[0].command", "argument 1", _HOOK_FIX], "q1w2e3r4t5"),
    ("hook argument after --password", _policy(top='[[daemon.hooks]]\ncommand = ["app", "--password", "q1w2e3"]'),
     ["argument 2 follows --password"], "q1w2e3"),
    ("hook argument that is a token", _policy(top='[[daemon.hooks]]\ncommand = ["app", "apiv3_q1w2e3r4t5y6u7"]'),
     ["argument 1 looks like a token"], "apiv3_q1w2e3r4t5y6u7"),
    ("webhook URL user-info", _policy(top=_WEBHOOK + 'url = "https://bot:q1w2e3r4@hooks.example/x"'),
     ["daemon.webhooks[0].url", "user-info", "HMAC signature", "secret = { file ="], "q1w2e3r4"),
    ("webhook URL query", _policy(top=_WEBHOOK + 'url = "https://hooks.example/x?sig=q1w2e3r4"'),
     ["daemon.webhooks[0].url", "query key 'sig'"], "q1w2e3r4"),
    ("journal URL password", _policy(top='[rotator]\njournal = "postgresql://rotator:q1w2%zz@db/rotator"'),
     ["rotator.journal", "inline secrets are refused", "PGPASSWORD", ".pgpass"], "q1w2"),
    ("journal URL port abc", _policy(top='[rotator]\njournal = "postgresql://rotator@db:abc/rotator"'),
     ["rotator.journal", "port is not a number", "postgresql://user@host:5432/database"], None),
    ("journal URL scheme", _policy(top='[rotator]\njournal = "mysql://db/rotator"'),
     ["rotator.journal", "unsupported scheme 'mysql'"], None),
    ("token in a hook's policies", _policy(top=_HOOK + 'policies = ["apiv3_q1w2e3r4t5y6u7"]'),
     ["daemon.hooks[0].policies", "looks like a token"], "apiv3_q1w2e3r4t5y6u7"),
    ("token in a policy description",
     _policy(head='name = "p1"\nschedule = "30d"\ndescription = "{tag} hvs.q1w2e3r4t5y6"'),
     ["policy[0] 'p1'.description", "looks like a token"], "hvs.q1w2e3r4t5y6"),
    ("token in an adapter value", _policy(issuer=GOOD_ISSUER.replace('"h.example"', '"M.V1.q1w2e3r4t5y6u7i8"')),
     ["issuer.profile.host", "looks like a token"], "M.V1.q1w2e3r4t5y6u7i8"),
    ("huge grace", _policy(head='name = "p1"\nschedule = "30d"\ngrace = "99999999999999999d"'),
     ["policy[0] 'p1'.grace", "longer than 36525 days"], None),
    ("huge schedule", _policy(head='name = "p1"\nschedule = "rate(99999999999999999 days)"'),
     ["policy[0] 'p1'.schedule", "longer than 36525 days"], None),
    ("huge hook timeout", _policy(top=_HOOK + 'timeout = "9999999999999999999d"'),
     ["daemon.hooks[0].timeout", "longer than 36525 days"], None),
    ("a seconds value of 5,000 digits", _policy(head='name = "p1"\nschedule = "30d"\ngrace = "' + "7" * 5000 + 's"'),
     ["policy[0] 'p1'.grace", "longer than 36525 days"], "7" * 100),
    ("an integer of 5,000 digits", _policy(top="[rotator.retry]\nattempts = " + "7" * 5000),
     ["<file>", "a number has thousands of digits"], "7" * 100),
    ("TOML nested 3,000 deep", "x = " + "[" * 3000 + "]" * 3000,
     ["<file>", "nested more than 32 levels deep"], None),
    ("TOML tables nested 3,000 deep", "x = " + "{a = " * 3000 + "1" + "}" * 3000,
     ["<file>", "nested more than 32 levels deep"], None),
    ("a non-string issuer name", _policy(issuer=GOOD_ISSUER.replace("[policy.issuer]", "[policy.issuer]\nname = 5")),
     ["policy[0] 'p1'.issuer.name", "valid string", "write a quoted string"], "input_value"),
    ("a non-string store name", _policy(store=GOOD_STORE.replace("[[policy.store]]", "[[policy.store]]\nname = 5")),
     ["policy[0] 'p1'.store[0].name", "valid string"], "input_value"),
]


@pytest.mark.parametrize(("reason", "text", "expected", "secret"), HARDENING_CASES, ids=[c[0] for c in HARDENING_CASES])
def test_bad_input_is_a_clear_problem_never_an_internal_error(reason: str, text: str, expected: list[str],
                                                             secret: str | None, tmp_path: Path) -> None:
    proc = _validate(tmp_path, text)
    assert proc.returncode == 2, f"{reason}: {proc.stdout}{proc.stderr}"
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    for fragment in expected:
        assert fragment in proc.stderr, f"{reason}: {fragment!r} not in:\n{proc.stderr}"
    if secret is not None:
        assert secret not in proc.stderr, f"{reason}: the input was echoed"


def test_references_and_ordinary_hooks_and_webhooks_stay_valid(tmp_path: Path) -> None:
    top = ('[rotator]\njournal = "postgresql://rotator@db.example:5432/rotator?sslmode=verify-full"\n'
           '[[daemon.hooks]]\ncommand = ["/usr/local/bin/reload", "--token-file", "/run/secrets/t"]\n'
           'env = { VAULT_TOKEN_FILE = "/run/secrets/vault-token", AWS_ACCESS_KEY_ID = "x", MODE = "fast" }\n'
           '[[daemon.webhooks]]\nurl = "https://hooks.example/rotator?policy=p1"\nsecret = { env = "HOOK_KEY" }\n')
    proc = _validate(tmp_path, _policy(top=top))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("content", "code", "expected"), [
    ("an-unprefixed-secret-value", 2, "is not a Standard Webhooks secret"),
    ("whsec_", 2, "0-byte key"),
    (None, 0, "warning: a webhook secret was not checked: cannot read credential file"),
    ("whsec_" + "YS13ZWJob29rLWtleS1vZi0yNC1ieXRlcw==", 0, "valid, 1 policy"),
])  # fmt: skip
def test_validate_checks_a_webhook_secret_it_can_read(tmp_path: Path, content: str | None, code: int,
                                                      expected: str) -> None:
    """The daemon refuses to start with a webhook secret that is not whsec_ + base64 of 16 bytes or more:
    `rotator validate` says so too. A secret it cannot read (a systemd credential exists only while the
    service runs) is a warning."""
    if content is not None:
        (tmp_path / "hook-key").write_text(content)
    top = '[[daemon.webhooks]]\nurl = "https://hooks.example/rotator"\nsecret = { file = "hook-key" }\n'
    proc = _validate(tmp_path, _policy(top=top))
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert expected in proc.stdout + proc.stderr
    if content is not None and code:
        assert str(tmp_path / "hook-key") in proc.stderr and "fix:" in proc.stderr
