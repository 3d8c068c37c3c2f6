"""Fault injection: random per-request faults, per-job scenario faults, rate limits."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from simulator.config import FaultRates, SimulatorConfig
from simulator.server import SimulatorServer
from tests.simulator.conftest import AUTH
from tests.simulator.helpers import (
    PNG_BYTES,
    replicate_create,
    stability_submit,
    suno_generate,
    suno_record,
)


def _poll_statuses(sim: SimulatorServer, polls: int) -> list[int]:
    with httpx.Client(base_url=sim.base_url, headers=AUTH, verify=False) as client:
        job_id = replicate_create(client, {"sim_scenario": "stuck"}).json()["id"]
        return [client.get(f"/v1/predictions/{job_id}").status_code for _ in range(polls)]


def test_random_faults_are_deterministic_per_seed() -> None:
    config = SimulatorConfig(seed=99, faults=FaultRates(p_5xx=0.3, p_429=0.2))
    with SimulatorServer(config) as first:
        statuses = _poll_statuses(first, 40)
    with SimulatorServer(config) as second:
        assert _poll_statuses(second, 40) == statuses
    assert {200, 429} <= set(statuses)
    assert set(statuses) & {500, 502, 503, 504}
    assert set(statuses) <= {200, 429, 500, 502, 503, 504}


def test_throttle_shapes_per_vendor(sim: SimulatorServer, client: httpx.Client) -> None:
    replicate_id = replicate_create(client, {}).json()["id"]
    stability_id = stability_submit(
        client, "stable-image/upscale/creative", {"prompt": "p"}, {"image": PNG_BYTES}
    ).json()["id"]
    task_id = suno_generate(client)
    sim.set_faults(FaultRates(p_429=1.0, retry_after_s=7))

    replicate = client.get(f"/v1/predictions/{replicate_id}")
    assert replicate.status_code == 429 and replicate.headers["retry-after"] == "7"
    assert "throttled" in replicate.json()["detail"]
    stability = client.get(f"/v2beta/results/{stability_id}")
    assert stability.status_code == 429 and stability.json()["name"] == "rate_limit_exceeded"
    suno = client.get("/api/v1/generate/record-info", params={"taskId": task_id})
    assert suno.status_code == 200 and suno.json()["code"] == 430
    assert sim.job(replicate_id)["polls"] == 0  # type: ignore[index]
    assert sim.stats()["faults"]["429"] == 3


def test_5xx_faults_do_not_count_as_polls(sim: SimulatorServer, client: httpx.Client) -> None:
    job_id = replicate_create(client, {}).json()["id"]
    sim.set_faults(FaultRates(p_5xx=1.0))
    replies = [client.get(f"/v1/predictions/{job_id}") for _ in range(12)]
    assert {r.status_code for r in replies} <= {500, 502, 503, 504}
    for reply in replies:
        if reply.status_code in (502, 504):
            assert reply.headers["content-type"] == "text/html"
        else:
            assert reply.json()["status"] == reply.status_code
    assert sim.job(job_id)["polls"] == 0  # type: ignore[index]


def test_malformed_replies_still_advance_the_job(
    sim: SimulatorServer, client: httpx.Client
) -> None:
    job_id = replicate_create(client, {}).json()["id"]
    sim.set_faults(FaultRates(p_malformed=1.0))
    reply = client.get(f"/v1/predictions/{job_id}")
    assert reply.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        reply.json()
    assert sim.job(job_id)["polls"] == 1  # type: ignore[index]


def test_slow_faults_delay_the_reply(sim: SimulatorServer, client: httpx.Client) -> None:
    job_id = replicate_create(client, {}).json()["id"]
    sim.set_faults(FaultRates(p_slow=1.0, slow_s=0.3))
    started = time.monotonic()
    assert client.get(f"/v1/predictions/{job_id}").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_submits_are_faulted_only_when_in_scope(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.set_faults(FaultRates(p_5xx=1.0))
    assert replicate_create(client, {}).status_code == 201
    sim.set_faults(FaultRates(p_5xx=1.0, scope=frozenset({"submit"})))
    assert replicate_create(client, {}).status_code >= 500
    assert sim.stats()["jobs_total"] == 1


def test_faults_can_be_changed_over_http(sim: SimulatorServer, client: httpx.Client) -> None:
    changed = client.post("/_sim/faults", json={"p_429": 1.0, "scope": ["poll"]})
    assert changed.status_code == 200 and changed.json()["p_429"] == 1.0
    job_id = replicate_create(client, {}).json()["id"]
    assert client.get(f"/v1/predictions/{job_id}").status_code == 429
    assert client.post("/_sim/faults", json={"p_5xx": 2}).status_code == 400


def test_scenario_poll_errors_then_success(client: httpx.Client) -> None:
    job_id = replicate_create(client, {"sim_scenario": "poll_error:503:2 polls:1"}).json()["id"]
    statuses = [client.get(f"/v1/predictions/{job_id}").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    throttled = replicate_create(client, {"sim_scenario": "poll_error:429"}).json()["id"]
    reply = client.get(f"/v1/predictions/{throttled}")
    assert reply.status_code == 429 and "retry-after" in reply.headers


def test_scenario_poll_error_on_suno_is_a_body_code(client: httpx.Client) -> None:
    task_id = suno_generate(client, sim_scenario="poll_error:455")
    assert suno_record(client, task_id)["code"] == 455
    assert suno_record(client, task_id)["code"] == 200


def test_scenario_malformed_and_slow_polls(client: httpx.Client) -> None:
    job_id = replicate_create(client, {"sim_scenario": "poll_malformed poll_slow:0.2:1"}).json()[
        "id"
    ]
    started = time.monotonic()
    first = client.get(f"/v1/predictions/{job_id}")
    assert time.monotonic() - started >= 0.2
    with pytest.raises(json.JSONDecodeError):
        first.json()
    assert client.get(f"/v1/predictions/{job_id}").json()["status"] == "processing"


def test_submit_errors_4xx_create_nothing_5xx_create_the_job(
    sim: SimulatorServer, client: httpx.Client
) -> None:
    refused = replicate_create(client, {"sim_scenario": "submit_error:402"})
    assert refused.status_code == 402 and refused.json()["title"] == "Payment Required"
    assert sim.stats()["jobs_total"] == 0
    ambiguous = replicate_create(client, {"sim_scenario": "submit_error:500"})
    assert ambiguous.status_code == 500
    assert sim.stats()["jobs_total"] == 1
    garbled = replicate_create(client, {"sim_scenario": "submit_malformed"})
    with pytest.raises(json.JSONDecodeError):
        garbled.json()
    suno = client.post(
        "/api/v1/generate",
        json={
            "customMode": False,
            "instrumental": True,
            "model": "V4",
            "callBackUrl": "x",
            "prompt": "p",
            "sim_scenario": "submit_error:429",
        },
    )
    assert suno.status_code == 200 and suno.json()["code"] == 430


def test_rate_limit_throttles_a_burst() -> None:
    config = SimulatorConfig(seed=5, rate_limits={"replicate": 5.0})
    with (
        SimulatorServer(config) as sim,
        httpx.Client(base_url=sim.base_url, headers=AUTH, verify=False) as client,
    ):
        statuses = [client.get("/v1/predictions/none").status_code for _ in range(20)]
        assert statuses.count(429) >= 10
        assert sim.stats()["faults"]["rate_limited"] == statuses.count(429)


def test_stuck_job_finishes_only_when_forced(sim: SimulatorServer, client: httpx.Client) -> None:
    job_id = replicate_create(client, {"sim_scenario": "stuck"}).json()["id"]
    for _ in range(10):
        status = client.get(f"/v1/predictions/{job_id}").json()["status"]
    assert status == "processing"
    assert sim.complete_job(job_id, "fail")
    assert client.get(f"/v1/predictions/{job_id}").json()["status"] == "failed"
    assert not sim.complete_job(job_id)
