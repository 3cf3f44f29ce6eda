"""Real servers for the tests, started once per session on loopback.

``openbao``: an OpenBao dev server (rotator/sandbox/openbao_dev.py) and helpers to make what a test
needs on it: ACL policies, child tokens, AppRole roles, namespaces. Every hvac client made
here gets its url and token explicitly, never from VAULT_* or ~/.vault-token.
``kv_path``: a secret path of its own for each test, so tests never see each other's data.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hvac
import pytest

from rotator.sandbox.openbao_dev import openbao_dev_server

__all__ = ["OpenBao", "kv_path", "openbao"]


@dataclass
class OpenBao:
    url: str
    root_token: str
    _approle_enabled: bool = field(default=False, repr=False)

    def __repr__(self) -> str:  # keep the root token out of pytest's failure output
        return f"OpenBao(url={self.url!r})"

    def client(self, token: str | None = None, namespace: str | None = None) -> hvac.Client:
        """An hvac client with ``token`` (default: root); never one that read VAULT_*/~/.vault-token."""
        return hvac.Client(url=self.url, token=token or self.root_token, namespace=namespace)

    def write_policy(self, name: str, hcl: str, namespace: str | None = None) -> None:
        self.client(namespace=namespace).sys.create_or_update_policy(name=name, policy=hcl)

    def policy_for(self, name: str, path: str, *capabilities: str, mount: str = "secret") -> str:
        """An ACL policy granting ``capabilities`` on ``<mount>/data/<path>`` and its metadata."""
        caps = ", ".join(f'"{c}"' for c in capabilities)
        self.write_policy(
            name,
            f'path "{mount}/data/{path}" {{ capabilities = [{caps}] }}\n'
            f'path "{mount}/metadata/{path}" {{ capabilities = [{caps}] }}\n',
        )
        return name

    def create_token(self, *policies: str, ttl: str = "1h", **options: Any) -> str:
        """A child token of root with ``policies`` (plus ``default`` unless no_default_policy=True)."""
        answer = self.client().auth.token.create(policies=list(policies), ttl=ttl, **options)
        token: str = answer["auth"]["client_token"]
        return token

    def approle(self, role: str, *policies: str, **options: Any) -> tuple[str, str]:
        """An AppRole role with ``policies``; returns ``(role_id, secret_id)``."""
        root = self.client()
        if not self._approle_enabled:
            if "approle/" not in root.sys.list_auth_methods()["data"]:
                root.sys.enable_auth_method("approle")
            self._approle_enabled = True
        root.auth.approle.create_or_update_approle(role, token_policies=list(policies), **options)
        role_id: str = root.auth.approle.read_role_id(role)["data"]["role_id"]
        secret_id: str = root.auth.approle.generate_secret_id(role)["data"]["secret_id"]
        return role_id, secret_id

    def namespace(self, name: str) -> str:
        """A namespace with a KV v2 engine mounted at ``secret``."""
        self.client().sys.create_namespace(name)
        self.client(namespace=name).sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        return name


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    with openbao_dev_server() as (url, root_token):
        yield OpenBao(url=url, root_token=root_token)


@pytest.fixture
def kv_path(request: pytest.FixtureRequest) -> str:
    """``tests/<test name>-<random>``: unique per test, readable in the server's log."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60].strip("-")
    return f"tests/{name}-{uuid.uuid4().hex[:8]}"
