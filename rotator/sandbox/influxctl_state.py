"""The SIMULATED influxctl's server side: one JSON state file shared by every process, and its API.

A simulator for ``rotator demo`` and the tests, never used in production: the "server" is this
file, not an InfluxDB cluster. The simulator executable (:mod:`rotator.sandbox.influxctl_simulator`),
the demo and the tests all go through this module, so the file format lives in one place. It is
stdlib-only because the tests run the simulator under a bare ``python3 >= 3.11`` without the
project's venv. ``faults`` and ``calls`` (and :meth:`FakeInfluxctl.add_fault`) are test-only fault
injection and call recording; the demo uses neither.

State file (JSON, path in ``$FAKE_INFLUXCTL_STATE``; a sidecar ``<path>.lock`` is flock'ed around
every read and every read-modify-write, and the file is replaced atomically)::

    {
      "schema": 1,
      "account_id": "<uuid>",            # every token belongs to this account
      "cluster_id": "<uuid>",            # the account's cluster (database tokens belong to one cluster)
      "other_cluster_ids": ["<uuid>"],   # more clusters of the account (optional, see add_cluster())
      "user_id": "<uuid>",               # the human (OAuth) user: created_by of add_token() tokens
      "options": {
        "activation_delay_s": 0.0,       # a new token is unauthorized until created_at + delay
        "db_activation_delay_s": 0.0,    # the same for new database tokens ("seconds to minutes")
        "create_output": "table",        # "table" (influxctl >= 2.11) | "legacy" (<= 2.10)
        "mgmt_token_can_manage": true,   # false: a mgmt_token may list but not create/revoke
        "admin_token_sha256": null,      # hash of the Clustered admin token ([profile.auth.token])
        "clock_offset_s": 0.0            # the fake server's clock = wall clock + offset
      },
      "tokens": [{
        "id": "<uuid4>", "description": "...", "token_prefix": "M.V1.+5Jk",
        "token_sha256": "<hex>",          # never the value, as the real server stores hashes
        "account_id": "<uuid>", "created_by": "<uuid>",
        "created_at": "2026-01-01T00:00:00.123456Z",
        "active_at": "...",               # created_at + activation delay at mint time
        "expires_at": "..." | null, "revoked_at": "..." | null
      }],
      "databases": ["db1", "db2"],       # the cluster's databases (a query elsewhere is NotFound)
      "db_tokens": [{                    # database tokens (``influxctl token ...``), a separate kind
        "id": "<uuid4>", "description": "...",
        "token_sha256": "<hex>",          # values look like "apiv1_" + 86 base64 characters
        "account_id": "<uuid>", "cluster_id": "<uuid>", "created_by": "<uuid>",
        "permissions": [{"id": "<uuid4>", "action": "read" | "write", "resource": "db1" | "*"}],
        "created_at": "...", "active_at": "...", "expires_at": "..." | null, "revoked_at": "..." | null
      }],
      "faults": [{"command": "management create", "mode": "exit", "times": 1, ...}],
      "calls": [{"argv": [...], "command": "management list", "profile": "default",
                 "pid": 123, "at": "..."}]
    }

Fault keys (see :meth:`FakeInfluxctl.add_fault`): ``command``, ``mode`` (one of
:data:`FAULT_MODES`), ``times`` (default 1, decremented on use, ``-1`` = forever), ``code``
(exit status, default 1), ``message`` (stderr text), ``seconds`` (hang/pause length, default
3600), ``marker`` (file written by pause modes; it holds the fake's pid), ``until`` (pause modes: the pause
ends once this file exists, ``seconds`` at most), ``output`` (garbage text).
"""

from __future__ import annotations

# Imports are few and cheap on purpose: the tests start the simulator, which imports this module, thousands of
# times, and a start costs what its imports cost. Hence no uuid, secrets, base64, tempfile, hashlib or pathlib
# here (their stand-ins below say why each is safe); pathlib only where the tests' own API needs a Path.
import binascii
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    StrPath = str | os.PathLike[str]

__all__ = [
    "ALL_DATABASES",
    "COMMANDS",
    "DB_TOKEN_PREFIX",
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_CLUSTER_ID",
    "FAULT_MODES",
    "STATE_ENV",
    "FakeInfluxctl",
    "State",
    "cluster_id",
    "cluster_ids",
    "databases",
    "db_token_problem",
    "db_tokens",
    "find_db_token",
    "find_token",
    "format_time",
    "hash_token",
    "make_permissions",
    "may",
    "mint_db_token",
    "mint_token",
    "parse_time",
    "read_state",
    "server_now",
    "token_problem",
    "transaction",
    "write_profile",
]

STATE_ENV = "FAKE_INFLUXCTL_STATE"
SCHEMA_VERSION = 1
COMMANDS = (
    "management create",
    "management list",
    "management revoke",
    "token create",
    "token list",
    "token get",
    "token revoke",  # also reached through its alias ``token delete``
    "token update",
    "query",
)
FAULT_MODES = ("exit", "garbage", "hang", "after_effect_exit", "pause", "pause_after_effect")
CREATE_OUTPUTS = ("table", "legacy")
DEFAULT_OPTIONS: dict[str, Any] = {
    "activation_delay_s": 0.0,
    "db_activation_delay_s": 0.0,
    "create_output": "table",
    "mgmt_token_can_manage": True,
    "admin_token_sha256": None,
    "clock_offset_s": 0.0,
}
TOKEN_PREFIX = "M.V1."
# The list's PREFIX column shows 9 characters, e.g. "M.V1.+5Jk" (facts file 1.5).
PREFIX_LENGTH = 9
# Database tokens: "apiv<N>_<base64-encoded 512-bit random string>" (facts file 2.2).
DB_TOKEN_PREFIX = "apiv1_"
DEFAULT_DATABASES = ("db1", "db2")
DB_ACTIONS = ("read", "write")
#: The ``*`` resource: every database (facts file 2.1).
ALL_DATABASES = "*"
#: The account and cluster of a new state, and those :func:`write_profile` writes into a Dedicated profile:
#: a profile that names others reaches no account or cluster of the fake (NotFound, as a server answers).
DEFAULT_ACCOUNT_ID = "00000000-0000-4000-8000-00000000acc1"
DEFAULT_CLUSTER_ID = "00000000-0000-4000-8000-00000000c1a5"

State = dict[str, Any]


# --- time ---------------------------------------------------------------------------------------


def server_now(state: State) -> datetime:
    """The fake server's clock; ``clock_offset_s`` lets a test skew it without sleeping."""
    offset = float(state["options"].get("clock_offset_s", 0.0))
    # Microseconds, like the docs' nanos values (948178000): a database timestamp, not a Go clock.
    return datetime.now(UTC) + timedelta(seconds=offset)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def _optional_time(value: str | None) -> datetime | None:
    return parse_time(value) if value else None


# --- storage ------------------------------------------------------------------------------------


@contextmanager
def _locked(path: StrPath, exclusive: bool) -> Iterator[None]:
    # A sidecar lock file, because the state file itself is replaced (rename) on every write and
    # a lock on the old inode would not exclude a process that opened the new one.
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(path: StrPath) -> State:
    try:
        with open(path) as handle:
            state: State = json.loads(handle.read())
    except FileNotFoundError:
        raise FileNotFoundError(f"fake influxctl state {path} does not exist (call init())") from None
    if state.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"fake influxctl state {path}: unsupported schema {state.get('schema')!r}")
    return state


def _save(path: StrPath, state: State) -> None:
    # Write-then-rename so a reader that skipped the lock still never sees half a file.
    fd, tmp = _temp_file(os.fspath(path))
    with os.fdopen(fd, "w") as handle:
        # One write of the same text json.dump writes in hundreds of pieces.
        handle.write(json.dumps(state, indent=2))
    os.replace(tmp, path)


_TEMP_NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _temp_file(path: str) -> tuple[int, str]:
    """``tempfile.mkstemp(dir=<path's folder>, prefix=".<path's name>.")``: the same flags, mode (0600, which the
    state file keeps once renamed) and name shape, without importing tempfile (about 3 ms a start)."""
    folder, name = os.path.split(path)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(10000):  # tempfile.TMP_MAX
        suffix = "".join(_TEMP_NAME_CHARACTERS[byte % len(_TEMP_NAME_CHARACTERS)] for byte in os.urandom(8))
        tmp = os.path.join(folder, f".{name}.{suffix}")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"fake influxctl state {path}: no free temporary file name in {folder or '.'}")


def read_state(path: StrPath) -> State:
    with _locked(path, exclusive=False):
        return _load(path)


@contextmanager
def transaction(path: StrPath) -> Iterator[State]:
    """Yield the state under an exclusive lock; it is saved only if the block does not raise."""
    with _locked(path, exclusive=True):
        state = _load(path)
        yield state
        _save(path, state)


# --- tokens -------------------------------------------------------------------------------------


def hash_token(value: str) -> str:
    import hashlib  # (here: a start of the simulator that hashes no token skips loading OpenSSL, ~3 ms)

    return hashlib.sha256(value.encode()).hexdigest()


def _random_base64(size: int) -> str:
    # base64.b64encode(secrets.token_bytes(size)).decode() is exactly this; base64 and secrets (which imports
    # random and hashlib) would cost about 5 ms at every start of the simulator.
    return binascii.b2a_base64(os.urandom(size), newline=False).decode()


def _new_uuid4() -> str:
    """``str(uuid.uuid4())`` without importing uuid (it imports platform, about 2 ms a start of the simulator)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    digits = raw.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _new_token_value() -> str:
    # Standard base64 alphabet, not url-safe: the docs' prefixes ("M.V1.+5Jk") contain "+".
    # 32 random bytes = 43 characters once the "=" padding is dropped.
    return TOKEN_PREFIX + _random_base64(32).rstrip("=")


def mint_token(
    state: State,
    *,
    description: str,
    expires_at: datetime | None,
    created_by: str,
    created_at: datetime | None = None,
    active_at: datetime | None = None,
) -> tuple[str, State]:
    """Add a new token to ``state``; return its value (only the caller ever sees it) and record."""
    value = _new_token_value()
    created = created_at or server_now(state)
    delay = timedelta(seconds=float(state["options"]["activation_delay_s"]))
    record: State = {
        "id": _new_uuid4(),
        "description": description,
        "token_prefix": value[:PREFIX_LENGTH],
        "token_sha256": hash_token(value),
        "account_id": state["account_id"],
        "created_by": created_by,
        "created_at": format_time(created),
        "active_at": format_time(active_at or created + delay),
        "expires_at": format_time(expires_at) if expires_at else None,
        "revoked_at": None,
    }
    state["tokens"].append(record)
    return value, record


def find_token(state: State, token_id: str) -> State | None:
    return next((t for t in state["tokens"] if t["id"] == token_id), None)


def token_problem(state: State, value: str, now: datetime) -> tuple[State | None, str | None]:
    """Return the record for ``value`` and why it cannot authenticate (``None``: it can)."""
    digest = hash_token(value)
    record = next((t for t in state["tokens"] if t["token_sha256"] == digest), None)
    if record is None:
        return None, "unknown token"
    if record["revoked_at"]:
        return record, "token revoked"
    expires = _optional_time(record["expires_at"])
    if expires is not None and expires <= now:
        return record, "token expired"
    if parse_time(record["active_at"]) > now:
        return record, "token not active yet"
    return record, None


# --- database tokens ----------------------------------------------------------------------------


def _new_db_token_value() -> str:
    # 64 random bytes = 86 base64 characters once the "==" padding is dropped.
    return DB_TOKEN_PREFIX + _random_base64(64).rstrip("=")


def db_tokens(state: State) -> list[State]:
    """The database token records (a state file written before they existed has none)."""
    tokens: list[State] = state.setdefault("db_tokens", [])
    return tokens


def databases(state: State) -> list[str]:
    names: list[str] = state.setdefault("databases", list(DEFAULT_DATABASES))
    return names


def cluster_id(state: State) -> str:
    return str(state.setdefault("cluster_id", _new_uuid4()))


def cluster_ids(state: State) -> list[str]:
    """Every cluster of the account: :func:`cluster_id` first, then those :meth:`FakeInfluxctl.add_cluster` added."""
    return [cluster_id(state), *state.get("other_cluster_ids", [])]


def make_permissions(grants: list[tuple[str, str]]) -> list[State]:
    """``[(action, resource), ...]`` as permission records, duplicates dropped, order kept."""
    out: list[State] = []
    seen: set[tuple[str, str]] = set()
    for action, resource in grants:
        if action not in DB_ACTIONS:
            raise ValueError(f"action must be one of {DB_ACTIONS}, not {action!r}")
        if (action, resource) not in seen:
            seen.add((action, resource))
            out.append({"id": _new_uuid4(), "action": action, "resource": resource})
    return out


def mint_db_token(
    state: State,
    *,
    description: str,
    permissions: list[tuple[str, str]],
    expires_at: datetime | None,
    created_by: str,
    created_at: datetime | None = None,
    active_at: datetime | None = None,
    cluster: str | None = None,
) -> tuple[str, State]:
    """Add a database token of ``cluster`` (default: :func:`cluster_id`) to ``state``; return its value (only
    the caller sees it) and record."""
    value = _new_db_token_value()
    created = created_at or server_now(state)
    delay = timedelta(seconds=float(state["options"].get("db_activation_delay_s", 0.0)))
    record: State = {
        "id": _new_uuid4(),
        "description": description,
        "token_sha256": hash_token(value),
        "account_id": state["account_id"],
        "cluster_id": cluster or cluster_id(state),
        "created_by": created_by,
        "permissions": make_permissions(permissions),
        "created_at": format_time(created),
        "active_at": format_time(active_at or created + delay),
        "expires_at": format_time(expires_at) if expires_at else None,
        "revoked_at": None,
    }
    db_tokens(state).append(record)
    return value, record


def find_db_token(state: State, token_id: str) -> State | None:
    return next((t for t in db_tokens(state) if t["id"] == token_id), None)


def may(record: State, action: str, database: str) -> bool:
    """Whether the database token ``record`` grants ``action`` on ``database``."""
    return any(p["action"] == action and p["resource"] in (database, ALL_DATABASES) for p in record["permissions"])


def db_token_problem(
    state: State, value: str, now: datetime, database: str | None = None, action: str = "read"
) -> tuple[State | None, str | None]:
    """Return the record for the database token ``value`` and why it cannot do ``action``.

    The problem is ``None`` (it can), one of the authentication problems of
    :func:`token_problem`, ``"permission denied"`` or ``"database not found"`` (checked in that
    order, like an authorizer in front of the query engine).
    """
    digest = hash_token(value)
    record = next((t for t in db_tokens(state) if t["token_sha256"] == digest), None)
    if record is None:
        return None, "unknown token"
    if record["revoked_at"]:
        return record, "token revoked"
    expires = _optional_time(record["expires_at"])
    if expires is not None and expires <= now:
        return record, "token expired"
    if parse_time(record["active_at"]) > now:
        return record, "token not active yet"
    if database is not None:
        if not may(record, action, database):
            return record, "permission denied"
        if database not in databases(state):
            return record, "database not found"
    return record, None


def _grants(permissions: dict[str, list[str]] | list[tuple[str, str]]) -> list[tuple[str, str]]:
    if isinstance(permissions, dict):
        unknown = set(permissions) - set(DB_ACTIONS)
        if unknown:
            raise ValueError(f"unknown action(s) {sorted(unknown)}: use {DB_ACTIONS}")
        return [(action, db) for action in DB_ACTIONS for db in permissions.get(action, [])]
    return list(permissions)


# --- the API tests use --------------------------------------------------------------------------


class FakeInfluxctl:
    """Set up and inspect the fake influxctl's state file. Never holds a token value itself."""

    def __init__(self, state_path: Path | str) -> None:
        from pathlib import Path  # here, not at the top: the simulator never needs it (see the imports)

        self.path = Path(state_path)

    def init(
        self,
        activation_delay_s: float = 0.0,
        create_output: str = "table",
        mgmt_token_can_manage: bool = True,
        admin_token: str | None = None,
        clock_offset_s: float = 0.0,
        db_activation_delay_s: float = 0.0,
        databases: tuple[str, ...] | list[str] = DEFAULT_DATABASES,
        account_id: str = DEFAULT_ACCOUNT_ID,
        cluster_id: str = DEFAULT_CLUSTER_ID,
    ) -> None:
        """Start from an empty server (no tokens, faults or calls; the databases ``databases``) of one
        account with one cluster (:meth:`add_cluster` adds more)."""
        state: State = {
            "schema": SCHEMA_VERSION,
            "account_id": account_id,
            "cluster_id": cluster_id,
            "user_id": _new_uuid4(),
            "options": dict(DEFAULT_OPTIONS),
            "tokens": [],
            "databases": list(databases),
            "db_tokens": [],
            "faults": [],
            "calls": [],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path, exclusive=True):
            _save(self.path, state)
        self.set(
            activation_delay_s=activation_delay_s,
            create_output=create_output,
            mgmt_token_can_manage=mgmt_token_can_manage,
            admin_token=admin_token,
            clock_offset_s=clock_offset_s,
            db_activation_delay_s=db_activation_delay_s,
        )

    def set(self, **options: Any) -> None:
        """Change options; ``admin_token`` takes the value and stores its hash."""
        if "admin_token" in options:
            admin = options.pop("admin_token")
            options["admin_token_sha256"] = hash_token(admin) if admin else None
        unknown = set(options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise ValueError(f"unknown fake influxctl option(s): {sorted(unknown)}")
        if options.get("create_output", "table") not in CREATE_OUTPUTS:
            raise ValueError(f"create_output must be one of {CREATE_OUTPUTS}")
        with transaction(self.path) as state:
            state["options"].update(options)

    def options(self) -> dict[str, Any]:
        return dict(read_state(self.path)["options"])

    @property
    def account_id(self) -> str:
        return str(read_state(self.path)["account_id"])

    @property
    def cluster_id(self) -> str:
        return cluster_id(read_state(self.path))

    @property
    def cluster_ids(self) -> list[str]:
        return cluster_ids(read_state(self.path))

    def add_cluster(self) -> str:
        """Another cluster of the account; returns its id. Management tokens are the account's: the
        management commands list, create and revoke the same tokens through each of its clusters."""
        new = _new_uuid4()
        with transaction(self.path) as state:
            state.setdefault("other_cluster_ids", []).append(new)
        return new

    def add_token(
        self,
        description: str,
        expires_at: datetime | None = None,
        created_at: datetime | None = None,
    ) -> tuple[str, str]:
        """A token a human created (Admin UI or an OAuth login), e.g. for bootstrap.

        Active at once, whatever the activation delay: it has long been synchronised.
        Returns ``(value, id)``.
        """
        with transaction(self.path) as state:
            created = created_at or server_now(state)
            value, record = mint_token(
                state,
                description=description,
                expires_at=expires_at,
                created_by=state["user_id"],
                created_at=created,
                active_at=created,
            )
        return value, str(record["id"])

    def revoke(self, token_id: str) -> None:
        """Revoke as a human would in the Admin UI (no CLI, no faults)."""
        self._revoke_as_human(find_token, token_id)

    def tokens(self) -> list[dict[str, Any]]:
        """Every management token record (hashes, never values), in creation order."""
        return [dict(t) for t in read_state(self.path)["tokens"]]

    def token_by_id(self, token_id: str) -> dict[str, Any] | None:
        record = find_token(read_state(self.path), token_id)
        return dict(record) if record else None

    def problem(self, value: str) -> str | None:
        """Why ``value`` cannot authenticate right now ("token revoked", ...), or ``None``."""
        state = read_state(self.path)
        return token_problem(state, value, server_now(state))[1]

    def is_active(self, value: str) -> bool:
        return self.problem(value) is None

    def add_fault(self, command: str, mode: str, *, times: int = 1, **kw: Any) -> None:
        """Queue a fault for ``command`` ("management create" ...); faults fire in order.

        Keyword options: ``code`` (int), ``message`` (str), ``seconds`` (float),
        ``marker`` (path, for pause modes), ``until`` (path, for pause modes: a test's release, so that
        what it checks during the pause does not depend on the machine's speed), ``output`` (str, for garbage).
        """
        if command not in COMMANDS:
            raise ValueError(f"command must be one of {COMMANDS}")
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}")
        unknown = set(kw) - {"code", "message", "seconds", "marker", "until", "output"}
        if unknown:
            raise ValueError(f"unknown fault option(s): {sorted(unknown)}")
        for key in ("marker", "until"):
            if key in kw:
                kw[key] = str(kw[key])
        with transaction(self.path) as state:
            state["faults"].append({"command": command, "mode": mode, "times": times, **kw})

    def faults(self) -> list[dict[str, Any]]:
        return [dict(f) for f in read_state(self.path)["faults"]]

    def clear_faults(self) -> None:
        with transaction(self.path) as state:
            state["faults"] = []

    def calls(self) -> list[dict[str, Any]]:
        """Every command that reached the fake server, oldest first."""
        return [dict(c) for c in read_state(self.path)["calls"]]

    # -- databases and database tokens ------------------------------------------------------

    def add_database(self, name: str) -> None:
        with transaction(self.path) as state:
            if name not in databases(state):
                databases(state).append(name)

    def databases(self) -> list[str]:
        return list(databases(read_state(self.path)))

    def add_db_token(
        self,
        description: str,
        permissions: dict[str, list[str]] | list[tuple[str, str]],
        expires_at: datetime | None = None,
        created_at: datetime | None = None,
        cluster_id: str | None = None,
    ) -> tuple[str, str]:
        """A database token a human created (Admin UI or influxctl), e.g. for bootstrap.

        ``permissions``: ``{"read": ["db1"], "write": ["*"]}`` or ``[("read", "db1"), ...]``.
        ``cluster_id``: the cluster it is made for (default: the first). Active at once, whatever the
        activation delay. Returns ``(value, id)``.
        """
        grants = _grants(permissions)
        with transaction(self.path) as state:
            created = created_at or server_now(state)
            value, record = mint_db_token(
                state,
                description=description,
                permissions=grants,
                expires_at=expires_at,
                created_by=state["user_id"],
                created_at=created,
                active_at=created,
                cluster=cluster_id,
            )
        return value, str(record["id"])

    def revoke_db_token(self, token_id: str) -> None:
        """Revoke a database token as a human would in the Admin UI (no CLI, no faults)."""
        self._revoke_as_human(find_db_token, token_id)

    def _revoke_as_human(self, find: Callable[[State, str], State | None], token_id: str) -> None:
        with transaction(self.path) as state:
            record = find(state, token_id)
            if record is None:
                raise KeyError(token_id)
            record["revoked_at"] = record["revoked_at"] or format_time(server_now(state))

    def db_tokens(self) -> list[dict[str, Any]]:
        """Every database token record (hashes, never values), revoked ones included, in creation order."""
        return [dict(t) for t in db_tokens(read_state(self.path))]

    def db_token_by_id(self, token_id: str) -> dict[str, Any] | None:
        record = find_db_token(read_state(self.path), token_id)
        return dict(record) if record else None

    def db_problem(self, value: str, database: str | None = None, action: str = "read") -> str | None:
        """Why the database token ``value`` cannot ``action`` on ``database`` now, or ``None``.

        Without ``database`` only authentication is checked ("token revoked", ...).
        """
        state = read_state(self.path)
        return db_token_problem(state, value, server_now(state), database, action)[1]

    def db_is_active(self, value: str) -> bool:
        return self.db_problem(value) is None


def _toml_string(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value)


def write_profile(
    path: Path | str,
    *,
    mgmt_token: str | None = None,
    token_file: Path | str | None = None,
    product: str = "clustered",
    name: str = "default",
    host: str = "influxdb.example.test",
    account_id: str = DEFAULT_ACCOUNT_ID,
    cluster_id: str = DEFAULT_CLUSTER_ID,
    oauth2: bool = False,
    append: bool = False,
) -> Path:
    """Write (or, with ``append``, add) an influxctl ``[[profile]]`` using only documented keys."""
    lines = ["[[profile]]", f"  name = {_toml_string(name)}", f"  product = {_toml_string(product)}"]
    if product == "clustered":
        lines += [f"  host = {_toml_string(host)}", '  port = "443"']
    else:
        lines += [f"  account_id = {_toml_string(account_id)}", f"  cluster_id = {_toml_string(cluster_id)}"]
    if mgmt_token is not None:
        lines.append(f"  mgmt_token = {_toml_string(mgmt_token)}")
    if token_file is not None:
        lines += ["  [profile.auth.token]", f"    token_file = {_toml_string(str(token_file))}"]
    if oauth2:
        lines += [
            "  [profile.auth.oauth2]",
            '    client_id = "fake-client"',
            '    scopes = [""]',
            '    parameters = { audience = "" }',
            '    token_url = "https://idp.example.test/oauth2/v2/token"',
            '    device_url = "https://idp.example.test/oauth2/v2/auth/device"',
        ]
    from pathlib import Path  # here, not at the top: see the imports

    target = Path(path)
    text = "\n".join(lines) + "\n"
    if append and target.exists():
        text = target.read_text() + "\n" + text
    target.write_text(text)
    target.chmod(0o600)
    return target
