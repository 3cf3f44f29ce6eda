"""AWS Secrets Manager for the tests: ``moto_server`` in its own process on loopback.

``moto_server`` (session): starts ``moto_server -H 127.0.0.1 -p <free port>`` from the venv,
waits until it answers, and kills it at the end of the session. It yields a :class:`MotoServer`
with ``url``, ``client()`` (a boto3 client for any service, dummy credentials, no retries)
and ``env()`` (the variables a subprocess needs to reach it the same way).

``aws`` (per test): the same server, wiped with ``POST /moto-api/reset`` before the test, and
``aws_env``: this process's AWS environment pinned to dummy credentials and a region, with
``~/.aws`` files pointed at nothing: no test can reach a real account or read a developer's
profile. Stubber tests use ``aws_env`` alone (no server).

moto's known bugs (../shared/reference/test-infrastructure.md) are not worked around here:
tests must not depend on them, and the product follows AWS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from rotator.core.child_process import die_with_parent
from rotator.sandbox.openbao_dev import free_port

__all__ = ["CORE_PRELUDE", "MotoServer", "aws", "aws_env", "moto_server"]

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
_STARTUP_TIMEOUT_S = 30.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: Dummy credentials moto accepts; real-looking keys are never written in tests.
_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class MotoServer:
    url: str
    region: str = REGION
    account: str = ACCOUNT
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def client(self, service: str = "secretsmanager", region: str | None = None) -> Any:
        """A boto3 client on this server with dummy credentials and no retries (made once: a
        client costs ~100 ms to build, and the reset keeps it valid)."""
        import boto3
        from botocore.config import Config

        key = (service, region or self.region)
        if key not in self._clients:
            self._clients[key] = boto3.session.Session().client(
                service,
                region_name=key[1],
                endpoint_url=self.url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(retries={"total_max_attempts": 1}),
            )
        return self._clients[key]

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with _NO_PROXY.open(request, timeout=10):
            pass

    def env(self) -> dict[str, str]:
        """AWS variables for a subprocess: dummy credentials, no config files, no metadata service."""
        return dict(_ENV)

    def arn(self, name_with_suffix: str) -> str:
        return f"arn:aws:secretsmanager:{self.region}:{self.account}:secret:{name_with_suffix}"


#: Obsolete and empty: the policy loader now accepts `secret_id = "<name>"` (a plain-string field).
#: Kept so that callers that still prepend it to subprocess code keep working.
CORE_PRELUDE = ""


def _find_moto_server() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    if not beside.is_file():
        pytest.fail("no moto_server next to the interpreter: pip install 'moto[server]'")
    return str(beside)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with _NO_PROXY.open(f"{url}/moto-api/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer: the server is up
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"moto_server on {url} did not start (exit status {proc.poll()}); log:\n{tail}")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    exe = _find_moto_server()
    with tempfile.TemporaryDirectory(prefix="moto-server-") as tmp:
        log = Path(tmp) / "moto.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        env.update(_ENV, HOME=tmp)
        for attempt in range(3):  # a free port can be taken before moto binds it
            url = f"http://127.0.0.1:{free_port()}"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [exe, "-H", "127.0.0.1", "-p", url.rsplit(":", 1)[1]],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),  # noqa: PLW1509  (not left behind by a killed test run)
                )  # fmt: skip
            try:
                _wait_ready(proc, url, log)
                break
            except RuntimeError:
                proc.kill()
                proc.wait(timeout=10)
                if attempt == 2:
                    raise
        try:
            yield MotoServer(url=url)
        finally:
            if proc.poll() is None:
                proc.kill()  # in-memory state: nothing to flush
            proc.wait(timeout=10)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's AWS environment pinned to dummy credentials, no config files, no metadata service."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in _ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def aws(moto_server: MotoServer, aws_env: None) -> MotoServer:
    """The session's moto server, empty, with this process's AWS environment pinned (``aws_env``)."""
    moto_server.reset()
    return moto_server


class FailingClient:
    """Wraps a real client; the named operation raises ``error`` the next ``times`` calls.

    The seam for failures moto cannot produce on demand (a 5xx between two writes)."""

    def __init__(self, real: Any, operation: str, error: Exception, times: int = 1) -> None:
        self._real, self._operation, self._error, self.times = real, operation, error, times
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            if name == self._operation and self.times > 0:
                self.times -= 1
                raise self._error
            return method(**kwargs)

        return call


def client_error(code: str, status: int, operation: str = "UpdateSecretVersionStage") -> Exception:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": f"simulated {code}"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )
