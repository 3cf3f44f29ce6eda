"""The ``[daemon]`` table of the policy file: how `rotator daemon` runs (docs/daemon.md).

Only pydantic models live here (no scheduler, no HTTP), so the policy model can import them to
validate ``[daemon]`` alongside the policies, and ``rotator validate`` reports its problems too.

    [daemon]
    listen = "127.0.0.1:9464"          # /healthz, /readyz, /metrics
    sweep_interval = "60s"             # revocation/recovery sweep
    misfire_grace = "5m"               # a rotation starting later than this counts as misfired
    shutdown_timeout = "20s"           # SIGTERM: how long the current run may take to finish
    watch = false                      # reload when the file changes (mtime polling)

    [daemon.audit]
    file = "/var/log/rotator/audit.jsonl"   # or: stdout = true (the default)

    [[daemon.webhooks]]
    url = "https://alerts.example.com/rotator"
    on = ["failure", "orphan"]
    secret = { file = "/run/secrets/rotator-webhook-key" }

    [[daemon.hooks]]
    command = ["systemctl", "reload", "app"]
    timeout = "30s"
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rotator.config.durations import Duration
from rotator.config.inline_secrets import InlineSecretError, argv_problems, env_problems, find_token, url_problem
from rotator.config.schedule import format_duration
from rotator.core.credentials import CredentialRef

__all__ = [
    "AuditSettings",
    "DaemonSettings",
    "HookSettings",
    "NotifyOn",
    "WebhookSettings",
    "parse_listen",
]


#: What a webhook can be told about: a run failed; a token was left valid that should not be
#: (revocation gave up, an unpublished candidate could not be revoked); a rotation published.
NotifyOn = Literal["failure", "orphan", "success"]

_WEBHOOK_FIX = (
    "remove it from the URL: the receiver authenticates each delivery by its HMAC signature, whose key "
    'is referenced with secret = { file = "/path/to/file" } or secret = { env = "VAR" }'
)

_USERINFO_REFUSED = (
    "must not carry a user name (`user@` before the host): webhooks send no credentials in the URL; remove "
    "it. The receiver authenticates each delivery by its Standard Webhooks HMAC signature, whose key is "
    'referenced with secret = { file = "/path/to/file" } or { env = "VAR" }; a proxy that needs a login '
    "takes it from HTTPS_PROXY / HTTP_PROXY in the daemon's environment"
)

_LISTEN = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]*)):(?P<port>\d{1,5})\Z")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``":9464"`` (every interface) -> (host, port).

    Port 0 is the system's choice of a free port (the daemon logs the one it bound). A host is an IP
    address or a name of DNS labels: ``-`` or ``999.1.1.1`` passed here, then failed the daemon's start."""
    match = _LISTEN.match(text)
    if match is None or int(match.group("port")) > 65535 or not _listen_host_ok(match.group("v6"), match.group("host")):
        raise ValueError(f"{text!r} is not an address; write HOST:PORT, e.g. '127.0.0.1:9464' or '[::1]:9464', "
                         "with an IP address or a host name and a port up to 65535 (':9464': every interface)")
    host = match.group("v6") or match.group("host") or ""
    return host, int(match.group("port"))


def _listen_host_ok(v6: str | None, host: str | None) -> bool:
    import ipaddress  # here: only a [daemon] listen setting needs it, and every command loads this module
    import socket

    if v6 is not None:
        host = v6  # [127.0.0.1] binds as 127.0.0.1
    if not host:
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:  # what the daemon's bind takes too: 127.1, 0, 10.1 (inet_aton's short forms of IPv4)
        socket.inet_aton(host)
        return v6 is None or "." in host
    except OSError:
        if v6 is not None:
            return False
    labels = host.removesuffix(".").split(".")
    # a name whose last label is a number is no host name: an IPv4 address written wrong (999.1.1.1, 10.1)
    return len(host) <= 253 and all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


class AuditSettings(BaseModel):
    """Where audit events go, one JSON object a line: a file (appended to) or stdout."""

    model_config = ConfigDict(extra="forbid")
    file: Path | None = Field(None, description="append JSON lines here (relative to the policy file)")
    stdout: bool = Field(False, description="write JSON lines to standard output")

    @model_validator(mode="after")
    def _one_sink(self) -> AuditSettings:
        if self.file is not None and self.stdout:
            raise ValueError("give either `file` or `stdout = true`, not both")
        return self

    @property
    def to_stdout(self) -> bool:
        return self.file is None


class WebhookSettings(BaseModel):
    """A JSON POST signed the Standard Webhooks way (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``), with the key of a
    ``whsec_<base64>`` secret; retried with backoff (docs/daemon.md, Webhooks)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="http:// or https:// URL; never logged beyond scheme and host")
    on: list[NotifyOn] = Field(["failure", "orphan"], min_length=1, description="events that trigger a POST")
    secret: CredentialRef = Field(
        description="the signing secret, whsec_ + base64 of a key of 16 bytes or more (Standard Webhooks: 24 to 64): "
        "{ file = ... } or { env = ... }; read at start, reload and each delivery")
    timeout: Duration = Field("5s", validate_default=True, description="per attempt")
    attempts: int = Field(5, ge=1, le=20, description="tries, the first included")
    backoff: Duration = Field(
        "1s", validate_default=True, description="wait before the second try; doubles each time (at most max_backoff)"
    )
    max_backoff: Duration = Field("60s", validate_default=True, description="cap of one wait")
    policies: list[str] | None = Field(None, description="only these policies (default: all)")

    @field_validator("secret", mode="before")
    @classmethod
    def _not_inline(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("inline secrets are refused: a policy file is not a safe place for a credential; "
                             'reference it: secret = { file = "/path/to/file" } or secret = { env = "VAR" }')
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.isprintable() or " " in value:
            raise ValueError("must not contain spaces or control characters (a line break copied with it?)")
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        problem = url_problem(value, _WEBHOOK_FIX)
        if problem:
            raise InlineSecretError(f"inline secrets are refused: {problem}")
        # What the daemon's urllib reads at start: a port it cannot parse must fail `rotator validate` too.
        try:
            parts = urlsplit(value)
            port = parts.port  # ValueError: not a number, or not in 0-65535
        except ValueError:
            raise ValueError("its host or port cannot be read (a port is a number from 1 to 65535)") from None
        if not parts.hostname or port == 0:
            raise ValueError("must name a host, and a port from 1 to 65535 if it gives one")
        if "@" in parts.netloc:
            # urllib sends no user-info: it would look up "user@host" as a host name, and every delivery
            # would fail with "Name or service not known" after `rotator validate` passed
            raise ValueError(_USERINFO_REFUSED)
        return value

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("policies")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        return _policy_names(value)

    @model_validator(mode="after")
    def _backoff_within_max(self) -> WebhookSettings:
        _within_cap(self, "backoff", "max_backoff")
        return self


def _within_cap(settings: BaseModel, first: str, cap: str) -> None:
    """A doubling wait whose first wait is longer than its cap, both written in the file: the cap would shorten
    every wait, the first one included, and the file would not say what runs. A first wait over the default
    cap (``failure_backoff = "2h"`` alone) is capped as it always was: a file that ran keeps running."""
    written = settings.model_fields_set
    if first in written and cap in written and getattr(settings, first) > getattr(settings, cap):
        raise ValueError(f"{first} ({format_duration(getattr(settings, first))}) is longer than {cap} "
                         f"({format_duration(getattr(settings, cap))}), the cap of every wait; raise {cap} or "
                         f"lower {first}")


def _policy_names(value: list[str] | None) -> list[str] | None:
    """Policy names, never a token pasted into the list by mistake."""
    if value is not None and any(find_token(name) for name in value):
        raise InlineSecretError("inline secrets are refused: an item looks like a token, not a policy name")
    return value


class HookSettings(BaseModel):
    """A command run after every publication (argv list, no shell), e.g. to reload a consumer.

    Its environment is minimal (PATH, HOME, LANG, ...) plus ``ROTATOR_POLICY``,
    ``ROTATOR_TOKEN_ID``, ``ROTATOR_RUN_ID``, ``ROTATOR_EVENT`` and ``env``: never a token value,
    never rotator's own credentials.
    """

    model_config = ConfigDict(extra="forbid")
    command: list[str] = Field(min_length=1, description='argv, e.g. ["systemctl", "reload", "app"]')
    timeout: Duration = Field("30s", validate_default=True, description="killed (with its process group) after this")
    policies: list[str] | None = Field(None, description="only after these policies publish (default: all)")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables (no secrets)")

    @field_validator("command")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("the program (first item) is empty")
        problems = argv_problems(value)
        if problems:
            raise InlineSecretError("inline secrets are refused: " + "; ".join(problems))
        return value

    @field_validator("env")
    @classmethod
    def _no_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        # the environment holds NAME=value strings: Popen refuses such a name (ValueError), every time the hook runs
        unnamed = [repr(k) for k in value if not k or "=" in k or "\x00" in k]
        if unnamed:
            raise ValueError(f"{', '.join(unnamed)} cannot name an environment variable: a name is not empty and "
                             "holds no '=' and no NUL character; rename it")
        reserved = sorted(k for k in value if k.upper().startswith("ROTATOR_"))
        if reserved:
            raise ValueError(f"refused variable(s) {', '.join(reserved)}: rotator sets the ROTATOR_* variables itself; "
                             "rename them")
        problems = env_problems(value)
        if problems:
            raise InlineSecretError("inline secrets are refused: " + "; ".join(problems))
        return value

    @field_validator("policies")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        return _policy_names(value)

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value


class DaemonSettings(BaseModel):
    """How `rotator daemon` runs; every key is optional."""

    model_config = ConfigDict(extra="forbid")
    listen: str = Field(
        "127.0.0.1:9464", description="HOST:PORT of /healthz, /readyz and /metrics: an IP address ([::1] for IPv6) "
        "or a host name, or none for every interface; a port up to 65535 (0: a free one, logged at start)"
    )
    sweep_interval: Duration = Field(
        "60s", validate_default=True, description="how often due revocations and abandoned runs are looked for"
    )
    misfire_grace: Duration = Field(
        "5m", validate_default=True,
        description="a rotation starting later than this after its due time counts as misfired (at least 1s)",
    )
    shutdown_timeout: Duration = Field(
        "20s", validate_default=True, description="on SIGTERM, how long a run in progress may take to finish"
    )
    workers: int = Field(4, ge=1, le=64, description="runs in parallel (each of a different policy)")
    watch: bool = Field(False, description="reload the policy file when it changes")
    watch_interval: Duration = Field("5s", validate_default=True, description="how often a watched file is checked")
    failure_backoff: Duration = Field(
        "1m", validate_default=True, description="wait before retrying a failed rotation (1s to failure_backoff_max)"
    )
    failure_backoff_max: Duration = Field("1h", validate_default=True, description="cap of that wait (it doubles)")
    inventory_interval: Duration | None = Field(
        None, description="list every issuer's tokens this often and export rotator_tokens (default: off)"
    )
    audit: AuditSettings = Field(default_factory=AuditSettings)  # type: ignore[arg-type]
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    hooks: list[HookSettings] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("sweep_interval", "watch_interval", "failure_backoff", "failure_backoff_max", "misfire_grace")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        # (misfire_grace: every start is some milliseconds late, and at 0s each would count as a misfire)
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value

    @model_validator(mode="after")
    def _backoff_within_max(self) -> DaemonSettings:
        _within_cap(self, "failure_backoff", "failure_backoff_max")
        return self

    @field_validator("inventory_interval")
    @classmethod
    def _at_least_a_minute(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(minutes=1):
            raise ValueError("must be at least 1m: every inventory lists every issuer's tokens")
        return value
