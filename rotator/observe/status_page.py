"""The daemon's status page: ``/`` (HTML) and ``/status.json``, on the /metrics listener.

Per policy: the current token id, its age against ``max_age`` (a bar), the next due time, the last
result, pending revocations and recent failures; the last inventory's counts when the daemon runs
one. Server-rendered, one self-contained page (inline CSS, no script, no external asset) that
reloads itself (meta refresh). Never a token value: the journal holds none.

The journal is read at most once per :data:`CACHE_S` whatever the request rate: every request
within that time gets the same snapshot. No request waits for a read that another one started (a
slow journal would otherwise park one HTTP thread per request, without bound): it gets the last
read's outcome at once (the previous snapshot, or a 503 if that read failed; before the first read ends,
a 503 after at most :data:`WAIT_S`). A read that fails is cached too: for :data:`CACHE_S` every
request gets a 503 without reading, and the failure is logged once per read, not per request.

Text that servers or people wrote (a run's or a revocation's last error) is shown with anything
token-shaped masked, as `rotator report` shows it: the page has no authentication.

A policy whose last rotation in this daemon stopped where only a person can decide needs attention
on the page, with that rotation's error among its problems, until a rotation succeeds: one that
stopped before its run was journaled (the stores disagree) is known to the daemon only.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from rotator.config.inline_secrets import mask_tokens
from rotator.config.policy_types import Policy
from rotator.config.schedule import NoNextDue, format_duration
from rotator.config.timefmt import rfc3339_micro
from rotator.core.journal import Journal
from rotator.observe.compliance import DEFAULT_SLACK, Compliance, policy_compliance
from rotator.observe.health import Unavailable
from rotator.observe.status import policy_status
from rotator.observe.untrusted_text import masked

__all__ = ["CACHE_S", "REFRESH_S", "WAIT_S", "StatusPage"]

logger = logging.getLogger("rotator.health")

#: seconds one journal snapshot (or one failed read) serves every request
CACHE_S = 5.0
#: before the first snapshot, how long a request waits for a read in progress before its 503
WAIT_S = 0.25
#: the page reloads itself this often (seconds)
REFRESH_S = 30
#: failures shown per policy
RECENT_FAILURES = 5
_FAILED = ("failed", "error", "partial", "retry")


class StatusPage:
    def __init__(
        self,
        policies: Callable[[], Sequence[Policy]],
        journal: Callable[[], Journal],
        now: Callable[[], datetime],
        inventory: Callable[[], Any] = lambda: None,
        cache_s: float = CACHE_S,
        attention: Callable[[str], str | None] = lambda _name: None,
    ) -> None:
        self._policies = policies
        self._journal = journal
        self._now = now
        self._inventory = inventory
        #: the daemon's reason a policy needs a person that the journal does not hold (Daemon.attention)
        self._attention = attention
        self._cache_s = cache_s
        #: held by the one request that reads the journal; the others never wait long for it
        self._lock = threading.Lock()
        #: (time.monotonic() when the last read ended, its snapshot, or None if it failed)
        self._cached: tuple[float, dict[str, Any] | None] | None = None
        #: how many times the journal was read (tests check the cache bounds it)
        self.reads = 0

    def data(self) -> dict[str, Any]:
        """The current snapshot; :class:`~rotator.observe.health.Unavailable` (a 503) when the last read
        failed, or when the first read is still going after :data:`WAIT_S`."""
        cached = self._cached
        if cached is None or time.monotonic() - cached[0] >= self._cache_s:
            # One request reads; the others get the previous outcome at once rather than queue behind it.
            if self._lock.acquire(timeout=WAIT_S if cached is None else 0):
                try:
                    cached = self._refresh()
                finally:
                    self._lock.release()
            elif cached is None:
                raise Unavailable("the status page is reading the journal; try again in a moment")
        if cached[1] is None:
            raise Unavailable("the status page cannot read the journal; see the daemon's log")
        return cached[1]

    def _refresh(self) -> tuple[float, dict[str, Any] | None]:
        """Read the journal, unless a request that held the lock before did it meanwhile (lock held)."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self._cache_s:
            return cached
        data: dict[str, Any] | None = None
        try:
            data = self._read()
        except Exception as exc:
            if cached is None or cached[1] is not None:
                logger.exception("status page: cannot read the journal; / and /status.json answer 503 until a "
                                 "read succeeds (one read per %gs)", self._cache_s)
            else:  # failing still: once per period, without the traceback again
                logger.error("status page: still cannot read the journal: %s: %s", type(exc).__name__, exc)
        # stamped when the read ends: a slow journal is read at most once per period, not back to back
        self._cached = (time.monotonic(), data)
        return self._cached

    def json_bytes(self) -> bytes:
        return (json.dumps(self.data(), indent=2, sort_keys=True) + "\n").encode("utf-8")

    def html_bytes(self) -> bytes:
        return render_html(self.data()).encode("utf-8")

    def _read(self) -> dict[str, Any]:
        self.reads += 1
        now = self._now()
        journal = self._journal()
        policies = []
        for policy in self._policies():
            try:
                row = _scheduled(policy, journal, now)
            except NoNextDue as exc:  # one policy's schedule must not take the whole page down
                row = _unschedulable(policy, journal, now, exc)
            pending = journal.revocations(policy.name, "pending")
            failures = [e for e in journal.events(policy.name, limit=200) if e.get("result") in _FAILED]
            row.update({
                "pending_revocations": [
                    {"token_id": r.token_id, "due_at": _iso(r.due_at), "attempts": r.attempts,
                     "last_error": masked(r.last_error)} for r in pending
                ],
                "recent_failures": [
                    {"at": e["at"], "run_id": e.get("run_id"), "step": e["step"], "result": e["result"],
                     "error": masked(e.get("error"))} for e in failures[:RECENT_FAILURES]
                ],
            })  # fmt: skip
            attention = self._attention(policy.name)
            if attention is not None:
                # A rotation that stopped in PLAN (the stores disagree) journaled no run: the journal's
                # last run still reads "done", and only the daemon knows.
                row["needs_attention"] = True
                problem = f"its last rotation stopped where only a person can decide: {attention}"
                row["problems"] = [*row["problems"], masked(problem)]
            policies.append(row)
        return {"generated_at": _iso(now), "policies": policies, "inventory": _inventory(self._inventory())}


def _scheduled(policy: Policy, journal: Journal, now: datetime) -> dict[str, Any]:
    """A policy's row from its status (rotator/observe/status.py); NoNextDue if its schedule never fires again."""
    status = policy_status(policy, journal, now, DEFAULT_SLACK)
    return _row(policy, status.compliance, now, current_token_id=status.current_token_id,
                rotated_at=status.rotated_at, expires_at=status.expires_at, since=status.since,
                next_due=status.next_due, due=status.due, last_result=status.last_run_state,
                last_error=status.last_run_error, needs_attention=status.needs_attention,
                expires_first=status.expires_first, reason=status.reason(), extra_problems=())


def _unschedulable(policy: Policy, journal: Journal, now: datetime, exc: NoNextDue) -> dict[str, Any]:
    """The row of a policy whose schedule never fires again (a cron whose years have passed): what
    the journal says of its token, no next due time, and the problem that needs a person, as
    `rotator status` reports it after the other policies' rows."""
    last = journal.last_success(policy.name)
    latest = journal.latest_run(policy.name)
    comp = policy_compliance(policy, journal, now, DEFAULT_SLACK)
    problem = f"its schedule has no next due time: {exc}; change `schedule` in the policy file"
    return _row(policy, comp, now, current_token_id=comp.current_token_id, rotated_at=comp.published_at,
                expires_at=last.new_expires_at if last else None, since=comp.since, next_due=None, due=False,
                last_result=latest.state if latest else None, last_error=latest.error if latest else None,
                needs_attention=True, expires_first=False, reason=problem, extra_problems=(problem,))


def _row(
    policy: Policy, comp: Compliance | None, now: datetime, *, current_token_id: str | None,
    rotated_at: datetime | None, expires_at: datetime | None, since: datetime | None, next_due: datetime | None,
    due: bool, last_result: str | None, last_error: str | None, needs_attention: bool, expires_first: bool,
    reason: str, extra_problems: Sequence[str],
) -> dict[str, Any]:
    age = (now - since).total_seconds() if since else None
    max_age = comp.max_age.total_seconds() if comp else None
    return {
        "policy": policy.name, "enabled": policy.enabled,
        "current_token_id": current_token_id,
        "rotated_at": _iso(rotated_at), "expires_at": _iso(expires_at),
        "age_s": int(age) if age is not None else None,
        "max_age_s": int(max_age) if max_age is not None else None,
        "age_ratio": round(age / max_age, 4) if age is not None and max_age else None,
        "compliant": comp.compliant if comp else None,
        "problems": [*(comp.problems() if comp else []), *extra_problems],
        "next_due": _iso(next_due), "due": due,
        "last_result": last_result, "last_error": masked(last_error),
        "needs_attention": needs_attention, "expires_before_rotation": expires_first,
        "reason": reason,
    }  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return None if value is None else rfc3339_micro(value)


def _inventory(result: Any) -> dict[str, Any] | None:
    if result is None:
        return None
    counts: dict[str, dict[str, int]] = {}
    for (target, cls), count in sorted(result.counts().items()):
        counts.setdefault(target, {})[cls] = count
    return {"targets": counts, "errors": [mask_tokens(f"{t}: {m}") for t, m in result.errors]}


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;background:#f6f8fa;margin:0}
header{background:#1b1f24;color:#fff;padding:.8rem 1.5rem;display:flex;justify-content:space-between;
 align-items:baseline}
header h1{font-size:1.2rem;margin:0}header span{color:#c9d1d9;font-size:12px}
main{padding:1rem 1.5rem;max-width:1200px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.8rem 1rem;margin:0 0 1rem}
.card h2{font-size:1.05rem;margin:0 0 .5rem;display:flex;gap:.6rem;align-items:center}
.pill{font-size:11px;font-weight:600;border-radius:10px;padding:1px 8px;color:#fff}
.ok{background:#1a7f37}.warn{background:#9a6700}.bad{background:#cf222e}.off{background:#6e7781}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}dt{color:#57606a}dd{margin:0}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
.bar{position:relative;height:14px;background:#eaeef2;border-radius:7px;overflow:hidden;max-width:420px}
.bar>div{height:100%}.bar-label{font-size:12px;color:#57606a}
table{border-collapse:collapse;font-size:12.5px;margin:.3rem 0}
th,td{border:1px solid #d0d7de;padding:2px 6px;text-align:left}
th{background:#f6f8fa}.muted{color:#57606a}
@media print{header{background:none;color:#000}body{background:#fff}}
"""


def render_html(data: dict[str, Any]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_S}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>rotator status</title><style>{_CSS}</style></head><body>",
        f"<header><h1>rotator status</h1><span>{e(_short(data['generated_at']))} &middot; refreshes every "
        f"{REFRESH_S}s &middot; <a style=\"color:#c9d1d9\" href=\"status.json\">status.json</a></span></header><main>",
    ]  # fmt: skip
    if not data["policies"]:
        parts.append('<div class="card muted">no policies configured</div>')
    for p in data["policies"]:
        parts.append(_policy_card(p))
    parts.append(_inventory_card(data.get("inventory")))
    parts.append('<p class="muted">Token ids only: rotator never shows a token value.</p></main></body></html>\n')
    return "\n".join(parts)


def _policy_card(p: dict[str, Any]) -> str:
    e = html.escape
    if not p["enabled"]:
        pill = ("off", "disabled")
    elif p.get("expires_before_rotation"):
        pill = ("bad", "expires before its next rotation")
    elif p["needs_attention"] or p["compliant"] is False:
        pill = ("bad", "needs attention" if p["needs_attention"] else "out of compliance")
    elif p["pending_revocations"] or p["due"]:
        pill = ("warn", "revocation pending" if p["pending_revocations"] else "due")
    else:
        pill = ("ok", "ok")
    rows = [
        ("current token id", f'<span class="mono">{e(p["current_token_id"] or "none")}</span>'),
        ("age / max_age", _bar(p)),
        ("next due", e(_short(p["next_due"])) + (" (due now)" if p["due"] else "")),
        ("last result", e(p["last_result"] or "-") + (f' <span class="muted">{e(p["last_error"])}</span>'
                                                     if p["last_error"] else "")),
        ("pending revocations", _table(("token id", "due", "attempts", "last error"),
                                       [(r["token_id"], _short(r["due_at"]), r["attempts"], r["last_error"])
                                        for r in p["pending_revocations"]])),
        ("recent failures", _table(("time", "run", "step", "result", "error"),
                                   [(_short(f["at"]), f["run_id"], f["step"], f["result"], f["error"])
                                    for f in p["recent_failures"]])),
    ]  # fmt: skip
    if p["problems"]:
        rows.append(("problems", "<br>".join(e(x) for x in p["problems"])))
    body = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (f'<section class="card" id="policy-{e(p["policy"])}"><h2>{e(p["policy"])} '
            f'<span class="pill {pill[0]}">{e(pill[1])}</span></h2><dl>{body}</dl></section>')  # fmt: skip


def _short(stamp: str | None) -> str:
    """``2026-03-01T12:00:00.123456Z`` as ``2026-03-01 12:00:00Z`` (the JSON keeps the full time)."""
    return "-" if not stamp else f"{stamp[:10]} {stamp[11:19]}Z"


def _bar(p: dict[str, Any]) -> str:
    ratio = p["age_ratio"]
    if ratio is None or p["age_s"] is None or p["max_age_s"] is None:
        return '<span class="muted">no token published</span>'
    width = max(1.0, min(100.0, ratio * 100))
    colour = "#1a7f37" if ratio < 0.75 else ("#bf8700" if ratio <= 1 else "#cf222e")
    label = (f"{format_duration(timedelta(seconds=p['age_s']))} of "
             f"{format_duration(timedelta(seconds=p['max_age_s']))} ({ratio * 100:.0f}%)")  # fmt: skip
    return (f'<div class="bar" role="meter" aria-valuenow="{ratio * 100:.0f}" aria-valuemin="0" aria-valuemax="100">'
            f'<div style="width:{width:.1f}%;background:{colour}"></div></div>'
            f'<span class="bar-label">{html.escape(label)}</span>')  # fmt: skip


def _inventory_card(inv: dict[str, Any] | None) -> str:
    if inv is None:
        return ('<section class="card" id="inventory"><h2>Inventory</h2><p class="muted">no inventory yet (set '
                "[daemon] inventory_interval to list every issuer's tokens)</p></section>")
    classes = sorted({c for counts in inv["targets"].values() for c in counts})
    rows = [(t, *[counts.get(c, 0) for c in classes]) for t, counts in inv["targets"].items()]
    errors = "".join(f'<p class="muted">{html.escape(x)}</p>' for x in inv["errors"])
    table = _table(("issuer", *classes), rows)
    return f'<section class="card" id="inventory"><h2>Inventory</h2>{table}{errors}</section>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return '<span class="muted">none</span>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('-' if c is None else str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"
