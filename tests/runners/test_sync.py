"""``rotator sync`` against a real OpenBao (the source store) and real influxctl config files,
run as a process (``python -m rotator.runners.sync``) and through ``add_parser`` in a CLI shaped like
rotator's; plus the systemd units in deploy/systemd.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.influxctl.profile import SIDECAR_SUFFIX, InfluxctlProfileSettings, InfluxctlProfileStore
from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.secret import Secret
from rotator.runners.sync import add_parser, cmd_sync, main, parse_reference
from tests.harness import REPO

POLICY = "mgmt-prod"
#: Management token ids are UUIDs (sync refuses a source payload with any other id).
ID_1, ID_2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
ID_OLD, ID_NEW = "0ddddddd-0000-4000-8000-000000000001", "0eeeeeee-0000-4000-8000-000000000002"
ID_X = "0fffffff-0000-4000-8000-000000000003"
NOW = datetime.now(UTC).replace(microsecond=0)
PROFILE = """\
# automation host: influxctl runs as this user with this file
[[profile]]
  name = "default"
  product = "clustered"
  host = "cluster.test.invalid"
  port = "443"

[[profile]]
  name = "staging"   # another cluster, never touched
  product = "clustered"
  host = "staging.test.invalid"
"""
UNITS = REPO / "deploy" / "systemd"


@dataclass
class Host:
    """An automation host: a policy file naming a Vault store, and an influxctl config."""

    dir: Path
    policy_file: Path
    config: Path
    vault: VaultKV2Store
    values: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def publish(self, token_id: str, token: str | None = None, created: datetime = NOW) -> TokenRecord:
        """What the rotating host does: a new version in Vault."""
        record = TokenRecord(Secret(token or f"test-mgmt-token-{uuid.uuid4().hex}"), token_id,
                             "influxctl-management", POLICY, created, created + timedelta(days=30))  # fmt: skip
        self.values.append(record.value.reveal())
        self.vault.publish(record, self.vault.read_current().version)
        return record

    def sync(self, *args: str, reference: str | None = None, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        argv = [sys.executable, "-m", "rotator.runners.sync", "--from", reference or f"{self.policy_file}:{POLICY}",
                "--config", str(self.config), "--log-file", str(self.dir / "sync.log"), *args]  # fmt: skip
        base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_"))}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                              env={**base, "PYTHONPATH": str(REPO), **(env or {})}, cwd=cwd or self.dir)  # fmt: skip
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def profile_token(self, profile: str = "default") -> str | None:
        import tomllib

        entries = tomllib.loads(self.config.read_text())["profile"]
        return next(p for p in entries if p["name"] == profile).get("mgmt_token")

    def check_no_leak(self) -> None:
        texts = [*self.outputs, (self.dir / "sync.log").read_text() if (self.dir / "sync.log").exists() else ""]
        sidecar = Path(str(self.config) + SIDECAR_SUFFIX)
        if sidecar.exists():
            texts.append(sidecar.read_text())
        for token in self.values:
            for text in texts:
                assert token not in text, "a token value leaked into output, logs or the sidecar"


def write_policy(path: Path, vault_url: str, kv_path: str, *, attempts: int = 2, extra_store: str = "") -> None:
    path.write_text(f"""
[rotator.retry]
attempts = {attempts}
base_delay = "1s"
max_delay = "1s"

[[policy]]
name = "{POLICY}"
schedule = "30d"

[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
{extra_store}
[[policy.store]]
type = "vault-kv2"
name = "vault"
url = "{vault_url}"
path = "{kv_path}"
[policy.store.auth]
method = "token"
token = {{ file = "sync-vault-token" }}
""")


@pytest.fixture
def host(tmp_path: Path, openbao: Any, kv_path: str) -> Host:
    """A read-only Vault token for the sync host; the root token for the test's own writes."""
    reader = openbao.policy_for(f"sync-{uuid.uuid4().hex[:8]}", kv_path, "read")
    (tmp_path / "sync-vault-token").write_text(openbao.create_token(reader))
    write_policy(tmp_path / "sync.toml", openbao.url, kv_path)
    (tmp_path / "root-token").write_text(openbao.root_token)
    settings = VaultKV2Settings.model_validate(
        {"url": openbao.url, "path": kv_path, "auth": {"method": "token", "token": {"file": "root-token"}}}
    )
    vault = VaultKV2Store.from_config(settings, AdapterContext(policy=POLICY, base_dir=tmp_path))
    config = tmp_path / "home" / ".config" / "influxctl" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(PROFILE)
    return Host(tmp_path, tmp_path / "sync.toml", config, vault)


def stat_of(path: Path) -> tuple[int, int, bytes]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


# ------------------------------------------------------------------------------ syncing


def test_sync_writes_the_profile_then_is_idempotent(host: Host, fake_influxctl: Any) -> None:
    token, token_id = fake_influxctl.state.add_token("published by the rotating host")
    host.publish(token_id, token)
    proc = host.sync("--profile", "default")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote token {token_id}" in proc.stdout and "was no mgmt_token" in proc.stdout
    assert host.profile_token() == token
    assert host.config.read_text() == PROFILE.replace('  port = "443"\n', f'  port = "443"\n  mgmt_token = "{token}"\n')
    assert host.config.stat().st_mode & 0o777 == 0o600
    done = fake_influxctl.run("--config", str(host.config), "management", "list", "--format", "json")
    assert done.returncode == 0, done.stderr  # influxctl accepts the file and the token

    sidecar = Path(str(host.config) + SIDECAR_SUFFIX)
    before = stat_of(host.config), stat_of(sidecar)
    again = host.sync("--profile", "default")
    assert again.returncode == 0, again.stderr
    assert f"already current (token {token_id})" in again.stdout
    quiet = host.sync("--quiet")
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert (stat_of(host.config), stat_of(sidecar)) == before, "an up-to-date profile is not rewritten"
    host.check_no_leak()


def test_sync_follows_each_rotation(host: Host) -> None:
    first = host.publish(ID_1)
    assert host.sync("--output", "json").returncode == 0
    second = host.publish(ID_2, created=NOW + timedelta(days=1))
    proc = host.sync("--output", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["changed"] and result["ok"] and not result["dry_run"]
    assert (result["token_id"], result["previous_token_id"]) == (ID_2, ID_1)
    assert result["policy"] == POLICY and result["source"].startswith("vault:")
    assert host.profile_token() == second.value.reveal() != first.value.reveal()
    assert host.profile_token("staging") is None
    host.check_no_leak()


def test_a_hand_placed_token_is_replaced_only_with_adopt(host: Host) -> None:
    host.config.write_text(PROFILE.replace('  port = "443"\n', '  port = "443"\n  mgmt_token = "by-hand-0123456789"\n'))
    host.publish(ID_1)
    before = stat_of(host.config)
    proc = host.sync()
    assert proc.returncode == 1
    assert "holds a mgmt_token that rotator did not write" in proc.stderr and "--adopt" in proc.stderr
    assert stat_of(host.config) == before
    dry = host.sync("--adopt", "--dry-run")
    assert dry.returncode == 0 and f"would write token {ID_1} (holds an unmanaged value)" in dry.stdout
    assert stat_of(host.config) == before
    proc = host.sync("--adopt")
    assert proc.returncode == 0, proc.stderr
    assert host.profile_token() == host.values[-1]
    host.check_no_leak()


def test_a_stale_source_does_not_roll_the_profile_back(host: Host) -> None:
    """The profile holds a newer token than the store: a lagging replica must not win."""
    newer = TokenRecord(Secret(f"test-newer-{uuid.uuid4().hex}"), ID_NEW, "influxctl-management", POLICY,
                        NOW + timedelta(hours=1), None)  # fmt: skip
    profile = InfluxctlProfileStore.from_config(
        InfluxctlProfileSettings(config=host.config), AdapterContext(policy=POLICY, base_dir=host.dir)
    )
    profile.publish(newer, None)
    host.publish(ID_OLD, created=NOW)
    proc = host.sync()
    assert proc.returncode == 1 and "stale replica" in proc.stderr
    assert host.profile_token() == newer.value.reveal()


def test_a_profile_of_another_policy_is_not_taken_over(host: Host) -> None:
    other = TokenRecord(Secret(f"test-other-{uuid.uuid4().hex}"), ID_X, "influxctl-management", "other-policy",
                        NOW - timedelta(days=1), None)  # fmt: skip
    profile = InfluxctlProfileStore.from_config(
        InfluxctlProfileSettings(config=host.config), AdapterContext(policy=POLICY, base_dir=host.dir)
    )
    profile.publish(other, None)
    host.publish(ID_1)
    proc = host.sync()
    assert proc.returncode == 1 and "of policy 'other-policy', not of 'mgmt-prod'" in proc.stderr
    assert host.sync("--adopt").returncode == 0
    assert host.profile_token() == host.values[-1]


@pytest.mark.parametrize("args", [(), ("--adopt",), ("--dry-run",)], ids=["plain", "adopt", "dry-run"])
def test_a_profile_of_another_cluster_is_refused(host: Host, args: tuple[str, ...]) -> None:
    """--profile naming a profile of another cluster (a typo, a unit copied from another host): influxctl
    would send the policy's management token there. Refused before the source is read, even with
    --adopt (which is about whose token the profile holds, not where it points); nothing is written."""
    host.publish(ID_1)
    before = stat_of(host.config)
    proc = host.sync("--profile", "staging", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "profile 'staging' is not the cluster of policy 'mgmt-prod'" in proc.stderr
    assert ("host is 'staging.test.invalid' in the profile, 'cluster.test.invalid' in [policy.issuer.profile]"
            in proc.stderr)  # fmt: skip
    assert "fix: --profile default names that cluster in this file" in proc.stderr
    assert stat_of(host.config) == before and not Path(str(host.config) + SIDECAR_SUFFIX).exists()
    assert host.profile_token("staging") is None
    host.check_no_leak()


def test_a_profile_pointed_at_another_cluster_while_the_source_is_read_is_not_written(
        host: Host, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:  # fmt: skip
    """The cluster is checked again just before the write: between the first check and the write come
    the source read (network calls, retries) and any retry's wait, time for another writer to point
    the profile at another host."""
    host.publish(ID_1)
    original = VaultKV2Store.read_current

    def read_while_the_profile_moves(self: VaultKV2Store) -> Any:
        host.config.write_text(host.config.read_text().replace('host = "cluster.test.invalid"',
                                                               'host = "moved.test.invalid"', 1))
        return original(self)

    monkeypatch.setattr(VaultKV2Store, "read_current", read_while_the_profile_moves)
    args = rotator_like_parser().parse_args(["sync", "--from", f"{host.policy_file}:{POLICY}",
                                             "--config", str(host.config)])  # fmt: skip
    assert cmd_sync(args) == 2
    assert "host is 'moved.test.invalid' in the profile" in capsys.readouterr().err
    assert host.profile_token() is None


def test_a_first_sync_into_a_profile_of_another_cluster_names_no_right_profile(host: Host) -> None:
    """No profile of the file names the policy's cluster: the fix says to look at --config."""
    host.config.write_text(PROFILE.replace('host = "cluster.test.invalid"', 'host = "other.test.invalid"'))
    host.publish(ID_1)
    proc = host.sync()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "host is 'other.test.invalid' in the profile, 'cluster.test.invalid'" in proc.stderr
    assert "no profile of this file names that cluster: point --config at the right file" in proc.stderr
    assert host.profile_token() is None


CLUSTERED = 'product = "clustered"\nhost = "cluster.test.invalid"'
DEDICATED = 'product = "dedicated"\naccount_id = "AB-1"\ncluster_id = "CD-2"'


@pytest.mark.parametrize(
    ("policy_profile", "profile_keys", "differs"),
    [
        # the same cluster, written differently
        (CLUSTERED, 'product = "clustered"\nhost = "Cluster.Test.Invalid."', []),
        (CLUSTERED + "\nport = 443", 'product = "clustered"\nhost = "cluster.test.invalid"', []),
        (CLUSTERED, 'product = "clustered"\nhost = "cluster.test.invalid"\nport = 443', []),
        (CLUSTERED + "\nport = 8443", 'product = "clustered"\nhost = "cluster.test.invalid"\nport = "8443"', []),
        # Dedicated: the account and cluster ids; its host serves query/write only
        (DEDICATED, 'product = "dedicated"\naccount_id = "ab-1"\ncluster_id = "cd-2"\nhost = "q.test.invalid"', []),
        # as `rotator rotate` compares an issuer with a profile store (rotator.core.contracts.target_host_port)
        ('product = "clustered"\nhost = "2001:db8::1"', 'product = "clustered"\nhost = "[2001:db8:0:0:0:0:0:1]"', []),
        ('product = "clustered"\nhost = "bücher.example"', 'product = "clustered"\nhost = "xn--bcher-kva.example"', []),
        # another cluster
        (CLUSTERED, 'product = "clustered"\nhost = "cluster.test.invalid"\nport = "8443"', ["port"]),
        (CLUSTERED, 'product = "clustered"\nport = "443"', ["host"]),
        (DEDICATED, 'product = "dedicated"\naccount_id = "AB-1"\ncluster_id = "other"', ["cluster_id"]),
        (DEDICATED, 'product = "clustered"\naccount_id = "AB-1"\ncluster_id = "CD-2"', ["product"]),
    ],
)
def test_what_counts_as_the_same_cluster(host: Host, openbao: Any, kv_path: str, policy_profile: str,
                                         profile_keys: str, differs: list[str]) -> None:  # fmt: skip
    """[policy.issuer.profile] against the profile, compared as influxctl means them."""
    write_policy(host.policy_file, openbao.url, kv_path)
    text = host.policy_file.read_text()
    assert CLUSTERED + "\n" in text
    host.policy_file.write_text(text.replace(CLUSTERED + "\n", policy_profile + "\n"))
    host.config.write_text(f'[[profile]]\nname = "default"\n{profile_keys}\n')
    host.publish(ID_1)
    proc = host.sync()
    if not differs:
        assert proc.returncode == 0, proc.stderr
        assert host.profile_token() == host.values[-1]
        return
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is not the cluster of policy" in proc.stderr
    assert [key for key in ("product", "host", "port", "account_id", "cluster_id")
            if f" {key} is " in proc.stderr or f": {key} is " in proc.stderr] == differs  # fmt: skip
    assert host.profile_token() is None


def test_an_issuer_without_profile_settings_is_not_compared_but_said(host: Host, caplog: Any) -> None:
    """Not reachable from the command line today (sync takes influxctl-management policies only, which
    have [policy.issuer.profile]); an issuer added to those without one is written to, with a warning."""
    import logging
    from types import SimpleNamespace

    from rotator.runners.sync import _check_cluster

    settings = InfluxctlProfileSettings(config=host.config, profile="staging")
    target = InfluxctlProfileStore.from_config(settings, AdapterContext(policy=POLICY, base_dir=host.dir))
    policy = SimpleNamespace(name=POLICY, issuer_type="some-management-issuer", issuer_settings=SimpleNamespace())
    with caplog.at_level(logging.WARNING, logger="rotator.sync"):
        _check_cluster(target, policy, "staging", host.policy_file, logging.getLogger("rotator.sync"))  # type: ignore[arg-type]
    assert "has no [policy.issuer.profile]: which cluster profile 'staging' names is not checked" in caplog.text


def test_an_empty_source_fails_without_writing(host: Host) -> None:
    before = stat_of(host.config)
    proc = host.sync()
    assert proc.returncode == 1
    assert "holds no secret; nothing to sync" in proc.stderr and f"rotator bootstrap {POLICY}" in proc.stderr
    assert stat_of(host.config) == before


def test_an_unreachable_source_fails_with_exit_1(host: Host, tmp_path: Path) -> None:
    from rotator.sandbox.openbao_dev import free_port

    write_policy(host.policy_file, f"http://127.0.0.1:{free_port()}", "x", attempts=1)
    proc = host.sync()
    assert proc.returncode == 1 and "cannot reach Vault" in proc.stderr


def test_a_missing_config_is_named_before_the_source_is_read(host: Host) -> None:
    """The local influxctl file is checked before the network: with the source store unreachable too,
    the error is the missing --config (exit 2), not the store's, after its retries."""
    from rotator.sandbox.openbao_dev import free_port

    write_policy(host.policy_file, f"http://127.0.0.1:{free_port()}", "x", attempts=3)
    proc = host.sync("--config", str(host.dir / "missing" / "config.toml"))
    assert proc.returncode == 2, proc.stderr
    assert "cannot reach Vault" not in proc.stderr and "missing/config.toml" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("args", "reference", "words"),
    [
        ((), "{file}:no-such-policy", "no policy named 'no-such-policy'"),
        ((), "{file}:", "is not [POLICY_FILE:]POLICY"),
        ((), "{dir}/missing.toml:mgmt-prod", "cannot read policy file"),
        (("--store", "nope"), None, "has no store named 'nope'"),
        (("--profile", "automation"), None, "no [[profile]] named 'automation'"),
        (("--profile", ""), None, "--profile: String should have at least 1 character"),
        (("-c", "rotator.toml"), None, "rotator sync takes no -c"),
    ],
)
def test_invalid_input_exits_2_and_writes_nothing(host: Host, args: tuple[str, ...], reference: str | None,
                                                  words: str) -> None:  # fmt: skip
    host.publish(ID_1)
    before = stat_of(host.config)
    ref = reference.format(file=host.policy_file, dir=host.dir) if reference else None
    proc = host.sync(*args, reference=ref)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "fix:" in proc.stderr
    assert stat_of(host.config) == before


def test_an_unparsable_influxctl_config_is_left_untouched(host: Host) -> None:
    host.publish(ID_1)
    host.config.write_text(PROFILE.replace('port = "443"', "port = 443 443"))
    before = stat_of(host.config)
    proc = host.sync()
    assert proc.returncode == 2
    assert f"{host.config} is not valid TOML: syntax error at line 6" in proc.stderr
    assert stat_of(host.config) == before


def test_missing_policy_file_part_uses_rotator_config(host: Host) -> None:
    host.publish(ID_1)
    proc = host.sync(reference=POLICY, env={"ROTATOR_CONFIG": str(host.policy_file)})
    assert proc.returncode == 0, proc.stderr
    assert parse_reference("a:b:c") == (Path("a:b"), "c")
    assert parse_reference("p", default_file="x.toml") == (Path("x.toml"), "p")


def test_the_source_is_the_first_store_that_is_not_a_profile(host: Host, openbao: Any, kv_path: str) -> None:
    profile_store = """
[[policy.store]]
type = "influxctl-profile"
name = "local"
config = "elsewhere.toml"
"""
    write_policy(host.policy_file, openbao.url, kv_path, extra_store=profile_store)
    host.publish(ID_1)
    proc = host.sync()
    assert proc.returncode == 0, proc.stderr
    assert host.profile_token() == host.values[-1]
    named = host.sync("--store", "local")
    assert named.returncode == 2 and "elsewhere.toml" in named.stderr and "does not exist" in named.stderr


def test_sync_from_aws_secrets_manager(tmp_path: Path, aws: Any, fake_influxctl: Any) -> None:
    """The same command with an aws-secretsmanager store (moto server on loopback)."""
    from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings, AwsSecretsManagerStore
    from tests.aws_server import CORE_PRELUDE

    store = {"secret_id": f"influx/{uuid.uuid4().hex[:8]}", "region": aws.region, "endpoint_url": aws.url}
    policy_file = tmp_path / "sync.toml"
    policy_file.write_text(f"""
[[policy]]
name = "{POLICY}"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
[[policy.store]]
type = "aws-secretsmanager"
{chr(10).join(f'{k} = "{v}"' for k, v in store.items())}
""")
    token, token_id = fake_influxctl.state.add_token("published to AWS by the rotating host")
    publisher = AwsSecretsManagerStore.from_config(
        AwsSecretsManagerSettings(**store), AdapterContext(policy=POLICY, base_dir=tmp_path)
    )
    publisher.publish(TokenRecord(Secret(token), token_id, "influxctl-management", POLICY, NOW, None), None)
    config = tmp_path / "config.toml"
    config.write_text(PROFILE)
    code = CORE_PRELUDE + "import sys\nfrom rotator.runners.sync import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}, **aws.env(),
           "PYTHONPATH": str(REPO)}  # fmt: skip
    argv = [sys.executable, "-c", code, "--from", f"{policy_file}:{POLICY}", "--config", str(config)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote token {token_id} from aws-secretsmanager:{aws.region}/{store['secret_id']}" in proc.stdout
    assert token not in proc.stdout + proc.stderr
    done = fake_influxctl.run("--config", str(config), "management", "list")
    assert done.returncode == 0, done.stderr
    again = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "already current" in again.stdout


# ------------------------------------------------------------------------------ wiring into rotator's CLI


def rotator_like_parser() -> argparse.ArgumentParser:
    """The shape of rotator.runners.cli's parser: a common parent whose -c/--config is the policy file."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default="rotator.toml")
    common.add_argument("--log-level", default="info")
    common.add_argument("--log-format", default="text")
    common.add_argument("--log-file")
    common.add_argument("--output", default="text", choices=["text", "json"])
    parser = argparse.ArgumentParser(prog="rotator")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", parents=[common])
    add_parser(sub, common)
    return parser


def test_add_parser_and_cmd_sync_in_a_rotator_shaped_cli(host: Host, capsys: Any) -> None:
    parser = rotator_like_parser()
    status = parser.parse_args(["status", "-c", "policies.toml"])
    assert status.config == "policies.toml", "the common parent's -c/--config is left alone"
    host.publish(ID_1)
    args = parser.parse_args(["sync", "--from", f"{host.policy_file}:{POLICY}", "--config", str(host.config),
                              "--output", "json", "--log-level", "debug"])  # fmt: skip
    assert args.influxctl_config == str(host.config) and args.log_level == "debug"
    assert cmd_sync(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["token_id"] == ID_1 and out["changed"]
    assert cmd_sync(args) == 0 and not json.loads(capsys.readouterr().out)["changed"]
    assert main(["--from", f"{host.policy_file}:{POLICY}", "--config", str(host.config), "-q"]) == 0
    assert capsys.readouterr().out == ""



def test_an_unusable_log_file_is_a_clear_error_and_nothing_is_written(host: Host, tmp_path: Path) -> None:
    """``python -m rotator.runners.sync --log-file`` in a missing directory: exit 2 naming the option
    (it was a traceback: logging was set up outside the error handling)."""
    host.publish(ID_1)
    before = host.config.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.sync", "--from", f"{host.policy_file}:{POLICY}",
                           "--config", str(host.config), "--log-file", str(tmp_path / "missing" / "sync.log")],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert "--log-file" in proc.stderr and "Traceback" not in proc.stderr
    assert host.config.read_bytes() == before


# ------------------------------------------------------------------------------ systemd units


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    text = (UNITS / name).read_text().replace("\\\n", " ")
    parser.read_string(text)
    return parser


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed; test_systemd_units_say_what_they_must parses the units")
    rotator = shutil.which("rotator", path=str(Path(sys.executable).parent)) or sys.executable
    for name in ("rotator-sync.service", "rotator-sync.timer"):
        text = (UNITS / name).read_text().replace("/opt/rotator/bin/rotator", rotator)  # verify wants a real binary
        (tmp_path / name).write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", "rotator-sync.service", "rotator-sync.timer"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", "no unknown keys, no warnings"


def test_systemd_units_say_what_they_must() -> None:
    service = unit("rotator-sync.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["User"] not in ("root", "nobody", "0")
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "CapabilityBoundingSet": "", "UMask": "0077"}.items():  # fmt: skip
        assert service[key] == value, key
    argv = shlex.split(service["ExecStart"])
    assert argv[1] == "sync"
    args = argparse.ArgumentParser()
    args.add_argument("--config")
    config = Path(args.parse_known_args(argv[2:])[0].config)
    assert service["ReadWritePaths"] == str(config.parent), "the one writable place is the influxctl config dir"
    # The command line is valid for `rotator sync` (its own parser; exits 2 if not).
    from rotator.runners import sync

    parser = argparse.ArgumentParser(parents=[sync._common_parent()])
    sync._add_arguments(parser)
    parsed = parser.parse_args(argv[2:])
    assert parsed.source.endswith(":mgmt-prod") and parsed.profile == "default" and parsed.quiet

    timer = unit("rotator-sync.timer")
    assert timer["Timer"]["Unit"] == "rotator-sync.service"
    assert timer["Timer"]["OnUnitActiveSec"] == "5min" and timer["Timer"]["RandomizedDelaySec"]
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.parametrize("payload", ["another policy's token", "a database token", "no issuer, another policy"])
def test_a_source_payload_that_is_not_this_policy_s_is_not_synced(host: Host, payload: str) -> None:
    """What the source store's payload says is input: a token of another policy (two policies sharing a
    store) or of another issuer does not go into this host's mgmt_token."""
    policy, issuer = {"another policy's token": ("other-policy", "influxctl-management"),
                      "a database token": (POLICY, "influxctl-database"),
                      "no issuer, another policy": ("other-policy", "")}[payload]
    record = TokenRecord(Secret(f"test-mgmt-token-{uuid.uuid4().hex}"), ID_X, issuer, policy, NOW, None)
    host.values.append(record.value.reveal())
    host.vault.publish(record, host.vault.read_current().version)
    before = stat_of(host.config)
    proc = host.sync()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"holds a token of policy {policy!r}" in proc.stderr and f"not of policy {POLICY!r}" in proc.stderr
    assert "two policies must not share a store" in proc.stderr
    assert stat_of(host.config) == before
    host.check_no_leak()
    host.publish(ID_2)  # the rotating host publishes this policy's token: the same command now succeeds
    assert host.sync().returncode == 0 and host.profile_token() == host.values[-1]


def test_a_policy_whose_tokens_are_not_management_tokens_is_refused(host: Host) -> None:
    text = host.policy_file.read_text().replace(
        'type = "influxctl-management"\n[policy.issuer.profile]',
        'type = "influxctl-database"\nauth = { method = "token_file", token_file = "admin-token" }\n'
        'permissions = { read = ["telemetry"] }\n[policy.issuer.profile]')
    assert "influxctl-database" in text
    host.policy_file.write_text(text)
    host.publish(ID_1)
    before = stat_of(host.config)
    proc = host.sync()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "policy 'mgmt-prod' (influxctl-database): mgmt_token holds a management token" in proc.stderr
    assert stat_of(host.config) == before
