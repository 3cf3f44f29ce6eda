"""What the command line is given, and what it must not do with it:

- a policy removed from the file with unfinished work in the journal (its previous token's revocation
  pending) is named by `status` (exit 4), `revoke-expired`, `rotate --all` and `recover`, as the
  daemon names it (rotator_removed_policies_with_work), instead of being left valid with exit 0;
- no file a command writes (`report --output-file`, `bundle -o`, `--log-file`) may be the policy file
  or the journal (with its -wal, -shm and -journal files): exit 2, and the file is left as it was;
- `bootstrap --token-file` is read as a `{ file = ... }` credential is: a FIFO or a device is refused
  (not waited on, not read to the end of memory), a byte-order mark and a CRLF are dropped;
- a token-shaped argument is never echoed by an error, argparse's included;
- `recover --abandon RUN_ID --reason TEXT POLICY` takes exactly its arguments (exit 2 otherwise) and
  closes only a run recovery cannot (one minted on another cluster).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.config.policy import GlobalSettings
from rotator.core.journal import open_journal
from rotator.runners import cli
from tests.harness import REPO, Scenario, make_scenario

TOKEN = "M.V1.abcdefghijklmnopqrstuvwxyz0123456789"
POLICY = """
[[policy]]
name = "p1"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h.example"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example:8200"
path = "influx/mgmt"
[policy.store.auth]
method = "token"
token = { env = "VAULT_TOKEN" }
"""


def _policy_file(tmp_path: Path) -> Path:
    """p1 with its journal, journal.db (made, empty of runs)."""
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n' + POLICY)
    open_journal(f"sqlite:///{tmp_path / 'journal.db'}").close()
    return path


def _rotator(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``rotator ARGS`` in a new interpreter whose address space is held to 2 GiB: a file read to the end
    of memory fails there at once, not after the machine's memory is gone."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-m", "rotator.runners.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, check=False, preexec_fn=limit,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip


# -- 1. a policy removed from the file with its work left in the journal -------------------------------
def _with_second_policy(sc: Scenario, name: str, extra: str = "") -> str:
    """The scenario's policy file with a copy of its policy named ``name``, at its own KV path."""
    text = sc.config.read_text()
    head, body = text.split("[[policy]]", 1)
    copy = body.replace(f'name = "{sc.policy}"', f'name = "{name}"\n{extra}').replace(
        f'path = "{sc.kv_path}"', f'path = "{sc.kv_path}-{name}"')
    return f"{head}[[policy]]{body}[[policy]]{copy}"


def test_a_policy_removed_with_a_pending_revocation_is_named_until_it_is_back(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=2)
    one = sc.config.read_text()
    sc.config.write_text(_with_second_policy(sc, "p2"))
    value, p2_first = sc.fake.add_token("created by a human for p2")
    sc.bootstrap_with(value, p2_first, policy="p2")
    rotated = sc.cli("rotate", "--all")
    assert rotated.returncode == 0, rotated.stderr
    sc.config.write_text(one)  # p2 dropped: its previous token's revocation is pending in the journal

    said = "rotator: attention: policy 'p2' is not in"
    for check in ((), ("--check",)):
        status = sc.cli("status", *check)
        assert status.returncode == 4, (check, status.stdout, status.stderr)
        assert said in status.stderr and "unfinished work: 1 pending revocation" in status.stderr, status.stderr
        assert "put it back in the file with `enabled = false`" in status.stderr
    assert sc.cli("status", sc.policy).returncode == 0, "only every policy's status names it"
    for args in (("rotate", "--all", "--if-due"), ("recover",)):
        done = sc.cli(*args)
        assert done.returncode == 0 and said in done.stderr, (args, done.stderr)

    time.sleep(sc.grace_s + 0.5)
    revoked = sc.cli("revoke-expired")
    assert revoked.returncode == 0 and said in revoked.stderr, revoked.stderr
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is not None, "the policy in the file: revoked"
    assert sc.fake.token_by_id(p2_first)["revoked_at"] is None, "p2's: nothing can revoke it"

    # The documented remedy: back in the file, disabled, its work is done, and nothing is said any more.
    sc.config.write_text(_with_second_policy(sc, "p2", "enabled = false"))
    revoked = sc.cli("revoke-expired")
    assert revoked.returncode == 0 and said not in revoked.stderr, revoked.stderr
    assert sc.fake.token_by_id(p2_first)["revoked_at"] is not None
    sc.config.write_text(one)
    status = sc.cli("status")
    assert status.returncode == 0 and said not in status.stderr, status.stderr


def test_a_removed_policy_whose_tag_search_has_not_ended_is_named(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """A removed policy's last run published, but a try of its mint had no answer: a token the issuer created
    late under its tag is found only by the search that ends at tag_search_until, which needs the policy's
    settings. The daemon refuses such a reload; the CLI's check named only open runs and revocations."""
    from rotator.core.journal import RunRecord, open_journal

    sc = make_scenario(tmp_path, openbao, fake_influxctl.state)
    now = datetime.now(UTC)
    journal = open_journal(f"sqlite:///{sc.journal_path}")
    try:
        journal.begin_run(RunRecord("r-gone", "gone", "done", "rotate", now, now, published_at=now, finished_at=now,
                                    new_token_id="t-gone", tag_search_until=now + timedelta(minutes=30)))
    finally:
        journal.close()
    status = sc.cli("status")
    assert status.returncode == 4, (status.stdout, status.stderr)
    assert "rotator: attention: policy 'gone' is not in" in status.stderr, status.stderr
    assert "1 tag search not ended" in status.stderr, status.stderr


# -- 2. no output over an input -------------------------------------------------------------------
@pytest.mark.parametrize(("args", "victim"), [
    (["report", "--output-file", "journal.db"], "journal.db"),
    (["report", "--output-file", "journal.db-wal"], "journal.db-wal"),
    (["report", "--output-file", "./sub/../rotator.toml"], "rotator.toml"),
    (["bundle", "rotator.toml", "-o", "rotator.toml"], "rotator.toml"),
    (["bundle", "rotator.toml", "-o", "link.toml"], "rotator.toml"),
    (["bundle", "rotator.toml", "-o", "journal.db"], "journal.db"),
    (["status", "--log-file", "rotator.toml"], "rotator.toml"),
    (["status", "--log-file", "journal.db"], "journal.db"),
    (["validate", "--log-file", "journal.db-shm"], "journal.db-shm"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)  # fmt: skip
def test_no_output_path_is_the_policy_file_or_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str], args: list[str],
                                                          victim: str) -> None:  # fmt: skip
    _policy_file(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.toml").symlink_to("rotator.toml")
    victims = {name: (tmp_path / name).read_bytes() if (tmp_path / name).exists() else None
               for name in ("rotator.toml", "journal.db", "journal.db-wal", "journal.db-shm")}  # fmt: skip
    monkeypatch.chdir(tmp_path)
    code = cli.main(["-c", "rotator.toml", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{victim}): writing" in err and "would destroy it" in err, err
    assert victims == {name: (tmp_path / name).read_bytes() if (tmp_path / name).exists() else None
                       for name in victims}, "left as it was"  # fmt: skip


def test_a_report_that_cannot_be_written_whole_leaves_the_file_it_replaces(tmp_path: Path) -> None:
    """A report of 300 policies (~150 kB) written by a child whose files may not grow past 64 KiB, as on a
    full disk: the earlier report stays whole (not a report cut short), no temporary file is left, and the exit
    is 1 (a failed command, not invalid input)."""
    (tmp_path / "rotator.toml").write_text('[rotator]\njournal = "journal.db"\n' + "".join(
        POLICY.replace('"p1"', f'"p{i}"').replace('"influx/mgmt"', f'"influx/p{i}"') for i in range(300)))
    open_journal(f"sqlite:///{tmp_path / 'journal.db'}").close()
    (tmp_path / "q1.html").write_text("the earlier report")
    child = ("import resource, signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
             "from rotator.runners.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", child, "-c", "rotator.toml", "report", "--output-file", "q1.html"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 1 and "cannot write --output-file q1.html: File too large" in done.stderr, done.stderr
    assert (tmp_path / "q1.html").read_text() == "the earlier report"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == [], "no temporary file left"


def test_the_default_journal_is_the_policy_model_s() -> None:
    """--log-file is checked against the journal without the policy model: with its default."""
    assert cli._DEFAULT_JOURNAL == GlobalSettings.model_fields["journal"].default


# -- 3. bootstrap --token-file, read as a credential file -----------------------------------------
def test_bootstrap_refuses_a_fifo_token_file_at_once(tmp_path: Path) -> None:
    _policy_file(tmp_path)
    os.mkfifo(tmp_path / "fifo")  # no writer: a blocking open waits for ever
    try:
        done = _rotator("bootstrap", "p1", "--token-file", "fifo", "--token-id", "t1", cwd=tmp_path, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("bootstrap waited on the FIFO")
    assert done.returncode == 2, done.stderr
    assert "cannot read --token-file fifo: it is a FIFO (named pipe), not a regular file" in done.stderr


def test_bootstrap_refuses_a_device_as_token_file(tmp_path: Path) -> None:
    _policy_file(tmp_path)
    done = _rotator("bootstrap", "p1", "--token-file", "/dev/zero", "--token-id", "t1", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "cannot read --token-file /dev/zero: it is a character device" in done.stderr
    assert "internal error" not in done.stderr


@pytest.mark.parametrize(("token_id", "said"), [
    ("abc\x1b[2Jdef", "--token-id holds a control character (\\x1b at index 3)"),  # (argv holds no NUL)
    ("a" * 300, "--token-id is 300 characters long"),
    ("", "--token-id is empty"),
], ids=["escape", "too-long", "empty"])
def test_bootstrap_refuses_a_token_id_no_issuer_writes(tmp_path: Path, token_id: str, said: str) -> None:
    """A store refuses to read such an id back (a malformed payload), and PostgreSQL refuses a NUL as the
    journal's fault: refused before anything is published, with nothing written."""
    _policy_file(tmp_path)
    (tmp_path / "token").write_text("M.V1.abcdefghijklmnopqrst")
    done = _rotator("bootstrap", "p1", "--token-file", "token", "--token-id", token_id, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "fix:" in done.stderr, done.stderr
    assert "abcdefghijklmnopqrst" not in done.stderr + done.stdout


def test_bootstrap_reads_a_token_file_with_a_bom_and_crlf(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """As Notepad saves it: a UTF-8 signature before the token, CRLF after."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, bootstrap=False)
    value, token_id = sc.fake.add_token("created by a human for bootstrap")
    first = tmp_path / "first-token"
    first.write_bytes(b"\xef\xbb\xbf" + value.encode() + b"\r\n")
    done = sc.cli("bootstrap", sc.policy, "--token-file", str(first), "--token-id", token_id)
    assert done.returncode == 0, done.stderr
    assert sc.current()["token"] == value, "the token alone is published"


def test_bootstrap_still_says_a_token_file_holds_more_than_a_token(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = _policy_file(tmp_path)
    (tmp_path / "out").write_text(f"ID  DESCRIPTION\n1   x\n\n{TOKEN}\n")
    code = cli.main(["-c", str(path), "bootstrap", "p1", "--token-file", str(tmp_path / "out"), "--token-id", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "holds more than a token value: 4 lines" in err and TOKEN not in err, err


# -- 4. token-shaped arguments are masked --------------------------------------------------------------
#: a bare target whose --token-file cannot be read: listed as that target's error (exit 1), before any request
_UNREAD_TOKEN_FILE = ["inventory", "--no-policies", "--url", "https://h.invalid", "--kind", "influxdb3",
                      "--token-file", f"/nope/{TOKEN}"]


@pytest.mark.parametrize(("args", "exit_code"), [
    (["bootstrap", "p1", "--token-file", TOKEN, "--token-id", "t1"], 2),  # a value in place of its file
    (["bootstrap", "p1", f"--token={TOKEN}", "--token-id", "t1"], 2),  # argparse: ambiguous option
    (["rotate", TOKEN], 2),  # a value in place of a policy name
    (["status", f"--bogus={TOKEN}"], 2),  # argparse: unrecognized arguments
    (["sync", "--from", TOKEN], 2),  # a policy name of -c's file
    (["sync", "--from", "p1", "--store", TOKEN], 2),  # a store name
    (["sync", "--from", f"{TOKEN}:p1"], 2),  # a policy file
    (["validate", TOKEN, "--output", "json"], 2),  # stdout's JSON names the file too
    (_UNREAD_TOKEN_FILE, 1),
    ([*_UNREAD_TOKEN_FILE, "--output", "json"], 1),  # stdout's JSON lists the error too
], ids=["token-file", "ambiguous-option", "policy-name", "unrecognized", "sync-policy", "sync-store",
        "sync-policy-file", "validate-json", "inventory-token-file", "inventory-token-file-json"])  # fmt: skip
def test_a_token_shaped_argument_is_not_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               args: list[str], exit_code: int) -> None:  # fmt: skip
    path = _policy_file(tmp_path)
    try:
        code = cli.main(["-c", str(path), *args])
    except SystemExit as stop:  # argparse's errors
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    assert code == exit_code, err
    assert "***" in err, err
    assert "M.V1" not in out + err and "abcdefghijkl" not in out + err, out + err


def test_a_token_shaped_policy_file_path_is_not_echoed_with_its_problems(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid policy file in a directory named like a token: its problems are listed, the path masked, by
    `rotator validate` and by `rotator sync` (each prints a policy file's problems as a list of its own)."""
    folder = tmp_path / TOKEN
    folder.mkdir()
    (folder / "rotator.toml").write_text("bogus = 1\n")
    for args in (["validate", str(folder / "rotator.toml")], ["sync", "--from", f"{folder / 'rotator.toml'}:p1"]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert "1 problem(s)" in err and "bogus" in err and f"{tmp_path}/***" in err, err
        assert "M.V1" not in err and "abcdefghijkl" not in err, err


# -- 5. recover --abandon: a run of a cluster gone for good -------------------------------------------
def test_recover_abandon_closes_a_run_of_another_cluster_with_exit_codes_for_each_use(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """A rotation killed after minting, then the policy's profile pointed at another cluster: recover and
    rotate exit 4 and name `recover --abandon`; its wrong uses exit 2 and change nothing; the abandon
    exits 0 (again: 0, "already abandoned"), and rotate works again."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state)
    assert sc.cli("rotate", sc.policy, crash_at="minted").returncode != 0
    ((run_id, token_id),) = sc.journal_rows("SELECT run_id, new_token_id FROM runs WHERE state = 'minted'")
    same = sc.cli("recover", "--abandon", run_id, "--reason", "the cluster is gone", sc.policy)
    assert same.returncode == 2 and "where the policy's issuer points now" in same.stderr, same.stderr
    sc.config.write_text(sc.config.read_text().replace('host = "cluster.test.invalid"',
                                                       'host = "cluster-b.test.invalid"'))
    for args in (("recover", sc.policy), ("rotate", sc.policy)):
        stuck = sc.cli(*args)
        assert stuck.returncode == 4, (args, stuck.stderr)
        assert f"recover --abandon {run_id} --reason TEXT {sc.policy}`" in stuck.stderr, stuck.stderr

    reason = "cluster.test.invalid decommissioned, INC-42"
    for args, says in (
        (["--abandon", run_id, sc.policy], "--abandon needs --reason"),
        (["--abandon", run_id, "--reason", reason], "exactly one policy"),
        (["--reason", reason, sc.policy], "--reason goes with --abandon"),
        (["--abandon", "no-such-run", "--reason", reason, sc.policy], f"policy {sc.policy} has no run no-such-run"),
        (["--abandon", run_id, "--reason", "two\nlines", sc.policy], "one line"),
    ):
        refused = sc.cli("recover", *args)
        assert refused.returncode == 2 and says in refused.stderr, (args, refused.stderr)
        assert sc.journal_rows("SELECT state FROM runs WHERE run_id = ?", run_id) == [("minted",)], args

    done = sc.cli("recover", "--abandon", run_id, "--reason", reason, sc.policy)
    assert done.returncode == 0, done.stderr
    assert f"run {run_id}: abandoned, closed as failed; reason: {reason}" in done.stdout, done.stdout
    assert f"its token {token_id} may still be valid on clustered cluster.test.invalid:443" in done.stdout
    assert sc.journal_rows("SELECT state FROM runs WHERE run_id = ?", run_id) == [("failed",)]
    again = sc.cli("recover", "--abandon", run_id, "--reason", reason, sc.policy, "--output", "json")
    assert again.returncode == 0 and "already abandoned" in again.stdout, again.stdout + again.stderr
    assert sc.cli("rotate", sc.policy).returncode == 0
    assert sc.cli("recover", "--abandon", run_id, "--reason", reason, sc.policy).returncode == 0
