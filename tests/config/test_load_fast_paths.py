"""The policy loader's shortcuts for large files (issue 12: a daemon of 10,000 policies) give the same
answers as the general code they stand in for."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from rotator.adapters.influxctl.common import ProfileSettings, TLSSettings
from rotator.config import registry
from rotator.config.policy import MAX_NESTING, PolicyFileError, _deepest, _nests_deeper, load_config

POLICY = """
[[policy]]
name = "{name}"
schedule = "{schedule}"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h.example"
[[policy.store]]
type = "influxctl-profile"
config = "influxctl/config.toml"
profile = "{name}"
"""

scalars = st.one_of(st.text(max_size=3), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=2), children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=2), children, max_size=3).map(MappingProxyType),  # a Mapping, not a dict
    )


nested = st.recursive(scalars, _containers, max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(nested, st.integers(0, 6))
def test_the_nesting_check_agrees_with_the_walk_that_names_the_place(data: Any, limit: int) -> None:
    assert _nests_deeper(data, limit) == (_deepest(data, limit) is not None)


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1, 3 * MAX_NESTING])
def test_the_nesting_check_at_the_limit(depth: int) -> None:
    data = {"policy": [{"x": _deep(depth)}]}  # the string sits at depth + 3
    assert _nests_deeper(data, MAX_NESTING) == (depth + 3 > MAX_NESTING) == (_deepest(data, MAX_NESTING) is not None)


@pytest.fixture
def write(tmp_path: Path) -> Iterator[Any]:
    def make(*policies: tuple[str, str]) -> Path:
        path = tmp_path / "rotator.toml"
        path.write_text("".join(POLICY.format(name=n, schedule=s) for n, s in policies))
        return path

    yield make


def test_a_bad_schedule_is_reported_for_every_policy_that_has_it(write: Any) -> None:
    """Schedules are parsed once per text; an error is not remembered in place of a problem."""
    path = write(("a", "every month"), ("b", "30d"), ("c", "every month"))
    with pytest.raises(PolicyFileError) as info:
        load_config(path)
    assert [p.where for p in info.value.problems] == ["policy[0] 'a'.schedule", "policy[2] 'c'.schedule"]
    assert len({p.message for p in info.value.problems}) == 1


def test_policies_sharing_a_schedule_get_equal_schedules(write: Any) -> None:
    config = load_config(write(("a", "30d"), ("b", "30d"), ("c", "7d")))
    a, b, c = (p.schedule for p in config.policies)
    assert a == b and a.interval.days == 30 and c.interval.days == 7


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("valid", [True, False])
def test_the_garbage_collector_is_left_as_it_was(write: Any, enabled: bool, valid: bool) -> None:
    path = write(("a", "30d" if valid else "every month"))
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        if valid:
            assert load_config(path).policies[0].name == "a"
        else:
            with pytest.raises(PolicyFileError):
                load_config(path)
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_a_profile_without_tls_files_is_its_own_resolved_form(tmp_path: Path) -> None:
    profile = ProfileSettings(product="clustered", host="h.example", tls=TLSSettings(insecure=True))
    assert profile.resolved(tmp_path) is profile


def test_a_profile_with_tls_files_resolves_them_against_the_policy_directory(tmp_path: Path) -> None:
    profile = ProfileSettings(product="clustered", host="h.example", tls=TLSSettings(ca=Path("ca.pem")))
    resolved = profile.resolved(tmp_path)
    assert resolved.tls.ca == tmp_path / "ca.pem" and resolved.tls.cert is None
    assert profile.tls.ca == Path("ca.pem")  # the validated settings are not changed


# -- adapter tables validated once per file -------------------------------------------------------

ISSUER = """
[[policy]]
name = "{name}"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
{extra}
[policy.issuer.profile]
product = "clustered"
host = "h.example"
[[policy.store]]
type = "{store}"
"""


def _file(tmp_path: Path, *policies: tuple[str, str], store: str = "influxctl-profile") -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text("".join(ISSUER.format(name=n, extra=e, store=store) for n, e in policies))
    return path


def test_an_invalid_table_is_reported_for_every_policy_that_has_it(tmp_path: Path) -> None:
    path = _file(tmp_path, ("a", "timeout_s = 0"), ("b", "timeout_s = 0"), ("c", 'mgmt_token = "M.V1.abcdefghijklmn"'),
                 ("d", 'mgmt_token = "M.V1.abcdefghijklmn"'))
    with pytest.raises(PolicyFileError) as info:
        load_config(path)
    assert [p.where for p in info.value.problems] == [
        "policy[0] 'a'.issuer", "policy[1] 'b'.issuer", "policy[2] 'c'.issuer.mgmt_token",
        "policy[3] 'd'.issuer.mgmt_token"]  # fmt: skip


class _MutableSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # not frozen: each policy must get its own
    value: Any = "x"


class _FrozenSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: Any = "x"


class _MutableStore:
    kind = "test-mutable-settings"
    settings_model: type[BaseModel] = _MutableSettings

    @classmethod
    def from_config(cls, settings: Any, ctx: Any) -> Any:
        raise AssertionError("not built")

    def read_current(self) -> Any:
        raise AssertionError("not called")

    def publish(self, *args: Any) -> str:
        raise AssertionError("not called")


def test_settings_that_can_change_are_never_shared(tmp_path: Path) -> None:
    registry.force_register("store", _MutableStore.kind, _MutableStore)
    try:
        config = load_config(_file(tmp_path, ("a", ""), ("b", ""), store=_MutableStore.kind))
    finally:
        registry._forced.pop(("store", _MutableStore.kind), None)
    a, b = (p.stores[0].settings for p in config.policies)
    assert a == b and a is not b
    assert config.policies[0].issuer_settings is config.policies[1].issuer_settings  # frozen: shared


class _FrozenStore(_MutableStore):
    kind = "test-frozen-settings"
    settings_model = _FrozenSettings


def test_equal_adapter_tables_share_their_frozen_settings(tmp_path: Path) -> None:
    # a store that says where it writes (secret_locations) may not have an equal table in two policies
    registry.force_register("store", _FrozenStore.kind, _FrozenStore)
    try:
        config = load_config(_file(tmp_path, ("a", "timeout_s = 30"), ("b", "timeout_s = 30"), ("c", "timeout_s = 31"),
                                   store=_FrozenStore.kind))
    finally:
        registry._forced.pop(("store", _FrozenStore.kind), None)
    a, b, c = config.policies
    assert a.issuer_settings is b.issuer_settings and a.issuer_settings.timeout_s == 30
    assert c.issuer_settings.timeout_s == 31 and a.stores[0].settings is c.stores[0].settings


def test_a_table_equal_but_for_a_value_type_is_validated_on_its_own(tmp_path: Path) -> None:
    """``1``, ``1.0`` and ``true`` compare equal in Python: the remembered tables must not."""
    path = tmp_path / "rotator.toml"
    path.write_text("".join(ISSUER.format(name=n, extra="", store=_FrozenStore.kind) + f"value = {v}\n"
                            for n, v in (("a", "1"), ("b", "1.0"), ("c", "true"), ("d", "1"))))
    registry.force_register("store", _FrozenStore.kind, _FrozenStore)
    try:
        config = load_config(path)
    finally:
        registry._forced.pop(("store", _FrozenStore.kind), None)
    values = [p.stores[0].settings.value for p in config.policies]
    assert [(type(v), v) for v in values] == [(int, 1), (float, 1.0), (bool, True), (int, 1)]
    assert config.policies[0].stores[0].settings is config.policies[3].stores[0].settings


# -- influxctl adapters built once per policy: the paths they resolve are remembered -------------


def _issuer_binary(binary: str, base_dir: Path) -> str:
    from rotator.adapters.influxctl.management import InfluxctlManagementIssuer, InfluxctlManagementSettings

    settings = InfluxctlManagementSettings(influxctl=binary, profile=ProfileSettings(product="clustered", host="h"))
    return InfluxctlManagementIssuer(settings, base_dir=base_dir)._cli.binary


def _store_path(config: str, base_dir: Path) -> Path:
    from rotator.adapters.influxctl.profile import InfluxctlProfileSettings, InfluxctlProfileStore
    from rotator.core.contracts import AdapterContext

    settings = InfluxctlProfileSettings(config=Path(config))
    return InfluxctlProfileStore.from_config(settings, AdapterContext(policy="p", base_dir=base_dir)).path


@pytest.mark.parametrize("resolve", [_issuer_binary, lambda v, b: str(_store_path(v, b))])
def test_remembered_paths_follow_home_and_the_policy_directory(
    resolve: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "one"))
    assert resolve("~/bin/x", tmp_path) == str(tmp_path / "one" / "bin" / "x")
    monkeypatch.setenv("HOME", str(tmp_path / "two"))
    assert resolve("~/bin/x", tmp_path) == str(tmp_path / "two" / "bin" / "x")
    assert resolve("bin/x", tmp_path / "a") == str(tmp_path / "a" / "bin" / "x")
    assert resolve("bin/x", tmp_path / "b") == str(tmp_path / "b" / "bin" / "x")


@pytest.mark.parametrize("resolve", [_issuer_binary, lambda v, b: str(_store_path(v, b))])
def test_a_relative_policy_directory_follows_the_working_directory(
    resolve: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sub in ("one", "two"):
        (tmp_path / sub).mkdir()
        monkeypatch.chdir(tmp_path / sub)
        assert resolve("bin/x", Path(".")) == str(tmp_path / sub / "bin" / "x")
