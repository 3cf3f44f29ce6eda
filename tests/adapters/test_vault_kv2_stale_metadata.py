"""A paused publish must not leave a superseded token in the secret's custom_metadata (invariant 7), against
the session's OpenBao dev server (tests/servers.py).

A publish is the ``cas`` write (fenced by compare-and-set) and then the custom_metadata write, which nothing
fences. Replica A writes version 2 and pauses; meanwhile its lease runs out, replica B publishes version 3 and
marks it; A resumes. Before, A's PATCH (or its read and POST without ``patch``) then set token_id and rotated_at
back to version 2's: ``kv metadata get``, which the docs send operators to, named a token no longer current.
The pause is injected into A's client only (a wrapper around the real one); both replicas talk to the real
server, each inside the start window the engine's lease check gives a side effect (``start_children_within``).
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.vault.auth import VaultAPI
from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store, hvac_client
from rotator.core.child_process import start_children_within
from rotator.core.contracts import side_effect_start_deadline
from rotator.core.errors import TransientError
from tests.adapters.test_vault_kv2 import latest, make_store, metadata, operator_patch, token_record
from tests.servers import OpenBao

#: A's start window (seconds from its lease check): its requests to a local OpenBao take milliseconds.
WINDOW_S = 1.0


class _Paused:
    """A's real client, with the pause put in ``pauses`` run once around the next call ``at``: after a data
    write (the publish paused before its metadata write), before a metadata write (paused after its start
    check). Nothing is paused while ``pauses`` is empty."""

    def __init__(self, api: VaultAPI, at: str, pauses: list[Callable[[], None]]) -> None:
        self._api, self._at, self._pauses = api, at, pauses

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._api, name)
        if name != self._at or not self._pauses:
            return call
        pause = self._pauses.pop()

        def paused(*args: Any) -> Any:
            if name == "write_version":
                answer = call(*args)
                pause()
                return answer
            pause()
            return call(*args)

        return paused


def _past_the_window() -> None:
    """Sleep until this publish's start window has closed (the lease may have moved on by then)."""
    deadline = side_effect_start_deadline()
    assert deadline is not None, "called inside A's publish"
    time.sleep(max(deadline - time.monotonic(), 0) + 0.05)


def _replica_publishes(store: VaultKV2Store, token_id: str, expected: str) -> Callable[[], None]:
    """Replica B, which took the lease over: it reads the store (as its PLAN does) and publishes, in a
    context of its own (its own start window, not A's)."""

    def publish() -> None:
        assert store.read_current().version == expected
        with start_children_within(5.0):
            assert store.publish(token_record(token_id), expected) == str(int(expected) + 1)

    return lambda: contextvars.Context().run(publish)


def _stores(openbao: OpenBao, kv_path: str, tmp_path: Path, *, patch: bool, at: str,
            pause: list[Callable[[], None]]) -> tuple[VaultKV2Store, VaultKV2Store]:
    """A (its client paused at ``at`` by what is put in ``pause``) and B, with ``patch`` on the metadata or not."""
    token = None
    if not patch:
        name = f"kv-no-patch-{uuid.uuid4().hex[:6]}"
        token = openbao.create_token(openbao.policy_for(name, kv_path, "create", "read", "update"))

    def paused(settings: VaultKV2Settings) -> VaultAPI:
        return _Paused(hvac_client(settings), at, pause)

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_store(openbao, kv_path, tmp_path / "a", token=token, client_factory=paused)
    b = make_store(openbao, kv_path, tmp_path / "b", token=token)
    return a, b


def _named_token(vault: Any, kv_path: str) -> tuple[int, str, Mapping[str, str]]:
    """current_version, the token id its payload holds, and the custom_metadata."""
    meta = metadata(vault, kv_path)
    return meta["current_version"], latest(vault, kv_path)["token_id"], meta["custom_metadata"]


@pytest.mark.parametrize("patch", [True, False], ids=["patch", "read-and-post"])
def test_a_publish_paused_before_its_metadata_write_leaves_the_newer_publish_named(openbao, kv_path, tmp_path,
                                                                                   patch):
    """A pauses between its data write (version 2) and its metadata write, past its start window; B
    publishes version 3. A's metadata write is not sent (with ``patch``: TransientError, the engine then
    checks the lease, lost); without it, the read before the POST shows version 3: nothing written."""
    vault = openbao.client()
    pause: list[Callable[[], None]] = []
    a, b = _stores(openbao, kv_path, tmp_path, patch=patch, at="write_version", pause=pause)
    assert a.publish(token_record("tok-1"), None) == "1"  # A learns whether Vault refuses it PATCH
    operator_patch(vault, kv_path, owner="team-a")
    assert a.read_current().version == "1"
    replica = _replica_publishes(b, "tok-b", "2")
    pause.append(lambda: (_past_the_window(), replica()))

    with start_children_within(5.0, requests_within=WINDOW_S):
        if patch:
            with pytest.raises(TransientError, match="custom_metadata write was not sent"):
                a.publish(token_record("tok-a"), "1")
        else:
            assert a.publish(token_record("tok-a"), "1") == "2"

    current, token_id, custom = _named_token(vault, kv_path)
    assert (current, token_id) == (3, "tok-b")
    assert custom["token_id"] == token_id, "the custom_metadata names the current version's token"
    assert custom["owner"] == "team-a"


@pytest.mark.parametrize("patch", [True, False], ids=["patch", "read-and-post"])
def test_a_metadata_write_that_lands_after_a_newer_publish_is_written_back_for_the_current_version(
    openbao, kv_path, tmp_path, patch
):
    """A's metadata write passed its start check, then A paused; B published version 3 and marked it; A's
    write (version 2's keys) landed last. Answered after its window, A reads the metadata again, finds
    version 3 current, and writes version 3's keys back (its payload's token, the time Vault wrote it)."""
    vault = openbao.client()
    pause: list[Callable[[], None]] = []
    at = "patch_custom_metadata" if patch else "write_custom_metadata"
    a, b = _stores(openbao, kv_path, tmp_path, patch=patch, at=at, pause=pause)
    assert a.publish(token_record("tok-1"), None) == "1"  # A learns whether Vault refuses it PATCH
    operator_patch(vault, kv_path, owner="team-a")
    assert a.read_current().version == "1"
    replica = _replica_publishes(b, "tok-b", "2")
    pause.append(lambda: (_past_the_window(), replica()))

    with start_children_within(5.0, requests_within=WINDOW_S):
        assert a.publish(token_record("tok-a"), "1") == "2"

    current, token_id, custom = _named_token(vault, kv_path)
    assert (current, token_id) == (3, "tok-b")
    assert custom["token_id"] == token_id, "the custom_metadata names the current version's token"
    created = metadata(vault, kv_path)["versions"]["3"]["created_time"]
    assert custom["rotated_at"] == created[:19] + "Z", "the time Vault wrote version 3"
    assert (custom["managed-by"], custom["policy"], custom["owner"]) == ("rotator", "influx-mgmt", "team-a")


def test_a_metadata_write_answered_in_its_window_costs_no_request_more(openbao, kv_path, tmp_path):
    """The check of rule 3 is for a late answer only: a steady publish stays the cas write and the PATCH."""
    store = make_store(openbao, kv_path, tmp_path)
    assert store.publish(token_record("tok-1"), None) == "1"
    before = store.request_count
    with start_children_within(5.0, requests_within=WINDOW_S):
        assert store.publish(token_record("tok-2"), "1") == "2"
    assert store.request_count - before == 2
    assert metadata(openbao.client(), kv_path)["custom_metadata"]["token_id"] == "tok-2"
