"""Request dispatch, the common vendor pipeline, and the `/_sim/*` control endpoints.

Pipeline for every vendor API request: Bearer token present (else the vendor's 401) →
configured rate limit (vendor's throttle reply) → random fault draw for the route's scope
(429 / 5xx before processing; malformed / slow after) → the route → request counters.

Control endpoints (no auth):
* `GET /_sim/health` - liveness;
* `GET /_sim/stats` - requests per route and HTTP status, injected faults, jobs per provider
  and vendor status, CDN bytes and CDN requests that carried an Authorization header;
* `GET /_sim/jobs`, `GET /_sim/jobs/{id}` - job summaries, with Unix times `created_at`,
  `started_at`, `done_at` (when the job became terminal at the vendor) and `seen_done_at`
  (the first poll that reported it terminal): the detection-latency inputs;
* `POST /_sim/jobs/{id}/complete` - body `{"outcome": "success"|"fail"|"moderation"|…}`
  (default success): make a running job terminal now (409 if it already is);
* `POST /_sim/faults` - body with any `FaultRates` fields (`scope` as a list): swap the random
  fault rates at run time; returns the rates in force;
* `POST /_sim/reset` - forget all jobs and counters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from simulator.cdn import Cdn
from simulator.common import (
    Route,
    Vendor,
    bearer_token,
    delayed,
    draw_fault,
    garble,
    json_response,
    load_json,
    proxy_error,
)
from simulator.config import FaultRates
from simulator.http import Request, Response
from simulator.jobs import FINAL_OUTCOMES, Job, advance, force
from simulator.replicate import ReplicateApi
from simulator.stability import StabilityApi
from simulator.state import SimState
from simulator.suno import SunoApi

_PROXIED: Final = (502, 504)


class SimulatorApp:
    """The request handler behind the HTTP server."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.vendors: dict[str, Vendor] = {
            "replicate": ReplicateApi(state),
            "stability": StabilityApi(state),
            "suno": SunoApi(state),
        }
        self._prefixes: tuple[tuple[str, Vendor], ...] = (
            ("/v1/", self.vendors["replicate"]),
            ("/v2beta/", self.vendors["stability"]),
            ("/api/", self.vendors["suno"]),
        )
        self._cdn = Cdn(state)

    async def __call__(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/_sim/"):
            return self._control(request)
        if path.startswith("/cdn/"):
            response = await self._cdn.handle(request)
            self.state.stats.count("cdn", response.status)
            return response
        vendor = next((v for prefix, v in self._prefixes if path.startswith(prefix)), None)
        if vendor is None:
            self.state.stats.count("unknown", 404)
            return json_response(404, {"detail": "no such simulator route"})
        route = vendor.route(request)
        response = await self._pipeline(vendor, route, request)
        self.state.stats.count(route.name, response.status)
        return response

    async def _pipeline(self, vendor: Vendor, route: Route, request: Request) -> Response:
        state = self.state
        if bearer_token(request) is None:
            return vendor.error(401)
        if not state.admit(vendor.provider, state.now()):
            state.stats.faults["rate_limited"] += 1
            return vendor.throttled()
        injected = draw_fault(state, route.op, f"{request.method} {request.target}")
        if injected.kind != "none":
            state.stats.faults[injected.kind] += 1
        if injected.slow_s:
            state.stats.faults["slow"] += 1
        if injected.kind == "429":
            return delayed(vendor.throttled(), injected.slow_s)
        if injected.kind == "5xx":
            status = injected.status
            reply = (
                proxy_error(status) if status in _PROXIED else vendor.error(status, transport=True)
            )
            return delayed(reply, injected.slow_s)
        response = await route.run()
        if injected.kind == "malformed":
            response = garble(response)
        return delayed(response, injected.slow_s)

    # ---- control endpoints -------------------------------------------------------------

    def _control(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")[1:]
        method = request.method
        match parts:
            case ["health"]:
                return json_response(200, {"ok": True})
            case ["stats"]:
                return json_response(200, self.stats())
            case ["jobs"]:
                return json_response(
                    200, {"jobs": [self.summary(j) for j in self.state.jobs.values()]}
                )
            case ["jobs", job_id] if method in ("GET", "HEAD"):
                job = self.state.jobs.get(job_id)
                return (
                    json_response(200, self.summary(job))
                    if job
                    else json_response(404, {"error": "no such job"})
                )
            case ["jobs", job_id, "complete"] if method == "POST":
                return self._complete(job_id, request.body)
            case ["faults"] if method == "POST":
                return self._set_faults(request.body)
            case ["reset"] if method == "POST":
                self.state.reset()
                return json_response(200, {"ok": True})
        return json_response(404, {"error": "no such control endpoint"})

    def _complete(self, job_id: str, body: bytes) -> Response:
        job = self.state.jobs.get(job_id)
        if job is None:
            return json_response(404, {"error": "no such job"})
        try:
            outcome = (load_json(body) if body else {}).get("outcome", "success")
        except (ValueError, AttributeError):
            return json_response(400, {"error": "body must be a JSON object"})
        if outcome not in FINAL_OUTCOMES:
            return json_response(400, {"error": f"outcome must be one of {sorted(FINAL_OUTCOMES)}"})
        if not self.complete(job_id, outcome):
            return json_response(
                409, {"error": "job is already terminal", "job": self.summary(job)}
            )
        return json_response(200, self.summary(job))

    def _set_faults(self, body: bytes) -> Response:
        try:
            changes = load_json(body)
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            if "scope" in changes:
                changes["scope"] = frozenset(changes["scope"])
            self.state.faults = dataclasses.replace(self.state.faults, **changes)
        except (TypeError, ValueError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, faults_json(self.state.faults))

    # ---- in-process API (also used by SimulatorServer) ---------------------------------

    def complete(self, job_id: str, outcome: str = "success") -> bool:
        """Force a job terminal now; False if unknown or already terminal."""
        job = self.state.jobs.get(job_id)
        if job is None or outcome not in FINAL_OUTCOMES:
            return False
        return force(job, self.state.now(), outcome)  # type: ignore[arg-type]

    def summary(self, job: Job) -> dict[str, Any]:
        """A job as `/_sim/jobs/{id}` reports it (times are Unix seconds)."""
        state = self.state
        advance(job, state.now())

        def wall(value: float | None) -> float | None:
            return None if value is None else round(state.wall(value), 6)

        latency = (
            None if job.seen_done is None or job.finished is None else job.seen_done - job.finished
        )
        return {
            "id": job.id,
            "provider": job.provider,
            "status": self.vendors[job.provider].status_of(job),
            "outcome": job.outcome,
            "polls": job.polls,
            "poll_requests": job.poll_requests,
            "outputs": job.outputs,
            "format": job.media.fmt,
            "created_at": wall(job.created),
            "started_at": wall(job.started),
            "done_at": wall(job.finished),
            "seen_done_at": wall(job.seen_done),
            "detection_latency_s": None if latency is None else round(latency, 6),
        }

    def stats(self) -> dict[str, Any]:
        """Counters for `/_sim/stats`."""
        state = self.state
        now = state.now()
        jobs: dict[str, dict[str, int]] = {name: {} for name in self.vendors}
        for job in state.jobs.values():
            advance(job, now)
            status = self.vendors[job.provider].status_of(job)
            counts = jobs[job.provider]
            counts[status] = counts.get(status, 0) + 1
        requests = {
            route: {str(status): n for status, n in sorted(counter.items())}
            for route, counter in sorted(state.stats.requests.items())
        }
        return {
            "seed": state.seed,
            "uptime_s": round(state.uptime(), 3),
            "requests": requests,
            "requests_total": sum(sum(c.values()) for c in state.stats.requests.values()),
            "faults": dict(sorted(state.stats.faults.items())),
            "jobs": jobs,
            "jobs_total": len(state.jobs),
            "cdn": {
                "bytes": state.stats.cdn_bytes,
                "with_authorization": state.stats.cdn_with_authorization,
            },
        }


def faults_json(faults: FaultRates) -> dict[str, Any]:
    """Fault rates as JSON-ready values (`scope` as a sorted list)."""
    data = dataclasses.asdict(faults)
    data["scope"] = sorted(faults.scope)
    return data
