"""Warnings about insecure transport, worded once for every adapter (standard library only).

Each adapter's settings model has a method ``transport_warnings() -> list[str]``: one line per
setting that lets a token travel unprotected (certificate checks off, TLS off, plain ``http://``
to a host that is not this machine). ``rotator validate`` prints them and the engine logs them
as WARNING when a run starts (rotator/config/policy_types.py: ``Policy.transport_warnings``). They
are warnings, not errors: tests and a sidecar proxy on loopback legitimately use these settings.

:class:`RequestCounter` counts the HTTP requests an adapter's client sends (each attempt, retries
included), so that tests can assert exact request budgets and benchmarks can report them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = [
    "QUERY_OR_FRAGMENT",
    "RequestCounter",
    "http_address_problem",
    "is_loopback_host",
    "plain_http_warning",
    "tls_verify_warning",
]

#: Why an address with a ``?`` or ``#`` is refused. The raw text is checked, not the parsed parts: an
#: empty query or fragment (``https://h:8181/?``) parses as "" and reads as none, yet the API path
#: appended to the address then lands after the ``?`` or ``#`` and every request goes to ``/``.
QUERY_OR_FRAGMENT = (
    "must not have a query or fragment (a `?` or `#`, even with nothing after it): rotator appends "
    "the API's path to this address, which would then land in the query or fragment; remove the `?` "
    "or `#` and everything after it"
)


class RequestCounter:
    """HTTP requests sent, in total and per method. Fed by the client's own hook (a
    ``requests.Session`` subclass, a botocore event handler); read, never reset, by callers."""

    __slots__ = ("by_method", "total")

    def __init__(self) -> None:
        self.total = 0
        self.by_method: dict[str, int] = {}

    def add(self, method: str) -> None:
        """One request about to be sent (``method``: the HTTP verb, or the API operation)."""
        self.total += 1
        self.by_method[method] = self.by_method.get(method, 0) + 1


def http_address_problem(url: str) -> str | None:
    """What is wrong with ``url`` as an adapter's server address, or None: it must be ``http(s)://``
    with a host, a port (if given) from 1 to 65535, and no credentials, query or fragment.

    A port that cannot be read passed validation before and failed at the first call, as an
    "unreachable server" retried five times (requests) or an internal error (botocore)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// address with a host"
    try:
        port = parts.port  # ValueError: not a number, or beyond 65535
    except ValueError:
        port = 0
    if port == 0:
        return "has a port that is not a number from 1 to 65535"
    if parts.username or parts.password:
        return "must not carry credentials"
    if "?" in url or "#" in url:
        return QUERY_OR_FRAGMENT
    return None


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` is this machine: the name ``localhost``, 127.0.0.0/8, ``::1``.

    ``*.localhost`` names do not count: RFC 6761 only asks resolvers to send them to loopback, and
    many (a corporate DNS, /etc/hosts, a container's resolver) resolve them like any other name,
    so a token sent there in plain http may well leave the machine.
    """
    if not host:
        return False
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    import ipaddress  # only when a warning is considered: not on the Lambda's cold path

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_warning(url: str | None, key: str) -> list[str]:
    """A warning if ``url`` is ``http://`` to a host that is not loopback (``key``: the setting's name)."""
    if not url:
        return []
    parts = urlsplit(url)
    if parts.scheme.lower() != "http" or is_loopback_host(parts.hostname):
        return []
    return [
        f"`{key}` is plain http:// to {parts.hostname}: tokens travel unencrypted; use https:// "
        "(plain http is meant for loopback only)"
    ]


def tls_verify_warning(tls_verify: bool, url: str | None, key: str = "tls_verify") -> list[str]:
    """A warning if certificate verification is off for an ``https://`` ``url`` (or an unknown one)."""
    if tls_verify:
        return []
    if url and urlsplit(url).scheme.lower() == "http":
        return []  # nothing to verify; plain_http_warning speaks about it
    host = urlsplit(url).hostname if url else None
    target = f"of {host} " if host else ""
    return [
        f"`{key} = false`: the server certificate {target}is not checked, so anyone on the path can "
        "read the tokens; set `ca_bundle` instead (tls_verify = false is meant for tests)"
    ]
