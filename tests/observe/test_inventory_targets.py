"""Which cluster an inventory target is, end to end on the fake influxctl and a real OpenBao:

- two policies on one cluster are one target however they spell it (`port = 443` or none, the host's
  case), and what the journal says of one policy's tokens counts on the other's target too
  (`--policy a` must not call b's current token unmanaged, nor offer to adopt it);
- `--suggest` never hands a new policy the influxctl profile another policy publishes to;
- a bare `--influxctl-profile` keeps the profile's `[profile.tls]`.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from rotator.core.errors import ConfigError
from rotator.observe.inventory import influxctl_profile_targets
from rotator.sandbox.influxctl_state import write_profile
from tests.harness import INFLUXCTL, Scenario, make_scenario

POLICY = "mgmt"


def _second_policy(sc: Scenario, name: str, profile_table: str) -> None:
    """Append policy ``name``: the same cluster as the scenario's, its own Vault path."""
    text = sc.config.read_text()
    issuer = text[text.index("[policy.issuer]"):text.index("[policy.issuer.profile]")]
    with sc.config.open("a") as fh:
        fh.write(f'\n[[policy]]\nname = "{name}"\nschedule = "1h"\ngrace = "1h"\n{issuer}'
                 f"[policy.issuer.profile]\n{profile_table}\n"
                 + sc.vault_store_toml(path=f"{sc.kv_path}-{name}"))


def _tokens(sc: Scenario, *args: str) -> dict[str, dict[str, Any]]:
    proc = sc.cli("inventory", "--output", "json", *args)
    assert proc.returncode == 0, proc.stderr
    return {t["token_id"]: t for t in json.loads(proc.stdout)["tokens"]}


# ---------------------------------------------------------------------------------- item 5: one cluster, one target
@pytest.mark.parametrize("spelling", ["port 443 left out", "host in capitals"])
def test_policies_on_one_cluster_see_each_other_s_tokens_however_they_spell_it(tmp_path, openbao, fake_influxctl,
                                                                              spelling):
    """b's bootstrapped current token showed `unmanaged` (and --suggest offered to adopt it) whenever b
    landed in another target than mgmt: `--policy mgmt`, or b's profile spelt otherwise."""
    fake = fake_influxctl.state
    sc = make_scenario(tmp_path, openbao, fake, grace_s=3600)
    assert sc.cli("rotate", POLICY).returncode == 0
    profile = ('product = "clustered"\nhost = "cluster.test.invalid"\n' if spelling == "port 443 left out" else
               'product = "clustered"\nhost = "Cluster.TEST.invalid"\nport = 443\n')
    _second_policy(sc, "b", profile)
    value, b_token = fake.add_token("b's first token, made by a person")
    sc.bootstrap_with(value, b_token, policy="b", file="b-token")
    everything = _tokens(sc)
    assert {t["issuer"] for t in everything.values()} == {f"influxctl-management:b,{POLICY}"}, "one target"
    for tokens in (everything, _tokens(sc, "--policy", POLICY)):
        assert (tokens[b_token]["class"], tokens[b_token]["policy"]) == ("managed", "b")
        assert tokens[b_token]["reason"] == "current token"
        assert tokens[sc.current()["token_id"]]["class"] == "managed"
    suggest = sc.cli("inventory", "--policy", POLICY, "--suggest")
    assert suggest.returncode == 0, suggest.stderr
    assert f"--token-id {b_token}" not in suggest.stdout, "b's current token is not offered for adoption"
    sc.assert_no_leak([value])


def test_a_tag_of_another_policy_on_the_same_cluster_is_confirmed_with_policy_filter(tmp_path, openbao,
                                                                                     fake_influxctl):
    """`--policy mgmt` lists b's cluster too (the same one): a token tagged by b's published run is b's
    current token, not "a policy that does not use this issuer"."""
    fake = fake_influxctl.state
    sc = make_scenario(tmp_path, openbao, fake, grace_s=3600)
    _second_policy(sc, "b", 'product = "clustered"\nhost = "cluster.test.invalid"\n')
    value, b_token = fake.add_token("b's first token, made by a person")
    sc.bootstrap_with(value, b_token, policy="b", file="b-token")
    assert sc.cli("rotate", "b").returncode == 0
    (b_current,) = [r[0] for r in sc.journal_rows(
        "SELECT new_token_id FROM runs WHERE policy = 'b' AND kind = 'rotate'")]
    token = _tokens(sc, "--policy", POLICY)[b_current]
    assert (token["class"], token["policy"], token["reason"]) == ("managed", "b", "current token")


# ---------------------------------------------------------------------------------- item 6: --suggest and profiles
def test_a_suggested_policy_never_publishes_to_another_policy_s_influxctl_profile(tmp_path, openbao, fake_influxctl):
    """The suggestion copied the source policy's influxctl-profile store as it was: `rotator validate`
    passed, and `rotator bootstrap` met "two policies must not share a secret" with a hint to adopt,
    which would have written the new token over the source policy's mgmt_token."""
    fake = fake_influxctl.state
    (tmp_path / "influxctl").mkdir()
    config = write_profile(tmp_path / "influxctl" / "config.toml", host="cluster.test.invalid")
    store = ('\n[[policy.store]]\ntype = "influxctl-profile"\nname = "profile"\nconfig = "influxctl/config.toml"\n'
             'profile = "default"\n')
    sc = make_scenario(tmp_path, openbao, fake, grace_s=3600, extra_stores=store)
    assert sc.cli("rotate", POLICY).returncode == 0
    current_value = sc.current()["token"]
    value, token_id = fake.add_token("grafana automation")
    proc = sc.cli("inventory", "--suggest")
    assert proc.returncode == 0, proc.stderr
    block = proc.stdout[proc.stdout.index("# Brings token "):]
    suggested = tomllib.loads(block)["policy"][0]
    name = suggested["name"]
    (profile_store,) = [s for s in suggested["store"] if s["type"] == "influxctl-profile"]
    assert profile_store["profile"] == name != "default"
    assert f'# CHANGE: add a [[profile]] named "{name}" to influxctl/config.toml' in block
    with sc.config.open("a") as fh:
        fh.write("\n" + block)
    assert sc.cli("validate").returncode == 0
    token_file = tmp_path / "grafana-token"
    token_file.write_text(value)

    def profiles() -> dict[str, Any]:
        return {p["name"]: p for p in tomllib.loads(config.read_text())["profile"]}

    # As printed, bootstrap stops (no such profile) before writing anything anywhere.
    refused = sc.cli("bootstrap", name, "--token-file", str(token_file), "--token-id", token_id)
    assert refused.returncode == 2, refused.stderr
    assert f"no [[profile]] named {name!r}" in refused.stderr
    assert profiles()["default"]["mgmt_token"] == current_value
    # Done as the comment says: the new policy publishes to its own profile; the source's is untouched.
    write_profile(config, name=name, host="cluster.test.invalid", append=True)
    boot = sc.cli("bootstrap", name, "--token-file", str(token_file), "--token-id", token_id)
    token_file.unlink()
    assert boot.returncode == 0, boot.stderr
    assert profiles()["default"]["mgmt_token"] == current_value
    assert profiles()[name]["mgmt_token"] == value
    sc.assert_no_leak([value])


# ---------------------------------------------------------------------------------- item 10: [profile.tls]
def _dumping_influxctl(tmp_path: Path) -> tuple[Path, Path]:
    """The fake influxctl behind a wrapper that keeps a copy of the config file rotator hands it."""
    dump = tmp_path / "config-seen.toml"
    wrapper = tmp_path / "influxctl-dump"
    wrapper.write_text(f'#!/bin/sh\n[ "$1" = "--config" ] && cp "$2" {dump}\nexec {INFLUXCTL} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, dump


TLS_PROFILE = """[[profile]]
name = "prod"
product = "clustered"
host = "cluster.test.invalid"
port = "443"
mgmt_token = "{value}"
{tls}
"""


def test_a_bare_influxctl_profile_keeps_its_tls_settings(tmp_path, fake_influxctl):
    """influxctl was run with the profile rebuilt from product/host/port/account/cluster only: a private
    CA or a client certificate of [profile.tls] was dropped."""
    from rotator.runners.cli import main

    value, _ = fake_influxctl.state.add_token("a person's admin token")
    ca, cert, key = (tmp_path / n for n in ("private-ca.pem", "client.pem", "client.key"))
    path = tmp_path / "config.toml"
    path.write_text(TLS_PROFILE.format(value=value, tls=f'[profile.tls]\nca = "{ca}"\ncert = "{cert}"\nkey = "{key}"'))
    wrapper, dump = _dumping_influxctl(tmp_path)
    assert main(["inventory", "--no-policies", "--output", "json", "--influxctl-profile", f"{path}:prod",
                 "--influxctl", str(wrapper)]) == 0
    seen = tomllib.loads(dump.read_text())
    dump.unlink()  # (it holds the token value: the test's, not rotator's, copy)
    (profile,) = seen["profile"]
    assert profile["tls"] == {"ca": str(ca), "cert": str(cert), "key": str(key)}


@pytest.mark.parametrize(("tls", "words"), [
    ('tls = "yes"', "`tls` is not a table"),
    ('[profile.tls]\nverify = false', "`tls.verify`"),
    ('[profile.tls]\ninsecure = "maybe"', "`tls.insecure`"),
])
def test_a_malformed_tls_table_is_a_config_error_naming_it(tmp_path, tls, words):
    path = tmp_path / "config.toml"
    value = "M.V1." + "A" * 40
    path.write_text(TLS_PROFILE.format(value=value, tls=tls))
    with pytest.raises(ConfigError) as caught:
        influxctl_profile_targets(f"{path}:prod", None, str(INFLUXCTL))
    text = f"{caught.value} {caught.value.hint}"
    assert words in text and f"--influxctl-profile {path}, profile 'prod'" in text
    assert value not in text


# ---------------------------------------------------------------------------------- database tokens of a bare profile
@pytest.mark.parametrize("product", ["clustered", "dedicated"])
def test_a_bare_influxctl_profile_with_a_token_file_lists_its_database_tokens_too(tmp_path, fake_influxctl, capsys,
                                                                                   product):
    """`--influxctl-profile FILE --token-file F` always exited 2: the list-only settings of the database
    tokens' issuer named no database to verify, so validation refused them (and blamed the profile);
    and a Cloud Dedicated profile without `host` was refused, though listing, a management command,
    never uses it. A policy's settings are still checked for both (tests/adapters/test_influxctl_database.py)."""
    from rotator.runners.cli import main

    fake = fake_influxctl.state
    value, mgmt_id = fake.add_token("a person's management token")
    db_value, db_id = fake.add_db_token("dashboards", {"read": ["db1"]})
    token_file = tmp_path / "mgmt-token"
    token_file.write_text(value + "\n")
    # (write_profile gives a dedicated profile account_id and cluster_id, and no host)
    path = write_profile(tmp_path / "config.toml", product=product, host="cluster.test.invalid",
                         account_id=fake.account_id, cluster_id=fake.cluster_id)
    assert ("host" in tomllib.loads(path.read_text())["profile"][0]) is (product == "clustered")
    code = main(["inventory", "--no-policies", "--output", "json", "--influxctl-profile", str(path),
                 "--token-file", str(token_file), "--influxctl", str(INFLUXCTL)])
    out = capsys.readouterr()
    assert code == 0, out.err
    tokens = {t["token_id"]: t for t in json.loads(out.out)["tokens"]}
    assert (tokens[mgmt_id]["issuer"], tokens[mgmt_id]["class"]) == (f"influxctl-management:{path}:default",
                                                                     "unmanaged")
    assert (tokens[db_id]["issuer"], tokens[db_id]["class"]) == (f"influxctl-database:{path}:default", "unmanaged")
    assert value not in out.out + out.err and db_value not in out.out + out.err
