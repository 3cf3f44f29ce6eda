"""An influxctl-profile store whose profile names another cluster than the policy's issuer: the engine
refuses in PLAN, before it mints (InfluxctlProfileStore.target, contracts.Store, Engine._check_store_targets).

Before, the profile store wrote whatever the issuer minted: after the policy's issuer was pointed at
cluster B, ``rotate`` published B's management token into a profile with ``host = "cluster-a..."``,
where influxctl sends it to cluster A (the token exposed there, the profile's users failing), with an
info line that said "published". ``rotator sync`` refused that very write; rotate and bootstrap did not.

The real influxctl-management issuer on the fake influxctl, the real store on a real config.toml, and a
SQLite journal; one test through the CLI for the exit code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.influxctl.profile import InfluxctlProfileStore, connection_target
from rotator.config.policy import load_config
from rotator.core.clock import FakeClock
from rotator.core.contracts import TokenRecord
from rotator.core.engine import Engine
from rotator.core.errors import ConfigError, ConflictError
from rotator.core.journal import RunState, open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from tests.harness import INFLUXCTL

POLICY = "mgmt"
CLUSTERED = 'product = "clustered"\nhost = "cluster-a.test.invalid"\nport = 443'
ACCOUNT, CLUSTER = "00000000-0000-4000-8000-00000000acc1", "00000000-0000-4000-8000-00000000c1a5"
DEDICATED = f'product = "dedicated"\naccount_id = "{ACCOUNT}"\ncluster_id = "{CLUSTER}"'
PROFILE_A = '# the operator\'s\n[[profile]]\n  name = "default"\n  product = "clustered"\n' \
            '  host = "cluster-a.test.invalid"\n'


class Setup:
    """A policy (issuer: ``issuer_profile``) publishing to profile "default" of influxctl/config.toml."""

    def __init__(self, tmp_path: Path, issuer_profile: str, profile_text: str) -> None:
        self.dir = tmp_path
        self.config = tmp_path / "influxctl" / "config.toml"
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(profile_text)
        self.config.chmod(0o600)
        self.policy_file = tmp_path / "rotator.toml"
        self.clock = FakeClock(datetime.now(UTC))
        self.journal: Any = None
        self.point_issuer_at(issuer_profile)

    def point_issuer_at(self, issuer_profile: str) -> None:
        """The operator edits [policy.issuer.profile] (a new engine, on the same journal)."""
        self.policy_file.write_text(f"""
[rotator]
journal = "sqlite:///{self.dir / 'journal.db'}"
[[policy]]
name = "{POLICY}"
schedule = "1h"
grace = "1m"
[policy.issuer]
type = "influxctl-management"
influxctl = {json.dumps(str(INFLUXCTL))}
[policy.issuer.profile]
{issuer_profile}
[[policy.store]]
type = "influxctl-profile"
name = "profile"
config = "influxctl/config.toml"
profile = "default"
""")
        config = load_config(self.policy_file)
        if self.journal is None:
            self.journal = open_journal(config.journal_url())
        self.engine = Engine(config.policies[0], self.journal, clock=self.clock, retry=RetryPolicy(1, 0.01, 0.02))

    def bootstrap(self, fake: Any) -> str:
        value, token_id = fake.state.add_token("created by a human for bootstrap")
        self.engine.bootstrap(Secret(value), token_id, None)
        return token_id

    def rotate(self) -> Any:
        self.clock.advance(timedelta(hours=2))
        return self.engine.rotate()

    def mgmt_token(self) -> str | None:
        return next(p for p in tomllib.loads(self.config.read_text())["profile"] if p["name"] == "default").get(
            "mgmt_token")


def _refused_before_minting(setup: Setup, fake: Any, call: Any) -> ConfigError:
    """``call`` raises ConfigError, and nothing happened: no token minted, the profile's bytes as they
    were, no run journaled."""
    tokens, text = fake.state.tokens(), setup.config.read_bytes()
    runs = setup.journal.runs(POLICY)
    with pytest.raises(ConfigError) as info:
        call()
    assert fake.state.tokens() == tokens, "a token was minted"
    assert setup.config.read_bytes() == text
    assert setup.journal.runs(POLICY) == runs
    return info.value


@pytest.mark.parametrize(
    ("move", "store_says", "issuer_says"),
    [
        ("issuer", "clustered cluster-a.test.invalid:443", "clustered cluster-b.test.invalid:443"),
        ("profile host", "clustered cluster-b.test.invalid:443", "clustered cluster-a.test.invalid:443"),
        ("profile port", "clustered cluster-a.test.invalid:8443", "clustered cluster-a.test.invalid:443"),
    ],
)
def test_a_profile_of_another_cluster_is_refused_before_the_mint(
    tmp_path: Path, fake_influxctl: Any, move: str, store_says: str, issuer_says: str
) -> None:
    setup = Setup(tmp_path, CLUSTERED, PROFILE_A)
    setup.bootstrap(fake_influxctl)
    assert setup.rotate().ok
    if move == "issuer":  # the reviewer's reproduction: the policy's issuer pointed at cluster B
        setup.point_issuer_at(CLUSTERED.replace("cluster-a", "cluster-b"))
    elif move == "profile host":
        setup.config.write_text(setup.config.read_text().replace("cluster-a", "cluster-b"))
    else:
        setup.config.write_text(setup.config.read_text() + '  port = "8443"\n')
    error = _refused_before_minting(setup, fake_influxctl, setup.rotate)
    message = str(error)
    assert f"store 'profile' (influxctl-profile:{setup.config}#default) sends the token to {store_says}" in message
    assert f"issuer (influxctl-management) mints at {issuer_says}" in message and "nothing was minted" in message
    assert error.hint is not None and "another profile" in error.hint
    # The dry run says so too, and so does a bootstrap (the repair path included): before it writes.
    _refused_before_minting(setup, fake_influxctl, lambda: setup.engine.rotate(dry_run=True))
    value, token_id = fake_influxctl.state.add_token("a human's replacement")
    _refused_before_minting(
        setup, fake_influxctl,
        lambda: setup.engine.bootstrap(Secret(value), token_id, None, replace=True, reason="test"))


@pytest.mark.parametrize(
    "profile",
    [
        '  product = "clustered"\n  host = "Cluster-A.Test.Invalid."\n',
        '  product = "clustered"\n  host = "cluster-a.test.invalid"\n  port = "443"\n',
        '  product = "clustered"\n  host = " cluster-a.test.invalid "\n  port = 443\n',
    ],
    ids=["case-and-trailing-dot", "explicit-port-string", "spaces-and-port-integer"],
)
def test_the_same_cluster_spelled_otherwise_rotates(tmp_path: Path, fake_influxctl: Any, profile: str) -> None:
    setup = Setup(tmp_path, CLUSTERED.replace("port = 443", ""), f'[[profile]]\n  name = "default"\n{profile}')
    first = setup.bootstrap(fake_influxctl)
    result = setup.rotate()
    assert result.ok and result.old_token_id == first
    assert _store(setup.config).read_current().token_id == result.new_token_id


@pytest.mark.parametrize(
    "profile",
    ['  product = "clustered"\n', "", '  product = "dedicated"\n  account_id = "x"\n'],
    ids=["no-host", "no-product", "dedicated-without-cluster-id"],
)
def test_a_profile_that_names_no_cluster_yet_is_written(tmp_path: Path, fake_influxctl: Any, profile: str) -> None:
    """The first publish into a profile still being set up: nothing to compare, so nothing refused."""
    setup = Setup(tmp_path, CLUSTERED, f'[[profile]]\n  name = "default"\n{profile}')
    first = setup.bootstrap(fake_influxctl)
    assert setup.mgmt_token() is not None
    result = setup.rotate()
    assert result.ok and result.old_token_id == first


def test_a_dedicated_profile_of_another_cluster_is_refused(tmp_path: Path, fake_influxctl: Any) -> None:
    profile = f'[[profile]]\n  name = "default"\n  product = "dedicated"\n  account_id = "{ACCOUNT.upper()}"\n' \
              f'  cluster_id = "{CLUSTER}"\n  host = "query.test.invalid"\n'  # fmt: skip
    setup = Setup(tmp_path, DEDICATED, profile)
    setup.bootstrap(fake_influxctl)  # the ids alike without regard to case; the query host is no part of it
    assert setup.rotate().ok
    other = CLUSTER.replace("c1a5", "c1a6")
    setup.config.write_text(setup.config.read_text().replace(CLUSTER, other))
    message = str(_refused_before_minting(setup, fake_influxctl, setup.rotate))
    assert f"sends the token to dedicated {ACCOUNT}/{other}, but" in message
    assert f"mints at dedicated {ACCOUNT}/{CLUSTER}:" in message
    # A Clustered profile for a Dedicated issuer: another place too.
    setup.config.write_text(PROFILE_A)
    _refused_before_minting(setup, fake_influxctl, setup.rotate)


def test_rotate_through_the_cli_exits_2_and_names_the_fix(tmp_path: Path, fake_influxctl: Any) -> None:
    setup = Setup(tmp_path, CLUSTERED, PROFILE_A)
    setup.bootstrap(fake_influxctl)
    setup.journal.close()
    setup.policy_file.write_text(setup.policy_file.read_text().replace("cluster-a", "cluster-b"))
    tokens, text = fake_influxctl.state.tokens(), setup.config.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "-c", str(setup.policy_file), "rotate", POLICY],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "sends the token to clustered cluster-a.test.invalid:443" in proc.stderr
    assert "mints at clustered cluster-b.test.invalid:443" in proc.stderr and "fix: point the store" in proc.stderr
    assert "published token" not in proc.stderr
    assert fake_influxctl.state.tokens() == tokens and setup.config.read_bytes() == text


# ------------------------------------------------------------------------------ the store's answer


def _store(config: Path, key: str = "mgmt_token") -> InfluxctlProfileStore:
    from rotator.adapters.influxctl.profile import InfluxctlProfileSettings
    from rotator.core.contracts import AdapterContext

    settings = InfluxctlProfileSettings.model_validate({"config": config, "profile": "default", "key": key})
    return InfluxctlProfileStore.from_config(settings, AdapterContext(policy=POLICY, base_dir=config.parent))


def test_target_answers_from_the_last_read(tmp_path: Path) -> None:
    """PLAN reads the file once: target() answers from that read, not from another (the steady rotation
    stays one read of the file), and reads the file itself only before any read."""
    config = tmp_path / "config.toml"
    config.write_text(PROFILE_A)
    store = _store(config)
    assert store.target() == "clustered cluster-a.test.invalid:443"  # no read yet: read now
    store.read_current()
    config.write_text(PROFILE_A.replace("cluster-a", "cluster-b"))
    assert store.target() == "clustered cluster-a.test.invalid:443"  # what the read saw
    store.read_current()
    assert store.target() == "clustered cluster-b.test.invalid:443"
    config.write_text("not toml [")
    with pytest.raises(ConfigError):
        store.read_current()
    with pytest.raises(ConfigError):  # a failed read leaves no answer of the file before it
        store.target()


def test_a_token_store_names_no_target(tmp_path: Path) -> None:
    """``token`` holds a database token of any issuer (influxdb3's target is ``<host>:<port>``): not compared."""
    config = tmp_path / "config.toml"
    config.write_text(PROFILE_A)
    store = _store(config, key="token")
    store.read_current()
    assert store.target() is None


@pytest.mark.parametrize(
    ("connection", "target"),
    [
        ({"product": "clustered", "host": "[::1]", "port": "8086"}, "clustered [::1]:8086"),
        ({"product": "clustered", "host": "h.test", "port": ""}, "clustered h.test:443"),
        ({"product": "clustered", "host": "h.test", "port": "https"}, "clustered h.test:https"),
        ({"product": "clustered", "host": ""}, None),
        ({"product": "dedicated", "account_id": " A ", "cluster_id": "B", "host": "x"}, "dedicated a/b"),
        ({"product": "serverless", "host": "h.test"}, None),
        ({"host": "h.test"}, None),
    ],
)
def test_connection_target(connection: dict[str, Any], target: str | None) -> None:
    assert connection_target(connection) == target


# ------------------------------------------------------------------------------ moved between read and publish
# The compare-and-set version covers the profile's value only: a profile pointed at another cluster after
# PLAN's read (while the run minted and verified) was written, and influxctl sent the token to the other one.


def _record(value: str = "newtoken-of-A", token_id: str = "tok-1") -> TokenRecord:
    return TokenRecord(Secret(value), token_id, "influxctl-management", POLICY, datetime.now(UTC), None)


def _sidecar_bytes(config: Path) -> bytes | None:
    sidecar = config.with_name(config.name + ".rotator.json")
    return sidecar.read_bytes() if sidecar.exists() else None


@pytest.mark.parametrize(
    ("before", "after", "was", "now"),
    [
        (PROFILE_A, PROFILE_A.replace("cluster-a", "cluster-b"),
         "clustered cluster-a.test.invalid:443", "clustered cluster-b.test.invalid:443"),
        (PROFILE_A, PROFILE_A + '  port = "8443"\n',
         "clustered cluster-a.test.invalid:443", "clustered cluster-a.test.invalid:8443"),
        (f'[[profile]]\n  name = "default"\n{DEDICATED}\n',
         f'[[profile]]\n  name = "default"\n{DEDICATED.replace("c1a5", "c1a6")}\n',
         f"dedicated {ACCOUNT}/{CLUSTER}", f"dedicated {ACCOUNT}/{CLUSTER.replace('c1a5', 'c1a6')}"),
        (PROFILE_A, '[[profile]]\n  name = "default"\n  product = "clustered"\n',
         "clustered cluster-a.test.invalid:443", "no cluster rotator can name (product = 'clustered')"),
    ],
    ids=["host", "port", "dedicated-cluster-id", "host-removed"],
)
def test_publish_refuses_a_profile_moved_since_the_read(
    tmp_path: Path, before: str, after: str, was: str, now: str
) -> None:
    """The reviewer's probe: read_current sees A, the file is edited to B, publish (with the version that
    read saw: the value did not change) raises ConflictError and writes nothing."""
    config = tmp_path / "config.toml"
    config.write_text(before)
    config.chmod(0o600)
    store = _store(config)
    state = store.read_current()
    config.write_text(after)
    text, sidecar = config.read_bytes(), _sidecar_bytes(config)
    with pytest.raises(ConflictError) as info:
        store.publish(_record(), state.version)
    message = str(info.value)
    assert f"{config}#default: profile 'default' of {config} now sends its tokens to {now}, and sent them " \
           f"to {was} when rotator read it; nothing was written" in message  # fmt: skip
    assert info.value.hint is not None and "point the policy's issuer at that cluster" in info.value.hint
    assert "newtoken-of-A" not in message
    assert config.read_bytes() == text and _sidecar_bytes(config) == sidecar
    # Read again (the next run's PLAN): that read is the store's answer now, and the publish goes ahead.
    state = store.read_current()
    assert store.publish(_record(), state.version)
    assert "newtoken-of-A" in config.read_text()


def test_publish_into_the_same_cluster_spelled_otherwise_or_elsewhere_in_the_file(tmp_path: Path) -> None:
    """Not a move: the cluster respelled (as the engine compares it), another profile moved, a fresh store."""
    config = tmp_path / "config.toml"
    other = '[[profile]]\n  name = "other"\n  product = "clustered"\n  host = "x.test.invalid"\n'
    config.write_text(PROFILE_A + other)
    config.chmod(0o600)
    store = _store(config)
    state = store.read_current()
    config.write_text(PROFILE_A.replace("cluster-a.test.invalid", "Cluster-A.Test.Invalid.") + '  port = 443\n'
                      + other.replace("x.test", "y.test"))  # fmt: skip
    version = store.publish(_record(), state.version)
    assert "newtoken-of-A" in config.read_text()
    # No read by this store object yet (recovery builds fresh stores): nothing compared, as before.
    config.write_text(config.read_text().replace("Cluster-A", "cluster-b"))
    assert _store(config).publish(_record("newtoken-2", "tok-2"), version)
    assert "newtoken-2" in config.read_text()


def test_a_publish_whose_answer_was_lost_completes(tmp_path: Path) -> None:
    """The engine's retry of a publish that landed: the same record at the version PLAN read."""
    config = tmp_path / "config.toml"
    config.write_text(PROFILE_A)
    config.chmod(0o600)
    store = _store(config)
    planned = store.read_current().version
    version = store.publish(_record(), planned)
    text = config.read_bytes()
    assert store.publish(_record(), planned) == version
    assert config.read_bytes() == text


def test_only_the_token_line_changed_is_the_compare_and_set_conflict(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(PROFILE_A + '  mgmt_token = "by-hand-1"\n')
    config.chmod(0o600)
    store = _store(config)
    state = store.read_current()
    config.write_text(PROFILE_A + '  mgmt_token = "by-hand-2"\n')
    text = config.read_bytes()
    with pytest.raises(ConflictError, match=r"compare-and-set lost: expected version [0-9a-f]{16}, the profile now"):
        store.publish(_record(), state.version)
    assert config.read_bytes() == text and _sidecar_bytes(config) is None


def test_rotate_with_the_profile_moved_before_publish_discards_the_candidate(
    tmp_path: Path, fake_influxctl: Any
) -> None:
    """Through the engine: PLAN reads the profile at A (and compares it with the issuer), the profile is
    pointed at B before the publish. The publish conflicts; the run discards its candidate (revoked at the
    issuer), the profile keeps the previous token and the operator's edit, and the run is closed."""
    setup = Setup(tmp_path, CLUSTERED, PROFILE_A)
    first = setup.bootstrap(fake_influxctl)
    previous = setup.mgmt_token()

    def move_profile(name: str) -> None:
        if name == "publish:profile":
            setup.config.write_text(setup.config.read_text().replace("cluster-a", "cluster-b"))

    engine = Engine(load_config(setup.policy_file).policies[0], setup.journal, clock=setup.clock,
                    retry=RetryPolicy(1, 0.01, 0.02), checkpoint=move_profile)  # fmt: skip
    setup.clock.advance(timedelta(hours=2))
    with pytest.raises(ConflictError, match="now sends its tokens to clustered cluster-b.test.invalid:443"):
        engine.rotate()
    assert setup.mgmt_token() == previous and 'host = "cluster-b.test.invalid"' in setup.config.read_text()
    run = setup.journal.runs(POLICY)[0]
    assert run.state == RunState.FAILED and run.new_token_id is not None
    candidate = fake_influxctl.state.token_by_id(run.new_token_id)
    assert candidate is not None and candidate.get("revoked_at"), "the candidate was left valid"
    assert fake_influxctl.state.token_by_id(first).get("revoked_at") is None  # the previous token stays valid
