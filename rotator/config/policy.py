"""The policy file: its model, loading, and validation that reports every problem at once.

A file holds global settings (``[rotator]``), defaults (``[defaults]``) and any number of
``[[policy]]`` entries. Each policy names an issuer and one or more stores by adapter type; the
adapter's own pydantic settings model validates the rest of its table. See docs/policy.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path, PurePath
from string import Formatter
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from rotator.config import registry
from rotator.config.adapter_settings import plain_string_fields, settings_json_schema, validate_settings
from rotator.config.durations import Duration
from rotator.config.inline_secrets import InlineSecretError, find_token, mask_tokens, string_values, url_problem
from rotator.config.policy_source import read_policy_file
from rotator.config.policy_types import Policy, StoreBinding, find_policy
from rotator.config.schedule import Schedule, format_duration, parse_schedule, parse_window
from rotator.core.credentials import SECRET_LOOKING_KEYS
from rotator.core.errors import ConfigError
from rotator.core.one_line import one_line
from rotator.core.revocation_rule import carries_tag

try:  # the same parser compiled (mypyc) where its wheel is installed: about half the time of tomllib's
    import tomli as tomllib  # on a file of 10,000 policies, most of a daemon's start-up (docs/performance.md)
except ImportError:  # (the rotator[daemon] extra installs it)
    import tomllib  # type: ignore[no-redef,unused-ignore]

if TYPE_CHECKING:
    from rotator.config.daemon_config import DaemonSettings

__all__ = [
    "Config",
    "Policy",
    "PolicyFileError",
    "Problem",
    "StoreBinding",
    "config_json_schema",
    "history_problems",
    "load_config",
    "load_config_bytes",
    "parse_config",
]

DEFAULT_DESCRIPTION = "{tag}"
#: The longest token description a policy may render: issuers keep descriptions short (one line of
#: ``influxctl management list``), and a description is sent, stored and listed with every token.
MAX_DESCRIPTION = 1000
#: The longest values of a description's fields: ``{policy}`` is a policy name (63 characters), ``{tag}``
#: ``rotator:<policy>:<run id>``, the run id at most 64 characters (a Lambda's ClientRequestToken).
_FIELD_LENGTHS = {"policy": 63, "tag": len("rotator::") + 63 + 64}
#: The shortest ``lease_ttl``: a side effect's child process must start within half of it
#: (rotator/core/engine.py), and the fencing tests take leases over after 2 s.
MIN_LEASE_TTL = timedelta(seconds=2)
#: The shortest ``base_delay`` and ``max_delay``: "a retry never comes at once" (docs/design-notes.md); at
#: 0s a step that keeps failing fast was tried again hundreds of thousands of times a second.
MIN_RETRY_DELAY = timedelta(seconds=1)
#: The shortest ``keep_history``, unless every policy rotates more often (see :func:`history_problems`).
MIN_KEEP_HISTORY = timedelta(days=1)
#: Tables and lists nest at most this deep: a policy file needs 4 levels; anything deeper is refused
#: before validation, so no later step (pydantic, the inline-secret scan) meets a RecursionError.
MAX_NESTING = 32
#: Characters of input a message may quote.
_QUOTE_LIMIT = 80
#: Policy names, and store names: both reach the journal's text, logs and metric labels.
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_STORE_NAME = re.compile(_NAME_PATTERN)
_NAME_RULE = ("write 1 to 63 letters, digits, '.', '_' or '-', beginning with a letter or digit (the name appears in "
              "the journal, logs and metric labels)")
#: Policy names a problem lists at most (a file may hold thousands).
_NAMES_LISTED = 20


def _excerpt(text: str, limit: int = _QUOTE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters for a message, its tokens masked first: cut first, a token's
    head no longer looks like one, and the masking of the whole message (:class:`Problem`) lets it through."""
    return mask_tokens(text)[:limit]


class RetrySettings(BaseModel):
    """Bounded exponential backoff with equal jitter for transient errors (see rotator/core/retry.py)."""

    model_config = ConfigDict(extra="forbid")
    attempts: StrictInt = Field(5, ge=1, le=20, description="tries per step, the first included")
    base_delay: Duration = Field("1s", validate_default=True, description="delay before the second try")
    max_delay: Duration = Field("60s", validate_default=True, description="cap of one delay")

    @field_validator("base_delay", "max_delay")
    @classmethod
    def _a_real_wait(cls, value: timedelta) -> timedelta:
        if value < MIN_RETRY_DELAY:
            raise ValueError(f"is {format_duration(value)}: a retry waits at least {format_duration(MIN_RETRY_DELAY)} "
                             "(shorter, a step that fails at once is tried again thousands of times a second); "
                             "defaults: base_delay '1s', max_delay '60s'")
        return value

    @model_validator(mode="after")
    def _base_within_max(self) -> RetrySettings:
        if self.base_delay > self.max_delay:
            raise ValueError(f"base_delay ({format_duration(self.base_delay)}) is longer than max_delay "
                             f"({format_duration(self.max_delay)}), the cap of every wait; raise max_delay or "
                             "lower base_delay")
        return self


_JOURNAL_FIX = (
    "remove it from the URL: libpq reads the password from PGPASSWORD or from a password file "
    "(PGPASSFILE, default ~/.pgpass)"
)


class GlobalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    journal: str = Field(
        "rotator-journal.db",
        description="SQLite path (relative to the policy file) or URL: sqlite:///path, postgresql://... "
        "(no password: PGPASSWORD or ~/.pgpass)",
    )
    lease_ttl: Duration = Field("15m", validate_default=True, description="how long a run may hold a policy")
    keep_history: Duration = Field(
        "400d", validate_default=True,
        description="journal history kept (events, finished runs, done revocations); older is pruned into a "
        "checkpoint by `rotator prune` and the daemon (docs/compliance.md)",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)  # type: ignore[arg-type]

    @field_validator("lease_ttl")
    @classmethod
    def _lease_long_enough(cls, value: timedelta) -> timedelta:
        # 0s would let every other rotator take a policy over at once, and no child process could start
        if value < MIN_LEASE_TTL:
            shortest = format_duration(MIN_LEASE_TTL)
            raise ValueError(f"is {format_duration(value)}: a lease must last at least {shortest}; keep it well above "
                             "verify_timeout plus a few retries (default '15m')")
        return value

    @field_validator("journal")
    @classmethod
    def _journal_url(cls, value: str) -> str:
        """Refuse at validate what would fail (or echo a password) when the journal is opened."""
        if "://" not in value:
            if not value.strip() or "\x00" in value:
                raise ValueError("is empty; write a path or a URL")
            if value.startswith("~"):
                # Refused, not expanded: rotator before 2026-12-07 took it as a directory named "~" next to
                # the policy file, so a journal may be there, and expanding would open an empty one elsewhere
                # (its pending revocations never done).
                raise ValueError("starts with ~, which is not expanded to a home directory; write the path out "
                                 "(if a directory named '~' is next to the policy file, the journal used until "
                                 "now is in it: move it there)")
            return value
        written = value.split("://", 1)[0]
        scheme = written.lower()
        if scheme in ("sqlite", "postgresql", "postgres") and written != scheme:
            # the journal is opened by its scheme as written (rotator/core/journal.py: open_journal)
            raise ValueError(f"write the scheme in lower case: {scheme}:// (not {written[:20]}://)")
        if scheme == "sqlite":
            if not value.startswith("sqlite:///") or len(value) == len("sqlite:///"):
                raise ValueError("write sqlite:///absolute/path (three slashes)")
            return value
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(f"unsupported scheme {_excerpt(scheme, 20)!r}; use a path, sqlite:///absolute/path or "
                             "postgresql://user@host/database")
        problem = url_problem(value, _JOURNAL_FIX)
        if problem:
            raise InlineSecretError(f"inline secrets are refused: {problem}")
        problem = _postgres_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value


#: libpq's connection parameters as of PostgreSQL 18 (https://www.postgresql.org/docs/current/libpq-connect.html
#: #LIBPQ-PARAMKEYWORDS), for checking a journal URL where psycopg (the postgres extra) is not installed;
#: with psycopg, the list of the libpq it loads is used instead. "ssl" is libpq's URI-only alias (ssl=true).
_LIBPQ_KEYWORDS = frozenset({
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth", "channel_binding",
    "connect_timeout", "client_encoding", "options", "application_name", "fallback_application_name",
    "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "replication",
    "gssencmode", "sslmode", "sslnegotiation", "sslcompression", "sslcert", "sslkey", "sslkeylogfile",
    "sslpassword", "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "min_protocol_version", "max_protocol_version",
    "krbsrvname", "gsslib", "gssdelegation", "service", "target_session_attrs", "load_balance_hosts",
    "oauth_issuer", "oauth_client_id", "oauth_client_secret", "oauth_scope", "scram_client_key",
    "scram_server_key", "ssl",
})  # fmt: skip
_PG_URL_FORM = "write postgresql://user@host:5432/database (several hosts: user@host1:5432,host2:5432/database)"


def _postgres_url_problem(url: str) -> str | None:
    """Why libpq would refuse the postgresql:// ``url`` when the journal is opened, or None."""
    return _host_problem(url) or _query_problem(url) or _libpq_parse_problem(url)


def _host_problem(url: str) -> str | None:
    # libpq's multi-host form user@host1:port1,host2:port2 (urlsplit would read "port1,host2:port2" as one port);
    # the host list ends at the first '/' or '?', and an empty host or port means libpq's default
    netloc = re.split(r"[/?]", url.split("://", 1)[1], maxsplit=1)[0].rpartition("@")[2]
    for host in netloc.split(","):
        if host.startswith("[") and "]" not in host:
            return f"the IPv6 address {_excerpt(host)!r} has no closing ']'; write [::1]:5432"
        name, port = _host_and_port(host)
        if port and not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
            return f"the port is not a number from 1 to 65535 for host {_excerpt(name)!r}; {_PG_URL_FORM}"
    return None


def _host_and_port(host: str) -> tuple[str, str]:
    if host.startswith("["):  # an IPv6 address: [::1]:5432
        name, _, rest = host[1:].partition("]")
        return name, rest.removeprefix(":")
    name, _, port = host.partition(":")
    return name, port


def _query_problem(url: str) -> str | None:
    # libpq reads everything after the first '?' as key=value pairs joined by '&' (a '#' included)
    from urllib.parse import unquote

    query = url.partition("?")[2]
    if not query:
        return None
    known = _libpq_keywords()
    for pair in query.split("&"):
        key = unquote(pair.partition("=")[0])
        if pair and key not in known:
            return _unknown_key(key, known)
    return None


def _libpq_keywords() -> frozenset[str]:
    """The loaded libpq's connection parameters, or the documented ones where psycopg is not installed."""
    try:
        from psycopg import pq
    except ImportError:  # the postgres extra is optional; opening the journal says how to install it
        return _LIBPQ_KEYWORDS
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults()) | {"ssl"}


def _unknown_key(key: str, known: frozenset[str]) -> str:
    near = difflib.get_close_matches(key.lower(), sorted(known), n=1)
    guess = f" (did you mean {near[0]!r}?)" if near else ""
    return (f"the query key {_excerpt(key)!r}{guess} is not a libpq connection parameter, and libpq would "
            "refuse the URL; write only libpq's parameters (sslmode, connect_timeout, target_session_attrs, ...: "
            "https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS), and a server "
            "setting in options, e.g. ?options=-csearch_path%3Drotator")


def _libpq_parse_problem(url: str) -> str | None:
    """What libpq itself says of ``url`` (a key without '=', a bad %-escape, ssl=false), or None."""
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # the checks above are all there is without psycopg
        return None
    try:
        conninfo_to_dict(url)
    except ProgrammingError as exc:
        return (f"libpq cannot read the URL: {_excerpt(one_line(str(exc).strip()), 200)}; write postgresql://user@host:5432/"
                "database?key=value&key=value (https://www.postgresql.org/docs/current/libpq-connect.html"
                "#LIBPQ-CONNSTRING-URIS)")
    return None


class Defaults(BaseModel):
    """Values every policy inherits unless it sets its own."""

    model_config = ConfigDict(extra="forbid")
    schedule: str | None = None
    grace: Duration = Field("24h", validate_default=True, description="how long the previous token stays valid")
    margin: Duration = Field(
        "1d", validate_default=True, description="extra lifetime beyond interval + grace + 2 x verify_timeout"
    )
    verify_timeout: Duration = Field(
        "5m", validate_default=True, description="how long a new token may take to start working"
    )


class AdapterSpec(BaseModel):
    """``type`` picks the adapter; every other key is the adapter's own setting."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="adapter name, e.g. influxctl-management or vault-kv2")
    name: str | None = Field(None, description="stores only: a name for messages and status (default: type)")


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME_PATTERN, description="unique policy name")
    enabled: StrictBool = True
    issuer: AdapterSpec
    store: list[AdapterSpec] = Field(min_length=1, description="one or more [[policy.store]] tables")
    schedule: str | None = Field(
        None, description="'30d', 'rate(30 days)', 5-field UTC cron or AWS 'cron(0 3 ? * MON *)'"
    )
    window: str | None = Field(
        None, description="UTC window 'HH:MM-HH:MM' rotations must fall in; a random moment inside it"
    )
    grace: Duration | None = None
    margin: Duration | None = None
    lifetime: Duration | None = Field(
        None, description="token lifetime; default interval + grace + 2 x verify_timeout + margin"
    )
    max_age: Duration | None = Field(
        None, description="the cryptoperiod: a current token older than this is out of compliance; "
        "default longest schedule gap + grace + margin (docs/compliance.md)"
    )
    verify_timeout: Duration | None = None
    adopt: StrictBool = Field(False, description="allow overwriting a store secret rotator does not manage yet")
    description: str = Field(DEFAULT_DESCRIPTION, description="token description; must contain {tag}")

    @field_validator("description")
    @classmethod
    def _has_tag(cls, value: str) -> str:
        """Checked without rendering: a format spec such as ``{policy:>400000000}`` would render hundreds of MB."""
        literal, fields = _description_parts(value)
        if "tag" not in fields:
            raise ValueError("must contain {tag} so a token whose value was lost can be found and revoked")
        # Rendered only now: no format spec is left, and the text is at most MAX_DESCRIPTION long. The
        # revocation rule finds a tag only as a whole word (carries_tag): "{tag}-auto" would pass here and
        # then leave every replaced token unrevoked.
        tag = "rotator:p:0"
        if not carries_tag(value.format(tag=tag, policy="p"), tag):
            raise ValueError("must have {tag} as a word of its own: follow it by a space, a '.', ':' or '/', or "
                             "end the text with it (a letter, digit, '-' or '_' right after it hides the tag from "
                             "the revocation check, and no replaced token would be revoked)")
        longest = literal + sum(_FIELD_LENGTHS[f] for f in fields)
        if longest > MAX_DESCRIPTION:
            raise ValueError(f"can render to {longest} characters; keep it to {MAX_DESCRIPTION} (with {{tag}} at "
                             f"{_FIELD_LENGTHS['tag']} and {{policy}} at {_FIELD_LENGTHS['policy']} at most)")
        return value


_DESCRIPTION_USAGE = ("may only use the fields {tag} and {policy}, as they are (no format spec such as {policy:>10}, "
                      "no conversion or attribute); write a literal brace as {{ or }}")


def _description_parts(value: str) -> tuple[int, list[str]]:
    """The length of a description's text and the fields it uses, in order; ValueError for any field but
    a plain {tag} or {policy}."""
    if len(value) > MAX_DESCRIPTION:  # before parsing: a description is a line, not a document
        raise ValueError(f"is {len(value)} characters long; keep it to {MAX_DESCRIPTION}")
    control = next((i for i, c in enumerate(value) if c < " " or "\x7f" <= c <= "\x9f"), None)
    if control is not None:  # a NUL failed every mint (influxctl's argument), a line break splits listings
        raise ValueError(f"holds a control character (U+{ord(value[control]):04X}, character {control + 1}); "
                         "write the description as one line of plain text")
    try:
        parsed = list(Formatter().parse(value))
    except ValueError:  # a single '{' or '}'
        raise ValueError(_DESCRIPTION_USAGE) from None
    fields = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in _FIELD_LENGTHS or spec or conversion:
            raise ValueError(_DESCRIPTION_USAGE)
        fields.append(name)
    return sum(len(text) for text, *_ in parsed), fields


def _config_file_model() -> type[BaseModel]:
    """The whole policy file, for its JSON schema. Built on demand: it names the ``[daemon]`` models,
    which only the daemon and ``rotator schema`` need (issue 12: `rotator status` start-up)."""
    from rotator.config.daemon_config import DaemonSettings

    class ConfigFile(BaseModel):
        """The whole policy file."""

        model_config = ConfigDict(extra="forbid")
        rotator: GlobalSettings = Field(default_factory=GlobalSettings)  # type: ignore[arg-type]
        defaults: Defaults = Field(default_factory=Defaults)  # type: ignore[arg-type]
        daemon: DaemonSettings = Field(default_factory=DaemonSettings)  # type: ignore[arg-type]
        policy: list[PolicySpec] = Field(default_factory=list)

    return ConfigFile


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy file: where, what, and how to fix it."""

    where: str
    message: str
    hint: str = ""

    def __post_init__(self) -> None:
        # A message may quote input: never a token (invariant 4), never pages of it, and never a control
        # character: a key holding an escape sequence would rewrite the terminal (erase lines, print a
        # false "valid"), a line break would start a problem of its own. Hints quote input too.
        for name in ("where", "message", "hint"):
            text = one_line(mask_tokens(getattr(self, name)))
            object.__setattr__(self, name, text if len(text) <= 2000 else text[:2000] + "...")

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" + (f" (fix: {self.hint})" if self.hint else "")


class PolicyFileError(ConfigError):
    """The policy file is invalid; ``problems`` lists every problem found."""

    def __init__(self, path: Path | str, problems: Sequence[Problem]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{self.path}: {len(self.problems)} problem(s)\n{lines}",
            hint=f"edit {self.path} and run `rotator validate {self.path}` again",
        )


@dataclass(frozen=True)
class Config:
    path: Path
    settings: GlobalSettings
    policies: tuple[Policy, ...] = field(default_factory=tuple)
    #: the validated ``[daemon]`` table; None when the file has none (:attr:`daemon` is then the defaults)
    daemon_table: DaemonSettings | None = None
    #: valid, but likely not what was meant: logged at load, listed by `rotator validate --output json`
    warnings: tuple[str, ...] = ()

    @property
    def daemon(self) -> DaemonSettings:
        """``[daemon]``: the file's table, or the defaults (imported only by what runs the daemon)."""
        if self.daemon_table is not None:
            return self.daemon_table
        from rotator.config.daemon_config import DaemonSettings

        return DaemonSettings.model_validate({})

    def policy(self, name: str) -> Policy:
        return find_policy(self.policies, name, self.path)

    def journal_url(self) -> str:
        return _journal_url(self.settings.journal, self.path)


def _journal_url(journal: str, policy_file: Path) -> str:
    """``[rotator] journal`` as a URL: a path is relative to the policy file's directory."""
    if "://" in journal:
        return journal
    path = Path(journal)
    return "sqlite://" + str(path if path.is_absolute() else (policy_file.parent / path).resolve())


def load_config(path: str | Path) -> Config:
    """Read and validate a policy file; PolicyFileError lists every problem."""
    path = Path(path)
    return load_config_bytes(read_policy_file(path), path)


def load_config_bytes(raw: bytes, path: Path) -> Config:
    """Validate ``raw``, the bytes of the policy file at ``path`` (which relative paths are resolved against)."""
    with _collector_paused():
        try:
            # utf-8-sig: a byte order mark (Windows editors write one) is not TOML's concern
            data = tomllib.loads(raw.decode("utf-8-sig"))
        except RecursionError:
            raise PolicyFileError(path, [_too_deep("<file>")]) from None
        except ValueError as exc:  # TOMLDecodeError, UnicodeDecodeError, an integer of thousands of digits
            message = str(exc)
            if "integer string conversion" in message:
                problem = Problem("<file>", "a number has thousands of digits", "write a number of sensible size")
            else:
                problem = Problem("<file>", f"not valid TOML: {message}", "fix the syntax")
            raise PolicyFileError(path, [problem]) from None
        return parse_config(data, path)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a policy file is parsed and validated.

    The load allocates dozens of objects per policy and frees few until it ends; on a file of
    10,000 policies the collector's passes over that growing heap (five full ones) were a sixth of
    a daemon's start (issue 12). What the load leaves unreachable is collected after it, as usual.
    The switch is the process's: another thread that allocates meanwhile waits for its collection
    until the load ends; a process that turned the collector off itself keeps it off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _too_deep(where: str) -> Problem:
    return Problem(where, f"tables or lists are nested more than {MAX_NESTING} levels deep",
                   "a policy file needs a few levels; see docs/policy.md")


def _nests_deeper(data: Any, limit: int) -> bool:
    """Whether :func:`_deepest` finds a place (it names it); without making a name for every node.

    A node is deeper than ``limit`` exactly when a table or list at depth ``limit`` or more has an
    item, so only tables and lists are walked (a 10,000-policy file has ~150,000 values)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if type(node) is dict or isinstance(node, Mapping):
            items: Any = node.values()
        elif isinstance(node, list | tuple):
            items = node
        else:
            continue
        if depth >= limit:
            if len(items):
                return True
            continue
        depth += 1
        for value in items:  # a plain loop, a type test first: this runs for every value of the file
            kind = type(value)
            if kind is dict or kind is list:
                stack.append((value, depth))
            elif kind not in _TOML_SCALARS and isinstance(value, Mapping | list | tuple):
                stack.append((value, depth))
    return False


#: What tomllib gives besides tables and lists.
_TOML_SCALARS = frozenset({str, int, float, bool, datetime, date, time})


def _deepest(data: Any, limit: int) -> str | None:
    """Where ``data`` nests deeper than ``limit`` (iteratively: a deep input cannot overflow this check)."""
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        node, depth, where = stack.pop()
        if depth > limit:
            return where or "<file>"
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1, f"{where}.{k}" if where else str(k)) for k, v in node.items())
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1, where) for v in node)
    return None


class _RawConfigFile(BaseModel):
    """The file's top level, with policies left raw so each is validated (and reported) on its own."""

    model_config = ConfigDict(extra="forbid")
    rotator: GlobalSettings = Field(default_factory=GlobalSettings)  # type: ignore[arg-type]
    defaults: Defaults = Field(default_factory=Defaults)  # type: ignore[arg-type]
    #: validated by DaemonSettings in :func:`parse_config`, and only when the file has the table
    daemon: Any = None
    policy: list[dict[str, Any]] = Field(default_factory=list)


def parse_config(data: Mapping[str, Any], path: Path) -> Config:
    if _nests_deeper(data, MAX_NESTING):
        deep = _deepest(data, MAX_NESTING) or "<file>"
        raise PolicyFileError(path, [_too_deep(_excerpt(deep))])
    if not isinstance(data, Mapping):
        raise PolicyFileError(path, [Problem("<file>", "is not a table of settings", "see docs/policy.md")])
    problems: list[Problem] = list(_tokens_outside_checked_tables(data))
    inline = len(problems)
    daemon, daemon_problems = _daemon_table(data)
    try:
        top = _RawConfigFile.model_validate(data)
    except ValidationError as exc:
        # the problems in the order of the file model's fields: rotator, defaults, daemon, policy, others
        early = sum(1 for err in exc.errors() if err["loc"] and err["loc"][0] in ("rotator", "defaults"))
        top_problems = _problems(exc, data)
        problems.extend(top_problems[:early] + daemon_problems + top_problems[early:])
        daemon_problems = []
        # Keep what did validate, so one bad key does not add false problems to every policy.
        salvage: dict[str, Any] = {"policy": _raw_policies(data)}
        for key, model in (("defaults", Defaults), ("rotator", GlobalSettings)):
            try:
                salvage[key] = model.model_validate(data.get(key, {}))
            except ValidationError:
                kept = _keep_history_alone(data.get(key)) if key == "rotator" else None
                if kept is not None:  # keep_history is checked against the policies: on its own, if it passed
                    salvage[key] = kept
        top = _RawConfigFile.model_validate(salvage)
    problems.extend(daemon_problems)
    # A bad [defaults].schedule is the defaults' problem, said once, whether or not a policy inherits it.
    defaults_schedule_ok = True
    if top.defaults.schedule is not None:
        try:
            _schedule(top.defaults.schedule)
        except ValueError as exc:
            problems.append(Problem("defaults.schedule", str(exc)))
            defaults_schedule_ok = False

    policies: list[Policy] = []
    warnings: list[str] = []  # valid, but likely not what was meant: logged if the file is valid
    places: list[str] = []  # each valid policy's place in the file, for problems found across policies
    seen: set[str] = set()
    seen_names: list[Any] = []  # every policy's name as written, for the daemon's `policies` lists
    base_dir = path.parent.resolve()  # once: resolving is a syscall per path component
    valid: dict[Any, Any] = {}  # adapter tables already validated in this file (see _adapter_settings)
    with registry.one_scan():  # the adapters' entry points are read once for the whole file
        for index, raw in enumerate(top.policy):
            name = raw.get("name")
            where = _policy_place(index, name)
            if isinstance(name, str) and name in seen:
                problems.append(Problem(where, "duplicate policy name", "give every policy a unique name"))
            seen.add(str(name))
            seen_names.append(name)
            try:
                spec = PolicySpec.model_validate(raw)
            except ValidationError as exc:
                problems.extend(_problems(exc, raw, prefix=where))
                _timing_of_invalid(raw, exc, top.defaults, where, problems, defaults_schedule_ok=defaults_schedule_ok)
                _check_raw_adapters(raw, where, problems)
                continue
            policy = _build_policy(spec, top.defaults, where, base_dir, problems, valid,
                                   defaults_schedule_ok=defaults_schedule_ok, warnings=warnings)
            if policy is not None:
                policies.append(policy)
                places.append(where)
    problems.extend(_shared_tag_namespaces(policies, places))
    problems.extend(_shared_secrets(policies, places))
    if daemon is not None:
        problems.extend(_unknown_policy_names(daemon, {n for n in seen_names if isinstance(n, str)}))
        if daemon.audit.file is not None:
            problems.extend(_audit_file_problems(daemon.audit.file, path, _written_journal(data, top.rotator)))
    problems.extend(history_problems(top.rotator.keep_history, policies))
    # A key holding a token has said so: its type or parse problem would only quote the token again.
    secret_places = {problem.where for problem in problems[:inline]}
    problems[inline:] = [problem for problem in problems[inline:] if problem.where not in secret_places]
    if problems:
        raise PolicyFileError(path, problems)
    if warnings:  # `rotator validate` shows them, the daemon and each run log them
        import logging  # only then: `rotator status` from its cache imports no logging (test_cli_startup.py)

        log = logging.getLogger("rotator.config")
        for warning in warnings:
            log.warning("%s: %s", path, warning)
    return Config(path=path, settings=top.rotator, policies=tuple(policies), daemon_table=daemon,
                  warnings=tuple(warnings))


def history_problems(keep: timedelta, policies: Sequence[Policy]) -> list[Problem]:
    """A ``keep_history`` too short to be meant: ``"1m"`` is a minute, and `rotator prune` then prunes
    nearly every event. At least :data:`MIN_KEEP_HISTORY`, or, when every policy rotates more often,
    the longest schedule interval (a test or demo that rotates every second keeps seconds)."""
    if keep >= MIN_KEEP_HISTORY:
        return []
    schedules = {(p.schedule_text, p.window_text): p for p in policies}  # a few, however many policies
    longest = max((p.schedule.interval for p in schedules.values()), default=MIN_KEEP_HISTORY)
    floor = min(MIN_KEEP_HISTORY, longest)
    if keep >= floor:
        return []
    reason = "one day" if floor == MIN_KEEP_HISTORY else f"the longest schedule interval ({format_duration(floor)})"
    return [Problem(
        "rotator.keep_history",
        f"is {format_duration(keep)}, shorter than {reason}: `rotator prune` and the daemon would prune the "
        "journal's history of nearly every rotation",
        f"write at least {format_duration(floor)} (default 400d, a yearly audit period with margin); 'm' is "
        "minutes: write months in days, e.g. '180d'",
    )]


def _shared_tag_namespaces(policies: Sequence[Policy], places: Sequence[str]) -> Iterable[Problem]:
    """Two policies whose issuers would read the same tokens as carrying their own run tags.

    An issuer whose tag is not written by rotator into a description but derived from what it can
    see (InfluxDB 3 derives it from a token's name prefix) says where its tags come from with
    ``tag_namespaces(policy) -> iterable of str`` on its settings; two policies must not share one.
    ``places``: each policy's place in the file (``policy[1] 'p2'``), named in the problem.
    """
    owner: dict[str, tuple[str, str]] = {}
    for policy, place in zip(policies, places, strict=True):
        namespaces = getattr(policy.issuer_settings, "tag_namespaces", None)
        if not callable(namespaces):
            continue
        conflict = getattr(policy.issuer_settings, "tag_namespace_conflict", None)
        words = conflict() if callable(conflict) else None
        consequence, hint = words or (
            "each would take the other's tokens for its own",
            "give each policy its own token_name_prefix, and list in former_token_name_prefixes only prefixes "
            "this policy used",
        )
        for namespace in namespaces(policy.name):
            name, other = owner.setdefault(namespace, (policy.name, place))
            # (two policies of one name derive the same namespaces: "duplicate policy name" says it)
            if name != policy.name:
                yield Problem(
                    f"{place}.issuer",
                    f"it reads the same tokens as the issuer of {other} ({namespace}): {consequence}",
                    hint,
                )


def _shared_secrets(policies: Sequence[Policy], places: Sequence[str]) -> Iterable[Problem]:
    """Two stores, of two policies or of one, that write one secret.

    Across policies, the second policy's runs fail at PUBLISH ("two policies must not share a secret"),
    or, with ``adopt = true``, each overwrites the other's token on every run; within one policy, one
    write replaces the other's. A store's settings say where it writes with
    ``secret_locations(base_dir) -> iterable of str`` (optional: a store without it is not compared).
    """
    owner: dict[str, tuple[str, str, str]] = {}  # location -> (policy name, its place, "store[1] 'name'")
    for policy, place in zip(policies, places, strict=True):
        for index, binding in enumerate(policy.stores):
            locations = getattr(binding.settings, "secret_locations", None)
            if not callable(locations):
                continue
            store = f"store[{index}] {binding.name!r}"
            try:  # an adapter's hook (a third party's too) works with paths: a bad one must not end the load
                found = dict.fromkeys(one_line(str(at)) for at in locations(policy.base_dir))
            except (ValueError, OSError) as exc:
                yield Problem(
                    f"{place}.store[{index}]",
                    f"where it writes cannot be worked out: {_excerpt(one_line(str(exc)), 200)}",
                    "check the store's path and name settings",
                )
                continue
            for location in found:
                name, other_place, other_store = owner.setdefault(location, (policy.name, place, store))
                if other_place == place:
                    if other_store != store:
                        yield Problem(
                            f"{place}.store[{index}]",
                            f"writes the same secret as {other_store} of this policy ({location}): one write "
                            "replaces the other",
                            "remove one of the two stores, or point it at another secret",
                        )
                elif name != policy.name:  # (two policies of one name: "duplicate policy name" says it)
                    yield Problem(
                        f"{place}.store[{index}]",
                        f"writes the same secret as {other_place}.{other_store} ({location}): the later "
                        "policy's runs would fail ('two policies must not share a secret'), or with adopt = true "
                        "each would overwrite the other's token on every run",
                        "give each policy its own secret (another path, secret_id or profile); to publish one "
                        "token to several places, list them as [[policy.store]] tables of one policy",
                    )


def _unknown_policy_names(daemon: DaemonSettings, known: set[str]) -> Iterable[Problem]:
    """Names in a webhook's or hook's ``policies`` that no policy of the file has: a typo would
    silently keep its notifications or its command from ever running."""
    listed = sorted(known)
    shown = ", ".join(listed[:_NAMES_LISTED]) or "(none)"
    if len(listed) > _NAMES_LISTED:
        shown += f" and {len(listed) - _NAMES_LISTED} more"
    lists = [("webhooks", i, w.policies) for i, w in enumerate(daemon.webhooks)]
    lists += [("hooks", i, h.policies) for i, h in enumerate(daemon.hooks)]
    for table, index, names in lists:
        for name in names or ():
            if name in known:
                continue
            close = difflib.get_close_matches(name, listed, n=1) if len(listed) <= 1000 else []
            guess = f"did you mean {close[0]!r}? " if close else ""
            yield Problem(
                f"daemon.{table}[{index}].policies",
                f"{_excerpt(name)!r} names no policy of this file: it would never "
                + ("be notified" if table == "webhooks" else "run"),
                f"{guess}write the name of a [[policy]] (known: {shown})",
            )


def _written_journal(data: Mapping[str, Any], settings: GlobalSettings) -> str | None:
    """The journal setting the file gives, if it is valid (None: its own problem is reported already)."""
    table = data.get("rotator", {})
    written = table.get("journal", settings.journal) if isinstance(table, Mapping) else None
    return settings.journal if written == settings.journal else None


def _audit_file_problems(file: Path, policy_file: Path, journal: str | None) -> list[Problem]:
    """``[daemon.audit] file`` naming a file that is not its own: the daemon appends a JSON line there at every
    event, which turns the policy file into invalid TOML (every command then fails) and is overwritten by SQLite
    in the journal's files (the event lost, the journal damaged). Resolved as the daemon resolves it
    (rotator/observe/notify.py, AuditSink): relative to the directory of the policy file as it was named."""
    from rotator.config.policy_source import journal_files, same_file

    audit = file if file.is_absolute() else policy_file.absolute().parent / file
    shown = _excerpt(str(file), _QUOTE_LIMIT * 2)
    hint = "name a file of its own, e.g. /var/log/rotator/audit.jsonl"
    if os.path.isdir(audit):
        return [Problem("daemon.audit.file", f"{shown} is a directory: the daemon appends its audit lines to a file",
                        hint)]
    taken = [("the policy file itself", policy_file, "it would no longer be valid TOML (every command "
              "would then fail to read it)")]
    if journal is not None:
        taken += [(what, at, "SQLite would overwrite them (audit events lost) or they would damage the journal")
                  for what, at in journal_files(_journal_url(journal, policy_file), "the journal")]
    for what, at, harm in taken:
        if same_file(audit, at):
            return [Problem("daemon.audit.file", f"{shown} is {what} ({at}): the daemon appends its JSON audit "
                            f"lines to this file, and {harm}", hint)]
    return []


def _daemon_table(data: Mapping[str, Any]) -> tuple[DaemonSettings | None, list[Problem]]:
    """The file's ``[daemon]`` table validated, or its problems; (None, []) when there is none, without
    importing the daemon's models (`rotator status` and `validate` of a file without the table)."""
    if "daemon" not in data:
        return None, []
    from rotator.config.daemon_config import DaemonSettings

    table = data["daemon"]
    # the audit file, a hook's command or environment: each reaches open() or exec(), which raise ValueError
    nul = [Problem(f"daemon{at if at.startswith('[') else '.' + at}", _NUL, _NUL_FIX)
           for at, text in string_values(table) if "\x00" in text]
    if nul:
        return None, nul
    try:
        daemon = DaemonSettings.model_validate(table)
    except ValidationError as exc:
        return None, _problems(exc, table, prefix="daemon")
    # `watch = "no"`, `workers = 4.0`, an empty audit file: see _loose_values
    loose = list(_loose_values(daemon, table, "daemon")) if isinstance(table, Mapping) else []
    return (None, loose) if loose else (daemon, [])


def _policy_place(index: int, name: Any) -> str:
    """``policy[1] 'p2'``: a policy's place in problems, without a name that looks like a token (its own
    problem says so), so that each of its keys has one place, which :func:`parse_config` matches."""
    return f"policy[{index}]" + (f" {name!r}" if isinstance(name, str) and not find_token(name) else "")


def _tokens_outside_checked_tables(data: Mapping[str, Any]) -> Iterable[Problem]:
    """A token-looking value anywhere else in the file (a description, a schedule, a store name, the
    audit file, ...). Adapter tables and hooks/webhooks have their own checks, with specific fixes; an
    adapter table's ``name`` and ``type`` are checked here: they are no setting of the adapter, and
    reach the journal, logs, metric labels and status as a policy's name does."""
    hint = ('no setting of the policy file holds a credential; reference one with { file = "/path/to/file" } or '
            '{ env = "VAR" } where a setting accepts it (see docs/policy.md)')
    for key, value in data.items():
        sections: list[tuple[str, Any]] = []
        if key == "policy" and isinstance(value, list):
            for i, raw in enumerate(value):
                if isinstance(raw, Mapping):
                    where = _policy_place(i, raw.get("name"))
                    sections += [(f"{where}.{k}", v) for k, v in raw.items() if k not in ("issuer", "store")]
                    stores = raw.get("store")
                    tables = [("issuer", raw.get("issuer"))]
                    tables += [(f"store[{j}]", s) for j, s in enumerate(stores if isinstance(stores, list) else [])]
                    sections += [(f"{where}.{at}.{k}", table[k]) for at, table in tables
                                 if isinstance(table, Mapping) for k in ("name", "type") if k in table]
                else:
                    sections.append((f"policy[{i}]", raw))
        elif key == "daemon" and isinstance(value, Mapping):
            sections += [(f"daemon.{k}", v) for k, v in value.items() if k not in ("hooks", "webhooks")]
        else:
            sections.append((str(key), value))
        for where, node in sections:
            for at, text in string_values(node):
                path = where + ("" if not at else at if at.startswith("[") else "." + at)
                if find_token(text):
                    yield Problem(path, "inline secrets are refused: the value looks like a token", hint)
                elif "://" in text and not path.startswith("rotator.journal"):  # the journal has its own check
                    problem = url_problem(text, "remove the credential from the URL")
                    if problem:
                        yield Problem(path, f"inline secrets are refused: {problem}", hint)


def _keep_history_alone(table: Any) -> GlobalSettings | None:
    """``[rotator]`` with its own ``keep_history`` and defaults for the rest, when that key is valid
    and another is not (None: no keep_history, or a bad one, which has its own problem already)."""
    if not isinstance(table, Mapping) or "keep_history" not in table:
        return None
    try:
        return GlobalSettings.model_validate({"keep_history": table["keep_history"]})
    except ValidationError:
        return None


def _raw_policies(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = data.get("policy")
    return [p for p in raw if isinstance(p, dict)] if isinstance(raw, list) else []


def _check_raw_adapters(raw: Mapping[str, Any], where: str, problems: list[Problem]) -> None:
    """Validate a policy's adapter tables even when the policy itself has other problems."""
    tables = [("issuer", f"{where}.issuer", raw.get("issuer"))]
    stores = raw.get("store")
    tables += [("store", f"{where}.store[{i}]", s) for i, s in enumerate(stores if isinstance(stores, list) else [])]
    for kind, at, table in tables:
        if not (isinstance(table, dict) and isinstance(table.get("type"), str)):
            continue  # PolicySpec's own problems already say what is wrong with it
        try:
            spec = AdapterSpec.model_validate(table)
        except ValidationError:
            continue  # e.g. a non-string `name`: reported by PolicySpec already, with its location
        _adapter_settings(kind, spec, at, problems)  # type: ignore[arg-type]


class _Timing(NamedTuple):
    """A policy's schedule (with its window) and the durations checked against it."""

    schedule: Schedule | None
    grace: timedelta
    verify_timeout: timedelta
    lifetime: timedelta | None
    max_age: timedelta | None


def _timing(
    spec: PolicySpec, defaults: Defaults, where: str, problems: list[Problem], warnings: list[str], *,
    defaults_schedule_ok: bool = True, across: bool = True,
) -> _Timing:
    """The schedule, window, lifetime and max_age checks of a policy.

    ``across``: False when some of these fields failed validation (the salvage of an invalid policy,
    :func:`_timing_of_invalid`): only the policy's own schedule and window are parsed then, as a check
    between fields would compare with a default in place of what was written."""
    schedule: Schedule | None = None
    # `schedule = ""` is the policy's own (empty) schedule, refused as "   " is: not a silent [defaults]
    schedule_text = spec.schedule if spec.schedule is not None or not across else defaults.schedule
    if schedule_text is None:
        if across:
            problems.append(Problem(f"{where}.schedule", "no schedule", "set schedule = '30d' or in [defaults]"))
    elif spec.schedule is None and not defaults_schedule_ok:
        pass
    else:
        try:
            schedule = _schedule(schedule_text)
        except ValueError as exc:
            problems.append(Problem(f"{where}.schedule", str(exc)))
    if spec.window is not None:
        try:
            window = _window(spec.window)
        except ValueError as exc:
            problems.append(Problem(f"{where}.window", str(exc)))
        else:
            schedule = schedule.with_window(window) if schedule is not None else None

    grace = spec.grace if spec.grace is not None else defaults.grace
    margin = spec.margin if spec.margin is not None else defaults.margin
    verify_timeout = spec.verify_timeout if spec.verify_timeout is not None else defaults.verify_timeout
    lifetime = spec.lifetime
    if schedule is not None and across:
        # A token's expiry counts from its MINT, the schedule from its PUBLISH, which comes after up to
        # verify_timeout of VERIFY; its replacement is published after the interval + how much later
        # than due a window lets a rotation happen (Schedule.longest_gap: up to a day, depending on the
        # interval and the window) + up to verify_timeout of its own VERIFY; then it stays valid for
        # grace. So a token lives at least that long after it is minted (margin covers the rest of
        # both runs: PLAN, MINT and PUBLISH, and a scheduling tick).
        verifying = 2 * verify_timeout
        needed = schedule.longest_gap + grace + verifying
        if lifetime is None:
            lifetime = needed + margin
        elif lifetime <= needed:
            wait = format_duration(schedule.longest_gap - schedule.interval)
            waits = f" + the window's wait (up to {wait})" if schedule.window is not None else ""
            problems.append(
                Problem(
                    f"{where}.lifetime",
                    f"is not longer than schedule interval{waits} + grace + twice verify_timeout "
                    f"({format_duration(verifying)}): tokens would expire while still in use (a token's lifetime "
                    "counts from its mint, the schedule from its publication, which follows up to verify_timeout "
                    "of verification in this run and again in the run that replaces it)",
                    f"raise lifetime above {format_duration(needed)}, or shorten schedule, grace or verify_timeout",
                )
            )

    max_age = spec.max_age
    if schedule is not None and across:
        gap = schedule.longest_gap
        if max_age is None:
            max_age = gap + grace + margin
        elif max_age <= gap:
            problems.append(Problem(
                f"{where}.max_age",
                f"is not longer than the schedule's longest gap ({format_duration(gap)}): every token would be out "
                "of compliance before its rotation",
                f"raise max_age above {format_duration(gap)} or rotate more often",
            ))
        elif max_age <= (verified := gap + verify_timeout):
            # A warning, not a problem: files that upgraded users run were valid with it (a daemon would
            # refuse to start). A token's age counts from its publication; its replacement is published
            # after the gap and up to verify_timeout of VERIFY, during which the token is past max_age.
            warnings.append(
                f"{where}.max_age: {format_duration(max_age)} is not longer than the schedule's longest gap "
                f"({format_duration(gap)}) + verify_timeout ({format_duration(verify_timeout)}): while a rotation "
                "verifies its new token, the current one is older than max_age, and `rotator status --check` "
                f"reports the policy out of compliance (fix: raise max_age above {format_duration(verified)}, or "
                "shorten verify_timeout)"
            )
    return _Timing(schedule, grace, verify_timeout, lifetime, max_age)


#: PolicySpec's fields that :func:`_timing` reads
_TIMING_FIELDS = frozenset({"schedule", "window", "grace", "margin", "lifetime", "max_age", "verify_timeout"})


def _timing_of_invalid(
    raw: Mapping[str, Any], exc: ValidationError, defaults: Defaults, where: str, problems: list[Problem], *,
    defaults_schedule_ok: bool,
) -> None:
    """:func:`_timing`'s checks of a policy that failed validation, on its fields that passed: a bad
    name must not hide a bad window or too short a lifetime ("validate reports every problem at once")."""
    failed = {err["loc"][0] if err["loc"] else None for err in exc.errors()}
    if None in failed:  # a problem of the whole table: nothing to check beside it
        return
    # Placeholders stand in for the rest: _timing reads none of it.
    salvaged = {"name": "p", "issuer": {"type": "-"}, "store": [{"type": "-"}]}
    salvaged.update((k, v) for k, v in raw.items() if k in _TIMING_FIELDS and k not in failed)
    try:
        spec = PolicySpec.model_validate(salvaged)
    except ValidationError:  # (each field passed on its own: not expected)
        return
    _timing(spec, defaults, where, problems, [], defaults_schedule_ok=defaults_schedule_ok,
            across=not failed & _TIMING_FIELDS)


def _build_policy(
    spec: PolicySpec, defaults: Defaults, where: str, base_dir: Path, problems: list[Problem],
    valid: dict[Any, Any] | None = None, *, defaults_schedule_ok: bool = True, warnings: list[str] | None = None,
) -> Policy | None:
    """``defaults_schedule_ok``: False when ``defaults.schedule`` is bad (its problem is reported once, as
    defaults.schedule): a policy inheriting it is not built, and adds no problem of its own for it.
    ``warnings``: where what is valid but likely wrong is added (see :func:`_timing`)."""
    before = len(problems)
    schedule, grace, verify_timeout, lifetime, max_age = _timing(
        spec, defaults, where, problems, warnings if warnings is not None else [],
        defaults_schedule_ok=defaults_schedule_ok,
    )

    if spec.issuer.name is not None:
        problems.append(Problem(f"{where}.issuer.name", "an issuer has no name", "remove the key (stores have names)"))
    issuer_settings = _adapter_settings("issuer", spec.issuer, f"{where}.issuer", problems, valid)
    stores: list[StoreBinding] = []
    names: set[str] = set()
    for i, store_spec in enumerate(spec.store):
        swhere = f"{where}.store[{i}]"
        name = store_spec.name or (store_spec.type if len(spec.store) == 1 else f"{store_spec.type}-{i}")
        if store_spec.name is not None and not _STORE_NAME.fullmatch(store_spec.name):
            problems.append(Problem(
                f"{swhere}.name", f"{_excerpt(store_spec.name)!r} is not a store name",
                f"{_NAME_RULE}; the journal records each store's versions by "
                "name, so rename it while no run of the policy is open (the rotator version that accepted this file "
                "shows it with `rotator status`; after the rename, `rotator recover` finishes or undoes an open one)",
            ))
        elif name in names:
            problems.append(Problem(f"{swhere}.name", f"duplicate store name {name!r}", "set distinct names"))
        names.add(name)
        settings = _adapter_settings("store", store_spec, swhere, problems, valid)
        if settings is not None:
            stores.append(StoreBinding(name, store_spec.type, settings))
            # A store may refuse some issuers (an influxctl profile's mgmt_token holds management tokens only).
            check = getattr(settings, "issuer_problem", None)
            problem = check(spec.issuer.type) if callable(check) else None
            if problem:
                problems.append(Problem(swhere, problem, "see docs/issuers.md#publishing-to-an-influxctl-profile"))

    if len(problems) > before or schedule is None or issuer_settings is None or lifetime is None:
        return None
    return Policy(
        name=spec.name,
        enabled=spec.enabled,
        issuer_type=spec.issuer.type,
        issuer_settings=issuer_settings,
        stores=tuple(stores),
        schedule_text=schedule.text,
        window_text=spec.window,
        grace=grace,
        lifetime=lifetime,
        verify_timeout=verify_timeout,
        adopt=spec.adopt,
        description=spec.description,
        base_dir=base_dir,
        max_age=max_age,
    )


# Schedules and windows are immutable and policies of one file mostly share a few: parsed once
# each (a ValueError is not cached: it is raised again for every policy that has it).
_schedule = lru_cache(maxsize=1024)(parse_schedule)
_window = lru_cache(maxsize=1024)(parse_window)


def _adapter_settings(
    kind: registry.Kind, spec: AdapterSpec, where: str, problems: list[Problem], valid: dict[Any, Any] | None = None
) -> Any:
    """The table's settings validated by its adapter's model, or None with its problems added.

    ``valid`` remembers the tables of one file that passed, by content: policies often share an
    issuer table (one cluster, one influxctl), and a table equal to one that passed passes again
    with an equal result, which is shared when the settings type is immutable (frozen).
    """
    settings = dict(spec.model_extra or {})
    key = _table_key(kind, spec.type, settings) if valid is not None else None
    if key is not None and valid is not None:
        known = valid.get(key)
        if known is not None:
            return known
    try:
        cls = registry.load(kind, spec.type)
    except ConfigError as exc:
        problems.append(Problem(f"{where}.type", str(exc), exc.hint))
        return None
    inline = list(_inline_secrets(settings, where, plain=plain_string_fields(cls.settings_model)))
    problems.extend(inline)
    if inline:
        return None
    try:
        result = validate_settings(cls.settings_model, settings)
    except ValidationError as exc:
        problems.extend(_problems(exc, settings, prefix=where))
        return None
    loose = list(_loose_values(result, settings, where))
    if loose:
        problems.extend(loose)
        return None
    if key is not None and valid is not None and _is_frozen(cls.settings_model):
        valid[key] = result
    return result


def _loose_values(value: Any, written: Mapping[str, Any], where: str) -> Iterator[Problem]:
    """Settings that validated only by conversion from another TOML type, and empty paths.

    pydantic's lax mode reads ``true`` as the number 1, ``"no"`` as false, ``443.0`` as 443 and ``"10"``
    as 10.0: what the file says is then not what runs. An adapter's settings type (a third party's too,
    a dataclass that must not import pydantic) declares plain ``bool``, ``int`` and ``float``, so the
    validated settings are walked beside the table they came from, and each value is compared with
    what was written: a bool must have been written as one, an int as a whole number, a float as a
    number. A path written as ``""`` is refused too: pydantic reads it as ``.``, the directory.
    """
    for key, field_value in _settings_fields(value):
        if key in written:
            yield from _loose_value(field_value, written[key], f"{where}.{key}")


def _loose_value(value: Any, written: Any, where: str) -> Iterator[Problem]:
    kind = type(value)
    if kind is bool or kind is int or kind is float:
        if type(written) is not kind and not (kind is float and type(written) is int):
            shown = (("true" if written else "false") if type(written) is bool
                     else f"a quoted string ({_excerpt(written)!r})" if isinstance(written, str)
                     else _excerpt(repr(written)))  # fmt: skip
            yield Problem(where, f"is {shown}, not {_SCALARS[kind][0]}", _SCALARS[kind][1])
    elif isinstance(value, PurePath):
        if written == "":
            yield Problem(where, "is empty (which would name the directory '.')",
                          "write a path; a relative one counts from the policy file's directory")
    elif isinstance(value, list | tuple):
        if isinstance(written, list) and len(written) == len(value):
            for index, (item, text) in enumerate(zip(value, written, strict=True)):
                yield from _loose_value(item, text, f"{where}[{index}]")
    elif isinstance(written, Mapping):
        yield from _loose_values(value, written, where)


#: (what a value of the type is, how to write one) for :func:`_loose_value`
_SCALARS: dict[type, tuple[str, str]] = {
    bool: ("true or false", "write true or false, without quotes"),
    int: ("a whole number", "write a whole number, without quotes (1, not 1.0, \"1\" or true)"),
    float: ("a number", "write a number, without quotes (10 or 2.5, not \"10\" or true)"),
}


def _settings_fields(value: Any) -> Iterable[tuple[str, Any]]:
    """(key as written, validated value) of a settings object: a pydantic model, a dataclass or a table."""
    if isinstance(value, BaseModel):
        return ((info.alias or name, getattr(value, name)) for name, info in type(value).model_fields.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, Mapping):
        return value.items()
    return ()


class _Unhashable(Exception):
    pass


def _table_key(kind: str, adapter: str, table: Mapping[str, Any]) -> Any:
    """A hashable form of an adapter table that tells apart what validation could (``1``, ``1.0``
    and ``true`` included); None for a value that is not TOML's."""
    try:
        return kind, adapter, _frozen(table)
    except _Unhashable:
        return None


def _frozen(value: Any) -> Any:
    cls = type(value)
    if cls is dict:
        return dict, tuple((k, _frozen(v)) for k, v in value.items())
    if cls is list:
        return list, tuple(_frozen(v) for v in value)
    if cls in _TOML_SCALARS:
        return cls, value
    raise _Unhashable


def _is_frozen(model: type) -> bool:
    """Whether instances of a settings type are immutable (a frozen pydantic model or dataclass)."""
    config = getattr(model, "model_config", None)
    if isinstance(config, Mapping):
        return bool(config.get("frozen"))
    params = getattr(model, "__dataclass_params__", None)
    return bool(getattr(params, "frozen", False))


def _nested_store_plain(table: Mapping[str, Any]) -> frozenset[str]:
    """A nested store table (e.g. ``management_token_from``) exempts its own plain-string names."""
    kind = table.get("type")
    if not isinstance(kind, str):
        return frozenset()
    try:
        return plain_string_fields(registry.load("store", kind).settings_model)
    except ConfigError:
        return frozenset()


def _inline_secrets(
    settings: Mapping[str, Any], where: str, plain: frozenset[str] = frozenset()
) -> Iterable[Problem]:
    """Credentials written into an adapter's table: a secret-named key, a token-looking value, a URL with
    credentials; and a NUL character, which no setting holds (a path, a binary, a name: the OS and the
    servers end them there, os.open raises ValueError). The table's depth is bounded by :data:`MAX_NESTING`
    (checked before), so recursion is safe."""
    for key, value in settings.items():
        if isinstance(value, Mapping):
            yield from _inline_secrets(value, f"{where}.{key}", plain=_nested_store_plain(value))
        elif key in SECRET_LOOKING_KEYS and isinstance(value, str) and key not in plain:
            yield Problem(f"{where}.{key}", _INLINE, _reference_hint(key))
        elif isinstance(value, str):  # most values: what string_values would yield, without its walk
            if find_token(value):
                yield Problem(f"{where}.{key}", f"{_INLINE} (the value looks like a token)", _reference_hint(key))
            elif "\x00" in value:
                yield Problem(f"{where}.{key}", _NUL, _NUL_FIX)
            elif "://" in value:
                problem = url_problem(value, _URL_FIX)
                if problem:
                    yield Problem(f"{where}.{key}", f"inline secrets are refused: {problem}")
        else:
            for at, text in string_values(value):
                full = f"{where}.{key}{'.' + at if at and not at.startswith('[') else at}"
                if find_token(text):
                    yield Problem(full, f"{_INLINE} (the value looks like a token)", _reference_hint(key))
                elif "\x00" in text:
                    yield Problem(full, _NUL, _NUL_FIX)
                elif "://" in text:
                    problem = url_problem(text, _URL_FIX)
                    if problem:
                        yield Problem(full, f"inline secrets are refused: {problem}")


_NUL = "holds a NUL character (U+0000), which no path, name or command can hold"
_NUL_FIX = 'remove it (a "\\u0000" escape writes one into a TOML string)'
_INLINE = "inline secrets are refused: a policy file is not a safe place for a credential"
_URL_FIX = ('remove it from the URL and reference the credential with { file = "/path/to/file" } or '
            '{ env = "VAR" } where this adapter has such a setting (see docs/policy.md)')


def _reference_hint(key: str) -> str:
    if key not in SECRET_LOOKING_KEYS:  # a key that takes no reference: `path`, `description`...
        return (f"take the token out of `{key}`; a credential goes in the adapter's credential setting, as "
                '{ file = "/path/to/file" } or { env = "VAR" } (see docs/policy.md)')
    return f'reference it instead: {key} = {{ file = "/path/to/file" }} or {key} = {{ env = "VAR" }}'


_HINTS = {
    "missing": "add this key",
    "extra_forbidden": "remove it or check its spelling (see docs/policy.md)",
    "unexpected_keyword_argument": "remove it or check its spelling (see docs/policy.md)",
    "string_type": "write a quoted string",
    "bool_type": "write true or false",
    "int_type": "write a whole number",
    "literal_error": "use one of the allowed values",
    "union_tag_invalid": "use one of the allowed values",
    "string_pattern_mismatch": "write the value in the form this setting takes (see docs/policy.md, or the adapter's "
                               "page for an adapter's setting)",
}

#: The labels pydantic gives the members of a union of plain types (``role_id: str | CredentialRef`` fails
#: at ``role_id.str`` and ``role_id.CredentialRef.fil``); other members are named after their class
#: (capitalised) or a schema (``literal['self']``, ``function-after[...]``), which no key of the file spells.
_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "bytes", "none", "date", "datetime", "time", "timedelta",
                          "decimal", "uuid"})  # fmt: skip
_KEY_SPELLING = re.compile(r"[a-z_][A-Za-z0-9_]*\Z")
#: What each union member accepts, as the file writes it (any other class: "a table").
_MEMBER_FORMS = {
    "str": "a quoted string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "CredentialRef": 'a table { file = "/path/to/file" } / { env = "VAR" }',
    "SelfCredential": '{ method = "self" }',
}
#: Errors that only say the value is not of a member's kind (a table given where a string is accepted):
#: the merged problem lists the accepted forms instead of repeating each.
_WRONG_KIND = frozenset({"string_type", "int_type", "int_parsing", "float_type", "float_parsing", "bool_type",
                         "bool_parsing", "literal_error", "model_type", "model_attributes_type", "dataclass_type",
                         "dataclass_exact_type", "dict_type", "is_instance_of", "none_required"})  # fmt: skip
#: The union members' messages that say the same thing in pydantic's two wordings (model, dataclass).
_SAME_MESSAGE = {"extra_forbidden": "not a key it takes", "unexpected_keyword_argument": "not a key it takes"}


def _problems(exc: ValidationError, data: Any, prefix: str = "") -> list[Problem]:
    found: list[Problem | str] = []  # a str: where a union's problems go, once merged
    unions: dict[str, list[tuple[str, str, Any]]] = {}
    for err in exc.errors(include_url=False, include_input=False):
        loc, label, rest = _loc(err["loc"], data, missing=err["type"] == "missing")
        where = ".".join(p for p in (prefix, loc) if p) or "<file>"
        if label is not None:
            if where not in unions:
                unions[where] = []
                found.append(where)
            unions[where].append((label, rest, err))
            continue
        found.append(_problem(where, err))
    out: list[Problem] = []
    for item in found:
        if isinstance(item, Problem):
            out.append(item)
            continue
        members = unions[item]
        if len({label for label, _, _ in members}) < 2:  # one member failed: no union to explain
            out.extend(_problem(".".join(p for p in (item, rest) if p), err) for _, rest, err in members)
        else:
            out.append(_union_problem(item, members))
    return out


def _message(err: Any) -> str:
    message: str = err["msg"]
    return message[len("Value error, ") :] if message.startswith("Value error, ") else message


def _problem(where: str, err: Any) -> Problem:
    message = _message(err)
    hint = _HINTS.get(err["type"], "")
    if err["type"] == "list_type" and err["loc"] and err["loc"][-1] in ("policy", "store"):
        table = "policy" if err["loc"][-1] == "policy" else "policy.store"
        hint = f"write each one as [[{table}]], with two brackets (an array of tables), not [{table}]"
    elif err["type"] == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") == _NAME_PATTERN:
        message, hint = "is not a valid name", _NAME_RULE
    return Problem(where, message, hint)


def _union_problem(where: str, members: Sequence[tuple[str, str, Any]]) -> Problem:
    """One problem for a value that none of a union's members accepted: the forms it takes, and what was
    wrong with it as the member of its kind (a misspelt key of a table), not a problem per member."""
    by_member: dict[str, list[tuple[str, Any]]] = {}
    for label, rest, err in members:
        by_member.setdefault(label, []).append((rest, err))
    forms = [_member_form(label) for label in by_member]
    # The members that took the value's kind (a table): a key one of them takes is no misspelling, even
    # if another refuses it ({ file = 5 } is a bad path, not an unknown key of { method = "self" }).
    fitting = [errs for errs in by_member.values() if not all(not r and e["type"] in _WRONG_KIND for r, e in errs)]
    details: dict[str, str] = {}  # detail -> its hint
    for _, rest, err in members:
        if err["type"] in _WRONG_KIND and not rest:
            continue
        if err["type"] in _SAME_MESSAGE and not all(
                any(r == rest and e["type"] in _SAME_MESSAGE for r, e in errs) for errs in fitting):
            continue
        message = _SAME_MESSAGE.get(err["type"]) or _message(err)
        details.setdefault(f"{rest}: {message}" if rest else message, _HINTS.get(err["type"], ""))
    message = "must be " + ", or ".join(forms)
    if details:
        message += " (as written: " + "; ".join(details) + ")"
    hints = set(details.values())
    hint = hints.pop() if len(hints) == 1 and "" not in hints else "write it in one of these forms (see docs/policy.md)"
    return Problem(where, message, hint)


def _member_form(label: str) -> str:
    form = _MEMBER_FORMS.get(label)
    if form is not None:
        return form
    literal = re.fullmatch(r"literal\[(.*)\]", label)
    if literal:  # literal['self'] -> "self"
        return " or ".join(f'"{value}"' for value in re.findall(r"'([^']*)'", literal.group(1))) or label
    return "a table" if label[:1].isupper() else label


def _is_member_label(item: str, node: Any) -> bool:
    """Whether ``item`` of a pydantic location names a union member, not a key of the file (``node``: the
    value of the file at that place). A key that is not written is only ever a missing one (the caller
    keeps those): a label is any item the table does not hold that no key spells, or any name under a
    value that has no keys."""
    if isinstance(node, Mapping):
        return item not in node and (item in _TYPE_LABELS or not _KEY_SPELLING.match(item))
    if node is None:  # (a place the file does not reach: only the spelling tells)
        return item in _TYPE_LABELS or not _KEY_SPELLING.match(item)
    return True


def _loc(loc: Sequence[int | str], data: Any, *, missing: bool = False) -> tuple[str, str | None, str]:
    """Render a pydantic location, naming list items by their ``name`` key where they have one.

    A union member's label (:func:`_is_member_label`) is no key of the file: the location is cut there
    into (the union's place, the first member label, the place inside that member). Without one:
    (the place, None, ""). ``missing``: the last item is a key the file lacks, whatever its spelling."""
    head: list[str] = []
    tail: list[str] = []
    label: str | None = None
    node = data
    tag_skipped: Any = None
    for i, item in enumerate(loc):
        parts = head if label is None else tail
        if (isinstance(node, Mapping) and node is not tag_skipped and i + 1 < len(loc)
                and item in (node.get("method"), node.get("type"))):
            # a tagged union's variant (an auth table's method) that pydantic puts in the location:
            # not a key of the file, so `auth.token_fil`, not `auth.token_file.token_fil`
            tag_skipped = node
            continue
        if isinstance(item, str) and not (missing and i == len(loc) - 1) and _is_member_label(item, node):
            label = item if label is None else label
            continue
        if isinstance(item, int):
            label_text = f"[{item}]"
            entry = node[item] if isinstance(node, list) and item < len(node) else None
            if isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and not find_token(entry["name"]):
                label_text += f" {entry['name']!r}"
            if parts:
                parts[-1] += label_text
            else:
                parts.append(label_text)
        else:
            parts.append(str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(head), label, ".".join(tail)


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the policy file, including every installed adapter's settings."""
    schema = _config_file_model().model_json_schema()
    defs = schema.setdefault("$defs", {})
    for kind in ("issuer", "store"):
        variants = []
        for name in registry.available(kind):
            try:
                cls = registry.load(kind, name)
            except ConfigError:
                continue
            sub = settings_json_schema(cls.settings_model, ref_template="#/$defs/{model}")
            defs.update(sub.pop("$defs", {}))
            sub.setdefault("properties", {})["type"] = {"const": name}
            if kind == "store":
                sub["properties"]["name"] = {"type": "string"}
            sub.setdefault("required", []).append("type")
            sub["title"] = f"{kind} {name}"
            variants.append(sub)
        if variants:
            defs[f"{kind.capitalize()}Adapter"] = {"oneOf": variants}
    policy = defs["PolicySpec"]["properties"]
    policy["issuer"] = {"$ref": "#/$defs/IssuerAdapter"} if "IssuerAdapter" in defs else policy["issuer"]
    if "StoreAdapter" in defs:
        policy["store"] = {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/StoreAdapter"}}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "rotator policy file"
    return schema
