"""One Cloud Dedicated cluster, two policies: one rotates a database token through influxctl, the other
through the Management API. Both targets list every database token of the cluster (same ids: _ID_SPACES),
and their places are written apart (the issuer type is part of each): a server-made id speaks for its
token wherever it is listed, so neither policy's token is suspicious on the other's target (a regression
of the per-place check, which is for InfluxDB 3's chosen names)."""
from __future__ import annotations

from pathlib import Path

from rotator.core.contracts import TokenInfo
from rotator.core.journal import RunState
from tests.observe.test_inventory_trust import (
    MANAGED,
    NOW,
    _journal,
    _Lister,
    _listing,
    _policy,
    _run,
    policy_targets,
    take_inventory,
)

ACC, CL = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def test_one_cluster_listed_through_two_issuer_types_holds_no_finding(tmp_path: Path) -> None:
    db = _policy(tmp_path, "viactl", 'type = "influxctl-database"\ndatabase = "d"\n'
                 '[policy.issuer.auth]\nmethod = "mgmt_token"\ntoken = { file = "m" }\n'
                 f'[policy.issuer.profile]\nproduct = "dedicated"\nhost = "{CL}.a.influxdb.io"\n'
                 f'account_id = "{ACC}"\ncluster_id = "{CL}"\n'
                 '[policy.issuer.permissions]\nread = ["d"]\n')
    api = _policy(tmp_path, "viaapi", 'type = "management-api"\nproduct = "dedicated"\n'
                  f'account_id = "{ACC}"\ncluster_id = "{CL}"\ncluster_host = "https://{CL}.a.influxdb.io"\n'
                  'management_token = { file = "m" }\n'
                  '[[policy.issuer.permissions]]\naction = "read"\nresource = "d"\n'
                  '[policy.issuer.verify]\ndatabase = "d"\n')
    journal = _journal(tmp_path)
    _run(journal, "r0", "viactl", RunState.DONE, "aaaaaaaa-0000-0000-0000-000000000001", published=True)
    _run(journal, "r1", "viaapi", RunState.DONE, "bbbbbbbb-0000-0000-0000-000000000002", published=True)
    targets = policy_targets([db, api])
    listed = [TokenInfo("aaaaaaaa-0000-0000-0000-000000000001", "rotator:viactl:r0"),
              TokenInfo("bbbbbbbb-0000-0000-0000-000000000002", "rotator:viaapi:r1")]
    inv = take_inventory([_listing(t, *[_Lister(listed) for _ in t.listers]) for t in targets],
                         journal, [db, api], NOW)
    assert len(targets) == 2
    assert not inv.findings(), [(e.target, e.token_id, e.cls, e.reason) for e in inv.findings()]
    assert {(e.target, e.token_id): e.cls for e in inv.entries} == {
        (t.name, token.token_id): MANAGED for t in targets for token in listed}
