"""CPU per status poll of the Replicate adapter: our aiohttp wire vs httpx's own (httpcore).

Why it is a benchmark: at thousands of polls a second the HTTP client's CPU is most of the
daemon's, and the transport choice (``providers/transport.py``) rests on this comparison.
The adapter is built exactly as the daemon builds it (`providers.registry.make_client`);
the baseline passes httpx's default transport with the same pool limits. Polls go to the
simulator on loopback, ``concurrency`` at a time, and the process's own CPU time
(user + system) is divided by the polls made. Both run in the same process, one after the
other, so the ratio is the robust figure.
"""

from __future__ import annotations

import resource
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import httpx

from bench import pg, procs
from bench.e2e import create_predictions
from bench.report import Recorder
from providers.registry import BUILTIN_PROVIDERS, MAX_CONNECTIONS, make_client
from providers.replicate import ReplicateSettings
from providers.types import JobHandle

TRANSPORTS = ("aiohttp", "httpcore")


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpPlan:
    polls: int = 5_000
    predictions: int = 500
    concurrencies: tuple[int, ...] = (1, 256)  # polls in flight; the pool is capped at 32


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _transport(kind: str, pool: int) -> httpx.AsyncBaseTransport | None:
    """None = what the daemon uses; otherwise httpx's default transport, same limits."""
    if kind == "aiohttp":
        return None
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    return httpx.AsyncHTTPTransport(limits=limits)


async def _polls(url: str, ids: list[str], kind: str, concurrency: int, polls: int) -> float:
    """CPU milliseconds per poll (after one warm-up pass of the same size)."""
    pool = min(concurrency, MAX_CONNECTIONS)
    settings = ReplicateSettings.from_env(
        {}, base_url=url, api_key=procs.SIM_TOKEN, max_in_flight=pool
    )
    spec = BUILTIN_PROVIDERS["replicate"]
    job_id = uuid.uuid4()
    async with make_client(spec, settings, transport=_transport(kind, pool)) as client:
        adapter = spec.build(settings, client)

        async def run_all() -> None:
            work: Iterator[int] = iter(range(polls))

            async def worker() -> None:
                for index in work:
                    handle = JobHandle(
                        job_id=job_id,
                        provider_job_id=ids[index % len(ids)],
                        media_type="image",
                        since_submit_s=60.0,
                    )
                    await adapter.poll(handle)

            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(worker)

        await run_all()  # warm-up: connections, caches
        before = _cpu_s()
        await run_all()
        return 1000 * (_cpu_s() - before) / polls


def run(rec: Recorder, plan: HttpPlan | None = None) -> None:
    plan = plan or HttpPlan()
    logs = pg.WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with procs.simulator(logs / "sim-http.log", "--complete-after-polls", "0") as (url, _):
        ids = create_predictions(url, plan.predictions)
        for concurrency in plan.concurrencies:
            cost: dict[str, float] = {}
            for kind in TRANSPORTS:
                started = time.perf_counter()
                cost[kind] = anyio.run(
                    _polls, url, ids, kind, concurrency, plan.polls, backend="asyncio"
                )
                rate = plan.polls / (time.perf_counter() - started) * 2  # warm-up + measured
                rec.emit(f"http_{kind}_c{concurrency}_cpu_ms_per_poll", round(cost[kind], 3))
                rec.emit(f"http_{kind}_c{concurrency}_polls_per_s", round(rate))
            ratio = cost["httpcore"] / cost["aiohttp"] if cost["aiohttp"] else float("nan")
            rec.emit(f"http_c{concurrency}_cpu_ratio_httpcore_vs_ours", round(ratio, 2))
