"""Set-up shared by the end-to-end benchmarks: provider jobs created at the simulator.

Jobs are created at the fake Replicate first (as if submitted earlier) and then inserted
with their ``provider_job_id``, so the measured window contains status polls only, the
steady state of a long-running poller, not a submission burst.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx

from bench.procs import SIM_TOKEN

SDXL = "stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"


def replicate_params(index: int, scenario: str | None) -> dict[str, object]:
    job_input: dict[str, object] = {"prompt": f"bench job {index}"}
    if scenario:
        job_input["sim_scenario"] = scenario
    return {"version": SDXL, "input": job_input}


async def _create_all(
    base_url: str, count: int, scenario_of: Callable[[int], str | None], workers: int
) -> list[str]:
    ids: list[str] = [""] * count
    next_index = iter(range(count))
    headers = {"Authorization": f"Bearer {SIM_TOKEN}"}
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits) as client:

        async def worker() -> None:
            for index in next_index:
                body = replicate_params(index, scenario_of(index))
                reply = await client.post("/v1/predictions", json=body, timeout=30)
                reply.raise_for_status()
                ids[index] = str(reply.json()["id"])

        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
    return ids


def create_predictions(
    base_url: str,
    count: int,
    *,
    scenario_of: Callable[[int], str | None] = lambda _: None,
    workers: int = 32,
) -> list[str]:
    """``count`` predictions at the simulator (``scenario_of(i)`` tokens each); their ids."""
    return anyio.run(_create_all, base_url, count, scenario_of, workers, backend="asyncio")
