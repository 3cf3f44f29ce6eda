"""Audit events, webhooks and post-publish command hooks: what the daemon tells the outside world.

An *event* is the engine's dict (``at``, ``policy``, ``run_id``, ``step``, ``result`` and details
such as ``token_id`` or ``error``), or one the daemon adds (``rotate``: how a run ended; ``hook``:
how a command hook ended). :class:`Notifier` is an engine listener that fans each event out:

- **audit**: one JSON line per event, written at once (a file, appended to, or stdout);
- **webhooks**: a JSON POST on ``failure`` / ``orphan`` / ``success``, signed the Standard Webhooks
  way (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of
  id.timestamp.body>``, so a receiver can refuse a replayed delivery) with the key of a
  ``whsec_<base64>`` secret (read and checked when the notifier is made, and at each delivery),
  retried with exponential backoff, on one background thread per webhook; each attempt bounded in
  total by the webhook's ``timeout`` (:class:`_Deadline`), not only each socket operation;
- **hooks**: a command (argv list, no shell) after each publication, on a background thread,
  killed with its process group after its timeout, or at shutdown if it still runs once its grace
  is over (never left behind). It runs under rotator/core/child_watchdog.py, which kills that group
  when rotator dies (kill -9, the OOM killer) and at the timeout (+1 s) while rotator is paused
  (:func:`_start_hook`). Its environment names the policy and the new
  token id, never a token value, and none of rotator's own credentials. Its output is never
  copied anywhere (it may print anything, a token included): events carry its exit code and the
  length of its output.

Only the audit write happens on the caller's thread: a slow or dead receiver never holds a
rotation up. Events hold token ids, never values; every line and body also passes the redactor,
and token-shaped text in an event's details (a server's error message quoting a token rotator never
held) is masked (``***``), as `rotator report` masks it.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import locale
import logging
import os
import queue
import random
import re
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from rotator import __version__
from rotator.config.daemon_config import AuditSettings, DaemonSettings, HookSettings, WebhookSettings
from rotator.config.inline_secrets import mask_tokens
from rotator.config.timefmt import rfc3339
from rotator.core.child_process import die_with_parent, exec_error, reading, side_effect_command, start_children_within
from rotator.core.clock import SYSTEM_CLOCK, Clock
from rotator.core.errors import ConfigError, RotatorError
from rotator.core.private_append import open_append
from rotator.core.retry import doubling
from rotator.core.secret import REDACTOR

__all__ = [
    "ORPHAN_EVENTS",
    "AuditSink",
    "CommandHook",
    "Notifier",
    "WebhookSender",
    "audit_record",
    "check_webhook_keys",
    "event_kinds",
    "hook_environment",
    "sign",
    "signing_key",
    "verify_signature",
    "webhook_key",
]

logger = logging.getLogger("rotator.notify")

#: Events waiting for one webhook or hook; past this, new ones are dropped (and counted).
QUEUE_MAX = 1000
#: Standard Webhooks (https://www.standardwebhooks.com) headers.
ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "webhook-id", "webhook-timestamp", "webhook-signature"
#: Standard Webhooks' form of a signing secret: this prefix, then the key in base64.
SECRET_PREFIX = "whsec_"
#: The shortest HMAC key accepted, in bytes. The specification asks for 24 to 64 random bytes; below
#: this a key is refused rather than guessed (``whsec_`` alone would be an empty key).
MIN_KEY_BYTES = 16
#: A shell command writing a new Standard Webhooks secret (a 32-byte key), for hints.
_NEW_KEY = "printf 'whsec_%s\\n' \"$(openssl rand -base64 32)\""
#: How far a delivery's timestamp may be from the receiver's clock (the Standard Webhooks default).
TOLERANCE_S = 300
#: Variables a hook inherits from rotator's environment; everything else (VAULT_TOKEN,
#: AWS_*, credential env refs) stays behind.
HOOK_ENV_KEEP = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME", "TMPDIR", "XDG_RUNTIME_DIR")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: ``(step, result)`` pairs and the webhook events they raise.
#: Failures are the daemon's own summaries (one per failed run, recovery, hook or reload), not the
#: engine's step events, so that one failure raises one webhook.
_FAILURE = {("rotate", "failed"), ("rotate", "needs_attention"), ("recover", "failed"), ("hook", "failed"),
            ("hook", "timeout"), ("reload", "failed")}
#: A token left valid that should not be: a revocation gave up, a failed run's candidate (or another
#: token carrying its tag, which its discard's search found) could not be revoked, a token minted after
#: its run lost its lease could not be revoked (Engine._revoke_own_mint). rotator_orphans_total counts
#: the same events (rotator/observe/metrics.py). Once per token, each event naming its token_id: a
#: discard's token whose revocation fails again on a later recovery writes ``revoke_new`` /
#: ``failed_again`` (Engine._discard), not one of these, as it was reported at its first failure; a
#: discard that could not list what its run left (``revoke_new`` / ``search_failed``) knows of no token
#: left valid and reports none (its run stays open and stuck: rotator_needs_attention).
ORPHAN_EVENTS = frozenset({("revoke_old", "failed"), ("revoke_new", "failed"), ("revoke_orphan", "failed")})
_SUCCESS = {("published", "ok")}

#: Reports ``(channel, result)`` of each delivery, e.g. ``("webhook", "ok")``; the daemon counts them.
ResultCallback = Callable[[str, str], None]

_JSON_SCALARS = frozenset({str, int, float, bool})


def _jsonable(value: Any) -> Any:
    """``value`` for JSON; text with anything token-shaped masked (a server's error message may quote a
    token: `rotator report` and the status page mask it too). ~1 us per string of a detail."""
    kind = type(value)
    if kind is str:
        return mask_tokens(value)
    if value is None or kind in _JSON_SCALARS:  # most values: no isinstance() of an ABC below
        return value
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date | timedelta | Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, str):
        return mask_tokens(str(value))
    if isinstance(value, int | float | bool):
        return value
    return mask_tokens(str(value))


def audit_record(event: Mapping[str, Any], clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """The JSON form of an event: ``time``, ``policy``, ``run_id``, ``step``, ``result``, then details
    (token-shaped text in them masked: the audit line and the webhook body are made from this record).

    ``time`` is the event's ``at``, or ``clock``'s time for an event that carries none.
    """
    at = event.get("at")
    record: dict[str, Any] = {
        "time": rfc3339(at if isinstance(at, datetime) else clock.now()),
        "policy": event.get("policy"),
        "run_id": event.get("run_id"),
        "step": event.get("step"),
        "result": event.get("result"),
    }
    for key, value in event.items():
        if key != "at" and key not in record:
            record[key] = _jsonable(value)
    return record


def event_kinds(record: Mapping[str, Any]) -> set[str]:
    """The webhook events (``failure``, ``orphan``, ``success``) an audit record raises."""
    pair = (record.get("step"), record.get("result"))
    kinds = set()
    if pair in _FAILURE:
        kinds.add("failure")
    if pair in ORPHAN_EVENTS:
        kinds.add("orphan")
    if pair in _SUCCESS:
        kinds.add("success")
    return kinds


def signing_key(secret: str, where: str = "the webhook secret", *, keep_key: str = "") -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_`` then the key in base64, padded or not
    (as the specification's libraries read it).

    ConfigError (``where`` is what it names; never the value) for anything else: a value without the
    prefix (rotator once used its UTF-8 bytes, a key no Standard Webhooks library derives from it;
    ``keep_key``: the command that rewrites it keeping that key), one whose rest is not base64, and a
    key shorter than :data:`MIN_KEY_BYTES` (``whsec_`` alone is an empty key: anyone can sign).
    """
    secret = secret.strip()
    if not secret.startswith(SECRET_PREFIX):
        if len(secret.encode()) < MIN_KEY_BYTES:
            keep = ""  # too short to keep: the rewritten value would be refused as a short key
        else:
            keep = ("to keep the key receivers check now (the value's own bytes), write instead "
                    f"{keep_key or 'whsec_ followed by the base64 of the value'}; or ")
        raise ConfigError(
            f"{where} is not a Standard Webhooks secret (whsec_ followed by the key in base64)",
            hint=f"{keep}make a new key: {_NEW_KEY} and give the receivers the same value (docs/daemon.md, Webhooks)")
    encoded = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        raise ConfigError(f"{where} starts with whsec_ but the rest is not base64",
                          hint="copy the whole secret, on one line, as the receiver's Standard Webhooks library or "
                               f"its provider shows it; or make a new key: {_NEW_KEY}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{where} holds a {len(key)}-byte key: at least {MIN_KEY_BYTES} are needed (anyone can sign with a short "
            "key; the Standard Webhooks specification asks for 24 to 64 random bytes)",
            hint=f"make a new key: {_NEW_KEY} and give the receivers the same value")
    return key


def webhook_key(settings: WebhookSettings, base_dir: Path) -> bytes:
    """The HMAC key of a webhook, read now from its file or variable (so the secret can be replaced
    without a reload); ConfigError naming the webhook, where the secret was read and how to fix it."""
    ref = settings.secret
    if ref.file is not None:
        path = ref.file if ref.file.is_absolute() else base_dir / ref.file
        where = f"credential file {path}"
        keep_key = (f"whsec_ and the output of `tr -d '\\r\\n' < {path} | base64 -w0` (for a systemd credential, "
                    "into its LoadCredential= source)")
    else:
        where = f"environment variable {ref.env}"
        keep_key = f'whsec_ and the output of `printf %s "${ref.env}" | base64 -w0`'
    try:
        value = ref.resolve(base_dir).reveal()
    except ConfigError as exc:  # its message names the file or the variable
        hint = exc.hint
        if ref.file is not None:
            hint += ("; under systemd, a file in /run/credentials/rotator.service/ is there only when the unit has "
                     "a LoadCredential= line for it")
        raise ConfigError(f"webhook {_target(settings.url)}: no signing key: {exc}", hint=hint) from None
    try:
        return signing_key(value, where, keep_key=keep_key)
    except ConfigError as exc:
        raise ConfigError(f"webhook {_target(settings.url)}: no signing key: {exc}", hint=exc.hint) from None


def check_webhook_keys(settings: DaemonSettings, base_dir: Path) -> list[ConfigError]:
    """Read and decode every webhook's secret as a delivery does: what fails, logged at ERROR now
    rather than found at the first delivery. Not a reason to stop: a daemon that does not start
    (or refuses a reload) rotates nothing, and a secret valid for an earlier rotator (an unprefixed
    one) would stop every rotation at the upgrade. ``rotator validate`` refuses it (exit 2)."""
    problems = []
    for webhook in settings.webhooks:
        try:
            webhook_key(webhook, base_dir)
        except ConfigError as exc:
            problems.append(exc)
            logger.error("%s (fix: %s); its deliveries fail until then (rotations go on)", exc, exc.hint)
    return problems


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_signature(key: bytes, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
                     tolerance_s: float = TOLERANCE_S) -> None:
    """What a receiver does before trusting a delivery; ValueError says why it is refused.

    ``headers`` keys are matched case-insensitively. A timestamp further than ``tolerance_s`` from
    ``now`` (Unix seconds; the system clock's by default) is refused (a replay of a captured
    delivery); a receiver that also remembers the ``webhook-id`` values it accepted within the
    window refuses a replay inside it too.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lower.get(ID_HEADER), lower.get(TIMESTAMP_HEADER), lower.get(SIGNATURE_HEADER))
    if not msg_id or not stamp or not signatures:
        raise ValueError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise ValueError("webhook-timestamp is not an integer") from None
    if abs((SYSTEM_CLOCK.now().timestamp() if now is None else now) - timestamp) > tolerance_s:
        raise ValueError("webhook-timestamp is outside the tolerance window (a replayed or delayed delivery)")
    expected = sign(key, msg_id, timestamp, body)
    # compare_digest() raises TypeError for a str that is not ASCII: a header such as "v1,é" is no signature.
    if not any(candidate.isascii() and hmac.compare_digest(expected, candidate) for candidate in signatures.split()):
        raise ValueError("no valid signature")


#: json.dumps(record, separators=(",", ":"), default=str) with one encoder, not a new one per line
_dump_line = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _dumps(record: Mapping[str, Any]) -> str:
    # Each text (keys, and the text ``default=str`` would make of other objects, included) is redacted before it
    # is encoded: JSON escapes a value holding non-ASCII, '"' or '\\', and the redactor knows the value's text,
    # not its escaped form. (The whole line once more: a second net, for what the walk cannot see.)
    return REDACTOR.redact(_dump_line(_redacted(record)))


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if value is None or isinstance(value, int | float):  # (bool is an int)
        return value
    if isinstance(value, Mapping):
        return {REDACTOR.redact(k) if isinstance(k, str) else k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return REDACTOR.redact(str(value))


def _target(url: str) -> str:
    """What logs may say about a URL: scheme and host (paths and queries may carry secrets)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


#: urllib's words for a proxy variable without "//" after its scheme; it then quotes the value whole, password
#: included (in quotes it picks by the value's own quotes), so the whole message is replaced
_BAD_PROXY = "proxy URL with no authority"
_BAD_PROXY_TEXT = ("ValueError: a proxy variable (http_proxy, https_proxy or all_proxy) has no // after its scheme "
                   "(its value not shown: it may hold a password); expected scheme://[user:password@]host:port")
#: what is left of a URL's user-info in an error that quotes one: everything before the last "@" of a word
_USERINFO = re.compile(r"[^\s'\"]*@")


def _without_userinfo(text: str) -> str:
    """``text`` (an error's) without a URL's user-info: urllib may quote the environment's proxy URL whole."""
    if _BAD_PROXY in text:
        return _BAD_PROXY_TEXT
    return _USERINFO.sub("***@", text)


#: a host a log may show: a DNS name's letters, digits, dots and hyphens (an IP address is checked apart)
_PLAIN_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}")


def _redirect_target(url: str, location: str | None) -> str | None:
    """Scheme and host that a redirect's ``location`` (relative to ``url``) points at, as
    :func:`_target` shows them; None when there is none or it cannot be read. The receiver wrote it:
    nothing of it but scheme, host and port goes to a log."""
    if not location:
        return None
    try:
        parts = urllib.parse.urlsplit(urllib.parse.urljoin(url, location.strip()))
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, a bracketed host that is not an address
        return None
    if not host or parts.scheme not in ("http", "https"):
        return None
    # urlsplit's hostname keeps what comes before the first "/?#": a "\" (a path to browsers) or a ";"
    # would bring the Location's path or parameters along, which may carry a secret
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None and not _PLAIN_HOST.fullmatch(host):
        return None
    shown = f"[{host}]" if isinstance(address, ipaddress.IPv6Address) else host
    return REDACTOR.redact(f"{parts.scheme}://{shown}" + (f":{port}" if port else ""))


def _secret_source(settings: WebhookSettings, base_dir: Path) -> str:
    """Where a webhook's secret is read (as :func:`webhook_key` reads it): a file or a variable, never its value."""
    ref = settings.secret
    if ref.file is not None:
        return f"credential file {ref.file if ref.file.is_absolute() else base_dir / ref.file}"
    return f"environment variable {ref.env}"


#: OpenSSL's verify codes (X509_V_ERR_*) that a CA bundle would not fix.
_CERT_NAME_MISMATCH = frozenset({62, 63, 64})  # host name, e-mail address, IP address
_CERT_DATES = frozenset({9, 10})  # not yet valid, expired


def _certificate_hint(error: ssl.SSLCertVerificationError, target: str) -> str:
    """How to fix a receiver's certificate that this host does not accept."""
    code = getattr(error, "verify_code", None)
    if code in _CERT_NAME_MISMATCH:
        return (f"the receiver's certificate is not for the host in url ({target}): use a name its certificate "
                "lists, or have the receiver's certificate cover that one")
    if code in _CERT_DATES:
        return ("the receiver's certificate is outside its validity dates: have it renewed (or, if this host's "
                "clock is wrong, fix the clock)")
    return ("this host does not trust the CA that signed the receiver's certificate: add that CA to the system's "
            "trust store (update-ca-certificates; read at each delivery), or start the daemon with SSL_CERT_FILE "
            "set to a PEM bundle that includes it (or SSL_CERT_DIR to a directory of hashed certificates)")


def open_private(path: Path) -> TextIO:
    """Open ``path`` for appending; create it 0600 (audit lines name policies, runs and token ids).
    Never through a symbolic link, and only a regular file (rotator/core/private_append.py)."""
    return open(open_append(path), "a", encoding="utf-8")


class AuditSink:
    """Writes audit records as JSON lines; thread-safe; a write error is logged, never raised.

    A write after :meth:`close` still reaches the file. The daemon's listener may read its notifier
    just before a reload swaps it and closes the old one on another thread: that event's line goes
    to the closed sink. It is appended by opening the file for that one line and closing it at once
    (:func:`_append_line`): simpler than keeping the file open for a grace (which a late enough
    event would still miss), it cannot lose the line while the path is writable, and it holds no
    descriptor past the write. Lines stay whole: each is one ``write(2)`` to an ``O_APPEND`` file.
    """

    def __init__(self, settings: AuditSettings, base_dir: Path, stdout: TextIO | None = None) -> None:
        self._lock = threading.Lock()
        self._owned = False
        self._closed = False
        self.where = "stdout"
        if settings.file is None:
            self._stream: TextIO = stdout or sys.stdout
            return
        path = settings.file if settings.file.is_absolute() else base_dir / settings.file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open_private(path)  # closed in close()
        except OSError as exc:
            raise RotatorError(f"cannot open audit file {path}: {exc.strerror}",
                               hint="check [daemon.audit] file and that rotator's user may write there") from None
        self._owned = True
        self.where = str(path)

    def reopen(self) -> None:
        """Open the audit file again (after logrotate moved it); stdout is left alone, and so is a
        closed sink (its late lines open the file at its path for themselves)."""
        if not self._owned:
            return
        with self._lock:
            if self._closed:  # a stream opened now would never be closed
                return
            try:
                stream = open_private(Path(self.where))  # closed in close()
            except OSError as exc:
                logger.error("cannot reopen audit file %s, still writing to the old one: %s", self.where, exc)
                return
            self._stream.close()
            self._stream = stream

    def write(self, record: Mapping[str, Any]) -> None:
        line = _dumps(record) + "\n"
        with self._lock:
            try:
                if self._closed and self._owned:
                    _append_line(Path(self.where), line)
                    return
                self._stream.write(line)
                self._stream.flush()
            except (OSError, ValueError) as exc:
                logger.error("cannot write audit event to %s: %s", self.where, exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._owned:
                self._stream.close()


def _append_line(path: Path, line: str) -> None:
    """Append ``line`` to ``path`` (created 0600) with one open, write and close: nothing stays open."""
    data = line.encode("utf-8")
    fd = open_append(path)
    try:
        while data:  # a regular file takes it in one write; a short one (disk nearly full) goes on
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook answering with a redirect fails: following it would re-send a signed body elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Deadline:
    """The total time one delivery attempt may take.

    urllib's ``timeout`` bounds each socket operation, not the attempt: a receiver that answers one
    byte a second never trips it, and holds the webhook's thread (and its queue) as long as it likes.
    When this deadline passes, the attempt's sockets are shut down (not closed: the thread using them
    closes them), which ends the read or write in progress at once; the attempt then fails as a
    timeout. Name resolution (the resolver's own timeouts) and a TLS handshake (``timeout`` per
    operation) cannot be cut short: the deadline is checked as soon as they end."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer: threading.Timer | None = None

    def __enter__(self) -> _Deadline:
        self._timer = threading.Timer(self.seconds, self._expire)  # one short-lived thread per attempt
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes; TimeoutError if it has passed already."""
        with self._lock:
            self._socks.append(sock)
            expired = self.expired
        if expired:
            _shut_down(sock)
            raise TimeoutError(f"the attempt took longer than {self.seconds:g}s")

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the descriptor's own: under a TLS wrapper too
    except OSError:
        pass  # closed already, or the raw socket a TLS wrapper took over


class _DeadlineConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket (its TLS wrapper for HTTPS) a :class:`_Deadline` watches once
    connected: the request and the answer, where a slow receiver can drip. (Watched from
    ``connect()``, http.client's public hook: the connect and a TLS handshake stay bounded by
    ``timeout`` per operation, and the deadline is checked as soon as they end.)"""

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        if self.sock is not None:
            self._deadline.watch(self.sock)


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


def _open_watched(handler: urllib.request.AbstractHTTPHandler, req: urllib.request.Request,
                  connection_class: type[_DeadlineConnection], deadline: _Deadline) -> http.client.HTTPResponse:
    """``handler.do_open`` with connections whose sockets ``deadline`` watches."""

    def connection(host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
        return connection_class(host, deadline=deadline, **kwargs)

    return handler.do_open(connection, req)


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Callable[[], _Deadline]) -> None:
        super().__init__()
        self._current = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return _open_watched(self, req, _DeadlineConnection, self._current())


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    """Certificates and host names checked as urllib's default HTTPSHandler does (no context given)."""

    def __init__(self, deadline: Callable[[], _Deadline]) -> None:
        super().__init__()
        self._current = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return _open_watched(self, req, _DeadlineHTTPSConnection, self._current())


class _Worker:
    """A daemon thread draining a bounded queue; ``close`` lets it finish, then abandons it."""

    #: what close() logs when the thread is still busy at its timeout: at shutdown, at a reload
    _LEFT_AT_SHUTDOWN = "undelivered notifications abandoned at shutdown"
    _LEFT_AT_RELOAD = "still busy after the reload replaced it; it finishes in the background"

    def __init__(self, name: str, on_result: ResultCallback | None, channel: str) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_MAX)
        self._abort = threading.Event()
        #: set by close(): an item put after it would sit behind the end mark, never handled (see _put)
        self._closed = False
        self._put_lock = threading.Lock()
        self._on_result = on_result
        self._channel = channel
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        """Queue ``item``, or drop it (logged, reported ``dropped``) when the queue is full or the worker
        is closed. An item put after close() would sit behind the end mark: the thread ends at the mark
        (or has ended), so it would be neither handled nor counted. The check and the put share a lock
        with close()'s flag, so every item either is queued before the mark or is dropped and counted."""
        with self._put_lock:
            closed = self._closed
            if not closed:
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    pass
        if closed:
            logger.error("%s: a notification came after it was closed (a reload replaced it, or rotator is "
                         "stopping), dropping it", self._thread.name)
        else:
            logger.error("%s: %d notifications already queued, dropping one", self._thread.name, QUEUE_MAX)
        self._report("dropped")

    def _report(self, result: str) -> None:
        if self._on_result is not None:
            self._on_result(self._channel, result)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._handle(item)
            except Exception:  # a bug here must not kill the thread and silence later events
                logger.exception("%s: unexpected error", self._thread.name)
                self._report("failed")
            # close() could not queue its end mark when the queue was full: without this, the drained
            # thread would wait on get() forever (one leaked thread per reload). Once closed, nothing
            # but that end mark is queued (_put drops, under the lock close() sets the flag with): an
            # empty queue now has nothing left for this thread.
            if self._closed and self._queue.empty():
                return

    def _handle(self, item: Any) -> None:
        raise NotImplementedError  # pragma: no cover

    def close(self, timeout: float, *, reload: bool = False) -> bool:
        """Deliver what is queued within ``timeout`` seconds; True when everything went out.

        ``reload``: a reload replaced this worker; past ``timeout`` it goes on in the background
        (a webhook without retries, a hook to the end of its queue) and says so."""
        deadline = time.monotonic() + timeout  # a bound on the wait, not a time of day: no Clock needed
        with self._put_lock:  # from now on _put drops: nothing is queued behind the end mark
            self._closed = True
        try:
            self._queue.put(None, timeout=max(timeout, 0.01))
        except queue.Full:
            pass
        self._thread.join(max(deadline - time.monotonic(), 0))
        if self._thread.is_alive():
            self._abort.set()  # stop waiting between retries
            logger.warning("%s: %s", self._thread.name, self._LEFT_AT_RELOAD if reload else self._LEFT_AT_SHUTDOWN)
            return False
        return True


class WebhookSender(_Worker):
    """POSTs signed JSON to one URL, retrying with exponential backoff and jitter."""

    _LEFT_AT_RELOAD = ("the reload replaced this webhook while deliveries were still queued or retrying: each "
                       "gets one more attempt in the background, without retries")

    def __init__(
        self, settings: WebhookSettings, base_dir: Path, *, index: int = 0, on_result: ResultCallback | None = None,
        opener: urllib.request.OpenerDirector | None = None, clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.base_dir = base_dir
        self.clock = clock
        self.target = _target(settings.url)
        #: the running attempt's deadline (one thread per sender: one attempt at a time)
        self._deadline = _Deadline(settings.timeout.total_seconds())
        self._opener = opener or urllib.request.build_opener(
            _NoRedirect(), _DeadlineHTTPHandler(lambda: self._deadline), _DeadlineHTTPSHandler(lambda: self._deadline))
        self._rng = random.Random()
        super().__init__(f"rotator-webhook-{index}", on_result, "webhook")

    def wants(self, kind: str, record: Mapping[str, Any]) -> bool:
        policies = self.settings.policies
        return kind in self.settings.on and (policies is None or record.get("policy") in policies)

    def submit(self, kind: str, record: Mapping[str, Any]) -> None:
        delivery = "msg_" + uuid.uuid4().hex
        body = _dumps({"event": kind, "delivery": delivery, **record, "rotator_version": __version__})
        self._put((kind, body.encode("utf-8"), delivery))

    def _handle(self, item: tuple[str, bytes, str]) -> None:
        kind, body, delivery = item
        s = self.settings
        error = hint = ""
        for attempt in range(1, s.attempts + 1):
            retry, error, hint = self._attempt(kind, body, delivery)
            if not error:
                logger.info("webhook %s: delivered %s event %s", self.target, kind, delivery)
                self._report("ok")
                return
            if not retry or attempt == s.attempts:
                break
            cap = doubling(s.backoff, s.max_backoff, attempt).total_seconds()
            wait = self._rng.uniform(cap / 2, cap)
            logger.warning("webhook %s: %s event %s failed (attempt %d), retrying in %.1fs: %s",
                           self.target, kind, delivery, attempt, wait, error)
            if self._abort.wait(wait):
                break
        logger.error("webhook %s: giving up on %s event %s: %s%s", self.target, kind, delivery, error,
                     f" (fix: {hint})" if hint else "")
        self._report("failed")

    def _attempt(self, kind: str, body: bytes, delivery: str) -> tuple[bool, str, str]:
        """One POST: ``(worth retrying, error, how to fix it)``; no error means delivered."""
        try:
            key = webhook_key(self.settings, self.base_dir)
        except ConfigError as exc:
            # Not retried: a missing file or a bad value stays so until a person fixes it, and
            # retries would only hold the queue for minutes.
            return False, str(exc), exc.hint
        # Signed at each attempt: a retry carries a fresh timestamp, and the same webhook-id (a
        # receiver de-duplicates on it).
        timestamp = int(self.clock.now().timestamp())
        request = urllib.request.Request(self.settings.url, data=body, method="POST", headers={
            "Content-Type": "application/json",
            "User-Agent": f"rotator/{__version__}",
            "X-Rotator-Event": kind,
            ID_HEADER: delivery,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(key, delivery, timestamp, body),
        })
        timeout = self.settings.timeout.total_seconds()
        # `timeout` bounds each socket operation (urllib's) and the whole attempt (the deadline's)
        self._deadline = deadline = _Deadline(timeout)
        location: str | None = None
        try:
            with deadline, self._opener.open(request, timeout=timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            location = exc.headers.get("Location") if exc.headers is not None else None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, reset, timed out, DNS, bad URL,
            # or an answer that is not HTTP (a proxy or a server restarting mid-response): worth a retry,
            # except a certificate this host does not trust, which stays so until a person acts
            if deadline.expired:
                return True, f"no complete answer within {timeout:g}s", ""
            reason = getattr(exc, "reason", None) or exc
            error = _without_userinfo(REDACTOR.redact(f"{type(exc).__name__}: {reason}"))
            if isinstance(reason, ssl.SSLCertVerificationError):
                return False, error, _certificate_hint(reason, self.target)
            return True, error, ""
        if deadline.expired:  # cut off mid-answer: what http.client parsed of it may look whole
            return True, f"no complete answer within {timeout:g}s", ""
        if 200 <= status < 300:
            return False, "", ""
        return status in (408, 425, 429) or status >= 500, f"HTTP {status}", self._status_hint(status, location)

    def _status_hint(self, status: int, location: str | None) -> str:
        """How to fix a final ``status``, or ""; ``location``: a redirect's Location header."""
        if 300 <= status < 400:
            why = "rotator does not follow redirects, which would re-send a signed body to an address nobody configured"
            to = _redirect_target(self.settings.url, location)
            if to is None:
                return f"the receiver redirects elsewhere (no readable Location): set url to where it redirects; {why}"
            return (f"the receiver redirects to {to} (Location's path and query not logged; `curl -si -X POST` "
                    f"on the url shows it): set url to that address; {why}")
        if status in (401, 403):
            return (f"the receiver refused the delivery: check that it verifies with the same secret as this "
                    f"webhook's ({_secret_source(self.settings, self.base_dir)}), and that its clock is within "
                    f"{TOLERANCE_S}s of this host's (the webhook-timestamp tolerance)")
        if status in (404, 410):
            return "the receiver has nothing at this address: check the webhook's url (its path is not logged)"
        return ""


def hook_environment(settings: HookSettings, record: Mapping[str, Any]) -> dict[str, str]:
    """A hook's whole environment: a few harmless variables of ours, its ``env``, and ROTATOR_*."""
    env = {k: v for k, v in os.environ.items() if k in HOOK_ENV_KEEP or k.startswith("LC_")}
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(settings.env)
    env.update({
        "ROTATOR_EVENT": str(record.get("step") or ""),
        "ROTATOR_POLICY": str(record.get("policy") or ""),
        "ROTATOR_RUN_ID": str(record.get("run_id") or ""),
        "ROTATOR_TOKEN_ID": str(record.get("token_id") or ""),
    })
    return env


class CommandHook(_Worker):
    """Runs one command after each publication; reports how it ended as a ``hook`` event."""

    _LEFT_AT_RELOAD = ("the reload replaced this hook while it was still running (or queued): it runs to its end "
                       "in the background, and how it ends goes to the current audit sink and webhooks")
    _LEFT_AT_SHUTDOWN = "still running at shutdown: killing it with its process group; hooks still queued do not run"

    def __init__(
        self, settings: HookSettings, base_dir: Path, *, index: int = 0,
        emit: Callable[[Mapping[str, Any]], None] | None = None, on_result: ResultCallback | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.base_dir = base_dir
        self.clock = clock
        self._emit = emit
        #: set by close() at shutdown: the running hook is killed, the queued ones are not started
        self._halt = threading.Event()
        self._not_run = 0
        super().__init__(f"rotator-hook-{index}", on_result, "hook")

    def wants(self, record: Mapping[str, Any]) -> bool:
        policies = self.settings.policies
        return (record.get("step"), record.get("result")) in _SUCCESS and (
            policies is None or record.get("policy") in policies
        )

    def submit(self, record: Mapping[str, Any]) -> None:
        self._put(dict(record))

    def close(self, timeout: float, *, reload: bool = False) -> bool:
        """As :meth:`_Worker.close`; at shutdown (not ``reload``), a hook still running after ``timeout``
        is then killed with its process group and its end reported, waiting at most :data:`HOOK_HALT_S`
        for that. Left running, it would outlive rotator (re-parented to init, in a session of its
        own), past its own timeout, with no thread left to kill it or to audit how it ended.

        At a reload the hook runs on in the background; it is noted in :data:`_REPLACED_HOOKS`, so
        that the shutdown (:meth:`Notifier.close`) does not leave it behind either."""
        if reload:
            with _REPLACED_LOCK:
                _REPLACED_HOOKS.difference_update([h for h in _REPLACED_HOOKS if not h._thread.is_alive()])
                _REPLACED_HOOKS.add(self)
        done = super().close(timeout, reload=reload)
        if done or reload:
            return done
        self._halt.set()
        with contextlib.suppress(queue.Full):  # (close() could not queue the end mark if the queue was full)
            self._queue.put(None, timeout=HOOK_HALT_S)
        self._thread.join(HOOK_HALT_S)
        if self._not_run:
            logger.error("%s: %d queued run(s) of %s not started: rotator is stopping", self._thread.name,
                         self._not_run, self.settings.command[0])
        if self._thread.is_alive():
            logger.error("%s: the hook did not end within %gs of being killed; no longer waiting for it",
                         self._thread.name, HOOK_HALT_S)
        return False

    def _handle(self, record: dict[str, Any]) -> None:
        argv = self.settings.command
        if self._halt.is_set():  # at shutdown: a hook started now would be left behind
            self._not_run += 1
            self._report("dropped")
            return
        timeout = self.settings.timeout.total_seconds()
        started = time.monotonic()  # how long the hook ran, not a time of day: no Clock needed
        result, code, error, output = "ok", None, None, 0
        try:
            proc, watched = _start_hook(argv, hook_environment(self.settings, record), self.base_dir, timeout)
        except OSError as exc:
            result, error = "failed", f"cannot start {argv[0]}: {exc.strerror}"
        except ValueError as exc:
            # an environment variable name with '=', a NUL in an argument or a value (settings not made by
            # `rotator validate`, which refuses them): Popen's message names the fault, never the value
            result, error = "failed", f"cannot start {argv[0]}: {exc}"
        else:
            # The output is read (so the hook never blocks on a full pipe) and only measured: a
            # hook may print anything, the token it just received included, so none of it is
            # copied into logs, audit lines or webhooks.
            ended = _run_hook(proc, timeout, self._halt, watched=watched)
            output = ended.output
            # The watchdog's SIGKILL at the timeout (+1 s): this thread could not kill it itself (rotator
            # was paused), and reports it as its own kill.
            by_watchdog = watched and ended.code == -signal.SIGKILL and time.monotonic() - started >= timeout
            if ended.not_executed is not None:  # as Popen raises it for a command it cannot execute
                result, error, output = "failed", f"cannot start {argv[0]}: {ended.not_executed.strerror}", 0
            elif ended.code is None and self._halt.is_set():
                result, error = "failed", f"{argv[0]} was still running when rotator stopped, and was killed"
            elif ended.code is None or by_watchdog:
                result, error = "timeout", f"{argv[0]} did not finish within {timeout:g}s and was killed"
            else:
                code = ended.code
                if code != 0:
                    result, error = "failed", f"{argv[0]} exited with status {code}"
            if ended.held:
                logger.warning(
                    "hook %s for policy %s: a process it started in the background still holds its output; "
                    "rotator stopped reading it (redirect that process's output, e.g. >/dev/null 2>&1)",
                    argv[0], record.get("policy"))
        elapsed = time.monotonic() - started
        log = logger.info if result == "ok" else logger.error
        log("hook %s for policy %s: %s in %.1fs (output: %d characters, not logged)%s", argv[0],
            record.get("policy"), result, elapsed, output, f": {REDACTOR.redact(error)}" if error else "")
        self._report(result)
        if self._emit is not None:
            event = {"at": self.clock.now(), "policy": record.get("policy"), "run_id": record.get("run_id"),
                     "step": "hook", "result": result, "command": argv[0], "token_id": record.get("token_id"),
                     "exit_code": code, "output_chars": output, "duration_s": round(elapsed, 3)}
            if error:
                event["error"] = REDACTOR.redact(error)
            self._emit(event)


#: How long a hook's output pipes may stay open once the hook has exited or been killed. Past
#: this, what holds them is a process the hook left behind (a daemon it started, in its own
#: session, that kept stdout): rotator stops reading rather than wait for that process to end.
HOOK_DRAIN_S = 2.0
#: How often the output loop looks whether the hook has exited while its pipes stay open.
_HOOK_POLL_S = 0.1
#: How long closing a hook at shutdown waits, past its grace, for the hook it kills to be reported:
#: the kill (within _HOOK_POLL_S), the drain of its pipes and the wait for its exit (HOOK_DRAIN_S each).
HOOK_HALT_S = 2 * HOOK_DRAIN_S + 1.0
#: At shutdown, how long webhooks get at least when a hook was killed: its failure event is queued
#: after the grace has run out.
KILLED_HOOK_REPORT_S = 2.0


#: How much of a watched hook's stderr is kept, in memory only, to find the watchdog's line saying it
#: could not execute the command (:func:`~rotator.core.child_process.exec_error`)
_EXEC_ERROR_TAIL = 256


def _start_hook(argv: list[str], env: dict[str, str], cwd: Path,
                timeout: float) -> tuple[subprocess.Popen[bytes], bool]:  # fmt: skip
    """Start a hook, and whether it runs under child_watchdog.py.

    A child outlives a parent that is killed: a ``kill -9`` of rotator (a supervisor, the OOM killer)
    would leave the hook, and anything in its group, running past its timeout, re-parented to init;
    and while rotator is paused (SIGSTOP) no thread of it kills the hook at its timeout. The watchdog
    leads the hook's process group (a session of its own, as the hook's was), kills the group at
    ``timeout`` + :data:`~rotator.core.child_process.WATCHDOG_MARGIN_S` whether rotator runs or not,
    and when rotator dies (its ``PR_SET_PDEATHSIG`` SIGTERM). Where the watchdog cannot run (its
    self-test failed, logged once) the hook runs as it is, killed by the kernel when rotator dies.

    The hook's thread starts it and waits for it: ``PR_SET_PDEATHSIG`` follows the thread that forks."""
    # side_effect_command wraps only a child started in a start window; the window is closed again
    # before the fork: a hook that starts late (rotator paused meanwhile) is still wanted.
    with start_children_within(timeout):
        command, death_signal = side_effect_command(argv, timeout, env)
    with reading():
        preexec = die_with_parent(death_signal)
    # Unbuffered bytes: _run_hook reads the pipes' file descriptors itself.
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0, start_new_session=True,
                            preexec_fn=preexec)  # noqa: PLW1509  (resolved before fork, takes no lock)
    return proc, command != argv


class _HookEnd(NamedTuple):
    """How a hook process ended, as :func:`_run_hook` saw it."""

    code: int | None  #: its exit status; None when it was killed (at its timeout, or at ``halt``)
    output: int  #: characters of output read (stdout and stderr), never the output itself
    held: bool  #: something it left behind still held its output when rotator stopped reading
    #: why the watchdog could not execute the command (then ``code`` is the watchdog's 127)
    not_executed: OSError | None = None


def _run_hook(proc: subprocess.Popen[bytes], timeout: float, halt: threading.Event | None = None, *,
              watched: bool = False) -> _HookEnd:  # fmt: skip
    """Read ``proc``'s output (measured, not kept) until it ends; kill its group after ``timeout`` s,
    or as soon as ``halt`` is set (within :data:`_HOOK_POLL_S`). ``watched``: ``proc`` is the
    watchdog running the hook, whose stderr's last line may say it could not execute it.

    Never waits on the pipes alone: ``communicate()`` returns only at EOF, which a background
    process the hook started (``setsid daemon &``) may hold off forever, wedging the hook thread.
    Here the hook's own exit is watched too: once it has exited (or been killed), the pipes get
    :data:`HOOK_DRAIN_S` more (never past the hook timeout), then rotator closes its ends.
    """
    encoding = locale.getpreferredencoding(False)  # what text=True would decode with
    deadline = time.monotonic() + timeout  # a bound on the wait, not a time of day: no Clock needed
    stop = deadline  # when reading ends, whatever holds the pipes
    code: int | None = None
    exited = killed = False
    output = 0
    tail = b""  # stderr's last bytes, for exec_error only: never logged, never returned
    pipes = [pipe for pipe in (proc.stdout, proc.stderr) if pipe is not None]
    try:
        with selectors.DefaultSelector() as selector:
            for pipe in pipes:
                decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
                selector.register(pipe, selectors.EVENT_READ, decoder)
            while selector.get_map():
                now = time.monotonic()
                if not exited and proc.poll() is not None:
                    exited = True
                    stop = min(stop, now + HOOK_DRAIN_S)
                if not exited and halt is not None and halt.is_set():
                    stop = now
                if now >= stop:
                    if exited:
                        break
                    _kill_group(proc)  # the hook itself is still running at its timeout
                    killed = exited = True
                    stop = now + HOOK_DRAIN_S
                    continue
                for key, _events in selector.select(min(stop - now, _HOOK_POLL_S)):
                    data = os.read(key.fd, 65536)
                    output += len(key.data.decode(data, final=not data))
                    if watched and key.fileobj is proc.stderr:
                        tail = (tail + data)[-_EXEC_ERROR_TAIL:]
                    if not data:
                        selector.unregister(key.fileobj)
            held = bool(selector.get_map())
    finally:
        for pipe in pipes:
            pipe.close()  # a process still writing there gets EPIPE (or SIGPIPE) rather than rotator waiting
    while not killed and not exited and code is None:  # both pipes closed before the hook exited
        left = deadline - time.monotonic()
        if left <= 0 or (halt is not None and halt.is_set()):
            _kill_group(proc)
            killed = True
            break
        try:
            code = proc.wait(timeout=min(left, _HOOK_POLL_S))  # in slices: `halt` is looked at between them
        except subprocess.TimeoutExpired:
            pass
    if killed:
        try:
            proc.wait(timeout=HOOK_DRAIN_S)  # SIGKILL is prompt, unless the process is stuck in the kernel
        except subprocess.TimeoutExpired:
            logger.error("hook process %d did not die after SIGKILL; no longer waiting for it", proc.pid)
        return _HookEnd(None, output, held)
    code = proc.returncode if code is None else code
    not_executed = exec_error(code, tail.decode(errors="replace")) if watched else None
    return _HookEnd(code, output, held, not_executed)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


#: Hooks of notifiers that a reload replaced: they may run on in the background (to their own
#: timeout), and the shutdown kills them as it kills the current notifier's.
_REPLACED_HOOKS: set[CommandHook] = set()
_REPLACED_LOCK = threading.Lock()


class Notifier:
    """The engine listener: audit line now, webhooks and hooks queued for their threads."""

    def __init__(
        self, settings: DaemonSettings, base_dir: Path, *, on_result: ResultCallback | None = None,
        stdout: TextIO | None = None, clock: Clock = SYSTEM_CLOCK,
        emit: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        """``emit``: where the hooks' ``hook`` events go (default: this notifier). The daemon passes
        its *current* notifier there, so that a hook still running when a reload replaced (and
        closed) this one is audited and raises its webhook all the same."""
        self.settings = settings
        self.clock = clock
        self.base_dir = base_dir
        check_webhook_keys(settings, base_dir)
        self.audit = AuditSink(settings.audit, base_dir, stdout)
        self.webhooks = [WebhookSender(w, base_dir, index=i, on_result=on_result, clock=clock)
                         for i, w in enumerate(settings.webhooks)]
        self.hooks = [CommandHook(h, base_dir, index=i, emit=emit or self, on_result=on_result, clock=clock)
                      for i, h in enumerate(settings.hooks)]

    def same_settings(self, settings: DaemonSettings) -> bool:
        """Whether ``settings`` (a reload's) notify as this notifier does. A webhook secret of theirs
        that cannot be read or decoded is logged (:func:`check_webhook_keys`), even if the settings
        are the same (the file may have been replaced by a bad one), and refuses nothing."""
        check_webhook_keys(settings, self.base_dir)
        return (self.settings.audit, self.settings.webhooks, self.settings.hooks) == (
            settings.audit, settings.webhooks, settings.hooks)

    def __call__(self, event: Mapping[str, Any]) -> None:
        record = audit_record(event, self.clock)
        self.audit.write(record)
        for kind in sorted(event_kinds(record)):
            for webhook in self.webhooks:
                if webhook.wants(kind, record):
                    webhook.submit(kind, record)
        for hook in self.hooks:
            if hook.wants(record):
                hook.submit(record)

    def close(self, timeout: float, *, reload: bool = False) -> bool:
        """Finish queued hooks, then webhooks (hooks may add failure events), within ``timeout``.

        ``reload``: a reload replaced this notifier (the log says so of what is left running).
        Otherwise (shutdown) a hook still running at ``timeout``, this notifier's or one of a
        notifier a reload replaced, is killed and its end reported (:meth:`CommandHook.close`), and
        the webhooks then get at least :data:`KILLED_HOOK_REPORT_S` for the failure event that raised.

        An event that still comes after this (the daemon's listener read this notifier just before a
        reload replaced it) is audited all the same (:class:`AuditSink`); its webhooks and hooks are
        dropped and reported ``dropped`` (:meth:`_Worker._put`)."""
        deadline = time.monotonic() + timeout
        hooks = list(self.hooks)
        if not reload:
            with _REPLACED_LOCK:
                hooks += [h for h in _REPLACED_HOOKS if h._thread.is_alive() and h not in hooks]
                _REPLACED_HOOKS.clear()
        done = all([hook.close(max(deadline - time.monotonic(), 0), reload=reload) for hook in hooks])
        if not done and not reload:
            deadline = max(deadline, time.monotonic() + KILLED_HOOK_REPORT_S)
        done = all([w.close(max(deadline - time.monotonic(), 0), reload=reload) for w in self.webhooks]) and done
        self.audit.close()
        return done
