"""HTTP 200 answers that are not Secrets Manager's, from a loopback forwarder in front of moto (a thread of the test).

botocore raises nothing for a 200 whose body is not Secrets Manager's JSON: it parses a body that is not JSON (a
captive portal's page, a catch-all server) as {"message": <body>} and an empty one as {}. Taken as answers, a
DescribeSecret read "the secret exists with no value" and a PutSecretValue "written" (its version id made up from
the request's): a due revocation found no store holding the token the secret held, and a rotation "published" into
nothing. The forwarder passes each call on to moto unless the test names its operation (X-Amz-Target), which it
answers with the portal's page instead; every such answer is refused, and nothing is published.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rotator.adapters.aws.secretsmanager import AwsSecretsManagerStore
from rotator.core.errors import PermanentError, RotatorError, TransientError
from tests.adapters.test_aws_secretsmanager import make_store, secret_name, stages, token_record, value_at
from tests.adapters.test_vault_non_vault_answers import forward
from tests.aws_server import MotoServer

#: (status, Content-Type, body) of what answers in Secrets Manager's place
Answer = tuple[int, str, bytes]
PORTAL_TEXT = b"Please log in to the Wi-Fi"
PORTALS: dict[str, Answer] = {
    "200 html page": (200, "text/html", b"<html><body>" + PORTAL_TEXT + b"</body></html>"),
    "200 empty json object": (200, "application/json", b"{}"),
    "200 empty body": (200, "text/plain", b""),
}


class _Ingress:
    """Passes every call on to ``upstream`` but those whose operation ``answers`` names (or every call, when
    ``everything`` is set), which it answers itself."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.answers: dict[str, Answer] = {}
        self.everything: Answer | None = None
        self.operations: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                operation = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
                outer.operations.append(operation)
                own = outer.everything or outer.answers.get(operation)
                if own is None:
                    self._forward(sent)
                    return
                status, content_type, body = own
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body: bytes) -> None:
                forward(self, outer.upstream, body)

            do_GET = do_PUT = do_POST

        self.server: socketserver.TCPServer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def _ingress(aws: MotoServer) -> Iterator[_Ingress]:
    ingress = _Ingress(aws.url)
    thread = threading.Thread(target=ingress.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield ingress
    finally:
        ingress.server.shutdown()
        ingress.server.server_close()
        thread.join(timeout=10)


def _behind(aws: MotoServer, ingress: _Ingress, name: str) -> AwsSecretsManagerStore:
    """A store whose own client (built from the settings, as in production) sends every call to the ingress."""
    return make_store(aws, name, own_client=True, endpoint_url=ingress.url)


def _refused(caught: RotatorError, ingress: _Ingress, operation: str) -> None:
    text = f"{caught} | {caught.hint}"
    assert f"the answer of {ingress.url} to {operation} is not Secrets Manager's" in str(caught), text
    assert "endpoint_url" in (caught.hint or "") and "HTTPS_PROXY" in (caught.hint or ""), text
    assert PORTAL_TEXT.decode() not in text and "<html>" not in text, "the page's text is not shown"


@pytest.mark.parametrize("portal", list(PORTALS.values()), ids=list(PORTALS))
def test_a_describe_answer_that_is_not_secrets_managers_fails_the_read(aws: MotoServer, portal: Answer) -> None:
    name = secret_name()
    make_store(aws, name).publish(token_record("tok-1"), None)
    with _ingress(aws) as ingress:
        store = _behind(aws, ingress, name)
        assert store.read_current().token_id == "tok-1"
        ingress.everything = portal
        with pytest.raises(PermanentError) as caught:
            store.read_current()
    _refused(caught.value, ingress, "DescribeSecret")


@pytest.mark.parametrize("portal", list(PORTALS.values()), ids=list(PORTALS))
def test_a_get_secret_value_answer_that_is_not_secrets_managers_fails_the_read(aws: MotoServer,
                                                                                portal: Answer) -> None:
    name = secret_name()
    make_store(aws, name).publish(token_record("tok-1"), None)
    with _ingress(aws) as ingress:
        ingress.answers["GetSecretValue"] = portal
        with pytest.raises(PermanentError) as caught:
            _behind(aws, ingress, name).read_current()
    _refused(caught.value, ingress, "GetSecretValue")


@pytest.mark.parametrize("operation", ["DescribeSecret", "PutSecretValue", "UpdateSecretVersionStage"])
@pytest.mark.parametrize("portal", list(PORTALS.values()), ids=list(PORTALS))
def test_a_publish_answered_by_something_else_fails_and_publishes_nothing(aws: MotoServer, portal: Answer,
                                                                          operation: str) -> None:
    """PutSecretValue's answer without a VersionId was taken as a version of the request's id; a move's
    answer that is not Secrets Manager's, as AWSCURRENT moved: the publish "succeeded" either way."""
    name = secret_name()
    make_store(aws, name).publish(token_record("tok-1"), None)
    with _ingress(aws) as ingress:
        store = _behind(aws, ingress, name)
        expected = store.read_current().version
        ingress.answers[operation] = portal
        with pytest.raises(PermanentError) as caught:
            store.publish(token_record("tok-2"), expected)
    _refused(caught.value, ingress, operation)
    assert value_at(aws, name, "AWSCURRENT")["token_id"] == "tok-1"
    assert [v for v, labels in stages(aws, name).items() if "AWSCURRENT" in labels] == [expected]


@pytest.mark.parametrize("portal", list(PORTALS.values()), ids=list(PORTALS))
def test_a_create_secret_answer_that_is_not_secrets_managers_fails_the_publish(aws: MotoServer,
                                                                               portal: Answer) -> None:
    """Its answer without a VersionId raised a bare KeyError (an internal error), the portal's text in it."""
    name = secret_name()
    with _ingress(aws) as ingress:
        ingress.answers["CreateSecret"] = portal
        with pytest.raises(PermanentError) as caught:
            _behind(aws, ingress, name).publish(token_record("tok-1"), None)
    _refused(caught.value, ingress, "CreateSecret")
    assert ingress.operations == ["DescribeSecret", "CreateSecret"], "nothing else was written"
    with pytest.raises(Exception, match="ResourceNotFoundException"):
        aws.client().describe_secret(SecretId=name)


@pytest.mark.parametrize("portal", list(PORTALS.values()), ids=list(PORTALS))
def test_a_tag_resource_answer_that_is_not_secrets_managers_leaves_the_publish_to_complete(aws: MotoServer,
                                                                                          portal: Answer) -> None:
    """TagResource answers with no body: its request id tells. The value is published (AWSCURRENT moved),
    the tags are not: the engine retries, and the next attempt completes the publish."""
    name = secret_name()
    aws.client().create_secret(Name=name, SecretString=json.dumps({"someone": "else"}))
    with _ingress(aws) as ingress:
        store = _behind(aws, ingress, name)
        expected = store.read_current().version
        ingress.answers["TagResource"] = portal
        record = token_record("tok-1")
        with pytest.raises(TransientError) as caught:
            store.publish(record, expected)
        assert "the token is published but the secret is not tagged" in str(caught.value)
        _refused(caught.value, ingress, "TagResource")
        assert not aws.client().describe_secret(SecretId=name).get("Tags")
        del ingress.answers["TagResource"]
        version = store.publish(record, expected)  # the engine's retry: the same record, the same version
    assert value_at(aws, name, "AWSCURRENT")["token_id"] == "tok-1"
    assert stages(aws, name)[version] == ["AWSCURRENT"]
    assert aws.client().describe_secret(SecretId=name)["Tags"], "tagged by the retry"


def test_a_describe_answer_naming_another_secret_fails_the_read(aws: MotoServer) -> None:
    """A catch-all speaking Secrets Manager's JSON for some other secret: its labels are not this secret's."""
    name = secret_name()
    other = aws.arn("tests/someone-elses-AbCdEf")
    answer = {"ARN": other, "Name": "tests/someone-elses", "VersionIdsToStages": {}}
    with _ingress(aws) as ingress:
        ingress.answers["DescribeSecret"] = (200, "application/x-amz-json-1.1", json.dumps(answer).encode())
        with pytest.raises(PermanentError) as caught:
            _behind(aws, ingress, name).read_current()
    assert f"is not Secrets Manager's (it names secret {other!r}, not {name!r})" in str(caught.value)


def test_a_describe_answer_with_an_arn_that_is_not_the_names_fails_the_read(aws: MotoServer) -> None:
    name = secret_name()
    answer = {"ARN": aws.arn("tests/x-AbCdEf"), "Name": name, "VersionIdsToStages": {}}
    with _ingress(aws) as ingress:
        ingress.answers["DescribeSecret"] = (200, "application/x-amz-json-1.1", json.dumps(answer).encode())
        with pytest.raises(PermanentError) as caught:
            _behind(aws, ingress, name).read_current()
    assert "is not Secrets Manager's (its ARN and Name are not a Secrets Manager secret's)" in str(caught.value)
