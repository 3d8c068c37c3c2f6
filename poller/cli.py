"""Command line: ``migrate``, ``run``, ``check``, ``jobs …``, ``submit``, ``storage gc``.

Exit codes: 0 success; 1 unhealthy (``check``) or command refused (the job's state does not
allow it: ``refused: …``); 2 configuration or usage error, an unknown job id or an unusable
database (``error: …``). Each failure is one line on stderr. Output is a table on a TTY and
JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from poller import output
from poller.logs import configure_logging
from poller.settings import Settings, load_settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main.py",
        description="media-poller: drives generation jobs at Replicate, Stability AI and Suno "
        "and stores their results content-addressed.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("migrate", help="alembic upgrade head on DATABASE_URL")
    run = sub.add_parser("run", help="the daemon until SIGTERM/SIGINT")
    run.add_argument(
        "--drain", action="store_true", help="exit 0 once no serviceable job is active"
    )
    sub.add_parser("check", help="exit 0 when the database is reachable and at head")
    _jobs_parser(sub)
    _submit_parser(sub)
    storage = sub.add_parser("storage", help="storage maintenance")
    ssub = storage.add_subparsers(dest="storage_command", required=True, metavar="ACTION")
    gc = ssub.add_parser("gc", help="delete blobs no artifact references (dry run by default)")
    gc.add_argument("--older-than", default="72h", help="grace period, at least 2h; e.g. 72h, 7d")
    gc.add_argument("--apply", action="store_true", help="really delete")
    gc.add_argument("--json", action="store_true")
    return p


def _jobs_parser(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="inspect and repair jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    ls = jsub.add_parser("ls", help="list jobs, newest first")
    ls.add_argument(
        "--status", choices=["pending", "processing", "completed", "failed", "timed_out"]
    )
    ls.add_argument("--provider")
    ls.add_argument("--tenant")
    ls.add_argument("--limit", type=_positive_int, default=50)
    ls.add_argument("--json", action="store_true")
    show = jsub.add_parser("show", help="one job with its artifacts and last error")
    show.add_argument("id", type=uuid.UUID)
    show.add_argument("--json", action="store_true")
    retry = jsub.add_parser("retry", help="failed/timed_out → pending, same provider job")
    retry.add_argument("id", type=uuid.UUID)
    retry.add_argument("--resubmit", action="store_true", help="forget the provider job id")
    cancel = jsub.add_parser("cancel", help="provider cancel, then failed (canceled by operator)")
    cancel.add_argument("id", type=uuid.UUID)


def _positive_int(text: str) -> int:
    """A count of milliseconds or rows: a negative one would make a job time out at once or
    poll as fast as the claim loop turns, which nobody asks for on purpose."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _submit_parser(sub: Any) -> None:
    submit = sub.add_parser("submit", help="insert a job for the daemon to submit")
    submit.add_argument("--provider", required=True)
    submit.add_argument("--media-type", required=True, choices=["image", "video", "audio"])
    submit.add_argument("--params", required=True, help="input_params as a JSON object")
    submit.add_argument("--tenant", default="default")
    submit.add_argument("--run-id", type=uuid.UUID)
    submit.add_argument("--run-step-id", type=uuid.UUID)
    submit.add_argument("--poll-interval-ms", type=_positive_int)
    submit.add_argument("--timeout-ms", type=_positive_int)
    submit.add_argument("--json", action="store_true")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from poller import commands  # deferred: keeps `--help` fast and import-light
    from poller.migrate import database_error

    database_url: str | None = None
    try:
        settings = load_settings()
        database_url = settings.core.database_url
        configure_logging(
            level=settings.poller.log_level,
            fmt=settings.poller.log_format,
            secrets=_secrets(settings),
            stream=sys.stderr if args.command != "run" else None,
        )
        return _dispatch(args, settings)
    except commands.CommandRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except commands.USAGE_ERRORS as exc:
        # Configuration the daemon cannot work with (including a store it cannot open at
        # start-up: missing bucket, no credentials, unusable root, or a database it cannot
        # reach) is one line and exit 2.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        # Never the raw exception: a libpq message can quote the whole URL, password included.
        print(f"error: {database_error(database_url, exc)}", file=sys.stderr)
        return 2


def _secrets(settings: Settings) -> list[str]:
    return [secret for s in settings.providers.values() for secret in s.secret_values()]


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from poller import commands  # deferred: keeps `--help` fast and import-light

    handlers: dict[str, Handler] = {
        "migrate": commands.migrate,
        "run": commands.run,
        "check": commands.check,
        "jobs": commands.jobs,
        "submit": commands.submit,
        "storage": commands.storage,
    }
    return handlers[args.command](args, settings)


def emit(args: argparse.Namespace, value: Any, *, columns: Sequence[str] | None = None) -> None:
    """JSON with --json, else a readable table (lists) or key/value block (one object)."""
    if getattr(args, "json", False):
        print(json.dumps(value, default=str, indent=None if isinstance(value, list) else 2))
    elif isinstance(value, list):
        print(output.table(value, columns))
    else:
        print(output.block(value))
