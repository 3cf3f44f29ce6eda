"""The scheduled revoke-expired run sweeps the orphans of rotations cancelled or abandoned (moto in
server mode, the fake influxctl; the scene of tests/runners/test_aws_lambda.py).

A token createSecret minted for a rotation that is then cancelled (``cancel-rotate-secret``, and its
AWSPENDING label removed, as AWS says to) was revoked only by the next createSecret's sweep: with
rotation turned off there is none, and the token stayed valid for its whole lifetime while every
scheduled run's compliance line said compliant (invariant: no orphan).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from rotator.config.policy_bundle import write_bundle
from rotator.core.errors import RotatorError, TransientError
from rotator.runners.lambda_rotation import handle
from tests.runners import test_aws_lambda
from tests.runners.test_aws_lambda import GRACE, STEPS, Scene

scene = test_aws_lambda.scene  # the fixture: a secret bootstrapped on moto, its policy, the fake influxctl

#: lambda_rotation._MAX_INVOCATION + revocation_rule.CLOCK_SLACK: a createSecret minting now may still
#: be storing its token that long (its issuer's clock being that much behind)
IN_FLIGHT = timedelta(minutes=30)


def _line(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    lines = [json.loads(x)["rotator_compliance"] for x in capsys.readouterr().out.splitlines()
             if x.startswith('{"rotator_compliance"')]  # fmt: skip
    (line,) = lines
    return line  # type: ignore[no-any-return]


def _cancelled(scene: Scene) -> tuple[str, str]:
    """A rotation whose createSecret stored its token, then cancelled as AWS documents: rotation turned
    off and AWSPENDING removed from its version. The version and the token's id."""
    version = scene.start()
    scene.step("createSecret", version)
    (minted,) = scene.active_minted()
    client = scene.client()
    client.cancel_rotate_secret(SecretId=scene.name)
    client.update_secret_version_stage(SecretId=scene.name, VersionStage="AWSPENDING", RemoveFromVersionId=version)
    assert version not in scene.stages() and not client.describe_secret(SecretId=scene.name).get("RotationEnabled")
    return version, str(minted["id"])


def test_the_token_of_a_cancelled_rotation_is_revoked_by_the_scheduled_run(scene, capsys, caplog):
    """The reviewer's reproduction: rotation off, no createSecret ever runs again; the scheduled run
    revokes the orphan (provably minted by this function for a version of this secret that has no label)
    and names it in the compliance line. The bootstrapped token, AWSCURRENT, is left alone."""
    version, orphan = _cancelled(scene)
    scene.clock.advance(timedelta(days=1))
    capsys.readouterr()
    report = scene.invoke({"action": "revoke-expired"})
    assert report["revoked"] == [orphan] and report["failed"] == []
    assert scene.fake.state.token_by_id(orphan)["revoked_at"] is not None
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is None, "AWSCURRENT: never"
    line = _line(capsys)
    assert line["orphan_token_ids"] == [orphan] and line["revoked_orphan_token_ids"] == [orphan]
    assert line["unrevoked_orphan_token_ids"] == [] and line["orphan_sweep"] == "done"
    assert line["compliant"] is True
    assert f"revoked token {orphan} of {scene.arn}, minted for version {version}" in caplog.text
    scene.check_invariants()

    scene.clock.advance(timedelta(hours=1))  # the next run finds nothing more
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == []
    line = _line(capsys)
    assert line["orphan_token_ids"] == [] and line["compliant"] is True
    scene.check_no_leak(caplog)


def test_an_orphan_whose_revocation_fails_is_reported_then_revoked_by_the_next_run(scene, capsys, caplog):
    """Fix and re-run: the revocation fails (the cluster is unavailable); the run fails, and its line
    says the orphan is left and not compliant. The next scheduled run revokes it, and the line is
    compliant again."""
    _, orphan = _cancelled(scene)
    scene.clock.advance(timedelta(days=1))
    scene.fake.state.add_fault("management revoke", "exit", times=-1,
                               message="Error: rpc error: code = Unavailable desc = connection refused")  # fmt: skip
    capsys.readouterr()
    with pytest.raises(TransientError, match=f"revoke-expired: 1 failure.*token {orphan}"):
        scene.invoke({"action": "revoke-expired"})
    assert scene.fake.state.token_by_id(orphan)["revoked_at"] is None
    line = _line(capsys)
    assert line["orphan_token_ids"] == [orphan] and line["revoked_orphan_token_ids"] == []
    assert line["unrevoked_orphans"] == 1 and line["unrevoked_orphan_token_ids"] == [orphan]
    assert line["compliant"] is False
    assert f"orphan token {orphan}: revocation failed, retried next time" in caplog.text

    scene.fake.state.clear_faults()
    scene.clock.advance(timedelta(hours=1))
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == [orphan]
    assert scene.fake.state.token_by_id(orphan)["revoked_at"] is not None
    line = _line(capsys)
    assert line["revoked_orphan_token_ids"] == [orphan] and line["unrevoked_orphan_token_ids"] == []
    assert line["compliant"] is True
    scene.check_invariants()
    scene.check_no_leak(caplog)


def test_a_version_still_under_rotation_keeps_its_token(scene, capsys):
    """A rotation stuck after createSecret keeps AWSPENDING on its version: under rotation, its token is
    no orphan (testSecret or finishSecret may still use it), however long it waits."""
    version = scene.start()
    scene.step("createSecret", version)
    (minted,) = scene.active_minted()
    scene.clock.advance(timedelta(days=10))
    capsys.readouterr()
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == []
    assert scene.fake.state.token_by_id(minted["id"])["revoked_at"] is None
    line = _line(capsys)
    assert line["orphan_token_ids"] == [] and line["compliant"] is True
    for step in STEPS[1:]:  # the rotation can still finish
        scene.step(step, version)
    assert scene.payload("AWSCURRENT")["token_id"] == minted["id"]


class _CancelledWhileStoring:
    """The real client; just before createSecret's PutSecretValue, the operator removes AWSPENDING from
    the rotation's version and the scheduled revoke-expired runs (another invocation, beside this one).
    What that run did, and whether the token createSecret is storing was still active after it."""

    def __init__(self, scene: Scene, version: str) -> None:
        self._scene, self._version, self._real = scene, version, scene.client()
        self.report: Any = None
        self.minted: list[str] = []
        self.active_after: bool | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def put_secret_value(self, **kw: Any) -> Any:
        self._real.update_secret_version_stage(SecretId=self._scene.name, VersionStage="AWSPENDING",
                                               RemoveFromVersionId=self._version)  # fmt: skip
        self.report = self._scene.invoke({"action": "revoke-expired"})
        self.minted = [t["id"] for t in self._scene.active_minted()]
        self.active_after = len(self.minted) == 1
        return self._real.put_secret_value(**kw)


def test_the_sweep_never_revokes_the_token_a_create_secret_is_still_storing(scene, capsys):
    """The version of a rotation carries AWSPENDING from before createSecret mints, but someone may remove
    the label while createSecret runs: the scheduled run then sees a version without a label and a token
    that createSecret's PutSecretValue, still to come, would store (and label AWSPENDING again). Such a
    token was minted within its invocation's time (at most 15 minutes, plus the issuer's clock slack): it
    waits that long, reported as waiting (compliant); once no createSecret can still store it, no orphan
    is left."""
    # moto gives every version the same CreatedDate, the time of the listing: each orphan then waits grace
    # after its successor's creation, as if one had been created after its own. A grace of 5 minutes, and
    # the function's clock 10 minutes ahead of the issuer's (within the slack): that wait is over, and
    # only the time a createSecret may still be storing its token holds the token back.
    config = scene.config.read_text()
    assert config.count('grace = "1h"') == 1
    scene.config.write_text(config.replace('grace = "1h"', 'grace = "5m"'))
    write_bundle(scene.config)
    scene.clock.advance(timedelta(minutes=10))
    version = scene.start()
    client = _CancelledWhileStoring(scene, version)
    capsys.readouterr()
    scene.step("createSecret", version, client=client)
    assert client.active_after is True, "the token createSecret was storing was revoked under it"
    assert client.report["revoked"] == [] and client.report["waiting"] == 1
    line = _line(capsys)
    assert line["orphan_token_ids"] == client.minted and line["waiting_orphan_token_ids"] == client.minted
    assert line["compliant"] is True

    # Whatever became of the PutSecretValue (moto refuses it once the label is gone, and createSecret
    # revokes its own token), nothing is left once no createSecret can still store the token.
    scene.clock.advance(IN_FLIGHT + timedelta(minutes=1))
    scene.invoke({"action": "revoke-expired"})
    assert scene.active_minted() == [] or "AWSPENDING" in scene.stages().get(version, [])
    scene.check_invariants()


def test_an_orphan_that_may_have_been_current_waits_for_grace_after_its_successor(scene, capsys):
    """A token whose version has lost every label and whose revocation record is gone (removed by hand)
    may have been AWSCURRENT: it is revoked no sooner than grace after the creation of the version
    created after its own, as a recorded revocation is (invariant: never before grace)."""
    scene.rotate()
    first = scene.payload("AWSCURRENT")["token_id"]
    scene.rotate()
    scene.rotate()  # the first rotation's version has no label now; its token's record waits for its grace
    scene.client().untag_resource(SecretId=scene.name, TagKeys=[f"rotator:revoke:{first}"])
    scene.clock.advance(IN_FLIGHT + timedelta(minutes=1))
    capsys.readouterr()
    report = scene.invoke({"action": "revoke-expired"})
    assert first not in report["revoked"]
    assert scene.fake.state.token_by_id(first)["revoked_at"] is None, "not inside its grace"
    line = _line(capsys)
    assert line["waiting_orphan_token_ids"] == [first] and line["compliant"] is True

    scene.clock.advance(GRACE)
    assert first in scene.invoke({"action": "revoke-expired"})["revoked"]
    assert scene.fake.state.token_by_id(first)["revoked_at"] is not None
    scene.check_invariants()


def test_a_token_a_labelled_version_holds_is_no_orphan(scene, capsys):
    """The value of a cancelled rotation's version put again by hand as AWSCURRENT (a restore): the token
    is AWSCURRENT's, though the version it was minted for has no label; it is kept."""
    version, minted = _cancelled(scene)
    value = scene.client().get_secret_value(SecretId=scene.name, VersionId=version)["SecretString"]
    scene.client().put_secret_value(SecretId=scene.name, SecretString=value, VersionStages=["AWSCURRENT"])
    scene.clock.advance(timedelta(days=1))
    capsys.readouterr()
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == []
    assert scene.fake.state.token_by_id(minted)["revoked_at"] is None
    assert _line(capsys)["orphan_token_ids"] == []


class _RunsOutAfterTheListing:
    """A Lambda context with plenty of time until the issuer has been called once (the sweep's listing),
    then 35 s: less than the 10 s kept for the results plus one influxctl call (2 x (10 s + 5 s))."""

    def __init__(self, scene: Scene) -> None:
        self.scene, self.calls = scene, len(scene.fake.state.calls())

    def get_remaining_time_in_millis(self) -> int:
        return 300_000 if len(self.scene.fake.state.calls()) == self.calls else 35_000


def test_an_orphan_the_run_has_no_time_left_for_waits_for_the_next_run(scene, capsys):
    """No revocation starts unless it can end before the time kept for the results: the orphan is left
    for the next run (deferred, reported unrevoked, not compliant, the invocation fails); the next run
    revokes it."""
    _, orphan = _cancelled(scene)
    scene.clock.advance(timedelta(days=1))
    capsys.readouterr()
    with pytest.raises(TransientError, match=r"1 due revocation\(s\) not tried"):
        handle({"action": "revoke-expired"}, _RunsOutAfterTheListing(scene), config_path=scene.config,
               client=scene.client(), clock=scene.clock)  # fmt: skip
    assert scene.fake.state.token_by_id(orphan)["revoked_at"] is None
    line = _line(capsys)
    assert line["unrevoked_orphan_token_ids"] == [orphan] and line["compliant"] is False
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == [orphan]
    assert _line(capsys)["compliant"] is True


class _Dated:
    """A Secrets Manager client whose ListSecretVersionIds gives each version the CreatedDate of the
    scene's clock when the test made it (moto answers the time of the call for every version): what AWS
    answers for versions created days apart. ``advance`` moves the issuer's clock with the scene's."""

    def __init__(self, scene: Scene) -> None:
        self._scene, self._real = scene, scene.client()
        self._start = scene.clock.now()
        (bootstrap_version,) = scene.stages()
        self.created: dict[str, datetime] = {bootstrap_version: self._start}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def list_secret_version_ids(self, **kw: Any) -> Any:
        answer = self._real.list_secret_version_ids(**kw)
        for version in answer.get("Versions", []):
            version["CreatedDate"] = self.created.get(version["VersionId"], version.get("CreatedDate"))
        return answer

    def advance(self, delta: timedelta) -> None:
        self._scene.clock.advance(delta)
        self._scene.fake.state.set(clock_offset_s=(self._scene.clock.now() - self._start).total_seconds())

    def rotate(self) -> str:
        version = self._scene.start()
        self.created[version] = self._scene.clock.now()
        for step in STEPS:
            self._scene.step(step, version, client=self)
        return version

    def edit_current(self, token_id: str) -> tuple[str, str]:
        """PutSecretValue of AWSCURRENT's payload under ``token_id``, made AWSCURRENT as AWS does it (moto
        would leave AWSCURRENT on both versions): the new version and the one it replaced."""
        scene, client = self._scene, self._real
        payload = scene.payload("AWSCURRENT")
        (replaced,) = [v for v, labels in scene.stages().items() if "AWSCURRENT" in labels]
        edited = client.put_secret_value(SecretId=scene.name, SecretString=json.dumps(dict(payload, token_id=token_id)),
                                         VersionStages=["EDIT"])["VersionId"]  # fmt: skip
        self.created[edited] = scene.clock.now()
        client.update_secret_version_stage(SecretId=scene.name, VersionStage="AWSCURRENT", MoveToVersionId=edited,
                                           RemoveFromVersionId=replaced)  # fmt: skip
        client.update_secret_version_stage(SecretId=scene.name, VersionStage="EDIT", RemoveFromVersionId=edited)
        return edited, replaced


def test_a_token_whose_value_a_labelled_version_holds_under_another_id_waits_for_its_grace(scene, capsys, caplog):
    """Someone with PutSecretValue wrote AWSCURRENT's value again under another team's token id, a day
    before the next rotation. That rotation records the revocation of the id it found (refused: not
    rotator's token) and leaves the real previous token R1 in AWSPREVIOUS under the other id, R1's own
    version without a label. Judged by the id alone, the sweep took R1 for an orphan and revoked it 40
    minutes into its 1 h grace, saying nothing of the edit. It is held (by its value, compared by digest):
    the mismatch is logged as an anomaly, without the value, and R1 is revoked once grace has passed since
    the edited version was superseded, as the superseded token."""
    dated = _Dated(scene)
    dated.advance(timedelta(seconds=1))
    first = dated.rotate()
    r1 = scene.payload("AWSCURRENT")["token_id"]

    dated.advance(timedelta(days=1))
    _, victim = scene.fake.state.add_token("team B's CI token")
    edited, _ = dated.edit_current(victim)
    assert scene.stages() == {edited: ["AWSCURRENT"], first: ["AWSPREVIOUS"]}

    dated.advance(timedelta(days=1))
    second = dated.rotate()
    assert scene.stages() == {second: ["AWSCURRENT"], edited: ["AWSPREVIOUS"]}, "R1's own version has no label"
    assert f"rotator:revoke:{victim}" in scene.tags()

    dated.advance(timedelta(minutes=40))
    capsys.readouterr()
    caplog.clear()
    report = scene.invoke({"action": "revoke-expired"}, client=dated)
    assert r1 not in report["revoked"]
    assert scene.fake.state.token_by_id(r1)["revoked_at"] is None, "revoked inside its grace"
    (logged,) = [r.getMessage() for r in caplog.records if "ANOMALY" in r.getMessage()]
    assert r1 in logged and victim in logged and f"version {edited} (AWSPREVIOUS)" in logged
    line = _line(capsys)
    assert line["waiting_orphan_token_ids"] == [r1] and line["compliant"] is True

    dated.advance(GRACE - timedelta(minutes=40) + timedelta(minutes=1))
    with pytest.raises(RotatorError, match=f"refused to revoke {victim}"):  # not rotator's: left to a person
        scene.invoke({"action": "revoke-expired"}, client=dated)
    assert scene.fake.state.token_by_id(r1)["revoked_at"] is not None, "left valid after its grace"
    assert scene.fake.state.token_by_id(victim)["revoked_at"] is None, "another team's token was revoked"
    assert f"rotator:attention:{victim}" in scene.tags()
    scene.check_no_leak(caplog)


def test_a_token_awscurrent_holds_under_another_id_is_never_revoked(scene, capsys, caplog):
    """The same edit, AWSPREVIOUS then taken off the token's own version: AWSCURRENT holds its value, under
    the other id only. By the id alone, the sweep revoked it as an orphan once grace had passed after the
    edit, leaving AWSCURRENT a dead token (invariant 1). It is kept for as long as AWSCURRENT holds it."""
    dated = _Dated(scene)
    dated.advance(timedelta(seconds=1))
    first = dated.rotate()
    r1 = scene.payload("AWSCURRENT")["token_id"]
    _, victim = scene.fake.state.add_token("team B's CI token")
    edited, _ = dated.edit_current(victim)
    scene.client().update_secret_version_stage(SecretId=scene.name, VersionStage="AWSPREVIOUS",
                                               RemoveFromVersionId=first)  # fmt: skip
    assert scene.stages() == {edited: ["AWSCURRENT"]}

    dated.advance(timedelta(days=1))
    caplog.clear()
    report = scene.invoke({"action": "revoke-expired"}, client=dated)
    assert r1 not in report["revoked"]
    assert scene.fake.state.token_by_id(r1)["revoked_at"] is None, "AWSCURRENT's value was revoked"
    (logged,) = [r.getMessage() for r in caplog.records if "ANOMALY" in r.getMessage()]
    assert f"version {edited} (AWSCURRENT)" in logged and "kept" in logged
    assert _line(capsys)["orphan_token_ids"] == []
    assert scene.fake.state.problem(scene.payload("AWSCURRENT")["token"]) is None, "invariant 1"
    scene.check_no_leak(caplog)


def test_create_secret_s_sweep_keeps_a_token_awsprevious_holds_under_another_id_for_its_grace(scene, caplog):
    """The same edit, then a rotation to R2 a day later, and a third rotation 5 minutes after it. R1's own
    version has no label, and by the id alone no version holds R1: createSecret's sweep (before it mints)
    revoked R1 at once, inside the grace R2's rotation started, and nothing recorded that revocation.
    Held (by its value) by AWSPREVIOUS under the other id, R1 is logged as an anomaly once, without the
    value, and waits; the third rotation is cancelled, and the next one, once grace has passed since R2
    superseded the edited version, revokes it."""
    dated = _Dated(scene)
    dated.advance(timedelta(seconds=1))
    first = dated.rotate()
    r1 = scene.payload("AWSCURRENT")["token_id"]
    dated.advance(timedelta(days=1))
    _, victim = scene.fake.state.add_token("team B's CI token")
    edited, _ = dated.edit_current(victim)
    dated.advance(timedelta(days=1))
    second = dated.rotate()
    assert scene.stages() == {second: ["AWSCURRENT"], edited: ["AWSPREVIOUS"]}, "R1's own version has no label"

    dated.advance(timedelta(minutes=5))
    caplog.clear()
    third = scene.start()
    dated.created[third] = scene.clock.now()
    scene.step("createSecret", third, client=dated)
    assert scene.fake.state.token_by_id(r1)["revoked_at"] is None, "revoked inside its grace"
    (logged,) = [r.getMessage() for r in caplog.records if "ANOMALY" in r.getMessage()]
    assert logged.startswith("createSecret: ") and r1 in logged and victim in logged
    assert f"version {edited} (AWSPREVIOUS)" in logged and "revoked once grace has passed" in logged
    (minted_third,) = [t["id"] for t in scene.active_minted() if t["description"].endswith(third)]

    client = scene.client()  # the third rotation cancelled, as AWS says to
    client.cancel_rotate_secret(SecretId=scene.name)
    client.update_secret_version_stage(SecretId=scene.name, VersionStage="AWSPENDING", RemoveFromVersionId=third)
    dated.advance(GRACE - timedelta(minutes=5) - timedelta(minutes=1))
    fourth = scene.start()
    dated.created[fourth] = scene.clock.now()
    scene.step("createSecret", fourth, client=dated)
    assert scene.fake.state.token_by_id(r1)["revoked_at"] is None, "revoked inside its grace"
    assert scene.fake.state.token_by_id(minted_third)["revoked_at"] is not None, "an orphan: nothing holds it"

    client.cancel_rotate_secret(SecretId=scene.name)
    client.update_secret_version_stage(SecretId=scene.name, VersionStage="AWSPENDING", RemoveFromVersionId=fourth)
    dated.advance(timedelta(minutes=2))
    caplog.clear()
    dated.rotate()
    assert scene.fake.state.token_by_id(r1)["revoked_at"] is not None, "left valid after its grace"
    assert f"createSecret: revoking token {r1}, minted for version {first}" in caplog.text
    assert scene.fake.state.token_by_id(victim)["revoked_at"] is None, "another team's token was revoked"
    assert scene.fake.state.token_by_id(scene.payload("AWSCURRENT")["token_id"])["revoked_at"] is None
    scene.check_invariants()
    scene.check_no_leak(caplog)


def test_create_secret_s_sweep_never_revokes_a_token_awscurrent_holds_under_another_id(scene, caplog):
    """The edit, AWSPREVIOUS then taken off the token's own version: AWSCURRENT holds its value under
    the other id only. createSecret's sweep revoked it by the id alone, before minting with it: AWSCURRENT
    a dead token (invariant 1) and the rotation failed. It is kept; the rotation goes on with it."""
    dated = _Dated(scene)
    dated.advance(timedelta(seconds=1))
    first = dated.rotate()
    r1 = scene.payload("AWSCURRENT")["token_id"]
    _, victim = scene.fake.state.add_token("team B's CI token")
    edited, _ = dated.edit_current(victim)
    scene.client().update_secret_version_stage(SecretId=scene.name, VersionStage="AWSPREVIOUS",
                                               RemoveFromVersionId=first)  # fmt: skip
    assert scene.stages() == {edited: ["AWSCURRENT"]}

    dated.advance(timedelta(days=1))
    caplog.clear()
    second = dated.rotate()
    assert scene.fake.state.token_by_id(r1)["revoked_at"] is None, "AWSCURRENT's value was revoked"
    (logged,) = [r.getMessage() for r in caplog.records if "ANOMALY" in r.getMessage()]
    assert logged.startswith("createSecret: ") and f"version {edited} (AWSCURRENT)" in logged and "kept" in logged
    assert scene.stages() == {second: ["AWSCURRENT"], edited: ["AWSPREVIOUS"]}
    assert scene.fake.state.problem(scene.payload("AWSCURRENT")["token"]) is None, "invariant 1"
    scene.check_no_leak(caplog)


@pytest.mark.parametrize("sweep", ["scheduled", "createSecret"])
def test_a_version_with_a_label_of_your_own_keeps_its_token_in_both_sweeps(scene, caplog, sweep):
    """An operator keeps a stuck rotation's version under a label of their own and clears AWSPENDING. The
    scheduled sweep kept its token (a labelled version), createSecret's revoked it (it kept a token only
    under AWSCURRENT, AWSPENDING or AWSPREVIOUS): which sweep ran first decided. Both keep it now while
    the label is there, and revoke it once the label is removed."""
    version = scene.start()
    scene.step("createSecret", version)
    (minted,) = scene.active_minted()
    client = scene.client()
    client.update_secret_version_stage(SecretId=scene.name, VersionStage="CANARY", MoveToVersionId=version)
    client.update_secret_version_stage(SecretId=scene.name, VersionStage="AWSPENDING", RemoveFromVersionId=version)
    scene.clock.advance(IN_FLIGHT + timedelta(hours=1))

    def run_sweep() -> None:
        if sweep == "scheduled":
            scene.invoke({"action": "revoke-expired"})
        else:
            scene.rotate()  # its createSecret sweeps before it mints

    run_sweep()
    assert scene.stages()[version] == ["CANARY"]
    assert scene.fake.state.token_by_id(minted["id"])["revoked_at"] is None
    client.update_secret_version_stage(SecretId=scene.name, VersionStage="CANARY", RemoveFromVersionId=version)
    scene.clock.advance(timedelta(hours=1))
    run_sweep()
    assert scene.fake.state.token_by_id(minted["id"])["revoked_at"] is not None
    said = (
        f"revoked token {minted['id']} of {scene.arn}, minted for version {version}"
        if sweep == "scheduled"
        else f"createSecret: revoking token {minted['id']}, minted for version {version}"
    )
    assert said in caplog.text
    scene.check_invariants()
