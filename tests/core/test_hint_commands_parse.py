"""Every `rotator ...` command that a message or hint of rotator's quotes in backticks parses with the
CLI's own parser, once its placeholders are filled in: a person copies it as it is shown.

Finding: a policy with no token yet failed with "fix: store the first token with `rotator -c FILE
bootstrap`...", and that command, run as shown, is refused for its missing arguments (policy,
--token-file, --token-id). The CLI adds ``-c FILE`` to each quoted command (cli_options.with_policy_file):
each is parsed as written and as shown so.

Read from the source: the string literals of rotator/ (docstrings and comments are no messages), an
f-string with each of its fields as ``{expression}``. A command split over a ``+`` is not seen.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from rotator.runners import cli

ROTATOR = Path(__file__).resolve().parents[2] / "rotator"
COMMAND = re.compile(r"`(rotator [a-z-]+[^`]*)`")
#: the placeholders that messages write for what the person fills in, and a sample of each
SAMPLES = {"POLICY": "mgmt-prod", "NAME": "mgmt-prod", "FILE": "/tmp/first-token", "F": "/tmp/first-token",
           "ID": "8b2c5f9e", "TOKEN_ID": "8b2c5f9e", "RUN_ID": "run-1", "TEXT": "why"}
#: a format field ({policy}, {self.policy.name}, {claim.token_id}) or a %-style one
FIELD = re.compile(r"\{[^{}]*\}|%s")

#: Commands named in passing, as words of a sentence, not as something to run; each kept as
#: (path under rotator/, the command as quoted). Each is refused by the parser as it stands.
NAMED_IN_PASSING = {
    # "check for a hung `rotator sync` or rotation writing the same file": a process, not a command to run
    ("adapters/influxctl/profile.py", "rotator sync"),
    # "then run the same `rotator sync` once with --adopt": the person's own command, repeated
    ("runners/sync.py", "rotator sync"),
    # "the same `rotator bootstrap` a bootstrap's": the person's own command, run again
    ("adapters/vault/kv2.py", "rotator bootstrap"),
    # help of audit's --keep-history and a hint of audit verify: the option of a prune that ran before
    ("runners/cli.py", "rotator prune --keep-history"),
}
#: Hints that do tell the person to run a command that the parser refuses, in files this test's change
#: could not edit (others were changing them): each still names `rotator bootstrap` without its
#: arguments. Fix each as rotator/adapters/http/common.py HINT_SELF does (`rotator bootstrap POLICY
#: --token-file FILE --token-id ID`), then remove it here.
KNOWN_BROKEN = {
    # "run the same `rotator bootstrap` again" (a retry: in passing) and "publish a fresh one with
    # `rotator bootstrap`, then `rotator recover`" (a command to run)
    ("core/engine.py", "rotator bootstrap"),
}


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _literals(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of each string literal of ``path`` but its docstrings; an f-string's fields as ``{...}``."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(part) for part in node.values)
            yield node.lineno, "".join(_part(part) for part in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def _part(part: ast.expr) -> str:
    """An f-string's piece: its text, or its field as ``{expression}``."""
    if isinstance(part, ast.FormattedValue):
        return "{" + ast.unparse(part.value) + "}"
    return str(part.value) if isinstance(part, ast.Constant) else ""


@cache
def _quoted_commands() -> list[tuple[str, int, str]]:
    """(path under rotator/, line, command) of every backticked `rotator ...` in a string literal."""
    return [(str(path.relative_to(ROTATOR)), line, found.group(1))
            for path in sorted(ROTATOR.rglob("*.py")) for line, text in _literals(path)
            for found in COMMAND.finditer(text)]  # fmt: skip


@cache
def _parser() -> cli._Parser:
    return cli._parser()  # one for all: parse_args leaves a parser as it was


def _refusal(argv: list[str]) -> str | None:
    """What the CLI's parser says refusing ``argv`` (its usage and error lines), or None when it parses
    (``--help`` exits 0)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            _parser().parse_args(argv)
    except SystemExit as exc:
        if not exc.code:
            return None
        return err.getvalue().strip() or f"exit {exc.code}"
    return None


def _argv(command: str) -> list[str]:
    """``command`` without its ``rotator``, placeholders filled in."""
    return [SAMPLES.get(word, word) for word in shlex.split(FIELD.sub("mgmt-prod", command))[1:]]


def test_the_source_quotes_commands_to_check() -> None:
    """The scan finds the commands it is about (a regex or a parse that went wrong would find none)."""
    found = {(path, command) for path, _, command in _quoted_commands()}
    assert ("adapters/http/common.py", "rotator bootstrap {policy} --token-file FILE --token-id ID") in found
    assert ("adapters/influxctl/common.py", "rotator bootstrap POLICY --token-file FILE --token-id ID") in found
    assert not any("`" in command for _, command in found)
    assert _refusal(["bootstrap"]) is not None and _refusal(["status", "--help"]) is None


def test_every_quoted_command_parses() -> None:
    refused = []
    for path, line, command in _quoted_commands():
        if (path, command) in NAMED_IN_PASSING | KNOWN_BROKEN:
            continue
        argv = _argv(command)
        for shown in (argv, ["-c", "/etc/rotator/rotator.toml", *argv]):  # as written, and as the CLI shows it
            problem = _refusal(shown)
            if problem:
                refused.append(f"rotator/{path}:{line}: `{command}`: {problem.splitlines()[-2:]}")
                break
    assert refused == [], "\n".join(refused)


@pytest.mark.parametrize("hint", ["HINT_SELF", "HINT_NO_CREDENTIAL"])
def test_the_no_token_yet_hints_name_the_whole_bootstrap_command(hint: str) -> None:
    from rotator.adapters.http import common as http_common
    from rotator.adapters.influxctl import common as influxctl_common

    text = getattr(http_common if hint == "HINT_SELF" else influxctl_common, hint).replace("{policy}", "mgmt-prod")
    commands = COMMAND.findall(text)
    # (first the `rotator status` that tells a deleted store version from no token at all)
    assert [_argv(c)[0] for c in commands] == ["status", "bootstrap"], commands
    assert _argv(commands[1])[:2] == ["bootstrap", "mgmt-prod"]
    assert all(_refusal(_argv(c)) is None for c in commands)
