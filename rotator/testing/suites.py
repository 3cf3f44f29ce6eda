"""Contract test suites every issuer and store adapter must pass (this module needs pytest).

A test module subclasses :class:`StoreContract` or :class:`IssuerContract` under a name pytest
collects (``Test...``) and provides the fixtures that build the adapter under test; the base
class carries the tests. Optional fixtures (``write_foreign``, ``unreachable_store``,
``unreachable_issuer``) and class attributes (``unknown_token_id``, ``malformed_token_id``)
switch on tests that need a backdoor into the backend; a test whose hook is not given is
skipped with the reason. docs/adapters.md lists what each test checks::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda: MyStore.from_config(MySettings(path=tmp_path / "s"), AdapterContext("contract"))

What the engine relies on, and so what is checked here: rotator/core/contracts.py (the Protocols and
their docstrings), rotator/core/engine.py (PLAN reads ``read_current``, PUBLISH is compare-and-set,
a retried publish whose answer was lost, the revocation rule of rotator/core/revocation_rule.py asks
the stores which token they *hold* and the issuer which tokens carry the run's tag) and DESIGN.md
invariant 4 (no token value in logs, errors or reprs).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from rotator.core.clock import SYSTEM_CLOCK
from rotator.core.contracts import Issuer, MintedToken, MintRequest, Store, StoreState, TokenRecord, target_of
from rotator.core.errors import ConflictError, PermanentError, RotatorError, TransientError
from rotator.core.secret import Secret

__all__ = ["IssuerContract", "StoreContract"]

#: Writes ``text`` to the secret of the store under test as a person or another tool would:
#: a new current version without rotator's managed marker.
ForeignWriter = Callable[[Store, str], None]


def _settings_model_ok(cls: type) -> bool:
    model = getattr(cls, "settings_model", None)
    return isinstance(model, type) and (hasattr(model, "model_validate") or dataclasses.is_dataclass(model))


def _texts_of(error: BaseException) -> str:
    """Everything an error shows a person or a log: message, hint, and its chained causes."""
    parts = [str(error), getattr(error, "hint", "")]
    for chained in (error.__cause__, error.__context__):
        if chained is not None:
            parts += [repr(chained), str(chained)]
    return " | ".join(parts)


def _assert_no_value(values: Iterable[str], texts: Iterable[str], what: str) -> None:
    texts = list(texts)
    for value in values:
        for text in texts:
            assert value not in text, f"a token value appears in {what}: DESIGN.md invariant 4"


class StoreContract:
    """The contract of a :class:`~rotator.core.contracts.Store`. Subclass it and provide ``make_store``.

    Fixtures a subclass provides:

    ``make_store`` (required)
        a callable returning a *new* adapter instance on one secret that does not exist yet (the
        same secret on every call within a test, a fresh one for each test).
    ``write_foreign`` (optional)
        a callable ``(store, text)`` that writes ``text`` as the secret's new current version the
        way a person would, without rotator's managed marker.
    ``unreachable_store`` (optional)
        an adapter whose backend does not answer (a closed port, a missing file ...).

    Class attributes: ``record_issuer`` (the issuer named in test records: a store may accept
    only some, e.g. influxctl-profile's ``key`` rule), ``policy``.
    """

    record_issuer: ClassVar[str] = "contract-test"
    policy: ClassVar[str] = "contract"
    #: created_at of the records published (whole seconds, UTC: every store keeps RFC 3339)
    created_at: ClassVar[datetime] = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    # -- fixtures ---------------------------------------------------------------------------------

    @pytest.fixture
    def make_store(self) -> Callable[[], Store]:
        raise NotImplementedError("a StoreContract subclass provides the `make_store` fixture")

    @pytest.fixture
    def store(self, make_store: Callable[[], Store]) -> Store:
        return make_store()

    @pytest.fixture
    def write_foreign(self) -> ForeignWriter | None:
        return None

    @pytest.fixture
    def unreachable_store(self) -> Store | None:
        return None

    def record(self, token_id: str | None = None, *, expires: bool = True) -> TokenRecord:
        """A record with a fresh value (``contract-value-<hex>``) and ``token_id`` (default random)."""
        return TokenRecord(
            value=Secret(f"contract-value-{uuid.uuid4().hex}"),
            token_id=token_id or f"contract-{uuid.uuid4().hex[:12]}",
            issuer=self.record_issuer,
            policy=self.policy,
            created_at=self.created_at,
            expires_at=self.created_at + timedelta(days=30) if expires else None,
        )

    # -- the tests --------------------------------------------------------------------------------

    def test_conforms_to_the_protocol(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(type(store).kind, str) and type(store).kind
        assert _settings_model_ok(type(store)), "settings_model must be a pydantic model or a dataclass"

    def test_an_absent_secret_reads_as_no_version_unmanaged_and_no_record(self, store: Store) -> None:
        assert store.read_current() == StoreState(version=None, managed=False, record=None)

    def test_publish_creates_the_secret_then_replaces_it_with_compare_and_set(self, store: Store) -> None:
        """Each publish returns a new version id; the read returns the record managed, and the store
        holds exactly the current token: what the revocation rule (rotator/core/revocation_rule.py) asks
        the stores, and the value that authenticates the next run."""
        first, second = self.record(), self.record()
        v1 = store.publish(first, None)
        assert isinstance(v1, str) and v1
        state = store.read_current()
        assert state == StoreState(version=v1, managed=True, record=first)
        assert state.token_id == first.token_id and state.record is not None
        assert state.record.value == first.value
        v2 = store.publish(second, v1)
        assert isinstance(v2, str) and v2 != v1, "every publish makes a new version (compare-and-set needs it)"
        state = store.read_current()
        assert state == StoreState(version=v2, managed=True, record=second)
        assert state.token_id == second.token_id != first.token_id

    def test_a_stale_version_is_refused_with_a_conflict_and_nothing_changes(self, store: Store) -> None:
        first, second, third = self.record(), self.record(), self.record()
        v1 = store.publish(first, None)
        v2 = store.publish(second, v1)
        with pytest.raises(ConflictError) as caught:
            store.publish(third, v1)
        assert isinstance(caught.value, PermanentError) and caught.value.hint, "a ConflictError with a hint"
        assert store.read_current() == StoreState(version=v2, managed=True, record=second)

    def test_create_only_is_refused_when_the_secret_exists(self, store: Store) -> None:
        first = self.record()
        v1 = store.publish(first, None)
        with pytest.raises(ConflictError):
            store.publish(self.record(), None)
        assert store.read_current() == StoreState(version=v1, managed=True, record=first)

    def test_publishing_the_current_record_again_returns_its_version(self, store: Store) -> None:
        """A publish whose answer was lost is retried by the engine: the retry must not conflict."""
        first, second = self.record(), self.record()
        v1 = store.publish(first, None)
        assert store.publish(first, None) == v1
        v2 = store.publish(second, v1)
        assert store.publish(second, v1) == v2
        assert store.read_current() == StoreState(version=v2, managed=True, record=second)

    def test_a_new_adapter_instance_reads_what_was_published(self, make_store: Callable[[], Store]) -> None:
        """The record and the managed marker live in the backend, not in the adapter object."""
        record = self.record(expires=False)
        version = make_store().publish(record, None)
        assert make_store().read_current() == StoreState(version=version, managed=True, record=record)

    def test_location_is_stable_and_carries_no_value(self, store: Store) -> None:
        before = store.location
        assert isinstance(before, str) and before
        record = self.record()
        store.publish(record, None)
        assert store.location == before
        _assert_no_value([record.value.reveal()], [store.location], "the store's location")

    def test_no_value_in_logs_errors_or_reprs(self, store: Store, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        first, second = self.record(), self.record()
        v1 = store.publish(first, None)
        state = store.read_current()
        store.publish(second, v1)
        errors: list[BaseException] = []
        for stale in (v1, None):  # a conflict on a stale version and on create-only
            with pytest.raises(RotatorError) as caught:
                store.publish(self.record(), stale)
            errors.append(caught.value)
        texts = [r.getMessage() for r in caplog.records] + [_texts_of(e) for e in errors]
        texts += [repr(store), str(store), repr(state), str(state), repr(store.read_current())]
        _assert_no_value([first.value.reveal(), second.value.reveal()], texts, "a log record, error or repr")

    def test_a_foreign_value_reads_as_unmanaged_and_can_be_adopted(
        self, store: Store, write_foreign: ForeignWriter | None
    ) -> None:
        """The engine refuses to overwrite an unmanaged secret unless the policy says ``adopt``."""
        if write_foreign is None:
            pytest.skip("no `write_foreign` fixture: the store's backend cannot be written around it")
        write_foreign(store, f"foreign-value-{uuid.uuid4().hex}")
        state = store.read_current()
        assert state.version is not None and not state.managed and state.record is None
        record = self.record()
        version = store.publish(record, state.version)
        assert store.read_current() == StoreState(version=version, managed=True, record=record)

    def test_a_value_written_over_the_managed_one_is_a_conflict_for_the_stale_version(
        self, store: Store, write_foreign: ForeignWriter | None
    ) -> None:
        if write_foreign is None:
            pytest.skip("no `write_foreign` fixture: the store's backend cannot be written around it")
        v1 = store.publish(self.record(), None)
        write_foreign(store, f"foreign-value-{uuid.uuid4().hex}")
        with pytest.raises(ConflictError):
            store.publish(self.record(), v1)

    def test_an_unreachable_backend_is_a_classified_error(self, unreachable_store: Store | None) -> None:
        if unreachable_store is None:
            pytest.skip("no `unreachable_store` fixture")
        with pytest.raises(RotatorError) as caught:
            unreachable_store.read_current()
        assert isinstance(caught.value, TransientError | PermanentError), type(caught.value)
        assert str(caught.value) and caught.value.hint, "the error says what failed and what to do"


class IssuerContract:
    """The contract of an :class:`~rotator.core.contracts.Issuer`. Subclass it and provide ``issuer``.

    Fixtures a subclass provides:

    ``issuer`` (required)
        the adapter under test, built for the policy named :attr:`policy`, on a backend of its own.
    ``credential`` (optional, default None)
        the token the policy's stores hold now (a self-rotating issuer authenticates with it).
    ``unreachable_issuer`` (optional)
        an adapter whose backend does not answer.

    Class attributes: ``policy``; ``unknown_token_id``, a well-formed id the issuer does not know
    (None: that test is skipped); ``malformed_token_id``, an id the issuer must refuse before
    calling its backend (None: the issuer accepts any id); ``activation_timeout_s``, how long a
    fresh token may answer TransientError to ``verify`` on the test backend; ``errors_have_hints``.
    """

    policy: ClassVar[str] = "contract"
    unknown_token_id: ClassVar[str | None] = None
    malformed_token_id: ClassVar[str | None] = None
    activation_timeout_s: ClassVar[float] = 10.0
    #: False only to record a known gap: the issuer's errors do not all carry a ``hint`` yet
    errors_have_hints: ClassVar[bool] = True

    # -- fixtures ---------------------------------------------------------------------------------

    @pytest.fixture
    def issuer(self) -> Issuer:
        raise NotImplementedError("an IssuerContract subclass provides the `issuer` fixture")

    @pytest.fixture
    def credential(self) -> Secret | None:
        return None

    @pytest.fixture
    def unreachable_issuer(self) -> Issuer | None:
        return None

    def request(self, run_id: str | None = None, *, days: float = 2) -> MintRequest:
        """A mint request for a new run: description = the run's tag, as the engine's default."""
        run_id = run_id or uuid.uuid4().hex[:16]
        expires = SYSTEM_CLOCK.now().replace(microsecond=0) + timedelta(days=days)
        return MintRequest(self.policy, run_id, self.tag(run_id), expires)

    def tag(self, run_id: str) -> str:
        return f"rotator:{self.policy}:{run_id}"

    def verify_fresh(self, issuer: Issuer, token: Secret) -> None:
        """``verify`` a new token, waiting out an activation delay of the test backend."""
        deadline = time.monotonic() + self.activation_timeout_s
        while True:
            try:
                issuer.verify(token)
                return
            except TransientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    # -- the tests --------------------------------------------------------------------------------

    def test_conforms_to_the_protocol(self, issuer: Issuer) -> None:
        assert isinstance(issuer, Issuer)
        assert isinstance(type(issuer).kind, str) and type(issuer).kind
        assert _settings_model_ok(type(issuer)), "settings_model must be a pydantic model or a dataclass"

    def test_mint_returns_a_value_an_id_and_a_token_listed_with_the_run_tag(
        self, issuer: Issuer, credential: Secret | None
    ) -> None:
        """The tag in the listed description is how the engine finds a token whose value was lost."""
        request = self.request()
        minted = issuer.mint(request, credential)
        assert isinstance(minted, MintedToken)
        assert isinstance(minted.value, Secret) and minted.value.reveal()
        assert isinstance(minted.token_id, str) and minted.token_id
        assert minted.value.reveal() not in minted.token_id, "the id is journaled: it must not carry the value"
        if minted.expires_at is not None:
            assert minted.expires_at.tzinfo is not None, "expires_at is an aware datetime"
            assert abs(minted.expires_at - request.expires_at) <= timedelta(days=1), "the expiry asked for"
        listed = {t.token_id: t for t in issuer.list_tokens(credential)}
        assert minted.token_id in listed
        info = listed[minted.token_id]
        assert request.description in info.description, "the description carries rotator:<policy>:<run id>"
        assert info.is_active(SYSTEM_CLOCK.now())

    def test_a_token_verifies_until_revoked_and_revoking_again_is_fine(
        self, issuer: Issuer, credential: Secret | None, caplog: pytest.LogCaptureFixture
    ) -> None:
        """VERIFY accepts a fresh token (TransientError allowed while it activates); after ``revoke``
        it is listed inactive or not at all and ``verify`` raises; a retried revocation succeeds.
        No value of the token or the credential reaches a log record, an error or a repr."""
        caplog.set_level(logging.DEBUG)
        minted = issuer.mint(self.request(), credential)
        self.verify_fresh(issuer, minted.value)
        issuer.revoke(minted.token_id, credential)
        listed = issuer.list_tokens(credential)
        info = next((t for t in listed if t.token_id == minted.token_id), None)
        assert info is None or not info.is_active(SYSTEM_CLOCK.now()), "listed as revoked or not at all"
        with pytest.raises(RotatorError) as caught:  # Transient (a 401 may mean "not active yet") or Permanent
            issuer.verify(minted.value)
        issuer.revoke(minted.token_id, credential)
        values = [minted.value.reveal()] + ([credential.reveal()] if credential is not None else [])
        texts = [r.getMessage() for r in caplog.records] + [_texts_of(caught.value)]
        texts += [repr(issuer), str(issuer), repr(minted), str(minted), repr(listed)]
        _assert_no_value(values, texts, "a log record, error or repr")

    def test_revoke_of_an_unknown_id_is_not_an_error(self, issuer: Issuer, credential: Secret | None) -> None:
        """A token deleted out of band counts as revoked."""
        if self.unknown_token_id is None:
            pytest.skip("no `unknown_token_id` given")
        issuer.revoke(self.unknown_token_id, credential)

    def test_a_malformed_id_is_refused_permanently(self, issuer: Issuer, credential: Secret | None) -> None:
        """A token id read from a store or a tag is a claim: one that is no id never reaches the backend."""
        if self.malformed_token_id is None:
            pytest.skip("the issuer accepts any token id (no `malformed_token_id` given)")
        with pytest.raises(PermanentError) as caught:
            issuer.revoke(self.malformed_token_id, credential)
        assert not isinstance(caught.value, TransientError)

    def test_revoke_touches_no_other_token(self, issuer: Issuer, credential: Secret | None) -> None:
        """Two mints give two tokens; revoking one (the previous token) leaves the other (the new
        one) and the credential working."""
        kept = issuer.mint(self.request(), credential)
        gone = issuer.mint(self.request(), credential)
        assert kept.token_id != gone.token_id and kept.value != gone.value
        issuer.revoke(gone.token_id, credential)
        self.verify_fresh(issuer, kept.value)
        listed = {t.token_id: t for t in issuer.list_tokens(credential)}
        assert listed[kept.token_id].is_active(SYSTEM_CLOCK.now())
        if credential is not None:
            issuer.verify(credential)

    def test_a_target_is_short_stable_text_that_needs_no_backend(
        self, issuer: Issuer, unreachable_issuer: Issuer | None, credential: Secret | None
    ) -> None:
        """``target()`` (optional, contracts.Issuer): where the tokens live, which the journal keeps with
        every run and compares before a revocation. None or one short line, the same at every call, asked
        of no backend (an unreachable one answers too) and never a token value."""
        if getattr(issuer, "target", None) is None:
            pytest.skip("the issuer names no target (optional): its tokens are judged wherever it points")
        first = target_of(issuer)
        assert target_of(issuer) == first, "the same settings name the same target"
        if unreachable_issuer is not None:
            target_of(unreachable_issuer)
        if first is None:
            return
        assert first.isprintable() and len(first) <= 300, f"one short line: {first!r}"
        if credential is not None:
            assert credential.reveal() not in first

    def test_an_unreachable_issuer_is_transient(self, unreachable_issuer: Issuer | None, credential: Any) -> None:
        if unreachable_issuer is None:
            pytest.skip("no `unreachable_issuer` fixture")
        with pytest.raises(TransientError) as caught:
            unreachable_issuer.list_tokens(credential)
        assert str(caught.value), "the error says what failed"
        if self.errors_have_hints:
            assert caught.value.hint, "the error says what to do"
