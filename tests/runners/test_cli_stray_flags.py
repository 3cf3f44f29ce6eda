"""A common option given to a command that has no use for it is refused (exit 2), not ignored.

`rotator schema -c /nonexistent.toml` printed the schema and exited 0: a `-c FILE` that does nothing
reads as a check of FILE. `schema` and `demo` read no policy file, `daemon` prints no result (its
output is its log), `schema` prints JSON only and `demo` text only. Every other command uses `-c` and
`--output`, and still takes them, before or after its name; the log options apply to every command.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from rotator.runners import cli
from tests.harness import REPO

#: command -> (takes -c, the --output values it takes). The test below checks that this covers every
#: command, so a new one needs a decision here.
USES: dict[str, tuple[bool, tuple[str, ...]]] = {
    "validate": (True, ("text", "json")), "schema": (False, ("json",)), "bundle": (True, ("text", "json")),
    "plan": (True, ("text", "json")), "rotate": (True, ("text", "json")), "status": (True, ("text", "json")),
    "recover": (True, ("text", "json")), "revoke-expired": (True, ("text", "json")),
    "bootstrap": (True, ("text", "json")), "demo": (False, ("text",)),
    # (inventory: `rotator --output text inventory` is its default, the table; after the name, argparse has
    # its own choices)
    "inventory": (True, ("table", "json", "csv", "text")), "audit": (True, ("text", "json")),
    "prune": (True, ("text", "json")), "report": (True, ("text", "json")), "daemon": (True, ()),
    # (sync: -c before the command name only: after it, -c is refused by sync itself, its --config is influxctl's)
    "sync": (True, ("text", "json")),
}  # fmt: skip
#: the arguments each command needs besides the common options, so that it parses
REQUIRED = {"bootstrap": ["p1", "--token-file", "f", "--token-id", "t"], "sync": ["--from", "p1"]}
#: the --output values the top-level parser takes (before the command name)
TOP_OUTPUTS = ("text", "json")


def _dispatched(monkeypatch: pytest.MonkeyPatch, command: str) -> list[argparse.Namespace]:
    """The namespaces the handler of ``command`` is called with (it does nothing and exits 0)."""
    calls: list[argparse.Namespace] = []

    def handler(args: argparse.Namespace) -> int:
        calls.append(args)
        return 0

    monkeypatch.setitem(cli._COMMANDS, command, handler)
    return calls


def _refusals() -> list[list[str]]:
    cases = []
    for command, (config, outputs) in USES.items():
        rest = REQUIRED.get(command, [])
        if not config:
            cases += [[command, *rest, "-c", "/nonexistent.toml"], ["-c", "/nonexistent.toml", command, *rest],
                      [command, *rest, "--config=rotator.toml"]]  # (the default's own value, given: still refused)
        cases += [[command, *rest, "--output", value] for value in _choices(command) if value not in outputs]
        cases += [["--output", value, command, *rest] for value in TOP_OUTPUTS if value not in outputs]
    return cases


def _choices(command: str) -> list[str]:
    """The --output values the command's own parser lets through (argparse refuses the others itself)."""
    parser = cli._parser().commands[command]
    return next(list(a.choices or []) for a in parser._actions if "--output" in a.option_strings)


def test_the_table_covers_every_command() -> None:
    assert sorted(USES) == sorted(cli._COMMANDS)
    assert _refusals(), "nothing to refuse"


@pytest.mark.parametrize("argv", _refusals(), ids=" ".join)
def test_a_common_option_a_command_cannot_honour_is_refused(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    command = next(a for a in argv if a in USES)
    calls = _dispatched(monkeypatch, command)
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert calls == [] and out == "", "the command ran"
    option = "-c" if "-c" in argv else "--config" if any(a.startswith("--config") for a in argv) else "--output"
    assert f"rotator: error: rotator {command}: {option} " in err and "does not apply to this command" in err, err
    assert "\nfix: leave out " + ("-c" if option != "--output" else "--output") in err, err


@pytest.mark.parametrize("command", sorted(USES))
def test_a_command_that_uses_an_option_still_takes_it(
        command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config, outputs = USES[command]
    rest = REQUIRED.get(command, [])
    calls = _dispatched(monkeypatch, command)
    logs = ["--log-level", "warning", "--log-format", "json"]  # every command takes the log options
    argvs = [[command, *rest, *logs], ["--log-level", "warning", command, *rest]]
    if config:
        argvs += [["-c", "mine.toml", command, *rest]]
        argvs += [] if command == "sync" else [[command, *rest, "--config", "mine.toml"]]
    argvs += [[command, *rest, "--output", value] for value in outputs if value in _choices(command)]
    argvs += [["--output", value, command, *rest] for value in outputs if value in TOP_OUTPUTS]
    for argv in argvs:
        assert cli.main(argv) == 0, (argv, capsys.readouterr().err)
        assert len(calls) == argvs.index(argv) + 1, f"{argv}: the command did not run"
        if "mine.toml" in argv:
            assert calls[-1].config == "mine.toml", argv
        if "--output" in argv:
            assert calls[-1].output == argv[argv.index("--output") + 1], argv


def test_rotator_config_in_the_environment_is_no_c(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """$ROTATOR_CONFIG is set for the user's other commands: `schema` and `demo` run all the same."""
    monkeypatch.setenv("ROTATOR_CONFIG", "/etc/rotator/theirs.toml")
    for command in ("schema", "demo"):
        calls = _dispatched(monkeypatch, command)
        assert cli.main([command]) == 0, capsys.readouterr().err
        assert len(calls) == 1


def test_schema_with_a_policy_file_exits_2_and_prints_no_schema() -> None:
    """The reported case, end to end; `schema --output json` (what it prints anyway) still prints it."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rotator.runners.cli", *args], capture_output=True, text=True,
                              cwd=REPO, timeout=60, check=False)

    refused = run("schema", "-c", "/nonexistent.toml")
    assert (refused.returncode, refused.stdout) == (2, ""), refused.stderr
    assert "-c /nonexistent.toml does not apply to this command" in refused.stderr
    printed = run("schema", "--output", "json")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["title"] == "rotator policy file"
