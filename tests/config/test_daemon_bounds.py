"""``[daemon]`` settings that cannot work are refused by `rotator validate`, not met at the daemon's start
or in its first backoff: a listen address no socket binds, a first wait longer than the cap written beside
it, a misfire grace every start exceeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.config.daemon_config import DaemonSettings, parse_listen
from rotator.config.policy import PolicyFileError, load_config_bytes
from tests.config.policy_text import POLICY

_WEBHOOK = {"url": "https://hooks.example/rotator", "secret": {"env": "K"}}


@pytest.mark.parametrize("listen", [
    "-:9464", "999.1.1.1:9464", "1.2.3.4.5:9464", "a_b:9464", "-host:9464", "host-:9464",
    "a..b:9464", ".:9464", "x" * 64 + ":9464", "[1::2::3]:9464", "[host]:9464", "host:65536", "host:",
])  # fmt: skip
def test_a_listen_address_no_socket_binds_is_refused(listen: str) -> None:
    with pytest.raises(ValueError, match="is not an address"):
        parse_listen(listen)


@pytest.mark.parametrize(("listen", "address"), [
    (":9464", ("", 9464)), ("0.0.0.0:1", ("0.0.0.0", 1)), ("127.0.0.1:65535", ("127.0.0.1", 65535)),
    ("[::1]:9464", ("::1", 9464)), ("[::]:9464", ("::", 9464)), ("localhost:9464", ("localhost", 9464)),
    ("rotator-0.rotator.svc.cluster.local:9464", ("rotator-0.rotator.svc.cluster.local", 9464)),
    ("host.example.:9464", ("host.example.", 9464)), ("10x.example:9464", ("10x.example", 9464)),
    # the system's choice of a free port, which the daemon logs (the daemon's tests listen so)
    ("127.0.0.1:0", ("127.0.0.1", 0)), (":0", ("", 0)),
    # IPv4's short forms, which bind (inet_aton): they ran before the host was checked
    ("127.1:9464", ("127.1", 9464)), ("0:9464", ("0", 9464)), ("10.1:9464", ("10.1", 9464)),
    ("[127.0.0.1]:9464", ("127.0.0.1", 9464)),
])  # fmt: skip
def test_a_listen_address_that_binds_passes(listen: str, address: tuple[str, int]) -> None:
    assert parse_listen(listen) == address


@pytest.mark.parametrize(("daemon", "fragment"), [
    ({"failure_backoff": "2h", "failure_backoff_max": "1h"}, "failure_backoff (2h) is longer than failure_backoff_max"),
    ({"webhooks": [{**_WEBHOOK, "backoff": "2m", "max_backoff": "1m"}]}, "backoff (2m) is longer than max_backoff"),
    ({"webhooks": [{**_WEBHOOK, "backoff": "1s", "max_backoff": "0s"}]},
     "backoff (1s) is longer than max_backoff (0s)"),
    ({"misfire_grace": "0s"}, "at least 1s"),
    ({"listen": "999.1.1.1:9464"}, "is not an address"),
])  # fmt: skip
def test_daemon_settings_that_cannot_work_are_refused(daemon: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        DaemonSettings.model_validate(daemon)


@pytest.mark.parametrize("daemon", [
    {"failure_backoff": "1h", "failure_backoff_max": "1h"},
    # over the default cap, the cap not written: capped, as a file that ran before this check was
    {"failure_backoff": "2h"}, {"webhooks": [{**_WEBHOOK, "backoff": "90s"}]},
    {"webhooks": [{**_WEBHOOK, "backoff": "1m", "max_backoff": "1m"}]},
    # no wait between a webhook's tries: bounded by its attempts (at most 20), unlike a step's retries
    {"webhooks": [{**_WEBHOOK, "backoff": "0s", "max_backoff": "0s"}]},
    {"misfire_grace": "1s"},
    # a shutdown that does not wait: runs in progress are parked at once (docs/daemon.md, Shutdown)
    {"shutdown_timeout": "0s"},
])  # fmt: skip
def test_daemon_settings_at_their_bounds_pass(daemon: dict[str, object]) -> None:
    DaemonSettings.model_validate(daemon)


@pytest.mark.parametrize(("table", "where"), [
    ('listen = "-:9464"', "daemon.listen"),
    ('failure_backoff = "2h"\nfailure_backoff_max = "1h"', "daemon"),
    ('misfire_grace = "0s"', "daemon.misfire_grace"),
])
def test_validate_reports_them_where_they_are(tmp_path: Path, table: str, where: str) -> None:
    text = POLICY.format(name="p1", schedule="30d", extra="") + f"\n[daemon]\n{table}\n"
    with pytest.raises(PolicyFileError) as caught:
        load_config_bytes(text.encode(), tmp_path / "rotator.toml")
    assert [p.where for p in caught.value.problems] == [where], str(caught.value)
