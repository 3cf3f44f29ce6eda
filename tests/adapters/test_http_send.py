"""What :func:`rotator.adapters.http.common.send` makes of answer headers that are legal but unusual.

Real servers on loopback, each answering every request with one fixed answer written byte for
byte: headers no ``httpx.Response`` built in a test would carry (a value that is not ASCII, a
number of thousands of digits) reach the issuer as they would from a proxy.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.adapters.http.common import new_client, retry_after, send
from rotator.adapters.http.influxdb3 import InfluxDB3Issuer
from rotator.core.contracts import MintRequest
from rotator.core.errors import TransientError
from rotator.core.secret import Secret
from tests.adapters.loopback_http import TOKEN, influxdb3_issuer, loopback_server, read_head

MINTED = json.dumps({"id": 5, "name": "rotator-app-0123456789abcdef", "token": TOKEN, "hash": "ab" * 64,
                     "created_at": "2026-01-01T00:00:00Z", "expiry": "2030-02-01T00:00:00Z"}).encode()


@contextmanager
def server(answer: bytes) -> Iterator[str]:
    """Answers every request with ``answer`` (a whole HTTP/1.1 answer) and closes the connection."""

    def write(conn: socket.socket) -> None:
        if read_head(conn) is not None:
            conn.sendall(answer)

    with loopback_server(write) as url:
        yield url


def influxdb3(url: str) -> InfluxDB3Issuer:
    return influxdb3_issuer(url, 2)


def test_a_header_value_that_is_not_ascii_is_kept_and_fails_nothing() -> None:
    """A proxy's ``X-Served-By: nœud-3`` (UTF-8 on the wire) is legal HTTP. The answer is handed on
    with its headers as they came; re-encoding them as text refused it, and the mint of a token
    that exists now failed as a permanent ConfigError (the engine then gives up on the run)."""
    head = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Served-By: n\xc5\x93ud-3\r\n"
    with server(head + b"Content-Length: %d\r\n\r\n" % len(MINTED) + MINTED) as url:
        client = new_client(tls_verify=True, ca_bundle=None, timeout_s=2, base_dir=Path("."), base_url=url)
        response = send(client, "POST", "/api/v3/configure/token/named_admin", timeout_s=2)
        assert response.headers.raw[1] == (b"X-Served-By", b"n\xc5\x93ud-3")
        assert response.headers["X-Served-By"] == "nœud-3" and response.json()["token"] == TOKEN
        request = MintRequest("app", "0123456789abcdef", "rotator:app:0123456789abcdef",
                              datetime.now(UTC) + timedelta(days=30))
        minted = influxdb3(url).mint(request, Secret("apiv3_credential-0123456789"))
    assert minted.token_id == "rotator-app-0123456789abcdef" and minted.value.reveal() == TOKEN


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"9" * 5000, 10.0**9),  # more digits than int() converts: the cap, not a ValueError
        (b"0" * 5000 + b"7", 7.0),  # leading zeros do not make a number large
        (b"\xc2\xb2", None),  # "²": a digit to str.isdigit(), not to int(), nor a date
        (b"120", 120.0),
    ],
    ids=["5000-digits", "leading-zeros", "superscript-two", "plain"],
)
def test_a_retry_after_of_any_digits_is_a_transient_error(value: bytes, seconds: float | None) -> None:
    """A buggy or hostile proxy's Retry-After: the call still fails as what it is (a 503: transient),
    never with a bare ValueError that no caller takes for a rotator error."""
    answer = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: " + value + b"\r\nContent-Length: 0\r\n\r\n"
    with server(answer) as url:
        issuer = influxdb3(url)
        with pytest.raises(TransientError) as listing:
            issuer.list_tokens(Secret("apiv3_credential-0123456789"))
        with pytest.raises(TransientError) as revocation:
            issuer.revoke("rotator-app-0123456789abcdef", Secret("apiv3_credential-0123456789"))
        client = new_client(tls_verify=True, ca_bundle=None, timeout_s=2, base_dir=Path("."), base_url=url)
        asked = retry_after(send(client, "GET", "/", timeout_s=2))
    assert listing.value.retry_after == revocation.value.retry_after == asked == seconds
    assert "HTTP 503" in str(listing.value)


def test_a_servers_error_text_reaches_messages_with_its_control_characters_written_out() -> None:
    """The server's own error message is quoted in the error, which the CLI prints and the logs keep:
    an escape sequence in it (a title change, a cleared screen, hidden text) must not act there."""
    body = json.dumps({"error": "denied \x1b]0;PWNED\x07\x1b[2J\x1b[8m hidden\u202e"}).encode()
    answer = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    with server(answer + body) as url:
        request = MintRequest("app", "0123456789abcdef", "rotator:app:0123456789abcdef",
                              datetime.now(UTC) + timedelta(days=30))
        with pytest.raises(Exception) as failed:
            influxdb3(url).mint(request, Secret("apiv3_credential-0123456789"))
    text = str(failed.value)
    assert "HTTP 403" in text and "denied \\x1b]0;PWNED\\x07\\x1b[2J\\x1b[8m hidden\\u202e" in text, text
    assert not any(c in text for c in "\x1b\x07\u202e"), repr(text)
