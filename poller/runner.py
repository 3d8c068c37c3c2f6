"""Wire a daemon together from `Settings` and run it until a signal (or drained).

Everything with a lifetime (connection pool, provider HTTP clients, storage, the health
server) is opened in one `AsyncExitStack` and closed in reverse order on the way out.
"""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass

import anyio
import psycopg
import structlog

from poller.blob_locks import DedupLocks
from poller.daemon import Adapter, Daemon
from poller.health import HealthServer
from poller.inputs import open_input_client
from poller.migrate import head_revision
from poller.repository import Repository, open_pool
from poller.settings import Settings
from poller.wakeup import run_to_completion
from providers.registry import Hosting, make_client
from storage import open_storage

log = structlog.get_logger("poller")


@dataclass(slots=True)
class Readiness:
    """What /readyz reports; refreshed by the event loop, read by the HTTP thread."""

    database: bool = False
    at_head: bool = False
    revision: str | None = None


async def serve(settings: Settings, *, drain: bool = False) -> None:
    """Run one replica until SIGTERM/SIGINT (or until drained)."""
    cfg = settings.poller
    owner = cfg.effective_worker_id()
    for name in settings.unconfigured_providers():
        log.warning("provider.unconfigured", provider=name, detail="no API key: jobs not claimed")
    warn_unknown_variables(settings)
    async with AsyncExitStack() as stack:
        pool = open_pool(
            settings.database_url,
            size=cfg.db_pool_size,
            statement_timeout_s=cfg.db_statement_timeout_s,
        )
        await pool.open(wait=False)
        stack.push_async_callback(pool.close)
        adapters = await open_adapters(settings, stack)
        ingestor = await stack.enter_async_context(
            open_storage(
                settings.storage_config(),
                dedup_guard=DedupLocks(pool, max_holders=max(1, cfg.db_pool_size // 2)),
            )
        )
        daemon = Daemon(
            repo=Repository(pool, owner=owner, lease_s=cfg.lease_ttl_s),
            settings=cfg,
            adapters=adapters,
            unserved=settings.unconfigured_providers(),
            ingestor=ingestor,
            database_url=settings.database_url,
        )
        readiness = Readiness()
        if cfg.http_port is not None:
            server = HealthServer(cfg.http_host, cfg.http_port, lambda: _probe(daemon, readiness))
            server.start()
            stack.callback(server.stop)
            log.info("http.listening", port=server.bound_port)
        log.info("daemon.started", owner=owner, providers=sorted(adapters), drain=drain)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, daemon)
            tg.start_soon(_watch_database, settings.database_url, readiness)
            await daemon.run(drain=drain)
            tg.cancel_scope.cancel()


def warn_unknown_variables(settings: Settings) -> None:
    """A provider-prefixed variable no setting reads, by name only (its value may be a key)."""
    for name, closest in settings.unknown_provider_variables:
        log.warning(
            "settings.unknown_variable",
            name=name,
            did_you_mean=closest,
            detail="no setting reads this variable: it is ignored (README lists the names)",
        )


async def open_adapters(settings: Settings, stack: AsyncExitStack) -> dict[str, Adapter]:
    """One adapter per configured provider, each on its own API client (closed by ``stack``).

    Adapters get what the daemon lends them (`Hosting`): inline results are held to the same
    ``POLLER_MAX_DOWNLOAD_BYTES`` as downloads (DESIGN §10), and input files named by URL are
    fetched under the same address policy as downloads (DESIGN §5, `poller.inputs`).
    """
    cfg = settings.poller
    inputs = open_input_client(allow_private=cfg.allow_private_downloads)
    hosting = Hosting(
        max_inline_bytes=cfg.max_download_bytes,
        fetch_client=await stack.enter_async_context(inputs),
    )
    adapters = {}
    for name, prov_settings in settings.configured_providers().items():
        spec = settings.specs[name]
        client = await stack.enter_async_context(make_client(spec, prov_settings))
        provider = spec.create(prov_settings, client, hosting)
        adapters[name] = Adapter(provider=provider, settings=prov_settings)
    return adapters


def _probe(daemon: Daemon, readiness: Readiness) -> tuple[bool, dict[str, object]]:
    ready = daemon.ready and not daemon.draining and readiness.database and readiness.at_head
    return ready, {
        "database": readiness.database,
        "schema_at_head": readiness.at_head,
        "revision": readiness.revision,
        "draining": daemon.draining,
        "inflight": daemon.inflight,
    }


async def _watch_signals(daemon: Daemon) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("daemon.signal", signal=signal.Signals(signum).name)
            daemon.stop()


async def _watch_database(database_url: str, readiness: Readiness, period_s: float = 5.0) -> None:
    head = head_revision()
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                database_url, autocommit=True, connect_timeout=5
            ) as conn:
                cur = await run_to_completion(conn, "SELECT version_num FROM app.alembic_version")
                row = await cur.fetchone()
            readiness.database = True
            readiness.revision = row[0] if row else None
            readiness.at_head = readiness.revision == head
        except psycopg.Error:
            readiness.database = False
            readiness.at_head = False
        await anyio.sleep(period_s)
