"""Error paths of the vault-kv2 store, with a fake client injected through ``client_factory``.

What a real server cannot be made to do on demand: 5xx, 429, timeouts, a failure between
the data write and the metadata write, a failing renewal, an SDK message carrying a secret.
The behaviour against a real server is in tests/adapters/test_vault_kv2.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest
import requests
from pydantic import ValidationError

from rotator.adapters.vault.kv2 import AppRoleAuth, KubernetesAuth, VaultKV2Settings, VaultKV2Store
from rotator.config.policy import PolicyFileError, parse_config
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.errors import ConflictError, PermanentError, RotatorError, TransientError
from rotator.core.secret import Secret
from tests.harness import REPO

NOW = datetime(2026, 3, 1, tzinfo=UTC)
VAULT_TOKEN = "s.unit-test-vault-token-0123456789"
SECRET_ID = "unit-test-secret-id-0123456789"
RECORD = TokenRecord(
    value=Secret("unit-test-influx-token-0123456789"),
    token_id="tok-1",
    issuer="influxctl-management",
    policy="influx-mgmt",
    created_at=NOW,
    expires_at=None,
)


@dataclass
class FakeVault:
    """An in-memory KV v2 secret behind :class:`VaultAPI`; ``fail[call]`` raises, first in first out."""

    fail: dict[str, list[BaseException]] = field(default_factory=dict)
    versions: list[Mapping[str, Any]] = field(default_factory=list)
    custom_metadata: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    token: Secret | None = None
    ttl: int = 3600
    renewable: bool = True

    def _enter(self, call: str) -> None:
        self.calls.append(call)
        if self.fail.get(call):
            raise self.fail[call].pop(0)

    def set_token(self, token: Secret | None) -> None:
        self.token = token

    def lookup_self(self) -> Mapping[str, Any]:
        self._enter("lookup_self")
        return {"data": {"ttl": self.ttl, "creation_ttl": self.ttl, "renewable": self.renewable}}

    def renew_self(self) -> Mapping[str, Any]:
        self._enter("renew_self")
        return {"auth": {"lease_duration": self.ttl}}

    def check_token(self) -> None:
        self._enter("check_token")

    def approle_login(self, mount_path: str, role_id: str, secret_id: Secret) -> Mapping[str, Any]:
        self._enter("approle_login")
        return {"auth": {"client_token": VAULT_TOKEN, "lease_duration": self.ttl, "renewable": self.renewable}}

    def read_latest(self, mount: str, path: str) -> Mapping[str, Any]:
        self._enter("read_latest")
        if not self.versions:
            raise hvac.exceptions.InvalidPath(errors=[])
        metadata = {"version": len(self.versions), "custom_metadata": self.custom_metadata or None}
        return {"data": {"data": self.versions[-1], "metadata": metadata}}

    def read_metadata(self, mount: str, path: str) -> Mapping[str, Any]:
        self._enter("read_metadata")
        if not self.versions:
            raise hvac.exceptions.InvalidPath(errors=[])
        versions = {str(n): {"destroyed": False} for n in range(1, len(self.versions) + 1)}
        return {
            "data": {
                "current_version": len(self.versions),
                "versions": versions,
                "custom_metadata": self.custom_metadata,
                "max_versions": 0,
            }
        }

    def read_version(self, mount: str, path: str, version: int) -> Mapping[str, Any]:
        self._enter("read_version")
        return {"data": {"data": self.versions[version - 1]}}

    def write_version(self, mount: str, path: str, data: Mapping[str, Any], cas: int) -> Mapping[str, Any]:
        self._enter("write_version")
        if cas != len(self.versions):
            raise hvac.exceptions.InvalidRequest(errors=["check-and-set parameter did not match the current version"])
        self.versions.append(dict(data))
        return {"data": {"version": len(self.versions), "custom_metadata": self.custom_metadata or None}}

    def write_custom_metadata(self, mount: str, path: str, custom_metadata: Mapping[str, str]) -> None:
        self._enter("write_custom_metadata")
        self.custom_metadata = dict(custom_metadata)

    def patch_custom_metadata(self, mount: str, path: str, custom_metadata: Mapping[str, str]) -> None:
        self._enter("patch_custom_metadata")
        self.custom_metadata = {**self.custom_metadata, **custom_metadata}

    def read_mount_config(self, mount: str) -> Mapping[str, Any]:
        self._enter("read_mount_config")
        return {"data": {"max_versions": 0}}


def make_store(
    fake: FakeVault,
    tmp_path: Path,
    *,
    auth: dict[str, Any] | None = None,
    clock: FakeClock | None = None,
    path: str = "influx/mgmt",
) -> VaultKV2Store:
    (tmp_path / "token").write_text(VAULT_TOKEN)
    (tmp_path / "secret-id").write_text(SECRET_ID)
    settings = VaultKV2Settings.model_validate(
        {
            "url": "https://vault.example:8200",
            "path": path,
            "auth": auth or {"method": "token", "token": {"file": "token"}},
        }
    )
    ctx = AdapterContext(policy="influx-mgmt", base_dir=tmp_path, clock=clock or FakeClock(NOW))
    factory: Callable[[VaultKV2Settings], Any] = lambda _settings: fake  # noqa: E731
    return VaultKV2Store.from_config(settings, ctx, client_factory=factory)


APPROLE = {"method": "approle", "role_id": "role-1", "secret_id": {"file": "secret-id"}}


def vault_error(cls: type[hvac.exceptions.VaultError], *errors: str) -> hvac.exceptions.VaultError:
    return cls(errors=list(errors), method="get", url="https://vault.example:8200/v1/secret/metadata/influx/mgmt")


@pytest.mark.parametrize(
    ("raised", "expected", "status"),
    [
        (vault_error(hvac.exceptions.InternalServerError, "internal error"), TransientError, "HTTP 500"),
        (vault_error(hvac.exceptions.VaultDown, "Vault is sealed"), TransientError, "HTTP 503"),
        (vault_error(hvac.exceptions.BadGateway), TransientError, "HTTP 502"),
        (vault_error(hvac.exceptions.RateLimitExceeded, "rate limit quota exceeded"), TransientError, "HTTP 429"),
        (vault_error(hvac.exceptions.UnexpectedError, "standby behind"), TransientError, "unexpected status"),
        (requests.exceptions.ConnectionError("refused"), TransientError, "(ConnectionError)"),
        (requests.exceptions.ReadTimeout("read timed out"), TransientError, "(ReadTimeout)"),
        (requests.exceptions.SSLError("certificate verify failed"), PermanentError, "TLS handshake"),
        (vault_error(hvac.exceptions.Unauthorized, "unauthorized"), PermanentError, "HTTP 401"),
        (vault_error(hvac.exceptions.InvalidRequest, "bad request"), PermanentError, "HTTP 400"),
        (vault_error(hvac.exceptions.VaultNotInitialized), PermanentError, "HTTP 501"),
    ],
)
def test_each_failure_maps_to_a_rotator_error(raised, expected, status, tmp_path):
    fake = FakeVault(fail={"read_metadata": [raised]})
    with pytest.raises(RotatorError) as caught:
        make_store(fake, tmp_path).read_current()
    assert type(caught.value) is expected
    assert status in str(caught.value)
    assert str(caught.value).startswith("vault:https://vault.example:8200/secret/data/influx/mgmt: ")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_403_names_the_path_and_capability_and_is_not_retried_with_the_same_token(tmp_path):
    fake = FakeVault(fail={"write_version": [vault_error(hvac.exceptions.Forbidden, "permission denied")]})
    with pytest.raises(PermanentError) as caught:
        make_store(fake, tmp_path).publish(RECORD, None)
    assert "write secret/data/influx/mgmt: HTTP 403 (permission denied)" in str(caught.value)
    assert '["create", "update"] on path \'secret/data/influx/mgmt\'' in caught.value.hint
    assert fake.calls.count("write_version") == 1


def test_a_403_with_a_token_file_rotated_meanwhile_retries_with_the_new_token(tmp_path):
    fake = FakeVault()
    store = make_store(fake, tmp_path)
    store.read_current()
    fake.fail["read_latest"] = [vault_error(hvac.exceptions.Forbidden, "permission denied")]
    (tmp_path / "token").write_text("s.rotated-by-vault-agent-0123456789")

    store.read_current()

    assert fake.token == Secret("s.rotated-by-vault-agent-0123456789")


def test_approle_logs_in_again_once_after_a_403_then_gives_up(tmp_path):
    """A 403 whose token cannot look itself up either, and that Vault no longer knows (expired, revoked):
    one new login."""
    denied = [vault_error(hvac.exceptions.Forbidden, "permission denied") for _ in range(2)]
    fake = FakeVault(fail={"read_metadata": denied, "lookup_self": denied[:1], "check_token": denied[:1]})
    with pytest.raises(PermanentError, match="HTTP 403"):
        make_store(fake, tmp_path, auth=APPROLE).read_current()
    assert fake.calls == ["approle_login", "read_metadata", "lookup_self", "check_token", "approle_login",
                          "read_metadata"]


def test_a_403_with_a_token_that_still_looks_itself_up_logs_in_no_more(tmp_path):
    """The token is valid: the 403 is a missing capability, which a new login would not grant."""
    fake = FakeVault(fail={"read_metadata": [vault_error(hvac.exceptions.Forbidden, "permission denied")]})
    with pytest.raises(PermanentError, match="HTTP 403") as caught:
        make_store(fake, tmp_path, auth=APPROLE).read_current()
    assert fake.calls == ["approle_login", "read_metadata", "lookup_self"]
    assert "metadata" in (caught.value.hint or "")


def test_approle_login_refused_is_permanent_with_a_credentials_hint(tmp_path):
    fake = FakeVault(fail={"approle_login": [vault_error(hvac.exceptions.InvalidRequest, "invalid role or secret ID")]})
    with pytest.raises(PermanentError) as caught:
        make_store(fake, tmp_path, auth=APPROLE).read_current()
    assert "log in to auth/approle/login: HTTP 400 (invalid role or secret ID)" in str(caught.value)
    assert "secret_id" in caught.value.hint


def test_approle_login_unreachable_is_transient(tmp_path):
    fake = FakeVault(fail={"approle_login": [requests.exceptions.ConnectTimeout("timed out")]})
    with pytest.raises(TransientError, match="ConnectTimeout"):
        make_store(fake, tmp_path, auth=APPROLE).read_current()


def test_failed_renewal_falls_back_to_a_new_approle_login(tmp_path):
    clock = FakeClock(NOW)
    fake = FakeVault(ttl=60, fail={"renew_self": [vault_error(hvac.exceptions.Forbidden, "permission denied")]})
    store = make_store(fake, tmp_path, auth=APPROLE, clock=clock)
    store.read_current()
    clock.advance(timedelta(seconds=45))

    store.read_current()

    assert fake.calls.count("renew_self") == 1
    assert fake.calls.count("approle_login") == 2


def test_lookup_self_denied_warns_and_carries_on(tmp_path, caplog):
    fake = FakeVault(fail={"lookup_self": [vault_error(hvac.exceptions.Forbidden, "permission denied")]})
    caplog.set_level(logging.WARNING, logger="rotator.adapters.vault_kv2")
    assert make_store(fake, tmp_path).read_current().version is None
    assert "renewal is off" in caplog.text


def test_failed_metadata_write_warns_and_a_retry_completes_the_publish(tmp_path, caplog):
    fake = FakeVault(fail={"patch_custom_metadata": [vault_error(hvac.exceptions.VaultDown, "Vault is sealed")]})
    store = make_store(fake, tmp_path)
    caplog.set_level(logging.WARNING, logger="rotator.adapters.vault_kv2")

    with pytest.raises(TransientError, match="update custom_metadata of secret/metadata/influx/mgmt: HTTP 503"):
        store.publish(RECORD, None)
    assert "version 1 is written but not marked managed yet" in caplog.text

    assert store.publish(RECORD, None) == "1"
    assert len(fake.versions) == 1 and fake.custom_metadata["token_id"] == "tok-1"


@pytest.mark.parametrize(("refusal", "level"), [(hvac.exceptions.Forbidden, logging.WARNING),
                                                (hvac.exceptions.UnsupportedOperation, logging.INFO)])
def test_a_refused_patch_falls_back_to_read_and_post_and_says_so_once(tmp_path, caplog, refusal, level):
    """403 (no `patch` capability) or 405 (Vault before 1.9): the custom_metadata is read again and
    written whole with rotator's keys set; the PATCH is not tried again by the same store."""
    fake = FakeVault(custom_metadata={"owner": "team-a"},
                     fail={"patch_custom_metadata": [vault_error(refusal, "permission denied")]})
    store = make_store(fake, tmp_path)
    caplog.set_level(logging.INFO, logger="rotator.adapters.vault_kv2")

    assert store.publish(RECORD, None) == "1"
    assert store.publish(RECORD._replace(token_id="tok-2"), "1") == "2"

    assert fake.custom_metadata == {"owner": "team-a", "managed-by": "rotator", "policy": "influx-mgmt",
                                    "token_id": "tok-2", "rotated_at": "2026-03-01T00:00:00Z"}
    # (after a 403, whether Vault still knows the token: a missing capability, not a dead token)
    check = ["check_token"] if refusal is hvac.exceptions.Forbidden else []
    assert fake.calls == ["lookup_self", "write_version", "patch_custom_metadata", *check, "read_metadata",
                          "write_custom_metadata", "write_version", "read_metadata", "write_custom_metadata"]
    said = [r for r in caplog.records if "patch" in r.getMessage() and "instead" in r.getMessage()]
    assert [r.levelno for r in said] == [level]


def test_a_refused_post_after_a_refused_patch_names_patch_in_the_hint(tmp_path):
    denied = vault_error(hvac.exceptions.Forbidden, "permission denied")
    fake = FakeVault(fail={"patch_custom_metadata": [denied], "write_custom_metadata": [denied]})
    with pytest.raises(TransientError, match="marking the secret managed failed") as caught:
        make_store(fake, tmp_path).publish(RECORD, None)
    assert '["patch"] (or ["read", "update"]' in (caught.value.hint or "")
    assert "'secret/metadata/influx/mgmt'" in (caught.value.hint or "")


def test_conflict_names_both_versions(tmp_path):
    fake = FakeVault(versions=[{"token": "someone-else"}, {"token": "someone-else-again"}])
    with pytest.raises(ConflictError, match="expected version 1, Vault is at version 2"):
        make_store(fake, tmp_path).publish(RECORD, "1")


def test_a_kv_version_1_mount_is_detected_on_write(tmp_path):
    fake = FakeVault()
    fake.write_version = lambda *args: {}  # type: ignore[method-assign]  # KV v1 answers 204
    with pytest.raises(PermanentError, match="KV version 2"):
        make_store(fake, tmp_path).publish(RECORD, None)


def test_an_expected_version_that_is_not_a_number_is_refused_before_any_call(tmp_path):
    fake = FakeVault()
    with pytest.raises(PermanentError, match="not a KV v2 version number"):
        make_store(fake, tmp_path).publish(RECORD, "AWSCURRENT")
    assert fake.calls == []


@pytest.mark.parametrize(
    ("call", "auth", "leaked"),
    [("read_metadata", None, VAULT_TOKEN), ("approle_login", APPROLE, SECRET_ID)],
)
def test_secret_values_in_vault_error_text_are_redacted(call, auth, leaked, tmp_path):
    """Vault never echoes a credential, but a proxy or plugin might: the Redactor is the second line."""
    fake = FakeVault(fail={call: [vault_error(hvac.exceptions.InvalidRequest, f"bad credential {leaked}")]})
    with pytest.raises(PermanentError) as caught:
        make_store(fake, tmp_path, auth=auth).read_current()
    text = f"{caught.value} {caught.value.hint}"
    assert leaked not in text
    assert "(bad credential ***)" in text


# --- the secret's path (issue 11.11) -----------------------------------------------------------

#: Paths the HTTP client (or Vault) would resolve to another place than <mount>/data/<path>.
ESCAPING_PATHS = [
    "x/../../../sys/policy/evil",
    "..",
    "influx/../mgmt",
    "./influx",
    "influx/./mgmt",
    "influx//mgmt",
    "/influx/mgmt",
    "influx/mgmt/",
    "influx/%2e%2e/sys",
    "influx/%2E%2E/sys",
    "influx\\..\\sys",
    "influx/mgmt?version=1",
    "influx/mgmt#x",
    "influx/\nmgmt",
]


@pytest.mark.parametrize("path", ESCAPING_PATHS)
def test_a_path_that_could_leave_its_place_is_refused_by_the_settings(path: str, tmp_path: Path) -> None:
    fake = FakeVault()
    with pytest.raises(ValidationError, match="write segments joined by single slashes") as err:
        make_store(fake, tmp_path, path=path)
    assert [e["loc"] for e in err.value.errors()] == [("path",)]
    assert fake.calls == []


@pytest.mark.parametrize("key", ["mount", "namespace"])
def test_mount_and_namespace_refuse_dot_segments_too(key: str) -> None:
    settings = {"url": "https://vault.example:8200", "path": "p", "auth": {"method": "token", "token": {"env": "T"}}}
    with pytest.raises(ValidationError, match="'.' or '..' segment"):
        VaultKV2Settings.model_validate({**settings, key: "kv/../sys"})
    assert getattr(VaultKV2Settings.model_validate({**settings, key: "/team/kv/"}), key) == "team/kv"


def _policy_with_vault_auth(auth: dict[str, Any]) -> dict[str, Any]:
    return {"policy": [{
        "name": "mgmt", "schedule": "30d",
        "issuer": {"type": "influxctl-management", "profile": {"product": "clustered", "host": "h.example"}},
        "store": [{"type": "vault-kv2", "url": "https://vault.example:8200", "path": "influx/mgmt", "auth": auth}],
    }]}  # fmt: skip


K8S = {"method": "kubernetes", "role": "rotator"}


@pytest.mark.parametrize(("auth", "mount_path", "problem"), [
    (APPROLE, "approle/../../sys/tools/hash", "has a '.' or '..' segment"),
    (APPROLE, "approle?x=1", "contains '?'"),
    (APPROLE, "approle#frag", "contains '#'"),
    (APPROLE, "app%2e%2e", "contains '%'"),
    (APPROLE, "team//approle", "has an empty segment"),
    (APPROLE, "/", "must not be empty"),
    (K8S, "kubernetes/../../sys/tools/hash", "has a '.' or '..' segment"),
    (K8S, "k8s\nprod", "contains a control character"),
])  # fmt: skip
def test_an_auth_mount_path_that_could_leave_auth_is_refused_by_policy_loading(
    tmp_path: Path, auth: dict[str, Any], mount_path: str, problem: str
) -> None:
    """mount_path becomes auth/<mount_path>/login: 'approle/../../sys/tools/hash' sent the role_id and
    secret_id to /v1/sys/tools/hash/login. It is checked like the store's mount, path and namespace."""
    with pytest.raises(PolicyFileError) as caught:
        parse_config(_policy_with_vault_auth({**auth, "mount_path": mount_path}), tmp_path / "rotator.toml")
    text = str(caught.value)
    assert f"policy[0] 'mgmt'.store[0].auth.mount_path: {problem}" in text  # where it is written, not under the method
    if problem != "must not be empty":
        assert "write segments joined by single slashes" in text


@pytest.mark.parametrize(("auth", "mount_path", "kept"), [
    (APPROLE, "/team-a/approle/", "team-a/approle"), (APPROLE, "approle", "approle"),
    (K8S, "/kubernetes", "kubernetes"), (K8S, "cluster-1/kubernetes", "cluster-1/kubernetes"),
])  # fmt: skip
def test_an_auth_mount_path_loses_its_outer_slashes_like_mount(
    tmp_path: Path, auth: dict[str, Any], mount_path: str, kept: str
) -> None:
    config = parse_config(_policy_with_vault_auth({**auth, "mount_path": mount_path}), tmp_path / "rotator.toml")
    settings = config.policies[0].stores[0].settings
    assert isinstance(settings, VaultKV2Settings) and isinstance(settings.auth, AppRoleAuth | KubernetesAuth)
    assert settings.auth.mount_path == kept


@pytest.mark.parametrize("url", ["https://vault.example:8200\n", "https://vault.example:8200/\r\n",
                                 "https://vault .example:8200", "https://vault.example:8200\t"])
def test_a_url_with_a_line_break_or_a_space_is_refused_by_the_settings(url: str) -> None:
    """urlsplit drops a trailing newline, so the URL validated, and requests refused it at the first call
    as "cannot reach Vault", retried as transient instead of a configuration error."""
    settings = {"url": url, "path": "p", "auth": {"method": "token", "token": {"env": "T"}}}
    with pytest.raises(ValidationError, match="must not contain spaces or control characters"):
        VaultKV2Settings.model_validate(settings)


def test_rotator_validate_refuses_an_escaping_path_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "rotator.toml").write_text(
        """
[[policy]]
name = "mgmt"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster.example.test"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example.test:8200"
path = "x/../../../sys/policy/evil"
auth = { method = "token", token = { env = "VAULT_TOKEN" } }
"""
    )
    done = subprocess.run(
        [sys.executable, "-m", "rotator.runners.cli", "validate", str(tmp_path / "rotator.toml")],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "policy[0] 'mgmt'.store[0].path" in done.stderr
    assert "has a '.' or '..' segment" in done.stderr


@pytest.mark.parametrize(("field", "value"), [("ttl", "forever"), ("ttl", [1]), ("ttl", float("inf")),
                                              ("ttl", 10**13), ("client_token", None)])
def test_a_login_answer_whose_fields_are_not_vault_s_is_a_permanent_error_naming_the_url(tmp_path, field, value):
    """Past the top-level key: a login answer without a token, or a TTL that is not a number (an
    ingress or a proxy answering JSON), is not an internal KeyError/ValueError."""

    class Odd(FakeVault):
        def approle_login(self, mount_path: str, role_id: str, secret_id: Secret) -> Mapping[str, Any]:
            answer = super().approle_login(mount_path, role_id, secret_id)
            auth = dict(answer["auth"])
            if field == "ttl":
                auth["lease_duration"] = value
            else:
                auth.pop("client_token")
            return {"auth": auth}

    with pytest.raises(PermanentError, match="is not Vault's") as caught:
        make_store(Odd(), tmp_path, auth=APPROLE).read_current()
    assert "check url" in (caught.value.hint or "")
