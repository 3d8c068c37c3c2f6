"""An operator acts on a job while a replica is in the middle of it: the replica carries on.

`main.py jobs cancel` bumps the job's lease version (DESIGN.md §3: every later write of the
lease holder must then match nothing). Here the replica is inside a slow submit (simulator
``submit_slow``) when the operator cancels; its fenced write of the provider job id then
finds the lease gone. That is a lost lease like any other: it must be logged and counted,
the operator's decision must stand, and the replica must keep serving other jobs. The same
path is taken when a PostgreSQL outage outlasts a lease and another replica takes the job
over mid-submit (seen in tests/chaos/test_pg_restarts.py).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.e2e import jobs
from tests.e2e.dbcheck import rows, wait_all_terminal
from tests.e2e.harness import fleet, run_cli, wait_until

pytestmark = pytest.mark.slow

SUBMIT_SLOW_S = 3.0
# Long, so that no heartbeat (every TTL/3) runs during the slow submit: the fenced write of
# the provider job id, not the heartbeat, is what finds the lease gone.
LEASE_TTL_S = 30.0


def test_cancel_during_a_slow_submit_does_not_take_the_replica_down(
    audited_db: str, tmp_path: Path
) -> None:
    with fleet(tmp_path, audited_db) as group:
        [replica] = group.start(1, overrides={"POLLER_LEASE_TTL_S": str(LEASE_TTL_S)})
        replica.wait_for_event("daemon.started")
        [job_id] = jobs.insert(audited_db, [jobs.replicate_image(f"submit_slow:{SUBMIT_SLOW_S:g}")])
        wait_until(lambda: group.sim.jobs(), timeout_s=20, what="the provider-side job")
        done = run_cli("jobs", "cancel", str(job_id), env=group.env())
        assert done.returncode == 0, done.stderr
        replica.wait_for_event("lease.lost", timeout_s=SUBMIT_SLOW_S + 10)
        [later] = jobs.insert(audited_db, [jobs.replicate_image()])
        wait_all_terminal(audited_db, timeout_s=30)
        alive = replica.running
        code = group.stop_all()[replica.name]
        tail = replica.stderr()[-3000:]
    assert alive and code == 0, tail
    found = {r["id"]: r for r in rows(audited_db, "SELECT * FROM app.generation_jobs")}
    assert found[job_id]["status"] == "failed"
    assert found[job_id]["error_message"] == "canceled by operator"
    assert found[uuid.UUID(str(later))]["status"] == "completed"
