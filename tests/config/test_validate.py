"""`rotator validate`: a table of broken policy files and the message each must produce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
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


def _vault(path: str, extra: str = "") -> str:
    """GOOD_STORE at another path: two policies must not write one secret."""
    return GOOD_STORE.replace('path = "influx/mgmt"', f'path = "{path}"\n{extra}')


def _named(name: str, store: str = GOOD_STORE) -> str:
    """A second policy ``name`` of GOOD_ISSUER, writing ``store``."""
    return _policy(head=f'name = "{name}"\nschedule = "30d"', store=store)


def _aws(secret_id: str, extra: str = "") -> str:
    return f'[[policy.store]]\ntype = "aws-secretsmanager"\nsecret_id = "{secret_id}"\n{extra}\n'


def _profile(config: str = "influxctl/config.toml", extra: str = "") -> str:
    return f'[[policy.store]]\ntype = "influxctl-profile"\nconfig = "{config}"\n{extra}\n'


OPERATOR = INFLUXDB3.replace('credential = "self"', 'credential = "self"\nkind = "operator"\nallow_no_grace = true')
_ARN_ID = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:influx/mgmt"


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
    ("bad policy name", _policy(head='name = "has space"\nschedule = "30d"'),
     ["policy[0] 'has space'.name: is not a valid name", "write 1 to 63 letters, digits, '.', '_' or '-'"]),
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
    # review5 #1: each would regenerate _admin, killing the value the other's stores hold
    ("two operator policies on one InfluxDB 3 server",
     _policy(issuer=OPERATOR) + _policy(head='name = "p2"\nschedule = "30d"',
                                        issuer=OPERATOR.replace("influx3.example", "INFLUX3.example."),
                                        store=_vault("influx/p2")),
     ["policy[1] 'p2'.issuer", "(the operator token _admin on https://influx3.example:8181)",
      "each rotation revokes, at once, the value the other policy's stores hold",
      "rotate the operator token with one policy, and list every secret that needs it as a [[policy.store]]"]),
    # review5 #2: two stores writing one secret
    ("two policies writing one Vault secret",
     _policy() + _named("p2", _vault("influx/mgmt", 'mount = "/secret/"')),
     ["policy[1] 'p2'.store[0]: writes the same secret as policy[0] 'p1'.store[0] 'vault-kv2' "
      "(Vault https://vault.example:8200 mount secret path influx/mgmt)", "two policies must not share a secret",
      "give each policy its own secret", "list them as [[policy.store]] tables of one policy"]),
    ("two policies writing one Vault secret, the server spelled two ways",
     _policy() + _named("p2", GOOD_STORE.replace("https://vault.example:8200", "HTTPS://Vault.Example.:8200/")),
     ["policy[1] 'p2'.store[0]: writes the same secret as policy[0] 'p1'.store[0]"]),
    ("two policies writing one AWS secret by name",
     _policy(store=_aws("influx/mgmt", 'region = "us-east-1"'))
     + _named("p2", _aws("influx/mgmt", 'region = "us-east-1"')),
     ["policy[1] 'p2'.store[0]: writes the same secret as policy[0] 'p1'.store[0] 'aws-secretsmanager' "
      "(AWS secret influx/mgmt in us-east-1 with the default credentials)"]),
    ("two policies writing one AWS secret by ARN",
     _policy(store=_aws(_ARN_ID)) + _named("p2", _aws(_ARN_ID, 'region = "eu-west-1"\nprofile = "other"')),
     ["policy[1] 'p2'.store[0]: writes the same secret as policy[0] 'p1'.store[0]", f"(AWS secret {_ARN_ID})"]),
    ("an AWS secret by name in the role's account and by its partial ARN",
     _policy(store=_aws("influx/mgmt", 'region = "eu-west-1"\nrole_arn = "arn:aws:iam::123456789012:role/r"'))
     + _named("p2", _aws(_ARN_ID)),
     ["policy[1] 'p2'.store[0]: writes the same secret as policy[0] 'p1'.store[0]", f"(AWS secret {_ARN_ID})"]),
    ("two policies writing one influxctl profile",
     _policy(store=_profile()) + _named("p2", _profile("./influxctl/../influxctl/config.toml")),
     ["policy[1] 'p2'.store[0]: writes the same secret as policy[0] 'p1'.store[0] 'influxctl-profile' "
      "(influxctl profile 'default' key mgmt_token in '"]),
    ("one policy with two stores on one Vault secret",
     _policy(store=GOOD_STORE.replace("[[policy.store]]", '[[policy.store]]\nname = "one"')
             + GOOD_STORE.replace("[[policy.store]]", '[[policy.store]]\nname = "two"')),
     ["policy[0] 'p1'.store[1]: writes the same secret as store[0] 'one' of this policy", "one write replaces "
      "the other", "remove one of the two stores"]),
    # review5 #3: the lifetime counts from the mint, the schedule from the publication, after verification
    ("lifetime just at interval + grace + twice verify_timeout",
     _policy(head='name = "p1"\nschedule = "1d"\ngrace = "1h"\nverify_timeout = "10m"\nlifetime = "1d1h20m"'),
     ["policy[0] 'p1'.lifetime: is not longer than schedule interval + grace + twice verify_timeout (20m)",
      "counts from its mint, the schedule from its publication", "raise lifetime above 1d1h20m"]),
    # review5 #4: a typo in a webhook's or hook's policies silently disabled it
    ("webhook and hook policies naming no policy",
     _policy(top='[[daemon.webhooks]]\nurl = "https://hooks.example/rotator"\nsecret = { env = "HOOK_KEY" }\n'
             'policies = ["p1", "p_1"]\n[[daemon.hooks]]\ncommand = ["systemctl", "reload", "app"]\n'
             'policies = ["nope"]\n'),
     ["daemon.webhooks[0].policies: 'p_1' names no policy of this file: it would never be notified",
      "did you mean 'p1'?", "known: p1", "daemon.hooks[0].policies: 'nope' names no policy of this file: it "
      "would never run"]),
    # review5 #5: open_journal reads the scheme as written
    ("journal URL scheme in capitals", _policy(top='[rotator]\njournal = "PostgreSQL://rotator@db/rotator"'),
     ["rotator.journal: write the scheme in lower case: postgresql:// (not PostgreSQL://)"]),
    ("sqlite journal URL scheme in capitals", _policy(top='[rotator]\njournal = "SQLite:///var/lib/j.db"'),
     ["rotator.journal: write the scheme in lower case: sqlite://"]),
    # review5 #7: store names reach the journal's text, logs and metric labels
    ("a store name with control characters",
     _policy(store=GOOD_STORE.replace("[[policy.store]]", '[[policy.store]]\nname = "x\\u001b[31mRED\\nlog"')),
     ["policy[0] 'p1'.store[0].name: 'x\\x1b[31mRED\\nlog' is not a store name", "1 to 63 letters, digits"]),
    ("an empty store name", _policy(store=GOOD_STORE.replace("[[policy.store]]", '[[policy.store]]\nname = ""')),
     ["policy[0] 'p1'.store[0].name: '' is not a store name"]),
    ("a store name of 64 characters",
     _policy(store=GOOD_STORE.replace("[[policy.store]]", f'[[policy.store]]\nname = "{"y" * 64}"')),
     ["policy[0] 'p1'.store[0].name:", "is not a store name"]),
    ("a store name with label syntax",
     _policy(store=GOOD_STORE.replace("[[policy.store]]", '[[policy.store]]\nname = "a,b=c}"')),
     ["policy[0] 'p1'.store[0].name: 'a,b=c}' is not a store name"]),
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
            + "\n" + _policy(head='name = "p2"\nschedule = "30d"', issuer=INFLUXDB3, store=_vault("p2"))
            + "\n" + _policy(head='name = "p3"\nschedule = "30d"', issuer=other_server + 'token_name_prefix = "svc"\n',
                              store=_vault("p3")))
    text += "\n" + _policy(head='name = "op"\nschedule = "30d"', issuer=OPERATOR, store=_vault("op"))
    text += "\n" + _policy(head='name = "op2"\nschedule = "30d"', store=_vault("op2"),
                           issuer=OPERATOR.replace("influx3.example", "other.example"))  # _admin of another server
    text += "\n" + _policy(head='name = "p4"\nschedule = "30d"', store=_vault("p4"),
                           issuer=INFLUXDB3 + 'token_name_prefix = "rotator-op"\n')  # the operator reads no name
    proc = _validate(tmp_path, text)
    assert proc.returncode == 0, proc.stderr


def test_stores_of_different_secrets_are_valid(tmp_path: Path) -> None:
    """Only like is compared with like: no two different secrets are taken for one (review5 #2)."""
    role = 'role_arn = "arn:aws:iam::123456789012:role/r"'
    stores = [
        GOOD_STORE,
        GOOD_STORE.replace("vault.example", "vault2.example"),  # another server
        GOOD_STORE.replace(":8200", ":8201"),  # another port
        _vault("influx/mgmt", 'namespace = "team-a"'),  # another namespace
        _vault("influx/mgmt", 'namespace = "team-b"'),
        _vault("influx/mgmt", 'mount = "kv"'),  # another mount
        _vault("influx/Mgmt"),  # Vault paths are case-sensitive
        _aws("influx/mgmt", 'region = "us-east-1"'),
        _aws("influx/mgmt", 'region = "eu-west-1"'),  # another region
        _aws("influx/mgmt", 'region = "us-east-1"\nprofile = "other"'),  # maybe another account
        _aws("influx/mgmt", f'region = "us-east-1"\n{role}'),  # maybe another account than the default credentials
        _aws("influx/mgmt", f'region = "eu-west-1"\n{role.replace("1234", "9999")}'),  # another account than the ARN
        _aws(_ARN_ID + "-AbCdEf"),  # a complete ARN: a name may end like a suffix, so it is not taken for the name
        _aws(_ARN_ID.replace("eu-west-1", "ap-south-1")),  # another region than every name
        _aws("influx/mgmt", 'region = "us-east-1"\nendpoint_url = "http://127.0.0.1:4566"'),  # an emulator's
        _profile(),
        _profile(extra='profile = "other"'),  # another profile of the same file
        _profile(extra='key = "token"'),  # another key of the same profile
        _profile("other/config.toml"),
    ]
    proc = _validate(tmp_path, "".join(_named(f"p{i}", store) for i, store in enumerate(stores)))
    assert "writes the same secret" not in proc.stderr, proc.stderr
    # (the influxctl-management issuer refuses key = "token": that is the only problem)
    assert proc.returncode == 2 and proc.stderr.count("\n  - ") == 1 and "mgmt_token" in proc.stderr, proc.stderr


def test_a_store_with_no_secret_locations_hook_is_not_compared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """A third-party store without `secret_locations` on its settings still loads (the hook is optional)."""
    from rotator.config import registry
    from rotator.config.policy import load_config_bytes
    from rotator.testing import MemoryStore

    monkeypatch.setitem(registry._forced, ("store", "test-unlocated"), MemoryStore)
    text = "".join(_named(f"p{i}", '[[policy.store]]\ntype = "test-unlocated"\npath = "one"\n') for i in range(2))
    config = load_config_bytes(text.encode(), tmp_path / "rotator.toml")
    assert [p.name for p in config.policies] == ["p0", "p1"]


def test_the_lifetime_bound_counts_verification_time(tmp_path: Path) -> None:
    """review5 #3: just above interval + grace + 2 * verify_timeout is accepted, and the default lifetime
    adds margin to that bound (a token minted, verified for up to verify_timeout, published, then
    replaced after the interval by a run that verifies as long)."""
    from rotator.config.policy import load_config_bytes

    head = 'name = "p1"\nschedule = "1d"\ngrace = "1h"\nverify_timeout = "10m"\n'
    proc = _validate(tmp_path, _policy(head=head + 'lifetime = "1d1h20m1s"'))
    assert proc.returncode == 0, proc.stderr
    config = load_config_bytes(_policy(head=head + 'margin = "2h"').encode(), tmp_path / "rotator.toml")
    assert config.policies[0].lifetime == timedelta(days=1, hours=3, minutes=20)


def test_a_bad_default_schedule_is_reported_once_where_it_is_written(tmp_path: Path) -> None:
    """review5 #6: it was reported under every policy that inherits it, and never in a file without policies."""
    text = '[defaults]\nschedule = "every month"\n' + _policy(head='name = "p1"') + _named("p2", _vault("p2"))
    proc = _validate(tmp_path, text.replace('name = "p2"\nschedule = "30d"', 'name = "p2"'))
    assert proc.returncode == 2
    assert "defaults.schedule: 'every month' is not a schedule" in proc.stderr, proc.stderr
    assert "1 problem(s)" in proc.stderr, proc.stderr
    assert ".schedule" not in proc.stderr.replace("defaults.schedule", ""), proc.stderr
    proc = _validate(tmp_path, '[defaults]\nschedule = "every month"\n')
    assert proc.returncode == 2 and "defaults.schedule: 'every month' is not a schedule" in proc.stderr, proc.stderr
    # a policy with its own schedule is checked on its own; one with none anywhere still says so
    proc = _validate(tmp_path, '[defaults]\nschedule = "every month"\n' + _policy(head='name = "p1"\nschedule = "x"'))
    assert "defaults.schedule" in proc.stderr and "policy[0] 'p1'.schedule: 'x' is not a schedule" in proc.stderr


def test_ordinary_store_names_are_valid(tmp_path: Path) -> None:
    stores = "".join(GOOD_STORE.replace("[[policy.store]]", f'[[policy.store]]\nname = "{name}"').replace(
        "influx/mgmt", f"influx/{i}") for i, name in enumerate(["vault-kv2-0", "vault.eu_1", "V" * 63]))
    proc = _validate(tmp_path, _policy(store=stores))
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


DURATIONS = ["30d", "1d12h", "1d 12h", " 1d", "1d ", "90 s", "1w2d3h4m5s", "0s", "\t2h", "2h\n",
             "", " ", "d", "1", "1x", "1.5h", "-1h", "1h-", "h1", "1d,12h", "1d_12h", "١h", "1dd",
             "1s" * 32, "1s" * 31 + "10s"]  # (64 characters, the longest it takes; 65)


@pytest.mark.parametrize("text", DURATIONS)
def test_the_schema_and_the_loader_agree_on_what_a_duration_is(text: str) -> None:
    """An editor or CI job that checks a file against docs/policy.schema.json must accept what rotator
    runs ("1d 12h" was refused by the schema) and refuse what it refuses."""
    import jsonschema
    import pydantic

    from rotator.config.durations import Duration
    from rotator.config.schedule import parse_duration

    try:
        parse_duration(text)
        loads = True
    except ValueError:
        loads = False
    schema = pydantic.TypeAdapter(Duration).json_schema()
    checks = jsonschema.Draft202012Validator(schema).is_valid(text)
    assert checks == loads, f"{text!r}: the loader {'takes' if loads else 'refuses'} it, the schema does not agree"


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
     ["policy[0] 'p1'.grace", "is not a duration: it is 5,001 characters long, and a duration is at most 64"],
     "7" * 100),
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
    """The daemon logs an ERROR at start for a webhook secret that is not whsec_ + base64 of 16 bytes or more:
    `rotator validate` refuses it (exit 2). A secret it cannot read (a systemd credential exists only while the
    service runs) is a warning."""
    if content is not None:
        (tmp_path / "hook-key").write_text(content)
    top = '[[daemon.webhooks]]\nurl = "https://hooks.example/rotator"\nsecret = { file = "hook-key" }\n'
    proc = _validate(tmp_path, _policy(top=top))
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert expected in proc.stdout + proc.stderr
    if content is not None and code:
        assert str(tmp_path / "hook-key") in proc.stderr and "fix:" in proc.stderr
