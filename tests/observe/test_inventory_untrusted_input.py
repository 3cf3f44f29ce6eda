"""`rotator inventory` against what others write: token values pasted into descriptions and names,
tags in the AWS Lambda function's form, a tag copied onto a token while its run is open, credentials
in a --url, a mistyped -c, a malformed influxctl config, and --suggest next to machine output.

Invariant 4 (no token value is ever printed) holds for values this process never held, and rotator
trusts its own journal, never a description: a tag is a claim, at best ``suspicious``.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.contracts import TokenInfo
from rotator.core.errors import ConfigError
from rotator.core.journal import RunRecord, RunState, open_journal
from rotator.observe.inventory import (
    MANAGED,
    SUSPICIOUS,
    UNMANAGED,
    Target,
    influxctl_profile_targets,
    suggest_policy,
    take_inventory,
    url_target,
)
from tests.harness import INFLUXCTL, offline_policy

#: Shaped as the issuers make them: a Clustered management token, an InfluxDB 3 token.
MGMT_VALUE = "M.V1." + secrets.token_urlsafe(32).replace("-", "+").replace("_", "/")
APIV3_VALUE = "apiv3_" + secrets.token_urlsafe(64)
LAMBDA_RUN = "89b8fe5a-65bd-48cd-9f60-45fa3c143a66"  # a ClientRequestToken, as Secrets Manager makes it


class _Lister:
    def __init__(self, tokens: list[TokenInfo]) -> None:
        self.tokens = tokens

    def list_tokens(self, credential: Any) -> list[TokenInfo]:
        return self.tokens


def _inventory(tmp_path: Path, tokens: list[TokenInfo], runs: Sequence[RunRecord] = (), *,
               journal: bool = True) -> tuple[Any, Any]:
    policy = offline_policy(tmp_path, "p")
    j = open_journal(f"sqlite:///{tmp_path / 'j.db'}") if journal else None
    for run in runs:
        assert j is not None
        j.begin_run(run)
    target = Target("influxctl-management:p", "influxctl-management", [(policy, _Lister(tokens), lambda: None)])  # type: ignore[list-item]
    return take_inventory([target], j, [policy], datetime.now(UTC)), policy


def _printed(result: Any, capsys: pytest.CaptureFixture[str]) -> str:
    from rotator.runners.cli import _print_inventory

    out = []
    for output in ("table", "json", "csv"):
        _print_inventory(output, result, datetime.now(UTC))
        out.append(capsys.readouterr().out)
    return "\n".join(out)


def _run(run_id: str, state: str, token: str | None) -> RunRecord:
    now = datetime.now(UTC)
    return RunRecord(run_id=run_id, policy="p", state=state, kind="rotate", started_at=now, updated_at=now,
                     new_token_id=token)


# ---------------------------------------------------------------------------------- values in the issuer's text
@pytest.mark.parametrize("journal", [True, False], ids=["with-journal", "bare"])
def test_token_values_in_descriptions_and_names_are_masked_in_every_output(tmp_path, capsys, journal):
    """REDACTOR masks only the values this process holds: a person's note "backup of grafana token:
    M.V1...." or an InfluxDB 3 token named after a value showed the value in the table, the CSV, the
    JSON and the --suggest block."""
    tokens = [
        TokenInfo("b8d878d1-dbea-4c8d-986e-b245469e4d5e", f"backup of grafana token: {MGMT_VALUE}"),
        TokenInfo(APIV3_VALUE, "an InfluxDB 3 token whose name is a value"),
        TokenInfo("t-tagged", f"rotator:p:0123abcd0123abcd copied from {APIV3_VALUE}"),
    ]
    result, _ = _inventory(tmp_path, tokens, journal=journal)
    assert len(result.entries) == 3
    text = _printed(result, capsys)
    text += "".join(suggest_policy(e, None, None, ["p"]) for e in result.entries if e.cls == UNMANAGED)
    text += repr(result.entries)
    assert MGMT_VALUE not in text and APIV3_VALUE not in text
    assert MGMT_VALUE[:12] not in text and APIV3_VALUE[:12] not in text, "no part of a value either"
    by_desc = {e.description: e for e in result.entries}
    assert "backup of grafana token: ***" in by_desc
    named = by_desc["an InfluxDB 3 token whose name is a value"]
    assert named.token_id == "***"
    assert named.listed_id == APIV3_VALUE, "the issuer's id is kept (not shown) to find the token again"
    assert "copied from ***" in json.loads(json.dumps([e.to_json() for e in result.entries]))[2]["description"]
    # The tag beside the pasted value still counts as the claim it is.
    assert by_desc["rotator:p:0123abcd0123abcd copied from ***"].cls == SUSPICIOUS


def test_a_suggestion_built_from_an_entry_masks_its_text_itself():
    """suggest_policy is public: an Entry built elsewhere than take_inventory is masked too, in the
    comment, the policy name and the bootstrap command."""
    from rotator.observe.inventory import Entry

    entry = Entry("influxdb3:https://influx.example:8181", "influxdb3", APIV3_VALUE, f"grafana {MGMT_VALUE}",
                  "active", UNMANAGED, (), "no rotator tag, unknown to the journal")
    text = suggest_policy(entry, None, None, [])
    assert MGMT_VALUE not in text and APIV3_VALUE not in text
    assert 'name = "adopt-grafana"' in text
    assert "--token-id '***'" in text and "copy it from the issuer's own listing" in text


def _v2_values() -> list[str]:
    """InfluxDB v2 tokens as InfluxDB 2 makes them (64 random bytes, standard base64), each with a + or
    / early on, and one of letters and digits only."""
    values = [secrets.token_hex(43) + "=="]
    while len(values) < 21:
        value = base64.b64encode(os.urandom(64)).decode()
        if any(c in value[:64] for c in "+/"):
            values.append(value)
    return values


def test_a_token_value_after_a_tag_is_no_run_id(tmp_path, capsys):
    """An InfluxDB v2 token (86 characters and ``==``) pasted after ``rotator:p:`` was read as a run id
    and shown in the run_id column: a run id is at most 64 characters. A value in standard base64 has a
    + or / early on: what came before it was a run id, printed unmasked in the run_id column and the
    reason, and the token counted as suspicious. Neither, with or without a journal."""
    values = _v2_values()
    tokens = [TokenInfo(f"t-v2-{i}", f"backup rotator:p:{v2}") for i, v2 in enumerate(values)]
    # a real tag stays one whatever follows it
    tokens.append(TokenInfo("t-tag", "rotator:p:0123abcd0123abcd/x"))
    for journal in (True, False):
        (tmp_path / str(journal)).mkdir()
        result, _ = _inventory(tmp_path / str(journal), tokens, journal=journal)
        got = {e.token_id: e for e in result.entries}
        for i in range(len(values)):
            assert got[f"t-v2-{i}"].cls == UNMANAGED and got[f"t-v2-{i}"].run_id is None
            assert got[f"t-v2-{i}"].description == "backup rotator:p:***"
        assert got["t-tag"].cls == SUSPICIOUS and got["t-tag"].run_id == "0123abcd0123abcd"
        printed = _printed(result, capsys)
        assert [v2[:8] for v2 in values if v2[:8] in printed] == []


def test_a_token_value_after_a_tag_does_not_choose_the_listing_s_description(tmp_path):
    """Listed through two policies, a token keeps the description that carries a tag: a v2 value pasted
    after ``rotator:p:`` is no tag, so it does not win over the other listing's."""
    v2 = _v2_values()[1]
    p, q = offline_policy(tmp_path, "p"), offline_policy(tmp_path, "q")
    listers = [(p, _Lister([TokenInfo("t", "ci token")]), lambda: None),
               (q, _Lister([TokenInfo("t", f"rotator:p:{v2}")]), lambda: None)]
    target = Target("influxctl-management:p,q", "influxctl-management", listers)  # type: ignore[arg-type]
    result = take_inventory([target], None, [p, q], datetime.now(UTC))
    assert [e.description for e in result.entries] == ["ci token"]


# ---------------------------------------------------------------------------------- tags of the AWS Lambda function
def test_a_lambda_rotation_s_tag_is_a_claim_this_journal_cannot_confirm(tmp_path, capsys):
    """The Lambda tags rotator:<policy>:<ClientRequestToken>, a UUID: the tag pattern took only letters
    and digits, so the token was "unmanaged, no rotator tag" and --suggest offered to adopt it. It is
    rotator-tagged, and the Lambda keeps no journal: suspicious, never managed, never an orphan."""
    now = datetime.now(UTC)
    tokens = [TokenInfo("t-lambda", f"rotator:p:{LAMBDA_RUN}"),
              TokenInfo("t-lambda-old", f"rotator:p:{LAMBDA_RUN}", expires_at=now - timedelta(days=1)),
              TokenInfo("t-hyphen", "rotator:p:ab-cd")]  # neither form: no tag
    result, _ = _inventory(tmp_path, tokens)
    got = {e.token_id: e for e in result.entries}
    assert got["t-lambda"].cls == SUSPICIOUS
    assert got["t-lambda"].run_id == LAMBDA_RUN and got["t-lambda"].policy == "p"
    assert "AWS Lambda" in got["t-lambda"].reason and got["t-lambda"].sweep is None
    assert got["t-lambda-old"].cls == "retired"
    assert got["t-hyphen"].cls == UNMANAGED
    (tmp_path / "bare").mkdir()
    bare, _ = _inventory(tmp_path / "bare", tokens[:1], journal=False)
    assert bare.entries[0].cls == SUSPICIOUS and bare.entries[0].run_id == LAMBDA_RUN


def test_suggest_does_not_offer_to_adopt_a_lambda_rotated_token(tmp_path, fake_influxctl, capsys):
    """End to end, bare profile (no journal): the Lambda's token is suspicious, not unmanaged, so no
    [[policy]] block is printed for it."""
    from rotator.runners.cli import main
    from rotator.sandbox.influxctl_state import write_profile

    value, _ = fake_influxctl.state.add_token("ci pipeline token")
    fake_influxctl.state.add_token(f"rotator:app:{LAMBDA_RUN}")
    profile = write_profile(tmp_path / "ictl.toml", mgmt_token=value, host="cluster.test.invalid")
    code = main(["inventory", "--no-policies", "--suggest", "--influxctl-profile", str(profile),
                 "--influxctl", str(INFLUXCTL)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("# Brings token ") == 1 and "(ci pipeline token)" in out
    assert f"rotator:app:{LAMBDA_RUN}" in next(line for line in out.splitlines() if "orphan?" in line)
    assert value not in out


# ---------------------------------------------------------------------------------- a tag while its run is open
def test_a_run_s_tag_vouches_only_until_the_journal_names_its_candidate(tmp_path):
    """While a run is open, any token with its tag counted as managed, even when the journal records the
    run's candidate (another token): a copy of the tag, or a retried mint's leftover, hid as managed."""
    runs = [_run("mint0001", RunState.MINTING, None), _run("cand0001", RunState.MINTED, "t-candidate"),
            _run("verf0001", RunState.VERIFIED, "t-verified")]
    tokens = [TokenInfo("t-minting", "rotator:p:mint0001"),  # a mint whose answer is not journaled yet
              TokenInfo("t-candidate", "rotator:p:cand0001"),
              TokenInfo("t-copy", "rotator:p:cand0001"),
              TokenInfo("t-verified", "rotator:p:verf0001"),
              TokenInfo("t-other", "rotator:p:verf0001")]
    result, _ = _inventory(tmp_path, tokens, runs)
    got = {e.token_id: e for e in result.entries}
    assert got["t-minting"].cls == MANAGED
    assert got["t-candidate"].cls == MANAGED and got["t-verified"].cls == MANAGED
    for other, candidate in (("t-copy", "t-candidate"), ("t-other", "t-verified")):
        assert got[other].cls == SUSPICIOUS, other
        assert got[other].sweep is None, "never revoked while its run may still act"
        assert f"whose candidate is {candidate}, not this token" in got[other].reason


# ---------------------------------------------------------------------------------- bad input
def test_credentials_in_a_url_are_not_echoed_and_the_flag_is_named(tmp_path):
    """pydantic's message quotes its input: the --url's password (or ?token=) was printed."""
    token_file = tmp_path / "t"
    token_file.write_text("x")
    cases = [("https://admin:hunter2@host:8086", "influxdb2", "hunter2"),
             (f"https://host:8181/?token={APIV3_VALUE}", "influxdb3", APIV3_VALUE),
             ("https://admin:hunter2@host:8086", "management-api", "hunter2")]
    for url, kind, secret in cases:
        with pytest.raises(ConfigError) as caught:
            url_target(url, kind, str(token_file), org_id="0123456789abcdef")
        text = f"{caught.value} {caught.value.hint}"
        assert secret not in text, kind
        assert "input_value" not in text and "errors.pydantic.dev" not in text
        assert "--url:" in str(caught.value) and "--token-file" in (caught.value.hint or "")
        assert "command-line flags" not in text


def test_credentials_in_a_url_end_the_command_with_exit_2(tmp_path, capsys):
    from rotator.runners.cli import main

    token_file = tmp_path / "t"
    token_file.write_text("x")
    code = main(["inventory", "--no-policies", "--url", "https://admin:hunter2@host:8086", "--kind", "influxdb2",
                 "--org-id", "0123456789abcdef", "--token-file", str(token_file)])
    captured = capsys.readouterr()
    assert code == 2
    assert "hunter2" not in captured.err + captured.out
    assert "rotator: error: inventory target influxdb2: --url:" in captured.err


@pytest.mark.parametrize(("body", "key"), [
    ('port = "abc"', "port"),
    ("port = 1e3", "port"),
    ("port = true", "port"),
    ("port = 99999999", "port"),  # valid TOML and a whole number: the issuer's check, named as the file's
    ('auth = "oops"', "auth"),
    ('[profile.auth]\ntoken = "oops"', "auth.token"),
    ("[profile.auth.token]\ntoken_file = 7", "auth.token.token_file"),
    ('host = ""', "host"),
])
def test_a_malformed_influxctl_config_is_a_config_error_naming_file_profile_and_key(tmp_path, capsys, body, key):
    """`port = "abc"` or `auth = "oops"` crashed as an internal error; `port = 99999999` said
    "check the command-line flags" though the value came from the file."""
    from rotator.runners.cli import main

    path = tmp_path / "ictl.toml"
    head = f'[[profile]]\nname = "prod"\nproduct = "clustered"\nhost = "h.invalid"\nmgmt_token = "{MGMT_VALUE}"\n'
    if body.startswith("host"):
        head = head.replace('host = "h.invalid"\n', "")
    path.write_text(head + body + "\n")
    with pytest.raises(ConfigError) as caught:
        influxctl_profile_targets(f"{path}:prod", None, str(INFLUXCTL))
    message, hint = str(caught.value), caught.value.hint or ""
    assert f"--influxctl-profile {path}, profile 'prod'" in message
    assert key.split(".")[-1] in message or key in message
    assert str(path) in hint and "command-line flags" not in hint
    code = main(["inventory", "--no-policies", "--influxctl-profile", f"{path}:prod", "--influxctl", str(INFLUXCTL)])
    err = capsys.readouterr().err
    assert code == 2
    assert "internal error" not in err and "rotator: error: " in err
    assert MGMT_VALUE not in err


def test_a_mistyped_policy_file_is_not_skipped_beside_a_bare_target(tmp_path, fake_influxctl, capsys, monkeypatch):
    """`-c rotatr.toml --influxctl-profile ...` classified every token without the journal and exited 0:
    only the default policy file (./rotator.toml, neither -c nor $ROTATOR_CONFIG) may be absent."""
    from rotator.runners.cli import main
    from rotator.runners.cli_options import CONFIG_ENV
    from rotator.sandbox.influxctl_state import write_profile

    value, _ = fake_influxctl.state.add_token("ci pipeline token")
    profile = write_profile(tmp_path / "ictl.toml", mgmt_token=value, host="cluster.test.invalid")
    bare = ["--influxctl-profile", str(profile), "--influxctl", str(INFLUXCTL)]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert main(["inventory", "-c", "rotatr.toml", *bare]) == 2
    captured = capsys.readouterr()
    assert "cannot read policy file rotatr.toml" in captured.err and captured.out == ""
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "rotatr.toml"))
    assert main(["inventory", *bare]) == 2
    assert "cannot read policy file" in capsys.readouterr().err
    monkeypatch.delenv(CONFIG_ENV)
    assert main(["inventory", *bare]) == 0, "the default ./rotator.toml may be absent: the bare target alone"
    assert "ci pipeline token" in capsys.readouterr().out


@pytest.mark.parametrize("output", ["json", "csv"])
def test_suggest_is_refused_with_machine_output(tmp_path, capsys, output):
    """The TOML was appended to the JSON or CSV on stdout: whatever parsed it broke."""
    from rotator.runners.cli import main

    code = main(["inventory", "-c", str(tmp_path / "absent.toml"), "--output", output, "--suggest"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert f"--suggest prints TOML for a person, which would corrupt --output {output}" in captured.err
    assert "`rotator " in captured.err and "inventory --suggest` (table output)" in captured.err


def test_a_value_in_a_description_is_masked_end_to_end(tmp_path, fake_influxctl, capsys):
    """The reviewer's case through the CLI and the fake influxctl: a person's note holding a live value."""
    from rotator.runners.cli import main
    from rotator.sandbox.influxctl_state import write_profile

    value, _ = fake_influxctl.state.add_token("ci pipeline token")
    fake_influxctl.state.add_token(f"backup of grafana token: {MGMT_VALUE}")
    profile = write_profile(tmp_path / "ictl.toml", mgmt_token=value, host="cluster.test.invalid")
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["inventory", "--no-policies", "--output", "csv", "--influxctl-profile", str(profile),
                     "--influxctl", str(INFLUXCTL)])
    out = capsys.readouterr().out
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert "backup of grafana token: ***" in {r["description"] for r in rows}
    assert MGMT_VALUE not in out and value not in out


def test_revoke_orphans_checks_a_masked_token_by_the_id_the_issuer_lists(tmp_path, monkeypatch):
    """An orphan whose id is token-shaped is shown masked; the outcome check after the sweep must look it
    up by the issuer's id, or a token the sweep left active would be reported "revoked"."""
    from rotator.observe import inventory as inv_mod

    now = datetime.now(UTC)
    active = TokenInfo(APIV3_VALUE, "rotator:p:fail0001", created_at=now)
    listed = [active]
    result, policy = _inventory(tmp_path, listed, [_run("fail0001", RunState.FAILED, None)])
    (orphan,) = result.entries
    assert orphan.cls == "orphan" and orphan.token_id == "***"
    swept: list[list[str]] = []

    class Sweeper:  # the engine's sweep, left out (it claims to revoke what the re-check confirms): only
        # the listing after it matters here
        def __init__(self, policy: Any, journal: Any, **options: Any) -> None:
            self.issuer, self.clock = self, type("Clock", (), {"now": staticmethod(lambda: now)})()

        def sweep_run(self, run: Any, keep: Any, token_ids: list[str],
                      recheck: Any) -> tuple[dict[str, str], list[str]]:  # fmt: skip
            swept.append(token_ids)
            verdicts = recheck([active], now)  # as the issuer listed it before the sweep
            return {}, [t for t in token_ids if verdicts.get(t) is None]

        def list_tokens(self, credential: Any) -> list[TokenInfo]:
            return listed

        def _read_stores(self) -> dict[str, Any]:
            return {}

        def _credential_from(self, states: Any) -> None:
            return None

    monkeypatch.setattr(inv_mod, "_OrphanSweeper", Sweeper)
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    outcomes = inv_mod.revoke_orphans(result, journal, [policy])
    assert swept == [[APIV3_VALUE]], "the journal event names the token the issuer knows"
    assert [o for _, o in outcomes] == ["still active (not found by the run's tag sweep)"]
    listed[0] = TokenInfo(APIV3_VALUE, "rotator:p:fail0001", created_at=now, revoked_at=now)
    assert [o for _, o in inv_mod.revoke_orphans(result, journal, [policy])] == ["revoked"]
