"""Prometheus metrics of the daemon (prometheus-client; imported only by the daemon).

Two kinds: *event* metrics the daemon updates as things happen (runs, revocations, reloads,
notifications), and *state* metrics (token age and expiry, next rotation, pending and overdue
revocations, leases) from the daemon's in-memory view of the journal, which its own jobs keep
current and each sweep refreshes with what other replicas did: a scrape makes no journal query,
and its cost (:class:`StateText`) grows only with what changed. The *live* metrics (the watchdog,
the stores' own credentials) come from the daemon's memory too: each credential as the daemon read
it after the last job of its policy, asked again only while one runs (:class:`LiveText`). Labels
are policy names, fixed words and the inventory's cluster or instance (type, host, port, ids; no
URL credentials or query) only: never a token, a token id or a lease holder. docs/daemon.md lists every metric.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from operator import is_not
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from rotator import __version__
from rotator.core.clock import utcnow
from rotator.core.due import age_origin
from rotator.observe.notify import ORPHAN_EVENTS

__all__ = ["NOTIFICATION_CHANNELS", "NOTIFICATION_RESULTS", "REVOCATION_RESULTS", "ROTATION_RESULTS", "STATE_SPECS",
           "CredentialState", "LiveSnapshot", "LiveText", "Metrics", "PolicyCounter", "PolicyGauge", "PolicyState",
           "StateSnapshot", "StateText"]

RUN_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 86400)
#: rotator_rotations_total's results (docs/daemon.md)
ROTATION_RESULTS = ("success", "failure", "needs_attention", "aborted")
#: rotator_revocations_total's results
REVOCATION_RESULTS = ("ok", "retry", "failed")
#: rotator_notifications_total's channels and results (rotator/observe/notify.py's workers report them), each
#: channel with each result at 0 from the start (a webhook reports no timeout: that series stays 0)
NOTIFICATION_CHANNELS = ("webhook", "hook")
NOTIFICATION_RESULTS = ("ok", "failed", "timeout", "dropped")


@dataclass(frozen=True)
class PolicyState:
    """What the journal says about one policy, for the state metrics."""

    policy: str
    enabled: bool
    rotated_at: datetime | None
    expires_at: datetime | None
    next_rotation: datetime | None
    pending_revocations: int
    overdue_revocations: int
    failed_revocations: int
    open_runs: int
    needs_attention: bool
    lease_active: bool
    lease_held_here: bool
    #: the policy's max_age in seconds, and whether it is compliant (rotator/observe/compliance.py)
    max_age_s: float | None = None
    compliant: bool | None = None
    #: when the current token began to age, where that is before ``rotated_at`` (a bootstrapped
    #: token's creation at the issuer: RunRecord.token_since)
    token_since: datetime | None = None

    @property
    def since(self) -> datetime | None:
        return age_origin(self.rotated_at, self.token_since)


@dataclass(frozen=True)
class StateSnapshot:
    now: datetime
    journal_up: bool
    policies: list[PolicyState] = field(default_factory=list)


@dataclass(frozen=True)
class CredentialState:
    """A store's own credential (e.g. its Vault token), as the store reports it."""

    policy: str
    store: str
    ok: bool
    failures: int
    expires_at: datetime | None


@dataclass(frozen=True)
class LiveSnapshot:
    """What this process knows in memory: the watchdog and the stores' credentials."""

    stalled: bool
    #: Unix time up to which every pass and run has finished
    last_progress: float
    credentials: list[CredentialState] = field(default_factory=list)


def _ts(value: datetime) -> float:
    return value.timestamp()


def _age(s: PolicyState, now: datetime) -> float | None:
    since = s.since
    return (now - since).total_seconds() if since else None


#: The state metrics: (name, help, value of a policy's state at ``now``; None: no sample). The
#: first one, the token's age, is the only one that moves with ``now`` alone (see StateText).
STATE_SPECS: tuple[tuple[str, str, Callable[[PolicyState, datetime], float | None]], ...] = (
    ("rotator_token_age_seconds", "Age of the current token (since its publication; a bootstrapped token's "
     "since its creation at the issuer)", _age),
    ("rotator_token_expiry_timestamp_seconds", "When the current token expires (Unix time)",
     lambda s, _: _ts(s.expires_at) if s.expires_at else None),
    ("rotator_last_success_timestamp_seconds", "When the last successful rotation or bootstrap published",
     lambda s, _: _ts(s.rotated_at) if s.rotated_at else None),
    ("rotator_next_rotation_timestamp_seconds", "When the next rotation is due by the schedule (Unix time); "
     "in the past while a rotation is overdue",
     lambda s, _: _ts(s.next_rotation) if s.next_rotation and s.enabled else None),
    ("rotator_revocations_pending", "Previous tokens waiting for their grace period to end",
     lambda s, _: s.pending_revocations),
    ("rotator_revocations_overdue", "Pending revocations whose due time passed more than a sweep ago",
     lambda s, _: s.overdue_revocations),
    ("rotator_revocations_failed", "Revocations that gave up: the token is still valid, act on it",
     lambda s, _: s.failed_revocations),
    ("rotator_open_runs", "Runs not finished (in progress, or interrupted and waiting for recovery)",
     lambda s, _: s.open_runs),
    ("rotator_needs_attention", "1 when the policy stopped where only a human can decide",
     lambda s, _: int(s.needs_attention)),
    ("rotator_policy_enabled", "1 when the policy rotates on its schedule", lambda s, _: int(s.enabled)),
    ("rotator_lease_active", "1 while any rotator holds the policy's lease", lambda s, _: int(s.lease_active)),
    ("rotator_lease_held", "1 while this replica holds the policy's lease", lambda s, _: int(s.lease_held_here)),
    ("rotator_token_max_age_seconds", "The policy's max_age: a current token older than this is out "
     "of compliance (compare rotator_token_age_seconds)", lambda s, _: s.max_age_s),
    ("rotator_policy_compliant", "1 when a token is published, younger than max_age, and no revocation "
     "is overdue or failed", lambda s, _: None if s.compliant is None else int(s.compliant)),
)  # fmt: skip
JOURNAL_UP_HELP = "1 if the journal answered the readiness probe and the last read"


class _StateCollector(Collector):
    """Reads a :class:`StateSnapshot` at every scrape."""

    def __init__(self, source: Callable[[], StateSnapshot]) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return []  # no collect() at registration time: the journal may not be open yet

    def collect(self) -> Iterator[Metric]:
        snap = self._source()
        yield GaugeMetricFamily("rotator_journal_up", JOURNAL_UP_HELP, value=int(snap.journal_up))
        for name, doc, value in STATE_SPECS:
            family = GaugeMetricFamily(name, doc, labels=["policy"])
            for state in snap.policies:
                v = value(state, snap.now)
                if v is not None:
                    family.add_metric([state.policy], float(v))
            yield family


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    """A sample value as prometheus_client writes it."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _seconds(value: float) -> str:
    """:func:`_num` of a finite value (an age), without its checks: what it costs matters at every scrape."""
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go (and prometheus_client) switch to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def _help(doc: str) -> str:
    return doc.replace("\\", "\\\\").replace("\n", "\\n")


def _header(name: str, doc: str) -> str:
    return f"# HELP {name} {_help(doc)}\n# TYPE {name} gauge\n"


class StateText:
    """The state metrics in the text format, as the registry would write them, at a cost that does
    not grow with what did not change: each policy's lines are kept with the :class:`PolicyState`
    they were made from and made again only for a new state object; only the token's age is
    written at every scrape. For the daemon's /metrics at thousands of policies (issue 12: a
    scrape of 10,000 policies through the registry took seconds).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: policy -> (the state the lines were made from, the start of its age line, a line per STATE_SPECS[1:])
        self._lines: dict[str, tuple[PolicyState, str, tuple[str, ...]]] = {}
        #: the states of the last render, its text of STATE_SPECS[1:], and the (start of the age line,
        #: age origin) of each policy with a token: kept while the states are the same objects
        self._last: tuple[list[PolicyState], bytes, list[tuple[str, datetime]]] = ([], b"", [])

    def render(self, snap: StateSnapshot) -> bytes:
        return b"".join(self.parts(snap))

    def parts(self, snap: StateSnapshot) -> list[bytes]:
        """:meth:`render`'s text in pieces, for a caller that joins them with more: one copy of the
        whole (the families but the age, kept between scrapes, are two thirds of a scrape's bytes at
        10,000 policies, and adding the age to them copied them at every scrape)."""
        now = snap.now
        policies = snap.policies
        head = _header("rotator_journal_up", JOURNAL_UP_HELP) + f"rotator_journal_up {_num(int(snap.journal_up))}\n"
        with self._lock:
            last_states, rest, ages = self._last
            if len(last_states) != len(policies) or any(map(is_not, last_states, policies)):
                rest, ages = self._rest(snap)
                self._last = (list(policies), rest, ages)
            # The age: "now - publication" for each policy, the one value that moves at every scrape.
            age = "".join([f"{prefix}{_seconds((now - since).total_seconds())}\n" for prefix, since in ages])
        return [(head + _header(*STATE_SPECS[0][:2]) + age).encode("utf-8"), rest]

    def _rest(self, snap: StateSnapshot) -> tuple[bytes, list[tuple[str, datetime]]]:
        """Every family but the age, from each policy's kept lines (made again for a new state), and
        the start of each age line with its origin."""
        rows = []
        ages = []
        lines = self._lines
        for state in snap.policies:
            kept = lines.get(state.policy)
            if kept is None or kept[0] is not state:
                kept = lines[state.policy] = self._make(state, snap.now)
            rows.append(kept[2])
            since = state.since
            if since is not None:
                ages.append((kept[1], since))
        if len(lines) > 2 * len(rows) + 16:  # policies that left the configuration
            names = {s.policy for s in snap.policies}
            for name in [n for n in lines if n not in names]:
                del lines[name]
        out = []
        for i, (name, doc, _) in enumerate(STATE_SPECS[1:]):
            out.append(_header(name, doc))
            out.extend(row[i] for row in rows)
        return "".join(out).encode("utf-8"), ages

    @staticmethod
    def _make(state: PolicyState, now: datetime) -> tuple[PolicyState, str, tuple[str, ...]]:
        label = f'policy="{_escape(state.policy)}"'
        lines = []
        for name, _, value in STATE_SPECS[1:]:
            v = value(state, now)
            lines.append("" if v is None else f"{name}{{{label}}} {_num(v)}\n")
        return state, f"{STATE_SPECS[0][0]}{{{label}}} ", tuple(lines)


#: The live families: (name, help); the watchdog's two, then a store credential's three.
STALLED = ("rotator_watchdog_stalled", "1 when the scheduler or a run made no progress for longer than its bound "
           "(liveness fails: the daemon is wedged)")
LAST_PROGRESS = ("rotator_watchdog_last_progress_timestamp_seconds", "Unix time up to which every scheduler pass "
                 "and every run has finished")
CREDENTIAL_EXPIRY = ("rotator_credential_expiry_timestamp_seconds", "When a store's own credential (e.g. its Vault "
                     "token) expires unless renewed (Unix time)")
CREDENTIAL_OK = ("rotator_credential_ok", "0 when a store's credential is expired, close to expiry, or unknown "
                 "after a failed login/renewal")
CREDENTIAL_FAILURES = ("rotator_credential_renewal_failures", "Failed logins/lookups/renewals of a store's "
                       "credential in a row")


CLOCK_OFFSET = ("rotator_clock_offset_seconds", "The journal's PostgreSQL server's clock minus this host's, "
                "at the last sweep (negative: this host's clock is ahead); absent for an SQLite journal "
                "(one host, no server clock)")


class _ClockOffsetCollector(Collector):
    """rotator_clock_offset_seconds: a sample only once an offset was measured. Unknown is no sample,
    as for every other metric here: a 0 would read as "in sync", and RotatorClockSkew would never fire."""

    def __init__(self) -> None:
        self.value: float | None = None

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(*CLOCK_OFFSET)
        value = self.value
        if value is not None:
            family.add_metric([], value)
        yield family


class _LiveCollector(Collector):
    def __init__(self, source: Callable[[], LiveSnapshot]) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self._source()
        yield GaugeMetricFamily(*STALLED, value=int(snap.stalled))
        yield GaugeMetricFamily(*LAST_PROGRESS, value=snap.last_progress)
        expiry = GaugeMetricFamily(*CREDENTIAL_EXPIRY, labels=["policy", "store"])
        ok = GaugeMetricFamily(*CREDENTIAL_OK, labels=["policy", "store"])
        failures = GaugeMetricFamily(*CREDENTIAL_FAILURES, labels=["policy", "store"])
        for cred in snap.credentials:
            labels = [cred.policy, cred.store]
            if cred.expires_at is not None:
                expiry.add_metric(labels, _ts(cred.expires_at))
            ok.add_metric(labels, int(cred.ok))
            failures.add_metric(labels, cred.failures)
        yield from (expiry, ok, failures)


class LiveText:
    """The live metrics in the text format, as :class:`_LiveCollector` writes them through the registry,
    at a cost that does not grow with the credentials that did not change: each credential's lines
    are kept with the :class:`CredentialState` they were made from, and the credential families' text
    while the snapshot lists the same objects. Every value is a fixed one (an expiry is a Unix time),
    so kept lines stay true until the daemon gives a new state. Issue 12: prometheus_client wrote the
    10,006 credential lines of 5,000 Vault policies at every scrape (74 ms).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: (policy, store) -> (the state its lines were made from, its line of each credential family)
        self._lines: dict[tuple[str, str], tuple[CredentialState, tuple[str, str, str]]] = {}
        #: the credentials of the last render and their families' text, kept while they are the same
        self._last: tuple[list[CredentialState], bytes] | None = None

    def render(self, snap: LiveSnapshot) -> bytes:
        head = (f"{_header(*STALLED)}{STALLED[0]} {_num(int(snap.stalled))}\n"
                f"{_header(*LAST_PROGRESS)}{LAST_PROGRESS[0]} {_num(snap.last_progress)}\n")
        creds = snap.credentials
        with self._lock:
            last = self._last
            if last is None or len(last[0]) != len(creds) or any(
                    a is not b for a, b in zip(last[0], creds, strict=True)):
                last = self._last = (list(creds), self._credentials(creds).encode("utf-8"))
        return head.encode("utf-8") + last[1]

    def _credentials(self, creds: list[CredentialState]) -> str:
        lines = self._lines
        rows = []
        for cred in creds:
            key = (cred.policy, cred.store)
            kept = lines.get(key)
            if kept is None or kept[0] is not cred:
                kept = lines[key] = (cred, self._make(cred))
            rows.append(kept[1])
        if len(lines) > 2 * len(rows) + 16:  # policies that left the configuration
            keys = {(c.policy, c.store) for c in creds}
            for key in [k for k in lines if k not in keys]:
                del lines[key]
        out = []
        for i, (name, doc) in enumerate((CREDENTIAL_EXPIRY, CREDENTIAL_OK, CREDENTIAL_FAILURES)):
            out.append(_header(name, doc))
            out.extend(row[i] for row in rows)
        return "".join(out)

    @staticmethod
    def _make(cred: CredentialState) -> tuple[str, str, str]:
        label = f'{{policy="{_escape(cred.policy)}",store="{_escape(cred.store)}"}} '
        expiry = "" if cred.expires_at is None else f"{CREDENTIAL_EXPIRY[0]}{label}{_num(_ts(cred.expires_at))}\n"
        return (expiry, f"{CREDENTIAL_OK[0]}{label}{_num(int(cred.ok))}\n",
                f"{CREDENTIAL_FAILURES[0]}{label}{_num(cred.failures)}\n")


class _Series:
    """One policy's series of a :class:`PolicyCounter`: a count per result, and their lines."""

    __slots__ = ("counts", "lines")

    def __init__(self, width: int) -> None:
        self.counts = [0.0] * width
        #: its lines, None until made again after a change
        self.lines: str | None = None


class _PolicyChild:
    __slots__ = ("_counter", "_policy", "_index")

    def __init__(self, counter: PolicyCounter, policy: str, index: int) -> None:
        self._counter, self._policy, self._index = counter, policy, index

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up: inc() of a negative amount")
        self._counter._change(self._policy, self._index, amount, add=True)

    def set(self, value: float) -> None:
        if not self._counter.settable:
            raise ValueError("a counter only goes up: set() it with inc()")
        self._counter._change(self._policy, self._index, value, add=False)


class PolicyCounter(Collector):
    """A counter labelled by policy (and ``result``, of fixed values, where ``results`` are given),
    used as prometheus_client's labelled Counter is (``labels(policy, result).inc()``), whose series
    a policy has at 0 from its load on (:meth:`add`) and which :meth:`text` writes at a cost that
    does not grow with the policies whose counts did not change.

    At 0 from the load: Prometheus' increase() takes a series' first sample as its start, so a series
    that appears at 1 (a labelled Counter makes it at its first inc()) increased by 0.
    RotatorRevocationFailed missed a process's first orphan, and RotatorRotationFailing a policy's
    first success (it kept firing after the policy recovered) and first failures on several replicas.
    As text: prometheus_client writes ~20 µs a series at every scrape, and five series a policy took
    the scrape of 10,000 idle policies from ~30 ms to over a second (issue 12). The registry (where
    it is registered too) still gets it as a counter family, for its readers. No ``_created`` series:
    nothing reads them, and in the text format each is one more series per policy for Prometheus.
    """

    #: a gauge's value may be set (PolicyGauge); a counter's only goes up
    settable = False

    def __init__(self, name: str, doc: str, results: tuple[str, ...] = (), *, at_load: bool = True) -> None:
        self._name, self._doc, self._results = name, doc, results
        #: False: a policy's series appear at their first change, not at its load (:meth:`add`): for
        #: series no alert reads with increase(), which would add a line per policy to every scrape
        self._at_load = at_load
        self._lock = threading.Lock()
        #: policy -> its series, in the order the policies came
        self._series: dict[str, _Series] = {}
        #: what :meth:`text` wrote last, until a series changes
        self._text: bytes | None = None

    def add(self, policies: Iterable[str]) -> None:
        """Give each policy its series, at 0 (a policy that has them keeps its counts); nothing for a
        metric made with ``at_load=False``."""
        if self._at_load:
            self._create(policies)

    def _create(self, policies: Iterable[str]) -> None:
        width = len(self._results) or 1
        with self._lock:
            for policy in policies:
                if policy not in self._series:
                    self._series[policy] = _Series(width)
                    self._text = None

    def labels(self, policy: str, *result: str) -> _PolicyChild:
        """The series of ``policy`` (and ``result``); a policy not added yet gets every one of its series, at 0."""
        if len(result) != (1 if self._results else 0):
            raise ValueError(f"{self._name}: labels() takes the policy{' and a result' if self._results else ''}")
        if result and result[0] not in self._results:
            raise ValueError(f"{self._name}: no result {result[0]!r} (one of {', '.join(self._results)})")
        index = self._results.index(result[0]) if result else 0
        self._create((policy,))
        return _PolicyChild(self, policy, index)

    def _change(self, policy: str, index: int, value: float, *, add: bool) -> None:
        with self._lock:
            series = self._series.get(policy)
            if series is None:  # forgotten since labels(): counted again from 0, as a new series
                series = self._series[policy] = _Series(len(self._results) or 1)
            series.counts[index] = series.counts[index] + value if add else value
            series.lines = None
            self._text = None

    def forget(self, policy: str) -> None:
        """Drop the series of a policy that left the configuration."""
        with self._lock:
            if self._series.pop(policy, None) is not None:
                self._text = None

    def collect(self) -> Iterator[Metric]:
        """The family, as prometheus_client's Counter (or Gauge) gives it to the registry."""
        kind = GaugeMetricFamily if self.settable else CounterMetricFamily
        family = kind(self._name, self._doc, labels=["policy", *(["result"] if self._results else [])])
        with self._lock:
            rows = [(policy, list(series.counts)) for policy, series in self._series.items()]
        for policy, counts in rows:
            for result, count in zip(self._results or ("",), counts, strict=True):
                family.add_metric([policy, result] if self._results else [policy], count)
        yield family

    def text(self) -> bytes:
        """:meth:`collect`'s family in the text format, as generate_latest writes it, made again only
        for the policies whose counts changed."""
        with self._lock:
            if self._text is None:
                name = self._exported
                rows = [f"# HELP {name} {_help(self._doc)}\n# TYPE {name} {'gauge' if self.settable else 'counter'}\n"]
                for policy, series in self._series.items():
                    if series.lines is None:
                        series.lines = self._make(policy, series)
                    rows.append(series.lines)
                self._text = "".join(rows).encode("utf-8")
            return self._text

    @property
    def _exported(self) -> str:
        return self._name if self.settable else f"{self._name}_total"

    def _make(self, policy: str, series: _Series) -> str:
        label = f'{self._exported}{{policy="{_escape(policy)}"'
        if not self._results:
            return f"{label}}} {_num(series.counts[0])}\n"
        return "".join(f'{label},result="{_escape(result)}"}} {_num(count)}\n'
                       for result, count in zip(self._results, series.counts, strict=True))


class PolicyGauge(PolicyCounter):
    """A gauge labelled by policy, as :class:`PolicyCounter` is a counter (``labels(policy).set(v)``),
    at 0 from the policy's load."""

    settable = True


class Metrics:
    """Every metric of one daemon, in its own registry (so tests can run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        #: every collector but the PolicyCounters: what exposition() writes through prometheus_client
        r = self._written = CollectorRegistry()
        self.registry.register(r)
        # Not by policy: a histogram is 15 series, and 10,000 policies' took a scrape to 2.6 s and 15 MB
        # once each had run (issue 12); a policy's runs are in its audit lines (duration_s) and logs.
        self.run_duration = Histogram("rotator_run_duration_seconds", "Duration of rotation runs (all policies)",
                                      buckets=RUN_BUCKETS, registry=r)
        self.schedule_delay = Histogram("rotator_schedule_delay_seconds",
                                        "How long after its planned time a rotation started",
                                        buckets=DELAY_BUCKETS, registry=r)
        self.notifications = Counter("rotator_notifications", "Webhook and hook deliveries by channel and result",
                                     ["channel", "result"], registry=r)
        for channel in NOTIFICATION_CHANNELS:  # increase() of a series that appears at 1 is 0 (see PolicyCounter)
            for result in NOTIFICATION_RESULTS:
                self.notifications.labels(channel, result)
        self.reload_failures = Counter("rotator_config_reload_failures", "Reloads rejected because the new "
                                       "policy file was invalid; the running configuration was kept", registry=r)
        self.reload_ok = Gauge("rotator_config_last_reload_successful",
                               "1 if the last (re)load of the policy file succeeded", registry=r)
        self.reload_time = Gauge("rotator_config_last_reload_success_timestamp_seconds",
                                 "When the policy file was last loaded successfully", registry=r)
        self.policies = Gauge("rotator_policies", "Policies in the running configuration", registry=r)
        self.removed_policy_work = Gauge("rotator_removed_policies_with_work",
                                         "Policies not in the policy file whose unfinished work (open runs, pending "
                                         "or failed revocations, tag searches not ended) the journal holds: nothing "
                                         "does it", registry=r)
        Info("rotator_build", "rotator's version", registry=r).info({"version": __version__})
        self._clock_offset = _ClockOffsetCollector()
        r.register(self._clock_offset)
        self._state_text: tuple[Callable[[], StateSnapshot], StateText] | None = None
        self._live_text: tuple[Callable[[], LiveSnapshot], LiveText] | None = None
        # [daemon] inventory_interval (rotator/observe/inventory.py): ``issuer`` is the cluster or instance
        # (Target.label: the adapter type and the settings that name the place), however many policies use it.
        self.tokens = Gauge("rotator_tokens", "Tokens the issuer holds by class (managed, orphan, suspicious, "
                            "unmanaged, retired), revoked ones excluded, at the last inventory",
                            ["issuer", "class"], registry=r)
        self.tokens_flagged = Gauge("rotator_tokens_flagged", "Tokens by class and flag (no-expiry, "
                                    "expired-not-revoked, older-than-max-age) at the last inventory",
                                    ["issuer", "class", "flag"], registry=r)
        self.inventory_errors = Gauge("rotator_inventory_errors", "Issuers the last inventory could not list",
                                      registry=r)
        # Per issuer: one that could not be listed has no rotator_tokens series (zeros would read as
        # checked and clean, and resolve RotatorOrphanTokens), so this says which one went unchecked.
        self.inventory_issuer_errors = Gauge("rotator_inventory_issuer_errors", "1 when the last inventory could "
                                             "not list the issuer (or only in part), else 0", ["issuer"], registry=r)
        self.inventory_time = Gauge("rotator_inventory_last_run_timestamp_seconds",
                                    "When the last inventory finished", registry=r)
        # Labelled by policy, with a series each from the policy's load (add_policies), written as text.
        self.rotations = PolicyCounter("rotator_rotations", "Rotation runs by policy and result (success, failure, "
                                       "needs_attention, aborted: the run lost its lease)", ROTATION_RESULTS)
        # (once per token: Engine._discard reports each token it leaves valid once, by its id)
        self.orphans = PolicyCounter("rotator_orphans", "Tokens left valid that should have been revoked, "
                                     "each counted once (a revocation gave up, or a failed run's candidate or "
                                     "another token carrying its tag, or a token minted after its run lost its "
                                     "lease, could not be revoked)")
        # Also as cached text, but from their first change on, as before: no alert reads them with increase()
        self.misfires = PolicyCounter("rotator_schedule_misfires", "Rotations that started later than misfire_grace "
                                      "(they still run, once)", at_load=False)
        self.consecutive_failures = PolicyGauge("rotator_consecutive_failures",
                                                "Failed rotation runs in a row (0 after a success)", at_load=False)
        self.revocations = PolicyCounter("rotator_revocations", "Revocations of previous tokens by result "
                                         "(ok, retry, failed)", REVOCATION_RESULTS, at_load=False)
        for counter in self._per_policy:
            self.registry.register(counter)

    @property
    def _per_policy(self) -> tuple[PolicyCounter, ...]:
        return (self.rotations, self.orphans, self.misfires, self.consecutive_failures, self.revocations)

    def add_policies(self, policies: Iterable[str]) -> None:
        """Give the policies of the configuration just loaded their series that alerts read with
        increase(), at 0 (see :class:`PolicyCounter`); :meth:`forget` drops a removed one's."""
        names = list(policies)
        for counter in self._per_policy:
            counter.add(names)

    def watch_state(self, source: Callable[[], StateSnapshot]) -> None:
        """Export ``source()``'s state at every scrape of the registry."""
        self._written.register(_StateCollector(source))

    def watch_state_text(self, source: Callable[[], StateSnapshot]) -> None:
        """Export ``source()``'s state through :meth:`exposition` (:class:`StateText`), not the registry."""
        self._state_text = (source, StateText())

    def exposition(self) -> bytes:
        """The /metrics body: the registry (its PolicyCounters as their own text), then the metrics of
        :meth:`watch_state_text` and :meth:`watch_live_text`."""
        parts = [generate_latest(self._written), *(counter.text() for counter in self._per_policy)]
        if self._state_text is not None:
            source, text = self._state_text
            parts.extend(text.parts(source()))
        if self._live_text is not None:
            live, live_text = self._live_text
            parts.append(live_text.render(live()))
        return b"".join(parts)  # one copy of the whole (adding each part to the rest copied it once per part)

    def watch_live(self, source: Callable[[], LiveSnapshot]) -> None:
        """Export ``source()``'s watchdog and credentials at every scrape of the registry."""
        self._written.register(_LiveCollector(source))

    def watch_live_text(self, source: Callable[[], LiveSnapshot]) -> None:
        """Export ``source()``'s watchdog and credentials through :meth:`exposition` (:class:`LiveText`),
        not the registry."""
        self._live_text = (source, LiveText())

    def on_event(self, event: Mapping[str, Any]) -> None:
        """Count what the engine reports (an engine listener)."""
        step, result, policy = event.get("step"), event.get("result"), str(event.get("policy"))
        if step == "revoke_old" and result in REVOCATION_RESULTS:
            self.revocations.labels(policy, str(result)).inc()
        if (step, result) in ORPHAN_EVENTS:  # as the ``orphan`` webhook's
            self.orphans.labels(policy).inc()
        if (step, result) == ("rotate", "aborted"):  # the engine lost the lease (Engine._lease)
            self.rotations.labels(policy, "aborted").inc()

    def inventory(self, result: Any, at: datetime | None = None) -> None:
        """Export an :class:`rotator.observe.inventory.Inventory` (the last one replaces every series),
        taken at ``at`` (the daemon's clock; default: now). An issuer that could not be listed has no
        rotator_tokens series, and rotator_inventory_issuer_errors 1."""
        labels: Mapping[str, str] = getattr(result, "labels", {})
        tokens: dict[tuple[str, str], int] = {}
        for (target, cls), count in result.counts().items():
            key = (labels.get(target, target), cls)
            tokens[key] = tokens.get(key, 0) + count  # two targets of one place (bare ones) add up
        flagged: dict[tuple[str, str, str], int] = {}
        for (target, cls, flag), count in result.flag_counts().items():
            fkey = (labels.get(target, target), cls, flag)
            flagged[fkey] = flagged.get(fkey, 0) + count
        failing = {target for target, _ in result.errors}
        errors: dict[str, int] = {}
        for target in [*result.targets, *failing]:
            label = labels.get(target, target)
            errors[label] = max(errors.get(label, 0), int(target in failing))
        self.tokens.clear()
        self.tokens_flagged.clear()
        self.inventory_issuer_errors.clear()
        for (issuer, cls), count in tokens.items():
            self.tokens.labels(issuer, cls).set(count)
        for (issuer, cls, flag), count in flagged.items():
            self.tokens_flagged.labels(issuer, cls, flag).set(count)
        for issuer, failed in errors.items():
            self.inventory_issuer_errors.labels(issuer).set(failed)
        self.inventory_errors.set(len(result.errors))
        self.inventory_time.set((at or utcnow()).timestamp())

    def clock_offset(self, seconds: float | None) -> None:
        """Export the last measured offset of this host's clock (rotator/core/clock_offset.py); None:
        none measured (an SQLite journal), no sample."""
        self._clock_offset.value = seconds

    def notification(self, channel: str, result: str) -> None:
        self.notifications.labels(channel, result).inc()

    def forget(self, policy: str) -> None:
        """Drop the series of a policy that left the configuration."""
        for counter in self._per_policy:
            counter.forget(policy)
