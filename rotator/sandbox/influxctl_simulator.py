"""A SIMULATED ``influxctl`` (InfluxDB Clustered / Cloud Dedicated CLI) for ``rotator demo`` and tests.

Not the real CLI and never used in production: it talks to no cluster, only to a local JSON state
file (``$FAKE_INFLUXCTL_STATE``, see :mod:`rotator.sandbox.influxctl_state`). Its ``--version``
and help say so. Nothing puts it on ``PATH``: it runs only through a launcher that a policy names
explicitly (``rotator demo`` writes one that runs ``python -m rotator.sandbox.influxctl_simulator``;
the tests have their own). The fault injection (``faults`` in the state file) is for tests only.

Commands: ``management create|list|revoke``, ``token create|list|get|revoke|update`` (database
tokens; ``delete`` is an alias of ``revoke``) and ``query`` (only ``SELECT <integer>``: enough
to prove that a database token works).

It reproduces influxctl >= 2.11 as documented (facts file, section 1): global flags before the
command, the TOML profile (unknown keys are fatal), authentication from the profile, the table
and JSON outputs, stderr ``warn`` lines, revoked/expired tokens, an activation delay, and the
faults a test queues in the state file (see ``influxctl_state``). Stdlib only.

Where the docs are silent, the fake decides (so a test can rely on it):

- Credentials: ``mgmt_token`` wins over ``[profile.auth.token] token_file``, which wins over
  ``[profile.auth.oauth2]``; only the first one configured is tried. No env var for the mgmt token
  (its name is undocumented). A profile with neither, or with only OAuth2, fails with "login
  required" (the fake has no cached device-flow login).
- Authentication failures all answer ``rpc error: code = Unauthenticated desc = unauthorized``,
  like a server that does not say why; ``--debug`` adds the reason on stderr.
- Flags are parsed like Go's ``flag`` package under urfave/cli v2: global flags only before the
  command, command flags only before the first positional argument (``revoke ID --force`` treats
  ``--force`` as a token id). ``-h``/``--help`` print help and exit 0. Flags it cannot parse
  (``flag provided but not defined: -x``, as an influxctl older than a flag shows it): ``Incorrect
  Usage: <error>``, a blank line and the help on stdout (urfave/cli v2 writes them to its
  ``App.Writer``, stdout by default), ``Error: <error>`` on stderr (what influxctl does with the error
  urfave/cli returns is undocumented), exit 1. A wrong number of arguments is the command's own
  ``Incorrect Usage`` on stderr.
- Cloud Dedicated: management and ``token`` commands reach the profile's ``account_id`` and
  ``cluster_id`` (``--account``/``--cluster`` override them). Another account than the state's, or a
  cluster the account does not have (the state's ``cluster_id`` and those ``add_cluster()`` added), is
  ``rpc error: code = NotFound desc = account "X" not found`` (``cluster "Y" not found in account
  "X"``), after authentication. Management tokens are the account's: listed, created and revoked
  through any of its clusters; database tokens are each cluster's own. ``query`` goes to ``host`` and
  checks neither. A Clustered profile names no account: nothing is checked.
- Unknown command: ``No help topic for 'x'`` on stderr, exit 1 (urfave/cli v2 itself exits 3).
- ``management create``: ``--description`` may be omitted (empty description) but not blank.
  ``--expires-at`` is parsed like Go's ``time.Parse(time.RFC3339, ...)``; a time not in the
  future is refused by the server (InvalidArgument). The create table prints unset times as an
  empty cell (as in the 2.11 release notes), the list table as ``1970-01-01T00:00:00Z``.
  ``create_output = "legacy"`` only drops the table; ``--format json`` is unchanged by it.
- ``management list --format json`` marshals like Go's encoding/json over protobuf structs: every
  empty field is omitted, and an empty list prints ``null`` (a nil slice), not ``[]``.
- ``management revoke``: without ``--force`` it asks once on stdout for all ids; "y"/"yes"
  proceeds, anything else is an error, EOF is ``Error: ... EOF``. Revoking an already revoked token
  succeeds and keeps the first ``revoked_at`` (idempotent). An unknown id is NotFound, a non-UUID
  id InvalidArgument; the others are still revoked and the exit status is 1.
- ``created_by`` is the creating management token's id, the user id for ``add_token`` tokens,
  and a fixed per-account id for the Clustered admin token.
- ``--timeout`` is validated as a Go duration and otherwise ignored: it bounds real API calls,
  and the fake's ``hang``/``pause`` faults sleep for their own ``seconds`` regardless.
- Faults fire only once a command would reach the server (after argument, config and credential
  checks, and after the revoke confirmation).

Database tokens (facts file 2.1; where the docs are silent, the fake decides):

- ``token ...`` commands authenticate like ``management ...`` (``mgmt_token`` or the Clustered
  admin token); any valid management token may manage database tokens
  (``mgmt_token_can_manage`` only concerns management tokens). A database token is not a
  management credential: used as ``mgmt_token`` it is Unauthenticated.
- ``token create [--read-database D]... [--write-database D]... [--expires-at T] [--format F]
  DESCRIPTION``: the description is the one positional argument (required, not blank; a second
  positional is a usage error, so an unquoted description with spaces fails loudly). Database
  names are 1-64 characters or ``*``; repeated flags accumulate (no comma splitting); duplicate
  grants are dropped; no permission at all is allowed. Output as ``management create`` (table
  with id, description, expires at, revoked at; the token string last on stdout; JSON = the
  list's item shape without the token, then the token). Values are ``apiv1_`` + 86 base64
  characters. A new token is Unauthenticated for ``db_activation_delay_s``.
- ``token list``: revoked tokens hidden unless ``--include-revoked``; ``--sort id`` (default) or
  ``description``; the table has the documented ``ID | DESCRIPTION`` columns; JSON items are the
  documented ``account_id, cluster_id, id, description, permissions`` plus ``created_at``,
  ``expires_at``, ``revoked_at`` as ``{seconds, nanos}`` (empty fields omitted, ``null`` for none).
- ``token get [--format F] [--include-revoked] ID``: a revoked token is NotFound without
  ``--include-revoked``. The table is a key/value table.
- ``token revoke|delete [--force] ID...``: like ``management revoke`` (prompt without
  ``--force``, idempotent, continues past bad ids, exit 1 if any failed).
- ``token update [--read-database D]... [--write-database D]... [--description D] ID``: permission
  flags replace every permission; ``--description`` (used by the admin how-to, missing from the
  reference) changes the description; neither is a usage error. A revoked token is NotFound.
- ``query [--database D] [--token T] [--format table|json] [--language sql|influxql] QUERY``:
  ``--token``/``--database`` override the profile's ``token``/``database`` keys (docs). QUERY is a
  string, a file path, or ``-`` for stdin. Authentication: an unknown, revoked, expired or not
  yet active token is ``Unauthenticated``; a token without read permission on the database is
  ``PermissionDenied``; a database the cluster does not have is ``NotFound``. Only
  ``SELECT <integer>`` (SQL) is evaluated, giving one row ``{"Int64(N)": N}``; any other query
  exits 2 (not implemented). The table output has no ``TOTAL`` row.
"""

from __future__ import annotations

# The tests start this program thousands of times, and a start costs what it imports (a bare interpreter starts
# in about 7 ms; these imports once took 39 ms more): so no dataclasses (it imports inspect), pathlib, tempfile,
# hashlib or uuid at the top; tomllib and uuid where they are used, and regular expressions compiled on first use.
import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple, NoReturn

from rotator.sandbox import influxctl_state as store

__all__ = ["main"]

VERSION_LINE = "influxctl 2.12.1 (SIMULATOR from rotator.sandbox, not the real CLI) built 2025-12-09T00:00:00Z"
WARN_LINES = (
    "warn\tplease copy the token and store in a safe place",
    "warn\tthis is the *only time* you will see the token",
)
UNAUTHENTICATED = "rpc error: code = Unauthenticated desc = unauthorized"
PERMISSION_DENIED = "rpc error: code = PermissionDenied desc = permission denied"
DEFAULT_FAULT_MESSAGES = {
    "exit": 'Error: rpc error: code = Unavailable desc = connection error: desc = "transport: '
    'Error while dialing: dial tcp 192.0.2.1:443: connect: connection refused"',
    "after_effect_exit": "Error: rpc error: code = Unavailable desc = error reading from server: "
    "read tcp 192.0.2.10:51234->192.0.2.1:443: read: connection reset by peer",
}
DEFAULT_GARBAGE = "<html><body><h1>502 Bad Gateway</h1></body></html>\n"
EPOCH_TEXT = "1970-01-01T00:00:00Z"
OTHER_COMMANDS = ("auth", "cluster", "database", "table", "user", "write")
NOT_FOUND_DB_TOKEN = "rpc error: code = NotFound desc = database token not found"
NOT_FOUND_ACCOUNT = 'rpc error: code = NotFound desc = account "{account}" not found'
NOT_FOUND_CLUSTER = 'rpc error: code = NotFound desc = cluster "{cluster}" not found in account "{account}"'
INVALID_DB_TOKEN_ID = "rpc error: code = InvalidArgument desc = invalid database token id"

APP_HELP = """NAME:
   influxctl - a CLI for managing InfluxDB Clustered and Cloud Dedicated (SIMULATOR: rotator.sandbox,
   talks to a local state file, not to a cluster)

USAGE:
   influxctl [global options] command [command options]

COMMANDS:
   management  Manage management tokens
   token       Manage database tokens
   query       Query data with SQL or InfluxQL
   version     Print the version
   help, h     Shows a list of commands or help for one command

GLOBAL OPTIONS:
   --config value    path to configuration file to use
   --profile value   specify a connection profile to use (default: "default") [$INFLUXCTL_PROFILE]
   --timeout value   specify a timeout duration for API calls (default: 1m0s)
   --account value   override account ID value in configuration file
   --cluster value   override cluster ID value in configuration file
   --debug           enable debug logging (default: false)
   --trace           enable more verbose debug logging (default: false)
   --help, -h        show help
   --version, -v     print the version"""
MANAGEMENT_HELP = """NAME:
   influxctl management - Manage management tokens

USAGE:
   influxctl management command [command options]

COMMANDS:
   create   Create a management token
   list     List all management tokens
   revoke   Revoke a management token by ID
   help, h  Shows a list of commands or help for one command"""
TOKEN_HELP = """NAME:
   influxctl token - Manage database tokens

USAGE:
   influxctl token command [command options]

COMMANDS:
   create          Create a database token
   revoke, delete  Revoke a database token
   get             Get information about a token
   list            List database tokens
   update          Update a database token
   help, h         Shows a list of commands or help for one command"""
TOKEN_COMMAND_HELP = {
    "create": "USAGE:\n   influxctl token create [--read-database=<DATABASE_NAME>] [--write-database=<DATABASE_NAME>]"
    " [--expires-at=<RFC3339_DATE>] [--format table|json] <TOKEN_DESCRIPTION>",
    "list": "USAGE:\n   influxctl token list [--format=table|json] [--sort id|description] [--include-revoked]",
    "get": "USAGE:\n   influxctl token get [--format table|json] [--include-revoked] <TOKEN_ID>",
    "revoke": "USAGE:\n   influxctl token revoke [--force] <TOKEN_ID> [<TOKEN_ID_N>...]",
    "update": "USAGE:\n   influxctl token update [--read-database=<DATABASE_NAME>]"
    " [--write-database=<DATABASE_NAME>] [--description D] <TOKEN_ID>",
}
QUERY_HELP = (
    "USAGE:\n   influxctl query [--database D] [--token T] [--format table|json] [--language sql|influxql]"
    " [--time-format rfc3339nano|unixnano] [--enable-system-tables] <QUERY>"
)
COMMAND_HELP = {
    "create": "USAGE:\n   influxctl management create [--description D] [--expires-at RFC3339] [--format table|json]",
    "list": "USAGE:\n   influxctl management list [--format table|json]"
    " [--sort created|id|description|prefix|expires|revoked]",
    "revoke": "USAGE:\n   influxctl management revoke [--force] <TOKEN_ID>[ ... TOKEN_ID_N]",
}


# --- exits --------------------------------------------------------------------------------------


class Exit(Exception):
    """Stop with ``code``; ``message``, if any, goes to stderr as is, ``output``, if any, to stdout first."""

    def __init__(self, code: int, message: str | None = None, output: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.output = output


def fail(message: str, code: int = 1) -> NoReturn:
    raise Exit(code, f"Error: {message}")


def usage(message: str, help_text: str = APP_HELP) -> NoReturn:
    # urfave/cli's wording; the help follows a blank line.
    raise Exit(1, f"Incorrect Usage: {message}\n\n{help_text}")


def flag_usage(message: str, help_text: str) -> NoReturn:
    # A command line urfave/cli v2 cannot parse: "Incorrect Usage: <error>", a blank line and the help go to
    # its App.Writer, stdout by default; the error it returns is the program's to report (see the docstring).
    raise Exit(1, f"Error: {message}", output=f"Incorrect Usage: {message}\n\n{help_text}\n")


def show_help(text: str) -> NoReturn:
    print(text)
    raise Exit(0)


def debug(enabled: bool, message: str) -> None:
    if enabled:
        print(f"debug\t{message}", file=sys.stderr)


# --- flags (Go's flag package, as urfave/cli v2 uses it) ----------------------------------------

BOOL, STRING, DURATION, LIST = "bool", "string", "duration", "list"  # LIST: repeatable string
_GO_DURATION = r"[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+)"  # compiled (and cached) by re on first use
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_flags(args: list[str], spec: dict[str, str], help_text: str) -> tuple[dict[str, Any], list[str]]:
    """Return the flags and the remaining arguments.

    Stops at the first non-flag argument or ``--``, as Go's flag package does.
    """
    values: dict[str, Any] = {}
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        if args[i] == "--":
            return values, args[i + 1 :]
        name, has_value, value = args[i].lstrip("-").partition("=")
        if not name or args[i].startswith("---"):
            flag_usage(f"bad flag syntax: {args[i]}", help_text)
        if name in ("h", "help"):
            show_help(help_text)
        kind = spec.get(name)
        if kind is None:
            flag_usage(f"flag provided but not defined: -{name}", help_text)
        if kind == BOOL:
            values[name] = _parse_bool(name, value, help_text) if has_value else True
        else:
            if not has_value:
                i += 1
                if i == len(args):
                    flag_usage(f"flag needs an argument: -{name}", help_text)
                value = args[i]
            if kind == DURATION and not re.fullmatch(_GO_DURATION, value):
                flag_usage(f'invalid value "{value}" for flag -{name}: parse error', help_text)
            if kind == LIST:
                values.setdefault(name, []).append(value)
            else:
                values[name] = value
        i += 1
    return values, args[i:]


def _parse_bool(name: str, value: str, help_text: str) -> bool:
    if value in _GO_TRUE or value in _GO_FALSE:
        return value in _GO_TRUE
    flag_usage(f'invalid boolean value "{value}" for -{name}: parse error', help_text)


# --- RFC 3339 like Go's time.Parse(time.RFC3339, s) ----------------------------------------------

_RFC3339_LAYOUT = "2006-01-02T15:04:05Z07:00"
_RFC3339_ELEMENTS = (
    ("2006", r"\d{4}"),
    ("-", "-"),
    ("01", r"\d{2}"),
    ("-", "-"),
    ("02", r"\d{2}"),
    ("T", "T"),
    ("15", r"\d{2}"),
    (":", ":"),
    ("04", r"\d{2}"),
    (":", ":"),
    ("05", r"\d{2}(\.\d{1,9})?"),
    ("Z07:00", r"Z|[+-]\d{2}:\d{2}"),
)


def parse_rfc3339(text: str) -> datetime:
    """Parse ``text`` or fail with Go's error wording (``+0000`` and date-only are refused)."""
    pos, parts = 0, []
    for element, pattern in _RFC3339_ELEMENTS:
        match = re.compile(pattern).match(text, pos)
        if match is None:
            fail(f'parsing time "{text}" as "{_RFC3339_LAYOUT}": cannot parse "{text[pos:]}" as "{element}"')
        parts.append(match.group())
        pos = match.end()
    if pos != len(text):
        fail(f'parsing time "{text}": extra text: "{text[pos:]}"')
    year, _, month, _, day, _, hour, _, minute, _, seconds, zone = parts
    second, _, fraction = seconds.partition(".")
    try:
        parsed = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int(fraction[:6].ljust(6, "0")),
        )
        offset = datetime.fromisoformat(f"2000-01-01T00:00:00{zone.replace('Z', '+00:00')}").utcoffset()
    except ValueError:
        fail(f'parsing time "{text}": out of range')
    assert offset is not None
    return (parsed - offset).replace(tzinfo=UTC)


# --- profile and credentials (client side) ------------------------------------------------------

_TLS_KEYS = {"insecure": bool, "disable": bool, "cert": str, "key": str, "ca": str}
_OAUTH2_KEYS = {"client_id": str, "scopes": list, "parameters": dict, "token_url": str, "device_url": str}
_PROFILE_KEYS: dict[str, Any] = {
    **{key: str for key in ("name", "product", "host", "port", "database", "token")},
    **{key: str for key in ("account_id", "cluster_id", "mgmt_token")},
    "tls": _TLS_KEYS,
    "auth": {"oauth2": _OAUTH2_KEYS, "token": {"token_file": str}},
}
# A dict is a TOML table with known keys, a one-item list an array of such tables, a type a value.
_CONFIG_SCHEMA: dict[str, Any] = {"profile": [_PROFILE_KEYS]}
_GO_TYPE_NAMES = {str: "string", bool: "bool", list: "[]string", dict: "map[string]string"}


class Profile(NamedTuple):  # not a frozen dataclass: see the imports
    name: str
    product: str
    mgmt_token: str | None
    token_file: str | None
    oauth2: bool
    #: The database token and database ``query`` and ``write`` use by default.
    token: str | None = None
    database: str | None = None
    #: Where ``query`` and ``write`` connect (on Dedicated nothing else uses it).
    host: str | None = None
    #: Dedicated: the account and cluster the management and ``token`` commands reach (``--account`` and
    #: ``--cluster`` override the profile's ``account_id`` and ``cluster_id``).
    account_id: str | None = None
    cluster_id: str | None = None


class Credential(NamedTuple):
    kind: str  # "mgmt_token" | "admin_token" | "db_token"
    secret: str


def _path_text(path: str) -> str:
    """``str(pathlib.Path(path))``, the spelling of the paths the simulator names in its messages: pathlib drops
    ``.`` parts and repeated and trailing slashes. pathlib costs about 3 ms a start, so it is imported only for a
    path it would change."""
    if path and "//" not in path and "/./" not in path and not path.startswith("./") and not path.endswith(("/", "/.")):
        return path
    from pathlib import Path

    return str(Path(path))


def default_config_path() -> str:
    # Go's os.UserConfigDir on Linux.
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.environ.get("HOME", "/"), ".config")
    return _path_text(os.path.join(base, "influxctl", "config.toml"))


def check_keys(table: dict[str, Any], schema: dict[str, Any], prefix: str) -> None:
    """Fail on the first key the schema does not know (v2.0.1) or whose value has the wrong type."""
    for key, value in table.items():
        where = f"{prefix}{key}"
        if key not in schema:
            fail(f'unrecognized configuration option "{where}"')
        expected = schema[key]
        if isinstance(expected, dict):
            _require_type(where, value, dict, "struct")
            check_keys(value, expected, f"{where}.")
        elif isinstance(expected, list):
            _require_type(where, value, list, "[]Profile")
            for item in value:
                _require_type(where, item, dict, "Profile")
                check_keys(item, expected[0], f"{where}.")
        else:
            _require_type(where, value, expected, _GO_TYPE_NAMES[expected])


def _require_type(where: str, value: Any, expected: type, go_name: str) -> None:
    if not isinstance(value, expected):
        fail(
            f'toml: key "{where}": incompatible types: TOML value has type {type(value).__name__}; '
            f"destination has type {go_name}"
        )


def load_profile(flags: dict[str, Any]) -> Profile:
    import tomllib  # here, not at the top: see the imports

    path = _path_text(flags.get("config") or default_config_path())
    try:
        with open(path) as handle:
            config = tomllib.loads(handle.read())
    except FileNotFoundError:
        fail(f"open {path}: no such file or directory")
    except tomllib.TOMLDecodeError as exc:
        fail(f"toml: {exc}")
    check_keys(config, _CONFIG_SCHEMA, "")
    name = flags.get("profile") or os.environ.get("INFLUXCTL_PROFILE") or "default"
    entry = next((p for p in config.get("profile", []) if p.get("name") == name), None)
    if entry is None:
        fail(f'profile "{name}" not found in {path}')
    debug(_debugging(flags), f'using profile "{name}" from {path}')
    return _validated_profile(name, entry, flags)


def _validated_profile(name: str, entry: dict[str, Any], flags: dict[str, Any]) -> Profile:
    product = entry.get("product", "")
    if product not in ("clustered", "dedicated"):
        fail(f'profile "{name}": invalid product "{product}": must be "clustered" or "dedicated"')
    if product == "clustered" and not entry.get("host"):
        fail(f'profile "{name}": host is required for product "clustered"')
    if product == "dedicated":
        for key in ("account", "cluster"):
            if not (flags.get(key) or entry.get(f"{key}_id")):
                fail(f'profile "{name}": {key}_id is required for product "dedicated"')
    auth = entry.get("auth", {})
    return Profile(
        name=name,
        product=product,
        mgmt_token=entry.get("mgmt_token") or None,
        token_file=auth.get("token", {}).get("token_file") or None,
        oauth2="oauth2" in auth,
        token=entry.get("token") or None,
        database=entry.get("database") or None,
        host=entry.get("host") or None,
        account_id=flags.get("account") or entry.get("account_id") or None,
        cluster_id=flags.get("cluster") or entry.get("cluster_id") or None,
    )


def load_credential(profile: Profile) -> Credential:
    """The one credential the profile selects (precedence: see the module docstring)."""
    if profile.mgmt_token:
        return Credential("mgmt_token", profile.mgmt_token)
    if profile.token_file:
        try:
            with open(_path_text(profile.token_file)) as handle:
                return Credential("admin_token", handle.read().strip())
        except FileNotFoundError:
            fail(f"open {profile.token_file}: no such file or directory")
    fail(
        f'login required: no cached OAuth2 token for profile "{profile.name}"; '
        "log in interactively with your identity provider first"
    )


# --- the fake server ----------------------------------------------------------------------------


class Session(NamedTuple):
    """One command's connection: where the server state is and who is calling."""

    state_path: str  # as pathlib spells it (see _path_text)
    profile: Profile
    credential: Credential
    argv: list[str]
    debug: bool


def connect(argv: list[str], flags: dict[str, Any], credential: Credential | None = None) -> Session:
    """Load the profile and the credential (default: the management one the profile selects)."""
    profile = load_profile(flags)
    credential = credential or load_credential(profile)
    return _session(argv, flags, profile, credential)


def _session(argv: list[str], flags: dict[str, Any], profile: Profile, credential: Credential) -> Session:
    path = os.environ.get(store.STATE_ENV)
    if not path:
        fail(f"simulated influxctl (rotator.sandbox): ${store.STATE_ENV} is not set", code=2)
    return Session(_path_text(path), profile, credential, argv, _debugging(flags))


def _debugging(flags: dict[str, Any]) -> bool:
    return bool(flags.get("debug") or flags.get("trace"))


def take_fault(session: Session, command: str) -> dict[str, Any] | None:
    """Record the call, then pop the first fault queued for ``command`` (decrementing ``times``)."""
    with store.transaction(session.state_path) as state:
        now = store.server_now(state)
        state["calls"].append(
            {
                "argv": session.argv,
                "command": command,
                "profile": session.profile.name,
                "pid": os.getpid(),
                "at": store.format_time(now),
            }
        )
        for fault in state["faults"]:
            times = int(fault.get("times", 1))
            if fault["command"] != command or times == 0:
                continue
            if times > 0:
                fault["times"] = times - 1
            state["faults"] = [f for f in state["faults"] if int(f.get("times", 1)) != 0]
            return dict(fault)
    return None


def authorize(session: Session, state: store.State, manage: bool) -> str:
    """Authenticate the session's credential; return the principal id (``created_by``)."""
    now = store.server_now(state)
    if session.credential.kind == "admin_token":
        if state["options"]["admin_token_sha256"] != store.hash_token(session.credential.secret):
            debug(session.debug, "authentication failed: not the admin token")
            fail(UNAUTHENTICATED)
        reached_cluster(session, state)
        import uuid  # here, not at the top: see the imports

        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-influxctl-admin:{state['account_id']}"))
    record, problem = store.token_problem(state, session.credential.secret, now)
    if record is None or problem is not None:
        debug(session.debug, f"authentication failed: {problem}")
        fail(UNAUTHENTICATED)
    reached_cluster(session, state)
    if manage and not state["options"]["mgmt_token_can_manage"]:
        fail(PERMISSION_DENIED)
    return str(record["id"])


def reached_cluster(session: Session, state: store.State) -> str:
    """The cluster of the state a management or ``token`` command reaches, as the state spells its id; fails
    as the server would for a Dedicated profile (or ``--account``/``--cluster``) naming another account,
    or a cluster the account does not have. Clustered: the cluster is the host the profile names."""
    profile = session.profile
    if profile.product != "dedicated":
        return store.cluster_id(state)
    account = (profile.account_id or "").strip()
    if account.lower() != str(state["account_id"]).lower():
        debug(session.debug, "the profile names another account")
        fail(NOT_FOUND_ACCOUNT.format(account=account))
    cluster = (profile.cluster_id or "").strip()
    known = next((c for c in store.cluster_ids(state) if c.lower() == cluster.lower()), None)
    if known is None:
        fail(NOT_FOUND_CLUSTER.format(cluster=cluster, account=account))
    return known


def before_effect(fault: dict[str, Any] | None) -> None:
    """Faults that strike before the server acts: no side effect happens."""
    mode = fault["mode"] if fault else None
    if fault is None or mode in ("after_effect_exit", "pause_after_effect"):
        return
    if mode == "hang":
        time.sleep(float(fault.get("seconds", 3600)))
    elif mode == "pause":
        _pause(fault)
    elif mode == "exit":
        raise Exit(int(fault.get("code", 1)), fault.get("message", DEFAULT_FAULT_MESSAGES["exit"]))
    elif mode == "garbage":
        sys.stdout.write(fault.get("output", DEFAULT_GARBAGE))
        raise Exit(0)


def after_effect(fault: dict[str, Any] | None) -> None:
    """Faults that strike after the server acted and before the answer reaches the caller."""
    if fault is None:
        return
    if fault["mode"] == "pause_after_effect":
        _pause(fault)
    elif fault["mode"] == "after_effect_exit":
        message = fault.get("message", DEFAULT_FAULT_MESSAGES["after_effect_exit"])
        raise Exit(int(fault.get("code", 1)), message)


def _pause(fault: dict[str, Any]) -> None:
    # The marker holds our pid so the test knows whom to kill; written atomically so a poller
    # never reads it empty.
    from pathlib import Path  # here, not at the top: see the imports

    marker = Path(fault["marker"])
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(marker)
    ends = time.monotonic() + float(fault.get("seconds", 3600))
    if "until" not in fault:
        time.sleep(max(ends - time.monotonic(), 0))
        return
    release = Path(fault["until"])
    while not release.exists() and time.monotonic() < ends:
        time.sleep(0.02)


# --- output -------------------------------------------------------------------------------------


def timestamp_json(value: str) -> dict[str, int]:
    # google.protobuf.Timestamp through encoding/json: {"seconds", "nanos"}, each omitempty.
    delta = store.parse_time(value) - datetime(1970, 1, 1, tzinfo=UTC)
    seconds, micros = delta.days * 86400 + delta.seconds, delta.microseconds
    return {k: v for k, v in (("seconds", seconds), ("nanos", micros * 1000)) if v}


def token_json(record: dict[str, Any]) -> dict[str, Any]:
    """The docs' JSON shape: proto field order, snake_case, every empty field omitted."""
    out: dict[str, Any] = {}
    for key in ("id", "account_id", "token_prefix", "expires_at", "revoked_at", "created_at"):
        if record.get(key):
            out[key] = timestamp_json(record[key]) if key.endswith("_at") else record[key]
    for key in ("description", "created_by"):
        if record.get(key):
            out[key] = record[key]
    return out


def table_time(value: str | None, unset: str) -> str:
    return store.parse_time(value).strftime("%Y-%m-%dT%H:%M:%SZ") if value else unset


def render_table(rows: list[list[str]], header: list[str] | None = None, right_first: bool = False) -> str:
    """A tablewriter-style box; the first column right-aligned for key/value tables."""
    every = ([header] if header else []) + rows
    widths = [max(len(row[col]) for row in every) for col in range(len(every[0]))]
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: list[str], right: bool) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        if right:
            padded[0] = cells[0].rjust(widths[0])
        return "| " + " | ".join(padded) + " |"

    out = [border]
    if header:
        out += [line(header, False), border]
    out += [line(row, right_first) for row in rows]
    out.append(border)
    return "\n".join(out)


def print_created(
    record: dict[str, Any],
    value: str,
    fmt: str,
    create_output: str,
    to_json: Callable[[dict[str, Any]], dict[str, Any]] = token_json,
) -> None:
    if fmt == "json":
        # GAP: `management create --format json` is undocumented. The fake prints the new
        # token's record in the list's JSON shape WITHOUT the token string, and then the token
        # string alone as the last stdout line, so "the token is the last stdout line" holds in
        # every format. Capture the real output before relying on anything else.
        print(json.dumps(to_json(record), indent=2), flush=True)
    elif create_output == "table":
        rows = [
            ["id", record["id"]],
            ["description", record["description"]],
            ["expires at", table_time(record["expires_at"], "")],
            ["revoked at", table_time(record["revoked_at"], "")],
        ]
        print(render_table(rows, right_first=True), flush=True)
    # influxctl logs to stderr (v2.0.3), so the warnings are not part of stdout.
    print("\n".join(WARN_LINES), file=sys.stderr, flush=True)
    print(value, flush=True)


# --- commands -----------------------------------------------------------------------------------

_SORT_KEYS = {
    "created": "created_at",
    "id": "id",
    "description": "description",
    "prefix": "token_prefix",
    "expires": "expires_at",
    "revoked": "revoked_at",
}


def _output_format(flags: dict[str, Any]) -> str:
    fmt = str(flags.get("format", "table"))
    if fmt not in ("table", "json"):
        fail(f'invalid output format "{fmt}": must be "table" or "json"')
    return fmt


def cmd_create(argv: list[str], flags: dict[str, Any], args: list[str]) -> int:
    spec = {"description": STRING, "expires-at": STRING, "format": STRING}
    own, _ = parse_flags(args, spec, COMMAND_HELP["create"])  # extra positionals are ignored
    fmt = _output_format(own)
    description = own.get("description")
    if description is not None and not description.strip():
        fail("management token description must be a non-empty string")
    expires = parse_rfc3339(own["expires-at"]) if "expires-at" in own else None
    session = connect(argv, flags)
    fault = take_fault(session, "management create")
    before_effect(fault)
    with store.transaction(session.state_path) as state:
        created_by = authorize(session, state, manage=True)
        if expires is not None and expires <= store.server_now(state):
            fail("rpc error: code = InvalidArgument desc = expires_at must be in the future")
        value, record = store.mint_token(
            state, description=description or "", expires_at=expires, created_by=created_by
        )
        create_output = state["options"]["create_output"]
    after_effect(fault)
    print_created(record, value, fmt, create_output)
    return 0


def cmd_list(argv: list[str], flags: dict[str, Any], args: list[str]) -> int:
    own, _ = parse_flags(args, {"format": STRING, "sort": STRING}, COMMAND_HELP["list"])
    fmt = _output_format(own)
    sort = str(own.get("sort", "created"))
    if sort not in _SORT_KEYS:
        fail(f'invalid sort column "{sort}": must be one of {", ".join(_SORT_KEYS)}')
    session = connect(argv, flags)
    fault = take_fault(session, "management list")
    before_effect(fault)
    state = store.read_state(session.state_path)
    authorize(session, state, manage=False)
    tokens = [t for t in state["tokens"] if t["account_id"] == state["account_id"]]
    tokens.sort(key=lambda t: t[_SORT_KEYS[sort]] or "")  # unset times sort first, as epoch 0
    after_effect(fault)
    if fmt == "json":
        print(json.dumps([token_json(t) for t in tokens] or None, indent=2))
        return 0
    header = ["ID", "DESCRIPTION", "PREFIX", "CREATED AT", "EXPIRES AT", "REVOKED AT"]
    rows = [
        [t["id"], t["description"], t["token_prefix"], table_time(t["created_at"], EPOCH_TEXT)]
        + [table_time(t["expires_at"], EPOCH_TEXT), table_time(t["revoked_at"], EPOCH_TEXT)]
        for t in tokens
    ]
    print(render_table(rows, header))
    return 0


def _is_uuid(text: str) -> bool:
    """Whether the server would take ``text`` as a token id (anything ``uuid.UUID`` parses)."""
    import uuid  # here, not at the top: see the imports

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def confirm_revoke() -> None:
    sys.stdout.write("Confirm that you want to delete the token [y/N]: ")
    sys.stdout.flush()
    answer = sys.stdin.readline() if sys.stdin else ""
    if not answer:
        print()
        fail("failed to read confirmation: EOF")
    if answer.strip().lower() not in ("y", "yes"):
        fail("revoke cancelled: not confirmed")


def revoke_one(state: store.State, token_id: str, cluster: str) -> str | None:
    """Revoke ``token_id`` in ``state``; return the gRPC error text, or ``None`` on success. Through any
    ``cluster`` of the account: a management token is the account's."""
    if not _is_uuid(token_id):
        return "rpc error: code = InvalidArgument desc = invalid management token id"
    record = store.find_token(state, token_id)
    if record is None or record["account_id"] != state["account_id"]:
        return "rpc error: code = NotFound desc = management token not found"
    # Idempotent: a second revoke keeps the first revoked_at.
    record["revoked_at"] = record["revoked_at"] or store.format_time(store.server_now(state))
    return None


def cmd_revoke(argv: list[str], flags: dict[str, Any], args: list[str]) -> int:
    # v2.9.8: "Continue revoking tokens on error."
    return revoke_command(argv, flags, args, help_text=COMMAND_HELP["revoke"], command="management revoke",
                          manage=True, revoke=revoke_one, noun="management token")


def revoke_command(
    argv: list[str], flags: dict[str, Any], args: list[str], *, help_text: str, command: str, manage: bool,
    revoke: Any, noun: str,
) -> int:
    """`management revoke` and `token revoke`: confirm, revoke every id, report each."""
    own, ids = parse_flags(args, {"force": BOOL}, help_text)
    if not ids:
        usage("at least one token ID is required", help_text)
    session = connect(argv, flags)
    if not own.get("force"):
        confirm_revoke()
    fault = take_fault(session, command)
    before_effect(fault)
    with store.transaction(session.state_path) as state:
        authorize(session, state, manage=manage)
        cluster = reached_cluster(session, state)
        errors = {token_id: revoke(state, token_id, cluster) for token_id in ids}
    after_effect(fault)
    for token_id, error in errors.items():
        if error is None:
            print(f"revoked {noun} {token_id}")
        else:
            print(f'Error: failed to revoke {noun} "{token_id}": {error}', file=sys.stderr)
    return 1 if any(errors.values()) else 0


# --- database tokens: token create|list|get|revoke|update -----------------------------------------

_DB_SORT_KEYS = {"id": "id", "description": "description"}
_DB_NAME_MAX = 64  # ClusterDatabaseName: 1-64 characters (Management API spec)


def db_token_json(record: dict[str, Any]) -> dict[str, Any]:
    """The docs' ``token list --format json`` item, plus the times (``{seconds, nanos}``), empty fields omitted."""
    out: dict[str, Any] = {key: record[key] for key in ("account_id", "cluster_id", "id", "description") if record[key]}
    if record["permissions"]:
        out["permissions"] = [
            {"id": p["id"], "action": p["action"], "resource": p["resource"]} for p in record["permissions"]
        ]
    for key in ("created_at", "expires_at", "revoked_at"):
        if record.get(key):
            out[key] = timestamp_json(record[key])
    return out


def db_token_table(record: dict[str, Any]) -> str:
    permissions = ", ".join(f"{p['action']}:{p['resource']}" for p in record["permissions"])
    rows = [
        ["id", record["id"]],
        ["description", record["description"]],
        ["permissions", permissions],
        ["created at", table_time(record["created_at"], "")],
        ["expires at", table_time(record["expires_at"], "")],
        ["revoked at", table_time(record["revoked_at"], "")],
    ]
    return render_table(rows, right_first=True)


def _grants(own: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``(action, database)`` pairs of ``--read-database``/``--write-database``, checked."""
    grants = [(action, db) for action in store.DB_ACTIONS for db in own.get(f"{action}-database", [])]
    for _, database in grants:
        if database != store.ALL_DATABASES and not 1 <= len(database) <= _DB_NAME_MAX:
            fail(
                f"rpc error: code = InvalidArgument desc = invalid database name {database!r}: "
                f"must be 1-{_DB_NAME_MAX} characters or '*'"
            )
    return grants


def _one_id(ids: list[str], help_text: str) -> str:
    if len(ids) != 1:
        usage(f"expected exactly one TOKEN_ID argument, got {len(ids)}", help_text)
    return ids[0]


def _live_db_token(state: store.State, token_id: str, include_revoked: bool, cluster: str) -> dict[str, Any]:
    """The database token ``token_id`` of ``cluster``, or fail as the server would."""
    if not _is_uuid(token_id):
        fail(INVALID_DB_TOKEN_ID)
    record = store.find_db_token(state, token_id)
    if record is None or record["cluster_id"] != cluster:
        fail(NOT_FOUND_DB_TOKEN)
    if record["revoked_at"] and not include_revoked:
        fail(NOT_FOUND_DB_TOKEN)
    return record


def cmd_token_create(argv: list[str], flags: dict[str, Any], args: list[str]) -> int:
    help_text = TOKEN_COMMAND_HELP["create"]
    spec = {"read-database": LIST, "write-database": LIST, "expires-at": STRING, "format": STRING}
    own, positional = parse_flags(args, spec, help_text)
    fmt = _output_format(own)
    if not positional:
        usage("a TOKEN_DESCRIPTION argument is required", help_text)
    if len(positional) > 1:
        usage(
            f"expected one TOKEN_DESCRIPTION argument, got {len(positional)} (quote a description with spaces)",
            help_text,
        )
    description = positional[0]
    if not description.strip():
        fail("database token description must be a non-empty string")
    grants = _grants(own)
    expires = parse_rfc3339(own["expires-at"]) if "expires-at" in own else None
    session = connect(argv, flags)
    fault = take_fault(session, "token create")
    before_effect(fault)
    with store.transaction(session.state_path) as state:
        created_by = authorize(session, state, manage=False)
        if expires is not None and expires <= store.server_now(state):
            fail("rpc error: code = InvalidArgument desc = expires_at must be in the future")
        value, record = store.mint_db_token(
            state, description=description, permissions=grants, expires_at=expires, created_by=created_by,
            cluster=reached_cluster(session, state),
        )
        create_output = state["options"]["create_output"]
    after_effect(fault)
    print_created(record, value, fmt, create_output, to_json=db_token_json)
    return 0


def cmd_token_list(argv: list[str], flags: dict[str, Any], args: list[str]) -> int:
    spec = {"format": STRING, "sort": STRING, "include-revoked": BOOL}
    own, _ = parse_flags(args, spec, TOKEN_COMMAND_HELP["list"])
    fmt = _output_format(own)
    sort = str(own.get("sort", "id"))
    if sort not in _DB_SORT_KEYS:
        fail(f'invalid sort column "{sort}": must be one of {", ".join(_DB_SORT_KEYS)}')
    session = connect(argv, flags)
    fault = take_fault(session, "token list")
    before_effect(fault)
    state = store.read_state(session.state_path)
    authorize(session, state, manage=False)
    cluster = reached_cluster(session, state)
    tokens = [
        t
        for t in store.db_tokens(state)
        if t["cluster_id"] == cluster and (own.get("include-revoked") or not t["revoked_at"])
    ]
    tokens.sort(key=lambda t: t[_DB_SORT_KEYS[sort]])
    after_effect(fault)
    if fmt == "json":
        print(json.dumps([db_token_json(t) for t in tokens] or None, indent=2))
        return 0
    print(render_table([[t["id"], t["description"]] for t in tokens], ["ID", "DESCRIPTION"]))
    return 0


def cmd_token_get(argv: list[str], flags: dict[str, Any], args: list[str]) -> int:
    help_text = TOKEN_COMMAND_HELP["get"]
    own, ids = parse_flags(args, {"format": STRING, "include-revoked": BOOL}, help_text)
    fmt = _output_format(own)
    token_id = _one_id(ids, help_text)
    session = connect(argv, flags)
    fault = take_fault(session, "token get")
    before_effect(fault)
    state = store.read_state(session.state_path)
    authorize(session, state, manage=False)
    record = _live_db_token(state, token_id, bool(own.get("include-revoked")), reached_cluster(session, state))
    after_effect(fault)
    print(json.dumps(db_token_json(record), indent=2) if fmt == "json" else db_token_table(record))
    return 0


def revoke_db_one(state: store.State, token_id: str, cluster: str) -> str | None:
    """Revoke database token ``token_id`` of ``cluster``; return the gRPC error text, or ``None`` on success."""
    if not _is_uuid(token_id):
        return INVALID_DB_TOKEN_ID
    record = store.find_db_token(state, token_id)
    if record is None or record["cluster_id"] != cluster:
        return NOT_FOUND_DB_TOKEN
    record["revoked_at"] = record["revoked_at"] or store.format_time(store.server_now(state))
    return None


def cmd_token_revoke(argv: list[str], flags: dict[str, Any], args: list[str]) -> int:
    return revoke_command(argv, flags, args, help_text=TOKEN_COMMAND_HELP["revoke"], command="token revoke",
                          manage=False, revoke=revoke_db_one, noun="database token")


def cmd_token_update(argv: list[str], flags: dict[str, Any], args: list[str]) -> int:
    help_text = TOKEN_COMMAND_HELP["update"]
    spec = {"read-database": LIST, "write-database": LIST, "description": STRING}
    own, ids = parse_flags(args, spec, help_text)
    token_id = _one_id(ids, help_text)
    replace = "read-database" in own or "write-database" in own
    if not replace and "description" not in own:
        usage("nothing to update: pass --read-database, --write-database or --description", help_text)
    if "description" in own and not own["description"].strip():
        fail("database token description must be a non-empty string")
    grants = _grants(own)
    session = connect(argv, flags)
    fault = take_fault(session, "token update")
    before_effect(fault)
    with store.transaction(session.state_path) as state:
        authorize(session, state, manage=False)
        record = _live_db_token(state, token_id, include_revoked=False, cluster=reached_cluster(session, state))
        if replace:  # "the existing permissions are replaced by the new permissions"
            record["permissions"] = store.make_permissions(grants)
        if "description" in own:
            record["description"] = own["description"]
    after_effect(fault)
    print(db_token_table(record))
    return 0


# --- query ---------------------------------------------------------------------------------------

_SELECT_INTEGER = r"\s*select\s+(-?\d{1,18})\s*;?\s*"  # compiled (and cached) by re on first use


def _query_text(argument: str) -> str:
    """QUERY is a string, a path to a file that holds the query, or ``-`` for stdin (docs)."""
    if argument == "-":
        return sys.stdin.read() if sys.stdin else ""
    path = _path_text(argument)
    try:
        if os.path.isfile(path):
            with open(path) as handle:
                return handle.read()
    except OSError:
        pass
    return argument


def cmd_query(argv: list[str], flags: dict[str, Any], args: list[str]) -> int:
    spec = {
        **{name: STRING for name in ("database", "token", "format", "language", "time-format")},
        "enable-system-tables": BOOL,
    }
    own, positional = parse_flags(args, spec, QUERY_HELP)
    fmt = _output_format(own)
    language = str(own.get("language", "sql"))
    if language not in ("sql", "influxql"):
        fail(f'invalid query language "{language}": must be "sql" or "influxql"')
    if str(own.get("time-format", "rfc3339nano")) not in ("rfc3339nano", "unixnano"):
        fail(f'invalid time format "{own["time-format"]}": must be "rfc3339nano" or "unixnano"')
    if len(positional) != 1:
        usage(f"expected exactly one QUERY argument, got {len(positional)}", QUERY_HELP)
    profile = load_profile(flags)
    if profile.host is None:
        # Dedicated's docs: `host` is "used for query and write subcommands"; without it there is no cluster
        # to send the query to (the exact text of the real CLI is not documented).
        fail(f'profile "{profile.name}": host is required for the query command')
    # Command line flags override settings in the connection profile (docs).
    token = own.get("token") or profile.token
    database = own.get("database") or profile.database
    if not token:
        fail('a database token is required: set "token" in the connection profile or pass --token')
    if not database:
        fail('a database is required: set "database" in the connection profile or pass --database')
    text = _query_text(positional[0])
    session = _session(argv, flags, profile, Credential("db_token", token))
    fault = take_fault(session, "query")
    before_effect(fault)
    state = store.read_state(session.state_path)
    _, problem = store.db_token_problem(state, token, store.server_now(state), database, "read")
    if problem is not None:
        debug(session.debug, f"query refused: {problem}")
    if problem == "permission denied":
        fail(PERMISSION_DENIED)
    if problem == "database not found":
        fail(f'rpc error: code = NotFound desc = database "{database}" not found')
    if problem is not None:
        fail(UNAUTHENTICATED)
    match = re.fullmatch(_SELECT_INTEGER, text, re.IGNORECASE) if language == "sql" else None
    if match is None:
        fail('simulated influxctl (rotator.sandbox): only the SQL query "SELECT <integer>" is implemented', code=2)
    after_effect(fault)
    value = int(match.group(1))
    column = f"Int64({value})"
    if fmt == "json":
        print(json.dumps([{column: value}], indent=2))
    else:
        print(render_table([[str(value).rjust(len(column))]], [column]))
    return 0


Handler = Callable[[list[str], dict[str, Any], list[str]], int]
MANAGEMENT_COMMANDS: dict[str, Handler] = {"create": cmd_create, "list": cmd_list, "revoke": cmd_revoke}
TOKEN_COMMANDS: dict[str, Handler] = {
    "create": cmd_token_create,
    "list": cmd_token_list,
    "get": cmd_token_get,
    "revoke": cmd_token_revoke,
    "delete": cmd_token_revoke,  # alias (renamed in v2.10.0)
    "update": cmd_token_update,
}
GLOBAL_FLAGS = {
    **{name: STRING for name in ("config", "profile", "account", "cluster")},
    "timeout": DURATION,
    **{name: BOOL for name in ("debug", "trace", "version", "v")},
}


def run(argv: list[str]) -> int:
    flags, rest = parse_flags(argv, GLOBAL_FLAGS, APP_HELP)
    if flags.get("version") or flags.get("v") or rest[:1] == ["version"]:
        print(VERSION_LINE)
        return 0
    if not rest or rest[0] in ("help", "h"):
        show_help(APP_HELP)
    if rest[0] in OTHER_COMMANDS:
        fail(f'simulated influxctl (rotator.sandbox): command "{rest[0]}" is not implemented', code=2)
    if rest[0] == "query":
        return cmd_query(argv, flags, rest[1:])
    groups = {"management": (MANAGEMENT_HELP, MANAGEMENT_COMMANDS), "token": (TOKEN_HELP, TOKEN_COMMANDS)}
    if rest[0] not in groups:
        raise Exit(1, f"No help topic for '{rest[0]}'")
    help_text, commands = groups[rest[0]]
    if len(rest) == 1 or rest[1] in ("help", "h", "-h", "--help"):
        show_help(help_text)
    handler = commands.get(rest[1])
    if handler is None:
        raise Exit(1, f"No help topic for '{rest[1]}'")
    return handler(argv, flags, rest[2:])


def main(argv: list[str]) -> int:
    try:
        return run(argv)
    except Exit as stop:
        if stop.output:
            sys.stdout.write(stop.output)
        if stop.message:
            print(stop.message, file=sys.stderr)
        return stop.code


if __name__ == "__main__":  # python -m rotator.sandbox.influxctl_simulator (the demo's launcher)
    sys.exit(main(sys.argv[1:]))
