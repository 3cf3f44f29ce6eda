"""A scripted stand-in for the Vault calls VaultLogin makes, and a token login to drive with it
(unit tests of rotator/adapters/vault/auth.py: tests/adapters/test_vault_login.py, tests/e2e/test_outages.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from rotator.adapters.vault.auth import TokenAuth, VaultLogin
from rotator.core.clock import FakeClock


class ScriptedAuth:
    """The AuthAPI calls VaultLogin makes, scripted: a list of answers or exceptions per call."""

    def __init__(self, **script: list[Any]) -> None:
        self.script = script
        self.calls: list[str] = []

    def set_token(self, token: Any) -> None:
        pass

    def _answer(self, name: str) -> Any:
        self.calls.append(name)
        item = self.script[name].pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def lookup_self(self) -> Any:
        return self._answer("lookup_self")

    def renew_self(self) -> Any:
        return self._answer("renew_self")

    def check_token(self) -> Any:
        return self._answer("check_token")


def token_login(tmp_path: Path, now: datetime | None = None) -> tuple[VaultLogin, FakeClock]:
    """A token-auth VaultLogin whose token is in ``tmp_path/token``, on a FakeClock (at ``now``)."""
    (tmp_path / "token").write_text("s.renewable-token-for-the-unit-test")
    clock = FakeClock(now) if now is not None else FakeClock()
    return VaultLogin(TokenAuth.model_validate({"method": "token", "token": {"file": "token"}}), tmp_path, clock), clock
