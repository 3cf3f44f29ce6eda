"""The policy bundle: the Lambda function's cold-start form of a policy file (rotator/config/policy_bundle.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import pytest

import rotator
from rotator.adapters.influxctl.management import InfluxctlManagementIssuer
from rotator.config import registry
from rotator.config.policy import PolicyFileError, load_config
from rotator.config.policy_bundle import (
    FORMAT,
    BundleError,
    PolicyBundle,
    bundle_path,
    decode,
    read_bundle,
    write_bundle,
)
from rotator.core.credentials import CredentialRef
from rotator.core.errors import ConfigError
from rotator.runners import lambda_rotation as aws_lambda_rotation
from rotator.runners.cli import main as cli

REPO = Path(__file__).resolve().parents[2]

POLICIES = """
[rotator.retry]
attempts = 3
base_delay = "2s"
max_delay = "30s"

[[policy]]
name = "mgmt"
schedule = "cron(0 3 ? * MON *)"
window = "02:00-04:00"
grace = "2h"
verify_timeout = "45s"
adopt = true
description = "{tag} by rotator for {policy}"
[policy.issuer]
type = "influxctl-management"
influxctl = "bin/influxctl"
timeout_s = 20
auth = { method = "mgmt_token", token = { file = "secrets/mgmt" } }
[policy.issuer.profile]
product = "clustered"
host = "cluster.example.com"
port = 8443
[policy.issuer.profile.tls]
ca = "certs/ca.pem"
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:influx/mgmt-AbCdEf"
endpoint_url = "https://vpce.example.com/"
retry_mode = "adaptive"
max_attempts = 4

[[policy]]
name = "db"
schedule = "7d"
enabled = false
[policy.issuer]
type = "influxctl-database"
auth = { method = "token_file", token_file = "/etc/influx/admin-token" }
permissions = { read = ["telemetry", "*"], write = ["telemetry"] }
[policy.issuer.profile]
product = "dedicated"
account_id = "acc"
cluster_id = "clu"
host = "clu.a.influxdb.example.com"
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "influx/db"
region = "us-east-1"

[[policy]]
name = "admin"
schedule = "rate(30 days)"
[policy.issuer]
type = "influxdb3"
base_url = "https://influx.example.com"
credential = "self"
token_name_prefix = "automation"
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "influx/admin"
region = "us-east-1"
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text(POLICIES)
    return path


def test_bundle_reproduces_the_validated_policies(policy_file: Path) -> None:
    written, bundle = write_bundle(policy_file)
    assert written == policy_file.with_name("rotator.bundle.json") == bundle_path(policy_file)
    expected = PolicyBundle.from_config(load_config(policy_file))
    read = read_bundle(written, policy_file=policy_file)
    assert read == expected == bundle
    assert read.retry.attempts == 3 and read.retry.base_delay == 2.0 and read.retry.max_delay == 30.0
    mgmt = read.policy("mgmt")
    assert mgmt.schedule.cron == "cron(0 3 ? * MON *)" and mgmt.schedule.window is not None
    assert mgmt.issuer_settings.auth.token == CredentialRef(file=Path("secrets/mgmt"))
    assert mgmt.stores[0].settings.endpoint_url == "https://vpce.example.com"  # normalised once, kept
    assert mgmt.base_dir == policy_file.parent.resolve()


def test_bundle_records_how_each_adapter_is_rebuilt(policy_file: Path) -> None:
    written, _ = write_bundle(policy_file)
    data = json.loads(written.read_text())
    assert data["format"] == FORMAT
    forms = {p["name"]: (p["issuer"]["form"], [s["form"] for s in p["stores"]]) for p in data["policies"]}
    # The influxctl issuers and the AWS store have dataclass settings; influxdb3 a pydantic model.
    assert forms == {"mgmt": ("dataclass", ["dataclass"]), "db": ("dataclass", ["dataclass"]),
                     "admin": ("pydantic", ["dataclass"])}  # fmt: skip
    assert data["adapters"]["store"] == {
        "aws-secretsmanager": "rotator.adapters.aws.secretsmanager:AwsSecretsManagerStore"
    }
    assert data["adapters"]["issuer"]["influxctl-management"] == (
        "rotator.adapters.influxctl.management:InfluxctlManagementIssuer"
    )


def test_a_changed_policy_file_makes_the_bundle_stale(policy_file: Path) -> None:
    written, _ = write_bundle(policy_file)
    policy_file.write_text(POLICIES.replace('grace = "2h"', 'grace = "3h"'))
    with pytest.raises(BundleError, match="stale.*changed after it was built") as caught:
        read_bundle(written, policy_file=policy_file)
    assert "rotator bundle" in caught.value.hint


def test_a_bundle_alone_is_used_without_its_policy_file(policy_file: Path) -> None:
    written, bundle = write_bundle(policy_file)
    policy_file.unlink()
    assert read_bundle(written, policy_file=policy_file) == bundle


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed"),
        ('{"format": "rotator-policy-bundle/0"}', "is not a rotator-policy-bundle/2 bundle"),
        ("[]", "is not a rotator-policy-bundle/2 bundle"),
        (json.dumps({"format": FORMAT, "rotator_version": rotator.__version__, "policies": []}), "malformed.*KeyError"),
    ],
)
def test_an_unusable_bundle_says_so(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "rotator.bundle.json"
    path.write_text(content)
    with pytest.raises(BundleError, match=message):
        read_bundle(path)


def test_a_bundle_of_format_1_still_loads(policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """For one release: format 1 named the built-in adapters in the old top-level ``adapters``
    package, which no longer exists; the reader loads them from their new modules."""
    written, bundle = write_bundle(policy_file)
    data = json.loads(written.read_text())
    old_module = {new: old for old, new in registry.MOVED_MODULES.items()}
    for targets in data["adapters"].values():
        for name, value in targets.items():
            module, _, attribute = value.partition(":")
            targets[name] = f"{old_module[module]}:{attribute}"
    assert data["adapters"]["store"] == {"aws-secretsmanager": "adapters.aws_secretsmanager:AwsSecretsManagerStore"}
    data["format"] = "rotator-policy-bundle/1"
    written.write_text(json.dumps(data))
    monkeypatch.setattr(registry, "_cache", {})  # load from the recorded targets, not from this process's cache
    assert read_bundle(written) == bundle
    assert registry._known("issuer", "influxctl-management") is InfluxctlManagementIssuer


def test_the_old_targets_of_every_built_in_adapter_are_mapped() -> None:
    """Each built-in entry point has its old module in MOVED_MODULES, and nothing else is mapped."""
    built_in = {registry.target(kind, name).partition(":")[0]
                for kind in ("issuer", "store") for name in registry.available(kind)
                if registry.target(kind, name).startswith("rotator.adapters.")}  # fmt: skip
    assert built_in == set(registry.MOVED_MODULES.values())
    assert registry.current_target("adapters.vault_kv2:VaultKV2Store") == "rotator.adapters.vault.kv2:VaultKV2Store"
    assert registry.current_target("acme_adapters.store:Store") == "acme_adapters.store:Store"


def test_a_tampered_setting_fails_its_own_checks(policy_file: Path) -> None:
    written, _ = write_bundle(policy_file)
    data = json.loads(written.read_text())
    data["policies"][0]["issuer"]["settings"]["timeout_s"] = "twenty"
    data["policies"][0]["stores"][0]["settings"]["max_attempts"] = 99
    written.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="malformed"):
        read_bundle(written)


def test_an_invalid_policy_file_writes_no_bundle(policy_file: Path) -> None:
    policy_file.write_text(POLICIES.replace("port = 8443", "port = 0"))
    with pytest.raises(PolicyFileError, match="port"):
        write_bundle(policy_file)
    assert not bundle_path(policy_file).exists()


def test_cli_bundle(policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["bundle", str(policy_file), "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"bundle": str(bundle_path(policy_file)), "policies": ["mgmt", "db", "admin"]}
    policy_file.write_text("[[policy]]\nname = 'x'\n")
    target = tmp_path / "elsewhere.json"
    assert cli(["bundle", str(policy_file), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert "policy[0]" in err and "fix:" in err
    assert not target.exists()


@pytest.mark.parametrize(("source", "message"), [
    ("fifo", "policy file fifo is not a regular file"),  # no writer: a blocking open waits for ever
    ("/dev/zero", "policy file /dev/zero is not a regular file"),  # never ends: read to the end of memory
])  # fmt: skip
def test_bundle_reads_only_a_regular_policy_file(tmp_path: Path, source: str, message: str) -> None:
    """As every command reads the policy file (rotator/config/policy_source.py), in a child held to 2 GiB
    of address space so that a read of /dev/zero fails there, not on the machine."""
    os.mkfifo(tmp_path / "fifo")
    child = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
             "from rotator.runners.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    try:
        done = subprocess.run([sys.executable, "-c", child, "bundle", source, "-o", "out.json"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=30, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"`rotator bundle {source}` waited")
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "out.json").exists()


def test_the_bundle_is_never_written_over_the_policy_file_or_its_journal(policy_file: Path) -> None:
    journal = policy_file.parent / "journal.db"
    policy_file.write_text(f'[rotator]\njournal = "{journal.name}"\n' + POLICIES)
    journal.write_bytes(b"SQLite format 3\x00")
    before = policy_file.read_bytes()
    for output, what in [(policy_file, "the policy file it is compiled from"),
                         (policy_file.parent / "sub" / ".." / policy_file.name, "the policy file it is compiled from"),
                         (journal, "the policy file's journal"),
                         (Path(f"{journal}-wal"), "the policy file's journal's -wal file")]:  # fmt: skip
        (policy_file.parent / "sub").mkdir(exist_ok=True)
        with pytest.raises(ConfigError, match=f"is {what} .*: writing the bundle there would destroy it"):
            write_bundle(policy_file, output)
    assert policy_file.read_bytes() == before and journal.read_bytes() == b"SQLite format 3\x00"
    assert not Path(f"{journal}-wal").exists()


def test_the_lambda_cold_path_imports_no_pydantic(policy_file: Path) -> None:
    """What the function's first invocation loads before it calls AWS, in a fresh interpreter.

    Every policy in the bundle is built at cold start: an HTTP issuer's policy would bring httpx
    and pydantic (docs/aws-lambda.md), so this file has the influxctl ones only."""
    policy_file.write_text(POLICIES[: POLICIES.index('[[policy]]\nname = "admin"')])
    write_bundle(policy_file)
    probe = f"""
import sys
from pathlib import Path
import rotator.runners.aws_lambda
from rotator.runners import lambda_rotation as aws_lambda_rotation
bundle = aws_lambda_rotation._load_config(Path({str(policy_file)!r}))
policy = bundle.policy("mgmt")
from rotator.config import registry
registry.build_issuer(policy)
registry.build_stores(policy)
heavy = sorted(m for m in ("pydantic", "pydantic_core", "annotated_types", "httpx", "hvac", "apscheduler")
               if m in sys.modules)
print(",".join(heavy) or "none")
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "none", proc.stdout


def test_the_lambda_falls_back_to_the_policy_file(policy_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    expected = PolicyBundle.from_config(load_config(policy_file))
    assert aws_lambda_rotation._load_config(policy_file) == expected  # no bundle: the file itself
    write_bundle(policy_file)
    policy_file.write_text(POLICIES.replace('grace = "2h"', 'grace = "3h"'))
    with caplog.at_level(logging.WARNING, logger="rotator.lambda"):
        fallback = aws_lambda_rotation._load_config(policy_file)
    assert fallback.policy("mgmt").grace.total_seconds() == 3 * 3600
    assert "stale" in caplog.text and "slower cold start" in caplog.text


def test_a_bundle_whose_adapter_cannot_be_imported_falls_back_to_the_policy_file(
    policy_file: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """registry.load_resolved raises a ConfigError for a recorded target that does not import (the
    adapter's package is missing from the zip, or renamed): the bundle is unusable, not the function."""
    written, _ = write_bundle(policy_file)
    data = json.loads(written.read_text())
    data["adapters"]["issuer"]["influxctl-management"] = "rotator.adapters.influxctl.gone:InfluxctlManagementIssuer"
    written.write_text(json.dumps(data))
    monkeypatch.setattr(registry, "_cache", {})  # load from the recorded targets, as a fresh cold start does
    with pytest.raises(BundleError, match=r"cannot be used: issuer adapter 'influxctl-management' .* cannot be "
                       "imported") as caught:  # fmt: skip
        read_bundle(written, policy_file=policy_file)
    assert "rebuild the policy bundle" in caught.value.hint
    with caplog.at_level(logging.WARNING, logger="rotator.lambda"):
        fallback = aws_lambda_rotation._load_config(policy_file)
    assert fallback == PolicyBundle.from_config(load_config(policy_file))
    assert "cannot be imported" in caplog.text and "slower cold start" in caplog.text


def test_no_policy_file_and_no_bundle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read policy file .* \(nor its bundle") as caught:
        aws_lambda_rotation._load_config(tmp_path / "absent.toml")
    assert "ROTATOR_CONFIG" in caught.value.hint


# -- decode -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Inner:
    method: Literal["a"]
    path: Path


@dataclass(frozen=True)
class _Other:
    method: Literal["b"]
    count: int = 1


@dataclass(frozen=True)
class _Outer:
    name: Annotated[str, "metadata for pydantic"]
    ratio: float
    flag: bool
    choice: _Inner | _Other
    names: tuple[str, ...] = ()
    maybe: int | None = None


def test_decode_rebuilds_nested_dataclasses() -> None:
    value = decode(_Outer, {"name": "n", "ratio": 2, "flag": True, "choice": {"method": "b", "count": 3},
                            "names": ["x", "y"]})  # fmt: skip
    assert value == _Outer("n", 2.0, True, _Other("b", 3), ("x", "y"))
    assert isinstance(value.ratio, float)
    inner = decode(_Outer, {"name": "n", "ratio": 1.5, "flag": False, "choice": {"method": "a", "path": "/p"}})
    assert inner.choice == _Inner("a", Path("/p"))


@pytest.mark.parametrize(
    "data",
    [
        {"name": "n", "ratio": 1, "flag": 1, "choice": {"method": "b"}},  # 1 is not a bool
        {"name": "n", "ratio": True, "flag": True, "choice": {"method": "b"}},  # a bool is not a number
        {"name": "n", "ratio": 1, "flag": True, "choice": {"method": "c"}},  # no such member
        {"name": "n", "ratio": 1, "flag": True, "choice": {"method": "b", "extra": 1}},  # unknown key
        {"name": 3, "ratio": 1, "flag": True, "choice": {"method": "b"}},
        {"name": "n", "ratio": 1, "flag": True, "choice": {"method": "b"}, "maybe": "1"},
    ],
)
def test_decode_refuses_what_does_not_fit(data: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        decode(_Outer, data)


def test_decode_runs_the_dataclass_checks() -> None:
    with pytest.raises(ValueError, match="exactly one of `file` or `env`"):
        decode(CredentialRef, {"file": "/a", "env": "B"})


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_bundle_is_never_moved_over_a_fifo_or_a_device(policy_file: Path, kind: str) -> None:
    """`bundle -o` renamed its file over whatever was at the name: as root, `bundle -o /dev/null` replaced the
    host's device node for every process. Refused now, the node left as it is (a link there is still replaced,
    not written through: tests/config/test_bundle_symlink.py). (No device node here: a regression would replace
    it, and making one needs root.)"""
    import socket
    import stat

    node = policy_file.parent / f"bundle.{kind}"
    listener = socket.socket(socket.AF_UNIX)
    if kind == "fifo":
        os.mkfifo(node)
    else:
        listener.bind(str(node))
    try:
        before = node.stat()
        with pytest.raises(ConfigError, match="is not a regular file .* the bundle would replace it"):
            write_bundle(policy_file, node)
        after = node.stat()
    finally:
        listener.close()
    assert (after.st_ino, stat.S_IFMT(after.st_mode)) == (before.st_ino, stat.S_IFMT(before.st_mode))


@pytest.mark.parametrize("built_by", ["0.0.9", None, 7, "x" * 200])
def test_a_bundle_another_release_built_is_stale(policy_file: Path, built_by: object) -> None:
    """Another release may refuse what it accepted (or default otherwise): its bundle is not used, and the
    Lambda function validates the policy file instead (test_the_lambda_falls_back_to_the_policy_file)."""
    written, _ = write_bundle(policy_file)
    data = json.loads(written.read_text())
    data["rotator_version"] = built_by
    written.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"stale: built by rotator .*, this is rotator") as caught:
        read_bundle(written, policy_file=policy_file)
    assert "rotator bundle" in caught.value.hint
    assert len(str(caught.value)) < len(str(written)) + 200, "an odd value is not repeated whole"
