"""Token-shaped text in a person's `--reason` (an emergency rotation, a dismissed revocation, a
bootstrap --replace) and in the notes and errors a report shows: the reason is journaled for good and
shown in every report, so the command refuses it without repeating it, and the report masks what an
older journal still holds."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from rotator.observe import report
from tests.harness import offline_policy
from tests.observe.test_report import _a_failed_revocation

#: token shapes rotator's inventory and policy file already recognise (rotator/config/inline_secrets.py)
TOKENS = {
    "management": "M.V1.eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.c2VjcmV0",
    "database": "apiv1_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA==",
    "vault": "hvs.CAESIJ3kQ0Zm9vYmFyYmF6cXV4",
}

COMMANDS = {
    "rotate": ["rotate", "p", "--revoke-previous-now", "--yes", "--reason"],
    "dismiss": ["revoke-expired", "p", "--dismiss", "tok-1", "--reason"],
    "bootstrap-replace": ["bootstrap", "p", "--token-file", "t", "--token-id", "i", "--replace", "--reason"],
    "bootstrap": ["bootstrap", "p", "--token-file", "t", "--token-id", "i", "--reason"],
}


def _cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    from rotator.runners import cli

    code = cli.main(["-c", str(tmp_path / "absent.toml"), *argv])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("shape", sorted(TOKENS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_reason_holding_a_token_is_refused_and_never_repeated(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, shape: str) -> None:
    """Refused before anything is read or written (the policy file here does not even exist), exit 2."""
    token = TOKENS[shape]
    code, output = _cli(tmp_path, capsys, [*COMMANDS[command], f"pasted by mistake: {token} (incident 7)"])
    assert code == 2, output
    assert "--reason holds text shaped like a token" in output and "name a token by its id" in output
    assert token not in output and token[8:] not in output, "the value is never repeated"


@pytest.mark.parametrize("command", sorted(c for c in COMMANDS if c != "bootstrap"))
def test_a_reason_in_words_goes_past_that_check(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                command: str) -> None:
    code, output = _cli(tmp_path, capsys, [*COMMANDS[command], "token 4f2a leaked in incident 7"])
    assert code == 2 and "--reason" not in output and "cannot read policy file" in output, output


def test_a_reason_in_words_without_replace_is_refused_for_what_it_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = _cli(tmp_path, capsys, [*COMMANDS["bootstrap"], "token 4f2a leaked in incident 7"])
    assert code == 2 and "--reason goes with --replace" in output, output


@pytest.mark.parametrize("fmt", ["csv", "json", "html"])
def test_the_report_masks_tokens_in_dismissal_reasons_and_errors(tmp_path: Path, fmt: str) -> None:
    """A journal written before `--reason` refused tokens (or a server's error quoting one): the report
    showed the dismissal's reason and the failure's error as they were, in every format."""
    world, rev = _a_failed_revocation(tmp_path)
    token, other = TOKENS["management"], TOKENS["database"]
    world.engine().dismiss_revocation(rev.token_id, f"still used by ingest, its value is {token}")
    world.journal.record_event(world.clock.now(), "p", None, "mint", "failed", {"error": f"403 for {other}"})
    now = world.clock.now()
    evidence = report.build(world.journal, [offline_policy(tmp_path, "p")], now - timedelta(days=1),
                            now + timedelta(days=1), now)
    [p] = evidence.policies
    assert [r.note for r in p.revocations] == ["still used by ingest, its value is ***"]
    assert "403 for ***" in [f.error for f in p.failures]
    assert all(token not in (r.last_error or "") for r in p.revocations)
    text = report.render(evidence, fmt)
    assert token not in text and other not in text
    assert "***" in text
    if fmt == "json":
        assert json.loads(text)["policies"][0]["revocations"][0]["note"].endswith("is ***")


def test_status_json_masks_a_token_in_the_last_runs_error(tmp_path: Path) -> None:
    """A server's error quoting a token rotator never held is journaled with the failed run; `status
    --output json` showed it as it was, where the status page and the report mask it."""
    from rotator.core.errors import PermanentError
    from rotator.observe.status import policy_status
    from tests.engine.test_state_machine import World

    world = World(tmp_path)
    world.bootstrap()
    token = TOKENS["management"]
    world.issuer.fail_next("mint", PermanentError(f"memory issuer: 403, token {token} lacks a permission"))
    with pytest.raises(PermanentError):
        world.engine().rotate()
    shown = policy_status(offline_policy(tmp_path, "p"), world.journal, world.clock.now()).to_json()
    assert shown["last_run_state"] == "failed"
    assert shown["last_run_error"] is not None and "token *** lacks a permission" in shown["last_run_error"]
    assert token not in json.dumps(shown)
