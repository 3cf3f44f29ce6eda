"""The `rotator` command line.

Exit codes (docs/operations.md):
  0  success
  1  a run or command failed; the previous token is still current and valid
  2  invalid input: policy file, CLI argument, a file or value the command was given
     (a store payload rotator cannot read is exit 1: docs/operations.md, exit codes)
  3  busy: another rotator holds the policy's lease; try again later
  4  needs attention: rotator stopped where going on could break an invariant
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from rotator import __version__
from rotator.config.extras import install_line, missing_extra
from rotator.config.policy_source import journal_files, refuse_to_overwrite
from rotator.config.timefmt import parse_rfc3339, rfc3339_seconds
from rotator.core.clock import SystemClock
from rotator.core.errors import ConfigError, LeaseBusy, NeedsAttention, RotatorError
from rotator.core.one_line import one_line
from rotator.core.secret import REDACTOR
from rotator.runners import sync as sync_cmd
from rotator.runners.cli_options import (
    LOG_LEVEL_ENV,
    LOG_LEVELS,
    add_common,
    add_daemon_parser,
    check_env_log_level,
    given_option,
    name_policy_file,
    once_hint,
    print_error,
    print_policy_file_error,
    shown,
    with_policy_file,
)

if TYPE_CHECKING:
    from rotator.config.policy import Config, Policy, Problem
    from rotator.config.policy_summary import ConfigSummary
    from rotator.config.schedule import NoNextDue
    from rotator.core.audit_chain import ChainReport, KeptLink
    from rotator.core.engine import Engine
    from rotator.core.journal import Journal
    from rotator.observe.status import PolicyStatus

# Each command imports what it uses (the policy model and pydantic, the journal, the engine) in
# its own function: `rotator --help` imports none of them, `rotator status` no engine or daemon
# (tests/runners/test_cli_startup.py; bench/cli_startup.py measures both against `python -c pass`).

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_BUSY, EXIT_ATTENTION = 0, 1, 2, 3, 4

#: Test-only: the name of an engine checkpoint at which the process kills itself with SIGKILL,
#: so crash tests can stop a real `rotator rotate` at every step boundary.
CRASH_ENV = "ROTATOR_TEST_CRASH_AT"
#: Test-only: the checkpoint at which the process stops itself with SIGSTOP (a pause; SIGCONT resumes).
STOP_ENV = "ROTATOR_TEST_STOP_AT"


class _Parser(argparse.ArgumentParser):
    #: the subcommands' parsers by name (the top-level parser only)
    commands: dict[str, argparse.ArgumentParser] = {}
    #: True while :func:`_parser` builds the parsers. Each add_argument asks a formatter only to check
    #: a metavar; a formatter of a fixed width answers that without asking the terminal's size each
    #: time (about 90 times) and without importing shutil: `rotator status` prints no help.
    building = False

    def _get_formatter(self) -> argparse.HelpFormatter:
        if _Parser.building:
            formatter: Any = self.formatter_class
            return formatter(prog=self.prog, width=80)  # type: ignore[no-any-return]
        return super()._get_formatter()

    #: the arguments being parsed (the top-level parser only): argparse stops at a missing command
    #: without naming an unknown option before it (`rotator --bogus`)
    argv: Sequence[str] = ()

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.__dict__.setdefault("options", set()).update(action.option_strings)
        return action

    def _known(self, arg: str) -> bool:
        """An option of this parser's, or (a long one) an abbreviation of one, as argparse allows."""
        name = arg.split("=", 1)[0]
        options: set[str] = self.__dict__.get("options", set())
        return name in options or (name.startswith("--") and any(o.startswith(name) for o in options))

    def error(self, message: str) -> None:  # type: ignore[override]
        from rotator.config.inline_secrets import mask_tokens

        if message.startswith("the following arguments are required: command"):
            unknown = [a for a in self.argv if a.startswith("-") and a != "--" and not self._known(a)]
            if unknown:
                message = f"unrecognized arguments: {' '.join(unknown)}; and a command is required"
        # argparse quotes the arguments it refuses: a token pasted as one (`--token=M.V1...`, a value
        # where a policy name goes) must not reach the terminal, a CI log or a ticket
        message = mask_tokens(message)
        self.print_usage(sys.stderr)
        # self.prog is "rotator" or "rotator SUBCOMMAND": the hint names a command that exists
        print(f"rotator: error: {message}\nfix: see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)


#: name -> (one-line description, example) of each subcommand; tests/runners/test_cli_usability.py checks
#: that every subcommand's --help shows both and that each example parses
_COMMAND_HELP: dict[str, tuple[str, str]] = {
    "validate": ("check a policy file and report every problem", "rotator validate /etc/rotator/rotator.toml"),
    "schema": ("print the JSON Schema of the policy file", "rotator schema > policy.schema.json"),
    "bundle": ("validate a policy file and compile it for the AWS Lambda function's cold start",
               "rotator bundle /etc/rotator/rotator.toml -o build/rotator.bundle.json"),
    "plan": ("say what would rotate when, and why", "rotator -c /etc/rotator/rotator.toml plan"),
    "rotate": ("rotate policies now", "rotator rotate --all --if-due    # from cron or a systemd timer"),
    "status": ("show each policy's current token, age, expiry, next due and last result",
               "rotator status -c /etc/rotator/rotator.toml --output json"),
    "recover": ("finish or undo interrupted runs", "rotator recover mgmt-prod"),
    "revoke-expired": ("revoke tokens whose grace period has passed", "rotator revoke-expired"),
    "bootstrap": ("publish a first, human-created token", "rotator bootstrap mgmt-prod --token-file ./first-token "
                  "--token-id 8b2c5f9e-1d7a-4c3e-9f0b-2a6d4e8c1f37"),
    "demo": ("rotate a simulated management token into OpenBao", "rotator demo --keep"),
    "inventory": ("list every token of the policies' issuers (and of bare targets) and say whose it is",
                  "rotator inventory --output csv > tokens.csv"),
    "audit": ("check the journal's tamper-evident hash chain; exit 4 and name the first broken link",
              "rotator -c /etc/rotator/rotator.toml audit verify"),
    "prune": ("delete history older than keep_history, keeping the audit chain verifiable (a checkpoint)",
              "rotator prune --keep-history 400d"),
    "report": ("write the rotation evidence of a period (runs, revocations, failures, max age, chain check)",
               "rotator report --from 2026-01-01 --to 2026-04-01 --format html --output-file q1.html"),
    "daemon": ("run continuously: rotate on schedule, revoke after grace, serve /healthz /readyz /metrics",
               "rotator daemon -c /etc/rotator/rotator.toml --listen 0.0.0.0:9464"),
}  # fmt: skip


def _describe(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    summary, example = _COMMAND_HELP[name]
    parser.description = summary[0].upper() + summary[1:] + "."
    parser.epilog = f"example:\n  {example}"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def _parser() -> _Parser:
    _Parser.building = True
    try:
        return _build_parser()
    finally:
        _Parser.building = False


def _build_parser() -> _Parser:
    common = _Parser(add_help=False)
    add_common(common, defaults=False)

    parser = _Parser(prog="rotator", description="Rotate InfluxDB tokens into secret stores, crash-safely.",
                     epilog="example:\n  rotator -c /etc/rotator/rotator.toml status\n"
                     "Every command explains itself: rotator COMMAND --help",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"rotator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str) -> argparse.ArgumentParser:
        return _describe(sub.add_parser(name, parents=[common], help=_COMMAND_HELP[name][0]), name)

    p = add("validate")
    p.add_argument("file", nargs="?", help="policy file (default: --config)")
    add("schema")
    p = add("bundle")
    p.add_argument("file", nargs="?", help="policy file (default: --config)")
    p.add_argument("-o", "--bundle", dest="bundle_file", help="where to write it (default: beside the file)")
    p = add("plan")
    p.add_argument("policy", nargs="*")
    p = add("rotate")
    p.add_argument("policy", nargs="*", help="policy names (default with --all: every enabled policy)")
    p.add_argument("--all", action="store_true", help="every enabled policy")
    p.add_argument("--if-due", action="store_true", help="skip policies that are not due (for cron jobs)")
    p.add_argument("--dry-run", action="store_true", help="check preconditions, change nothing")
    p.add_argument("--revoke-previous-now", action="store_true",
                   help="compromise response: revoke the previous token as soon as the new one is published, "
                   "skipping grace (consumers still holding it fail at once)")
    p.add_argument("--reason", default="", help="why (audited), with --revoke-previous-now")
    p.add_argument("--yes", action="store_true", help="confirm --revoke-previous-now without a prompt")
    p = add("status")
    p.add_argument("policy", nargs="*")
    p.add_argument("--check", action="store_true",
                   help="exit 4 when a policy is out of compliance: no token, a token older than max_age, "
                   "or an overdue or failed revocation (docs/compliance.md)")
    p.add_argument("--revocation-slack", default="1h", metavar="DURATION",
                   help="how long past its due time a pending revocation may wait before it is overdue (default 1h)")
    inventory_common = _Parser(add_help=False)
    add_common(inventory_common, defaults=False, outputs=("table", "json", "csv"))
    _add_inventory_parser(_describe(sub.add_parser("inventory", parents=[inventory_common],
                                                   help=_COMMAND_HELP["inventory"][0]), "inventory"))
    p = add("recover")
    p.add_argument("policy", nargs="*")
    p.add_argument("--abandon", metavar="RUN_ID",
                   help="close this unfinished run without searching for or revoking its token, or end the search "
                   "of a published run's tag (the run stays published): only a run that minted on another cluster "
                   "than the issuer's, one gone for good (one policy; needs --reason, audited)")
    p.add_argument("--reason", default="", help="why the run is abandoned (audited), with --abandon")
    p = add("revoke-expired")
    p.add_argument("policy", nargs="*")
    p.add_argument("--retry-failed", action="store_true",
                   help="once their cause is fixed: also try again the revocations that gave up (failed), and "
                   "try now those a failed try postponed (without it they wait out their backoff)")
    p.add_argument("--dismiss", metavar="TOKEN_ID",
                   help="close the failed revocation of this token without revoking it: it must stay valid "
                   "(one policy; needs --reason, audited)")
    p.add_argument("--reason", default="", help="why the token stays valid (audited), with --dismiss")
    p = add("bootstrap")
    p.add_argument("policy")
    p.add_argument("--token-file", required=True, help="file holding the token value (read, never printed)")
    p.add_argument("--token-id", required=True, help="the token's id at the issuer")
    p.add_argument("--expires-at", help="RFC 3339 expiry, if the issuer does not report one")
    p.add_argument("--replace", action="store_true",
                   help="repair: publish this token over stores that hold a managed token that no longer works "
                   "(needs --reason; docs/operations.md)")
    p.add_argument("--reason", default="", help="why the token is replaced (audited), with --replace")
    p = add("audit")
    p.add_argument("action", nargs="?", choices=["verify"], default="verify",
                   help="verify (the default): walk the hash chain from the last checkpoint")
    p.add_argument("--expect", action="append", default=[], metavar="SEQ:HASH@TIME",
                   help="a link kept from an earlier verify or report (its head, as they print it; @TIME may be "
                   "left out, which proves less); the chain must still hold it, or a prune that kept "
                   "keep_history must have deleted it (repeatable)")
    p.add_argument("--keep-history", metavar="DURATION",
                   help="with --expect: the shortest keep_history the journal's prunes kept, when a "
                   "`rotator prune --keep-history` kept less than [rotator] keep_history (the default)")
    p = add("prune")
    p.add_argument("--keep-history", metavar="DURATION", help="override [rotator] keep_history (default 400d)")
    p = add("report")
    p.add_argument("--from", dest="start", metavar="DATE",
                   help="start (YYYY-MM-DD or RFC 3339, UTC; default: 90 days before --to)")
    p.add_argument("--to", dest="end", metavar="DATE",
                   help="end, exclusive (YYYY-MM-DD or RFC 3339, UTC; default: now)")
    p.add_argument("--format", dest="report_format", choices=["json", "csv", "html"],
                   help="the report's format (default html; --output json means --format json)")
    p.add_argument("--output-file", metavar="FILE", help="write there instead of stdout")
    p.add_argument("policy", nargs="*", help="policy names (default: every policy)")
    sync_cmd.add_parser(sub, common)  # its own description and examples
    p = add("demo")
    p.add_argument("--keep", action="store_true", help="keep the demo directory")
    _describe(add_daemon_parser(sub, common), "daemon")
    parser.commands = dict(sub.choices)
    return parser


def _add_inventory_parser(p: argparse.ArgumentParser) -> None:
    p.description = (f"{p.description} Classes: managed, orphan, suspicious (orphan?), unmanaged, retired; "
                     "flags: no-expiry, expired-not-revoked, older-than-max-age. Never prints a token value. "
                     "See docs/compliance.md.")
    p.add_argument("--policy", action="append", default=[], metavar="NAME",
                   help="only the issuers of these policies (repeatable; default: every policy)")
    p.add_argument("--no-policies", action="store_true", help="only the bare targets given below")
    p.add_argument("--influxctl-profile", action="append", default=[], metavar="PATH[:NAME]",
                   help="also list a bare influxctl profile's tokens (management; database too with --token-file)")
    p.add_argument("--influxctl", help="influxctl binary for --influxctl-profile (default: influxctl)")
    p.add_argument("--url", help="also list a bare instance: InfluxDB 3 / v2 URL, or a Management API base URL")
    p.add_argument("--kind", choices=["influxdb3", "influxdb2", "management-api"], help="what --url is")
    p.add_argument("--token-file", help="file holding the admin/management token --url (or the profile) lists with")
    p.add_argument("--org-id", help="--kind influxdb2: the organization")
    p.add_argument("--product", choices=["clustered", "dedicated"], help="--kind management-api")
    p.add_argument("--account-id", help="--kind management-api, dedicated")
    p.add_argument("--cluster-id", help="--kind management-api, dedicated")
    p.add_argument("--insecure", action="store_true", help="--url: do not verify TLS certificates (tests only)")
    p.add_argument("--max-age", default="90d", metavar="DURATION",
                   help="flag tokens of no policy older than this (default 90d); a policy's own max_age applies to it")
    p.add_argument("--include-revoked", action="store_true", help="also show revoked tokens")
    p.add_argument("--suggest", action="store_true",
                   help="print the [[policy]] TOML that would bring each unmanaged token under rotation")
    p.add_argument("--revoke-orphans", action="store_true",
                   help="revoke the orphans (never a suspicious or unmanaged token); asks, or needs --yes "
                   "off a terminal")
    p.add_argument("--yes", action="store_true", help="with --revoke-orphans: do not ask")
    p.add_argument("--check", action="store_true",
                   help="exit 4 when a policy's current token is expired or revoked at the issuer, a live orphan "
                   "or suspicious token is found, or an unmanaged one that never expires or is older than "
                   "--max-age (1 stays for an issuer that could not be listed)")


#: ``prctl(2)`` option: whether the process may dump core and be ptraced or read through /proc by its own user.
_PR_SET_DUMPABLE = 4


def _no_core_dumps() -> None:
    """On Linux: no core file of rotator (RLIMIT_CORE 0, hard limit too: its children inherit it) and
    not dumpable: no core even where a kernel core pattern pipes it to a helper (which ignores the
    limit), and no other process of the same user (an influxctl child, a hook) may ptrace it or read
    its /proc/PID/environ, mem or fd (the kernel makes them root's). A core of a rotation held the
    management token eight times. It can still read its own /proc/self; /proc/PID/stat stays readable
    to all. A failure (a seccomp filter that refuses setrlimit, as systemd's ~@resources does; the
    units set LimitCORE=0 instead) is only logged at debug: it must not stop a rotation."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        _debug_failure("setrlimit(RLIMIT_CORE, 0)", exc)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            _debug_failure("prctl(PR_SET_DUMPABLE, 0)", OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno())))
    except (OSError, AttributeError) as exc:  # (no libc to load, or no prctl in it)
        _debug_failure("prctl(PR_SET_DUMPABLE, 0)", exc)


def _debug_failure(call: str, exc: BaseException) -> None:
    import logging  # (only on this path: `rotator status` from its cache imports no logging)

    logging.getLogger("rotator.cli").debug("%s failed (%s): a crash of this process may leave a core dump",
                                           call, exc)


def main(argv: Sequence[str] | None = None) -> int:
    _no_core_dumps()  # first: nothing secret is in memory yet
    parser = _parser()
    parser.argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's own parser, so the hint names `rotator COMMAND --help`
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    handler: Callable[[argparse.Namespace], int] = _COMMANDS[args.command]
    # (sync runs on a consumer's host: its hints name commands for the rotating host, whose policy file is unknown)
    name_policy_file(getattr(args, "config", None) if args.command != "sync" else None)
    try:
        _refuse_unused_options(args)
        _refuse_empty_paths(args)
        problem = check_env_log_level(args.log_level)
        if problem is not None:  # status and plan may configure no logging at all: checked here for all
            raise ConfigError(problem, hint=f"set {LOG_LEVEL_ENV} to one of {', '.join(LOG_LEVELS)}, or unset it "
                              "(default info); --log-level overrides it")
        if args.log_file:  # before the handler opens it: a log line appended to the journal breaks it
            _refuse_to_overwrite("--log-file", args.log_file, _command_inputs(args))
        if args.command not in _LATE_LOGGING or args.log_file or args.log_level == "debug":
            _setup_logging(args)  # an unusable --log-file is a ConfigError: exit 2
        code = handler(args)
        sys.stdout.flush()  # here, not at the interpreter's exit: a reader that went away is told below
        return code
    except BrokenPipeError:
        # What reads stdout went away (`rotator status | head -1`): nothing is wrong with rotator, and
        # nothing more can be said there. Exit as a command killed by SIGPIPE does, with stdout on
        # /dev/null so that the interpreter's own flush at exit does not report the same again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # (stdout replaced by something without a descriptor)
            pass
        return 128 + signal.SIGPIPE
    except RotatorError as exc:
        if _is_policy_file_error(exc):  # its text lists every problem of the file, each with its fix
            print_policy_file_error(str(exc))
            return EXIT_INVALID
        _print_error(exc)
        return _exit_code(exc)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if _interrupted(exc):
            return 130
        extra = missing_extra(exc)
        if extra is not None:  # an optional dependency is not installed: invalid input, not a bug
            module = getattr(exc, "name", None)
            print(f"rotator: error: `rotator {args.command}` needs the Python module {module!r} of the {extra!r} "
                  "extra, which is not installed", file=sys.stderr)
            print(f"fix: {install_line(extra)}", file=sys.stderr)
            return EXIT_INVALID
        # an adapter bug: no traceback to the user, but keep it in the debug log (if logging can be set up:
        # a --log-file or level that cannot be used was reported as such, and is not this error)
        try:
            _setup_logging(args)
        except RotatorError:
            pass
        else:
            import logging

            logging.getLogger("rotator.cli").debug("internal error", exc_info=True)
        print(f"rotator: internal error: {type(exc).__name__}: {shown(str(exc))}", file=sys.stderr)
        print("fix: this is a bug; rerun with --log-level debug and report the log (token values are redacted)",
              file=sys.stderr)
        return EXIT_FAILED


class _Unused(NamedTuple):
    """A common option a command has no use for: why, the fix, and the one value it may be given (the
    format the command always prints, so `rotator schema --output json` asks for what it gets)."""

    why: str
    hint: str
    accepted: str | None = None


#: The common options (by dest) each command cannot honour. Given, they are refused (exit 2), not ignored: a
#: `-c FILE` that does nothing looks like a check of FILE (`rotator schema -c prod.toml` printed the schema
#: of every file, whatever FILE held or whether it existed). $ROTATOR_CONFIG is no `-c`: it is set for the
#: other commands. The log options apply to every command (loading the adapters may log).
_UNUSED_OPTIONS: dict[str, dict[str, _Unused]] = {
    "schema": {
        "config": _Unused("it reads no policy file: the schema it prints is that of every policy file, with the "
                          "adapters installed here", "leave out -c (`rotator validate -c FILE` checks a file)"),
        "output": _Unused("the schema is JSON only", "leave out --output", accepted="json"),
    },
    "demo": {
        "config": _Unused("the demo writes and uses its own policy file",
                          "leave out -c (with --keep, the demo keeps its policy file for you to read)"),
        "output": _Unused("the demo prints text only", "leave out --output", accepted="text"),
    },
    "daemon": {
        "output": _Unused("the daemon prints no result on stdout: what it does goes to its log",
                          "leave out --output (--log-format json writes the log as JSON lines)"),
    },
}  # fmt: skip


def _refuse_unused_options(args: argparse.Namespace) -> None:
    """ConfigError (exit 2) for a common option given to a command that has no use for it (:data:`_UNUSED_OPTIONS`)."""
    for dest, unused in _UNUSED_OPTIONS.get(args.command, {}).items():
        option = given_option(args, dest)
        value = getattr(args, dest, None)
        if option is not None and value != unused.accepted:
            raise ConfigError(f"rotator {args.command}: {option} {value} does not apply to this command: {unused.why}",
                              hint=unused.hint)


#: The options that name a file to write: an empty value read as "not given" (logs to stderr only, the report
#: to stdout, the bundle beside the policy file), so a `--log-file "$LOG"` with LOG unset lost the log file.
_PATH_OPTIONS = {"log_file": "--log-file", "output_file": "--output-file", "bundle_file": "-o/--bundle"}


def _refuse_empty_paths(args: argparse.Namespace) -> None:
    """ConfigError (exit 2) for a file option given an empty value."""
    for dest, option in _PATH_OPTIONS.items():
        if getattr(args, dest, None) == "":
            raise ConfigError(f"{option} is empty (an unset shell variable?)",
                              hint=f"give {option} a file path, or leave the option out")


def _interrupted(exc: BaseException) -> bool:
    """Whether Ctrl-C caused ``exc``: a KeyboardInterrupt raised inside code that wraps what it
    catches (Python 3.11 turns one raised while a class is made, as a pydantic model is at a
    command's first import, into a RuntimeError) is still an interrupt, not a bug."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


#: Commands that configure logging only when they import something that logs: `status` and `plan` from
#: the cached summary import no module that logs (not even logging: tests/runners/test_cli_startup.py),
#: and a full validation configures it first (:func:`_summary`).
_LATE_LOGGING = frozenset({"status", "plan"})


def _setup_logging(args: argparse.Namespace) -> None:
    """Configure logging from the common options, once per parsed command line."""
    if getattr(args, "logging_configured", False):
        return
    from rotator.observe.logs import setup_logging  # logging is imported here, after --help has been served

    setup_logging(args.log_level, args.log_format, file=args.log_file, rewrite=with_policy_file)
    args.logging_configured = True


def _is_policy_file_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a rotator.config.policy.PolicyFileError, without importing that module (pydantic):
    only rotator.config.policy raises one, so it is loaded whenever one was raised."""
    policy = sys.modules.get("rotator.config.policy")
    return policy is not None and isinstance(exc, policy.PolicyFileError)


def _print_error(exc: BaseException) -> None:
    print_error(str(exc), once_hint(getattr(exc, "hint", "")))


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, LeaseBusy):
        return EXIT_BUSY
    if isinstance(exc, NeedsAttention):
        return EXIT_ATTENTION
    if isinstance(exc, ConfigError):
        return EXIT_INVALID
    return EXIT_FAILED


#: the default of ``[rotator] journal`` (rotator.config.policy.GlobalSettings.journal), for checking --log-file
#: before the command reads the policy file, without the policy model (tests/runners/test_cli_inputs.py)
_DEFAULT_JOURNAL = "rotator-journal.db"
#: commands that read no policy file (sync's is part of --from)
_NO_POLICY_FILE = frozenset({"schema", "demo", "sync"})


def _command_inputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """What the command reads that no file it writes may be, each as (what a message calls it, path): its
    policy file and, read from that without validating it, its SQLite journal and the journal's -wal,
    -shm and -journal files. A policy file that cannot be read or parsed adds only itself: the command
    says what is wrong with it."""
    if args.command in _NO_POLICY_FILE:
        return []
    policy_file = Path(getattr(args, "file", None) or args.config)
    inputs = [("the policy file", policy_file)]
    journal = _journal_setting(policy_file)
    if journal is not None:  # (a relative path is relative to the policy file, an absolute one stays)
        path = os.path.abspath(policy_file.parent / journal)
        inputs += journal_files(journal if "://" in journal else f"sqlite://{path}")
    return inputs


def _journal_setting(policy_file: Path) -> str | None:
    """``[rotator] journal`` of ``policy_file`` (its default when unset); None if the file cannot be read or
    parsed."""
    import tomllib

    from rotator.config.policy_source import read_policy_file

    try:
        data = tomllib.loads(read_policy_file(policy_file).decode("utf-8-sig"))
    except (RotatorError, ValueError, RecursionError):  # (ValueError: TOMLDecodeError, UnicodeDecodeError)
        return None
    table = data.get("rotator", {})
    journal = table.get("journal", _DEFAULT_JOURNAL) if isinstance(table, dict) else None
    return journal if isinstance(journal, str) else None


def _refuse_to_overwrite(flag: str, output: str, inputs: Sequence[tuple[str, Path]]) -> None:
    """ConfigError (exit 2) when the file ``output`` (given as ``flag``) is one of ``inputs``
    (:func:`_command_inputs`): writing there would destroy the policy file or the journal's records."""
    refuse_to_overwrite(output, inputs, given_as=flag, hint=f"pass {flag} a file of its own" + (
        " (or none: the report goes to stdout)" if flag == "--output-file"
        else " (or none: logs go to stderr)" if flag == "--log-file" else ""))


# ------------------------------------------------------------------------------ plumbing
def _config(args: argparse.Namespace) -> Config:
    from rotator.config.policy import load_config

    return load_config(args.config)


def _selected(config: Config, names: Sequence[str], all_enabled: bool = True) -> list[Policy]:
    if names:
        return [config.policy(n) for n in _unique(names)]
    return [p for p in config.policies if p.enabled or not all_enabled]


def _unique(names: Sequence[str]) -> list[str]:
    """``names`` without repeats, in their order: `rotator rotate p1 p1` rotates p1 once."""
    return list(dict.fromkeys(names))


def _validated(path: Path) -> Config:
    """The policy file at ``path`` validated in full (PolicyFileError lists its problems); its summary
    is then cached for `status` and `plan` (rotator/config/policy_summary.py)."""
    from rotator.config.policy import load_config_bytes
    from rotator.config.policy_source import read_policy_file
    from rotator.config.policy_summary import write_cache

    raw = read_policy_file(path)  # a ConfigError says what is wrong with the file
    config = load_config_bytes(raw, path)  # the bytes that were validated are the ones the cache is keyed by
    write_cache(path, raw, config)
    return config


def _summary(args: argparse.Namespace) -> ConfigSummary:
    """What `status` and `plan` show of the policy file: its cached summary when one matches the file's
    bytes (no pydantic is imported), otherwise the summary of a full validation, which refreshes the cache."""
    from rotator.config.policy_summary import read_cache, summarize

    path = Path(args.config)
    cached = read_cache(path)
    if cached is not None:
        return cached
    _setup_logging(args)  # validation imports the adapters, which may log
    return summarize(_validated(path))


def _journal(config: Config | ConfigSummary, *, create: bool = True, read_only: bool = False) -> Journal:
    """The policy file's journal. ``create=False``: it must exist already. ``read_only`` for commands
    that only read (status, plan, dry runs, audit, report): it must exist, and is neither upgraded
    nor write-locked to open."""
    from rotator.core.journal import open_journal

    # (an earlier rotator that ran in the policy file's directory may have left the journal there)
    return open_journal(config.journal_url(), create=create, read_only=read_only, ran_in=(config.path.parent,))


def _engine(config: Config, policy: Policy, journal: Journal) -> Engine:
    from rotator.core.engine import Engine
    from rotator.core.retry import RetryPolicy

    r = config.settings.retry
    return Engine(
        policy, journal,
        retry=RetryPolicy(r.attempts, r.base_delay.total_seconds(), r.max_delay.total_seconds()),
        lease_ttl=config.settings.lease_ttl,
        checkpoint=_crash_hook(),
    )  # fmt: skip


def _crash_hook() -> Callable[[str], None] | None:
    target, pause = os.environ.get(CRASH_ENV), os.environ.get(STOP_ENV)
    if not target and not pause:
        return None

    def hook(name: str) -> None:
        if name == target:
            os.kill(os.getpid(), signal.SIGKILL)
        if name == pause:
            os.kill(os.getpid(), signal.SIGSTOP)

    return hook


def _report_removed_work(config: Config | ConfigSummary, journal: Journal) -> bool:
    """Say (on stderr) which policies the journal holds unfinished work of (open runs, pending or failed
    revocations, tag searches not ended) while the policy file no longer has them; whether there are any.
    Only a policy's issuer and stores can end its work, so without it in the file no command does it: its
    old token stays valid with no sign. The daemon refuses a reload that drops such a policy and counts the ones it
    finds (rotator_removed_policies_with_work): this is that check, with its words, for cron jobs."""
    now = SystemClock().now()
    # open runs and unfinished revocations only: a hand-edited publication time of a policy in the file is
    # `status`'s to show (UNREADABLE), not a reason for this check to stop the command
    overview = journal.overview(now, None, last=False, tag_searches=True)
    removed = overview.with_work - {p.name for p in config.policies}
    if not removed:
        return False
    work = overview.unfinished_work(removed)
    at_most = overview.NAMED_AT_MOST
    for name, held in list(work.items())[:at_most]:
        # (a name read from the journal: its control characters are written out)
        print(one_line(f"rotator: attention: policy {name!r} is not in {config.path} but the journal holds its "
                       f"unfinished work: {held}; without its issuer and store settings nothing recovers its runs "
                       "or revokes its tokens"), file=sys.stderr)
        print("fix: " + one_line(with_policy_file(
            f"put it back in the file with `enabled = false` (no rotation; `rotator recover` and "
            f"`rotator revoke-expired` still recover its runs and revoke its old tokens when due) and remove it once "
            f"`rotator status {name}` shows no open run nor revocation left and the time of its tag search, if any, "
            f"has passed; a failed revocation waits for "
            f"`rotator revoke-expired --retry-failed {name}`, or for `rotator revoke-expired --dismiss TOKEN_ID "
            f"--reason TEXT {name}` if the token must stay valid (docs/daemon.md, Removing a policy)")),
            file=sys.stderr)
    if len(work) > at_most:
        print(f"rotator: attention: and {len(work) - at_most} more policies not in {config.path} with "
              "unfinished work in the journal", file=sys.stderr)
    return bool(work)


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    if args.output == "json":
        print(json.dumps(payload, indent=2, default=str))
    elif text:
        # Each line on its own: the text holds token ids, run results and servers' messages, whose
        # control characters must not act on the terminal; its own line breaks stay.
        print("\n".join(one_line(line) for line in with_policy_file(text).split("\n")))


# ------------------------------------------------------------------------------ commands
def cmd_validate(args: argparse.Namespace) -> int:
    path = args.file or args.config
    try:
        config = _validated(Path(path))
        _check_schedules_fire(config)
        unread = _check_webhook_secrets(config)
    except RotatorError as exc:
        if args.output == "json":  # a CI job parsing stdout gets the problems too (stderr has the text)
            from rotator.config.inline_secrets import mask_tokens

            listed = getattr(exc, "problems", None) if _is_policy_file_error(exc) else None
            problems = ([{"where": p.where, "message": p.message, "fix": p.hint} for p in listed] if listed is not None
                        else [{"where": "<file>", "message": str(exc), "fix": exc.hint}])
            # masked as stderr's text is: the path is an argument, where a token may have been pasted
            print(json.dumps({"valid": False, "file": mask_tokens(str(path)), "problems": [
                {key: mask_tokens(REDACTOR.redact(text)) for key, text in problem.items()} for problem in problems]},
                indent=2))
        raise
    printed = [*unread, *(w for p in config.policies for w in p.transport_warnings())]
    if not config.policies:  # an empty ConfigMap or a file of [rotator] alone: nothing would ever rotate
        printed.append(f"{path} holds no [[policy]]: nothing would be rotated")
    for warning in printed:
        print(f"rotator: warning: {warning}", file=sys.stderr)  # valid all the same: exit 0
    names = [p.name for p in config.policies]
    listed = f": {', '.join(names)}" if names else ""  # (no colon after "0 policies")
    # (the load logged its own warnings on stderr already; a CI job parsing stdout gets them all here)
    _emit(args, {"valid": True, "policies": names, "warnings": [*config.warnings, *printed]},
          f"{path}: valid, {len(names)} polic{'y' if len(names) == 1 else 'ies'}{listed}")
    return EXIT_OK


def _check_webhook_secrets(config: Config) -> list[str]:
    """What the daemon checks (and logs) of each webhook secret at its start (rotator/observe/notify.py): a
    value read here that is no Standard Webhooks secret, or too short a key, is a ConfigError (exit 2). One that cannot
    be read here is only a warning: a systemd credential (/run/credentials/...) exists only while the
    service runs, and a variable only in the daemon's environment."""
    daemon = config.daemon_table
    if daemon is None or not daemon.webhooks:
        return []
    from rotator.observe.notify import webhook_key

    warnings = []
    for webhook in daemon.webhooks:
        try:
            webhook.secret.resolve(config.path.parent)
        except ConfigError as exc:
            warnings.append(f"a webhook secret was not checked: {exc}; the daemon's deliveries to that webhook fail "
                            "without it")
            continue
        webhook_key(webhook, config.path.parent)
    return warnings


def _check_schedules_fire(config: Config) -> None:
    """A cron schedule whose years have passed is well-formed, so loading accepts it (the daemon logs
    it and runs the other policies); `validate` is where a person asks whether the file will work."""
    from rotator.config.policy import PolicyFileError, Problem
    from rotator.config.schedule import NoNextDue

    now = SystemClock().now()
    problems = []
    for index, policy in enumerate(config.policies):
        if not policy.enabled:  # only an explicit `rotator rotate NAME` rotates it: its schedule is unused
            continue
        try:
            policy.schedule.next_due(now, now)
        except NoNextDue as exc:
            problems.append(Problem(f"policy[{index}] {policy.name!r}.schedule", str(exc),
                                    "give a cron expression whose years include the coming ones, or an interval "
                                    "such as '30d'"))
    if problems:
        raise PolicyFileError(config.path, problems)


def cmd_schema(args: argparse.Namespace) -> int:
    from rotator.config.policy import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return EXIT_OK


def cmd_bundle(args: argparse.Namespace) -> int:
    from rotator.config.policy_bundle import write_bundle

    path, bundle = write_bundle(Path(args.file or args.config), Path(args.bundle_file) if args.bundle_file else None)
    _emit(args, {"bundle": str(path), "policies": [p.name for p in bundle.policies]},
          f"{path}: {len(bundle.policies)} policy(ies) compiled from {bundle.path.name}")  # fmt: skip
    return EXIT_OK


def _statuses(
    args: argparse.Namespace, slack: timedelta | None = None
) -> tuple[list[PolicyStatus], datetime, list[ConfigError], tuple[ConfigSummary, Journal]]:
    """Each policy's status, and the problems of policies that have none (a schedule that never fires
    again): the caller shows the others' rows first, then the problems (exit 2), as the daemon runs on.
    Last, the policy file's summary and the journal they were read from."""
    from rotator.config.schedule import NoNextDue
    from rotator.observe.status import policy_status

    config = _summary(args)
    journal = _journal(config, read_only=True)
    now = SystemClock().now()
    policies = [config.policy(n) for n in _unique(args.policy)] if args.policy else list(config.policies)
    rows, problems = [], []
    for p in policies:
        try:
            rows.append(policy_status(p, journal, now, **({"slack": slack} if slack is not None else {})))
        except NoNextDue as exc:  # (the daemon logs it and runs on)
            problems.append(_unschedulable(p.name, exc))
    return rows, now, problems, (config, journal)


def _raise_first(problems: list[ConfigError]) -> None:
    """Every problem but the last on stderr, then the last raised (exit 2, printed as any error)."""
    for problem in problems[:-1]:
        _print_error(problem)
    if problems:
        raise problems[-1]


def _unschedulable(policy: str, exc: NoNextDue) -> ConfigError:
    return ConfigError(f"policy {policy!r}: its schedule has no next due time: {exc}",
                       hint="change `schedule` of the policy in the policy file (a cron schedule whose years have "
                       "passed never fires again), or remove the policy")


def _unfinished_note(s: PolicyStatus) -> str:
    """What `plan` says of a policy's unfinished runs: only interrupted (or stuck) ones are recovered first;
    another's run in progress (a live lease), or one waiting out its mint window, is left as it is."""
    if s.interrupted_runs or s.stuck_runs:
        return f"; {s.interrupted_runs + s.stuck_runs} unfinished run(s) will be recovered first"
    if s.open_runs:
        return (f"; {s.open_runs} unfinished run(s): in progress (its process holds the lease) or waiting out "
                "its mint window (`rotator status`)")
    return ""


def cmd_plan(args: argparse.Namespace) -> int:
    rows, now, problems, _ = _statuses(args)
    text = "\n".join(
        f"{s.policy}: {s.reason()}; next rotation {_when(s.next_due, now)}"
        + (f"; {s.pending_revocations} revocation(s) pending" if s.pending_revocations else "")
        + _unfinished_note(s)
        + ("" if s.enabled else " (disabled: only an explicit `rotator rotate NAME` rotates it)")
        for s in rows
    )
    _emit(args, [s.to_json() for s in rows], text)
    _raise_first(problems)
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    """Load the policy file, open the journal, and per policy: the due decision (with --if-due), then the engine."""
    from rotator.config.schedule import NoNextDue
    from rotator.core.due import due_now
    from rotator.core.engine import RunResult

    if args.reason and not args.revoke_previous_now:  # audited only with an emergency rotation: never dropped
        raise ConfigError("--reason goes with --revoke-previous-now",
                          hint="drop --reason, or add --revoke-previous-now (revokes the previous token at once)")
    if args.yes and not args.revoke_previous_now:  # it confirms that alone: a plain rotation asks nothing
        raise ConfigError("--yes goes with --revoke-previous-now: a rotation without it asks nothing to confirm",
                          hint="drop --yes, or add --revoke-previous-now --reason TEXT (revokes the previous token "
                          "at once)")
    reason = _check_reason(args.reason)
    config = _config(args)
    if not args.policy and not args.all:
        raise ConfigError("name the policies to rotate, or pass --all", hint="rotator rotate POLICY [POLICY...]")
    selected = _selected(config, args.policy)
    if args.revoke_previous_now:
        _confirm_emergency(args, [p.name for p in selected])
    journal = _journal(config, read_only=args.dry_run)
    clock = SystemClock()
    results: list[RunResult] = []
    worst = EXIT_OK
    for policy in selected:
        try:
            due = due_now(policy, journal, clock) if args.if_due else None
        except (NoNextDue, RotatorError) as exc:  # one policy's (its journal reads too): the others still run
            error = _unschedulable(policy.name, exc) if isinstance(exc, NoNextDue) else exc
            _print_error(error)
            worst = max(worst, _exit_code(error))
            results.append(RunResult(policy.name, "failed", message=REDACTOR.redact(str(error))))
            continue
        if due is not None and not due.due:
            message = "not due"
            if due.recover_first and args.dry_run:
                message += "; would first recover its unfinished run(s)"
            elif due.recover_first:  # an interrupted run must not wait a whole interval for its recovery
                try:
                    message += "; " + "; ".join(_engine(config, policy, journal).recover() or ["recovered"])
                except RotatorError as exc:
                    _print_error(exc)
                    worst = max(worst, _exit_code(exc))
            results.append(RunResult(policy.name, "nothing-to-do", message=message))
            continue
        try:
            results.append(_engine(config, policy, journal).rotate(
                dry_run=args.dry_run, revoke_previous_now=args.revoke_previous_now, reason=reason))
        except RotatorError as exc:
            _print_error(exc)
            worst = max(worst, _exit_code(exc))
            results.append(RunResult(policy.name, "failed", message=REDACTOR.redact(str(exc))))
    text = "\n".join(f"{r.policy}: {r.state}" + (f" {r.new_token_id}" if r.new_token_id else "")
                     + (f" - {r.message}" if r.message else "") for r in results)
    _emit(args, [r.to_json() for r in results], text)
    if not args.policy:  # --all: and the policies the file lost with their work (`status` exits 4 for them)
        _report_removed_work(config, journal)
    return worst


def _confirm_emergency(args: argparse.Namespace, names: list[str]) -> None:
    """--revoke-previous-now breaks every consumer still holding the previous token: confirm it."""
    if args.dry_run:
        raise ConfigError("--revoke-previous-now and --dry-run exclude each other", hint="drop one of them")
    if args.yes:
        return
    what = f"revoke the previous token of {', '.join(names) or '(no policy)'} at once, skipping grace"
    if not sys.stdin.isatty():
        raise ConfigError(f"--revoke-previous-now would {what}; confirm with --yes",
                          hint="rotator rotate POLICY --revoke-previous-now --yes --reason TEXT")
    answer = input(f"This will {what}; consumers still holding it fail at once. Type yes to go on: ")
    if answer.strip().lower() != "yes":
        raise ConfigError("emergency rotation not confirmed", hint="answer yes, or pass --yes")


def cmd_status(args: argparse.Namespace) -> int:
    rows, _, problems, (config, journal) = _statuses(args, _duration_arg("--revocation-slack", args.revocation_slack))
    from rotator.config.schedule import format_duration
    from rotator.observe.status import render_table

    _emit(args, [s.to_json() for s in rows], render_table(rows))
    for s in rows:
        if s.expires_first and s.expires_at is not None:
            when = ("has expired" if s.expires_at <= s.now
                    else f"expires in {format_duration(s.expires_at - s.now, units=2)}, before its next rotation")
            print(f"rotator: attention: {one_line(s.policy)}: its current token {one_line(str(s.current_token_id))} "
                  f"{when}", file=sys.stderr)
            print(f"fix: {one_line(with_policy_file(f'rotate it now: `rotator rotate {s.policy}`'))}", file=sys.stderr)
        if s.interrupted_runs:
            # (its candidate may be live and published nowhere: nothing finishes the run but a recovery)
            print(f"rotator: attention: {one_line(s.policy)}: interrupted: {s.interrupted_runs} unfinished run(s) "
                  "whose lease expired (the process running it is gone)", file=sys.stderr)
            print(f"fix: {one_line(with_policy_file(f'run `rotator recover {s.policy}`'))}", file=sys.stderr)
    worst = EXIT_ATTENTION if any(s.needs_attention for s in rows) else EXIT_OK
    # Every policy's status asked for: a policy the file lost with unfinished work is one that needs attention
    # (its old token stays valid: nothing revokes it), as the daemon's rotator_removed_policies_with_work
    if not args.policy and _report_removed_work(config, journal):
        worst = EXIT_ATTENTION
    if args.check:
        failing = [s for s in rows if s.compliance is not None and not s.compliance.compliant]
        for s in failing:
            assert s.compliance is not None
            for problem in s.compliance.problems():
                print(f"rotator: out of compliance: {one_line(s.policy)}: {one_line(problem)}", file=sys.stderr)
        if failing:
            worst = EXIT_ATTENTION
        if not rows and not problems:  # an empty ConfigMap passed every check: nothing is rotated at all
            print("rotator: out of compliance: the policy file holds no [[policy]], so no token is rotated",
                  file=sys.stderr)
            worst = EXIT_ATTENTION
    _raise_first(problems)
    return worst


#: an example each duration flag accepts (--keep-history is held to one day at least)
_DURATION_EXAMPLES = {"--keep-history": "400d", "--max-age": "90d", "--revocation-slack": "1h"}


def _duration_arg(flag: str, text: str) -> timedelta:
    from rotator.config.schedule import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}", hint=f"e.g. {flag} {_DURATION_EXAMPLES.get(flag, '1h')}") from None


def cmd_inventory(args: argparse.Namespace) -> int:
    from rotator.observe import inventory as inv_mod
    from rotator.runners.cli_options import CONFIG_ENV, DEFAULT_CONFIG

    max_age = _duration_arg("--max-age", args.max_age)
    _check_inventory_flags(args)
    if args.suggest and args.output in ("json", "csv"):
        # The suggestion is TOML for a person to read: after JSON or CSV on stdout it would break the
        # parse of whatever reads it, and stderr carries log lines, so there is no clean place for it.
        raise ConfigError(f"--suggest prints TOML for a person, which would corrupt --output {args.output}",
                          hint="run `rotator inventory --suggest` (table output) on its own for the suggestions")
    bare = bool(args.url or args.influxctl_profile)
    config: Config | None = None
    # With bare targets, the policy file is optional only as the default (./rotator.toml): one named
    # by -c or $ROTATOR_CONFIG that cannot be read is a mistake (a typo would classify every token
    # without the journal and exit 0), not a request to list the bare targets alone.
    named = bool(os.environ.get(CONFIG_ENV)) or args.config != DEFAULT_CONFIG
    if not args.no_policies and (not bare or named or Path(args.config).exists()):
        config = _config(args)
    if config is None and not bare:
        raise ConfigError("nothing to list", hint="give a policy file (-c) or --url / --influxctl-profile")
    known = list(config.policies) if config is not None else []
    selected = [config.policy(n) for n in args.policy] if config is not None and args.policy else known
    targets = inv_mod.policy_targets(selected) if config is not None else []
    for spec in args.influxctl_profile:
        targets += inv_mod.influxctl_profile_targets(spec, args.token_file, args.influxctl or "influxctl")
    if args.url:
        targets.append(inv_mod.url_target(args.url, args.kind, args.token_file, org_id=args.org_id,
                                          product=args.product, account_id=args.account_id,
                                          cluster_id=args.cluster_id, tls_verify=not args.insecure))
    # Only --revoke-orphans writes (audit events); a listing never creates a journal, as `status`.
    journal = _journal(config, read_only=not args.revoke_orphans) if config is not None else None
    now = SystemClock().now()
    result = inv_mod.take_inventory(targets, journal, known, now, unmanaged_max_age=max_age,
                                    include_revoked=args.include_revoked)
    # (a cluster's error text and a target's name reach the terminal: no escape sequence of theirs does, and
    # no token given as --token-file's path, quoted by the error about reading it)
    for target, message in result.errors:
        print_error(f"{target}: {message}")
    worst = EXIT_FAILED if result.errors else EXIT_OK
    _print_inventory(args.output, result, now)
    if args.suggest:
        _print_suggestions(result, config, targets)
    revoked: set[int] = set()  # (the entries --revoke-orphans revoked: --check no longer counts them)
    if args.revoke_orphans:
        orphans = [e for e in result.entries if e.cls == inv_mod.ORPHAN]
        # A target that could not be listed may hold orphans: "none" would be a claim nobody checked
        # (its error is printed above, and the exit code is 1 already).
        for target, message in result.errors:
            print(f"orphans on {one_line(target)} " + ("checked only in part: it could be listed only in part"
                  if message.startswith("listed only partly") else "not checked: it could not be listed"),
                  file=sys.stderr)
        if not orphans:
            if not result.errors:
                print("no orphan to revoke", file=sys.stderr)
        elif config is None or journal is None:
            raise ConfigError("--revoke-orphans needs the policy file whose journal minted them", hint="pass -c FILE")
        elif _confirmed(args, f"revoke {len(orphans)} orphan token(s): "
                        f"{', '.join(one_line(e.token_id) for e in orphans)}?"):
            r = config.settings.retry
            from rotator.core.retry import RetryPolicy

            options = {"retry": RetryPolicy(r.attempts, r.base_delay.total_seconds(), r.max_delay.total_seconds()),
                       "lease_ttl": config.settings.lease_ttl}
            for entry, outcome in inv_mod.revoke_orphans(result, journal, known, options):
                print(f"{entry.policy}: orphan {one_line(entry.token_id)}: {one_line(outcome)}", file=sys.stderr)
                if outcome == "revoked":
                    revoked.add(id(entry))
                else:
                    worst = max(worst, EXIT_FAILED)
        else:
            print("nothing revoked", file=sys.stderr)
            worst = max(worst, EXIT_FAILED)
    if args.check:
        findings = [e for e in result.findings() if id(e) not in revoked]
        for e in findings:
            what = "orphan?" if e.cls == inv_mod.SUSPICIOUS else e.cls
            flags = f" ({','.join(e.flags)})" if e.flags else ""
            print(f"rotator: attention: {one_line(e.target)}: {what} token {one_line(e.token_id)}{flags}: "
                  f"{one_line(e.reason)}", file=sys.stderr)
        if findings:
            worst = max(worst, EXIT_ATTENTION)
        if config is not None and not known:  # as `status --check`: an empty ConfigMap rotates nothing at all
            print("rotator: out of compliance: the policy file holds no [[policy]], so no token is rotated",
                  file=sys.stderr)
            worst = max(worst, EXIT_ATTENTION)
    return worst


def _check_inventory_flags(args: argparse.Namespace) -> None:
    """ConfigError (exit 2) for a flag given without the one it belongs to. Ignored, it would let a forgotten
    --url pass `inventory --check` (exit 0 after listing the policies alone, the instance never listed)."""
    if args.url and not (args.kind and args.token_file):
        raise ConfigError("--url needs --kind and --token-file", hint="e.g. --url URL --kind influxdb3 --token-file F")
    if args.kind == "influxdb2" and args.url and not args.org_id:
        raise ConfigError("--kind influxdb2 needs --org-id", hint="the organization whose authorizations to list")
    dedicated = args.kind == "management-api" and args.product == "dedicated"
    needs = [  # (flag given, what it goes with, whether that is given, the fix)
        ("--kind", args.kind, "--url", args.url, "add --url URL (the instance to list), or drop --kind"),
        ("--insecure", args.insecure, "--url", args.url,
         "add --url URL, or drop --insecure (an influxctl profile's TLS settings are its [profile.tls])"),
        ("--token-file", args.token_file, "--url or --influxctl-profile", args.url or args.influxctl_profile,
         "add --url URL --kind KIND or --influxctl-profile PATH[:NAME] (what the token lists), or drop --token-file"),
        ("--influxctl", args.influxctl, "--influxctl-profile", args.influxctl_profile,
         "add --influxctl-profile PATH[:NAME], or drop --influxctl"),
        ("--org-id", args.org_id, "--url and --kind influxdb2", args.url and args.kind == "influxdb2",
         "add --url URL --kind influxdb2, or drop --org-id"),
        ("--product", args.product, "--url and --kind management-api", args.url and args.kind == "management-api",
         "add --url URL --kind management-api, or drop --product"),
        *((flag, value, "--url, --kind management-api and --product dedicated", args.url and dedicated,
           f"add --url URL --kind management-api --product dedicated, or drop {flag}")
          for flag, value in (("--account-id", args.account_id), ("--cluster-id", args.cluster_id))),
        ("--yes", args.yes, "--revoke-orphans", args.revoke_orphans,
         "drop --yes (a listing asks nothing), or add --revoke-orphans"),
    ]
    for flag, given, wanted, present, fix in needs:
        if given and not present:
            raise ConfigError(f"{flag} goes with {wanted}; given without, it would be silently ignored", hint=fix)


def _confirmed(args: argparse.Namespace, question: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError("--revoke-orphans asks before revoking, and stdin is not a terminal",
                          hint="add --yes to revoke without asking (a script, a cron job)")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _print_inventory(output: str, result: Any, now: datetime) -> None:
    import csv
    import io

    from rotator.config.schedule import format_duration
    from rotator.observe.untrusted_text import csv_cell

    rows = [e.to_json() for e in result.entries]
    if output == "json":
        from rotator.config.inline_secrets import mask_tokens

        # (an error may quote a path given on the command line, where a token may have been pasted)
        print(json.dumps({"tokens": rows, "counts": [
            {"issuer": t, "class": c, "count": n} for (t, c), n in sorted(result.counts().items())],
            "errors": [{"issuer": mask_tokens(t), "error": mask_tokens(m)} for t, m in result.errors]}, indent=2))
        return
    if output == "csv":
        buffer = io.StringIO()
        columns = ["issuer", "kind", "token_id", "class", "state", "flags", "policy", "run_id", "created_at",
                   "expires_at", "revoked_at", "age_s", "reason", "description"]
        writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            # The issuer's text (descriptions, ids) is anyone's who can create a token: no formulas.
            writer.writerow({k: csv_cell(v) for k, v in {**row, "flags": ";".join(row["flags"])}.items()})
        print(buffer.getvalue(), end="")
        return
    header = ("ISSUER", "TOKEN ID", "CLASS", "STATE", "POLICY", "AGE", "EXPIRES", "FLAGS", "WHY")
    lines = [header]
    for e in result.entries:
        lines.append((
            one_line(e.target), one_line(e.token_id), "orphan?" if e.cls == "suspicious" else e.cls, one_line(e.state),
            one_line(e.policy or "-"),
            format_duration(e.age) if e.age is not None else "-",
            "never" if e.expires_at is None else ("passed" if e.expires_at <= now else
                                                  "in " + format_duration(e.expires_at - now)),
            ",".join(e.flags) or "-", one_line(e.reason + (f" [{e.description}]" if e.description else "")),
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header) - 1)]
    for row in lines:
        print("  ".join([c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)] + [row[-1]]).rstrip())
    counts = result.counts()
    summary = {c: sum(n for (_, cls), n in counts.items() if cls == c) for c in ("managed", "orphan", "suspicious",
                                                                              "unmanaged", "retired")}
    print(f"{len(result.entries)} token(s): " + ", ".join(f"{n} {c}" for c, n in summary.items()))


def _print_suggestions(result: Any, config: Config | None, targets: list[Any]) -> None:
    from rotator.observe import inventory as inv_mod

    raw = inv_mod.read_raw_config(config.path) if config is not None else {}
    raw_policies = {str(p.get("name")): p for p in raw.get("policy", []) if isinstance(p, dict)}
    taken = set(raw_policies)
    sources = {t.name: (t.policies[0].name if t.policies else None) for t in targets}
    for entry in result.entries:
        if entry.cls != inv_mod.UNMANAGED or entry.state != "active":
            continue
        source = raw_policies.get(sources.get(entry.target) or "")
        text = inv_mod.suggest_policy(entry, source, None, taken)
        taken.add(text.split('name = "', 1)[1].split('"', 1)[0])
        print("\n" + text, end="")




def _for_each(args: argparse.Namespace, action: Callable[[Engine], list[str]]) -> int:
    config = _config(args)
    # recover and revoke-expired make no journal: on a new one they have nothing to do, and one made at
    # a wrong path (a moved policy file, an old relative journal) would hide the journal in use
    journal = _journal(config, create=False)
    worst = EXIT_OK
    out: dict[str, list[str]] = {}
    for policy in _selected(config, args.policy, all_enabled=False):
        try:
            out[policy.name] = action(_engine(config, policy, journal))
        except RotatorError as exc:
            _print_error(exc)
            worst = max(worst, _exit_code(exc))
            out[policy.name] = [f"error: {REDACTOR.redact(str(exc))}"]
        if any(": revocation failed" in line for line in out[policy.name]):
            worst = max(worst, EXIT_ATTENTION)
    text = "\n".join(f"{name}: {line}" for name, lines in out.items() for line in (lines or ["nothing to do"]))
    _emit(args, out, text)
    if not args.policy:  # every policy of the file: and those the file lost with their work
        # (the exit code stays that of this command's own work, as for a revocation that gave up: `status` exits 4)
        _report_removed_work(config, journal)
    return worst


def cmd_recover(args: argparse.Namespace) -> int:
    if args.abandon is not None:
        return _abandon(args)
    if args.reason:
        raise ConfigError("--reason goes with --abandon", hint="drop --reason, or add --abandon RUN_ID")
    return _for_each(args, lambda engine: engine.recover())


def _abandon(args: argparse.Namespace) -> int:
    """``recover --abandon RUN_ID --reason TEXT POLICY``: an open run of a cluster gone for good closed as failed."""
    return _decided_by_hand(args, "--abandon", "RUN_ID", "the one whose run recovery cannot close",
                            '"cluster A decommissioned, INC-42"',
                            lambda engine, reason: engine.abandon_run(args.abandon, reason))


#: the longest --reason (of a dismissal, an abandoned run, an emergency rotation, a repair): it is kept in the audit
#: chain (and its prune checkpoints) and shown in every report of a period that holds it
MAX_REASON_CHARS = 500


def cmd_revoke_expired(args: argparse.Namespace) -> int:
    if args.dismiss is not None:
        return _dismiss(args)
    if args.reason:
        raise ConfigError("--reason goes with --dismiss", hint="drop --reason, or add --dismiss TOKEN_ID")

    from rotator.core.engine import postponed_advice

    def revoke(engine: Engine) -> list[str]:
        lines = engine.revoke_due(retry_failed=args.retry_failed)
        if not args.retry_failed:
            reported = {line.split(":", 1)[0] for line in lines}  # "token ID: ..." of this run's own work
            # A due revocation that waits out the backoff of a failed try is not "nothing to do": its token
            # is still valid (the leaked one, after an emergency rotation whose revocation failed). This
            # pass keeps the backoff (a timer must not retry in a loop); a person who fixed the cause
            # tries it at once with --retry-failed.
            lines += [f"token {rev.token_id}: revocation postponed until {rfc3339_seconds(rev.next_try_at)} "
                      f"(last error: {rev.last_error or 'none recorded'}){postponed_advice(engine.policy.name)}"
                      for rev in engine.postponed_revocations()
                      if rev.next_try_at is not None and f"token {rev.token_id}" not in reported]
            # A revocation that gave up is not tried again by itself, and its token is still valid: every
            # run says so until it is retried or done. The exit code stays that of this run's own work
            # (`status` exits 4 for it): a claim refused as not rotator's stays failed for good.
            lines += [f"token {token_id}: an earlier revocation gave up and is not retried by itself; the token "
                      f"is still valid: fix the cause, then "
                      f"`rotator revoke-expired --retry-failed {engine.policy.name}` (if it must stay valid: "
                      f"`rotator revoke-expired --dismiss {token_id} --reason TEXT {engine.policy.name}`)"
                      for token_id in engine.failed_revocations()
                      if f"token {token_id}" not in reported]
        return lines

    return _for_each(args, revoke)


def _dismiss(args: argparse.Namespace) -> int:
    """``revoke-expired --dismiss TOKEN_ID --reason TEXT POLICY``: a failed revocation closed, not done."""
    if args.retry_failed:
        raise ConfigError("--dismiss and --retry-failed exclude each other", hint="drop one of them")
    return _decided_by_hand(args, "--dismiss", "TOKEN_ID", "the one whose revocation gave up",
                            '"team X\'s token, still in use by their ingest"',
                            lambda engine, reason: engine.dismiss_revocation(args.dismiss, reason))


def _decided_by_hand(args: argparse.Namespace, flag: str, item: str, which: str, example: str,
                     act: Callable[[Engine, str], str]) -> int:  # fmt: skip
    """What a person decided for one policy (``flag ITEM --reason TEXT POLICY``), recorded with the reason."""
    if len(args.policy) != 1:
        raise ConfigError(f"{flag} needs exactly one policy: {which}",
                          hint=f"rotator {args.command} {flag} {item} --reason TEXT POLICY")
    reason = _check_reason(args.reason)
    if not reason:
        raise ConfigError(f"{flag} needs --reason: it is recorded in the audit trail", hint=f"e.g. --reason {example}")
    config = _config(args)
    policy = config.policy(args.policy[0])
    message = act(_engine(config, policy, _journal(config)), reason)
    _emit(args, {policy.name: [message]}, f"{policy.name}: {message}")
    return EXIT_OK


def _check_reason(reason: str) -> str:
    """``--reason`` stripped, refused when it holds token-shaped text, is longer than
    :data:`MAX_REASON_CHARS` or holds control characters (exit 2). It is kept in the audit chain (and
    its prune checkpoints) and shown in the reports of its period and in the command's output: a token
    pasted into it would leak to every reader of those, and a line break or escape sequence would act
    on their terminals. The message never repeats it."""
    from rotator.config.inline_secrets import find_token

    if find_token(reason):
        raise ConfigError("--reason holds text shaped like a token or an access key; it would be kept in the audit "
                          "trail and shown in reports, so it is refused (and not repeated here)",
                          hint="say why in words, and name a token by its id, never its value; if a token was "
                          "pasted, treat it as leaked: rotate it")
    reason = reason.strip()
    # one_line writes out what acts on a terminal (C0/C1 controls, DEL, bidi controls); str.isprintable
    # would also refuse a no-break space, an ideographic space or an emoji's joiner, pasted from a chat
    if len(reason) > MAX_REASON_CHARS or one_line(reason) != reason:
        raise ConfigError(f"--reason must be one line of at most {MAX_REASON_CHARS} printable characters",
                          hint="shorten it: the report shows it in a column of its own")
    return reason


def cmd_bootstrap(args: argparse.Namespace) -> int:
    reason = _check_reason(args.reason)
    if reason and not args.replace:  # audited only with a repair: never silently dropped
        raise ConfigError("--reason goes with --replace", hint="drop --reason, or add --replace (the repair of a "
                          "policy whose published token no longer works: docs/operations.md)")
    config = _config(args)
    policy = config.policy(args.policy)
    value = _read_token_file(args.token_file)
    if not value:
        raise ConfigError(f"--token-file {args.token_file} is empty", hint="write the token value into it")
    if any(c.isspace() or not c.isprintable() for c in value):
        # Never the content: it may hold the token. influxctl >= 2.11 prints a table before the token.
        lines = len(value.splitlines())
        raise ConfigError(
            f"--token-file {args.token_file} holds more than a token value: "
            + (f"{lines} lines" if lines > 1 else "spaces or control characters inside it"),
            hint="put only the token into it: `influxctl management create` and `token create` print a table and "
            "then the token on the last line (docs/operations.md)",
        )
    from rotator.core.contracts import token_id_problem

    id_problem = token_id_problem(args.token_id) if args.token_id else "is empty"
    if id_problem is not None:
        raise ConfigError(f"--token-id {id_problem}",
                          hint="give the id influxctl or the issuer printed for the token (e.g. a UUID), not its value")
    expires = None
    if args.expires_at:
        try:
            expires = parse_rfc3339(args.expires_at)
        except ValueError:
            raise ConfigError(f"--expires-at {args.expires_at!r} is not RFC 3339",
                              hint="e.g. 2027-01-01T00:00:00Z") from None
        if expires <= SystemClock().now():  # published, it would break every consumer at once
            raise ConfigError(f"--expires-at {args.expires_at} has passed: that token no longer works",
                              hint="create a new token, and give its expiry (or none, if it never expires)")
    if args.replace and not reason:
        raise ConfigError("--replace needs --reason", hint='e.g. --reason "current token revoked by incident 42"')
    from rotator.core.secret import Secret

    result = _engine(config, policy, _journal(config)).bootstrap(
        Secret(value), args.token_id, expires, replace=args.replace, reason=reason)
    _emit(args, result.to_json(), f"{policy.name}: {result.message}")
    return EXIT_OK


def _read_token_file(name: str) -> str:
    """The text of --token-file ``name`` without surrounding white space or byte-order mark, read as a
    policy file's ``{ file = ... }`` credential is (rotator/core/credentials.py): a regular file of
    sensible size only, so a FIFO is refused, not waited on for ever, and /dev/zero is not read to the
    end of memory. The caller refuses a value that is more than a token; no message quotes it."""
    from rotator.core.credentials import plain_text, read_credential_file

    hint = "pass the regular file holding only the token created with influxctl (a symbolic link to one is fine)"
    try:
        raw = read_credential_file(Path(name), "--token-file")
    except ConfigError as exc:  # not a regular file, or too large: its hint is a policy file's
        raise ConfigError(str(exc), hint=hint) from None
    except PermissionError as exc:  # e.g. a file in /root, and the command run as the service user
        import pwd
        import shlex

        try:
            me = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            me = str(os.geteuid())
        raise ConfigError(
            f"cannot read --token-file {name}: {exc.strerror or exc} (this command runs as {me})",
            hint=f"put the token where {me} may read it, e.g. `sudo install -o {me} -m 0400 {shlex.quote(name)} "
                 f"/var/lib/rotator/first-token`, pass that path, and remove the file once bootstrapped") from None
    except OSError as exc:
        raise ConfigError(f"cannot read --token-file {name}: {exc.strerror or exc}", hint=hint) from None
    except ValueError:  # a NUL in the path
        raise ConfigError("cannot read --token-file: the path holds a NUL character", hint=hint) from None
    try:
        return plain_text(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"--token-file {name} is not UTF-8 text, so it holds no token",
                          hint="write only the token value into it") from None


def cmd_daemon(args: argparse.Namespace) -> int:
    from rotator.runners.daemon import cmd_daemon as run_daemon

    return run_daemon(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from rotator.runners.demo import run_demo

    # (-c and --output json, which the demo cannot honour, were refused by _refuse_unused_options)
    # Each step logs at warning (the announced retries), or at debug when asked, to the --log-file too
    logging = ["--log-level", "debug" if args.log_level == "debug" else "warning", "--log-format", args.log_format]
    return run_demo(keep=args.keep, logging=[*logging, *(["--log-file", args.log_file] if args.log_file else [])])


def _when(moment: datetime, now: datetime) -> str:
    return "now" if moment <= now else rfc3339_seconds(moment)


def cmd_audit(args: argparse.Namespace) -> int:
    from rotator.core import audit_chain

    kept = [_kept_link(text) for text in args.expect]
    config = _config(args)
    keep = _keep_history(args, config)
    journal = _journal(config, read_only=True)
    report, tables = _verified(journal)
    problems, pruned = audit_chain.check_kept_links(
        journal, report, kept, keep, SystemClock().now()) if kept and tables else ([], [])  # fmt: skip
    text = report.text()  # (its fields from the journal are written out on one line: ChainReport.text)
    if kept and not tables:
        text += f"\nkept links: none of {len(kept)} checked, the journal lacks the chain's tables"
    elif kept:
        text += (f"\nkept links: {len(kept) - len(pruned) - len(problems)} of {len(kept)} held"
                 + (f"; {len(pruned)} pruned since, cannot be checked: seq {', '.join(map(str, pruned))}"
                    if pruned else ""))
    _emit(args, {**report.as_dict(), "kept_links": {"problems": problems, "pruned": pruned, "checked": tables}}
          if kept else report.as_dict(), text)
    if not report.ok:  # (json.dumps writes out every control character that acts on a terminal)
        print(f"rotator: audit chain broken at {json.dumps(report.broken, default=str)}", file=sys.stderr)
        print("fix: " + ("compare with a backup or an earlier report's head; the events from that link on cannot "
                         "be trusted" if tables else "restore the journal from a backup and compare; find out who "
                         "could write to it") + " (docs/compliance.md)", file=sys.stderr)
    for problem in problems:
        print(f"rotator: {one_line(problem)}", file=sys.stderr)
    if problems:
        print("fix: compare the journal with a backup; the events after the last link that holds cannot be trusted "
              "(docs/compliance.md); if a prune kept less than keep_history (`rotator prune --keep-history`), pass "
              "the shortest it kept as --keep-history", file=sys.stderr)
    return EXIT_OK if report.ok and not problems else EXIT_ATTENTION


def _verified(journal: Journal) -> tuple[ChainReport, bool]:
    """The journal's chain verified, and whether its tables are there: one of them dropped is a broken
    chain (exit 4, as `rotator report` says), not a journal that cannot be read (exit 1)."""
    from rotator.core import audit_chain
    from rotator.core.errors import JournalError

    try:
        return audit_chain.verify(journal), True
    except JournalError:
        from rotator.observe.report import _missing_tables  # the report's probe of the catalogue, per backend

        missing = _missing_tables(journal)
        if not missing:  # the journal's own error: a lost connection, a locked file
            raise
    return audit_chain.tables_missing(missing), False


def _keep_history(args: argparse.Namespace, config: Config) -> timedelta:
    """`audit verify`'s keep_history: --keep-history, held to the floor the policy file's is, or the file's."""
    if args.keep_history is None:  # given empty, it is refused below: an empty flag is no default
        return config.settings.keep_history
    keep = _duration_arg("--keep-history", args.keep_history)
    if (short := _history_too_short(config, keep)) is not None:
        # no prune of rotator's keeps less: a shorter value would pass a chain rewritten and then pruned
        raise ConfigError(f"--keep-history {short.message}", hint=short.hint)
    return keep


def _kept_link(text: str) -> KeptLink:
    from rotator.core.audit_chain import KeptLink

    link, at_sign, when = text.partition("@")
    seq, _, digest = link.partition(":")
    if not (re.fullmatch(r"[0-9]+", seq) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise ConfigError(f"--expect {text!r} is not SEQ:HASH@TIME",
                          hint="pass the head an earlier `rotator audit verify` or report printed: its seq, a colon, "
                          "its 64-digit SHA-256, an @ and its time (e.g. --expect "
                          "1234:9f86d0...@2026-03-01T12:00:00.000000Z; @TIME may be left out)")
    at = None
    if at_sign:
        try:
            at = parse_rfc3339(when)
        except ValueError:
            raise ConfigError(f"--expect {text!r}: {when!r} after the @ is not an RFC 3339 time",
                              hint="pass the head as `rotator audit verify` prints it, e.g. "
                              "1234:9f86d0...@2026-03-01T12:00:00.000000Z") from None
    return KeptLink(int(seq), digest, at)


def cmd_prune(args: argparse.Namespace) -> int:
    from rotator.core import audit_chain
    from rotator.core.journal import ts

    config = _config(args)
    # `--keep-history ""` (an unset variable in a script) is refused, not the default: prune deletes
    keep = (_duration_arg("--keep-history", args.keep_history) if args.keep_history is not None
            else config.settings.keep_history)  # fmt: skip
    if args.keep_history is not None and (short := _history_too_short(config, keep)) is not None:
        # The policy file's keep_history is held to this floor; the flag is too, or a prune of the whole
        # history (after a rewrite of the chain) would leave nothing for `audit verify --expect` to check.
        raise ConfigError(f"--keep-history {short.message}", hint=short.hint)
    now = SystemClock().now()
    try:
        # create=False: a prune of a path or URL that names no journal would make an empty one and prune
        # nothing (a wrong `journal` setting would go unnoticed)
        result = audit_chain.prune(_journal(config, create=False), ts(now - keep), ts(now))
    except ValueError as exc:
        raise NeedsAttention(str(exc), hint="run `rotator audit verify`; keep the journal as it is for "
                             "investigation") from None
    _emit(args, {"events": result.events, "runs": result.runs, "revocations": result.revocations,
                 "checkpoint_seq": result.checkpoint.seq if result.checkpoint else None}, result.text())
    return EXIT_OK


def _history_too_short(config: Config, keep: timedelta) -> Problem | None:
    """Why keeping only ``keep`` of history is not a prune rotator makes (the floor the policy file's
    keep_history is held to, :func:`rotator.config.policy.history_problems`: one day, or the longest
    schedule interval when every policy rotates more often), or None."""
    from rotator.config.policy import history_problems

    problems = history_problems(keep, config.policies)
    return problems[0] if problems else None


def cmd_report(args: argparse.Namespace) -> int:
    from rotator.observe import report as report_mod

    report_format = _report_format(args)
    config = _config(args)
    if args.output_file:  # before the report is built: what it reads must not be what it writes
        _refuse_to_overwrite("--output-file", args.output_file,
                             [("the policy file", config.path), *journal_files(config.journal_url())])
    # (is not None: an empty --from "" is a bad date, not the default)
    end = report_mod.parse_date("--to", args.end) if args.end is not None else SystemClock().now()
    start = report_mod.parse_date("--from", args.start) if args.start is not None else _default_start(args.end, end)
    if end <= start and args.end is None:
        raise ConfigError(f"--from {args.start} is in the future, and --to defaults to now",
                          hint="give a --from in the past, or a --to after it (e.g. --from 2026-01-01 --to 2026-04-01)")
    if end <= start:
        raise ConfigError(f"--to {args.end} is not after --from {args.start}",
                          hint="e.g. --from 2026-01-01 --to 2026-04-01")
    policies = _selected(config, args.policy, all_enabled=False)
    evidence = report_mod.build(_journal(config, read_only=True), policies, start, end, SystemClock().now(),
                                in_file=[p.name for p in config.policies])
    # (names, run ids and token ids read from the journal, some from rows written outside rotator)
    if evidence.not_in_file:
        print(f"rotator: warning: the journal holds events in this period of policies that are not in "
              f"{config.path}, so the report does not show them: {_listed(evidence.not_in_file)}", file=sys.stderr)
    if evidence.not_in_chain:
        print(f"rotator: runs the audit chain does not back, chained publications without a matching run row, or "
              f"run rows rotator cannot read (written or deleted outside rotator): "
              f"{_listed(evidence.not_in_chain)}", file=sys.stderr)
        print("fix: compare the journal with a backup; the report counts a rotation only where the chain says so "
              "(docs/compliance.md)", file=sys.stderr)
    if evidence.revocations_not_in_chain:
        print(f"rotator: revocation rows contradict the audit chain (done without its event, due later than the "
              f"chain allows, or missing where it scheduled or tried one: written or deleted outside rotator): "
              f"{_listed(evidence.revocations_not_in_chain)}", file=sys.stderr)
        print("fix: compare the journal with a backup; the report counts none of these as done, and the tokens "
              "may still be valid: check them with the issuer (docs/compliance.md)", file=sys.stderr)
    text = report_mod.render(evidence, report_format)
    if args.output_file:
        try:
            _write_whole(Path(args.output_file), text)
        except OSError as exc:
            from rotator.config.policy_source import output_write_error

            raise output_write_error(exc, Path(args.output_file), "--output-file", hint="pass a --output-file in "
                                     "an existing directory this user may write (or none: the report goes to "
                                     "stdout)") from None
        print(f"wrote {args.output_file}: {len(evidence.policies)} policies, chain "
              f"{'verified' if evidence.chain.ok else 'BROKEN'}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    clean = evidence.chain.ok and not evidence.not_in_chain and not evidence.revocations_not_in_chain
    return EXIT_OK if clean else EXIT_ATTENTION


def _write_whole(path: Path, text: str) -> None:
    """``text`` into ``path`` whole or not at all, mode 0600 (a report names token ids and holds masked
    errors): :func:`rotator.config.policy_source.write_output`."""
    from rotator.config.policy_source import write_output

    write_output(path, text, private=True)


def _listed(values: Sequence[str]) -> str:
    """``values`` from the journal, comma-separated on one line, their control characters written out."""
    return ", ".join(one_line(str(v)) for v in values)


def _default_start(text: str | None, end: datetime) -> datetime:
    """The default --from: 90 days before --to (``text``, parsed as ``end``)."""
    try:
        return end - timedelta(days=90)
    except OverflowError:  # before the year 1: datetime cannot hold it
        raise ConfigError(f"--to {text} is less than 90 days after 0001-01-01, the earliest date, so the default "
                          "--from (90 days before --to) is no date", hint="give a --from too, or a later --to "
                          "(e.g. --from 2026-01-01 --to 2026-04-01)") from None


def _report_format(args: argparse.Namespace) -> str:
    """--format, default html. ``--output json`` (the common option: JSON on stdout) is --format json;
    with another --format it is refused rather than ignored."""
    if args.output != "json":
        return args.report_format or "html"
    if args.report_format not in (None, "json"):
        raise ConfigError(f"--output json and --format {args.report_format} disagree: the report has one format",
                          hint="drop --output json (--format sets the report's format), or use --format json")
    return "json"


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": cmd_validate, "schema": cmd_schema, "bundle": cmd_bundle, "plan": cmd_plan, "rotate": cmd_rotate,
    "status": cmd_status, "recover": cmd_recover, "revoke-expired": cmd_revoke_expired,
    "bootstrap": cmd_bootstrap, "demo": cmd_demo, "inventory": cmd_inventory, "daemon": cmd_daemon,
    "sync": sync_cmd.cmd_sync, "audit": cmd_audit, "prune": cmd_prune, "report": cmd_report,
}  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
