"""A webhook URL with a user name (no password) passed `rotator validate`, then every delivery failed with
"Name or service not known": urllib sends no user-info and looks up ``user@host`` as a host name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from rotator.config.daemon_config import WebhookSettings
from tests.harness import REPO

URL = "https://alerts@hooks.example.com/hook"

POLICY_FILE = f"""
[[daemon.webhooks]]
url = "{URL}"
secret = {{ env = "HOOK_KEY" }}

[[policy]]
name = "p1"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h.example"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example:8200"
path = "influx/mgmt"
[policy.store.auth]
method = "token"
token = {{ env = "VAULT_TOKEN" }}
"""

#: what the refusal must say: where, what, and where a credential goes instead
FRAGMENTS = ("user name", "webhooks send no credentials in the URL", "HMAC signature", "secret = { file =",
             "HTTPS_PROXY")


@pytest.mark.parametrize("url", [URL, "http://hookuser@127.0.0.1:8080/x", "https://@hooks.example.com/hook"])
def test_a_webhook_url_with_a_user_name_is_refused(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookSettings.model_validate({"url": url, "secret": {"env": "HOOK_KEY"}})
    for fragment in FRAGMENTS:
        assert fragment in str(caught.value), str(caught.value)


def test_an_address_without_user_info_stays_valid() -> None:
    """An ``@`` in the path or query is not user-info."""
    for url in ("https://hooks.example.com/hook", "https://hooks.example.com:8443/to/a@b?who=c@d"):
        assert WebhookSettings.model_validate({"url": url, "secret": {"env": "HOOK_KEY"}}).url == url


def test_validate_refuses_it_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "policies.toml"
    path.write_text(POLICY_FILE)
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "validate", str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "daemon.webhooks[0].url" in proc.stderr and "Traceback" not in proc.stderr
    for fragment in FRAGMENTS:
        assert fragment in proc.stderr, proc.stderr
