"""A lease whose holder was killed and not yet reaped by its parent (rotator/core/engine.py `_holder_is_dead`).

Found: a `rotator rotate` killed with SIGKILL is a zombie until its parent (a shell script, a
supervisor) waits for it, and `kill(pid, 0)` succeeds on a zombie: the next run took the holder for
alive and exited 3 ("wait for its lease to expire"), for the whole lease_ttl, while nothing ran. Now
a process of this host in state Z (or X) in /proc/PID/stat is dead: its lease is taken over at once,
and the run it left is recovered. A live holder of this host is named in the busy hint with `ps -p`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core import audit_chain
from rotator.core.engine import _boot_id, _holder_is_dead, _pid_namespace
from rotator.core.errors import LeaseBusy
from tests.engine.test_state_machine import POLICY, World
from tests.harness import live_tagged, make_scenario

pytestmark = pytest.mark.skipif(not _boot_id(), reason="a holder is judged by its process id on Linux only")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def test_a_killed_rotator_its_parent_has_not_reaped_holds_no_lease(tmp_path: Path, openbao: Any,
                                                                   fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    marker = tmp_path / "paused"
    sc.fake.add_fault("management create", "pause_after_effect", seconds=60, marker=marker)  # minted, unanswered
    killed = subprocess.Popen(sc.argv("rotate", sc.policy), env=sc.env(), cwd=sc.dir, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "the paused influxctl call never started"
            time.sleep(0.05)
        os.killpg(killed.pid, signal.SIGKILL)  # rotator and its influxctl child; rotator is not waited for
        while _state(killed.pid) != "Z":
            assert time.monotonic() < deadline, _state(killed.pid)
            time.sleep(0.05)
        sc.fake.clear_faults()
        [orphan] = [i for i in live_tagged(sc.fake.tokens(), sc.policy) if i != sc.bootstrap_id]

        proc = sc.cli("rotate", sc.policy)  # within lease_ttl (30 s) of the kill, the holder still unreaped

        assert _state(killed.pid) == "Z", "the test's own premise: the killed rotator is still a zombie"
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert sc.fake.token_by_id(orphan)["revoked_at"] is not None, "recovery revoked the orphan it minted"
        assert f"taking over the lease of dead process {audit_chain.instance_name()}:{killed.pid}:" in \
            sc.log_file.read_text()
    finally:
        if killed.poll() is None:  # (reaps it: only once the test is done with the zombie)
            os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(10)


def test_a_zombie_is_dead_and_a_live_process_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    holder = f"{audit_chain.instance_name()}:{child.pid}:abcd1234:{_pid_namespace()}:{_boot_id()}"
    deadline = time.monotonic() + 30
    while _state(child.pid) != "Z":  # ended, not waited for
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert _holder_is_dead(holder)
    child.wait()
    assert _holder_is_dead(holder), "reaped: gone"
    assert not _holder_is_dead(f"{audit_chain.instance_name()}:{os.getpid()}:abcd1234:{_pid_namespace()}:{_boot_id()}")


def test_a_live_holder_of_this_host_is_named_with_ps_in_the_busy_hint(tmp_path: Path) -> None:
    """The one way out besides waiting: the process may be hung, or about to end."""
    world = World(tmp_path)
    holder = f"{audit_chain.instance_name()}:{os.getpid()}:abcd1234:{_pid_namespace()}:{_boot_id()}"  # alive
    world.journal.acquire_lease(POLICY, holder, timedelta(minutes=15), world.clock.now())
    with pytest.raises(LeaseBusy) as busy:
        world.engine().rotate()
    assert busy.value.hint.startswith(f"the holder is process {os.getpid()} on this host: `ps -p {os.getpid()}` "
                                      "shows whether it still runs; once it is gone, run the same command again")
    assert "lease to expire at" in busy.value.hint, busy.value.hint


def test_a_holder_of_another_host_is_not_named_with_ps(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.journal.acquire_lease(POLICY, f"elsewhere:{os.getpid()}:abcd1234:{_pid_namespace()}:{_boot_id()}",
                                timedelta(minutes=15), world.clock.now())
    with pytest.raises(LeaseBusy) as busy:
        world.engine().rotate()
    assert "ps -p" not in busy.value.hint and busy.value.hint.startswith("wait for that run to finish")
