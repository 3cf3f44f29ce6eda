"""The validated policy as the engine, the daemon and the Lambda function use it.

Plain dataclasses: this module imports no pydantic, so the Lambda function's cold path can build
policies from a bundle (rotator/policy_bundle.py) without it. rotator/policy.py validates a
policy file into these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from rotator import registry
from rotator.contracts import AdapterContext, Issuer, Store
from rotator.schedule import Schedule

__all__ = ["Policy", "StoreBinding"]


@dataclass(frozen=True)
class StoreBinding:
    name: str
    type: str
    #: An instance of the store adapter's ``settings_model``.
    settings: Any


@dataclass(frozen=True)
class Policy:
    """One validated policy, with defaults applied."""

    name: str
    enabled: bool
    issuer_type: str
    #: An instance of the issuer adapter's ``settings_model``.
    issuer_settings: Any
    stores: tuple[StoreBinding, ...]
    schedule: Schedule
    grace: timedelta
    lifetime: timedelta
    verify_timeout: timedelta
    adopt: bool
    description: str
    base_dir: Path

    def tag(self, run_id: str) -> str:
        return f"rotator:{self.name}:{run_id}"

    def tag_prefix(self) -> str:
        return f"rotator:{self.name}:"

    def token_description(self, run_id: str) -> str:
        return self.description.format(tag=self.tag(run_id), policy=self.name)

    def context(self) -> AdapterContext:
        return AdapterContext(policy=self.name, base_dir=self.base_dir)

    def build_issuer(self) -> Issuer:
        cls = registry.load("issuer", self.issuer_type)
        return cls.from_config(self.issuer_settings, self.context())  # type: ignore[return-value]

    def build_stores(self) -> list[tuple[str, Store]]:
        built = []
        for binding in self.stores:
            cls = registry.load("store", binding.type)
            built.append((binding.name, cls.from_config(binding.settings, self.context())))
        return built  # type: ignore[return-value]
