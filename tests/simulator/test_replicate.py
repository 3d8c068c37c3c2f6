"""The fake Replicate API over real loopback HTTP: lifecycle, shapes, deadlines, errors."""

from __future__ import annotations

import base64
import io
import re
import time

import httpx
from PIL import Image

from simulator.server import SimulatorServer
from tests.simulator.helpers import VERSION, replicate_create, replicate_poll

_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_prediction_goes_starting_processing_succeeded(client: httpx.Client) -> None:
    created = replicate_create(client, {"prompt": "a lighthouse"})
    assert created.status_code == 201
    prediction = created.json()
    assert prediction["status"] == "starting"
    assert prediction["output"] is None
    assert len(prediction["id"]) == 26
    assert prediction["model"] == "acme/painter"
    assert prediction["version"] == "ab" * 32
    assert prediction["urls"]["get"] == f"{client.base_url}/v1/predictions/{prediction['id']}"
    assert _ISO.match(prediction["created_at"])

    statuses = [replicate_poll(client, prediction["id"]) for _ in range(3)]
    assert [p["status"] for p in statuses] == ["starting", "processing", "succeeded"]
    done = statuses[-1]
    assert isinstance(done["output"], list) and len(done["output"]) == 1
    assert done["output"][0].startswith(f"{client.base_url}/cdn/")
    assert done["metrics"]["predict_time"] > 0
    assert done["metrics"]["total_time"] >= done["metrics"]["predict_time"]
    assert _ISO.match(done["started_at"]) and _ISO.match(done["completed_at"])
    assert done["error"] is None and done["data_removed"] is False
    assert "100%" in done["logs"]


def test_models_and_deployments_endpoints(client: httpx.Client) -> None:
    model = client.post("/v1/models/acme/flux/predictions", json={"input": {}}).json()
    assert (model["model"], model["version"]) == ("acme/flux", "hidden")
    deployed = client.post("/v1/deployments/acme/prod/predictions", json={"input": {}}).json()
    assert deployed["deployment"] == "acme/prod"
    official = client.post("/v1/predictions", json={"version": "acme/flux", "input": {}}).json()
    assert official["version"] == "hidden"


def test_missing_token_gets_problem_401(client: httpx.Client) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Token abc"}):
        response = client.get("/v1/predictions/whatever", headers=headers)
        assert response.status_code == 401
        assert response.json()["title"] == "Unauthenticated"
        assert response.json()["status"] == 401


def test_validation_errors(client: httpx.Client) -> None:
    no_version = client.post("/v1/predictions", json={"input": {}})
    assert no_version.status_code == 422 and "version" in no_version.json()["detail"]
    bad_input = client.post("/v1/predictions", json={"version": VERSION, "input": "x"})
    assert bad_input.status_code == 422
    not_json = client.post("/v1/predictions", content=b"{nope")
    assert not_json.status_code == 400
    typo = replicate_create(client, {"sim_scenario": "sucess"})
    assert typo.status_code == 422 and "sucess" in typo.json()["detail"]
    assert client.get("/v1/predictions/unknown").status_code == 404


def test_failure_and_moderation_outcomes(client: httpx.Client) -> None:
    failed = replicate_create(client, {"sim_scenario": "fail polls:1"}).json()
    result = replicate_poll(client, failed["id"])
    assert result["status"] == "failed" and result["error"].startswith("E1000")
    flagged = replicate_create(client, {"prompt": "x [sim:moderation,polls:1]"}).json()
    result = replicate_poll(client, flagged["id"])
    assert result["status"] == "failed" and "NSFW" in result["error"]
    assert result["output"] is None


def test_output_shapes(client: httpx.Client) -> None:
    video = client.post(
        "/v1/models/acme/text-to-video/predictions", json={"input": {"sim_scenario": "polls:1"}}
    ).json()
    output = replicate_poll(client, video["id"])["output"]
    assert isinstance(output, str) and output.endswith(".mp4")

    multi = replicate_create(client, {"num_outputs": 3, "sim_scenario": "polls:1"}).json()
    assert len(replicate_poll(client, multi["id"])["output"]) == 3

    obj = replicate_create(client, {"sim_scenario": "polls:1 shape:object multi:2"}).json()
    assert set(replicate_poll(client, obj["id"])["output"]) == {"media", "media_1"}

    inline = replicate_create(client, {"sim_scenario": "polls:1 shape:data"}).json()
    data_url = replicate_poll(client, inline["id"])["output"]
    header, _, payload = data_url.partition(",")
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).format == "PNG"


def test_cancel_after_before_start_aborts(client: httpx.Client) -> None:
    created = replicate_create(
        client, {"sim_scenario": "seconds:30"}, headers={"Cancel-After": "150ms"}
    ).json()
    assert _ISO.match(created["deadline"])
    time.sleep(0.25)
    result = replicate_poll(client, created["id"])
    assert result["status"] == "aborted"
    assert result["started_at"] is None and result["metrics"] == {}


def test_cancel_after_while_running_cancels(client: httpx.Client) -> None:
    created = replicate_create(
        client, {"sim_scenario": "polls:4"}, headers={"Cancel-After": "0.3"}
    ).json()
    assert [replicate_poll(client, created["id"])["status"] for _ in range(2)] == [
        "starting",
        "processing",
    ]
    time.sleep(0.4)
    result = replicate_poll(client, created["id"])
    assert result["status"] == "canceled"
    assert result["metrics"]["predict_time"] >= 0


def test_bad_cancel_after_is_rejected(client: httpx.Client) -> None:
    response = replicate_create(client, {}, headers={"Cancel-After": "soon"})
    assert response.status_code == 422


def test_cancel_endpoint(client: httpx.Client) -> None:
    running = replicate_create(client, {"sim_scenario": "stuck"}).json()
    canceled = client.post(f"/v1/predictions/{running['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"

    finished = replicate_create(client, {"sim_scenario": "polls:1"}).json()
    replicate_poll(client, finished["id"])
    after = client.post(f"/v1/predictions/{finished['id']}/cancel").json()
    assert after["status"] == "succeeded"
    assert client.post("/v1/predictions/nope/cancel").status_code == 404


def test_expired_output_is_removed(client: httpx.Client, cdn: httpx.Client) -> None:
    created = replicate_create(client, {"sim_scenario": "expired polls:1"}).json()
    result = replicate_poll(client, created["id"])
    assert result["status"] == "succeeded"
    assert result["output"] is None and result["data_removed"] is True
    url = f"{client.base_url}/cdn/{created['id']}/0.png"
    assert cdn.get(url).status_code == 404


def test_prefer_wait_returns_finished_prediction(client: httpx.Client) -> None:
    response = replicate_create(
        client, {"sim_scenario": "seconds:0.2"}, headers={"Prefer": "wait=5"}
    )
    assert response.status_code == 201
    assert response.json()["status"] == "succeeded"


def test_time_based_completion(client: httpx.Client) -> None:
    created = replicate_create(client, {"sim_scenario": "seconds:0.2"}).json()
    time.sleep(0.25)
    assert replicate_poll(client, created["id"])["status"] == "succeeded"


def test_unknown_status_is_reported_until_done(client: httpx.Client) -> None:
    created = replicate_create(client, {"sim_scenario": "unknown_status polls:2"}).json()
    assert replicate_poll(client, created["id"])["status"] == "queued"
    assert replicate_poll(client, created["id"])["status"] == "succeeded"


def test_list_filters_by_creation_time(client: httpx.Client) -> None:
    first = replicate_create(client, {}).json()
    second = replicate_create(client, {}).json()
    listing = client.get("/v1/predictions").json()
    assert [p["id"] for p in listing["results"]] == [second["id"], first["id"]]
    later = client.get("/v1/predictions", params={"created_after": first["created_at"]}).json()
    assert [p["id"] for p in later["results"]] == [second["id"]]
    assert listing["next"] is None


def test_predict_time_override_and_seeded_ids(sim: SimulatorServer, client: httpx.Client) -> None:
    created = replicate_create(client, {"sim_scenario": "polls:1 predict_time:12.5"}).json()
    assert replicate_poll(client, created["id"])["metrics"]["predict_time"] == 12.5
    with (
        SimulatorServer(sim.config) as twin,
        httpx.Client(base_url=twin.base_url, headers=client.headers) as other,
    ):
        assert replicate_create(other, {}).json()["id"] == created["id"]
