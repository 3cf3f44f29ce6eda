"""The validated policy as the engine, the daemon and the Lambda function use it.

NamedTuples (immutable records, cheap to create; see rotator/core/contracts.py): this module imports
no pydantic, so the Lambda function's cold path can build policies from a bundle
(rotator/config/policy_bundle.py) without it. rotator/config/policy.py validates a policy file into these.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from rotator.core.contracts import AdapterContext
from rotator.core.errors import ConfigError

if TYPE_CHECKING:
    from rotator.config.schedule import Schedule
    from rotator.core.clock import Clock

__all__ = ["Policy", "StoreBinding", "find_policy"]


class StoreBinding(NamedTuple):
    """One of a policy's stores: its name, adapter type and validated settings."""

    name: str
    type: str
    #: An instance of the store adapter's ``settings_model``.
    settings: Any


class Policy(NamedTuple):
    """One validated policy, with defaults applied."""

    name: str
    enabled: bool
    issuer_type: str
    #: An instance of the issuer adapter's ``settings_model``.
    issuer_settings: Any
    stores: tuple[StoreBinding, ...]
    #: The schedule and window as written (validated); :attr:`schedule` parses them on first use,
    #: which the Lambda function never makes (Secrets Manager schedules its rotations).
    schedule_text: str
    window_text: str | None
    grace: timedelta
    lifetime: timedelta
    verify_timeout: timedelta
    adopt: bool
    description: str
    base_dir: Path
    #: The declared cryptoperiod: a published token older than this is out of compliance
    #: (rotator/observe/compliance.py). None only where a policy was built without it (an old bundle).
    max_age: timedelta | None = None

    @property
    def schedule(self) -> Schedule:
        return _parsed_schedule(self.schedule_text, self.window_text)

    def tag(self, run_id: str) -> str:
        return f"rotator:{self.name}:{run_id}"

    def tag_prefix(self) -> str:
        return f"rotator:{self.name}:"

    def token_description(self, run_id: str) -> str:
        return self.description.format(tag=self.tag(run_id), policy=self.name)

    def transport_warnings(self) -> list[str]:
        """What the adapters' settings say about insecure transport: ``transport_warnings()`` of each
        settings object that has one (see rotator/adapters/transport.py), prefixed with where it is."""
        parts = [("issuer", self.issuer_settings), *((f"store {b.name!r}", b.settings) for b in self.stores)]
        found = []
        for where, settings in parts:
            check = getattr(settings, "transport_warnings", None)
            found += [f"policy {self.name!r} {where}: {warning}" for warning in (check() if callable(check) else ())]
        return found

    def context(self, clock: Clock | None = None) -> AdapterContext:
        """What the policy's adapters are built with (rotator/config/registry.py): its name, the policy
        file's directory, and the caller's clock (the system clock unless one is given)."""
        if clock is None:
            return AdapterContext(policy=self.name, base_dir=self.base_dir)
        return AdapterContext(policy=self.name, base_dir=self.base_dir, clock=clock)


@lru_cache(maxsize=256)
def _parsed_schedule(text: str, window: str | None) -> Schedule:
    from rotator.config.schedule import parse_schedule  # its regexes and classes stay off the Lambda's cold path

    return parse_schedule(text, window)


def find_policy(policies: Sequence[Policy], name: str, path: Path) -> Policy:
    """The policy ``name`` of the file at ``path``; ConfigError listing the known ones."""
    for policy in policies:
        if policy.name == name:
            return policy
    known = ", ".join(p.name for p in policies) or "(none)"
    raise ConfigError(f"{path}: no policy named {name!r}", hint=f"known policies: {known}")
