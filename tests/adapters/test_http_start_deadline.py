"""A side effect's HTTP request is not sent past its start deadline (review2 #1).

The engine confirms its lease just before a side effect and opens a start window
(core/child_process.start_children_within, Engine._fenced_call); influxctl's child must start within
it. The HTTP issuers send their requests in-process: a process paused between its lease check and
the request (SIGSTOP, a GC pause) would send its mint after another rotator took the lease over and
closed the run, and with the answer lost nothing would search for that token again. So ``send``
refuses to write a request that may change something (any method but GET, HEAD, OPTIONS) past that
deadline (contracts.side_effect_start_deadline): NotSent, a TransientError for the engine, which
checks its lease again before a retry. Reads are not bounded (a listing that confirms a delete).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpcore
import pytest

from rotator.adapters.http.common import NotSent, _Watchdog, new_client, send
from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.adapters.http.influxdb3 import InfluxDB3Issuer, InfluxDB3Settings
from rotator.adapters.http.management_api import ManagementApiIssuer, ManagementApiSettings
from rotator.core.child_process import reading, start_children_within
from rotator.core.contracts import AdapterContext, MintRequest
from rotator.core.errors import TransientError
from rotator.core.secret import Secret
from tests.adapters.loopback_http import FakeStream, loopback_server, read_head
from tests.fakes.influxdb2_fake import BUCKET_ID, ORG_ID, InfluxDB2Fake
from tests.fakes.influxdb3_fake import OPERATIONS, InfluxDB3Fake
from tests.fakes.management_api_fake import ManagementApiFake
from tests.fakes.openapi_fake import Fault

#: a start window that closed before the call: the process was paused after its lease check
CLOSED = -1.0


@contextmanager
def recording_server() -> Iterator[tuple[str, list[bytes], list[int]]]:
    """Answers every request ``200 {}``; yields its URL, the request heads it read, and one entry per
    connection it accepted."""
    heads: list[bytes] = []
    connections: list[int] = []

    def answer(conn: socket.socket) -> None:
        connections.append(1)
        data = b""
        while (request := read_head(conn, data)) is not None:
            heads.append(request[0])
            data = b""
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    with loopback_server(answer) as url:
        yield url, heads, connections


def _client(url: str) -> Any:
    return new_client(tls_verify=True, ca_bundle=None, base_dir=Path("."), timeout_s=5.0, base_url=url)


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE", "PUT"])
def test_a_request_that_may_change_something_is_not_sent_past_its_start_deadline(method: str) -> None:
    with recording_server() as (url, heads, connections):
        with start_children_within(CLOSED), pytest.raises(NotSent):
            send(_client(url), method, "/api/v3/configure/token/named_admin", timeout_s=5.0, json={"x": 1})
        time.sleep(0.1)
        assert heads == [] and connections == [], "not even a connection"


def test_reads_and_requests_within_the_window_are_sent() -> None:
    with recording_server() as (url, heads, _connections):
        client = _client(url)
        with start_children_within(CLOSED):
            assert send(client, "GET", "/a", timeout_s=5.0).status_code == 200  # a read
            with reading():  # a POST that only reads (an InfluxDB 3 SQL listing)
                assert send(client, "POST", "/b", timeout_s=5.0, json={}).status_code == 200
        with start_children_within(30.0):
            assert send(client, "POST", "/c", timeout_s=5.0, json={}).status_code == 200
        assert send(client, "DELETE", "/d", timeout_s=5.0).status_code == 200  # outside any side effect
        assert [h.split(b" ")[:2] for h in heads] == [[b"GET", b"/a"], [b"POST", b"/b"], [b"POST", b"/c"],
                                                     [b"DELETE", b"/d"]]  # fmt: skip


def test_a_request_has_the_whole_call_to_be_sent_where_a_child_has_seconds_to_start() -> None:
    """A slow but working server (a template read, a TLS handshake of seconds) delays the write past the
    few seconds a child gets to start: the request bound is the call's own (Engine._fenced_call passes
    the issuer's call timeout, at most half the lease's TTL). With the children's 5 s, every mint of an
    InfluxDB v2 whose template GET took longer failed as if rotator had been paused."""
    with recording_server() as (url, heads, _connections):
        client = _client(url)
        with start_children_within(0.05, requests_within=30.0):
            time.sleep(0.2)  # past the children's window: the issuer's own reads took this long
            assert send(client, "POST", "/mint", timeout_s=5.0, json={}).status_code == 200
        with start_children_within(30.0, requests_within=0.05):
            time.sleep(0.2)
            with pytest.raises(NotSent):
                send(client, "POST", "/late", timeout_s=5.0, json={})
        assert [h.split(b" ")[:2] for h in heads] == [[b"POST", b"/mint"]]


def test_the_start_deadline_is_checked_when_connected_and_before_each_write() -> None:
    """A pause while connecting, or between connecting and writing: the request's own thread
    compares the clock with the start deadline there too. That deadline does not cut an answer
    short (``expired`` is the request's own deadline)."""
    late = time.monotonic() - 0.001
    connected = _Watchdog(time.monotonic() + 60, late)
    stream = FakeStream()
    with pytest.raises(NotSent):
        connected.trace("connection.connect_tcp.complete", {"return_value": stream})
    assert stream.closed and not connected.expired
    for event in ("http11.send_request_headers.started", "http11.send_request_body.started"):
        watchdog = _Watchdog(time.monotonic() + 60, late)
        with pytest.raises(NotSent):
            watchdog.trace(event, {"request": None})
        assert not watchdog.expired
    in_time = _Watchdog(time.monotonic() + 60, time.monotonic() + 60)
    other = FakeStream()
    in_time.trace("connection.connect_tcp.complete", {"return_value": other})
    in_time.trace("http11.send_request_headers.started", {"request": None})
    assert not other.closed and not in_time.expired
    other.close()
    request_deadline_first = _Watchdog(late, late)  # both passed: the request's own deadline says so
    with pytest.raises(httpcore.WriteTimeout):
        request_deadline_first.trace("http11.send_request_headers.started", {"request": None})



@pytest.mark.parametrize(("method", "content", "has_body"), [
    ("DELETE", None, False),  # httpx: no Content-Length, no Transfer-Encoding
    ("POST", None, False),  # httpx: Content-Length: 0 (InfluxDB 3's POST .../admin/regenerate)
    ("POST", b'{"x": 1}', True),
    ("PATCH", iter([b"{}"]), True),  # Transfer-Encoding: chunked
])
def test_a_request_without_a_body_is_whole_once_its_headers_are_written(
    method: str, content: Any, has_body: bool
) -> None:
    """Before the headers, a request past either deadline is refused (nothing written). Before the
    body, only one that has a body: without one the headers were the whole request, which the server
    carries out, and its answer must be read (for a regenerate, the only copy of the new value)."""
    import httpx

    request = httpx.Request(method, "http://server.invalid/api", content=content)
    late = time.monotonic() - 0.001
    for ends, start_by, refusal in ((time.monotonic() + 60, late, NotSent), (late, None, httpcore.WriteTimeout)):
        with pytest.raises(refusal):
            _Watchdog(ends, start_by, request).trace("http11.send_request_headers.started", {"request": None})
        before_body = _Watchdog(ends, start_by, request)
        if has_body:
            with pytest.raises(refusal):
                before_body.trace("http11.send_request_body.started", {"request": None})
        else:
            before_body.trace("http11.send_request_body.started", {"request": None})


def test_a_request_without_a_body_past_its_start_deadline_is_not_sent_at_all() -> None:
    with recording_server() as (url, heads, connections):
        for method in ("DELETE", "POST"):
            with start_children_within(CLOSED), pytest.raises(NotSent):
                send(_client(url), method, "/api/v3/configure/token/admin/regenerate", timeout_s=5.0)
        time.sleep(0.1)
        assert heads == [] and connections == []


PAUSED_AFTER_THE_LEASE_CHECK = """
import os, signal, sys
from pathlib import Path
from rotator.adapters.http.common import new_client, send
from rotator.core.child_process import start_children_within

client = new_client(tls_verify=True, ca_bundle=None, base_dir=Path("."), timeout_s=5.0, base_url=sys.argv[1])
with start_children_within(float(sys.argv[2])):  # as Engine._fenced_call opens it, just before its lease check
    os.kill(os.getpid(), signal.SIGSTOP)  # paused (an operator, the OS, a GC) before the request
    try:
        send(client, "POST", "/api/v3/configure/token/named_admin", timeout_s=5.0, json={"token_name": "x"})
        print("sent")
    except Exception as exc:
        print(type(exc).__name__)
"""


def test_a_process_paused_after_its_lease_check_sends_no_mint_when_it_resumes() -> None:
    """Real processes, stopped with SIGSTOP inside their start window and resumed after it: the server
    gets no connection (before, the request went out with a fresh deadline of its own)."""
    window_s = 0.3
    with recording_server() as (url, heads, connections):
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        children = [subprocess.Popen([sys.executable, "-c", PAUSED_AFTER_THE_LEASE_CHECK, url, str(window_s)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(2)]  # fmt: skip
        try:
            for child in children:
                _, status = os.waitpid(child.pid, os.WUNTRACED)
                assert os.WIFSTOPPED(status), child.communicate()
            time.sleep(window_s + 0.2)
            for child in children:
                os.kill(child.pid, signal.SIGCONT)
            outcomes = [child.communicate(timeout=30) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        assert [out.strip() for out, _err in outcomes] == ["NotSent"] * 2, outcomes
        time.sleep(0.1)
        assert heads == [] and connections == []


# ---------------------------------------------------------------------------------- the issuers


def _mint_request(policy: str, run_id: str = "0123456789abcdef") -> MintRequest:
    return MintRequest(policy, run_id, f"rotator:{policy}:{run_id}", datetime.now(UTC) + timedelta(days=30))


def _influxdb3(fake: InfluxDB3Fake) -> InfluxDB3Issuer:
    model = InfluxDB3Settings.model_validate({"base_url": fake.url, "credential": "self"})
    return InfluxDB3Issuer.from_config(model, AdapterContext(policy="app", base_dir=Path(".")))


def test_influxdb3_mints_nothing_past_the_start_deadline(influxdb3_fake: InfluxDB3Fake) -> None:
    credential = Secret(influxdb3_fake.add_named_admin("human-bootstrap"))
    issuer = _influxdb3(influxdb3_fake)
    with start_children_within(CLOSED), pytest.raises(TransientError, match="was not sent") as err:
        issuer.mint(_mint_request("app"), credential)
    assert "lease" in (err.value.hint or "")
    assert influxdb3_fake.api.calls == []
    assert issuer.mint(_mint_request("app"), credential).token_id == "rotator-app-0123456789abcdef"


def test_influxdb3_s_listing_after_a_delete_is_a_read(influxdb3_fake: InfluxDB3Fake) -> None:
    """The delete is written within the window; its answer comes after it closed: the listing that
    confirms it (a POST of SQL) is still sent."""
    fake = influxdb3_fake
    credential = Secret(fake.add_named_admin("human-bootstrap"))
    fake.add_named_admin("old")
    fake.api.inject("DELETE", "/api/v3/configure/token", Fault(delay_s=0.6, after_handler=True))
    with start_children_within(0.3):
        _influxdb3(fake).revoke("old", credential)
    assert "old" not in fake.names()
    # The DELETE alone removed "old": only the fake's record of requests shows the listing went out.
    calls = [(c.method, c.template) for c in fake.api.calls]
    deleted = calls.index(OPERATIONS["delete"])
    assert OPERATIONS["query"] in calls[deleted + 1:], f"the listing that confirms the delete was not sent: {calls}"


def test_influxdb2_reads_its_template_but_writes_nothing_past_the_start_deadline(
        influxdb2_fake: InfluxDB2Fake, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    fake = influxdb2_fake
    monkeypatch.setenv("INFLUXDB2_ADMIN_FOR_TEST", fake.operator_value)
    bucket = {"action": "read", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}}
    _, template_id = fake.add_authorization("template", [bucket])
    model = InfluxDB2Settings.model_validate({
        "base_url": fake.url, "org_id": ORG_ID, "credential": {"env": "INFLUXDB2_ADMIN_FOR_TEST"},
        "copy_from_authorization_id": template_id})  # fmt: skip
    issuer = InfluxDB2Issuer.from_config(model, AdapterContext(policy="app"))
    before = {t.token_id for t in issuer.list_tokens(None)}
    with start_children_within(CLOSED), pytest.raises(TransientError, match="was not sent"):
        issuer.mint(_mint_request("app"), None)
    assert [c.method for c in fake.api.calls[-1:]] == ["GET"], "the template's read only"
    assert {t.token_id for t in issuer.list_tokens(None)} == before
    minted = issuer.mint(_mint_request("app"), None)
    with start_children_within(CLOSED), pytest.raises(TransientError, match="was not sent"):
        issuer.revoke(minted.token_id, None)
    authorization = fake.authorization(minted.token_id)
    assert authorization is not None and authorization["status"] == "active"


def _management_api(fake: ManagementApiFake, tmp_path: Path) -> ManagementApiIssuer:
    value, _token_id = fake.add_management_token()
    (tmp_path / "mgmt-token").write_text(value + "\n")
    raw: dict[str, Any] = {
        "product": fake.product, "base_url": fake.base_url, "cluster_host": fake.cluster_url,
        "permissions": [{"action": "read", "resource": "telemetry"}], "verify": {"database": "telemetry"},
        "timeout_s": 2, "management_token": {"file": str(tmp_path / "mgmt-token")},
    }  # fmt: skip
    if fake.product == "dedicated":
        raw |= {"account_id": fake.account_id, "cluster_id": fake.cluster_id}
    model = ManagementApiSettings.model_validate(raw)
    return ManagementApiIssuer.from_config(model, AdapterContext(policy="db", base_dir=tmp_path))


def test_the_management_api_mints_nothing_past_the_start_deadline_and_confirms_a_revoke_after_it(
        management_api_fake: ManagementApiFake, tmp_path: Path) -> None:  # fmt: skip
    fake = management_api_fake
    issuer = _management_api(fake, tmp_path)
    with start_children_within(CLOSED), pytest.raises(TransientError, match="was not sent"):
        issuer.mint(_mint_request("db"), None)
    assert fake.calls() == []
    minted = issuer.mint(_mint_request("db"), None)
    fake.delay_next("delete", 0.6)  # written in time, answered after the window closed
    with start_children_within(0.3):
        issuer.revoke(minted.token_id, None)  # the GET that confirms it is a read
    assert not fake.is_active(minted.value.reveal())
    calls = [(c.method, c.path.rsplit("/", 1)[-1]) for c in fake.calls()]
    deleted = calls.index(("DELETE", minted.token_id))
    assert ("GET", minted.token_id) in calls[deleted + 1:], f"the GET that confirms the revoke was not sent: {calls}"
