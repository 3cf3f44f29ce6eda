"""The reads a rotation and the daemon make for one policy use an index that starts with the policy:
their cost follows that policy's rows, never the number of policies (issue 12). SQLite's plans.
The daemon's reads of every policy (Journal.overview at each sweep and at its start, last_successes of
the policies due) read what is current, never the history: both backends' plans, and SQLite's count of
the work done."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core import journal as journal_module
from rotator.core.errors import JournalError
from rotator.core.journal import Journal, RevocationState, RunRecord, RunState, open_journal, ts
from tests.core.test_audit_chain import raw
from tests.harness import vm_steps

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _journal_with_many_due_revocations(path: Path, policies: int = 300) -> sqlite3.Connection:
    """Every policy has a bootstrap run and a revocation that is due and pending (as during an issuer
    outage, or with a grant missing), so that a plan reading by state alone would read them all."""
    open_journal(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    due = ts(NOW - timedelta(hours=1))
    conn.executemany(
        "INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, new_token_id, published_at) "
        "VALUES (?, ?, 'bootstrap', 'done', ?, ?, ?, ?)",
        [(f"boot-{i}", f"p{i}", due, due, f"tok-{i}", due) for i in range(policies)])
    conn.executemany(
        "INSERT INTO revocations (policy, token_id, run_id, reason, due_at, state) VALUES (?, ?, ?, 'rotated', ?, ?)",
        [(f"p{i}", f"old-{i}", f"boot-{i}", due, RevocationState.PENDING) for i in range(policies)])
    conn.commit()
    return conn


def _searches(conn: sqlite3.Connection, sql: str, params: list[object]) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            if row[3].startswith(("SEARCH", "SCAN"))]


@pytest.mark.parametrize("analyzed", [False, True], ids=["as-written", "analyzed"])
def test_a_policys_reads_search_its_own_rows_whatever_other_policies_have_due(tmp_path: Path, analyzed: bool) -> None:
    """rotator never runs ANALYZE (a journal has no statistics); with them, the plans must hold too."""
    conn = _journal_with_many_due_revocations(tmp_path / "journal.db")
    if analyzed:
        conn.execute("ANALYZE")
    policy = "p7"
    preflight = [policy, policy, *RunState.OPEN, policy, RevocationState.PENDING, ts(NOW), ts(NOW), policy,
                 *RunState.SUCCESS, policy, RevocationState.DISMISSED]
    state = [policy, *RunState.SUCCESS, policy, *RunState.OPEN, policy, RevocationState.PENDING,
             RevocationState.FAILED]
    for name, sql, params in (("preflight", journal_module._PREFLIGHT, preflight),
                              ("policy_state", journal_module._POLICY_STATE, state)):
        searches = _searches(conn, sql, params)
        tables = [s for s in searches if " leases " in s or " runs " in s or " revocations " in s]
        assert len(tables) >= 3, (name, searches)
        for search in tables:
            assert search.startswith("SEARCH") and "(policy=?" in search, (name, search)
    plan = " ".join(_searches(conn, journal_module._PREFLIGHT, preflight))
    assert "revocations_policy_state_due (policy=? AND state=? AND due_at<?)" in plan, plan
    assert "revocations_policy_state_due (policy=? AND state=?)" in plan, plan  # the dismissed ones


def test_the_preflight_finds_the_due_revocation_of_its_policy_among_many(tmp_path: Path) -> None:
    _journal_with_many_due_revocations(tmp_path / "journal.db").close()
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    try:
        seen = journal.preflight("p7", NOW)
        assert [(r.policy, r.token_id) for r in seen.due] == [("p7", "old-7")]
        assert [r.run_id for r in seen.claims["old-7"]] == [] and seen.last_success == "boot-7"
    finally:
        journal.close()


# ----------------------------------------------------- the daemon's sweep follows what is current, not history
SINCE = NOW - timedelta(hours=2)  # the sweep's watermark


def _history_rows(policies: int, history: int) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """``history`` finished runs spread over the policies, each with its done revocation, all published
    before SINCE; then what is current, the same whatever the history: each policy's run published a
    day ago, p1 published again an hour ago (after SINCE), p2's rotation open, p3's old token due."""
    runs: list[tuple[object, ...]] = []
    revs: list[tuple[object, ...]] = []
    start = NOW - timedelta(days=400)
    for i in range(history):
        at = ts(start + timedelta(minutes=5 * i))
        policy = f"p{i % policies}"
        runs.append((f"h{i:08d}", policy, "rotate", RunState.DONE, at, at, f"old{i}", f"new{i}", at, at))
        revs.append((policy, f"old{i}", f"h{i:08d}", "superseded", at, RevocationState.DONE))
    day_ago, hour_ago = ts(NOW - timedelta(days=1)), ts(NOW - timedelta(hours=1))
    for k in range(policies):
        runs.append((f"c{k}", f"p{k}", "rotate", RunState.PUBLISHED, day_ago, day_ago, f"prev{k}", f"cur{k}",
                     day_ago, day_ago))
    runs.append(("again1", "p1", "rotate", RunState.PUBLISHED, hour_ago, hour_ago, "cur1", "next1", hour_ago,
                 hour_ago))
    runs.append(("open2", "p2", "rotate", RunState.MINTING, hour_ago, hour_ago, "cur2", None, None, None))
    revs.append(("p3", "prev3", "c3", "superseded", hour_ago, RevocationState.PENDING))
    return runs, revs


def _fill(url: str, policies: int, history: int) -> None:
    open_journal(url).close()
    runs, revs = _history_rows(policies, history)
    run_sql = ("INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, old_token_id, new_token_id, "
               "new_expires_at, published_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    rev_sql = "INSERT INTO revocations (policy, token_id, run_id, reason, due_at, state) VALUES (?, ?, ?, ?, ?, ?)"
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):]) as conn:
            conn.executemany(run_sql, runs)
            conn.executemany(rev_sql, revs)
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg, pg.cursor() as cur:
        cur.executemany(run_sql.replace("?", "%s"), [[str(v) if v is not None else None for v in r] for r in runs])
        cur.executemany(rev_sql.replace("?", "%s"), [[str(v) for v in r] for r in revs])
        cur.execute("ANALYZE runs")  # (autovacuum would, once the table grew: the plans with statistics)
        cur.execute("ANALYZE revocations")


#: the daemon's reads of every policy: the sweep's, the start's (and a reload's), and the last publication
#: of the policies that look due, before each pass rotates them
DAEMON_READS: dict[str, Callable[[Journal], object]] = {
    "sweep": lambda journal: journal.overview(NOW, SINCE, tag_searches=True),
    "start": lambda journal: journal.overview(NOW, None, tag_searches=True),
    "due": lambda journal: journal.last_successes(["p1", "p2", "p3", "nothing-run"], NOW),
}


def _selects(journal: Journal, monkeypatch: pytest.MonkeyPatch,
             read: Callable[[Journal], object]) -> list[tuple[str, tuple[object, ...]]]:
    """The statements that read rows which ``read`` executes, with their parameters."""
    seen: list[tuple[str, tuple[object, ...]]] = []
    execute = journal_module._Cursor.execute

    def recording(self: journal_module._Cursor, sql: str, params: Sequence[object] = ()) -> journal_module._Cursor:
        seen.append((sql, tuple(params)))
        return execute(self, sql, params)

    with monkeypatch.context() as patch:
        patch.setattr(journal_module._Cursor, "execute", recording)
        read(journal)
    return [(sql, params) for sql, params in seen if sql.lstrip().upper().startswith(("SELECT", "WITH"))]


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    return str(request.getfixturevalue("pg_url"))


#: the tables of the history, and their aliases in the daemon's reads
_HISTORY = ("runs", "revocations", "r", "n", "l")
#: SQLite's scans of them that read what is current alone: a partial index's rows
_CURRENT_ONLY = ("SCAN runs USING INDEX runs_open", "SCAN revocations USING INDEX revocations_unfinished",
                 "SCAN runs USING INDEX runs_policy_tag_search")


def _full_scans(journal: Journal, sql: str, params: tuple[object, ...]) -> list[str]:
    """The full reads of runs or revocations in ``sql``'s plan (a SCAN of SQLite, a Seq Scan of PostgreSQL)."""
    with journal._tx() as cur:
        if journal.backend == "sqlite":
            plan = [str(row[3]) for row in cur.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()]
            # (a scan of leases reads one row a policy, and one of a common table expression its rows)
            return [line for line in plan if line.startswith("SCAN") and line.split()[1] in _HISTORY
                    and line not in _CURRENT_ONLY]
        [[document]] = cur.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchall()
    scans: list[str] = []
    nodes = [document[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in ("runs", "revocations"):
            scans.append(f"Seq Scan on {node['Relation Name']}")
        nodes += node.get("Plans", [])
    return scans


@pytest.mark.parametrize(("backend", "analyzed"), [("sqlite", False), ("sqlite", True), ("postgresql", True)],
                         ids=["sqlite-as-written", "sqlite-analyzed", "postgresql"])
def test_the_daemons_reads_of_every_policy_read_no_whole_table_of_history(
        backend: str, analyzed: bool, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The sweep: the open runs through the partial index runs_open, the publications since through
    runs_published, the unfinished revocations through an index of their state (partial: ANALYZE's
    statistics, averaging few states over many rows, made SQLite read every revocation instead); the
    start and the due policies: each policy's last publication by one seek. Without them SQLite read
    every run twice a sweep and once at the start (issue 12), and PostgreSQL too.

    PostgreSQL is given 100k runs: at 20k its planner reads the table whole for the start's read (a
    hash join; it guesses how many policies the journal has), and seeks once the history grows."""
    # PostgreSQL's planner always has statistics (autovacuum analyzes a table that grew): one variant.
    journal_url = (f"sqlite:///{tmp_path / 'journal.db'}" if backend == "sqlite"
                   else str(request.getfixturevalue("pg_url")))  # fmt: skip
    _fill(journal_url, policies=1000, history=100_000 if journal_url.startswith("postgresql") else 20_000)
    journal = open_journal(journal_url)
    try:
        if analyzed and journal.backend == "sqlite":
            with journal._tx() as cur:
                cur.execute("ANALYZE")
        for read, call in DAEMON_READS.items():
            statements = _selects(journal, monkeypatch, call)
            assert len(statements) == (1 if read == "due" else 5), (read, statements)
            for sql, params in statements:
                assert _full_scans(journal, sql, params) == [], (read, sql)
    finally:
        journal.close()


@pytest.mark.parametrize("read", DAEMON_READS)
def test_the_daemons_reads_of_every_policy_cost_the_same_with_20k_runs_of_history(tmp_path: Path, read: str) -> None:
    """SQLite's VM steps (a count of the work done, unlike a time) of each read: what is current is the
    same in both journals, so is the work. The sweep's was 1,400 steps with no history and 281,400 with
    20k runs (100 policies); the start's 5,600 and 405,600."""
    steps = {}
    for history in (0, 20_000):
        url = f"sqlite:///{tmp_path / f'journal-{history}.db'}"
        _fill(url, policies=20, history=history)
        journal = open_journal(url)
        try:
            DAEMON_READS[read](journal)  # (its statements prepared, as in a daemon's every sweep)
            steps[history] = vm_steps(journal, lambda: DAEMON_READS[read](journal))  # noqa: B023 (called here)
        finally:
            journal.close()
    assert steps[20_000] == steps[0], steps


def test_the_daemons_reads_find_each_policys_newest_success(journal_url: str) -> None:
    """Against the rows themselves: the sweep reads the last publication of the policies that published
    since, the start every policy's, the due policies' theirs: the newest success, a published run newer
    than a done one; a failed run with a publication time (edited by hand) or an open run never counts;
    of two successes published at the same time, either."""
    _fill(journal_url, policies=6, history=60)
    journal = open_journal(journal_url)
    try:
        late, newer = ts(NOW - timedelta(minutes=30)), ts(NOW - timedelta(minutes=10))
        insert = ("INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, new_token_id, published_at) "
                  "VALUES (?, ?, 'rotate', ?, ?, ?, ?, ?)")
        with journal._tx() as cur:
            for run_id, policy, state, at in (("p4-done", "p4", "done", late), ("p4-failed", "p4", "failed", newer),
                                              ("p5-a", "p5", "done", late), ("p5-b", "p5", "published", late),
                                              ("q-open", "q", "minting", newer)):
                cur.execute(insert, (run_id, policy, state, at, at, f"t-{run_id}", at))
        with raw(journal_url) as sql:
            rows = sql("SELECT policy, run_id, state, published_at FROM runs")
        newest: dict[str, str] = {}
        for policy, _run_id, state, published in rows:
            if state in RunState.SUCCESS and published is not None and published > newest.get(policy, ""):
                newest[policy] = published
        acceptable = {policy: {r for p, r, s, at in rows if p == policy and s in RunState.SUCCESS and at == top}
                      for policy, top in newest.items()}
        assert acceptable["p4"] == {"p4-done"} and acceptable["p5"] == {"p5-a", "p5-b"} and "q" not in acceptable

        def check(found: dict[str, RunRecord], policies: set[str]) -> None:
            assert set(found) == policies, (sorted(found), sorted(policies))
            for policy, run in found.items():
                assert run.run_id in acceptable[policy], (policy, run.run_id, acceptable[policy])
                assert run.published_at is not None and ts(run.published_at) == newest[policy]
                assert run.new_token_id == f"t-{run.run_id}" or not run.run_id.startswith(("p4", "p5"))

        check(journal.overview(NOW, None).last, set(newest))
        check(journal.overview(NOW, SINCE).last, {"p1", "p4", "p5"})
        check(journal.overview(NOW, NOW - timedelta(days=2)).last, set(newest))
        check(journal.last_successes(["p0", "p4", "p5", "q", "nothing-run"], NOW), {"p0", "p4", "p5"})
        check(journal.last_successes([], NOW), set())
    finally:
        journal.close()


def test_an_existing_journal_gains_the_sweeps_indexes_on_upgrade(journal_url: str) -> None:
    """A journal of schema 8 is given runs_open, runs_published and revocations_unfinished by the first
    open that may write; a read-only open refuses it until then (it never upgrades)."""
    journal = open_journal(journal_url)
    journal.close()
    indexes = ("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs'"
               if journal.backend == "sqlite" else
               "SELECT indexname FROM pg_indexes WHERE tablename = 'runs' AND schemaname = current_schema()")
    with raw(journal_url) as sql:
        assert {"runs_open", "runs_published"} <= {row[0] for row in sql(indexes)}
        sql("DROP INDEX runs_open")
        sql("DROP INDEX runs_published")
        sql("DROP INDEX revocations_unfinished")
        sql("ALTER TABLE runs DROP COLUMN issuer_target")  # (schema 10's)
        sql("DELETE FROM schema_version WHERE version >= 9")
    with pytest.raises(JournalError, match="schema version 8, older than this rotator's"):
        open_journal(journal_url, read_only=True)
    open_journal(journal_url).close()
    with raw(journal_url) as sql:
        assert {"runs_open", "runs_published"} <= {row[0] for row in sql(indexes)}
        assert "revocations_unfinished" in {row[0] for row in sql(indexes.replace("'runs'", "'revocations'"))}
        assert sql("SELECT MAX(version) FROM schema_version") == [(len(journal_module._MIGRATIONS),)]
        sql("DELETE FROM schema_version WHERE version >= 9")  # its indexes kept: migrating again is harmless
        sql("ALTER TABLE runs DROP COLUMN issuer_target")  # (schema 10 adds it again)
    open_journal(journal_url).close()
    open_journal(journal_url, read_only=True).close()


def test_the_partial_indexes_state_what_the_overview_reads() -> None:
    """A planner uses a partial index only for a query that states its predicate: the overview's open
    states and runs_open's, its unfinished revocation states and revocations_unfinished's, must be the
    same, word for word. A new open state needs a migration that makes the index anew with it (else the
    overview reads every run again)."""
    assert set(RunState.OPEN) == {"planned", "minting", "minted", "verified", "publishing", "revoking_new"}
    migration = str(journal_module._MIGRATIONS[8])
    assert f"runs_open ON runs (policy)\n        WHERE {journal_module._OPEN_STATES};" in migration
    assert f"revocations_unfinished ON revocations (policy) WHERE {journal_module._UNFINISHED_STATES}" in migration
