"""The options every ``rotator`` command takes, defined once (issue 14 §2).

One home for ``-c/--config``, ``--log-level``, ``--log-format``, ``--log-file`` and ``--output``,
used by the three command lines that take them: ``rotator`` (rotator/runners/cli.py),
``python -m rotator.runners.sync`` (rotator/runners/sync.py) and ``python -m rotator.runners.daemon``
(rotator/runners/daemon.py); and of how the first two print an error (:func:`print_error`). The
daemon's own option (``--listen``) is here too, so that building ``rotator``'s whole parser
(``rotator --help``) imports nothing but argparse: the daemon module imports the engine, the
policy model and pydantic.

Options given before the command name (``rotator -c FILE status``) and after it (``rotator
status -c FILE``) are the same options: the top-level parser has the defaults, and the
subcommands' copies default to ``argparse.SUPPRESS`` so that they never overwrite a value given
before the name. Whether an option was given at all, rather than left to its default, is
:func:`given_option` (a command refuses one it cannot honour: rotator/runners/cli.py).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["CONFIG_ENV", "LOG_LEVELS", "LOG_LEVEL_ENV", "OUTPUTS", "add_common", "add_daemon_parser",
           "check_env_log_level", "common_parent", "env_log_level", "given_option", "name_policy_file", "print_error",
           "print_policy_file_error", "shown", "with_policy_file"]

LOG_LEVELS = ("debug", "info", "warning", "error")
#: the environment variables that hold the defaults of ``-c/--config`` and ``--log-level``; set and empty
#: is unset (``ROTATOR_CONFIG= rotator status`` reads ./rotator.toml)
CONFIG_ENV, LOG_LEVEL_ENV = "ROTATOR_CONFIG", "ROTATOR_LOG_LEVEL"
DEFAULT_CONFIG = "rotator.toml"
#: ``--output`` of most commands (``inventory`` adds table and csv)
OUTPUTS = ("text", "json")
DAEMON_HELP = "run continuously: rotate on schedule, revoke after grace, serve /healthz /readyz /metrics"


def add_common(parser: argparse.ArgumentParser, *, defaults: bool = True, config: bool = True,
               outputs: Sequence[str] = OUTPUTS) -> None:  # fmt: skip
    """Add the common options to ``parser``.

    Args:
        defaults: False for a subcommand's copy: every default is ``argparse.SUPPRESS``, so an
            option given before the command name is not overwritten by the subcommand's default.
        config: False leaves out ``-c/--config`` (``rotator sync``, whose ``--config`` is
            influxctl's config file and whose policy file is part of ``--from``).
        outputs: the choices of ``--output`` (default ``text``); empty: no ``--output``.
    """

    def default(value: str | None) -> str | None:
        return value if defaults else argparse.SUPPRESS

    if config:
        parser.add_argument("-c", "--config", default=default(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG),
                            action=_Given, help="policy file (default: $ROTATOR_CONFIG or ./rotator.toml)")
    parser.add_argument("--log-level", default=default(env_log_level()), choices=list(LOG_LEVELS), action=_Given,
                        help="(default: $ROTATOR_LOG_LEVEL or info)")
    parser.add_argument("--log-format", default=default("text"), choices=["text", "json"], action=_Given)
    parser.add_argument("--log-file", default=default(None), action=_Given, help="also write logs to this file")
    if outputs:
        parser.add_argument("--output", default=default("text"), choices=list(outputs), action=_Given,
                            help="result format on stdout")


class _Given(argparse.Action):
    """Stores an option's value, and the option as it was given (:func:`given_option`): a value equal to the default
    does not tell `rotator schema -c rotator.toml` from `rotator schema`, nor a default from $ROTATOR_CONFIG."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        setattr(namespace, self.dest, values)
        # One attribute per option: a subcommand's namespace is copied over the top-level one attribute by
        # attribute, so `rotator -c FILE schema --output json` keeps both
        setattr(namespace, _GIVEN_PREFIX + self.dest, option_string or self.dest)


_GIVEN_PREFIX = "given_option_"


def given_option(args: argparse.Namespace, dest: str) -> str | None:
    """The option (``-c``, ``--config``) that set ``dest`` on the command line, before or after the command
    name; None when its value is a default (also one from the environment, as $ROTATOR_CONFIG)."""
    found: str | None = getattr(args, _GIVEN_PREFIX + dest, None)
    return found


def env_log_level() -> str:
    """The default of ``--log-level``: ``$ROTATOR_LOG_LEVEL`` in any case (the AWS Lambda function reads
    it as ``INFO``), or ``info``. argparse checks a default against no choices: :func:`check_env_log_level`."""
    return os.environ.get(LOG_LEVEL_ENV, "").strip().lower() or "info"


def check_env_log_level(level: str) -> str | None:
    """Why ``level``, the parsed ``--log-level``, cannot be used, or None. argparse refuses a ``--log-level``
    that is none of :data:`LOG_LEVELS`, so such a value is the default from ``$ROTATOR_LOG_LEVEL``."""
    if level in LOG_LEVELS:
        return None
    return f"${LOG_LEVEL_ENV} is {os.environ.get(LOG_LEVEL_ENV, level)!r}, which is not a log level"


#: a quoted rotator command in a message (after a backquote), up to its closing backquote
_NAMED_COMMAND = re.compile(r"(?<=`)rotator ([^`]*)")
#: a command that names its policy file already
_GIVEN_CONFIG = re.compile(r"(?:^|\s)(?:-c|--config)(?:\s|=|$)")
#: what a quoted rotator command gets after its first word while the policy file is not ./rotator.toml
_policy_file_option = ""


def name_policy_file(config: str | None) -> None:
    """Messages of this process that quote a rotator command name ``config`` too (-c, its absolute
    path), unless it is ./rotator.toml: a command copied from a hint (a cron job's log, read in another
    directory) must act on the same policy file and journal, not on whatever ./rotator.toml the
    reader's directory holds, or none."""
    global _policy_file_option
    if not config or os.path.abspath(config) == os.path.abspath(DEFAULT_CONFIG):
        _policy_file_option = ""
    else:
        _policy_file_option = f"-c {shlex.quote(os.path.abspath(config))} "


def with_policy_file(text: str) -> str:
    """``text`` with ``-c FILE`` in every rotator command it quotes (see :func:`name_policy_file`)."""
    if not _policy_file_option or "rotator " not in text:
        return text
    return _NAMED_COMMAND.sub(
        lambda m: m[0] if _GIVEN_CONFIG.search(m[1]) else f"rotator {_policy_file_option}{m[1]}", text)


def shown(text: str) -> str:
    """``text`` (an error, a hint, a target's message) as this process may print it: one line, no token.

    REDACTOR knows only the values rotator read; an argument is none of them, and a token pasted where a
    path, a policy or a store name goes is quoted back by the error about it, so every token-shaped part
    is masked too. one_line: an error may quote a server's answer or a store's payload, whose escape
    sequences would otherwise act on the terminal (retitle it, clear it, hide the lines after)."""
    # imported here: building the parser (`rotator --help`) imports nothing but argparse
    from rotator.config.inline_secrets import mask_tokens
    from rotator.core.one_line import one_line
    from rotator.core.secret import REDACTOR

    return one_line(mask_tokens(REDACTOR.redact(with_policy_file(text))))


def print_error(message: str, hint: str = "") -> None:
    """``rotator: error: MESSAGE`` and ``fix: HINT`` on stderr, each :func:`shown`."""
    print(f"rotator: error: {shown(message)}", file=sys.stderr)
    if hint:
        print(f"fix: {shown(hint)}", file=sys.stderr)


#: how a hint written for the daemon's retries begins ("rotator retries; check that Vault is up")
_RETRIES = "rotator retries"


def once_hint(hint: str) -> str:
    """``hint`` as a command run once reads it: the daemon, or a later scheduled run, tries again, but
    this command already retried and gave up, so a clause saying "rotator retries" is replaced with
    running the same command again once the cause is fixed; the other clauses stay."""
    clauses = hint.split("; ")
    kept = [clause for clause in clauses if not clause.startswith(_RETRIES)]
    if len(kept) == len(clauses):
        return hint
    again = "run the same command again (it retried already, and gave up)"
    return "; ".join(kept) + f"; once the cause is fixed, {again}" if kept else f"fix the cause, then {again}"


def print_policy_file_error(text: str) -> None:
    """A policy file's problems on stderr, one per line as the error lists them, each line :func:`shown`
    (the file's path is an argument, which may be a token pasted in its place)."""
    print("\n".join(shown(line) for line in text.split("\n")), file=sys.stderr)


def common_parent(**options: Any) -> argparse.ArgumentParser:
    """A parent parser (``parents=[...]``) holding the common options; ``options`` as :func:`add_common`."""
    parent = argparse.ArgumentParser(add_help=False)
    add_common(parent, **options)
    return parent


def add_daemon_parser(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``daemon`` to ``subparsers``: the common options of ``common`` and ``--listen``."""
    parser: argparse.ArgumentParser = subparsers.add_parser("daemon", parents=[common], help=DAEMON_HELP)
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="address of /healthz, /readyz and /metrics (default: [daemon] listen or 127.0.0.1:9464)")
    return parser
