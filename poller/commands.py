"""The bodies of the CLI commands (argument parsing lives in `poller.cli`)."""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta

import anyio
import structlog

from poller import admin
from poller.cli import emit
from poller.migrate import (
    DatabaseUrlError,
    check_connection,
    head_revision,
    schema_problem,
    to_libpq_url,
    upgrade_to_head,
)
from poller.runner import serve
from poller.settings import Settings, SettingsError
from providers.registry import make_client
from providers.types import JobHandle
from storage import open_storage, parse_storage_url
from storage.config import LocalLocation
from storage.errors import StorageError

log = structlog.get_logger("poller")

CommandRefused = admin.CommandRefused  # exit 1 with one ``refused: …`` line

# Exit 2 with one ``error: …`` line: the setting, the argument or the database is unusable.
USAGE_ERRORS = (SettingsError, admin.AdminError, StorageError, DatabaseUrlError)


def _database_url(settings: Settings) -> str:
    """``DATABASE_URL``, connected to once (bounded wait) before a command uses it, so an
    unusable URL or server is one clear line (exit 2), never a traceback quoting the URL."""
    url = to_libpq_url(settings.database_url)
    check_connection(url)
    return url


def migrate(_args: argparse.Namespace, settings: Settings) -> int:
    upgrade_to_head(settings.database_url)
    print(f"database is at {head_revision()}")
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    problem = schema_problem(settings.database_url)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    anyio.run(lambda: serve(settings, drain=args.drain))
    return 0


def check(_args: argparse.Namespace, settings: Settings) -> int:
    """1 = unhealthy (unreachable, not at head); a missing DATABASE_URL is a configuration
    error and exits 2 through `poller.cli.main` like every other command."""
    url = settings.database_url
    try:
        problem = schema_problem(url)
    except DatabaseUrlError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("ok")
    return 0


def jobs(args: argparse.Namespace, settings: Settings) -> int:
    url = _database_url(settings)
    action = args.jobs_command
    if action == "ls":
        flt = admin.JobFilter(
            status=args.status, provider=args.provider, tenant=args.tenant, limit=args.limit
        )
        emit(args, admin.list_jobs(url, flt))
    elif action == "show":
        emit(args, admin.show_job(url, args.id))
    elif action == "retry":
        job = admin.show_job(url, args.id)
        admin.retry_job(
            url,
            args.id,
            tenant=str(job["tenant_id"]),
            resubmit=args.resubmit,
            default_timeout_ms=_default_timeout_ms(settings, job),
        )
        print(f"job {args.id} is pending again" + (" (will resubmit)" if args.resubmit else ""))
    else:
        return _cancel(settings, url, args.id)
    return 0


def _default_timeout_ms(settings: Settings, job: dict[str, object]) -> int:
    prov = settings.providers.get(str(job["provider_id"]))
    return prov.timeout_ms(str(job["media_type"])) if prov else 600_000


def _cancel(settings: Settings, url: str, job_id: uuid.UUID) -> int:
    job = admin.job_for_cancel(url, job_id)
    if job["provider_job_id"]:
        anyio.run(lambda: _provider_cancel(settings, job))
    if not admin.mark_canceled(url, job_id, tenant=str(job["tenant_id"])):
        raise admin.CommandRefused(f"job {job_id} finished before it could be canceled")
    print(f"job {job_id} canceled")
    return 0


async def _provider_cancel(settings: Settings, job: dict[str, object]) -> None:
    """Best effort: an unconfigured or unreachable provider does not stop the cancel."""
    name = str(job["provider_id"])
    spec, prov = settings.specs.get(name), settings.providers.get(name)
    if spec is None or prov is None or not prov.configured:
        log.warning("provider.cancel_skipped", provider=name, reason="provider not configured")
        return
    async with make_client(spec, prov) as client:
        handle = JobHandle(
            job_id=uuid.UUID(str(job["id"])),
            provider_job_id=str(job["provider_job_id"]),
            media_type=str(job["media_type"]),
        )
        try:
            await spec.build(prov, client).cancel(handle)
        except Exception as exc:
            log.warning("provider.cancel_failed", provider=name, error=str(exc))


def submit(args: argparse.Namespace, settings: Settings) -> int:
    job = admin.NewJob(
        provider=args.provider,
        media_type=args.media_type,
        params=admin.parse_params(args.params),
        tenant=args.tenant,
        run_id=args.run_id,
        run_step_id=args.run_step_id,
        poll_interval_ms=args.poll_interval_ms,
        timeout_ms=args.timeout_ms,
    )
    job_id = admin.submit_job(_database_url(settings), job)
    if args.json:
        emit(args, {"id": str(job_id)})
    else:
        print(job_id)
    return 0


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise admin.AdminError(f"--older-than {text!r}: use a number and s/m/h/d, e.g. 72h")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
    return timedelta(**{unit: float(match[1])})


def storage(args: argparse.Namespace, settings: Settings) -> int:
    from poller.gc import check_grace

    grace = parse_duration(args.older_than)
    check_grace(grace)  # these three before the store opens (and creates its root)
    url = _database_url(settings)
    _require_local_root(settings.core.storage_url)
    report = anyio.run(lambda: _gc(settings, url, grace, apply=args.apply))
    emit(args, report)
    return 0


def _require_local_root(storage_url: str) -> None:
    """GC of a local store that does not exist is a wrong STORAGE_URL or working directory
    (the default is relative): say so, rather than create it and report ``scanned 0``."""
    location = parse_storage_url(storage_url)
    if isinstance(location, LocalLocation) and not location.root.exists():
        raise admin.AdminError(
            f"STORAGE_URL {storage_url!r}: {location.root.resolve()} does not exist, so there "
            "is nothing to collect; check STORAGE_URL and the directory you run this from"
        )


async def _gc(settings: Settings, url: str, grace: timedelta, *, apply: bool) -> dict[str, object]:
    """Delete blobs older than ``grace`` that no artifact row references."""
    from poller.gc import collect_garbage

    cutoff = datetime.now(UTC) - grace
    async with open_storage(settings.storage_config()) as ingestor:
        return await collect_garbage(url, ingestor.store, cutoff=cutoff, apply=apply)
